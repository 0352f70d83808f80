//! Resource Graph's index as a view of its own: live, lagging behind the vaults, or a snapshot
//! the test refreshes; switched at run time.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tagfence_emulator::{Config, Emulator, GraphIndex};

const DISCOVERY: &str = "resources | where type =~ 'microsoft.keyvault/vaults' | project name, tag = tostring(tags['tagfence']), networkAcls = properties.networkAcls, publicNetworkAccess = properties.publicNetworkAccess";

/// Each vault the index shows: `name → (tagfence tag, ipRules values)`.
async fn indexed(emulator: &Emulator, token: &str) -> Vec<(String, String, Vec<String>)> {
    let response = graph_query(emulator, token, DISCOVERY).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let rules = row["networkAcls"]["ipRules"]
                .as_array()
                .map(|rules| {
                    rules
                        .iter()
                        .map(|rule| rule["value"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            (
                row["name"].as_str().unwrap().to_owned(),
                row["tag"].as_str().unwrap_or_default().to_owned(),
                rules,
            )
        })
        .collect()
}

fn names(rows: &[(String, String, Vec<String>)]) -> Vec<&str> {
    rows.iter().map(|(name, _, _)| name.as_str()).collect()
}

fn tag_of<'a>(rows: &'a [(String, String, Vec<String>)], name: &str) -> &'a str {
    rows.iter()
        .find(|(row, _, _)| row == name)
        .map(|(_, tag, _)| tag.as_str())
        .unwrap_or_else(|| panic!("{name} is not indexed: {rows:?}"))
}

fn rules_of<'a>(rows: &'a [(String, String, Vec<String>)], name: &str) -> &'a [String] {
    rows.iter()
        .find(|(row, _, _)| row == name)
        .map(|(_, _, rules)| rules.as_slice())
        .unwrap_or_else(|| panic!("{name} is not indexed: {rows:?}"))
}

fn new_vault() -> Value {
    json!({
        "location": "westeurope",
        "tags": {"tagfence": "default"},
        "properties": {"tenantId": "00000000-0000-0000-0000-0000000000aa", "sku": {"family": "A", "name": "standard"}}
    })
}

/// Tags, a firewall edit, a create and a delete: one of each change the index follows.
async fn change_everything(emulator: &Emulator, token: &str) {
    let tagged = patch_vault(
        emulator,
        "kv-prod",
        token,
        &json!({"tags": {"tagfence": "hosted-agents:uk"}}),
    )
    .await;
    assert_eq!(tagged.status(), 200);
    emulator.set_ip_rules("kv-build", vec!["198.51.100.7".into()]);
    let created = client()
        .put(vault_url(emulator, "kv-new"))
        .bearer_auth(token)
        .json(&new_vault())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let deleted = client()
        .delete(vault_url(emulator, "kv-legacy"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
}

#[tokio::test]
async fn a_live_index_shows_every_change_at_once() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    change_everything(&emulator, &token).await;
    let rows = indexed(&emulator, &token).await;
    assert_eq!(names(&rows), ["kv-build", "kv-new", "kv-prod"]);
    assert_eq!(tag_of(&rows, "kv-prod"), "hosted-agents:uk");
    assert_eq!(rules_of(&rows, "kv-build"), ["198.51.100.7/32"]);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_manual_index_shows_its_snapshot_until_refreshed() {
    let emulator = start(Config {
        graph_index: GraphIndex::Manual,
        ..config()
    })
    .await;
    let token = emulator.issue_token(ARM);
    let before = indexed(&emulator, &token).await;
    change_everything(&emulator, &token).await;
    emulator.update_vault("kv-prod", |vault| {
        vault["properties"]["publicNetworkAccess"] = json!("Disabled");
    });

    // Stale: the old tag and rules, the deleted vault still there, the new one absent; ARM
    // itself answers with the new state.
    let stale = indexed(&emulator, &token).await;
    assert_eq!(stale, before);
    assert_eq!(names(&stale), ["kv-build", "kv-legacy", "kv-prod"]);
    assert_eq!(tag_of(&stale, "kv-prod"), "AzureDevOps");
    let fresh: Value = get_vault(&emulator, "kv-prod", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fresh["tags"]["tagfence"], "hosted-agents:uk");

    emulator.refresh_index();
    let rows = indexed(&emulator, &token).await;
    assert_eq!(names(&rows), ["kv-build", "kv-new", "kv-prod"]);
    assert_eq!(tag_of(&rows, "kv-prod"), "hosted-agents:uk");
    assert_eq!(rules_of(&rows, "kv-build"), ["198.51.100.7/32"]);
    let disabled = graph_query(
        &emulator,
        &token,
        "resources | where properties.publicNetworkAccess =~ 'disabled' | project name",
    )
    .await;
    let body: Value = disabled.json().await.unwrap();
    assert_eq!(body["data"], json!([{"name": "kv-prod"}]));
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_lagging_index_shows_each_change_once_it_is_old_enough() {
    let lag = Duration::from_millis(800);
    let emulator = start(Config {
        graph_index: GraphIndex::Lag(lag),
        ..config()
    })
    .await;
    let token = emulator.issue_token(ARM);
    // The seeded vaults existed before the emulator started: visible at once.
    let before = indexed(&emulator, &token).await;
    assert_eq!(names(&before), ["kv-build", "kv-legacy", "kv-prod"]);
    change_everything(&emulator, &token).await;
    assert_eq!(indexed(&emulator, &token).await, before);

    tokio::time::sleep(lag + Duration::from_millis(50)).await;
    let rows = indexed(&emulator, &token).await;
    assert_eq!(names(&rows), ["kv-build", "kv-new", "kv-prod"]);
    assert_eq!(tag_of(&rows, "kv-prod"), "hosted-agents:uk");
    assert_eq!(rules_of(&rows, "kv-build"), ["198.51.100.7/32"]);
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_index_can_be_switched_and_refreshed_at_run_time() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    emulator.set_graph_index(GraphIndex::Manual);
    emulator.update_vault("kv-prod", |vault| vault["tags"] = json!({}));
    assert_eq!(
        tag_of(&indexed(&emulator, &token).await, "kv-prod"),
        "AzureDevOps"
    );

    // To a long lag: it starts from the vaults as they are, so the edit above shows; a later
    // one lags until the index is refreshed.
    emulator.set_graph_index(GraphIndex::Lag(Duration::from_secs(3600)));
    assert_eq!(tag_of(&indexed(&emulator, &token).await, "kv-prod"), "");
    emulator.update_vault("kv-prod", |vault| vault["tags"] = json!({"tagfence": "x"}));
    assert_eq!(tag_of(&indexed(&emulator, &token).await, "kv-prod"), "");
    emulator.refresh_index();
    assert_eq!(tag_of(&indexed(&emulator, &token).await, "kv-prod"), "x");

    emulator.set_graph_index(GraphIndex::Live);
    emulator.set_ip_rules("kv-prod", vec![]);
    assert!(rules_of(&indexed(&emulator, &token).await, "kv-prod").is_empty());
    emulator.shutdown().await;
}
