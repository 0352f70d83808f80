//! Throttling that fails fast (issue 11): a 429 or 503 asking for a wait longer than tagfence
//! waits (60 s), or longer than the call has left, ends that call at once with an error naming
//! the status and the wait; nothing is written. Through the real binary against the emulator.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tagfence_emulator::{Emulator, Fault, FaultKind, Route};

const MANUAL: &str = "52.174.10.20/32";

fn throttle(emulator: &Emulator, route: Route, vault: &str, status: u16, retry_after: u64) {
    let code = if status == 429 {
        "SubscriptionRequestsThrottled"
    } else {
        "ServiceUnavailable"
    };
    emulator.add_fault(Fault {
        route: Some(route),
        vault: Some(vault.to_owned()),
        kind: FaultKind::Status {
            status,
            code: code.into(),
            message: "Number of 'write' requests for subscription exceeded.".into(),
            retry_after: Some(retry_after),
        },
        count: 100,
    });
}

fn patches(emulator: &Emulator) -> Vec<u16> {
    emulator
        .requests()
        .iter()
        .filter(|r| r.route == Route::VaultPatch)
        .map(|r| r.status)
        .collect()
}

/// `apply` of AzureDevOps to `vault` with ARM's default call deadline (120 s).
async fn apply(
    emulator: &Emulator,
    vault: &str,
    extra: &[(&str, &str)],
) -> (std::process::Output, Duration) {
    let id = vault_id(vault);
    let started = Instant::now();
    let output = tagfence(
        emulator,
        &["apply", "--vault", &id, "--tag", "AzureDevOps"],
        extra,
    )
    .await;
    (output, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_throttled_for_an_hour_fails_at_once_and_writes_nothing() {
    let emulator = start(emulator_config(vec![vault("kv-01", &[MANUAL])])).await;
    throttle(&emulator, Route::VaultPatch, "kv-01", 429, 3600);
    let (output, took) = apply(
        &emulator,
        "kv-01",
        &[("TAGFENCE_HTTP_CALL_TIMEOUT_SECS", "120")],
    )
    .await;
    eprintln!("took {took:?}");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // The binary's report is all there is to read: the message names the status and the wait.
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(
        all.contains("writing the firewall of vault kv-01: Azure throttled the request (429 TooManyRequests) and asked to wait 3600 s, more than the 60 s tagfence waits at most; the request was not carried out, try again later"),
        "{all}"
    );
    assert!(!all.contains("no answer within"), "{all}");
    // One PATCH, refused; the vault is as it was.
    assert_eq!(patches(&emulator), [429]);
    assert_eq!(rules_of(&emulator, "kv-01"), [MANUAL]);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_longer_than_the_call_has_left_fails_at_once_on_a_read_too() {
    let emulator = start(emulator_config(vec![vault("kv-01", &[MANUAL])])).await;
    // 30 s is under the cap, but over a 5-second call deadline.
    throttle(&emulator, Route::VaultGet, "kv-01", 503, 30);
    let (output, took) = apply(
        &emulator,
        "kv-01",
        &[("TAGFENCE_HTTP_CALL_TIMEOUT_SECS", "5")],
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(took < Duration::from_secs(4), "took {took:?}");
    // As above; the time left of the deadline varies, so the message is matched in two parts.
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(
        all.contains("reading vault kv-01: Azure throttled the request (503 ServiceUnavailable) and asked to wait 30 s, more than the "),
        "{all}"
    );
    assert!(all.contains(" left of the call's 5 s deadline;"), "{all}");
    assert!(patches(&emulator).is_empty());
    assert_eq!(rules_of(&emulator, "kv-01"), [MANUAL]);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_wait_is_still_waited_and_the_write_lands() {
    let emulator = start(emulator_config(vec![vault("kv-01", &[MANUAL])])).await;
    emulator.add_fault(Fault {
        route: Some(Route::VaultPatch),
        vault: Some("kv-01".into()),
        kind: FaultKind::Status {
            status: 429,
            code: "SubscriptionRequestsThrottled".into(),
            message: "Number of 'write' requests for subscription exceeded.".into(),
            retry_after: Some(1),
        },
        count: 1,
    });
    let (output, took) = apply(&emulator, "kv-01", &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(took >= Duration::from_secs(1), "took {took:?}");
    assert_eq!(patches(&emulator), [429, 200]);
    let mut expected: Vec<&str> = AZURE_DEVOPS.to_vec();
    expected.push(MANUAL);
    assert_eq!(rules_of(&emulator, "kv-01"), sorted(&expected));
    emulator.shutdown().await;
}
