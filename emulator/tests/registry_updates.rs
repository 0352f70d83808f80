//! A registry's PATCH as a long-running operation (opt-in, `Config::registry_updates`): 201 with
//! `Azure-AsyncOperation`, `InProgress` answers, then the outcome; the registry changes only when
//! the operation succeeds; a foreign base in the header's URL.

mod support;

use serde_json::{json, Value};
use support::*;
use tagfence_emulator::{Config, Emulator, OperationOutcome, RegistryUpdates, Route};

const ACR_API: &str = "2023-07-01";
const CR: &str = "crtagfenceprod";

fn cr_url(emulator: &Emulator) -> String {
    format!(
        "{}/subscriptions/{SUB}/resourceGroups/rg-containers/providers/Microsoft.ContainerRegistry/registries/{CR}?api-version={ACR_API}",
        emulator.base_url()
    )
}

fn with_updates(updates: RegistryUpdates) -> Config {
    Config {
        registry_updates: Some(updates),
        ..config()
    }
}

fn rule_set() -> Value {
    json!({"properties": {"networkRuleSet": {"defaultAction": "Deny", "ipRules": [
        {"action": "Allow", "value": "52.174.10.22"}, {"action": "Allow", "value": "20.37.158.0/23"}
    ]}}})
}

async fn patch(emulator: &Emulator, token: &str, body: &Value) -> reqwest::Response {
    client()
        .patch(cr_url(emulator))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn status_of(url: &str, token: &str) -> (u16, Value, Option<String>) {
    let response = client().get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    let retry = header(&response, "retry-after");
    (status, response.json().await.unwrap(), retry)
}

#[tokio::test]
async fn a_registry_patch_runs_as_an_operation_and_applies_only_when_it_succeeds() {
    let emulator = start(with_updates(RegistryUpdates {
        in_progress: 2,
        retry_after: Some(1),
        ..RegistryUpdates::default()
    }))
    .await;
    let token = emulator.issue_token(ARM);
    let before = emulator.vault(CR).unwrap();
    let response = patch(&emulator, &token, &rule_set()).await;
    assert_eq!(response.status(), 201);
    let url = header(&response, "azure-asyncoperation").expect("Azure-AsyncOperation");
    assert_eq!(header(&response, "retry-after").as_deref(), Some("1"));
    assert!(
        url.starts_with(&format!(
            "{}/subscriptions/{SUB}/providers/Microsoft.ContainerRegistry/locations/westeurope/operationResults/",
            emulator.base_url()
        )) && url.ends_with(&format!("?api-version={ACR_API}")),
        "{url}"
    );
    let answered: Value = response.json().await.unwrap();
    assert_eq!(answered["properties"]["provisioningState"], "Updating");
    assert_eq!(
        answered["properties"]["networkRuleSet"],
        before["properties"]["networkRuleSet"]
    );
    assert_eq!(emulator.vault(CR).unwrap(), before, "nothing applied yet");

    // The operation's URL needs a token, as every ARM route.
    let anonymous = client().get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    for _ in 0..2 {
        let (status, body, retry) = status_of(&url, &token).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("InProgress")));
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(emulator.vault(CR).unwrap(), before);
    }
    let (status, body, _) = status_of(&url, &token).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("Succeeded")));
    assert_eq!(emulator.ip_rules(CR), ["52.174.10.22", "20.37.158.0/23"]);
    // Asked again, the same outcome; applied once.
    let (_, body, _) = status_of(&url, &token).await;
    assert_eq!(body["status"], "Succeeded");
    let polls = emulator
        .requests()
        .iter()
        .filter(|r| r.route == Route::RegistryOperation)
        .count();
    assert_eq!(polls, 5);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_failed_operation_leaves_the_registry_and_a_bad_body_is_refused_at_once() {
    let emulator = start(with_updates(RegistryUpdates {
        in_progress: 0,
        outcome: OperationOutcome::Failed {
            code: "InternalServerError".into(),
            message: "the update failed".into(),
        },
        ..RegistryUpdates::default()
    }))
    .await;
    let token = emulator.issue_token(ARM);
    let before = emulator.vault(CR).unwrap();
    let response = patch(&emulator, &token, &rule_set()).await;
    assert_eq!(response.status(), 201);
    let url = header(&response, "azure-asyncoperation").unwrap();
    let (status, body, _) = status_of(&url, &token).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["error"],
        json!({"code": "InternalServerError", "message": "the update failed"})
    );
    assert_eq!(body["status"], "Failed");
    assert_eq!(emulator.vault(CR).unwrap(), before);

    // Validation still answers at once: no operation for a body the registry refuses.
    let response = patch(
        &emulator,
        &token,
        &json!({"properties": {"networkRuleSet": {"defaultAction": "Deny", "ipRules": [{"value": "10.0.0.0/8"}]}}}),
    )
    .await;
    assert_eq!(response.status(), 400);
    assert!(header(&response, "azure-asyncoperation").is_none());
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_foreign_base_names_another_host_and_updates_switch_at_run_time() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    // Off by default: 200 at once.
    let response = patch(&emulator, &token, &rule_set()).await;
    assert_eq!(response.status(), 200);
    emulator.set_registry_updates(Some(RegistryUpdates {
        foreign_base: Some("https://evil.example/".into()),
        ..RegistryUpdates::default()
    }));
    let response = patch(
        &emulator,
        &token,
        &json!({"properties": {"networkRuleSet": {"defaultAction": "Deny", "ipRules": []}}}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let url = header(&response, "azure-asyncoperation").unwrap();
    assert!(
        url.starts_with(&format!(
            "https://evil.example/subscriptions/{SUB}/providers/Microsoft.ContainerRegistry/locations/"
        )),
        "{url}"
    );
    // The emulator still answers it on its own address.
    let own = url.replacen("https://evil.example", &emulator.base_url(), 1);
    let (status, body, _) = status_of(&own, &token).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("Succeeded")));
    assert!(emulator.ip_rules(CR).is_empty());
    emulator.set_registry_updates(None);
    assert_eq!(patch(&emulator, &token, &rule_set()).await.status(), 200);
    emulator.shutdown().await;
}
