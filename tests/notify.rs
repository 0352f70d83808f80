//! Notifications: the real binary posts to a webhook when a run changes a vault or fails, and
//! stays quiet otherwise; an unreachable webhook never fails a run.

mod support;

use std::sync::{Arc, Mutex};

use axum::routing::post;
use serde_json::Value;
use support::*;
use tagfence_emulator::{Fault, FaultKind, Route};

/// A webhook that keeps what it receives.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/hook/secret-token",
        post(move |body: axum::Json<Value>| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(body.0);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hook/secret-token",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn texts(received: &Arc<Mutex<Vec<Value>>>) -> Vec<String> {
    received
        .lock()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_on_change_and_on_failure_and_none_otherwise() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[])])).await;
    let (url, received) = webhook().await;
    let id = vault_id("kv-prod");
    let args = ["apply", "--vault", &id, "--tag", "AzureDevOps"];
    let env = [("TAGFENCE_NOTIFY_URL", url.as_str())];

    // The messages are what people read, so their text is the behaviour under test.
    let first = tagfence(&emulator, &args, &env).await;
    assert!(first.status.success(), "{}", stderr(&first));
    let messages = texts(&received);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].starts_with("tagfence: vault firewalls changed (run "),
        "{}",
        messages[0]
    );
    assert!(
        messages[0].contains("\n- kv-prod: applied (+24 -0 =0 unmanaged 0)\n"),
        "{}",
        messages[0]
    );
    // The secret part of the URL is never logged.
    assert!(!stderr(&first).contains("secret-token"));

    // In sync: nothing to say.
    let second = tagfence(&emulator, &args, &env).await;
    assert!(second.status.success());
    assert_eq!(texts(&received).len(), 1);

    // A vault ARM keeps failing on: a failure message.
    emulator.set_ip_rules("kv-prod", Vec::new());
    emulator.add_fault(Fault {
        route: Some(Route::VaultPatch),
        vault: None,
        kind: FaultKind::Status {
            status: 500,
            code: "InternalServerError".into(),
            message: "boom".into(),
            retry_after: None,
        },
        count: 100,
    });
    let third = tagfence(&emulator, &args, &env).await;
    assert_eq!(third.status.code(), Some(2));
    let messages = texts(&received);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[1].starts_with("tagfence: a run failed (run "),
        "{}",
        messages[1]
    );
    assert!(messages[1].contains("\n- kv-prod: failed (+24 -0 =0 unmanaged 0): writing the firewall of vault kv-prod: InternalServerError: boom (HTTP 500)\n"), "{}", messages[1]);

    // A vault the gate refuses (its firewall was never configured): a refusal, not a failure.
    emulator.clear_faults();
    emulator.update_vault("kv-prod", |v| {
        v["properties"]
            .as_object_mut()
            .unwrap()
            .remove("networkAcls");
    });
    let fourth = tagfence(&emulator, &args, &env).await;
    assert_eq!(fourth.status.code(), Some(2));
    let messages = texts(&received);
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(
        messages[2].starts_with("tagfence: a vault was refused, nothing written to it (run "),
        "{}",
        messages[2]
    );
    assert!(
        messages[2].contains(
            "\n- kv-prod: refused (+24 -0 =0 unmanaged 0): the vault has no firewall configured"
        ),
        "{}",
        messages[2]
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_webhook_does_not_fail_the_run() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[])])).await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let id = vault_id("kv-prod");
    let output = tagfence(
        &emulator,
        &["apply", "--vault", &id, "--tag", "AzureDevOps"],
        &[
            ("TAGFENCE_NOTIFY_URL", url.as_str()),
            ("TAGFENCE_HTTP_MAX_RETRIES", "0"),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("the notification failed; the run is as reported"),
        "{}",
        stderr(&output)
    );
    assert_eq!(rules_of(&emulator, "kv-prod"), sorted(&AZURE_DEVOPS));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_webhook_elsewhere_is_refused_without_echoing_the_secret() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[])])).await;
    let id = vault_id("kv-prod");
    let output = tagfence(
        &emulator,
        &["apply", "--vault", &id, "--tag", "AzureDevOps"],
        &[(
            "TAGFENCE_NOTIFY_URL",
            "http://hooks.example.com/services/T000/B000/secret-token",
        )],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("TAGFENCE_NOTIFY_URL: uses plain http; expected https (plain http only for a loopback host, a local emulator)"),
        "{err}"
    );
    assert!(!err.contains("secret-token"), "{err}");
    assert!(rules_of(&emulator, "kv-prod").is_empty());
    emulator.shutdown().await;
}

/// Every file under `dir`, as text.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                found.push((path, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    found
}

/// A webhook that answers every message with a 500 whose body echoes the path and query it was
/// sent to, as some services' error pages do.
async fn failing_webhook() -> std::net::SocketAddr {
    let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("{{\"error\": \"no_service\", \"url\": \"{uri}\"}}"),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_of_a_failing_webhook_appears_in_no_output_and_no_run_record() {
    const SECRETS: [&str; 2] = ["SECRET-TOKEN-123", "SECRET-SIG"];
    let emulator = start(emulator_config(vec![
        vault("kv-a", &[]),
        vault("kv-b", &[]),
    ]))
    .await;
    // A port nobody listens on, and a webhook answering 500.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let failing_addr = failing_webhook().await;
    let state = std::env::temp_dir().join(format!("tagfence-notify-secret-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let state_dir = state.display().to_string();
    for (round, vault, addr, expected) in [
        (0, "kv-a", closed_addr, ": error sending request".to_owned()),
        (
            1,
            "kv-b",
            failing_addr,
            ": the webhook answered 500 Internal Server Error: {\"error\": \"no_service\", \"url\": \"/…/…/…/…?…\"}".to_owned(),
        ),
    ] {
        let url =
            format!("http://{addr}/services/T000/B000/SECRET-TOKEN-123?sig=SECRET-SIG");
        // A vault of its own every round, so that there is a change to notify.
        let id = vault_id(vault);
        let output = tagfence(
            &emulator,
            &[
                "apply", "--vault", &id, "--tag", "AzureDevOps", "--state-dir", &state_dir,
                "--notify-url", &url,
            ],
            // Everything logged, tagfence's and its libraries' debug lines included.
            &[("TAGFENCE_LOG", "trace"), ("TAGFENCE_HTTP_MAX_RETRIES", "1")],
        )
        .await;
        let (out, err) = (stdout(&output), stderr(&output));
        assert!(output.status.success(), "{round}: {err}");
        assert!(
            err.contains("the notification failed; the run is as reported"),
            "{round}: {err}"
        );
        let shown = format!("notifying http://{addr}/…{expected}");
        assert!(err.contains(&shown), "{round}: wanted {shown} in {err}");
        for secret in SECRETS {
            assert!(!out.contains(secret), "{round}: {secret} in stdout: {out}");
            // The line, not all of stderr (trace level is long).
            let leak = err.lines().find(|l| l.contains(secret));
            assert!(leak.is_none(), "{round}: {secret} in stderr: {leak:?}");
        }
        assert_eq!(rules_of(&emulator, vault), sorted(&AZURE_DEVOPS));
    }
    let records = files_under(&state);
    assert!(
        records
            .iter()
            .filter(|(path, _)| path.components().any(|c| c.as_os_str() == "runs"))
            .count()
            >= 2,
        "{:?}",
        records.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for (path, text) in &records {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} in {}", path.display());
        }
    }
    let _ = std::fs::remove_dir_all(&state);
    emulator.shutdown().await;
}

/// A grant whose rule cannot be removed is reported by the webhook, by the revoke and by every
/// sweep until it is gone; a grant placed and removed without trouble says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_that_could_not_be_removed_is_notified_until_it_is_gone() {
    let emulator = start(emulator_config(vec![vault(
        "kv-prod",
        &["52.174.10.20/32"],
    )]))
    .await;
    let (url, received) = webhook().await;
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let state = state.to_str().unwrap();
    let id = vault_id("kv-prod");
    let env = [("TAGFENCE_NOTIFY_URL", url.as_str())];
    let grant = [
        "grant",
        "--vault",
        &id,
        "--ip",
        "20.37.158.9",
        "--ttl",
        "30m",
        "--state-dir",
        state,
    ];
    let revoke = [
        "revoke",
        "--vault",
        &id,
        "--ip",
        "20.37.158.9",
        "--state-dir",
        state,
    ];
    let sweep = ["sweep", "--state-dir", state];

    let placed = tagfence(&emulator, &grant, &env).await;
    assert!(placed.status.success(), "{}", stderr(&placed));
    assert!(texts(&received).is_empty(), "{:?}", texts(&received));

    emulator.add_fault(Fault {
        route: Some(Route::VaultPatch),
        vault: None,
        kind: FaultKind::Status {
            status: 500,
            code: "InternalServerError".into(),
            message: "boom".into(),
            retry_after: None,
        },
        count: 100,
    });
    let failed = tagfence(&emulator, &revoke, &env).await;
    assert_eq!(failed.status.code(), Some(2), "{}", stdout(&failed));
    let messages = texts(&received);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].starts_with("tagfence: removing a revoked grant on /subscriptions/"),
        "{}",
        messages[0]
    );
    assert!(
        messages[0].contains("InternalServerError: boom"),
        "{}",
        messages[0]
    );

    let still = tagfence(&emulator, &sweep, &env).await;
    assert_eq!(still.status.code(), Some(2), "{}", stdout(&still));
    let messages = texts(&received);
    assert!(
        messages.iter().any(
            |m| m.starts_with("tagfence: 1 ended grant(s) still on their vault")
                && m.contains("20.37.158.9")
        ),
        "{messages:?}"
    );
    assert!(rules_of(&emulator, "kv-prod").contains(&"20.37.158.9/32".to_owned()));

    emulator.clear_faults();
    let count = texts(&received).len();
    let swept = tagfence(&emulator, &sweep, &env).await;
    assert!(swept.status.success(), "{}", stdout(&swept));
    assert_eq!(
        texts(&received).len(),
        count,
        "a sweep that removes everything says nothing"
    );
    assert_eq!(rules_of(&emulator, "kv-prod"), ["52.174.10.20/32"]);
    emulator.shutdown().await;
}
