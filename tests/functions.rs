//! `tagfence serve` under the Functions host double, against the emulator: the timer, the HTTP
//! function, the Event Grid hook, the envelope contract, logs, and shutdown.

mod support;

use serde_json::{json, Value};
use support::host::{vault_write_cloud_event, vault_write_event, HostDouble};
use support::*;
use tagfence_emulator::Route;

const MANUAL_RULE: &str = "52.174.10.20/32";

/// The app settings a deployment would have, pointed at the emulator.
fn app_settings(emulator: &tagfence_emulator::Emulator, vaults: &[&str]) -> Vec<(String, String)> {
    let mut settings = emulator_env(emulator);
    settings.retain(|(k, _)| k != "TAGFENCE_LOG");
    settings.push((
        "TAGFENCE_VAULTS".into(),
        vaults
            .iter()
            .map(|v| vault_id(v))
            .collect::<Vec<_>>()
            .join(","),
    ));
    settings.push(("TAGFENCE_TAGS".into(), "AzureDevOps".into()));
    settings.push(("TAGFENCE_SCHEDULE".into(), "0 30 6 * * 3".into()));
    settings
}

fn expected_rules(extra: &[&str]) -> Vec<String> {
    let mut rules: Vec<&str> = AZURE_DEVOPS.to_vec();
    rules.extend_from_slice(extra);
    sorted(&rules)
}

fn writes(emulator: &tagfence_emulator::Emulator) -> usize {
    emulator
        .requests()
        .iter()
        .filter(|r| r.route == Route::VaultPatch)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_reconciles_every_vault_and_logs_json_on_stdout() {
    let emulator = start(emulator_config(vec![
        vault("kv-prod", &[MANUAL_RULE]),
        vault("kv-build", &[]),
    ]))
    .await;
    let mut host = HostDouble::start(&app_settings(&emulator, &["kv-prod", "kv-build"])).await;
    eprintln!("ready after {:?}", host.ready_after);

    let invocation = host.invoke_timer(true).await;
    assert!(invocation.succeeded(), "{}", invocation.body);
    assert_eq!(
        rules_of(&emulator, "kv-prod"),
        expected_rules(&[MANUAL_RULE])
    );
    assert_eq!(rules_of(&emulator, "kv-build"), expected_rules(&[]));
    let logs: Vec<&str> = invocation.body["Logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        logs.iter()
            .any(|l| l.starts_with("kv-prod: applied (+24 -0 =0 unmanaged 1)")),
        "{logs:?}"
    );
    assert!(
        logs.last().unwrap().starts_with("2 vaults: 2 applied"),
        "{logs:?}"
    );
    assert_eq!(invocation.body["ReturnValue"]["failures"], 0);

    // Every stdout line is JSON; the invocation's lines carry its id; stderr is empty.
    let stdout = host.stdout_lines();
    let parsed: Vec<Value> = stdout
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(parsed.iter().any(
        |l| l["span"]["invocation_id"] == invocation.invocation_id.as_str()
            && l["fields"]["is_past_due"] == true
    ));
    assert!(parsed
        .iter()
        .any(|l| l["fields"]["message"] == "timer schedule"
            && l["fields"]["next_run_utc"]
                .as_str()
                .is_some_and(|t| t.contains("T06:30:00"))));
    assert_eq!(host.stderr_lines(), Vec::<String>::new());

    // A second timer run writes nothing.
    emulator.clear_requests();
    let again = host.invoke_timer(false).await;
    assert!(again.succeeded());
    assert_eq!(writes(&emulator), 0);

    assert_eq!(host.stop().await, Some(0), "graceful exit on SIGTERM");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_function_plans_syncs_and_reports_status() {
    let emulator = start(emulator_config(vec![
        vault("kv-prod", &[MANUAL_RULE]),
        vault("kv-build", &[]),
    ]))
    .await;
    let mut host = HostDouble::start(&app_settings(&emulator, &["kv-prod", "kv-build"])).await;

    // Dry run: the plan comes back, nothing is written.
    let invocation = host
        .invoke_http("POST", "sync", &[("dryRun", "true")])
        .await;
    assert!(invocation.succeeded());
    let (status, body) = invocation.http_response();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dry_run"], true);
    assert_eq!(body["vaults"][0]["outcome"]["status"], "would_apply");
    assert_eq!(
        body["vaults"][0]["plan"]["add"].as_array().unwrap().len(),
        24
    );
    assert_eq!(writes(&emulator), 0);
    assert_eq!(rules_of(&emulator, "kv-prod"), [MANUAL_RULE]);

    // One vault by name.
    let invocation = host
        .invoke_http("POST", "sync", &[("vault", "kv-build")])
        .await;
    let (status, body) = invocation.http_response();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["vaults"].as_array().unwrap().len(), 1);
    assert_eq!(body["vaults"][0]["name"], "kv-build");
    assert_eq!(rules_of(&emulator, "kv-build"), expected_rules(&[]));
    assert_eq!(rules_of(&emulator, "kv-prod"), [MANUAL_RULE]);

    // Bad parameters: 400 with a message; the invocation itself succeeds.
    for (query, message) in [
        (
            vec![("dryRun", "maybe")],
            "dryRun must be true or false, not 'maybe'",
        ),
        (
            vec![("vault", "kv-nope")],
            "unknown resource 'kv-nope': not one of the managed resources (listed or discovered)",
        ),
    ] {
        let invocation = host.invoke_http("POST", "sync", &query).await;
        assert!(invocation.succeeded());
        let (status, body) = invocation.http_response();
        assert_eq!(body["kind"], "bad_request", "{body}");
        // What the caller reads: which parameter is wrong and why.
        assert_eq!((status, body["error"].as_str().unwrap()), (400, message));
    }
    let (status, _) = host.invoke_http("GET", "sync", &[]).await.http_response();
    assert_eq!(status, 405);
    let (status, _) = host
        .invoke_http("POST", "frobnicate", &[])
        .await
        .http_response();
    assert_eq!(status, 404);

    // Status: the configuration in effect, no secrets.
    let invocation = host.invoke_http("GET", "status", &[]).await;
    let (status, body) = invocation.http_response();
    assert_eq!(status, 200);
    assert_eq!(body["schedule"]["expression"], "0 30 6 * * 3");
    assert!(body["schedule"]["next_run_utc"]
        .as_str()
        .is_some_and(|t| t.contains("T06:30:00")));
    assert_eq!(body["configuration"]["vaults"].as_array().unwrap().len(), 2);
    assert_eq!(
        body["configuration"]["vaults"][0]["tags"],
        json!(["AzureDevOps"])
    );
    let text = body.to_string();
    assert!(
        !text.contains(&emulator.identity_header()),
        "the status leaks the identity header"
    );

    assert!(host.alive());
    host.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_after_a_manual_edit_restores_the_rules_and_other_events_write_nothing() {
    let emulator = start(emulator_config(vec![
        vault("kv-prod", &[]),
        vault("kv-other", &["40.80.187.0/24"]),
    ]))
    .await;
    let mut host = HostDouble::start(&app_settings(&emulator, &["kv-prod"])).await;
    assert!(host.invoke_timer(false).await.succeeded());
    assert_eq!(rules_of(&emulator, "kv-prod"), expected_rules(&[]));

    // Someone deletes two ranges by hand; the write event brings them back.
    let mut edited: Vec<String> = AZURE_DEVOPS[2..].iter().map(|s| s.to_string()).collect();
    edited.push(MANUAL_RULE.into());
    emulator.set_ip_rules("kv-prod", edited);
    let invocation = host
        .invoke_event(&vault_write_event(&vault_id("kv-prod")), false)
        .await;
    assert!(invocation.succeeded(), "{}", invocation.body);
    // The person's own rule is kept (no state yet says tagfence added it).
    assert_eq!(
        rules_of(&emulator, "kv-prod"),
        expected_rules(&[MANUAL_RULE])
    );

    // Our own write's event finds nothing to do: one GET, no PATCH. Sent as a JSON string and
    // as a CloudEvent, the way the host might deliver it.
    emulator.clear_requests();
    for (event, as_string) in [
        (vault_write_event(&vault_id("kv-prod")), true),
        (vault_write_cloud_event(&vault_id("kv-prod")), false),
    ] {
        let invocation = host.invoke_event(&event, as_string).await;
        assert!(invocation.succeeded(), "{}", invocation.body);
        assert_eq!(
            invocation.body["ReturnValue"]["outcome"]["status"],
            "in_sync"
        );
    }
    assert_eq!(writes(&emulator), 0);

    // A vault tagfence does not manage, and an event of another kind: acknowledged, nothing done.
    let invocation = host
        .invoke_event(&vault_write_event(&vault_id("kv-other")), false)
        .await;
    assert!(invocation.succeeded());
    assert_eq!(
        invocation.body["ReturnValue"]["ignored"],
        vault_id("kv-other")
    );
    let mut delete = vault_write_event(&vault_id("kv-prod"));
    delete["eventType"] = "Microsoft.Resources.ResourceDeleteSuccess".into();
    let invocation = host.invoke_event(&delete, false).await;
    assert!(invocation.succeeded());
    assert_eq!(
        invocation.body["ReturnValue"]["ignored"],
        "Microsoft.Resources.ResourceDeleteSuccess"
    );
    assert!(emulator
        .requests()
        .iter()
        .all(|r| r.vault.as_deref() != Some("kv-other")));
    assert_eq!(writes(&emulator), 0);

    host.stop().await;
    emulator.shutdown().await;
}

/// `value` as JSON text, `layers` times.
fn as_json_text(value: &Value, layers: usize) -> Value {
    (0..layers).fold(value.clone(), |v, _| Value::String(v.to_string()))
}

fn log_lines(invocation: &support::host::Invocation) -> Vec<String> {
    invocation.body["Logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_handled_in_every_form_the_host_may_send_it() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[])])).await;
    let mut host = HostDouble::start(&app_settings(&emulator, &["kv-prod"])).await;
    let event = vault_write_event(&vault_id("kv-prod"));
    // An object, JSON text of it (`JsonConvert.SerializeObject`), JSON text of that, and one
    // layer more: the first reconciles, the others find the vault in sync.
    for (layers, status) in [
        (0, "applied"),
        (1, "in_sync"),
        (2, "in_sync"),
        (3, "in_sync"),
    ] {
        let invocation = host.invoke_event_data(as_json_text(&event, layers)).await;
        assert!(invocation.succeeded(), "{layers}: {}", invocation.body);
        assert_eq!(
            invocation.body["ReturnValue"]["outcome"]["status"], status,
            "{layers}: {}",
            invocation.body
        );
        assert_eq!(invocation.body["ReturnValue"]["name"], "kv-prod");
    }
    assert_eq!(writes(&emulator), 1);
    assert_eq!(rules_of(&emulator, "kv-prod"), expected_rules(&[]));

    // Four layers is more than the host (and one hop more) ever wraps: refused, saying so.
    let invocation = host.invoke_event_data(as_json_text(&event, 4)).await;
    assert_eq!(invocation.status, 400, "{}", invocation.body);
    let error = invocation.body["error"].as_str().unwrap();
    assert!(
        error.starts_with("Data.event is not what the Event Grid trigger sends: got an object inside 4 layers of JSON text (at most 3 are read); expected an event (a JSON object) or a batch of events (a JSON array of objects)"),
        "{error}"
    );
    assert!(host.stderr_lines().is_empty(), "{:?}", host.stderr_lines());
    host.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_events_is_handled_event_by_event_and_the_answer_reports_each() {
    let emulator = start(emulator_config(vec![
        vault("kv-prod", &[MANUAL_RULE]),
        vault("kv-build", &[]),
        vault("kv-other", &[]),
    ]))
    .await;
    let mut host = HostDouble::start(&app_settings(&emulator, &["kv-prod", "kv-build"])).await;

    // Two events about two vaults, as an array: both reconciled, both reported.
    let batch = json!([
        vault_write_event(&vault_id("kv-prod")),
        vault_write_cloud_event(&vault_id("kv-build")),
    ]);
    let invocation = host.invoke_event_data(batch.clone()).await;
    assert!(invocation.succeeded(), "{}", invocation.body);
    let events = invocation.body["ReturnValue"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{}", invocation.body);
    for (i, name) in ["kv-prod", "kv-build"].iter().enumerate() {
        assert_eq!(events[i]["event"], i + 1);
        assert_eq!(
            events[i]["type"],
            "Microsoft.Resources.ResourceWriteSuccess"
        );
        assert_eq!(events[i]["result"]["name"], *name);
        assert_eq!(events[i]["result"]["outcome"]["status"], "applied");
    }
    let logs = log_lines(&invocation);
    assert!(
        logs.iter()
            .any(|l| l.starts_with("event 1/2: kv-prod: applied (+24 -0 =0 unmanaged 1)")),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.starts_with("event 2/2: kv-build: applied (+24 -0 =0 unmanaged 0)")),
        "{logs:?}"
    );
    assert_eq!(logs.last().unwrap(), "2 events: 0 failed");
    assert_eq!(
        rules_of(&emulator, "kv-prod"),
        expected_rules(&[MANUAL_RULE])
    );
    assert_eq!(rules_of(&emulator, "kv-build"), expected_rules(&[]));
    assert_eq!(writes(&emulator), 2);

    // The same batch as JSON text, with events the hook ignores and the same vault twice; each
    // event of it as JSON text too (a `string[]`): one read per vault, nothing written.
    emulator.clear_requests();
    let mut delete = vault_write_event(&vault_id("kv-prod"));
    delete["eventType"] = "Microsoft.Resources.ResourceDeleteSuccess".into();
    let mixed = json!([
        vault_write_event(&vault_id("kv-prod")).to_string(),
        vault_write_event(&vault_id("kv-other")),
        delete,
        vault_write_event(&vault_id("kv-build")),
        vault_write_cloud_event(&vault_id("kv-prod")),
    ]);
    let invocation = host.invoke_event_data(as_json_text(&mixed, 1)).await;
    assert!(invocation.succeeded(), "{}", invocation.body);
    let events = invocation.body["ReturnValue"]["events"].as_array().unwrap();
    let results: Vec<Value> = events
        .iter()
        .map(|e| {
            e["result"]["outcome"]["status"]
                .as_str()
                .map(|s| json!(s))
                .or_else(|| e["result"].get("ignored").cloned())
                .or_else(|| e.get("same_vault_as_event").cloned())
                .unwrap_or(Value::Null)
        })
        .collect();
    assert_eq!(
        results,
        [
            json!("in_sync"),
            json!(vault_id("kv-other")),
            json!("Microsoft.Resources.ResourceDeleteSuccess"),
            json!("in_sync"),
            json!(1),
        ],
        "{}",
        invocation.body
    );
    assert_eq!(writes(&emulator), 0);
    let reads: Vec<String> = emulator
        .requests()
        .iter()
        .filter(|r| r.route == Route::VaultGet)
        .filter_map(|r| r.vault.clone())
        .collect();
    assert_eq!(reads, ["kv-prod", "kv-build"]);
    assert!(emulator
        .requests()
        .iter()
        .all(|r| r.vault.as_deref() != Some("kv-other")));

    // Refused whole, before anything is done: an event that is no event, and a batch larger
    // than one invocation handles.
    emulator.clear_requests();
    let bad = json!([vault_write_event(&vault_id("kv-prod")), {"data": {}}]);
    let too_many = Value::Array(vec![vault_write_event(&vault_id("kv-prod")); 101]);
    for (data, message) in [
        (bad, "Data.event is not what the Event Grid trigger sends: event 2 of the batch of 2: the event has neither eventType (Event Grid schema) nor type (CloudEvents)"),
        (too_many, "Data.event is not what the Event Grid trigger sends: a batch of 101 events; at most 100 are handled in one invocation (set maxEventsPerBatch of the event subscription to 100 or less)"),
        (json!(42), "Data.event is not what the Event Grid trigger sends: got a number (42); expected an event (a JSON object) or a batch of events (a JSON array of objects), either possibly as JSON text (a string of JSON, or a string of such a string)"),
    ] {
        let invocation = host.invoke_event_data(data).await;
        assert_eq!(invocation.status, 400, "{}", invocation.body);
        assert_eq!(invocation.body["error"], message);
    }
    assert!(emulator.requests().is_empty());
    assert!(host.stderr_lines().is_empty(), "{:?}", host.stderr_lines());
    host.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_failing_vault_fails_the_invocation_but_handles_the_others() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[])])).await;
    let mut settings = app_settings(&emulator, &["kv-prod", "kv-missing"]);
    settings.push(("TAGFENCE_HTTP_MAX_RETRIES".into(), "0".into()));
    let mut host = HostDouble::start(&settings).await;
    let batch = json!([
        vault_write_event(&vault_id("kv-missing")),
        vault_write_event(&vault_id("kv-prod")),
    ]);
    let invocation = host.invoke_event_data(batch).await;
    assert_eq!(invocation.status, 500, "{}", invocation.body);
    let error = invocation.body["error"].as_str().unwrap();
    assert!(
        error.starts_with("2 events: 1 failed: event 1: 1 vault: "),
        "{error}"
    );
    let events = invocation.body["events"].as_array().unwrap();
    // ARM refused the read of the missing vault: rejected, and no retry helps.
    let failed = &events[0]["result"];
    assert_eq!(failed["kind"], "rejected", "{}", invocation.body);
    assert_eq!(failed["retry"], false, "{}", invocation.body);
    assert_eq!(failed["vault"]["outcome"]["status"], "failed");
    assert_eq!(failed["vault"]["outcome"]["kind"], "rejected");
    assert_eq!(events[1]["result"]["outcome"]["status"], "applied");
    assert_eq!(rules_of(&emulator, "kv-prod"), expected_rules(&[]));
    host.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_envelopes_get_4xx_and_the_worker_lives() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[])])).await;
    let mut host = HostDouble::start(&app_settings(&emulator, &["kv-prod"])).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("function-timer", b"not json".to_vec()),
        (
            "function-timer",
            br#"{"Data": {}, "Metadata": {}}"#.to_vec(),
        ),
        (
            "function-timer",
            br#"{"Data": {"timer": {"IsPastDue": "sometimes"}}, "Metadata": {}}"#.to_vec(),
        ),
        (
            "function-http",
            br#"{"Data": {"req": 42}, "Metadata": {}}"#.to_vec(),
        ),
        (
            "function-eventgrid",
            br#"{"Data": {"event": {"data": {}}}, "Metadata": {}}"#.to_vec(),
        ),
    ];
    for (function, body) in cases {
        let invocation = host.invoke_raw(function, body).await;
        assert!(
            (400..500).contains(&invocation.status),
            "{function}: {} {}",
            invocation.status,
            invocation.body
        );
        assert!(invocation.body.is_object());
        assert!(host.alive());
    }
    // An oversized body is cut off at 1 MiB: a 413, or (when the worker closes the connection
    // before the client has finished sending) a broken connection. Either way the worker lives.
    match host
        .try_invoke_raw("function-eventgrid", vec![b'{'; 3_000_000])
        .await
    {
        Ok(invocation) => assert_eq!(invocation.status, 413, "{}", invocation.body),
        Err(transport) => assert!(
            transport.contains("BrokenPipe") || transport.contains("reset"),
            "{transport}"
        ),
    }
    assert!(host.alive());
    assert_eq!(writes(&emulator), 0);
    // Still serving.
    assert!(host.invoke_timer(false).await.succeeded());
    host.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_answers_500_with_a_json_body() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[])])).await;
    let mut settings = app_settings(&emulator, &["kv-prod", "kv-missing"]);
    settings.push(("TAGFENCE_HTTP_MAX_RETRIES".into(), "0".into()));
    let mut host = HostDouble::start(&settings).await;
    let invocation = host.invoke_timer(false).await;
    assert_eq!(invocation.status, 500);
    assert!(
        invocation.body["error"]
            .as_str()
            .unwrap()
            .starts_with("2 vaults: 1 applied"),
        "{}",
        invocation.body
    );
    // ARM refused the read of the missing vault: rejected, and no retry helps.
    assert_eq!(invocation.body["kind"], "rejected", "{}", invocation.body);
    assert_eq!(invocation.body["retry"], false, "{}", invocation.body);
    let missing = &invocation.body["report"]["vaults"][1];
    assert_eq!(missing["name"], "kv-missing");
    assert_eq!(missing["outcome"]["status"], "failed");
    assert_eq!(missing["outcome"]["kind"], "rejected");
    // The vault that could be reconciled was.
    assert_eq!(rules_of(&emulator, "kv-prod"), expected_rules(&[]));
    host.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_fails_invocations_clearly_but_the_worker_starts() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[])])).await;
    let mut settings = app_settings(&emulator, &["kv-prod"]);
    settings.push(("TAGFENCE_STATIC_RULES".into(), "192.168.1.1".into()));
    let mut host = HostDouble::start(&settings).await;
    let invocation = host.invoke_timer(false).await;
    assert_eq!(invocation.status, 500);
    assert_eq!(
        invocation.body["kind"], "not_configured",
        "{}",
        invocation.body
    );
    // What the operator reads: the setting, the value and why key vault and storage refuse it.
    assert_eq!(
        invocation.body["error"],
        "TAGFENCE_STATIC_RULES=192.168.1.1: overlaps the reserved range 192.168.0.0/16 (private network, RFC 1918), which Key Vault and Storage refuse; expected a public address"
    );
    assert!(emulator.requests().is_empty());
    host.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_lives_in_the_function_apps_storage_and_the_status_route_shows_the_last_runs() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[MANUAL_RULE])])).await;
    let azurite = tokio::task::spawn_blocking(support::azurite::Azurite::start)
        .await
        .unwrap();
    // As deployed: identity-based AzureWebJobsStorage settings, the managed identity's tokens.
    let mut settings = app_settings(&emulator, &["kv-prod"]);
    settings.push((
        "AzureWebJobsStorage__blobServiceUri".into(),
        format!(
            "https://127.0.0.1:{}/{}",
            azurite.port,
            support::azurite::ACCOUNT
        ),
    ));
    settings.push((
        "TAGFENCE_STATE_CA_FILE".into(),
        azurite.ca_file.display().to_string(),
    ));
    let mut host = HostDouble::start(&settings).await;

    let timer = host.invoke_timer(false).await;
    assert!(timer.succeeded(), "{}", timer.body);
    let event = host
        .invoke_event(&vault_write_event(&vault_id("kv-prod")), false)
        .await;
    assert!(event.succeeded(), "{}", event.body);

    let (status, body) = host.invoke_http("GET", "status", &[]).await.http_response();
    assert_eq!(status, 200, "{body}");
    let state = &body["state"];
    assert!(
        state["state"]
            .as_str()
            .unwrap()
            .ends_with("/devstoreaccount1/tagfence"),
        "{state}"
    );
    assert_eq!(state["source"]["change_number"], 365);
    let vault = &state["vaults"][0];
    assert_eq!(vault["name"], "kv-prod");
    // The latest run is the Event Grid one, which found the timer's write in place.
    assert_eq!(vault["last_run"]["trigger"], "eventgrid");
    assert_eq!(vault["last_run"]["status"], "in_sync");
    assert_eq!(vault["applied"]["rules"], AZURE_DEVOPS.len());
    assert_eq!(writes(&emulator), 1);
    assert!(host.stderr_lines().is_empty(), "{:?}", host.stderr_lines());
    host.stop().await;
    drop(azurite);
    emulator.shutdown().await;
}

/// Issue 11, case 6: the timer twenty times, and the Event Grid hook, all at once right after a
/// new document, with the state in a directory. Every invocation succeeds (before, two runs
/// archived the same snapshot through one temporary name and one answered 500), each vault is
/// written once, and no temporary file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invocations_all_succeed_and_leave_no_temporary_files() {
    let emulator = start(emulator_config(vec![
        vault("kv-prod", &[MANUAL_RULE]),
        vault("kv-build", &[]),
    ]))
    .await;
    let state = std::env::temp_dir().join(format!("tagfence-concurrent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let mut settings = app_settings(&emulator, &["kv-prod", "kv-build"]);
    settings.push(("TAGFENCE_STATE_DIR".into(), state.display().to_string()));
    let host = HostDouble::start(&settings).await;

    let mut calls = Vec::new();
    for n in 0..20 {
        calls.push(("function-timer", host.timer_envelope(false), n));
    }
    let event = vault_write_event(&vault_id("kv-prod"));
    calls.push(("function-eventgrid", host.event_envelope(&event), 20));
    let answers = futures::future::join_all(
        calls
            .into_iter()
            .map(|(function, body, n)| host.invoke_concurrently(function, body, n)),
    )
    .await;
    for (n, answer) in answers.iter().enumerate() {
        let invocation = answer.as_ref().expect("the worker answers");
        assert!(
            invocation.succeeded(),
            "invocation {n}: {} {}",
            invocation.status,
            invocation.body
        );
    }
    assert_eq!(writes(&emulator), 2, "each vault written once");
    assert_eq!(
        rules_of(&emulator, "kv-prod"),
        expected_rules(&[MANUAL_RULE])
    );
    let mut leftovers = Vec::new();
    let mut dirs = vec![state.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().contains(".tmp-") {
                leftovers.push(path);
            }
        }
    }
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    host.stop().await;
    let _ = std::fs::remove_dir_all(&state);
}

fn function_json(folder: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(folder)
        .join("function.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The grant function is anonymous to the Functions host (App Service authentication in front
/// of it authenticates; a function key alone must never open a firewall), takes POST and
/// DELETE on `grant/{id?}`, and answers through `res`; the sweep runs every five minutes, as
/// `core::grant::SWEEP_EVERY` says; the package carries every function folder.
#[test]
fn the_grant_and_sweep_functions_are_declared_as_the_handler_serves_them() {
    let grant = function_json("function-grant");
    let bindings = grant["bindings"].as_array().unwrap();
    let trigger = bindings.iter().find(|b| b["direction"] == "in").unwrap();
    assert_eq!(trigger["type"], "httpTrigger");
    assert_eq!(trigger["name"], "req", "the handler reads Data.req");
    assert_eq!(trigger["authLevel"], "anonymous");
    assert_eq!(trigger["methods"], json!(["post", "delete"]));
    assert_eq!(trigger["route"], "grant/{id?}");
    let out = bindings.iter().find(|b| b["direction"] == "out").unwrap();
    assert_eq!(
        (&out["type"], &out["name"]),
        (&json!("http"), &json!("res"))
    );

    let sweep = function_json("function-sweep");
    let timer = &sweep["bindings"][0];
    assert_eq!(timer["type"], "timerTrigger");
    assert_eq!(timer["name"], "timer", "the handler reads Data.timer");
    assert_eq!(timer["schedule"], "0 */5 * * * *");
    assert_eq!(timer["runOnStartup"], false);
    assert_eq!(timer["useMonitor"], true);
    assert_eq!(tagfence::core::grant::SWEEP_EVERY.as_secs(), 5 * 60);

    // Every function folder is packaged.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let package = std::fs::read_to_string(root.join("scripts/package.py")).unwrap();
    let listed = package
        .lines()
        .find(|l| l.starts_with("FUNCTIONS = "))
        .expect("scripts/package.py lists FUNCTIONS");
    let mut folders: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.starts_with("function-") && root.join(name).join("function.json").is_file()
        })
        .collect();
    folders.sort();
    assert_eq!(folders.len(), 5, "{folders:?}");
    for folder in &folders {
        assert!(
            listed.contains(&format!("\"{folder}\"")),
            "{folder} is not packaged: {listed}"
        );
    }
}

/// The worker refuses every grant until App Service authentication is on (the platform's
/// `WEBSITE_AUTH_ENABLED`): without it anyone can send the principal headers. With it, a request
/// without a principal is refused too. Neither reaches the engine or Azure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grant_function_refuses_callers_app_service_did_not_authenticate() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[])])).await;
    // A principal as App Service would forward it, but sent by the client itself.
    let forged = json!({"auth_typ": "aad", "claims": [{"typ": "oid", "val": "11111111-2222-3333-4444-555555555555"}]});
    let forged = forged.to_string();
    let envelope = |headers: Value| {
        serde_json::to_vec(&json!({
            "Data": {"req": {
                "Url": "http://localhost:7071/api/grant", "Method": "POST", "Query": {},
                "Headers": headers, "Params": {},
                "Body": json!({"vault": "kv-prod", "ip": "20.1.2.3"}).to_string(),
            }},
            "Metadata": {"sys": {"MethodName": "function-grant"}},
        }))
        .unwrap()
    };
    let forged_headers = json!({
        "X-MS-CLIENT-PRINCIPAL": [base64_of(forged.as_bytes())],
        "X-MS-CLIENT-PRINCIPAL-IDP": ["aad"],
        "X-Forwarded-For": ["20.1.2.3:50000"],
    });

    let mut host = HostDouble::start(&app_settings(&emulator, &["kv-prod"])).await;
    let invocation = host
        .invoke_raw("function-grant", envelope(forged_headers.clone()))
        .await;
    assert!(invocation.succeeded(), "{}", invocation.body);
    let (status, body) = invocation.http_response();
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["kind"], "unauthenticated");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("WEBSITE_AUTH_ENABLED"),
        "{body}"
    );
    host.stop().await;

    let mut settings = app_settings(&emulator, &["kv-prod"]);
    settings.push(("WEBSITE_AUTH_ENABLED".into(), "True".into()));
    let mut host = HostDouble::start(&settings).await;
    let invocation = host
        .invoke_raw(
            "function-grant",
            envelope(json!({"X-Forwarded-For": ["20.1.2.3:50000"]})),
        )
        .await;
    let (status, body) = invocation.http_response();
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no X-MS-CLIENT-PRINCIPAL header"),
        "{body}"
    );
    // One log line for the request, naming the outcome.
    assert!(
        host.stdout_lines()
            .iter()
            .any(|l| l.contains("grant request refused or failed") && l.contains("\"status\":401")),
        "{:?}",
        host.stdout_lines()
    );
    host.stop().await;
    assert!(emulator.requests().is_empty(), "nothing read or written");
    emulator.shutdown().await;
}

/// Base64 (standard alphabet, padded), as App Service encodes `X-MS-CLIENT-PRINCIPAL`.
fn base64_of(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    out
}
