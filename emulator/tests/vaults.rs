//! Key Vault routes: reads, writes, validation, authentication, authorisation, throttling.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tagfence_emulator::{Config, Route, Slash31Policy, Throttle};

#[tokio::test]
async fn get_returns_the_seeded_vault_with_arm_headers() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    let response = client()
        .get(vault_url(&emulator, "kv-prod"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(&response, "x-ms-request-id").is_some());
    let reads: u32 = header(&response, "x-ms-ratelimit-remaining-subscription-reads")
        .unwrap()
        .parse()
        .unwrap();
    assert!(reads > 0);
    let vault: Value = response.json().await.unwrap();
    assert_eq!(vault, emulator.vault("kv-prod").unwrap());
    assert_eq!(vault["name"], "kv-prod");
    assert_eq!(
        emulator.ip_rules("KV-PROD"),
        [
            "20.37.158.0/23",
            "20.37.194.0/24",
            "40.74.28.0/23",
            "52.174.10.20/32"
        ]
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn arm_path_segments_match_in_any_case() {
    let emulator = start(config()).await;
    let token = emulator.issue_token("https://management.azure.com/.default");
    let url = format!(
        "{}/SUBSCRIPTIONS/{SUB}/resourcegroups/RG-SECRETS/providers/microsoft.keyvault/VAULTS/KV-Build?API-VERSION={API}",
        emulator.base_url()
    );
    let response = client().get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(emulator.requests()[0].vault.as_deref(), Some("kv-build"));
    emulator.shutdown().await;
}

#[tokio::test]
async fn patch_replaces_network_acls_wholesale_and_normalises_like_arm() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    let body = json!({"properties": {"networkAcls": {
        "bypass": "AzureServices",
        "defaultAction": "Deny",
        "ipRules": [{"value": "20.37.158.0/23"}, {"value": "51.104.26.0/24"}, {"value": "198.51.100.7"}, {"value": "20.42.134.1/23"}],
        "virtualNetworkRules": [{"id": "/subscriptions/X/resourceGroups/RG-Net/providers/Microsoft.Network/virtualNetworks/VNet/subnets/Agents"}]
    }}});
    let response = patch_vault(&emulator, "kv-prod", &token, &body).await;
    assert_eq!(response.status(), 200);
    let remaining: u32 = header(&response, "x-ms-ratelimit-remaining-subscription-writes")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(remaining, 199);
    let returned: Value = response.json().await.unwrap();
    let acls = &returned["properties"]["networkAcls"];
    assert_eq!(
        acls["ipRules"],
        json!([{"value": "20.37.158.0/23"}, {"value": "51.104.26.0/24"}, {"value": "198.51.100.7/32"}, {"value": "20.42.134.1/23"}])
    );
    assert_eq!(
        acls["virtualNetworkRules"],
        json!([{"id": "/subscriptions/x/resourcegroups/rg-net/providers/microsoft.network/virtualnetworks/vnet/subnets/agents"}])
    );
    assert_eq!(returned["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        returned["properties"]["publicNetworkAccess"], "Enabled",
        "other properties are kept"
    );
    assert_eq!(returned, emulator.vault("kv-prod").unwrap());

    // A partial networkAcls replaces the stored one: omitted sub-fields are gone.
    let partial =
        json!({"properties": {"networkAcls": {"ipRules": [{"value": "20.37.194.0/24"}]}}});
    let response = patch_vault(&emulator, "kv-prod", &token, &partial).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        emulator.vault("kv-prod").unwrap()["properties"]["networkAcls"],
        json!({"ipRules": [{"value": "20.37.194.0/24"}]})
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn refused_patches_leave_the_vault_unchanged() {
    let emulator = start(Config {
        slash31: Slash31Policy::Reject,
        ..config()
    })
    .await;
    let token = emulator.issue_token(ARM);
    let before = emulator.vault("kv-prod").unwrap();
    let acls = |ip_rules: Value, vnet_rules: Value| json!({"properties": {"publicNetworkAccess": "Disabled", "networkAcls": {"bypass": "AzureServices", "defaultAction": "Deny", "ipRules": ip_rules, "virtualNetworkRules": vnet_rules}}});
    let too_many_ips: Vec<Value> = (0..1001)
        .map(|i| json!({"value": format!("20.{}.{}.0/24", i / 256, i % 256)}))
        .collect();
    let too_many_vnets: Vec<Value> = (0..201).map(|i| json!({"id": format!("/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/virtualNetworks/v/subnets/s{i}")})).collect();
    let cases = [
        (acls(json!([{"value": "20.1.1.0/24"}, {"value": "10.0.0.0/8"}]), json!([])),
         "Invalid value found at properties.networkAcls.ipRules[1].value: 10.0.0.0/8 belongs to forbidden range 10.0.0.0–10.255.255.255 (private IP addresses)"),
        (acls(json!([{"value": "2603:1030:a07:15::3d2/127"}]), json!([])),
         "Invalid value found at properties.networkAcls.ipRules[0].value: 2603:1030:a07:15::3d2/127"),
        (acls(json!([{"value": "not-an-ip"}]), json!([])),
         "Invalid value found at properties.networkAcls.ipRules[0].value: not-an-ip"),
        (acls(json!([{"value": "192.168.10.4"}]), json!([])),
         "Invalid value found at properties.networkAcls.ipRules[0].value: 192.168.10.4 belongs to forbidden range 192.168.0.0–192.168.255.255 (private IP addresses)"),
        (acls(json!([{"value": "20.1.2.2/31"}]), json!([])),
         "Invalid value found at properties.networkAcls.ipRules[0].value: 20.1.2.2/31"),
        (acls(Value::Array(too_many_ips), json!([])), "1001 IP rules exceed the limit of 1000"),
        (acls(json!([]), Value::Array(too_many_vnets)), "201 virtual network rules exceed the limit of 200"),
    ];
    for (body, expected) in cases {
        let response = patch_vault(&emulator, "kv-prod", &token, &body).await;
        let (status, code, message) = arm_error(response).await;
        assert_eq!((status, code.as_str()), (400, "BadRequest"), "{message}");
        assert!(
            message.starts_with(expected) || message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
        assert_eq!(
            emulator.vault("kv-prod").unwrap(),
            before,
            "a refused PATCH changed the vault"
        );
    }
    let response = client()
        .patch(vault_url(&emulator, "kv-prod"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, code, _) = arm_error(response).await;
    assert_eq!((status, code.as_str()), (400, "InvalidRequestContent"));
    assert_eq!(emulator.vault("kv-prod").unwrap(), before);
    emulator.shutdown().await;
}

#[tokio::test]
async fn slash_31_rules_are_accepted_by_default() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    let body = json!({"properties": {"networkAcls": {"bypass": "AzureServices", "defaultAction": "Deny", "ipRules": [{"value": "20.1.2.2/31"}], "virtualNetworkRules": []}}});
    let response = patch_vault(&emulator, "kv-build", &token, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(emulator.ip_rules("kv-build"), ["20.1.2.2/31"]);
    emulator.shutdown().await;
}

#[tokio::test]
async fn put_replaces_all_properties_and_requires_tenant_and_sku() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    let mut vault = emulator.vault("kv-build").unwrap();
    vault["properties"]["networkAcls"]["ipRules"] =
        json!([{"value": "40.74.28.0/23"}, {"value": "52.174.10.21"}]);
    let response = client()
        .put(vault_url(&emulator, "kv-build"))
        .bearer_auth(&token)
        .json(&vault)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(&response, "x-ms-ratelimit-remaining-subscription-writes").is_some());
    assert_eq!(
        emulator.ip_rules("kv-build"),
        ["40.74.28.0/23", "52.174.10.21/32"]
    );

    let before = emulator.vault("kv-build").unwrap();
    for missing in ["tenantId", "sku"] {
        let mut body = before.clone();
        body["properties"].as_object_mut().unwrap().remove(missing);
        let response = client()
            .put(vault_url(&emulator, "kv-build"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, code, message) = arm_error(response).await;
        assert_eq!((status, code.as_str()), (400, "BadRequest"), "{message}");
        assert!(message.contains(missing), "{message}");
    }
    let mut private = before.clone();
    private["properties"]["networkAcls"]["ipRules"] = json!([{"value": "172.16.0.1"}]);
    let response = client()
        .put(vault_url(&emulator, "kv-build"))
        .bearer_auth(&token)
        .json(&private)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(emulator.vault("kv-build").unwrap(), before);

    // A full replace: properties not sent are gone.
    let minimal = json!({"location": "westeurope", "properties": {"tenantId": "t", "sku": {"family": "A", "name": "standard"}}});
    let response = client()
        .put(vault_url(&emulator, "kv-build"))
        .bearer_auth(&token)
        .json(&minimal)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stored = emulator.vault("kv-build").unwrap();
    assert!(stored["properties"].get("networkAcls").is_none());
    assert_eq!(
        stored["properties"]["vaultUri"],
        "https://kv-build.vault.azure.net/"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn authentication_failures_use_arm_codes_and_are_logged_unauthorised() {
    let emulator = start(config()).await;
    let url = vault_url(&emulator, "kv-prod");

    let response = client().get(&url).send().await.unwrap();
    assert!(header(&response, "www-authenticate")
        .unwrap()
        .starts_with("Bearer "));
    assert_eq!(
        arm_error(response).await,
        (
            401,
            "AuthenticationFailed".into(),
            "Authentication failed. The 'Authorization' header is missing.".into()
        )
    );

    let response = client()
        .get(&url)
        .bearer_auth("made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(
        arm_error(response).await,
        (
            401,
            "InvalidAuthenticationToken".into(),
            "The access token is invalid.".into()
        )
    );

    let vault_token = emulator.issue_token("https://vault.azure.net");
    let response = client()
        .get(&url)
        .bearer_auth(vault_token)
        .send()
        .await
        .unwrap();
    let (status, code, _) = arm_error(response).await;
    assert_eq!(
        (status, code.as_str()),
        (401, "InvalidAuthenticationTokenAudience")
    );

    let token = emulator.issue_token("https://management.azure.com");
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    emulator.expire_tokens();
    let response = client()
        .patch(&url)
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (status, code, message) = arm_error(response).await;
    assert_eq!((status, code.as_str()), (401, "ExpiredAuthenticationToken"));
    assert!(
        message.starts_with("The access token expiry UTC time '")
            && message.contains("' is earlier than current UTC time '"),
        "{message}"
    );
    // A token issued after the expiry works.
    let fresh = emulator.issue_token(ARM);
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth(&fresh)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let authorized: Vec<bool> = emulator.requests().iter().map(|r| r.authorized).collect();
    assert_eq!(authorized, [false, false, false, true, false, true]);
    emulator.shutdown().await;
}

#[tokio::test]
async fn forbidden_vaults_answer_403_naming_the_action_and_the_caller() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    let url = vault_url(&emulator, "kv-locked");
    let before = emulator.vault("kv-locked").unwrap();

    let (status, code, message) =
        arm_error(client().get(&url).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (403, "AuthorizationFailed"));
    assert_eq!(
        message,
        format!(
            "The client '{}' with object id '{}' does not have authorization to perform action 'Microsoft.KeyVault/vaults/read' over scope '/subscriptions/{SUB}/resourceGroups/rg-secrets/providers/Microsoft.KeyVault/vaults/kv-locked' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            tagfence_emulator::SYSTEM_ASSIGNED_CLIENT_ID,
            tagfence_emulator::SYSTEM_ASSIGNED_OBJECT_ID
        )
    );
    let body = json!({"properties": {"networkAcls": {"ipRules": []}}});
    let (status, _, message) = arm_error(
        client()
            .patch(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        message.contains("'Microsoft.KeyVault/vaults/write'"),
        "{message}"
    );
    assert_eq!(emulator.vault("kv-locked").unwrap(), before);
    let records = emulator.requests();
    assert!(records
        .iter()
        .all(|r| !r.authorized && r.vault.as_deref() == Some("kv-locked")));
    emulator.shutdown().await;
}

#[tokio::test]
async fn unknown_vaults_and_resource_groups_answer_404() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    let (status, code, message) = arm_error(
        client()
            .get(vault_url(&emulator, "kv-missing"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "ResourceNotFound"));
    assert_eq!(
        message,
        "The Resource 'Microsoft.KeyVault/vaults/kv-missing' under resource group 'rg-secrets' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
    );
    let url = format!("{}/subscriptions/{SUB}/resourceGroups/rg-nope/providers/Microsoft.KeyVault/vaults/kv-prod?api-version={API}", emulator.base_url());
    let response = client()
        .patch(url)
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        arm_error(response).await,
        (
            404,
            "ResourceGroupNotFound".into(),
            "Resource group 'rg-nope' could not be found.".into()
        )
    );

    let response = client()
        .get(format!("{}/nothing/here", emulator.base_url()))
        .send()
        .await
        .unwrap();
    let (status, code, _) = arm_error(response).await;
    assert_eq!((status, code.as_str()), (404, "NotFound"));
    assert_eq!(emulator.requests().last().unwrap().route, Route::Other);
    emulator.shutdown().await;
}

#[tokio::test]
async fn api_version_is_required_and_must_be_a_known_key_vault_version() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    let base = vault_url(&emulator, "kv-prod");
    let bare = base.split('?').next().unwrap().to_owned();
    assert_eq!(
        arm_error(
            client()
                .get(&bare)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
        )
        .await,
        (
            400,
            "MissingApiVersionParameter".into(),
            "The api-version query parameter (?api-version=) is required for all requests.".into()
        )
    );
    let (status, code, message) = arm_error(
        client()
            .get(format!("{bare}?api-version=2099-01-01"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "NoRegisteredProviderFound"));
    assert!(
        message.starts_with("No registered resource provider found for location 'westeurope' and API version '2099-01-01' for type 'vaults'. The supported api-versions are '2015-06-01, 2016-10-01, 2018-02-14-preview, 2018-02-14, ")
            && message.contains("2026-05-15")
            && message.contains("The supported locations are 'eastus, eastus2, "),
        "{message}"
    );
    for version in tagfence_emulator::KEY_VAULT_API_VERSIONS {
        let response = client()
            .get(format!("{bare}?api-version={version}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{version}");
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn writes_are_throttled_per_subscription_and_recover() {
    let emulator = start(Config {
        throttle: Some(Throttle {
            capacity: 3,
            refill_per_sec: 1.0,
        }),
        ..config()
    })
    .await;
    let token = emulator.issue_token(ARM);
    let patch = |rules: Value| json!({"properties": {"networkAcls": {"bypass": "AzureServices", "defaultAction": "Deny", "ipRules": rules, "virtualNetworkRules": []}}});
    let mut remaining = Vec::new();
    for i in 0..3 {
        let body = patch(json!([{"value": format!("20.0.0.{i}")}]));
        let response = patch_vault(&emulator, "kv-build", &token, &body).await;
        assert_eq!(response.status(), 200);
        remaining.push(header(&response, "x-ms-ratelimit-remaining-subscription-writes").unwrap());
    }
    assert_eq!(remaining, ["2", "1", "0"]);

    let before = emulator.vault("kv-build").unwrap();
    let response = client()
        .patch(vault_url(&emulator, "kv-build"))
        .bearer_auth(&token)
        .json(&patch(json!([])))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "retry-after").as_deref(), Some("1"));
    assert_eq!(
        header(&response, "x-ms-ratelimit-remaining-subscription-writes").as_deref(),
        Some("0")
    );
    let (status, code, message) = arm_error(response).await;
    assert_eq!(
        (status, code.as_str()),
        (429, "SubscriptionRequestsThrottled")
    );
    assert_eq!(
        message,
        format!(
            "Number of 'write' requests for subscription '{SUB}' actor '{}' exceeded. Please try again after '1' seconds after the additional tokens are available. Refer to https://aka.ms/arm-throttling",
            tagfence_emulator::SYSTEM_ASSIGNED_OBJECT_ID
        )
    );
    assert_eq!(
        emulator.vault("kv-build").unwrap(),
        before,
        "a throttled write changed the vault"
    );
    // Reads are not throttled.
    assert_eq!(
        client()
            .get(vault_url(&emulator, "kv-build"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    tokio::time::sleep(Duration::from_millis(1050)).await;
    let response = client()
        .patch(vault_url(&emulator, "kv-build"))
        .bearer_auth(&token)
        .json(&patch(json!([])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(emulator.ip_rules("kv-build"), Vec::<String>::new());
    emulator.shutdown().await;
}

#[tokio::test]
async fn throttling_can_be_disabled() {
    let emulator = start(Config {
        throttle: None,
        ..config()
    })
    .await;
    let token = emulator.issue_token(ARM);
    for _ in 0..5 {
        let response = client()
            .patch(vault_url(&emulator, "kv-build"))
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_patch_answers_200_with_the_stored_vault_byte_for_byte_as_a_get_then_would() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    // A vault with systemData, so the write stamps it too.
    emulator.update_vault("kv-build", |vault| {
        vault["systemData"] = json!({"createdBy": "someone", "createdByType": "User", "createdAt": "2024-01-01T00:00:00.0000000Z"});
    });
    let body = json!({
        "tags": {"tagfence": "AzureDevOps"},
        "properties": {"networkAcls": {
            "bypass": "AzureServices",
            "defaultAction": "Deny",
            "ipRules": [{"value": "198.51.100.7"}, {"value": "20.37.158.0/23"}],
            "virtualNetworkRules": []
        }}
    });
    let patched = patch_vault(&emulator, "kv-build", &token, &body).await;
    assert_eq!(patched.status(), 200);
    let answer = patched.bytes().await.unwrap();
    let read = get_vault(&emulator, "kv-build", &token).await;
    assert_eq!(read.status(), 200);
    assert_eq!(answer, read.bytes().await.unwrap());
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer, emulator.vault("kv-build").unwrap());
    assert_eq!(
        answer["properties"]["networkAcls"]["ipRules"],
        json!([{"value": "198.51.100.7/32"}, {"value": "20.37.158.0/23"}])
    );
    assert_eq!(answer["systemData"]["createdBy"], "someone");
    assert_eq!(
        answer["systemData"]["lastModifiedByType"],
        "ManagedIdentity"
    );
    emulator.shutdown().await;
}
