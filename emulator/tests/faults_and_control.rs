//! Injected faults, the request log, the control routes and connection handling.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use tagfence_emulator::{Config, Fault, FaultKind, Route};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn status_fault(route: Option<Route>, vault: Option<&str>, status: u16, count: u32) -> Fault {
    Fault {
        route,
        vault: vault.map(str::to_owned),
        kind: FaultKind::Status {
            status,
            code: "ServerBusy".into(),
            message: "The server is busy.".into(),
            retry_after: Some(2),
        },
        count,
    }
}

#[tokio::test]
async fn status_faults_answer_instead_of_the_handler_and_are_consumed() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    emulator.add_fault(status_fault(Some(Route::VaultGet), Some("KV-PROD"), 503, 2));

    // Another vault is not affected.
    assert_eq!(
        status_of(
            client()
                .get(vault_url(&emulator, "kv-build"))
                .bearer_auth(&token)
        )
        .await,
        200
    );
    for _ in 0..2 {
        let response = client()
            .get(vault_url(&emulator, "kv-prod"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&response, "retry-after").as_deref(), Some("2"));
        assert_eq!(
            arm_error(response).await,
            (503, "ServerBusy".into(), "The server is busy.".into())
        );
    }
    assert_eq!(
        status_of(
            client()
                .get(vault_url(&emulator, "kv-prod"))
                .bearer_auth(&token)
        )
        .await,
        200
    );

    let log: Vec<(u16, Option<String>)> = emulator
        .requests()
        .into_iter()
        .map(|r| (r.status, r.fault))
        .collect();
    assert_eq!(
        log,
        [
            (200, None),
            (503, Some("status 503 ServerBusy".into())),
            (503, Some("status 503 ServerBusy".into())),
            (200, None)
        ]
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn faults_apply_in_fifo_order_and_can_be_cleared() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    emulator.add_fault(status_fault(None, None, 500, 1));
    emulator.add_fault(status_fault(Some(Route::VaultGet), None, 502, 1));
    emulator.add_fault(status_fault(None, None, 504, 5));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            client()
                .get(vault_url(&emulator, "kv-prod"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [500, 502, 504]);
    emulator.clear_faults();
    assert_eq!(
        status_of(
            client()
                .get(vault_url(&emulator, "kv-prod"))
                .bearer_auth(&token)
        )
        .await,
        200
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn delay_faults_wait_then_handle_the_request() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    emulator.add_fault(Fault {
        route: Some(Route::VaultPatch),
        vault: None,
        kind: FaultKind::Delay { ms: 300 },
        count: 1,
    });
    let started = Instant::now();
    let body = json!({"properties": {"networkAcls": {"bypass": "AzureServices", "defaultAction": "Deny", "ipRules": [{"value": "20.0.0.1"}], "virtualNetworkRules": []}}});
    let response = patch_vault(&emulator, "kv-build", &token, &body).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.status(), 200);
    assert_eq!(emulator.ip_rules("kv-build"), ["20.0.0.1/32"]);
    assert_eq!(emulator.requests()[0].fault.as_deref(), Some("delay 300ms"));
    emulator.shutdown().await;
}

#[tokio::test]
async fn drop_faults_close_the_connection_without_any_response() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    emulator.add_fault(Fault {
        route: Some(Route::VaultGet),
        vault: None,
        kind: FaultKind::Drop,
        count: 2,
    });

    // At the socket level: the request is read, then the connection ends without a byte.
    let mut stream = TcpStream::connect(emulator.local_addr()).await.unwrap();
    let path = vault_url(&emulator, "kv-prod").replace(&emulator.base_url(), "");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received))
        .await
        .unwrap();
    if let Err(error) = read {
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset,
            "a close or a reset, nothing else"
        );
    }
    assert!(
        received.is_empty(),
        "no status line: {:?}",
        String::from_utf8_lossy(&received)
    );

    // Through an HTTP client: a transport error, not a status.
    let error = client()
        .get(vault_url(&emulator, "kv-prod"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap_err();
    assert!(error.status().is_none() && !error.is_timeout(), "{error:?}");

    // The fault is used up.
    assert_eq!(
        status_of(
            client()
                .get(vault_url(&emulator, "kv-prod"))
                .bearer_auth(&token)
        )
        .await,
        200
    );
    let log: Vec<(u16, Option<String>, bool)> = emulator
        .requests()
        .into_iter()
        .map(|r| (r.status, r.fault, r.authorized))
        .collect();
    assert_eq!(
        log,
        [
            (0, Some("drop connection".into()), true),
            (0, Some("drop connection".into()), true),
            (200, None, true)
        ]
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_delayed_request_whose_client_gives_up_is_abandoned_and_never_handled() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    emulator.add_fault(Fault {
        route: Some(Route::VaultPatch),
        vault: None,
        kind: FaultKind::Delay { ms: 1500 },
        count: 1,
    });
    let body = json!({"properties": {"networkAcls": {"bypass": "AzureServices", "defaultAction": "Deny", "ipRules": [{"value": "20.0.0.1"}], "virtualNetworkRules": []}}});
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let error = impatient
        .patch(vault_url(&emulator, "kv-build"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    // The emulator notices the closed connection and stops handling the request.
    let deadline = Instant::now() + Duration::from_secs(5);
    while emulator.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the abandoned request was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let record = &emulator.requests()[0];
    assert_eq!(
        (
            record.route,
            record.status,
            record.abandoned,
            record.fault.as_deref()
        ),
        (Route::VaultPatch, 0, true, Some("delay 1500ms"))
    );
    // Past the delay, the write has still not been applied.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(emulator.ip_rules("kv-build").is_empty());
    assert_eq!(emulator.requests().len(), 1);
    emulator.shutdown().await;
}

#[tokio::test]
async fn drop_after_faults_handle_the_request_then_close_the_connection() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    emulator.add_fault(Fault {
        route: Some(Route::VaultPatch),
        vault: Some("kv-build".into()),
        kind: FaultKind::DropAfter,
        count: 1,
    });
    let body = json!({"properties": {"networkAcls": {"bypass": "AzureServices", "defaultAction": "Deny", "ipRules": [{"value": "20.0.0.1"}], "virtualNetworkRules": []}}});
    // The client sees a transport error, not a status…
    let error = client()
        .patch(vault_url(&emulator, "kv-build"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap_err();
    assert!(error.status().is_none() && !error.is_timeout(), "{error:?}");
    // …but the write was applied, and the record says what the handler answered.
    assert_eq!(emulator.ip_rules("kv-build"), ["20.0.0.1/32"]);
    let log: Vec<(Route, u16, Option<String>)> = emulator
        .requests()
        .into_iter()
        .map(|r| (r.route, r.status, r.fault))
        .collect();
    assert_eq!(
        log,
        [(
            Route::VaultPatch,
            200,
            Some("drop connection after handling".into())
        )]
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn edit_after_faults_change_the_vault_right_after_the_matched_request() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    emulator.add_fault(Fault {
        route: Some(Route::VaultGet),
        vault: Some("kv-prod".into()),
        kind: FaultKind::EditAfter {
            add: vec!["52.174.99.1".into(), "20.37.194.0/24".into()],
            remove: vec!["20.37.158.0/23".into(), "1.1.1.1".into()],
        },
        count: 1,
    });
    let rules = |value: &Value| -> Vec<String> {
        value["properties"]["networkAcls"]["ipRules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"].as_str().unwrap().to_owned())
            .collect()
    };
    let read = || async {
        client()
            .get(vault_url(&emulator, "kv-prod"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    // The matched read answers with the vault as it was…
    let before = vec![
        "20.37.158.0/23",
        "20.37.194.0/24",
        "40.74.28.0/23",
        "52.174.10.20/32",
    ];
    assert_eq!(rules(&read().await), before);
    // …and the next read sees the edit: a rule added (once, as /32), one removed; rules to add
    // that are there already and rules to remove that are not change nothing.
    let after = vec![
        "20.37.194.0/24",
        "40.74.28.0/23",
        "52.174.10.20/32",
        "52.174.99.1/32",
    ];
    assert_eq!(rules(&read().await), after);
    assert_eq!(emulator.ip_rules("kv-prod"), after);
    // The fault is used up: no further edit.
    assert_eq!(rules(&read().await), after);
    let faults: Vec<Option<String>> = emulator.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(
        faults,
        [
            Some(
                "edit ip rules after: +52.174.99.1 +20.37.194.0/24 -20.37.158.0/23 -1.1.1.1".into()
            ),
            None,
            None
        ]
    );
    // Everything else in networkAcls is kept.
    let vault = emulator.vault("kv-prod").unwrap();
    assert_eq!(vault["properties"]["networkAcls"]["defaultAction"], "Deny");
    assert_eq!(
        vault["properties"]["networkAcls"]["virtualNetworkRules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // On a request without a vault, the request is handled and nothing is edited.
    emulator.add_fault(Fault {
        route: None,
        vault: None,
        kind: FaultKind::EditAfter {
            add: vec!["52.174.99.2".into()],
            remove: Vec::new(),
        },
        count: 1,
    });
    let page = client()
        .get(emulator.download_page_url())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404, "no document configured");
    assert_eq!(emulator.ip_rules("kv-prod"), after);
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_request_log_records_route_vault_status_and_query() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    client()
        .get(vault_url(&emulator, "kv-prod"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    client()
        .patch(vault_url(&emulator, "kv-locked"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    client()
        .get(format!("{}/_emulator/vaults", emulator.base_url()))
        .send()
        .await
        .unwrap();
    let records = emulator.requests();
    assert_eq!(records.len(), 2, "control requests are not logged");
    assert_eq!(records[0].method, "GET");
    assert_eq!(records[0].route, Route::VaultGet);
    assert_eq!(records[0].vault.as_deref(), Some("kv-prod"));
    assert_eq!(records[0].status, 200);
    assert_eq!(records[0].query, "api-version=2025-05-01");
    assert_eq!(records[0].path, format!("/subscriptions/{SUB}/resourceGroups/rg-secrets/providers/Microsoft.KeyVault/vaults/kv-prod"));
    assert!(records[0].authorized);
    assert_eq!(
        (records[1].route, records[1].status, records[1].authorized),
        (Route::VaultPatch, 403, false)
    );
    assert!(records[0].at_ms <= records[1].at_ms);
    emulator.clear_requests();
    assert!(emulator.requests().is_empty());
    emulator.shutdown().await;
}

#[tokio::test]
async fn control_routes_expose_the_log_faults_and_vaults() {
    let emulator = start(config()).await;
    let base = emulator.base_url();
    let token = emulator.issue_token(ARM);
    client()
        .get(vault_url(&emulator, "kv-prod"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    let log: Value = client()
        .get(format!("{base}/_emulator/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log.as_array().unwrap().len(), 1);
    assert_eq!(log[0]["route"], "VaultGet");
    assert_eq!(log[0]["vault"], "kv-prod");
    assert_eq!(
        status_of(client().delete(format!("{base}/_emulator/requests"))).await,
        204
    );
    assert!(emulator.requests().is_empty());

    let fault = json!({"route": "VaultGet", "kind": {"Status": {"status": 500, "code": "InternalServerError", "message": "boom"}}, "count": 1});
    assert_eq!(
        status_of(
            client()
                .post(format!("{base}/_emulator/faults"))
                .json(&fault)
        )
        .await,
        204
    );
    assert_eq!(
        status_of(
            client()
                .get(vault_url(&emulator, "kv-prod"))
                .bearer_auth(&token)
        )
        .await,
        500
    );
    let drop_fault = json!({"kind": "Drop", "count": 3});
    assert_eq!(
        status_of(
            client()
                .post(format!("{base}/_emulator/faults"))
                .json(&drop_fault)
        )
        .await,
        204
    );
    assert_eq!(
        status_of(client().delete(format!("{base}/_emulator/faults"))).await,
        204
    );
    assert_eq!(
        status_of(
            client()
                .get(vault_url(&emulator, "kv-prod"))
                .bearer_auth(&token)
        )
        .await,
        200
    );
    let bad = client()
        .post(format!("{base}/_emulator/faults"))
        .json(&json!({"kind": "Explode"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let vaults: Value = client()
        .get(format!("{base}/_emulator/vaults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = vaults
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kv-prod", "kv-build", "kv-legacy", "kv-locked"]);

    let response = client()
        .put(format!("{base}/_emulator/vaults/kv-build/ip-rules"))
        .json(&json!(["40.74.28.0/23", "52.1.2.3"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        emulator.ip_rules("kv-build"),
        ["40.74.28.0/23", "52.1.2.3/32"]
    );
    let missing = client()
        .put(format!("{base}/_emulator/vaults/kv-none/ip-rules"))
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        status_of(client().get(format!("{base}/_emulator/nothing"))).await,
        404
    );

    let logged: Vec<Route> = emulator.requests().iter().map(|r| r.route).collect();
    assert_eq!(
        logged,
        [Route::VaultGet, Route::VaultGet],
        "control requests are not logged"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn out_of_band_edits_are_stored_like_arm_would_and_not_logged() {
    let emulator = start(config()).await;
    emulator.set_ip_rules("/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000001/resourceGroups/rg-secrets/providers/Microsoft.KeyVault/vaults/KV-PROD", vec!["20.37.158.0/23".into(), "203.0.113.9".into()]);
    assert_eq!(
        emulator.ip_rules("kv-prod"),
        ["20.37.158.0/23", "203.0.113.9/32"]
    );
    // Everything else in networkAcls is kept.
    let vault = emulator.vault("kv-prod").unwrap();
    assert_eq!(
        vault["properties"]["networkAcls"]["virtualNetworkRules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    emulator.set_ip_rules("kv-unknown", vec!["1.2.3.4".into()]);
    assert!(emulator.vault("kv-unknown").is_none());
    assert!(emulator.requests().is_empty());
    emulator.shutdown().await;
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns the status.
async fn read_response(reader: &mut BufReader<TcpStream>) -> u16 {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    status
}

#[tokio::test]
async fn connections_are_kept_alive_between_requests() {
    let emulator = start(config()).await;
    let stream = TcpStream::connect(emulator.local_addr()).await.unwrap();
    let mut reader = BufReader::new(stream);
    for _ in 0..3 {
        reader
            .get_mut()
            .write_all(b"GET /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut reader).await, 404);
    }
    assert_eq!(emulator.requests().len(), 3);
    emulator.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_stops_listening() {
    let emulator = start(config()).await;
    let address = emulator.local_addr();
    let mut idle = TcpStream::connect(address).await.unwrap();
    idle.write_all(b"GET /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reader = BufReader::new(idle);
    assert_eq!(read_response(&mut reader).await, 404);
    tokio::time::timeout(Duration::from_secs(3), emulator.shutdown())
        .await
        .expect("shutdown is prompt");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), reader.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(closed.is_err() || rest.is_empty());
    assert!(TcpStream::connect(address).await.is_err());
}

#[tokio::test]
async fn resource_graph_finds_tagged_readable_vaults() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    let url = format!(
        "{}/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01",
        emulator.base_url()
    );
    let body = json!({
        "subscriptions": [SUB],
        "query": "resources | where type =~ 'microsoft.keyvault/vaults' | where tags['tagfence'] =~ 'azuredevops' | project id, name, resourceGroup, subscriptionId, networkAcls = properties.networkAcls",
        "options": {"$top": 1}
    });
    let response = client()
        .post(&url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first: Value = response.json().await.unwrap();
    assert_eq!(first["totalRecords"], 2);
    assert_eq!(first["data"][0]["name"], "kv-build");
    assert_eq!(first["data"][0]["resourceGroup"], "rg-secrets");
    let mut next = body.clone();
    next["options"]["$skipToken"] = first["$skipToken"].clone();
    let second: Value = client()
        .post(&url)
        .bearer_auth(&token)
        .json(&next)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["data"][0]["name"], "kv-prod");
    assert!(second.get("$skipToken").is_none());

    // Forbidden vaults are invisible (three vaults, one of them forbidden, and the sample
    // storage account and two registries); unsupported KQL is a 400.
    let all: Value = client()
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"query": "resources | project name"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["totalRecords"], 6);
    let (status, code, _) = arm_error(
        client()
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({"query": "resources | summarize dcount(name)"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "BadRequest"));
    assert_eq!(status_of(client().post(&url).json(&body)).await, 401);
    assert!(emulator
        .requests()
        .iter()
        .all(|r| r.route == Route::ResourceGraph));
    emulator.shutdown().await;
}

#[tokio::test]
async fn an_invalid_seed_stops_the_emulator_from_starting() {
    let mut seed = seed();
    seed.vaults.push(json!({"name": "no-id"}));
    let error = tagfence_emulator::Emulator::start(
        Config {
            seed,
            ..Config::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "current_thread")]
async fn the_emulator_keeps_serving_while_the_calling_runtime_blocks() {
    let emulator = start(config()).await;
    let address = emulator.local_addr();
    // A blocking client on the test's only runtime thread, as a test running tagfence's binary
    // with std::process::Command would be.
    let status_line = {
        use std::io::{BufRead, Write};
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /nothing HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stream)
            .read_line(&mut line)
            .unwrap();
        line
    };
    assert!(status_line.starts_with("HTTP/1.1 404"), "{status_line:?}");
    emulator.shutdown().await;
}

/// The status of the answer to `request`.
async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}
