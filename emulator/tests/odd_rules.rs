//! Rule values real vaults hold although validation would refuse them new (`"'10.91.4.0/24'"` and
//! `""` from Microsoft's own API spec examples, a private range), host bits (`203.0.113.5/24`),
//! and what PATCH/PUT do when a client sends them back, per `OddRulePolicy` (UNVERIFIED).

mod support;

use serde_json::{json, Value};
use support::*;
use tagfence_emulator::{Config, Emulator, OddRulePolicy};

const ODD_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-secrets/providers/Microsoft.KeyVault/vaults/kv-odd";

/// What the vault holds: host bits, a quoted value, an empty value, a private range, a bare
/// address, a /31 — stored verbatim from the seed.
fn odd_rules() -> Value {
    json!([
        {"value": "203.0.113.5/24"},
        {"value": "'10.91.4.0/24'"},
        {"value": ""},
        {"value": "10.1.0.0/16"},
        {"value": "52.1.2.3"},
        {"value": "20.1.2.2/31"}
    ])
}

fn odd_config(odd_rules_policy: OddRulePolicy) -> Config {
    let mut config = config();
    config.seed.vaults.push(json!({
        "id": ODD_ID, "name": "kv-odd", "type": "Microsoft.KeyVault/vaults", "location": "westeurope", "tags": {},
        "properties": {"tenantId": "t", "sku": {"family": "A", "name": "standard"},
            "networkAcls": {"bypass": "AzureServices", "defaultAction": "Deny", "ipRules": odd_rules(), "virtualNetworkRules": []}}
    }));
    config.odd_rules = odd_rules_policy;
    config.slash31 = tagfence_emulator::Slash31Policy::Reject;
    config
}

async fn read_acls(emulator: &Emulator, token: &str) -> Value {
    let response = client()
        .get(vault_url(emulator, "kv-odd"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let vault: Value = response.json().await.unwrap();
    vault["properties"]["networkAcls"].clone()
}

/// The read `networkAcls` with `extra` rules appended, as a PATCH body.
fn send_back(acls: &Value, extra: &[&str]) -> Value {
    let mut acls = acls.clone();
    let rules = acls["ipRules"].as_array_mut().unwrap();
    rules.extend(extra.iter().map(|value| json!({ "value": value })));
    json!({"properties": {"networkAcls": acls}})
}

#[tokio::test]
async fn seeded_odd_values_are_stored_and_answered_verbatim() {
    let emulator = start(odd_config(OddRulePolicy::default())).await;
    let token = emulator.issue_token(ARM);
    assert_eq!(read_acls(&emulator, &token).await["ipRules"], odd_rules());
    assert_eq!(
        emulator.ip_rules("kv-odd"),
        [
            "203.0.113.5/24",
            "'10.91.4.0/24'",
            "",
            "10.1.0.0/16",
            "52.1.2.3",
            "20.1.2.2/31"
        ]
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn by_default_a_patch_may_send_back_what_the_vault_holds_but_not_new_odd_values() {
    assert_eq!(Config::default().odd_rules, OddRulePolicy::KeepExisting);
    let emulator = start(odd_config(OddRulePolicy::KeepExisting)).await;
    let token = emulator.issue_token(ARM);
    let acls = read_acls(&emulator, &token).await;

    // Sent back with a new rule, and a new rule with host bits: accepted; refused values held
    // already are kept byte for byte, valid ones normalised as ever (the bare address gains /32).
    let response = patch_vault(
        &emulator,
        "kv-odd",
        &token,
        &send_back(&acls, &["198.51.100.7/24", "52.174.99.1"]),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        emulator.ip_rules("kv-odd"),
        [
            "203.0.113.5/24",
            "'10.91.4.0/24'",
            "",
            "10.1.0.0/16",
            "52.1.2.3/32",
            "20.1.2.2/31",
            "198.51.100.7/24",
            "52.174.99.1/32"
        ]
    );

    // A new odd value (or one that differs from a held value by a byte) is refused, and the
    // refused PATCH changes nothing.
    let before = emulator.vault("kv-odd").unwrap();
    let acls = read_acls(&emulator, &token).await;
    for (new, problem) in [
        ("'20.1.2.0/24'", "is not a valid IPv4 address or CIDR range"),
        (" ", "is not a valid IPv4 address or CIDR range"),
        ("10.1.0.0/17", "belongs to forbidden range"),
        ("20.1.2.4/31", "/31"),
    ] {
        let response = patch_vault(&emulator, "kv-odd", &token, &send_back(&acls, &[new])).await;
        let (status, code, message) = arm_error(response).await;
        assert_eq!((status, code.as_str()), (400, "BadRequest"), "{new}");
        assert!(
            message.contains(&format!("ipRules[8].value: {new}")) && message.contains(problem),
            "{new}: {message}"
        );
    }
    assert_eq!(emulator.vault("kv-odd").unwrap(), before);

    // Dropping an odd value is always possible, and once dropped it is new again.
    let mut without_empty = acls.clone();
    without_empty["ipRules"]
        .as_array_mut()
        .unwrap()
        .retain(|rule| rule["value"] != "");
    let body = json!({"properties": {"networkAcls": without_empty}});
    assert_eq!(
        patch_vault(&emulator, "kv-odd", &token, &body)
            .await
            .status(),
        200
    );
    let response = patch_vault(
        &emulator,
        "kv-odd",
        &token,
        &send_back(&without_empty, &[""]),
    )
    .await;
    assert_eq!(response.status(), 400);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_put_follows_the_same_policy() {
    let emulator = start(odd_config(OddRulePolicy::KeepExisting)).await;
    let token = emulator.issue_token(ARM);
    let mut vault = emulator.vault("kv-odd").unwrap();
    let put = |body: Value| {
        client()
            .put(vault_url(&emulator, "kv-odd"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    assert_eq!(put(vault.clone()).await.unwrap().status(), 200);
    assert_eq!(emulator.ip_rules("kv-odd")[1], "'10.91.4.0/24'");
    vault["properties"]["networkAcls"]["ipRules"]
        .as_array_mut()
        .unwrap()
        .push(json!({"value": "''"}));
    assert_eq!(put(vault).await.unwrap().status(), 400);
    emulator.shutdown().await;
}

#[tokio::test]
async fn reject_all_refuses_even_values_the_vault_holds() {
    let emulator = start(odd_config(OddRulePolicy::RejectAll)).await;
    let token = emulator.issue_token(ARM);
    let acls = read_acls(&emulator, &token).await;
    let before = emulator.vault("kv-odd").unwrap();
    let (status, _, message) =
        arm_error(patch_vault(&emulator, "kv-odd", &token, &send_back(&acls, &[])).await).await;
    assert_eq!(status, 400);
    assert!(
        message.contains("ipRules[1].value: '10.91.4.0/24' is not a valid IPv4"),
        "host bits pass, the quoted value is the first refused: {message}"
    );
    assert_eq!(emulator.vault("kv-odd").unwrap(), before);
    // Without the odd values the write goes through; host bits are not odd.
    let body = json!({"properties": {"networkAcls": {"bypass": "AzureServices", "defaultAction": "Deny",
        "ipRules": [{"value": "203.0.113.5/24"}, {"value": "52.1.2.3"}], "virtualNetworkRules": []}}});
    assert_eq!(
        patch_vault(&emulator, "kv-odd", &token, &body)
            .await
            .status(),
        200
    );
    assert_eq!(
        emulator.ip_rules("kv-odd"),
        ["203.0.113.5/24", "52.1.2.3/32"]
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn accept_all_stores_new_odd_values_too() {
    let emulator = start(odd_config(OddRulePolicy::AcceptAll)).await;
    let token = emulator.issue_token(ARM);
    let acls = read_acls(&emulator, &token).await;
    let response = patch_vault(
        &emulator,
        "kv-odd",
        &token,
        &send_back(&acls, &["'20.1.2.0/24'", "192.168.1.0/24", "2001:db8::/32"]),
    )
    .await;
    assert_eq!(response.status(), 200);
    let rules = emulator.ip_rules("kv-odd");
    assert_eq!(
        &rules[rules.len() - 3..],
        ["'20.1.2.0/24'", "192.168.1.0/24", "2001:db8::/32"]
    );
    // Limits still apply.
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({ "value": format!("x{i}") }))
        .collect();
    let body = json!({"properties": {"networkAcls": {"ipRules": too_many}}});
    assert_eq!(
        patch_vault(&emulator, "kv-odd", &token, &body)
            .await
            .status(),
        400
    );
    emulator.shutdown().await;
}
