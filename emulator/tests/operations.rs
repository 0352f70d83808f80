//! The ARM operations a script around tagfence needs besides GET/PATCH: listing vaults (by
//! subscription, by resource group, through ARM's generic `resources` list), creating and
//! deleting one, `serviceTagDetails`, and ARM's correlation headers and `systemData`.

mod support;

use serde_json::{json, Value};
use support::{arm_error, client, config, header, start, with_query, ARM, SUB};

const KV: &str = "2026-05-15";

fn rg_url(base: &str, rg: &str) -> String {
    format!("{base}/subscriptions/{SUB}/resourceGroups/{rg}")
}

fn new_vault(location: &str) -> Value {
    json!({
        "location": location,
        "tags": {"owner": "script"},
        "properties": {
            "tenantId": "00000000-0000-0000-0000-0000000000aa",
            "sku": {"family": "A", "name": "standard"},
            "networkAcls": {"defaultAction": "Deny", "bypass": "AzureServices", "ipRules": [{"value": "198.51.100.7"}]}
        }
    })
}

async fn names(response: reqwest::Response) -> Vec<String> {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vault| vault["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn vaults_are_listed_by_subscription_group_and_generic_filter() {
    let emulator = start(config()).await;
    let base = emulator.base_url();
    let token = emulator.issue_token(ARM);
    let get = |url: String| client().get(url).bearer_auth(&token).send();
    let by_subscription =
        format!("{base}/subscriptions/{SUB}/providers/Microsoft.KeyVault/vaults?api-version={KV}");
    // kv-locked is forbidden: a list shows only what the caller may read.
    assert_eq!(
        names(get(by_subscription.clone()).await.unwrap()).await,
        ["kv-build", "kv-legacy", "kv-prod"]
    );
    let by_group = format!(
        "{}/providers/Microsoft.KeyVault/vaults?api-version={KV}",
        rg_url(&base, "RG-SECRETS")
    );
    assert_eq!(names(get(by_group).await.unwrap()).await.len(), 3);
    let missing_group = format!(
        "{}/providers/Microsoft.KeyVault/vaults?api-version={KV}",
        rg_url(&base, "rg-none")
    );
    let (status, code, _) = arm_error(get(missing_group).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "ResourceGroupNotFound"));

    // Paging: $top and an absolute nextLink.
    let first: Value = get(format!("{by_subscription}&$top=2"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["value"].as_array().unwrap().len(), 2);
    let next = first["nextLink"].as_str().unwrap().to_owned();
    assert!(next.starts_with(&base) && next.contains("$top=2"), "{next}");
    let second: Value = get(next).await.unwrap().json().await.unwrap();
    assert_eq!(second["value"][0]["name"], "kv-prod");
    assert!(second.get("nextLink").is_none());

    // What azure-mgmt-keyvault's vaults.list sends.
    let generic = with_query(
        &format!("{base}/subscriptions/{SUB}/resources"),
        &[
            ("$filter", "resourceType eq 'Microsoft.KeyVault/vaults'"),
            ("$top", "100"),
            ("api-version", "2015-11-01"),
        ],
    );
    let body: Value = get(generic).await.unwrap().json().await.unwrap();
    assert_eq!(body["value"].as_array().unwrap().len(), 3);
    assert_eq!(
        body["value"][2],
        json!({"id": format!("/subscriptions/{SUB}/resourceGroups/rg-secrets/providers/Microsoft.KeyVault/vaults/kv-prod"),
               "name": "kv-prod", "type": "Microsoft.KeyVault/vaults", "location": "westeurope",
               "tags": {"environment": "prod", "tagfence": "AzureDevOps"}})
    );
    let tagged = with_query(
        &format!("{}/resources", rg_url(&base, "rg-secrets")),
        &[
            ("$filter", "tagName eq 'environment' and tagValue eq 'PROD'"),
            ("api-version", "2021-04-01"),
        ],
    );
    assert_eq!(names(get(tagged).await.unwrap()).await, ["kv-prod"]);
    let odd = with_query(
        &format!("{base}/subscriptions/{SUB}/resources"),
        &[
            ("$filter", "startswith(name, 'kv')"),
            ("api-version", "2021-04-01"),
        ],
    );
    let (status, code, _) = arm_error(get(odd).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "InvalidFilterInQueryString"));
    let (status, code, message) = arm_error(
        get(format!(
            "{base}/subscriptions/{SUB}/resources?api-version=2099-01-01"
        ))
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "InvalidApiVersionParameter"));
    assert!(
        message.starts_with(
            "The api-version '2099-01-01' is invalid. The supported versions are '2025-04-01,"
        ),
        "{message}"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_put_creates_a_vault_a_delete_soft_deletes_it_and_recover_brings_it_back() {
    let emulator = start(config()).await;
    let base = emulator.base_url();
    let token = emulator.issue_token(ARM);
    let url = |rg: &str, name: &str| {
        format!(
            "{}/providers/Microsoft.KeyVault/vaults/{name}?api-version={KV}",
            rg_url(&base, rg)
        )
    };
    let put = |url: String, body: Value| client().put(url).bearer_auth(&token).json(&body).send();

    let created = put(url("rg-secrets", "kv-script"), new_vault("West Europe"))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(header(&created, "x-ms-correlation-request-id").is_some());
    let vault: Value = created.json().await.unwrap();
    assert_eq!(vault["location"], "westeurope");
    assert_eq!(vault["type"], "Microsoft.KeyVault/vaults");
    assert_eq!(
        vault["properties"]["networkAcls"]["ipRules"],
        json!([{"value": "198.51.100.7/32"}])
    );
    assert_eq!(
        vault["properties"]["vaultUri"],
        "https://kv-script.vault.azure.net/"
    );
    assert_eq!(vault["properties"]["provisioningState"], "Succeeded");
    assert_eq!(vault["systemData"]["createdByType"], "ManagedIdentity");
    assert_eq!(
        vault["systemData"]["createdAt"],
        vault["systemData"]["lastModifiedAt"]
    );
    assert_eq!(emulator.ip_rules("kv-script"), ["198.51.100.7/32"]);

    // A second PUT replaces: tags and rules not sent are gone; systemData keeps its creation.
    let mut replacement = new_vault("westeurope");
    replacement["tags"] = json!({});
    replacement["properties"]["networkAcls"]["ipRules"] = json!([]);
    let replaced = put(url("rg-secrets", "kv-script"), replacement)
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    let replaced: Value = replaced.json().await.unwrap();
    assert_eq!(replaced["tags"], json!({}));
    assert_eq!(
        replaced["systemData"]["createdAt"],
        vault["systemData"]["createdAt"]
    );

    for (rg, name, body, status, code) in [
        (
            "rg-none",
            "kv-elsewhere",
            new_vault("westeurope"),
            404,
            "ResourceGroupNotFound",
        ),
        (
            "rg-secrets",
            "kv-nowhere",
            new_vault("nowhere"),
            400,
            "LocationNotAvailableForResourceType",
        ),
        (
            "rg-secrets",
            "1kv",
            new_vault("westeurope"),
            400,
            "VaultNameNotValid",
        ),
        (
            "rg-secrets",
            "kv--double",
            new_vault("westeurope"),
            400,
            "VaultNameNotValid",
        ),
        (
            "rg-secrets",
            "kv-no-location",
            json!({"properties": new_vault("x")["properties"]}),
            400,
            "LocationRequired",
        ),
    ] {
        let (got_status, got_code, message) =
            arm_error(put(url(rg, name), body).await.unwrap()).await;
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{name}: {message}"
        );
    }

    let delete = client()
        .delete(url("rg-secrets", "kv-script"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 200);
    let again = client()
        .delete(url("rg-secrets", "kv-script"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 204);
    assert!(emulator.vault("kv-script").is_none());
    let (status, code, message) = arm_error(
        put(url("rg-secrets", "kv-script"), new_vault("westeurope"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "ConflictError"), "{message}");
    let mut recover = new_vault("westeurope");
    recover["properties"]["createMode"] = json!("recover");
    let recovered = put(url("rg-secrets", "kv-script"), recover).await.unwrap();
    assert_eq!(recovered.status(), 201);
    assert_eq!(emulator.vault("kv-script").unwrap()["tags"], json!({}));
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_vault_name_taken_in_another_group_is_a_conflict() {
    let mut seed = support::seed();
    seed.resource_groups
        .push(format!("/subscriptions/{SUB}/resourceGroups/rg-other"));
    let emulator = start(tagfence_emulator::Config { seed, ..config() }).await;
    let token = emulator.issue_token(ARM);
    let url = format!(
        "{}/providers/Microsoft.KeyVault/vaults/kv-prod?api-version={KV}",
        rg_url(&emulator.base_url(), "rg-other")
    );
    let (status, code, _) = arm_error(
        client()
            .put(url)
            .bearer_auth(&token)
            .json(&new_vault("westeurope"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "VaultAlreadyExists"));
    emulator.shutdown().await;
}

#[tokio::test]
async fn patch_stamps_system_data_and_correlation_ids_are_echoed() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    // A seed without systemData stays without (seeds are verbatim).
    let response = support::patch_vault(&emulator, "kv-legacy", &token, &json!({"tags": {}})).await;
    let vault: Value = response.json().await.unwrap();
    assert!(vault.get("systemData").is_none());
    emulator.update_vault("kv-build", |vault| {
        vault["systemData"] = json!({"createdBy": "someone", "createdByType": "User", "createdAt": "2020-01-01T12:00:00.0000000Z"});
    });
    let response = client()
        .patch(support::vault_url(&emulator, "kv-build"))
        .bearer_auth(&token)
        .header("x-ms-correlation-request-id", "my-correlation")
        .json(&json!({"tags": {"a": "b"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-ms-correlation-request-id").as_deref(),
        Some("my-correlation")
    );
    let routing = header(&response, "x-ms-routing-request-id").unwrap();
    assert!(routing.starts_with("WESTEUROPE:"), "{routing}");
    let vault: Value = response.json().await.unwrap();
    assert_eq!(vault["systemData"]["createdBy"], "someone");
    assert_eq!(vault["systemData"]["lastModifiedByType"], "ManagedIdentity");
    emulator.shutdown().await;
}

#[tokio::test]
async fn service_tag_details_pages_filter_and_drop_prefixes() {
    let emulator = start(tagfence_emulator::Config {
        service_tags: Some(support::fixture_bytes()),
        service_tags_page_size: Some(1000),
        ..config()
    })
    .await;
    let token = emulator.issue_token(ARM);
    let url = format!(
        "{}/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/serviceTagDetails",
        emulator.base_url()
    );
    let get = |url: String| client().get(url).bearer_auth(&token).send();
    let one: Value = get(with_query(
        &url,
        &[("api-version", "2026-03-01"), ("tagName", "azuredevops")],
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let tag = &one["value"][0];
    assert_eq!(one["value"].as_array().unwrap().len(), 1);
    assert_eq!(tag["name"], "AzureDevOps");
    assert_eq!(tag["serviceTagChangeNumber"], "365");
    assert_eq!(
        tag["properties"]["addressPrefixes"]
            .as_array()
            .unwrap()
            .len(),
        26
    );

    let mut seen = 0;
    let mut next = Some(with_query(
        &url,
        &[("api-version", "2025-05-01"), ("noAddressPrefixes", "true")],
    ));
    while let Some(link) = next {
        let page: Value = get(link).await.unwrap().json().await.unwrap();
        let values = page["values"]
            .as_array()
            .or(page["value"].as_array())
            .unwrap();
        assert!(values
            .iter()
            .all(|tag| tag["properties"].get("addressPrefixes").is_none()));
        seen += values.len();
        next = page["nextLink"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, 2967);
    let (status, code, _) = arm_error(
        get(with_query(&url, &[("api-version", "2021-08-01")]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "NoRegisteredProviderFound"));
    emulator.shutdown().await;
}

#[tokio::test]
async fn documented_property_refusals_apply_to_patch_and_put_and_a_create_gets_defaults() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    for body in [
        json!({"properties": {"enablePurgeProtection": false}}),
        json!({"properties": {"enableSoftDelete": false}}),
        json!({"properties": {"softDeleteRetentionInDays": 3}}),
        json!({"properties": {"publicNetworkAccess": "Bogus"}}),
        json!({"properties": {"networkAcls": {"virtualNetworkRules": [{"id": "/subscriptions/s/vnet"}]}}}),
        json!({"properties": {"networkAcls": {"ipRules": [{"value": "172.16.0.1"}]}}}),
    ] {
        let before = emulator.vault("kv-prod").unwrap();
        let (status, code, message) =
            arm_error(support::patch_vault(&emulator, "kv-prod", &token, &body).await).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "BadRequest"),
            "{body}: {message}"
        );
        assert_eq!(
            emulator.vault("kv-prod").unwrap(),
            before,
            "a refused write changes nothing"
        );
    }
    // Undocumented refusals are not made: duplicates, host bits, loopback (UNVERIFIED).
    let body = json!({"properties": {"networkAcls": {"ipRules": [
        {"value": "203.0.113.5/24"}, {"value": "203.0.113.5/24"}, {"value": "127.0.0.1"}]}}});
    let response = support::patch_vault(&emulator, "kv-build", &token, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        emulator.ip_rules("kv-build"),
        ["203.0.113.5/24", "203.0.113.5/24", "127.0.0.1/32"]
    );

    let url = format!(
        "{}/providers/Microsoft.KeyVault/vaults/kv-fresh?api-version={KV}",
        rg_url(&emulator.base_url(), "rg-secrets")
    );
    let mut no_soft_delete = new_vault("westeurope");
    no_soft_delete["properties"]["enableSoftDelete"] = json!(false);
    let (status, _, _) = arm_error(
        client()
            .put(&url)
            .bearer_auth(&token)
            .json(&no_soft_delete)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    let created: Value = client()
        .put(&url)
        .bearer_auth(&token)
        .json(&new_vault("westeurope"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["properties"]["enableSoftDelete"], true);
    assert_eq!(created["properties"]["softDeleteRetentionInDays"], 90);
    assert_eq!(created["properties"]["publicNetworkAccess"], "Enabled");
    // A PUT that leaves purge protection out does not turn it off.
    let mut put = new_vault("westeurope");
    put["properties"]["enablePurgeProtection"] = json!(true);
    client()
        .put(&url)
        .bearer_auth(&token)
        .json(&put)
        .send()
        .await
        .unwrap();
    let replaced: Value = client()
        .put(&url)
        .bearer_auth(&token)
        .json(&new_vault("westeurope"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replaced["properties"]["enablePurgeProtection"], true);
    emulator.shutdown().await;
}
