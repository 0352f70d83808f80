//! Storage accounts and container registries: GET and PATCH, each kind's firewall validation,
//! wholesale replacement, faults, the request log, throttling, the control routes, Resource
//! Graph over a store of all three kinds, and the sample seed.

mod support;

use serde_json::{json, Value};
use support::*;
use tagfence_emulator::{
    Config, Emulator, Fault, FaultKind, GraphIndex, Route, Seed, Throttle,
    CONTAINER_REGISTRY_API_VERSIONS, STORAGE_API_VERSIONS,
};

const STORAGE_API: &str = "2023-05-01";
const ACR_API: &str = "2023-07-01";
const ST: &str = "sttagfenceprod";
const CR: &str = "crtagfenceprod";
const CR_STANDARD: &str = "crtagfencedev";

/// The sample vaults (with `kv-locked`) and the sample storage account and registries.
fn mixed_seed() -> Seed {
    support::seed()
}

fn mixed() -> Config {
    Config {
        seed: mixed_seed(),
        ..Config::default()
    }
}

fn storage_url(emulator: &Emulator, group: &str, name: &str, api: &str) -> String {
    format!(
        "{}/subscriptions/{SUB}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts/{name}?api-version={api}",
        emulator.base_url()
    )
}

fn registry_url(emulator: &Emulator, group: &str, name: &str, api: &str) -> String {
    format!(
        "{}/subscriptions/{SUB}/resourceGroups/{group}/providers/Microsoft.ContainerRegistry/registries/{name}?api-version={api}",
        emulator.base_url()
    )
}

fn st_url(emulator: &Emulator) -> String {
    storage_url(emulator, "rg-data", ST, STORAGE_API)
}

fn cr_url(emulator: &Emulator, name: &str) -> String {
    registry_url(emulator, "rg-containers", name, ACR_API)
}

async fn get(url: &str, token: &str) -> reqwest::Response {
    client().get(url).bearer_auth(token).send().await.unwrap()
}

async fn patch(url: &str, token: &str, body: &Value) -> reqwest::Response {
    client()
        .patch(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The sample account's `networkAcls` with these ipRules.
fn storage_acls(rules: Value) -> Value {
    json!({
        "bypass": "AzureServices",
        "virtualNetworkRules": [{"id": format!("/subscriptions/{SUB}/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/vnet-agents/subnets/agents"), "action": "Allow", "state": "Succeeded"}],
        "ipRules": rules,
        "defaultAction": "Deny",
        "resourceAccessRules": [{"tenantId": "00000000-0000-0000-0000-0000000000aa", "resourceId": format!("/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Synapse/workspaces/syn-prod")}]
    })
}

#[tokio::test]
async fn the_sample_seed_holds_all_three_kinds() {
    let emulator = start(mixed()).await;
    let token = emulator.issue_token(ARM);
    let response = get(&st_url(&emulator), &token).await;
    assert_eq!(response.status(), 200);
    let account: Value = response.json().await.unwrap();
    assert_eq!(account["type"], "Microsoft.Storage/storageAccounts");
    assert_eq!(account["location"], "westeurope");
    assert_eq!(account["tags"]["tagfence"], "AzureDevOps");
    let acls = &account["properties"]["networkAcls"];
    assert_eq!(acls["defaultAction"], "Deny");
    assert_eq!(
        acls["ipRules"],
        json!([{"value": "52.174.10.21", "action": "Allow"}])
    );
    assert_eq!(acls["virtualNetworkRules"].as_array().unwrap().len(), 1);
    assert_eq!(acls["resourceAccessRules"].as_array().unwrap().len(), 1);
    assert_eq!(emulator.vault(ST).unwrap(), account);

    let registry: Value = get(&cr_url(&emulator, CR), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        registry["sku"],
        json!({"name": "Premium", "tier": "Premium"})
    );
    assert_eq!(registry["tags"]["tagfence"], "AzureDevOps");
    assert_eq!(
        registry["properties"]["networkRuleSet"],
        json!({"defaultAction": "Deny", "ipRules": [{"action": "Allow", "value": "52.174.10.22"}]})
    );
    assert_eq!(registry["properties"]["publicNetworkAccess"], "Enabled");
    assert_eq!(
        registry["properties"]["networkRuleBypassOptions"],
        "AzureServices"
    );
    let standard = emulator.vault(CR_STANDARD).unwrap();
    assert_eq!(standard["sku"]["name"], "Standard");
    assert!(standard["tags"].get("tagfence").is_none());

    // The hooks read each kind's own rule list, by name or by id.
    assert_eq!(emulator.ip_rules(ST), ["52.174.10.21"]);
    assert_eq!(
        emulator.ip_rules(registry["id"].as_str().unwrap()),
        ["52.174.10.22"]
    );
    assert_eq!(emulator.ip_rules("kv-prod").len(), 4);

    // The same subscription: the vault list still holds the three vaults, the generic list all.
    let base = emulator.base_url();
    let vaults: Value = get(
        &format!(
            "{base}/subscriptions/{SUB}/providers/Microsoft.KeyVault/vaults?api-version={API}"
        ),
        &token,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(vaults["value"].as_array().unwrap().len(), 3);
    let storage_only = with_query(
        &format!("{base}/subscriptions/{SUB}/resources"),
        &[
            (
                "$filter",
                "resourceType eq 'Microsoft.Storage/storageAccounts'",
            ),
            ("api-version", "2021-04-01"),
        ],
    );
    let generic: Value = get(&storage_only, &token).await.json().await.unwrap();
    assert_eq!(
        generic["value"],
        json!([{"id": account["id"], "name": ST, "type": "Microsoft.Storage/storageAccounts",
                "sku": {"name": "Standard_LRS", "tier": "Standard"}, "kind": "StorageV2",
                "location": "westeurope", "tags": {"environment": "prod", "tagfence": "AzureDevOps"}}])
    );
    let all: Value = get(
        &format!("{base}/subscriptions/{SUB}/resources?api-version=2021-04-01"),
        &token,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        all["value"].as_array().unwrap().len(),
        6,
        "kv-locked is forbidden"
    );
    emulator.shutdown().await;
}

#[test]
fn the_bundled_sample_file_is_a_valid_seed() {
    let seed = Seed::from_json(include_bytes!("../samples/vaults.json")).unwrap();
    let names: Vec<&str> = seed
        .vaults
        .iter()
        .map(|resource| resource["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["kv-prod", "kv-build", "kv-legacy", ST, CR, CR_STANDARD]
    );
    let mut seed = mixed_seed();
    let wrong = json!({"id": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/x"), "type": "Microsoft.ContainerRegistry/registries"});
    seed.vaults.push(wrong);
    let text = serde_json::to_vec(&json!({"vaults": seed.vaults})).unwrap();
    assert!(
        Seed::from_json(&text).is_err(),
        "a type that is not its id's"
    );
}

#[tokio::test]
async fn each_kind_accepts_its_own_api_versions() {
    let emulator = start(mixed()).await;
    let token = emulator.issue_token(ARM);
    for version in ["2022-09-01", "2025-01-01", "2026-09-01"] {
        assert!(STORAGE_API_VERSIONS.contains(&version));
        let response = get(&storage_url(&emulator, "rg-data", ST, version), &token).await;
        assert_eq!(response.status(), 200, "{version}");
    }
    for version in ["2023-11-01-preview", "2025-04-01", "2025-11-01"] {
        assert!(CONTAINER_REGISTRY_API_VERSIONS.contains(&version));
        let response = get(
            &registry_url(&emulator, "rg-containers", CR, version),
            &token,
        )
        .await;
        assert_eq!(response.status(), 200, "{version}");
    }
    let (status, code, message) =
        arm_error(get(&storage_url(&emulator, "rg-data", ST, "2025-05-01"), &token).await).await;
    assert_eq!((status, code.as_str()), (400, "NoRegisteredProviderFound"));
    assert!(
        message.contains("for type 'storageAccounts'") && message.contains("2023-05-01"),
        "{message}"
    );
    let (status, code, message) =
        arm_error(get(&registry_url(&emulator, "rg-containers", CR, API), &token).await).await;
    assert_eq!((status, code.as_str()), (400, "NoRegisteredProviderFound"));
    assert!(message.contains("for type 'registries'"), "{message}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_storage_patch_replaces_network_acls_whole_and_merges_the_rest() {
    let emulator = start(mixed()).await;
    let token = emulator.issue_token(ARM);
    let before = emulator.vault(ST).unwrap();
    // The whole set, as a careful client sends it: every member kept, rules stored as sent.
    let full = storage_acls(json!([
        {"value": "52.174.10.21", "action": "Allow"},
        {"value": "20.37.158.0/23"},
        {"value": "40.74.28.7"}
    ]));
    let response = patch(
        &st_url(&emulator),
        &token,
        &json!({"properties": {"networkAcls": full, "minimumTlsVersion": "TLS1_3"}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "x-ms-ratelimit-remaining-subscription-writes").is_some());
    let answered: Value = response.json().await.unwrap();
    let mut expected = storage_acls(json!([
        {"value": "52.174.10.21", "action": "Allow"},
        {"value": "20.37.158.0/23", "action": "Allow"},
        {"value": "40.74.28.7", "action": "Allow"}
    ]));
    assert_eq!(answered["properties"]["networkAcls"], expected);
    assert_eq!(answered["properties"]["minimumTlsVersion"], "TLS1_3");
    assert_eq!(
        answered["properties"]["primaryEndpoints"],
        before["properties"]["primaryEndpoints"]
    );
    assert_eq!(answered["tags"], before["tags"]);
    assert_eq!(
        emulator.vault(ST).unwrap(),
        answered,
        "GET reads what PATCH answered"
    );
    assert_eq!(
        emulator.ip_rules(ST),
        ["52.174.10.21", "20.37.158.0/23", "40.74.28.7"]
    );

    // A client that drops members loses them: replaced whole, the four always-read members
    // come back with Storage's defaults; unknown members are kept as sent.
    let dropped =
        json!({"defaultAction": "Deny", "ipRules": [{"value": "20.37.158.0/23"}], "ipv6Rules": []});
    let answered: Value = patch(
        &st_url(&emulator),
        &token,
        &json!({"properties": {"networkAcls": dropped}}),
    )
    .await
    .json()
    .await
    .unwrap();
    expected = json!({"defaultAction": "Deny", "ipRules": [{"value": "20.37.158.0/23", "action": "Allow"}],
                      "ipv6Rules": [], "bypass": "AzureServices", "virtualNetworkRules": []});
    assert_eq!(answered["properties"]["networkAcls"], expected);
    assert_eq!(answered["properties"]["minimumTlsVersion"], "TLS1_3");

    // Tags replaced when sent.
    let answered: Value = patch(
        &st_url(&emulator),
        &token,
        &json!({"tags": {"tagfence": "Other"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answered["tags"], json!({"tagfence": "Other"}));
    assert_eq!(answered["properties"]["networkAcls"], expected);
    emulator.shutdown().await;
}

#[tokio::test]
async fn every_storage_rule_refused_leaves_the_account_unchanged() {
    let emulator = start(mixed()).await;
    let token = emulator.issue_token(ARM);
    let before = emulator.vault(ST).unwrap();
    let many: Vec<Value> = (0..401)
        .map(|i| json!({"value": format!("20.{}.{}.0/24", i / 256, i % 256)}))
        .collect();
    let rules = |bad: Value| storage_acls(json!([{"value": "52.174.10.21"}, bad]));
    let cases: Vec<(Value, &str)> = vec![
        (
            rules(json!({"value": "2603:1030:a07::/48"})),
            "networkAcls.ipRule[1].value",
        ),
        (
            rules(json!({"value": "20.37.158.1.5"})),
            "networkAcls.ipRule[1].value",
        ),
        (
            rules(json!({"value": "52.174.10.20/31"})),
            "networkAcls.ipRule[1].value",
        ),
        (
            rules(json!({"value": "52.174.10.20/32"})),
            "networkAcls.ipRule[1].value",
        ),
        (
            rules(json!({"value": "10.1.2.0/24"})),
            "networkAcls.ipRule[1].value",
        ),
        (
            rules(json!({"value": "172.16.0.1"})),
            "networkAcls.ipRule[1].value",
        ),
        (
            rules(json!({"value": "192.168.10.0/24"})),
            "networkAcls.ipRule[1].value",
        ),
        (
            rules(json!({"value": "20.1.2.0/24", "action": "Deny"})),
            "networkAcls.ipRule[1].action",
        ),
        (storage_acls(Value::Array(many)), "networkAcls.ipRule."),
        (
            json!({"bypass": "AzureServices", "ipRules": []}),
            "networkAcls.defaultAction.",
        ),
        (
            json!({"defaultAction": "Block", "ipRules": []}),
            "networkAcls.defaultAction.",
        ),
        (
            json!({"defaultAction": "Deny", "bypass": "Everything"}),
            "networkAcls.bypass.",
        ),
    ];
    for (acls, parameter) in cases {
        let response = patch(
            &st_url(&emulator),
            &token,
            &json!({"properties": {"networkAcls": acls, "minimumTlsVersion": "TLS1_0"}}),
        )
        .await;
        let (status, code, message) = arm_error(response).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "InvalidValuesForRequestParameters"),
            "{parameter}"
        );
        assert!(
            message.starts_with(&format!(
                "Values for request parameters are invalid: {parameter}"
            )) && message
                .ends_with("For more information, see - https://aka.ms/storagenetworkruleset"),
            "{message}"
        );
        assert_eq!(emulator.vault(ST).unwrap(), before, "{parameter}");
    }
    // What is documented as fine is fine: 400 rules, a bare address, host bits, Logging bypass.
    let exactly: Vec<Value> = (0..400)
        .map(|i| json!({"value": format!("20.{}.{}.0/24", i / 256, i % 256)}))
        .collect();
    let response = patch(
        &st_url(&emulator),
        &token,
        &json!({"properties": {"networkAcls": {"defaultAction": "Deny", "bypass": "Logging, AzureServices", "ipRules": exactly}}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(emulator.ip_rules(ST).len(), 400);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_registry_patch_replaces_the_rule_set_and_answers_with_the_registry() {
    let emulator = start(mixed()).await;
    let token = emulator.issue_token(ARM);
    let before = emulator.vault(CR).unwrap();
    let response = patch(
        &cr_url(&emulator, CR),
        &token,
        &json!({"properties": {"networkRuleSet": {"defaultAction": "Deny", "ipRules": [
            {"action": "Allow", "value": "52.174.10.22"}, {"value": "20.37.158.0/23"}, {"value": "40.74.28.7/32"}
        ]}}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let answered: Value = response.json().await.unwrap();
    assert_eq!(
        answered["properties"]["networkRuleSet"],
        json!({"defaultAction": "Deny", "ipRules": [
            {"action": "Allow", "value": "52.174.10.22"},
            {"value": "20.37.158.0/23", "action": "Allow"},
            {"value": "40.74.28.7/32", "action": "Allow"}
        ]})
    );
    assert_eq!(answered["sku"], before["sku"]);
    assert_eq!(
        answered["properties"]["loginServer"],
        before["properties"]["loginServer"]
    );
    assert_eq!(emulator.vault(CR).unwrap(), answered);
    assert_eq!(
        emulator.ip_rules(CR),
        ["52.174.10.22", "20.37.158.0/23", "40.74.28.7/32"]
    );

    // Replaced whole: what the client leaves out is gone, what it adds is kept.
    let answered: Value = patch(
        &cr_url(&emulator, CR),
        &token,
        &json!({"properties": {"networkRuleSet": {"defaultAction": "Allow", "custom": 1}, "publicNetworkAccess": "Disabled"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        answered["properties"]["networkRuleSet"],
        json!({"defaultAction": "Allow", "custom": 1})
    );
    assert_eq!(answered["properties"]["publicNetworkAccess"], "Disabled");
    assert_eq!(
        answered["properties"]["networkRuleBypassOptions"],
        "AzureServices"
    );
    assert!(emulator.ip_rules(CR).is_empty());
    emulator.shutdown().await;
}

#[tokio::test]
async fn every_registry_rule_refused_leaves_the_registry_unchanged() {
    let emulator = start(mixed()).await;
    let token = emulator.issue_token(ARM);
    let before = emulator.vault(CR).unwrap();
    let many: Vec<Value> = (0..201)
        .map(|i| json!({"value": format!("20.0.{i}.0/24")}))
        .collect();
    let rules =
        |bad: Value| json!({"defaultAction": "Deny", "ipRules": [{"value": "52.174.10.22"}, bad]});
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            rules(json!({"value": "2603:1030:a07::/48"})),
            "BadRequest",
            "ipRules[1].value",
        ),
        (
            rules(json!({"value": "52.174.10"})),
            "BadRequest",
            "ipRules[1].value",
        ),
        (
            rules(json!({"value": "10.0.0.0/8"})),
            "BadRequest",
            "ipRules[1].value",
        ),
        (
            rules(json!({"value": "192.168.1.1"})),
            "BadRequest",
            "ipRules[1].value",
        ),
        (
            rules(json!({"value": "20.1.2.3", "action": "Deny"})),
            "BadRequest",
            "ipRules[1].action",
        ),
        (
            json!({"defaultAction": "Deny", "ipRules": many}),
            "BadRequest",
            "exceed the limit of 200",
        ),
        (
            json!({"ipRules": []}),
            "BadRequest",
            "networkRuleSet.defaultAction",
        ),
        (
            json!({"defaultAction": "Block"}),
            "BadRequest",
            "networkRuleSet.defaultAction",
        ),
    ];
    for (rule_set, wanted_code, wanted) in cases {
        let (status, code, message) = arm_error(
            patch(
                &cr_url(&emulator, CR),
                &token,
                &json!({"properties": {"networkRuleSet": rule_set, "adminUserEnabled": true}}),
            )
            .await,
        )
        .await;
        assert_eq!((status, code.as_str()), (400, wanted_code), "{wanted}");
        assert!(message.contains(wanted), "{wanted}: {message}");
        assert_eq!(emulator.vault(CR).unwrap(), before, "{wanted}");
    }
    let (status, code, _) = arm_error(
        patch(
            &cr_url(&emulator, CR),
            &token,
            &json!({"properties": {"publicNetworkAccess": "Sometimes"}}),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "BadRequest"));
    assert_eq!(emulator.vault(CR).unwrap(), before);

    // Network rules need Premium: the Standard registry refuses rules and Deny, takes Allow.
    let standard = emulator.vault(CR_STANDARD).unwrap();
    for rule_set in [
        json!({"defaultAction": "Deny", "ipRules": []}),
        json!({"defaultAction": "Allow", "ipRules": [{"value": "52.174.10.23"}]}),
    ] {
        let (status, code, message) = arm_error(
            patch(
                &cr_url(&emulator, CR_STANDARD),
                &token,
                &json!({"properties": {"networkRuleSet": rule_set}}),
            )
            .await,
        )
        .await;
        assert_eq!((status, code.as_str()), (400, "NetworkRuleNotSupported"));
        assert!(message.contains("SKU Standard"), "{message}");
        assert_eq!(emulator.vault(CR_STANDARD).unwrap(), standard);
    }
    let response = patch(
        &cr_url(&emulator, CR_STANDARD),
        &token,
        &json!({"properties": {"networkRuleSet": {"defaultAction": "Allow", "ipRules": []}}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    // Upgraded in the same PATCH, it may have them.
    let response = patch(
        &cr_url(&emulator, CR_STANDARD),
        &token,
        &json!({"sku": {"name": "Premium"}, "properties": {"networkRuleSet": {"defaultAction": "Deny", "ipRules": [{"value": "52.174.10.23"}]}}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(emulator.ip_rules(CR_STANDARD), ["52.174.10.23"]);
    emulator.shutdown().await;
}

#[tokio::test]
async fn missing_forbidden_and_unauthenticated_resources_get_arms_answers() {
    let mut seed = mixed_seed();
    seed.forbidden.push(CR_STANDARD.to_owned());
    let emulator = start(Config {
        seed,
        ..Config::default()
    })
    .await;
    let token = emulator.issue_token(ARM);
    let (status, code, message) = arm_error(
        get(
            &storage_url(&emulator, "rg-data", "stnone", STORAGE_API),
            &token,
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "ResourceNotFound"));
    assert_eq!(
        message,
        "The Resource 'Microsoft.Storage/storageAccounts/stnone' under resource group 'rg-data' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
    );
    let (status, code, message) =
        arm_error(patch(&cr_url(&emulator, "crnone"), &token, &json!({"tags": {}})).await).await;
    assert_eq!((status, code.as_str()), (404, "ResourceNotFound"));
    assert!(
        message.starts_with("The Resource 'Microsoft.ContainerRegistry/registries/crnone' under resource group 'rg-containers'"),
        "{message}"
    );
    // A storage account named like a vault is still no vault, and the other way round.
    let (status, code, _) = arm_error(
        get(
            &storage_url(&emulator, "rg-secrets", "kv-prod", STORAGE_API),
            &token,
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "ResourceNotFound"));
    let (status, code, _) =
        arm_error(get(&registry_url(&emulator, "rg-none", CR, ACR_API), &token).await).await;
    assert_eq!((status, code.as_str()), (404, "ResourceGroupNotFound"));

    let (status, code, message) =
        arm_error(get(&cr_url(&emulator, CR_STANDARD), &token).await).await;
    assert_eq!((status, code.as_str()), (403, "AuthorizationFailed"));
    assert!(
        message.contains("'Microsoft.ContainerRegistry/registries/read'"),
        "{message}"
    );
    let (status, _, message) = arm_error(
        patch(
            &cr_url(&emulator, CR_STANDARD),
            &token,
            &json!({"tags": {}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        message.contains("'Microsoft.ContainerRegistry/registries/write'"),
        "{message}"
    );

    let response = client().get(st_url(&emulator)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    // PUT and DELETE of these kinds are not served.
    let response = client()
        .put(st_url(&emulator))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(emulator.vault(ST).is_some());

    let records = emulator.requests();
    let forbidden = records
        .iter()
        .find(|r| r.route == Route::RegistryGet && r.vault.as_deref() == Some(CR_STANDARD))
        .unwrap();
    assert!(!forbidden.authorized);
    assert_eq!(forbidden.status, 403);
    assert!(records
        .iter()
        .any(|r| r.route == Route::Other && r.method == "PUT"));
    emulator.shutdown().await;
}

#[tokio::test]
async fn faults_and_the_request_log_cover_the_new_routes() {
    let emulator = start(mixed()).await;
    let token = emulator.issue_token(ARM);
    let before = emulator.vault(ST).unwrap();
    emulator.add_fault(Fault {
        route: Some(Route::StorageAccountPatch),
        vault: Some("STTAGFENCEPROD".into()),
        kind: FaultKind::Status {
            status: 503,
            code: "ServerBusy".into(),
            message: "busy".into(),
            retry_after: Some(2),
        },
        count: 1,
    });
    let body =
        json!({"properties": {"networkAcls": storage_acls(json!([{"value": "20.37.158.0/23"}]))}});
    let response = patch(&st_url(&emulator), &token, &body).await;
    assert_eq!(response.status(), 503);
    assert_eq!(header(&response, "retry-after").as_deref(), Some("2"));
    assert_eq!(
        emulator.vault(ST).unwrap(),
        before,
        "a Status fault applies nothing"
    );

    // DropAfter: applied, the answer lost.
    emulator.add_fault(Fault {
        route: Some(Route::StorageAccountPatch),
        vault: None,
        kind: FaultKind::DropAfter,
        count: 1,
    });
    assert!(client()
        .patch(st_url(&emulator))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .is_err());
    assert_eq!(emulator.ip_rules(ST), ["20.37.158.0/23"]);

    // EditAfter on a registry GET: a person's rule lands in the registry's own shape.
    emulator.add_fault(Fault {
        route: Some(Route::RegistryGet),
        vault: Some(CR.into()),
        kind: FaultKind::EditAfter {
            add: vec!["52.174.99.1".into()],
            remove: vec!["52.174.10.22".into()],
        },
        count: 1,
    });
    let first: Value = get(&cr_url(&emulator, CR), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        first["properties"]["networkRuleSet"]["ipRules"],
        json!([{"action": "Allow", "value": "52.174.10.22"}])
    );
    let second: Value = get(&cr_url(&emulator, CR), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        second["properties"]["networkRuleSet"]["ipRules"],
        json!([{"action": "Allow", "value": "52.174.99.1"}])
    );
    // And on a storage GET, in the account's shape (bare, action Allow).
    emulator.add_fault(Fault {
        route: Some(Route::StorageAccountGet),
        vault: Some(ST.into()),
        kind: FaultKind::EditAfter {
            add: vec!["52.174.99.2".into()],
            remove: Vec::new(),
        },
        count: 1,
    });
    get(&st_url(&emulator), &token).await;
    assert_eq!(
        emulator.vault(ST).unwrap()["properties"]["networkAcls"]["ipRules"],
        json!([{"value": "20.37.158.0/23", "action": "Allow"}, {"value": "52.174.99.2", "action": "Allow"}])
    );

    // Reshape: the answer lies, the account does not change.
    emulator.add_fault(Fault {
        route: Some(Route::StorageAccountGet),
        vault: None,
        kind: FaultKind::remove_fields(&["/properties/networkAcls"]),
        count: 1,
    });
    let reshaped: Value = get(&st_url(&emulator), &token).await.json().await.unwrap();
    assert!(reshaped["properties"].get("networkAcls").is_none());
    assert!(emulator.vault(ST).unwrap()["properties"]["networkAcls"].is_object());

    let records = emulator.requests();
    let routes: Vec<(Route, Option<&str>, u16)> = records
        .iter()
        .map(|r| (r.route, r.vault.as_deref(), r.status))
        .collect();
    assert_eq!(
        routes,
        [
            (Route::StorageAccountPatch, Some(ST), 503),
            (Route::StorageAccountPatch, Some(ST), 200),
            (Route::RegistryGet, Some(CR), 200),
            (Route::RegistryGet, Some(CR), 200),
            (Route::StorageAccountGet, Some(ST), 200),
            (Route::StorageAccountGet, Some(ST), 200),
        ]
    );
    assert!(records[0].fault.is_some() && records[1].fault.is_some());
    assert!(records
        .iter()
        .all(|r| r.route.is_resource() && r.authorized));
    assert!(!Route::StorageAccountGet.is_vault());
    assert!(Route::RegistryPatch.is_arm_write() && Route::RegistryGet.is_arm_read());
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_hooks_and_control_routes_work_for_every_kind() {
    let emulator = start(mixed()).await;
    let base = emulator.base_url();
    emulator.set_ip_rules(ST, vec!["52.1.2.3".into(), "20.0.0.0/24".into()]);
    assert_eq!(
        emulator.vault(ST).unwrap()["properties"]["networkAcls"]["ipRules"],
        json!([{"value": "52.1.2.3", "action": "Allow"}, {"value": "20.0.0.0/24", "action": "Allow"}])
    );
    let id = emulator.vault(CR).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    emulator.set_ip_rules(&id, vec!["52.1.2.4".into()]);
    assert_eq!(
        emulator.vault(CR).unwrap()["properties"]["networkRuleSet"],
        json!({"defaultAction": "Deny", "ipRules": [{"action": "Allow", "value": "52.1.2.4"}]})
    );
    emulator.set_ip_rules("kv-build", vec!["52.1.2.5".into()]);
    assert_eq!(emulator.ip_rules("kv-build"), ["52.1.2.5/32"]);
    assert!(emulator.update_vault(ST, |account| {
        account["properties"]["networkAcls"]["defaultAction"] = json!("Allow");
    }));

    let response = client()
        .put(format!("{base}/_emulator/vaults/{CR_STANDARD}/ip-rules"))
        .json(&json!(["52.1.2.6"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(emulator.ip_rules(CR_STANDARD), ["52.1.2.6"]);
    let mut replaced = emulator.vault(ST).unwrap();
    replaced["tags"] = json!({});
    let response = client()
        .put(format!("{base}/_emulator/vaults/{ST}"))
        .json(&replaced)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(emulator.vault(ST).unwrap(), replaced);
    assert_eq!(
        replaced["properties"]["networkAcls"]["defaultAction"],
        "Allow"
    );

    let names = |value: Value| -> Vec<String> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|resource| resource["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let vaults: Value = client()
        .get(format!("{base}/_emulator/vaults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        names(vaults),
        ["kv-prod", "kv-build", "kv-legacy", "kv-locked"]
    );
    let resources: Value = client()
        .get(format!("{base}/_emulator/resources"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        names(resources),
        [
            "kv-prod",
            "kv-build",
            "kv-legacy",
            ST,
            CR,
            CR_STANDARD,
            "kv-locked"
        ]
    );
    assert!(emulator.requests().is_empty(), "hooks are not logged");
    emulator.shutdown().await;
}

#[tokio::test]
async fn writes_of_every_kind_share_the_subscriptions_bucket_and_reads_are_throttled_too() {
    let emulator = start(Config {
        throttle: Some(Throttle {
            capacity: 2,
            refill_per_sec: 0.01,
        }),
        read_throttle: Some(Throttle {
            capacity: 1,
            refill_per_sec: 0.01,
        }),
        ..mixed()
    })
    .await;
    let token = emulator.issue_token(ARM);
    let writes = "x-ms-ratelimit-remaining-subscription-writes";
    let response = patch(&st_url(&emulator), &token, &json!({"tags": {"a": "1"}})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, writes).as_deref(), Some("1"));
    let response = patch(&cr_url(&emulator, CR), &token, &json!({"tags": {"a": "1"}})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, writes).as_deref(), Some("0"));
    let before = emulator.vault(CR).unwrap();
    let response = patch(&cr_url(&emulator, CR), &token, &json!({"tags": {"a": "2"}})).await;
    assert!(header(&response, "retry-after").is_some());
    let (status, code, message) = arm_error(response).await;
    assert_eq!(
        (status, code.as_str()),
        (429, "SubscriptionRequestsThrottled")
    );
    assert!(message.contains("Number of 'write' requests"), "{message}");
    assert_eq!(emulator.vault(CR).unwrap(), before);
    let (status, _, _) =
        arm_error(patch_vault(&emulator, "kv-build", &token, &json!({"tags": {}})).await).await;
    assert_eq!(status, 429, "a vault write spends the same bucket");

    assert_eq!(get(&st_url(&emulator), &token).await.status(), 200);
    let response = get(&cr_url(&emulator, CR), &token).await;
    let (status, _, message) = arm_error(response).await;
    assert_eq!(status, 429);
    assert!(message.contains("Number of 'read' requests"), "{message}");
    let throttled = emulator
        .requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert_eq!(throttled, 3);
    emulator.shutdown().await;
}

/// The rows of a Resource Graph query over the mixed store.
async fn rows(emulator: &Emulator, token: &str, query: &str) -> Vec<Value> {
    let response = graph_query(emulator, token, query).await;
    assert_eq!(response.status(), 200, "{query}");
    let body: Value = response.json().await.unwrap();
    body["data"].as_array().unwrap().clone()
}

const ALL_KINDS: &str = "'microsoft.keyvault/vaults', 'microsoft.storage/storageaccounts', 'microsoft.containerregistry/registries'";
const PROJECTION: &str = "networkAcls = properties.networkAcls, networkRuleSet = properties.networkRuleSet, publicNetworkAccess = properties.publicNetworkAccess";

#[tokio::test]
async fn resource_graph_answers_tagfences_queries_over_every_kind() {
    let emulator = start(mixed()).await;
    let token = emulator.issue_token(ARM);
    let tagged = format!(
        "resources | where type in~ ({ALL_KINDS}) | where isnotempty(tags['tagfence']) | project id, name, type, location, subscriptionId, value = tostring(tags['tagfence']), tags, {PROJECTION}"
    );
    let found = rows(&emulator, &token, &tagged).await;
    let names: Vec<&str> = found
        .iter()
        .map(|row| row["name"].as_str().unwrap())
        .collect();
    // Sorted by id: rg-containers, rg-data, rg-secrets.
    assert_eq!(names, [CR, ST, "kv-build", "kv-prod"]);
    let registry = &found[0];
    assert_eq!(registry["type"], "microsoft.containerregistry/registries");
    assert_eq!(registry["value"], "AzureDevOps");
    assert_eq!(registry["subscriptionId"], SUB);
    assert_eq!(registry["location"], "westeurope");
    assert!(registry["networkAcls"].is_null());
    assert_eq!(registry["networkRuleSet"]["defaultAction"], "Deny");
    assert_eq!(registry["publicNetworkAccess"], "Enabled");
    let account = &found[1];
    assert_eq!(account["type"], "microsoft.storage/storageaccounts");
    assert_eq!(
        account["networkAcls"]["ipRules"],
        json!([{"value": "52.174.10.21", "action": "Allow"}])
    );
    assert!(account["networkRuleSet"].is_null());
    assert_eq!(account["publicNetworkAccess"], "Enabled");
    assert_eq!(account["tags"]["environment"], "prod");
    let vault = &found[3];
    assert_eq!(vault["type"], "microsoft.keyvault/vaults");
    assert!(vault["networkRuleSet"].is_null());
    assert_eq!(vault["networkAcls"]["defaultAction"], "Deny");
    // Every row has every projected column, in order, null where the resource has none.
    for row in &found {
        let columns: Vec<&String> = row.as_object().unwrap().keys().collect();
        assert_eq!(columns.len(), 10, "{row}");
        assert!(row.as_object().unwrap().contains_key("networkRuleSet"));
    }

    let untagged = format!(
        "resources | where type in~ ({ALL_KINDS}) | project id, name, type, location, tags, {PROJECTION}"
    );
    let all = rows(&emulator, &token, &untagged).await;
    assert_eq!(
        all.len(),
        6,
        "every readable resource; kv-locked is forbidden"
    );
    let standard = all.iter().find(|row| row["name"] == CR_STANDARD).unwrap();
    assert_eq!(standard["networkRuleSet"]["defaultAction"], "Allow");

    // A subset, in another case, and a one-element list.
    let subset = format!(
        "resources | where type in~ ('Microsoft.Storage/storageAccounts', 'MICROSOFT.CONTAINERREGISTRY/REGISTRIES') | project id, name, type, location, tags, {PROJECTION}"
    );
    let names: Vec<String> = rows(&emulator, &token, &subset)
        .await
        .iter()
        .map(|row| row["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, [CR_STANDARD, CR, ST]);
    let one = format!(
        "resources | where type in~ ('microsoft.containerregistry/registries') | project id, name, type, location, tags, {PROJECTION}"
    );
    assert_eq!(rows(&emulator, &token, &one).await.len(), 2);

    // The old vault-only shape still sees only vaults.
    let old = rows(
        &emulator,
        &token,
        "resources | where type =~ 'microsoft.keyvault/vaults' | where tags['tagfence'] =~ 'azuredevops' | project id, name, networkAcls = properties.networkAcls",
    )
    .await;
    assert_eq!(old.len(), 2);
    let counted = rows(
        &emulator,
        &token,
        "resources | summarize count() by type | order by type asc",
    )
    .await;
    assert_eq!(
        counted,
        json!([
            {"type": "microsoft.containerregistry/registries", "count_": 2},
            {"type": "microsoft.keyvault/vaults", "count_": 3},
            {"type": "microsoft.storage/storageaccounts", "count_": 1}
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn resource_graphs_index_follows_every_kind() {
    let emulator = start(Config {
        graph_index: GraphIndex::Manual,
        ..mixed()
    })
    .await;
    let token = emulator.issue_token(ARM);
    let query = format!(
        "resources | where type in~ ('microsoft.storage/storageaccounts') | project name, {PROJECTION}"
    );
    let response = patch(
        &st_url(&emulator),
        &token,
        &json!({"properties": {"networkAcls": storage_acls(json!([{"value": "20.37.158.0/23"}]))}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let stale = rows(&emulator, &token, &query).await;
    assert_eq!(
        stale[0]["networkAcls"]["ipRules"][0]["value"],
        "52.174.10.21"
    );
    emulator.refresh_index();
    let fresh = rows(&emulator, &token, &query).await;
    assert_eq!(
        fresh[0]["networkAcls"]["ipRules"][0]["value"],
        "20.37.158.0/23"
    );
    emulator.shutdown().await;
}
