//! Answers that lie (`Reshape` faults), requests held until the test lets them go (`Hold`
//! faults), and out-of-band edits of a whole vault (`Emulator::update_vault`).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use tagfence_emulator::{Emulator, Fault, FaultKind, Route};

async fn get_vault(emulator: &Emulator, name: &str, token: &str) -> (u16, Value) {
    let response = client()
        .get(vault_url(emulator, name))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, body)
}

fn on_get(vault: &str, kind: FaultKind) -> Fault {
    Fault {
        route: Some(Route::VaultGet),
        vault: Some(vault.to_owned()),
        kind,
        count: 1,
    }
}

/// One GET under a reshape fault, checked by `expect`; then the next GET, without the fault,
/// answers the real vault, which the reshape did not change.
async fn assert_reshaped_once(
    emulator: &Emulator,
    token: &str,
    kind: FaultKind,
    expect: impl Fn(&Value),
) {
    let stored = emulator.vault("kv-prod").unwrap();
    let description = kind.describe();
    emulator.clear_requests();
    emulator.add_fault(on_get("kv-prod", kind));
    let (status, lying) = get_vault(emulator, "kv-prod", token).await;
    assert_eq!(status, 200, "{description}");
    expect(&lying);
    let (status, truthful) = get_vault(emulator, "kv-prod", token).await;
    assert_eq!((status, &truthful), (200, &stored), "{description}");
    assert_eq!(emulator.vault("kv-prod").unwrap(), stored, "{description}");
    let faults: Vec<Option<String>> = emulator.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(faults, [Some(description), None]);
}

#[tokio::test]
async fn reshaped_get_answers_lie_once_and_leave_the_vault_unchanged() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    let seeded = emulator.vault("kv-prod").unwrap();
    let acls = |body: &Value| body["properties"]["networkAcls"].clone();
    assert_eq!(acls(&seeded)["ipRules"].as_array().unwrap().len(), 4);

    // networkAcls removed: the rest of properties is there.
    assert_reshaped_once(
        &emulator,
        &token,
        FaultKind::remove_fields(&["/properties/networkAcls"]),
        |body| {
            assert!(body["properties"].get("networkAcls").is_none());
            assert_eq!(
                body["properties"]["tenantId"],
                seeded["properties"]["tenantId"]
            );
        },
    )
    .await;
    // networkAcls null.
    assert_reshaped_once(
        &emulator,
        &token,
        FaultKind::null_fields(&["/properties/networkAcls"]),
        |body| assert_eq!(body["properties"].get("networkAcls"), Some(&Value::Null)),
    )
    .await;
    // properties removed.
    assert_reshaped_once(
        &emulator,
        &token,
        FaultKind::remove_fields(&["/properties"]),
        |body| {
            assert!(body.get("properties").is_none());
            assert_eq!(body["id"], seeded["id"]);
        },
    )
    .await;
    // ipRules removed: the rest of networkAcls is there.
    assert_reshaped_once(
        &emulator,
        &token,
        FaultKind::remove_fields(&["/properties/networkAcls/ipRules"]),
        |body| {
            let mut expected = acls(&seeded);
            expected.as_object_mut().unwrap().remove("ipRules");
            assert_eq!(acls(body), expected);
        },
    )
    .await;
    // ipRules null.
    assert_reshaped_once(
        &emulator,
        &token,
        FaultKind::null_fields(&["/properties/networkAcls/ipRules"]),
        |body| {
            assert_eq!(acls(body)["ipRules"], Value::Null);
            assert_eq!(acls(body)["defaultAction"], "Deny");
        },
    )
    .await;
    // ipRules [].
    assert_reshaped_once(
        &emulator,
        &token,
        FaultKind::set_field("/properties/networkAcls/ipRules", json!([])),
        |body| {
            let mut expected = acls(&seeded);
            expected["ipRules"] = json!([]);
            assert_eq!(acls(body), expected);
        },
    )
    .await;
    // defaultAction removed.
    assert_reshaped_once(
        &emulator,
        &token,
        FaultKind::remove_fields(&["/properties/networkAcls/defaultAction"]),
        |body| {
            assert!(acls(body).get("defaultAction").is_none());
            assert_eq!(acls(body)["ipRules"], acls(&seeded)["ipRules"]);
            assert_eq!(
                acls(body)["virtualNetworkRules"],
                acls(&seeded)["virtualNetworkRules"]
            );
        },
    )
    .await;
    // Several edits at once: remove, then null, then set, in that order.
    assert_reshaped_once(
        &emulator,
        &token,
        FaultKind::Reshape {
            remove: vec!["/properties/networkAcls/ipRules/0".into()],
            null: vec!["/properties/networkAcls/virtualNetworkRules".into()],
            set: vec![
                ("/properties/networkAcls/bypass".into(), json!("None")),
                (
                    "/properties/networkAcls/ipRules/-".into(),
                    json!({"value": ""}),
                ),
            ],
        },
        |body| {
            let values: Vec<Value> = acls(body)["ipRules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|rule| rule["value"].clone())
                .collect();
            assert_eq!(
                values,
                ["20.37.194.0/24", "40.74.28.0/23", "52.174.10.20/32", ""]
            );
            assert_eq!(acls(body)["virtualNetworkRules"], Value::Null);
            assert_eq!(acls(body)["bypass"], "None");
        },
    )
    .await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_whole_body_replacement_answers_a_list_or_an_error_with_200() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    let seeded = emulator.vault("kv-prod").unwrap();

    let list = json!({"value": [seeded.clone()], "nextLink": null});
    assert_reshaped_once(
        &emulator,
        &token,
        FaultKind::replace_body(list.clone()),
        |body| assert_eq!(body, &list),
    )
    .await;

    let error = json!({"error": {"code": "ResourceNotFound", "message": "gone"}});
    emulator.add_fault(on_get("kv-prod", FaultKind::replace_body(error.clone())));
    let response = client()
        .get(vault_url(&emulator, "kv-prod"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(&response, "x-ms-request-id").is_some());
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/json; charset=utf-8")
    );
    let bytes = response.bytes().await.unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), error);

    // Removing the whole body answers 200 with nothing at all.
    emulator.add_fault(on_get("kv-prod", FaultKind::remove_fields(&[""])));
    let response = client()
        .get(vault_url(&emulator, "kv-prod"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-length").as_deref(), Some("0"));
    assert!(response.bytes().await.unwrap().is_empty());

    assert_eq!(get_vault(&emulator, "kv-prod", &token).await, (200, seeded));
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_reshaped_patch_answer_hides_a_write_that_was_applied() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    emulator.add_fault(Fault {
        route: Some(Route::VaultPatch),
        vault: Some("kv-build".into()),
        kind: FaultKind::remove_fields(&["/properties/networkAcls"]),
        count: 1,
    });
    let body = json!({"properties": {"networkAcls": {"bypass": "AzureServices", "defaultAction": "Deny", "ipRules": [{"value": "20.0.0.1"}], "virtualNetworkRules": []}}});
    let response = patch_vault(&emulator, "kv-build", &token, &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert!(answer["properties"].get("networkAcls").is_none());
    // The write itself was applied; the next read shows it.
    assert_eq!(emulator.ip_rules("kv-build"), ["20.0.0.1/32"]);
    let (_, read) = get_vault(&emulator, "kv-build", &token).await;
    assert_eq!(
        read["properties"]["networkAcls"]["ipRules"],
        json!([{"value": "20.0.0.1/32"}])
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn reshape_faults_are_accepted_on_the_control_route_and_bad_pointers_refused() {
    let emulator = start(config()).await;
    let base = emulator.base_url();
    let token = emulator.issue_token(ARM);
    let fault = json!({"route": "VaultGet", "vault": "kv-prod", "kind": {"Reshape": {
        "remove": ["/properties/networkAcls/ipRules"],
        "set": [["/properties/networkAcls/defaultAction", "Allow"]]
    }}, "count": 1});
    let posted = client()
        .post(format!("{base}/_emulator/faults"))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 204);
    let (_, lying) = get_vault(&emulator, "kv-prod", &token).await;
    assert_eq!(lying["properties"]["networkAcls"]["defaultAction"], "Allow");
    assert!(lying["properties"]["networkAcls"].get("ipRules").is_none());
    assert_eq!(
        emulator.requests()[0].fault.as_deref(),
        Some("reshape answer: -/properties/networkAcls/ipRules /properties/networkAcls/defaultAction=\"Allow\"")
    );

    let bad = json!({"kind": {"Reshape": {"null": ["properties/networkAcls"]}}, "count": 1});
    let (status, code, message) = arm_error(
        client()
            .post(format!("{base}/_emulator/faults"))
            .json(&bad)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        message.contains("'properties/networkAcls'"),
        "{code}: {message}"
    );
    // Nothing was queued.
    let (_, truthful) = get_vault(&emulator, "kv-prod", &token).await;
    assert_eq!(truthful, emulator.vault("kv-prod").unwrap());
    emulator.shutdown().await;
}

#[tokio::test]
#[should_panic(expected = "must be empty (the whole body) or start with '/'")]
async fn add_fault_panics_on_a_bad_pointer() {
    let emulator = start(config()).await;
    emulator.add_fault(on_get("kv-prod", FaultKind::remove_fields(&["properties"])));
}

fn hold_patch(vault: &str, gate: &str) -> Fault {
    Fault {
        route: Some(Route::VaultPatch),
        vault: Some(vault.to_owned()),
        kind: FaultKind::hold(gate),
        count: 1,
    }
}

fn build_patch_body() -> Value {
    json!({"properties": {"networkAcls": {"bypass": "AzureServices", "defaultAction": "Deny", "ipRules": [{"value": "20.0.0.1"}], "virtualNetworkRules": []}}})
}

#[tokio::test]
async fn a_held_patch_waits_while_a_person_edits_then_is_handled_against_the_edit() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    emulator.add_fault(hold_patch("kv-build", "before-patch"));
    assert!(
        !emulator
            .wait_held("before-patch", Duration::from_millis(50))
            .await
    );

    let url = vault_url(&emulator, "kv-build");
    let patch = {
        let token = token.clone();
        tokio::spawn(async move {
            client()
                .patch(url)
                .bearer_auth(token)
                .json(&build_patch_body())
                .send()
                .await
                .unwrap()
        })
    };
    assert!(
        emulator
            .wait_held("before-patch", Duration::from_secs(5))
            .await
    );
    assert_eq!(emulator.held("before-patch"), 1);

    // Meanwhile: nothing was written; a person edits the vault; other requests are answered.
    assert!(emulator.ip_rules("kv-build").is_empty());
    assert!(emulator.update_vault("kv-build", |vault| {
        let acls = &mut vault["properties"]["networkAcls"];
        acls["defaultAction"] = json!("Allow");
        acls["ipRules"] = json!([{"value": "198.51.100.9/32"}]);
    }));
    let (status, read) = get_vault(&emulator, "kv-build", &token).await;
    assert_eq!(status, 200);
    assert_eq!(read["properties"]["networkAcls"]["defaultAction"], "Allow");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!patch.is_finished(), "still held");

    assert_eq!(emulator.release("before-patch"), 1);
    assert_eq!(emulator.held("before-patch"), 0);
    let response = patch.await.unwrap();
    assert_eq!(response.status(), 200);
    // The PATCH was handled against the vault as it was when released: its networkAcls replaced
    // the person's wholesale.
    let vault = emulator.vault("kv-build").unwrap();
    assert_eq!(vault["properties"]["networkAcls"]["defaultAction"], "Deny");
    assert_eq!(emulator.ip_rules("kv-build"), ["20.0.0.1/32"]);

    let log: Vec<(Route, u16, Option<String>)> = emulator
        .requests()
        .into_iter()
        .map(|r| (r.route, r.status, r.fault))
        .collect();
    assert_eq!(
        log,
        [
            (Route::VaultGet, 200, None),
            (Route::VaultPatch, 200, Some("hold before-patch".into()))
        ],
        "recorded in completion order"
    );
    // The fault is used up: the next PATCH is not held.
    let again = patch_vault(&emulator, "kv-build", &token, &build_patch_body()).await;
    assert_eq!(again.status(), 200);
    assert_eq!(emulator.release("before-patch"), 0);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_held_request_whose_client_gives_up_is_abandoned_and_never_handled() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    emulator.add_fault(hold_patch("kv-build", "gate"));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = impatient
        .patch(vault_url(&emulator, "kv-build"))
        .bearer_auth(&token)
        .json(&build_patch_body())
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
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
        (Route::VaultPatch, 0, true, Some("hold gate"))
    );
    assert_eq!(emulator.held("gate"), 0);
    assert_eq!(emulator.release("gate"), 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        emulator.ip_rules("kv-build").is_empty(),
        "never handled, even after the release"
    );
    assert_eq!(emulator.requests().len(), 1);
    emulator.shutdown().await;
}

#[tokio::test]
async fn holds_are_driven_through_the_control_routes() {
    let emulator = start(config()).await;
    let base = emulator.base_url();
    let token = emulator.issue_token(ARM);
    let fault = json!({"route": "VaultGet", "vault": "kv-prod", "kind": {"Hold": {"name": "re-read"}}, "count": 1});
    let posted = client()
        .post(format!("{base}/_emulator/faults"))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 204);
    let control = |path: &str| format!("{base}/_emulator/holds{path}");
    let json_of = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()
    };
    assert_eq!(
        json_of(client().get(control("/re-read"))).await,
        json!({"held": 0})
    );

    let read = {
        let url = vault_url(&emulator, "kv-prod");
        let token = token.clone();
        tokio::spawn(async move {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    assert_eq!(
        json_of(client().get(control("/re-read?wait_ms=5000"))).await,
        json!({"held": 1})
    );
    assert_eq!(
        json_of(client().get(control(""))).await,
        json!({"re-read": 1})
    );
    assert_eq!(
        json_of(client().post(control("/re-read/release"))).await,
        json!({"released": 1})
    );
    assert_eq!(read.await.unwrap(), 200);
    assert_eq!(json_of(client().get(control(""))).await, json!({}));
    assert_eq!(
        json_of(client().post(control("/re-read/release"))).await,
        json!({"released": 0})
    );
    let bad = client()
        .get(control("/re-read?wait_ms=soon"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    emulator.shutdown().await;
}

#[tokio::test]
async fn shutdown_abandons_held_requests_promptly() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    emulator.add_fault(hold_patch("kv-build", "never"));
    let url = vault_url(&emulator, "kv-build");
    let patch = tokio::spawn(async move {
        client()
            .patch(url)
            .bearer_auth(token)
            .json(&build_patch_body())
            .send()
            .await
    });
    assert!(emulator.wait_held("never", Duration::from_secs(5)).await);
    let started = Instant::now();
    emulator.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let error = patch.await.unwrap().unwrap_err();
    assert!(error.status().is_none(), "{error:?}");
}

#[tokio::test]
async fn update_vault_edits_a_stored_vault_verbatim_without_a_request() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    let edited = emulator.update_vault(
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/RG-SECRETS/providers/Microsoft.KeyVault/vaults/KV-PROD",
        |vault| {
            let acls = &mut vault["properties"]["networkAcls"];
            acls["defaultAction"] = json!("Allow");
            acls["bypass"] = json!("None");
            acls["virtualNetworkRules"] = json!([]);
            acls["ipRules"] = json!([{"value": "52.1.2.3"}, {"value": "'10.91.4.0/24'"}, {"value": ""}]);
        },
    );
    assert!(edited);
    // Stored as written: no /32 added, no validation.
    assert_eq!(
        emulator.ip_rules("kv-prod"),
        ["52.1.2.3", "'10.91.4.0/24'", ""]
    );
    let (_, read) = get_vault(&emulator, "kv-prod", &token).await;
    assert_eq!(read, emulator.vault("kv-prod").unwrap());
    assert_eq!(read["properties"]["networkAcls"]["defaultAction"], "Allow");
    assert_eq!(read["properties"]["networkAcls"]["bypass"], "None");
    // Even the firewall itself can go, as on a vault that never had one.
    assert!(emulator.update_vault("kv-prod", |vault| {
        vault["properties"]
            .as_object_mut()
            .unwrap()
            .remove("networkAcls");
    }));
    let (_, read) = get_vault(&emulator, "kv-prod", &token).await;
    assert!(read["properties"].get("networkAcls").is_none());

    let mut called = false;
    assert!(!emulator.update_vault("kv-none", |_| called = true));
    assert!(!called);
    assert_eq!(emulator.requests().len(), 2, "only the two GETs are logged");

    // The control route replaces a whole vault.
    let mut replacement = emulator.vault("kv-build").unwrap();
    replacement["properties"]["networkAcls"]["ipRules"] = json!([{"value": "203.0.113.5/24"}]);
    let base = emulator.base_url();
    let put = client()
        .put(format!("{base}/_emulator/vaults/kv-build"))
        .json(&replacement)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    assert_eq!(emulator.vault("kv-build").unwrap(), replacement);
    let missing = client()
        .put(format!("{base}/_emulator/vaults/kv-none"))
        .json(&replacement)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    emulator.shutdown().await;
}
