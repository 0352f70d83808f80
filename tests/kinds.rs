//! Storage accounts and container registries through the same engine as vaults: the real
//! binary against the emulator's Storage and Container Registry routes (their validation:
//! Storage refuses /31 and /32 ranges, a registry below Premium refuses rules), discovery of
//! every kind in one Resource Graph query, the Event Grid hook for a storage account, and a
//! just-in-time grant on one.

mod support;

use serde_json::{json, Value};
use support::host::HostDouble;
use support::kinds::{outcomes, registry, registry_id, report_of, storage, storage_id, tagged};
use support::*;
use tagfence_emulator::{Emulator, Route};

const PERSON: &str = "52.174.10.21";

fn firewall<'a>(resource: &'a Value, property: &str) -> &'a Value {
    &resource["properties"][property]
}

/// The firewall object without its IP rules: what every write must leave as it was.
fn rest_of(resource: &Value, property: &str) -> Value {
    let mut rest = firewall(resource, property).clone();
    rest.as_object_mut().unwrap().remove("ipRules");
    rest
}

fn writes(emulator: &Emulator, route: Route) -> usize {
    emulator
        .requests()
        .iter()
        .filter(|r| r.route == route)
        .count()
}

async fn apply(emulator: &Emulator, args: &[&str]) -> (std::process::Output, Value) {
    let mut all = vec!["apply", "--output", "json"];
    all.extend_from_slice(args);
    let output = tagfence(emulator, &all, &[]).await;
    let report = report_of(&output);
    (output, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_account_gets_bare_addresses_keeps_every_other_field_and_is_in_sync_next_run() {
    let emulator = start(emulator_config(vec![storage("stprod", &[PERSON])])).await;
    let before = emulator.vault("stprod").unwrap();
    let id = storage_id("stprod");
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--tag",
            "AzureDevOps",
            "--static-rule",
            "52.1.2.3",
            "--static-rule",
            "52.1.2.4/31",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let vault = &report["vaults"][0];
    assert_eq!(vault["kind"], "storage_account", "{report:#}");
    assert_eq!(vault["outcome"]["status"], "applied", "{report:#}");
    assert_eq!(vault["plan"]["kind"], "storage_account");

    // The /31 went out as its two addresses, every single address bare: Storage refuses /31
    // and /32 ranges (the emulator would have answered 400).
    let mut expected: Vec<&str> = AZURE_DEVOPS.to_vec();
    expected.extend(["52.1.2.3", "52.1.2.4", "52.1.2.5", PERSON]);
    assert_eq!(rules_of(&emulator, "stprod"), sorted(&expected));
    let after = emulator.vault("stprod").unwrap();
    for entry in firewall(&after, "networkAcls")["ipRules"]
        .as_array()
        .unwrap()
    {
        let value = entry["value"].as_str().unwrap();
        assert!(
            !value.ends_with("/32") && !value.ends_with("/31"),
            "{value}"
        );
        assert_eq!(entry["action"], "Allow");
    }
    // bypass, defaultAction, the vnet and resource instance rules: as they were.
    assert_eq!(
        rest_of(&after, "networkAcls"),
        rest_of(&before, "networkAcls")
    );
    assert_eq!(writes(&emulator, Route::StorageAccountPatch), 1);

    // The second run writes nothing.
    emulator.clear_requests();
    let (output, report) = apply(
        &emulator,
        &[
            "--vault",
            &id,
            "--tag",
            "AzureDevOps",
            "--static-rule",
            "52.1.2.3",
            "--static-rule",
            "52.1.2.4/31",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        report["vaults"][0]["outcome"]["status"], "in_sync",
        "{report:#}"
    );
    assert_eq!(writes(&emulator, Route::StorageAccountPatch), 0);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_account_is_told_when_a_selected_tag_is_in_its_own_region() {
    let emulator = start(emulator_config(vec![storage("stwest", &[])])).await;
    let id = storage_id("stwest");
    let output = tagfence(
        &emulator,
        &[
            "apply",
            "--dry-run",
            "--output",
            "json",
            "--resource",
            &id,
            "--tag",
            "AzureCloud.westeurope",
            "--fit",
            "summarize",
        ],
        &[],
    )
    .await;
    let report = report_of(&output);
    let vault = &report["vaults"][0];
    assert_eq!(vault["outcome"]["status"], "would_apply", "{report:#}");
    // Summarised into the kind's own 400 rules.
    let plan = &vault["plan"];
    assert!(plan["max_rules"].as_u64().unwrap() <= 400, "{plan:#}");
    assert!(
        vault["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("selected tag AzureCloud.westeurope is in westeurope, the storage account's own region: requests from there reach it from private addresses")),
        "{vault:#}"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_premium_registry_is_written_under_its_network_rule_set_and_a_standard_one_refused() {
    let emulator = start(emulator_config(vec![
        registry("crprod", "Premium", &[PERSON]),
        registry("crbasic", "Standard", &[]),
    ]))
    .await;
    let before = emulator.vault("crprod").unwrap();
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &registry_id("crprod"),
            "--resource",
            &registry_id("crbasic"),
            "--tag",
            "AzureDevOps",
            "--static-rule",
            "52.1.2.3",
        ],
    )
    .await;
    // One refused: the run fails, the other is done.
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let find = |name: &str| {
        report["vaults"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()
            .clone()
    };
    let prod = find("crprod");
    assert_eq!(prod["kind"], "container_registry");
    assert_eq!(prod["outcome"]["status"], "applied", "{report:#}");
    let mut expected: Vec<&str> = AZURE_DEVOPS.to_vec();
    expected.extend(["52.1.2.3", PERSON]);
    assert_eq!(rules_of(&emulator, "crprod"), sorted(&expected));
    let after = emulator.vault("crprod").unwrap();
    assert_eq!(
        rest_of(&after, "networkRuleSet"),
        rest_of(&before, "networkRuleSet")
    );
    assert_eq!(
        after["properties"]["networkRuleBypassOptions"],
        "AzureServices"
    );

    let basic = find("crbasic");
    assert_eq!(basic["outcome"]["status"], "refused", "{report:#}");
    assert_eq!(
        basic["outcome"]["reason"],
        "the registry cannot hold IP rules: its tier is Standard; IP network rules are only available on Premium registries; nothing written"
    );
    assert!(emulator
        .requests()
        .iter()
        .all(|r| !(r.route == Route::RegistryPatch && r.vault.as_deref() == Some("crbasic"))));
    assert_eq!(writes(&emulator, Route::RegistryPatch), 1);

    // The text report names the kind of what is not a vault.
    let text = tagfence(
        &emulator,
        &[
            "apply",
            "--resource",
            &registry_id("crprod"),
            "--tag",
            "AzureDevOps",
            "--static-rule",
            "52.1.2.3",
        ],
        &[],
    )
    .await;
    assert!(
        stdout(&text).contains("== crprod (container registry): in sync."),
        "{}",
        stdout(&text)
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_every_kind_in_one_query() {
    let emulator = start(emulator_config(vec![
        tagged(vault("kv-found", &[]), "AzureDevOps"),
        tagged(storage("stfound", &[PERSON]), "AzureDevOps"),
        tagged(registry("crfound", "Premium", &[]), "AzureDevOps"),
        storage("stplain", &[]),
    ]))
    .await;
    let (output, report) = apply(&emulator, &["--discover-subscription", SUBSCRIPTION]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let found = outcomes(&report);
    assert_eq!(
        found,
        vec![
            (
                "crfound".into(),
                "container_registry".into(),
                "applied".into()
            ),
            ("kv-found".into(), "key_vault".into(), "applied".into()),
            ("stfound".into(), "storage_account".into(), "applied".into()),
        ]
    );
    assert_eq!(
        writes(&emulator, Route::ResourceGraph),
        1,
        "one Resource Graph query finds them all, with their firewalls"
    );
    assert!(rules_of(&emulator, "stplain").is_empty());
    let mut with_person: Vec<&str> = AZURE_DEVOPS.to_vec();
    with_person.push(PERSON);
    assert_eq!(rules_of(&emulator, "stfound"), sorted(&with_person));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_grid_hook_onboards_a_storage_account_the_moment_it_is_tagged() {
    let emulator = start(emulator_config(vec![storage("stnew", &[])])).await;
    let mut settings = emulator_env(&emulator);
    settings.retain(|(k, _)| k != "TAGFENCE_LOG");
    settings.push(("TAGFENCE_TAGS".into(), "AzureDevOps".into()));
    settings.push((
        "TAGFENCE_DISCOVER_SUBSCRIPTIONS".into(),
        SUBSCRIPTION.into(),
    ));
    let mut host = HostDouble::start(&settings).await;
    let id = storage_id("stnew");
    let event = json!({
        "topic": format!("/subscriptions/{SUBSCRIPTION}"),
        "subject": id,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-12-07T06:30:04.6117357Z",
        "id": "5db48cba-50a2-455a-93b4-de41a3b5b7f6",
        "data": {"resourceProvider": "Microsoft.Storage", "resourceUri": id,
                 "operationName": "Microsoft.Storage/storageAccounts/write", "status": "Succeeded"},
        "dataVersion": "2",
        "metadataVersion": "1"
    });
    let answer = host.invoke_event(&event, false).await;
    assert!(answer.succeeded(), "{}", answer.body);
    assert_eq!(
        answer.body["Logs"][0],
        "ignored a write to stnew: it is neither listed nor tagged 'tagfence'"
    );
    assert!(emulator.update_vault("stnew", |v| v["tags"] = json!({"tagfence": "azure-devops"})));
    let answer = host.invoke_event(&event, false).await;
    assert!(answer.succeeded(), "{}", answer.body);
    assert_eq!(answer.body["ReturnValue"]["outcome"]["status"], "applied");
    assert_eq!(answer.body["ReturnValue"]["kind"], "storage_account");
    assert_eq!(rules_of(&emulator, "stnew"), sorted(&AZURE_DEVOPS));

    // A storage write event naming a vault is not taken at its word.
    let mut lying = event.clone();
    lying["data"]["resourceUri"] = json!(vault_id("kv-none"));
    lying["subject"] = json!(vault_id("kv-none"));
    let answer = host.invoke_event(&lying, false).await;
    assert!(answer.succeeded(), "{}", answer.body);
    assert!(
        answer.body["Logs"][0]
            .as_str()
            .unwrap()
            .starts_with("ignored "),
        "{}",
        answer.body
    );
    host.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_on_a_storage_account_is_a_bare_address_and_goes_again() {
    let emulator = start(emulator_config(vec![storage("stgrant", &[PERSON])])).await;
    let before = emulator.vault("stgrant").unwrap();
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let state = state.to_str().unwrap();
    let id = storage_id("stgrant");
    let granted = tagfence(
        &emulator,
        &[
            "grant",
            "--resource",
            &id,
            "--ip",
            "52.9.9.9",
            "--ttl",
            "30m",
            "--state-dir",
            state,
            "--output",
            "json",
        ],
        &[],
    )
    .await;
    assert!(granted.status.success(), "{}", stderr(&granted));
    assert_eq!(
        rules_of(&emulator, "stgrant"),
        sorted(&["52.9.9.9", PERSON])
    );
    let revoked = tagfence(
        &emulator,
        &[
            "revoke",
            "--resource",
            &id,
            "--ip",
            "52.9.9.9",
            "--state-dir",
            state,
        ],
        &[],
    )
    .await;
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert_eq!(rules_of(&emulator, "stgrant"), sorted(&[PERSON]));
    let after = emulator.vault("stgrant").unwrap();
    assert_eq!(
        rest_of(&after, "networkAcls"),
        rest_of(&before, "networkAcls")
    );
    assert_eq!(writes(&emulator, Route::StorageAccountPatch), 2);
    emulator.shutdown().await;
}
