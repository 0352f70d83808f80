//! Adversarial tests of the claims about storage accounts and container registries (docs/kinds.md,
//! docs/configuration.md, README): written against the claims, not the code. Each test is named
//! after what it attacks. Three found a claim broken, now fixed (docs/reliability.md, K1–K3).
//!
//! Numbers in the comments (`claim 1`, …) are the claims of the brief these tests were written
//! from: 1 storage, 2 registry, 3 partial reads and answers about another resource, 4 ids, 5
//! discovery, 6 the Event Grid hook, 7 resources of one name, 8 grants, 9 same-region warning,
//! 10 reports naming the kind, 11 a registry's long-running update, 12 refusals change nothing.

mod support;

use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::host::HostDouble;
use support::kinds::{outcomes, registry, registry_id, report_of, storage, storage_id, tagged};
use support::*;
use tagfence_emulator::{Emulator, Fault, FaultKind, Route};

const PERSON: &str = "52.174.10.21";
const RG: &str = RESOURCE_GROUP;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn located(mut resource: Value, location: &str) -> Value {
    resource["location"] = json!(location);
    resource
}

/// The stored resource, serialised: what "byte for byte as it was" compares.
fn stored(emulator: &Emulator, id: &str) -> String {
    emulator
        .vault(id)
        .unwrap_or_else(|| panic!("{id} is stored"))
        .to_string()
}

fn firewall_of(emulator: &Emulator, id: &str, property: &str) -> Value {
    emulator.vault(id).unwrap()["properties"][property].clone()
}

/// The firewall object without its IP rules.
fn rest_of(emulator: &Emulator, id: &str, property: &str) -> Value {
    let mut rest = firewall_of(emulator, id, property);
    rest.as_object_mut().unwrap().remove("ipRules");
    rest
}

fn count(emulator: &Emulator, route: Route) -> usize {
    emulator
        .requests()
        .iter()
        .filter(|r| r.route == route)
        .count()
}

fn writes(emulator: &Emulator) -> usize {
    emulator
        .requests()
        .iter()
        .filter(|r| r.route.is_arm_write())
        .count()
}

fn fault(route: Route, name: &str, kind: FaultKind, count: u32) -> Fault {
    Fault {
        route: Some(route),
        vault: Some(name.to_owned()),
        kind,
        count,
    }
}

fn pass() -> FaultKind {
    FaultKind::Delay { ms: 0 }
}

async fn apply(emulator: &Emulator, args: &[&str]) -> (Output, Value) {
    apply_env(emulator, args, &[]).await
}

async fn apply_env(emulator: &Emulator, args: &[&str], env: &[(&str, &str)]) -> (Output, Value) {
    let mut all = vec!["apply", "--output", "json"];
    all.extend_from_slice(args);
    let output = tagfence(emulator, &all, env).await;
    let report = report_of(&output);
    (output, report)
}

fn resource_report<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["vaults"]
        .as_array()
        .unwrap_or_else(|| panic!("no vaults in {report:#}"))
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {report:#}"))
}

fn status_of<'a>(report: &'a Value, name: &str) -> &'a str {
    resource_report(report, name)["outcome"]["status"]
        .as_str()
        .unwrap_or("")
}

fn all_rules_valid_for_storage(emulator: &Emulator, id: &str) {
    for entry in firewall_of(emulator, id, "networkAcls")["ipRules"]
        .as_array()
        .unwrap()
    {
        let value = entry["value"].as_str().unwrap();
        assert!(
            !value.ends_with("/32") && !value.ends_with("/31"),
            "{value}"
        );
        assert_eq!(entry["action"], "Allow", "{entry}");
    }
}

fn write_file(scratch: &Scratch, name: &str, text: &str) -> PathBuf {
    let path = scratch.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Every JSON file under `dir`, recursively, with its path relative to `dir`.
fn json_files(dir: &std::path::Path) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Ok(value) = serde_json::from_str(&text) {
                    found.push((path.strip_prefix(dir).unwrap().display().to_string(), value));
                }
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// `n` distinct public single addresses in 52.180.x.y, as a person's rules.
fn person_rules(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("52.180.{}.{}", i / 200, 1 + i % 200))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Claim 1: storage accounts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_gets_a_static_slash32_bare_and_a_slash31_split_even_with_slash31_keep() {
    let emulator = start(emulator_config(vec![storage("stbare", &[PERSON])])).await;
    let id = storage_id("stbare");
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--tag",
            "AzureDevOps",
            "--static-rule",
            "52.1.2.3/32",
            "--static-rule",
            "52.1.2.6/31",
            "--slash31",
            "keep",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(status_of(&report, "stbare"), "applied", "{report:#}");
    let mut expected: Vec<&str> = AZURE_DEVOPS.to_vec();
    expected.extend(["52.1.2.3", "52.1.2.6", "52.1.2.7", PERSON]);
    assert_eq!(rules_of(&emulator, &id), sorted(&expected));
    all_rules_valid_for_storage(&emulator, &id);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_slash31_costs_two_rules_so_an_exact_fit_one_short_is_refused() {
    let emulator = start(emulator_config(vec![storage("stfit", &[])])).await;
    let id = storage_id("stfit");
    let before = stored(&emulator, &id);
    // 24 AzureDevOps prefixes + a /31 = 26 rules on a storage account; 25 is one short.
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--tag",
            "AzureDevOps",
            "--static-rule",
            "52.1.2.4/31",
            "--max-rules",
            "25",
        ],
    )
    .await;
    assert!(!output.status.success(), "{report:#}");
    assert_ne!(status_of(&report, "stfit"), "applied", "{report:#}");
    assert_eq!(count(&emulator, Route::StorageAccountPatch), 0);
    assert_eq!(stored(&emulator, &id), before, "claim 12: nothing changed");

    // 26 is exactly enough.
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--tag",
            "AzureDevOps",
            "--static-rule",
            "52.1.2.4/31",
            "--max-rules",
            "26",
        ],
    )
    .await;
    assert!(output.status.success(), "{report:#}\n{}", stderr(&output));
    assert_eq!(rules_of(&emulator, &id).len(), 26);
    all_rules_valid_for_storage(&emulator, &id);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_max_rules_1000_on_the_command_line_is_capped_at_400() {
    let emulator = start(emulator_config(vec![storage("stcap", &[])])).await;
    let id = storage_id("stcap");
    let before = stored(&emulator, &id);
    // AzureCloud.westeurope needs 413 rules exactly: more than a storage account's 400.
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--tag",
            "AzureCloud.westeurope",
            "--max-rules",
            "1000",
        ],
    )
    .await;
    assert!(!output.status.success(), "{report:#}");
    let vault = resource_report(&report, "stcap");
    assert_eq!(vault["outcome"]["status"], "refused", "{vault:#}");
    assert_eq!(count(&emulator, Route::StorageAccountPatch), 0);
    assert_eq!(stored(&emulator, &id), before);

    // Summarised instead: at most 400 rules go out, whatever --max-rules says.
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--tag",
            "AzureCloud.westeurope",
            "--max-rules",
            "1000",
            "--fit",
            "summarize",
        ],
    )
    .await;
    assert!(output.status.success(), "{report:#}\n{}", stderr(&output));
    let rules = rules_of(&emulator, &id);
    assert!(!rules.is_empty() && rules.len() <= 400, "{}", rules.len());
    all_rules_valid_for_storage(&emulator, &id);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_max_rules_1000_in_a_resource_entry_of_the_file_is_capped_at_400() {
    let emulator = start(emulator_config(vec![storage("stfile", &[])])).await;
    let id = storage_id("stfile");
    let before = stored(&emulator, &id);
    let scratch = Scratch::new();
    let config = write_file(
        &scratch,
        "tagfence.toml",
        &format!(
            "[defaults]\ntags = [\"AzureDevOps\"]\n\n[[resource]]\nid = \"{id}\"\ntags = [\"AzureCloud.westeurope\"]\nmax_rules = 1000\n"
        ),
    );
    let (output, report) = apply(&emulator, &["--config", config.to_str().unwrap()]).await;
    assert!(!output.status.success(), "{report:#}");
    assert_eq!(status_of(&report, "stfile"), "refused", "{report:#}");
    assert_eq!(count(&emulator, Route::StorageAccountPatch), 0);
    assert_eq!(stored(&emulator, &id), before);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_a_persons_rules_count_within_the_400_of_a_summarized_fit() {
    let people = person_rules(120);
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    let emulator = start(emulator_config(vec![storage("stfull", &refs)])).await;
    let id = storage_id("stfull");
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--tag",
            "AzureCloud.westeurope",
            "--fit",
            "summarize",
        ],
    )
    .await;
    assert!(output.status.success(), "{report:#}\n{}", stderr(&output));
    let rules = rules_of(&emulator, &id);
    assert!(rules.len() <= 400, "{} rules", rules.len());
    for person in &people {
        assert!(rules.contains(person), "a person's {person} was dropped");
    }
    all_rules_valid_for_storage(&emulator, &id);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_every_other_field_of_network_acls_goes_back_exactly_as_read() {
    let emulator = start(emulator_config(vec![storage("stfields", &[PERSON])])).await;
    let id = storage_id("stfields");
    // Fields tagfence has never heard of, inside and beside the rule set.
    assert!(emulator.update_vault(&id, |account| {
        let acls = &mut account["properties"]["networkAcls"];
        acls["futureFirewallFeature"] = json!({"mode": "Strict", "list": [1, 2, 3]});
        acls["ipv6Rules"] = json!([
            {"value": "2603:1020:206::/48", "action": "Allow"},
            {"value": "2001:4898::/32", "action": "Allow"}
        ]);
        acls["bypass"] = json!("Metrics, AzureServices");
    }));
    let before = rest_of(&emulator, &id, "networkAcls");
    let properties_before = {
        let mut p = emulator.vault(&id).unwrap()["properties"].clone();
        p.as_object_mut().unwrap().remove("networkAcls");
        p
    };
    let (output, report) = apply(&emulator, &["--resource", &id, "--tag", "AzureDevOps"]).await;
    assert!(output.status.success(), "{report:#}\n{}", stderr(&output));
    assert_eq!(status_of(&report, "stfields"), "applied", "{report:#}");
    assert_eq!(rest_of(&emulator, &id, "networkAcls"), before);
    let mut properties_after = emulator.vault(&id).unwrap()["properties"].clone();
    properties_after
        .as_object_mut()
        .unwrap()
        .remove("networkAcls");
    // The emulator stamps provisioningState on every write (the service's own).
    properties_after
        .as_object_mut()
        .unwrap()
        .remove("provisioningState");
    assert_eq!(properties_after, properties_before);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_a_persons_rule_equal_to_a_tag_range_survives_the_tag_leaving() {
    // The person's 20.37.158.0/23 was there before tagfence; AzureDevOps holds it too.
    let emulator = start(emulator_config(vec![storage(
        "stkeep",
        &[PERSON, "20.37.158.0/23"],
    )]))
    .await;
    let id = storage_id("stkeep");
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let state = state.to_str().unwrap();
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--tag",
            "AzureDevOps",
            "--state-dir",
            state,
        ],
    )
    .await;
    assert!(output.status.success(), "{report:#}\n{}", stderr(&output));
    // The tag leaves the selection: tagfence takes back its own 23, never the person's two.
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--static-rule",
            "52.1.2.3",
            "--state-dir",
            state,
            "--max-remove-fraction",
            "1",
        ],
    )
    .await;
    assert!(output.status.success(), "{report:#}\n{}", stderr(&output));
    assert_eq!(
        rules_of(&emulator, &id),
        sorted(&[PERSON, "20.37.158.0/23", "52.1.2.3"])
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_second_run_with_state_writes_nothing() {
    let emulator = start(emulator_config(vec![storage("stsecond", &[PERSON])])).await;
    let id = storage_id("stsecond");
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let args = [
        "--resource",
        &id,
        "--tag",
        "AzureDevOps",
        "--static-rule",
        "52.1.2.3/32",
        "--static-rule",
        "52.1.2.4/31",
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let (output, _) = apply(&emulator, &args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let after_first = stored(&emulator, &id);
    for run in 2..=3 {
        emulator.clear_requests();
        let (output, report) = apply(&emulator, &args).await;
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(
            status_of(&report, "stsecond"),
            "in_sync",
            "run {run}: {report:#}"
        );
        assert_eq!(writes(&emulator), 0, "run {run}");
        assert_eq!(stored(&emulator, &id), after_first);
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_verify_notices_resource_access_rules_or_ipv6_rules_lost_by_the_write() {
    // The PATCH's answer, and the read that verifies it, show a field of the account's rule set
    // that tagfence must send back exactly as something else: the write is not verified.
    for (field, shown) in [
        ("resourceAccessRules", json!([])),
        ("ipv6Rules", json!([])),
        ("virtualNetworkRules", json!([])),
        ("bypass", json!("None")),
    ] {
        let emulator = start(emulator_config(vec![storage("stverify", &[PERSON])])).await;
        let id = storage_id("stverify");
        let pointer = format!("/properties/networkAcls/{field}");
        emulator.add_fault(fault(
            Route::StorageAccountPatch,
            "stverify",
            FaultKind::set_field(&pointer, shown.clone()),
            1,
        ));
        emulator.add_fault(fault(Route::StorageAccountGet, "stverify", pass(), 2));
        emulator.add_fault(fault(
            Route::StorageAccountGet,
            "stverify",
            FaultKind::set_field(&pointer, shown.clone()),
            5,
        ));
        let (output, report) = apply(&emulator, &["--resource", &id, "--tag", "AzureDevOps"]).await;
        assert_ne!(
            status_of(&report, "stverify"),
            "applied",
            "{field}: a write read back with {field} = {shown} was taken as verified: {report:#}"
        );
        assert!(!output.status.success(), "{field}");
        emulator.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_re_read_before_the_write_is_gated_too() {
    // The first read is whole; the re-read just before the write lacks the vnet rules.
    let emulator = start(emulator_config(vec![storage("streread", &[PERSON])])).await;
    let id = storage_id("streread");
    let before = stored(&emulator, &id);
    emulator.add_fault(fault(Route::StorageAccountGet, "streread", pass(), 1));
    emulator.add_fault(fault(
        Route::StorageAccountGet,
        "streread",
        FaultKind::remove_fields(&["/properties/networkAcls/virtualNetworkRules"]),
        10,
    ));
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--tag",
            "AzureDevOps",
            "--observe",
            "arm",
        ],
    )
    .await;
    assert!(!output.status.success(), "{report:#}");
    assert_eq!(
        count(&emulator, Route::StorageAccountPatch),
        0,
        "{report:#}"
    );
    assert_eq!(stored(&emulator, &id), before);
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Claim 2: container registries
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_max_rules_1000_is_capped_at_100() {
    let emulator = start(emulator_config(vec![registry("crcap", "Premium", &[])])).await;
    let id = registry_id("crcap");
    let before = stored(&emulator, &id);
    // AzureCloud.koreacentral needs 110 rules: more than a registry's 100 (the emulator takes 200).
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--tag",
            "AzureCloud.koreacentral",
            "--max-rules",
            "1000",
        ],
    )
    .await;
    assert!(!output.status.success(), "{report:#}");
    assert_eq!(status_of(&report, "crcap"), "refused", "{report:#}");
    assert_eq!(count(&emulator, Route::RegistryPatch), 0);
    assert_eq!(stored(&emulator, &id), before);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_max_rules_200_in_the_file_is_capped_at_100() {
    let emulator = start(emulator_config(vec![registry("crfile", "Premium", &[])])).await;
    let id = registry_id("crfile");
    let before = stored(&emulator, &id);
    let scratch = Scratch::new();
    let config = write_file(
        &scratch,
        "tagfence.toml",
        &format!(
            "resources = [\"{id}\"]\n\n[defaults]\ntags = [\"AzureCloud.koreacentral\"]\nmax_rules = 200\n"
        ),
    );
    let (output, report) = apply(&emulator, &["--config", config.to_str().unwrap()]).await;
    assert!(!output.status.success(), "{report:#}");
    assert_eq!(status_of(&report, "crfile"), "refused", "{report:#}");
    assert_eq!(count(&emulator, Route::RegistryPatch), 0);
    assert_eq!(stored(&emulator, &id), before);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_summarized_fit_keeps_a_persons_rules_within_100() {
    let people = person_rules(30);
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    let emulator = start(emulator_config(vec![registry("crsum", "Premium", &refs)])).await;
    let id = registry_id("crsum");
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--tag",
            "AzureCloud.koreacentral",
            "--fit",
            "summarize",
            "--max-rules",
            "1000",
        ],
    )
    .await;
    assert!(output.status.success(), "{report:#}\n{}", stderr(&output));
    let rules = rules_of(&emulator, &id);
    assert!(rules.len() <= 100, "{} rules on a registry", rules.len());
    for person in &people {
        assert!(rules.contains(person), "{person} dropped");
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_static_slash32_goes_bare_and_a_persons_slash32_stays_as_spelled() {
    let emulator = start(emulator_config(vec![registry(
        "crspell",
        "Premium",
        &["52.174.10.22/32"],
    )]))
    .await;
    let id = registry_id("crspell");
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--tag",
            "AzureDevOps",
            "--static-rule",
            "52.1.2.3/32",
        ],
    )
    .await;
    assert!(output.status.success(), "{report:#}\n{}", stderr(&output));
    let mut expected: Vec<&str> = AZURE_DEVOPS.to_vec();
    expected.extend(["52.1.2.3", "52.174.10.22/32"]);
    assert_eq!(rules_of(&emulator, &id), sorted(&expected));
    for entry in firewall_of(&emulator, &id, "networkRuleSet")["ipRules"]
        .as_array()
        .unwrap()
    {
        assert_eq!(entry["action"], "Allow");
    }
    emulator.shutdown().await;
}

async fn registry_below_premium_refused_for_its_tier(extra: &[&str]) {
    for sku in ["Basic", "Standard"] {
        let emulator = start(emulator_config(vec![registry("crlow", sku, &[PERSON])])).await;
        let id = registry_id("crlow");
        let before = stored(&emulator, &id);
        let mut args = vec!["--resource", &id, "--tag", "AzureDevOps"];
        args.extend_from_slice(extra);
        let (output, report) = apply(&emulator, &args).await;
        assert_eq!(output.status.code(), Some(2), "{sku}: {}", stderr(&output));
        let vault = resource_report(&report, "crlow");
        assert_eq!(vault["outcome"]["status"], "refused", "{vault:#}");
        let reason = vault["outcome"]["reason"].as_str().unwrap_or("");
        assert!(
            reason.starts_with(&format!(
                "the registry cannot hold IP rules: its tier is {sku}"
            )),
            "{reason}"
        );
        assert_eq!(writes(&emulator), 0);
        assert_eq!(stored(&emulator, &id), before);
        emulator.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_below_premium_is_refused_naming_its_tier_with_nothing_written() {
    registry_below_premium_refused_for_its_tier(&[]).await;
}

/// With `--prune`, the person's rule would go: the refusal must still name the tier (the one
/// thing no rerun can get past), not send the operator to raise `--max-remove-fraction`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_below_premium_with_prune_is_refused_for_its_tier_not_for_removals() {
    registry_below_premium_refused_for_its_tier(&["--prune"]).await;
}

/// Runs an apply of `id` whose write is held at the gate `gate`, lets `edit` act on the stored
/// resource meanwhile, then lets the write go.
async fn apply_with_write_held(
    emulator: &Emulator,
    route: Route,
    name: &str,
    args: Vec<String>,
    edit: impl FnOnce(&Emulator),
) -> Output {
    let mut all = vec!["apply".to_owned(), "--output".into(), "json".into()];
    all.extend(args);
    command_with_write_held(emulator, route, name, all, edit).await
}

/// Runs the binary with `all` (the whole command line) while its write on `route` is held.
async fn command_with_write_held(
    emulator: &Emulator,
    route: Route,
    name: &str,
    all: Vec<String>,
    edit: impl FnOnce(&Emulator),
) -> Output {
    emulator.add_fault(fault(route, name, FaultKind::hold("write"), 1));
    let env = emulator_env(emulator);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tagfence"));
    command.args(&all).current_dir(repo("")).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        emulator.wait_held("write", Duration::from_secs(20)).await,
        "the write never came"
    );
    edit(emulator);
    assert_eq!(emulator.release("write"), 1);
    child.wait_with_output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_write_never_sends_network_rule_bypass_options_nor_public_network_access() {
    let emulator = start(emulator_config(vec![registry("crbypass", "Premium", &[])])).await;
    let id = registry_id("crbypass");
    // While the PATCH waits, a person switches trusted services off and public access to
    // Disabled: a write that sent the properties it read would switch them back.
    let output = apply_with_write_held(
        &emulator,
        Route::RegistryPatch,
        "crbypass",
        vec![
            "--resource".into(),
            id.clone(),
            "--tag".into(),
            "AzureDevOps".into(),
        ],
        |emulator| {
            assert!(emulator.update_vault(&id, |r| {
                r["properties"]["networkRuleBypassOptions"] = json!("None");
                r["properties"]["adminUserEnabled"] = json!(true);
            }));
        },
    )
    .await;
    let after = emulator.vault(&id).unwrap();
    assert_eq!(
        after["properties"]["networkRuleBypassOptions"],
        "None",
        "networkRuleBypassOptions was sent: {}",
        stderr(&output)
    );
    assert_eq!(after["properties"]["adminUserEnabled"], true);
    assert_eq!(count(&emulator, Route::RegistryPatch), 1);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_grants_cannot_push_a_full_registry_past_100_rules() {
    // 24 AzureDevOps rules + 76 of a person's: the registry is full at 100.
    let people = person_rules(76);
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    let emulator = start(emulator_config(vec![registry(
        "crgrantfull",
        "Premium",
        &refs,
    )]))
    .await;
    let id = registry_id("crgrantfull");
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let state = state.to_str().unwrap();
    let (output, _) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--tag",
            "AzureDevOps",
            "--state-dir",
            state,
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(rules_of(&emulator, &id).len(), 100);
    let before = stored(&emulator, &id);
    emulator.clear_requests();
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
            "--grant-max-per-vault",
            "1000",
            "--output",
            "json",
        ],
        &[],
    )
    .await;
    assert!(!granted.status.success(), "{}", stdout(&granted));
    assert!(
        format!("{}{}", stdout(&granted), stderr(&granted)).contains("over its limit of 100"),
        "{}",
        stdout(&granted)
    );
    assert_eq!(count(&emulator, Route::RegistryPatch), 0);
    assert_eq!(stored(&emulator, &id), before);
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Claim 3: partial reads, answers about another resource
// ---------------------------------------------------------------------------------------------

async fn never_written_from(
    emulator: &Emulator,
    id: &str,
    name: &str,
    route: Route,
    what: &str,
    kind: FaultKind,
) {
    let before = stored(emulator, id);
    emulator.clear_requests();
    emulator.clear_faults();
    emulator.add_fault(fault(route, name, kind, 50));
    let (output, report) = apply(
        emulator,
        &["--resource", id, "--tag", "AzureDevOps", "--observe", "arm"],
    )
    .await;
    emulator.clear_faults();
    assert_eq!(
        writes(emulator),
        0,
        "{what}: written from a read that {what}: {report:#}"
    );
    assert!(!output.status.success(), "{what}: {report:#}");
    assert_ne!(status_of(&report, name), "in_sync", "{what}: {report:#}");
    assert_eq!(stored(emulator, id), before, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_partial_reads_are_never_taken_for_an_empty_firewall() {
    let emulator = start(emulator_config(vec![storage("stpartial", &[PERSON])])).await;
    let id = storage_id("stpartial");
    let acls = "/properties/networkAcls";
    let cases: Vec<(String, FaultKind)> = vec![
        (
            "lacks networkAcls".into(),
            FaultKind::remove_fields(&[acls]),
        ),
        (
            "has networkAcls null".into(),
            FaultKind::null_fields(&[acls]),
        ),
        (
            "has networkAcls {}".into(),
            FaultKind::set_field(acls, json!({})),
        ),
        (
            "lacks ipRules".into(),
            FaultKind::remove_fields(&["/properties/networkAcls/ipRules"]),
        ),
        (
            "has ipRules null".into(),
            FaultKind::null_fields(&["/properties/networkAcls/ipRules"]),
        ),
        (
            "lacks bypass".into(),
            FaultKind::remove_fields(&["/properties/networkAcls/bypass"]),
        ),
        (
            "has bypass null".into(),
            FaultKind::null_fields(&["/properties/networkAcls/bypass"]),
        ),
        (
            "lacks virtualNetworkRules".into(),
            FaultKind::remove_fields(&["/properties/networkAcls/virtualNetworkRules"]),
        ),
        (
            "has virtualNetworkRules null".into(),
            FaultKind::null_fields(&["/properties/networkAcls/virtualNetworkRules"]),
        ),
        (
            "lacks defaultAction".into(),
            FaultKind::remove_fields(&["/properties/networkAcls/defaultAction"]),
        ),
        (
            "has defaultAction null".into(),
            FaultKind::null_fields(&["/properties/networkAcls/defaultAction"]),
        ),
        (
            "lacks properties".into(),
            FaultKind::remove_fields(&["/properties"]),
        ),
        (
            "holds a registry's networkRuleSet instead".into(),
            FaultKind::Reshape {
                remove: vec![acls.into()],
                null: vec![],
                set: vec![(
                    "/properties/networkRuleSet".into(),
                    json!({"defaultAction": "Deny", "ipRules": []}),
                )],
            },
        ),
    ];
    for (what, kind) in cases {
        never_written_from(
            &emulator,
            &id,
            "stpartial",
            Route::StorageAccountGet,
            &what,
            kind,
        )
        .await;
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_partial_reads_are_never_taken_for_an_empty_firewall() {
    let emulator = start(emulator_config(vec![registry(
        "crpartial",
        "Premium",
        &[PERSON],
    )]))
    .await;
    let id = registry_id("crpartial");
    let set = "/properties/networkRuleSet";
    let cases: Vec<(String, FaultKind)> = vec![
        (
            "lacks networkRuleSet".into(),
            FaultKind::remove_fields(&[set]),
        ),
        (
            "has networkRuleSet null".into(),
            FaultKind::null_fields(&[set]),
        ),
        (
            "has networkRuleSet {}".into(),
            FaultKind::set_field(set, json!({})),
        ),
        (
            "lacks ipRules".into(),
            FaultKind::remove_fields(&["/properties/networkRuleSet/ipRules"]),
        ),
        (
            "has ipRules null".into(),
            FaultKind::null_fields(&["/properties/networkRuleSet/ipRules"]),
        ),
        (
            "lacks defaultAction".into(),
            FaultKind::remove_fields(&["/properties/networkRuleSet/defaultAction"]),
        ),
        (
            "holds a storage account's networkAcls instead".into(),
            FaultKind::Reshape {
                remove: vec![set.into()],
                null: vec![],
                set: vec![(
                    "/properties/networkAcls".into(),
                    json!({"defaultAction": "Deny", "bypass": "None", "ipRules": [], "virtualNetworkRules": []}),
                )],
            },
        ),
    ];
    for (what, kind) in cases {
        never_written_from(&emulator, &id, "crpartial", Route::RegistryGet, &what, kind).await;
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_about_another_resource_or_kind_is_never_planned_from() {
    let emulator = start(emulator_config(vec![
        storage("stasked", &[PERSON]),
        storage("stother", &[]),
        registry("crasked", "Premium", &[PERSON]),
    ]))
    .await;
    let asked = storage_id("stasked");
    let other_storage = emulator.vault(&storage_id("stother")).unwrap();
    let cases: Vec<(String, FaultKind)> = vec![
        (
            "is another account's".into(),
            FaultKind::replace_body(other_storage.clone()),
        ),
        (
            "names another account's id".into(),
            FaultKind::set_field("/id", json!(storage_id("stother"))),
        ),
        (
            "is of another type".into(),
            FaultKind::set_field("/type", json!("Microsoft.KeyVault/vaults")),
        ),
        (
            "names a registry's id".into(),
            FaultKind::set_field("/id", json!(registry_id("stasked"))),
        ),
        (
            "names another resource group".into(),
            FaultKind::set_field(
                "/id",
                json!(storage_id("stasked").replace(RG, "rg-elsewhere")),
            ),
        ),
    ];
    for (what, kind) in cases {
        never_written_from(
            &emulator,
            &asked,
            "stasked",
            Route::StorageAccountGet,
            &what,
            kind,
        )
        .await;
    }
    let registry_cases: Vec<(String, FaultKind)> = vec![
        (
            "is of a storage account's type".into(),
            FaultKind::set_field("/type", json!("Microsoft.Storage/storageAccounts")),
        ),
        (
            "names a storage account's id".into(),
            FaultKind::set_field("/id", json!(storage_id("crasked"))),
        ),
    ];
    for (what, kind) in registry_cases {
        never_written_from(
            &emulator,
            &registry_id("crasked"),
            "crasked",
            Route::RegistryGet,
            &what,
            kind,
        )
        .await;
    }
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Claim 4: ids
// ---------------------------------------------------------------------------------------------

/// A run refused on its configuration: exit 2, the message on stderr, and not one request.
async fn refused_configuration(emulator: &Emulator, args: &[&str], env: &[(&str, &str)]) -> String {
    emulator.clear_requests();
    let mut all = vec!["apply", "--dry-run", "--tag", "AzureDevOps"];
    all.extend_from_slice(args);
    let output = tagfence(emulator, &all, env).await;
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {text}");
    assert!(
        text.contains("reading the configuration"),
        "{args:?} {env:?}: {text}"
    );
    assert!(
        emulator.requests().iter().all(|r| !r.route.is_arm()),
        "{args:?} {env:?}: Azure was asked before the configuration was checked"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_of_every_kind_are_taken_by_every_name_with_the_kind_of_their_type() {
    let emulator = start(emulator_config(vec![
        storage("stany", &[]),
        registry("crany", "Premium", &[]),
        vault("kv-any", &[]),
    ]))
    .await;
    let scratch = Scratch::new();
    let st = storage_id("stany");
    let cr = registry_id("crany");
    let kv = vault_id("kv-any");
    let st_and_cr = format!("{st},{cr}");
    let file = write_file(
        &scratch,
        "one.toml",
        &format!(
            "vaults = [\"{st}\"]\n\n[[resource]]\nid = \"{cr}\"\n\n[[vault]]\nid = \"{kv}\"\n"
        ),
    );
    let file2 = write_file(
        &scratch,
        "two.toml",
        &format!("resources = [\"{cr}\", \"{kv}\"]\n\n[[vault]]\nid = \"{st}\"\n"),
    );
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            vec!["--vault", &st, "--vault", &cr, "--resource", &kv],
            vec![],
        ),
        (
            vec![],
            vec![
                ("TAGFENCE_VAULTS", st_and_cr.as_str()),
                ("TAGFENCE_RESOURCES", kv.as_str()),
            ],
        ),
        (vec!["--config", file.to_str().unwrap()], vec![]),
        (vec!["--config", file2.to_str().unwrap()], vec![]),
    ];
    for (args, env) in cases {
        let mut all = vec!["--dry-run", "--tag", "AzureDevOps"];
        all.extend(args.iter().copied());
        let (output, report) = apply_env(&emulator, &all, &env).await;
        assert!(
            output.status.success(),
            "{args:?} {env:?}: {}",
            stderr(&output)
        );
        let mut kinds: Vec<(String, String)> = report["vaults"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_owned(),
                    v["kind"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            vec![
                ("crany".to_owned(), "container_registry".to_owned()),
                ("kv-any".to_owned(), "key_vault".to_owned()),
                ("stany".to_owned(), "storage_account".to_owned()),
            ],
            "{args:?} {env:?}"
        );
    }
    assert_eq!(writes(&emulator), 0, "dry runs");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_listed_twice_in_another_case_under_another_name_is_refused_naming_both() {
    let emulator = start(emulator_config(vec![storage("sttwice", &[])])).await;
    let scratch = Scratch::new();
    let id = storage_id("sttwice");
    let lower = id.to_ascii_lowercase();
    let upper = id.replace(
        "Microsoft.Storage/storageAccounts",
        "MICROSOFT.STORAGE/STORAGEACCOUNTS",
    );
    let file = write_file(
        &scratch,
        "twice.toml",
        &format!(
            "resources = [\"{id}\"]\n\n[[resource]]\nid = \"{lower}\"\ntags = [\"AzureDevOps\"]\n"
        ),
    );
    let file_once = write_file(&scratch, "once.toml", &format!("vaults = [\"{upper}\"]\n"));

    let text = refused_configuration(&emulator, &["--resource", &id, "--vault", &lower], &[]).await;
    assert!(
        text.contains("--resource") && text.contains("--vault"),
        "{text}"
    );

    let text = refused_configuration(
        &emulator,
        &[],
        &[("TAGFENCE_RESOURCES", &id), ("TAGFENCE_VAULTS", &upper)],
    )
    .await;
    assert!(
        text.contains("TAGFENCE_RESOURCES") && text.contains("TAGFENCE_VAULTS"),
        "{text}"
    );

    let text = refused_configuration(&emulator, &["--config", file.to_str().unwrap()], &[]).await;
    assert!(
        text.contains("resources") && text.contains("[[resource]]"),
        "{text}"
    );

    let text = refused_configuration(
        &emulator,
        &[
            "--config",
            file_once.to_str().unwrap(),
            "--resource",
            &lower,
        ],
        &[],
    )
    .await;
    assert!(
        text.contains("vaults") && text.contains("--resource"),
        "{text}"
    );

    // Twice in one list too.
    let text = refused_configuration(
        &emulator,
        &[],
        &[("TAGFENCE_RESOURCES", &*format!("{id},{upper}"))],
    )
    .await;
    assert!(text.contains("TAGFENCE_RESOURCES"), "{text}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ids_and_unsupported_types_are_refused_naming_what_is_allowed() {
    let emulator = start(emulator_config(vec![storage("stok", &[])])).await;
    let allowed =
        "Microsoft.KeyVault/vaults, Microsoft.Storage/storageAccounts or Microsoft.ContainerRegistry/registries";
    let base = format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers");
    for id in [
        format!("{base}/Microsoft.Sql/servers/sqlprod"),
        format!("{base}/Microsoft.Storage/storageAccounts/stok/blobServices/default"),
        format!("{base}/Microsoft.ContainerRegistry/registries"),
        format!("{base}/Microsoft.Storage/blobs/stok"),
        format!("/subscriptions/not-a-guid/resourceGroups/{RG}/providers/Microsoft.Storage/storageAccounts/stok"),
        "stok".to_owned(),
        format!("{base}/Microsoft.DocumentDB/databaseAccounts/cosmosprod"),
    ] {
        for name in ["--resource", "--vault"] {
            let text = refused_configuration(&emulator, &[name, &id], &[]).await;
            assert!(text.contains(&id), "{id}: {text}");
            if !id.contains("not-a-guid") {
                assert!(text.contains(allowed), "{id}: {text}");
            }
        }
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_checked_by_the_rules_of_their_own_kind() {
    let emulator = start(emulator_config(vec![])).await;
    let st = |n: &str| storage_id(n);
    let cr = |n: &str| registry_id(n);
    let kv = |n: &str| vault_id(n);
    let refused = [
        st("st-prod"),
        st("StProd"),
        st("st_prod"),
        st("ab"),
        st(&"a".repeat(25)),
        cr("cr-prod"),
        cr("cr_prod"),
        cr("abcd"),
        cr(&"a".repeat(51)),
        kv("kv_prod"),
        kv("kv.prod"),
        kv("ab"),
        kv(&"a".repeat(25)),
    ];
    for id in &refused {
        let text = refused_configuration(&emulator, &["--resource", id], &[]).await;
        assert!(text.contains(id.as_str()), "{id}: {text}");
    }
    // Accepted: the run goes on to Azure (where these do not exist).
    let accepted = [
        st("abc"),
        st(&"a1".repeat(12)),
        cr("abcde"),
        cr("CrProd01"),
        cr(&"a".repeat(50)),
        kv("abc"),
        kv("kv-prod-01"),
        kv(&"k".repeat(24)),
    ];
    for id in &accepted {
        emulator.clear_requests();
        let output = tagfence(
            &emulator,
            &[
                "apply",
                "--dry-run",
                "--tag",
                "AzureDevOps",
                "--resource",
                id,
            ],
            &[],
        )
        .await;
        let text = stderr(&output);
        assert!(
            !text.contains("reading the configuration"),
            "{id} refused: {text}"
        );
        assert!(
            emulator.requests().iter().any(|r| r.route.is_resource()),
            "{id}: never read"
        );
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_spelled_in_lower_case_keeps_its_kind() {
    let emulator = start(emulator_config(vec![storage("stlower", &[])])).await;
    let id = storage_id("stlower").to_ascii_lowercase();
    let (output, report) = apply(&emulator, &["--resource", &id, "--tag", "AzureDevOps"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        resource_report(&report, "stlower")["kind"],
        "storage_account"
    );
    assert_eq!(rules_of(&emulator, "stlower"), sorted(&AZURE_DEVOPS));
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Claim 5: discovery and kinds
// ---------------------------------------------------------------------------------------------

fn triple(name: &str, kind: &str, status: &str) -> (String, String, String) {
    (name.to_owned(), kind.to_owned(), status.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_limits_discovery_but_never_a_listed_resource() {
    let emulator = start(emulator_config(vec![
        tagged(vault("kv-tagged", &[]), "AzureDevOps"),
        tagged(storage("sttagged", &[]), "AzureDevOps"),
        tagged(registry("crtagged", "Premium", &[]), "AzureDevOps"),
        registry("crlisted", "Premium", &[]),
        vault("kv-listed", &[]),
    ]))
    .await;
    let kv_before = stored(&emulator, &vault_id("kv-tagged"));
    let cr_before = stored(&emulator, &registry_id("crtagged"));
    let (output, report) = apply(
        &emulator,
        &[
            "--discover-subscription",
            SUBSCRIPTION,
            "--kind",
            "storage_account",
            "--resource",
            &registry_id("crlisted"),
            "--vault",
            &vault_id("kv-listed"),
            "--tag",
            "AzureDevOps",
            // Listed resources are observed through ARM: the one query is discovery's.
            "--observe",
            "arm",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        outcomes(&report),
        vec![
            triple("crlisted", "container_registry", "applied"),
            triple("kv-listed", "key_vault", "applied"),
            triple("sttagged", "storage_account", "applied"),
        ]
    );
    assert_eq!(count(&emulator, Route::ResourceGraph), 1);
    assert_eq!(stored(&emulator, &vault_id("kv-tagged")), kv_before);
    assert_eq!(stored(&emulator, &registry_id("crtagged")), cr_before);
    assert!(emulator
        .requests()
        .iter()
        .all(|r| !matches!(r.vault.as_deref(), Some("kv-tagged" | "crtagged"))));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagfence_kinds_in_any_case_with_hyphens_limits_discovery() {
    let emulator = start(emulator_config(vec![
        tagged(vault("kv-tagged", &[]), "AzureDevOps"),
        tagged(storage("sttagged", &[]), "AzureDevOps"),
        tagged(registry("crtagged", "Premium", &[]), "AzureDevOps"),
    ]))
    .await;
    let (output, report) = apply_env(
        &emulator,
        &["--discover-subscription", SUBSCRIPTION],
        &[("TAGFENCE_KINDS", "Container-Registry,KEY_VAULT")],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        outcomes(&report),
        vec![
            triple("crtagged", "container_registry", "applied"),
            triple("kv-tagged", "key_vault", "applied"),
        ]
    );
    assert_eq!(count(&emulator, Route::ResourceGraph), 1);
    assert!(rules_of(&emulator, "sttagged").is_empty());
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_never_manages_a_resource_of_a_kind_not_enabled_that_the_index_returns() {
    // The index answers with every tagged resource whatever the query asked (a lying or
    // misparsed filter): the vault is of a kind not enabled and must be left alone.
    let emulator = start(emulator_config(vec![
        tagged(vault("kv-tagged", &[]), "AzureDevOps"),
        tagged(storage("sttagged", &[]), "AzureDevOps"),
    ]))
    .await;
    let kv_before = stored(&emulator, &vault_id("kv-tagged"));
    // First learn the shape of the answer for every kind, then serve it to a storage-only run.
    let (output, _) = apply(
        &emulator,
        &["--discover-subscription", SUBSCRIPTION, "--dry-run"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    emulator.clear_requests();
    // Resource Graph's answer for every kind, as the emulator gives it.
    let body = resource_graph_answer(&emulator).await;
    emulator.add_fault(Fault {
        route: Some(Route::ResourceGraph),
        vault: None,
        kind: FaultKind::replace_body(body),
        count: 5,
    });
    let (output, report) = apply(
        &emulator,
        &[
            "--discover-subscription",
            SUBSCRIPTION,
            "--kind",
            "storage_account",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        outcomes(&report),
        vec![triple("sttagged", "storage_account", "applied")]
    );
    assert_eq!(stored(&emulator, &vault_id("kv-tagged")), kv_before);
    emulator.shutdown().await;
}

/// Resource Graph's answer to a query for every tagged resource of every kind.
async fn resource_graph_answer(emulator: &Emulator) -> Value {
    let token = emulator.issue_token("https://management.azure.com/");
    let client = reqwest::Client::new();
    // The shape of discovery's own query (docs/kinds.md: one query, filtered by type).
    let query = "resources | where type in~ ('microsoft.keyvault/vaults', 'microsoft.storage/storageaccounts', 'microsoft.containerregistry/registries') | where isnotempty(tags['tagfence']) | project id, name, subscriptionId, value = tostring(tags['tagfence']), type, location, tags, networkAcls = properties.networkAcls, networkRuleSet = properties.networkRuleSet, publicNetworkAccess = properties.publicNetworkAccess";
    let answer = client
        .post(format!(
            "{}/providers/Microsoft.ResourceGraph/resources?api-version=2021-03-01",
            emulator.base_url()
        ))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(json!({"subscriptions": [SUBSCRIPTION], "query": query}).to_string())
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert!(status.is_success(), "{body}");
    assert!(
        body["data"].as_array().is_some_and(|d| d.len() == 2),
        "{body:#}"
    );
    body
}

// ---------------------------------------------------------------------------------------------
// Claim 6: the Event Grid hook
// ---------------------------------------------------------------------------------------------

fn write_event(resource_uri: &str, operation: &str) -> Value {
    let provider = operation.split('/').next().unwrap();
    json!({
        "topic": format!("/subscriptions/{SUBSCRIPTION}"),
        "subject": resource_uri,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-12-07T06:30:04.6117357Z",
        "id": "5db48cba-50a2-455a-93b4-de41a3b5b7f6",
        "data": {"resourceProvider": provider, "resourceUri": resource_uri,
                 "operationName": operation, "status": "Succeeded",
                 "subscriptionId": SUBSCRIPTION},
        "dataVersion": "2",
        "metadataVersion": "1"
    })
}

async fn host_for(emulator: &Emulator, extra: &[(&str, &str)]) -> HostDouble {
    let mut settings = emulator_env(emulator);
    settings.retain(|(k, _)| k != "TAGFENCE_LOG");
    settings.push(("TAGFENCE_TAGS".into(), "AzureDevOps".into()));
    settings.push((
        "TAGFENCE_DISCOVER_SUBSCRIPTIONS".into(),
        SUBSCRIPTION.into(),
    ));
    for (k, v) in extra {
        settings.push(((*k).to_owned(), (*v).to_owned()));
    }
    HostDouble::start(&settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_grid_hook_reconciles_a_tagged_registry_on_its_write() {
    let emulator = start(emulator_config(vec![tagged(
        registry("crevent", "Premium", &[PERSON]),
        "AzureDevOps",
    )]))
    .await;
    let mut host = host_for(&emulator, &[]).await;
    let id = registry_id("crevent");
    let answer = host
        .invoke_event(
            &write_event(&id, "Microsoft.ContainerRegistry/registries/write"),
            false,
        )
        .await;
    assert!(answer.succeeded(), "{}", answer.body);
    assert_eq!(
        answer.body["ReturnValue"]["outcome"]["status"], "applied",
        "{}",
        answer.body
    );
    assert_eq!(answer.body["ReturnValue"]["kind"], "container_registry");
    let mut expected: Vec<&str> = AZURE_DEVOPS.to_vec();
    expected.push(PERSON);
    assert_eq!(rules_of(&emulator, &id), sorted(&expected));
    host.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_grid_hook_ignores_operations_of_another_kind_other_operations_and_types() {
    let emulator = start(emulator_config(vec![
        tagged(storage("stevent", &[]), "AzureDevOps"),
        tagged(registry("crevent", "Premium", &[]), "AzureDevOps"),
        tagged(vault("kv-event", &[]), "AzureDevOps"),
    ]))
    .await;
    let st = storage_id("stevent");
    let cr = registry_id("crevent");
    let kv = vault_id("kv-event");
    let before: Vec<String> = [&st, &cr, &kv]
        .iter()
        .map(|id| stored(&emulator, id))
        .collect();
    let mut host = host_for(&emulator, &[]).await;
    let child = format!("{st}/blobServices/default/containers/images");
    let cases = [
        (st.clone(), "Microsoft.ContainerRegistry/registries/write"),
        (st.clone(), "Microsoft.KeyVault/vaults/write"),
        (cr.clone(), "Microsoft.Storage/storageAccounts/write"),
        (kv.clone(), "Microsoft.Storage/storageAccounts/write"),
        (st.clone(), "Microsoft.Storage/storageAccounts/delete"),
        (st.clone(), "Microsoft.Storage/storageAccounts/listKeys/action"),
        (cr.clone(), "Microsoft.ContainerRegistry/registries/importImage/action"),
        (
            child.clone(),
            "Microsoft.Storage/storageAccounts/blobServices/containers/write",
        ),
        (
            format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/Microsoft.Web/sites/app"),
            "Microsoft.Web/sites/write",
        ),
    ];
    for (uri, operation) in cases {
        emulator.clear_requests();
        let answer = host
            .invoke_event(&write_event(&uri, operation), false)
            .await;
        assert!(answer.succeeded(), "{operation} on {uri}: {}", answer.body);
        assert_eq!(
            writes(&emulator),
            0,
            "{operation} on {uri} was reconciled: {}",
            answer.body
        );
        let logs = answer.body["Logs"].to_string();
        assert!(
            logs.contains("ignored"),
            "{operation} on {uri}: {}",
            answer.body
        );
    }
    let after: Vec<String> = [&st, &cr, &kv]
        .iter()
        .map(|id| stored(&emulator, id))
        .collect();
    assert_eq!(after, before);
    host.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_grid_hook_ignores_a_tagged_resource_of_a_kind_not_enabled() {
    let emulator = start(emulator_config(vec![
        tagged(storage("stoff", &[]), "AzureDevOps"),
        tagged(registry("croff", "Premium", &[]), "AzureDevOps"),
    ]))
    .await;
    let st = storage_id("stoff");
    let before = stored(&emulator, &st);
    let mut host = host_for(
        &emulator,
        &[("TAGFENCE_KINDS", "key_vault,container_registry")],
    )
    .await;
    let answer = host
        .invoke_event(
            &write_event(&st, "Microsoft.Storage/storageAccounts/write"),
            false,
        )
        .await;
    assert!(answer.succeeded(), "{}", answer.body);
    assert_eq!(writes(&emulator), 0, "{}", answer.body);
    assert_eq!(stored(&emulator, &st), before);
    // The enabled kind still goes.
    let cr = registry_id("croff");
    let answer = host
        .invoke_event(
            &write_event(&cr, "Microsoft.ContainerRegistry/registries/write"),
            false,
        )
        .await;
    assert_eq!(
        answer.body["ReturnValue"]["outcome"]["status"], "applied",
        "{}",
        answer.body
    );
    host.stop().await;
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Claim 7: a vault and a storage account (or registry) of one name in one resource group
// ---------------------------------------------------------------------------------------------

/// The record files under the state's `vaults/` (whatever their layout), with their contents.
fn records(state: &std::path::Path) -> Vec<(String, Value)> {
    json_files(&state.join("vaults"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_and_a_storage_account_of_one_name_keep_their_own_records() {
    let emulator = start(emulator_config(vec![
        vault("stshared", &[]),
        storage("stshared", &[]),
    ]))
    .await;
    let kv = vault_id("stshared");
    let st = storage_id("stshared");
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let dir = state.to_str().unwrap();
    let vault_run = [
        "--resource",
        &kv,
        "--tag",
        "AzureDevOps",
        "--state-dir",
        dir,
    ];
    let (output, report) = apply(&emulator, &vault_run).await;
    assert!(output.status.success(), "{report:#}\n{}", stderr(&output));
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &st,
            "--static-rule",
            "52.1.2.3",
            "--state-dir",
            dir,
        ],
    )
    .await;
    assert!(output.status.success(), "{report:#}\n{}", stderr(&output));
    assert_eq!(rules_of(&emulator, &st), sorted(&["52.1.2.3"]));
    assert_eq!(rules_of(&emulator, &kv), sorted(&AZURE_DEVOPS));

    let files = records(&state);
    assert_eq!(
        files.len(),
        2,
        "one record for the two: {:#?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );

    // Each run finds its own record: the vault is in sync, and the account takes back its own
    // rule (a record shared with the vault would not know it).
    emulator.clear_requests();
    let (output, report) = apply(&emulator, &vault_run).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(status_of(&report, "stshared"), "in_sync", "{report:#}");
    assert_eq!(writes(&emulator), 0);
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &st,
            "--static-rule",
            "52.1.2.4",
            "--state-dir",
            dir,
            "--max-remove-fraction",
            "1",
        ],
    )
    .await;
    assert!(output.status.success(), "{report:#}\n{}", stderr(&output));
    assert_eq!(rules_of(&emulator, &st), sorted(&["52.1.2.4"]));
    assert_eq!(rules_of(&emulator, &kv), sorted(&AZURE_DEVOPS));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_and_a_registry_of_one_name_run_at_once_without_sharing_a_lock() {
    let emulator = start(emulator_config(vec![
        vault("crshared", &[]),
        registry("crshared", "Premium", &[]),
    ]))
    .await;
    let kv = vault_id("crshared");
    let cr = registry_id("crshared");
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let dir = state.to_str().unwrap().to_owned();
    // The registry's write waits at the gate while the vault's run goes.
    emulator.add_fault(fault(
        Route::RegistryPatch,
        "crshared",
        FaultKind::hold("registry"),
        1,
    ));
    let env = emulator_env(&emulator);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tagfence"));
    command
        .args([
            "apply",
            "--output",
            "json",
            "--resource",
            &cr,
            "--tag",
            "AzureDevOps",
            "--state-dir",
            &dir,
        ])
        .current_dir(repo(""))
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let registry_run = command.spawn().unwrap();
    assert!(
        emulator
            .wait_held("registry", Duration::from_secs(20))
            .await
    );
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &kv,
            "--tag",
            "AzureDevOps",
            "--state-dir",
            &dir,
        ],
    )
    .await;
    emulator.release("registry");
    let registry_output = registry_run.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "the vault waited for, or was refused by, the registry's lock: {report:#}\n{}",
        stderr(&output)
    );
    assert_eq!(status_of(&report, "crshared"), "applied", "{report:#}");
    assert!(
        registry_output.status.success(),
        "{}",
        stderr(&registry_output)
    );
    assert_eq!(rules_of(&emulator, &kv), sorted(&AZURE_DEVOPS));
    assert_eq!(rules_of(&emulator, &cr), sorted(&AZURE_DEVOPS));
    assert_eq!(records(&state).len(), 2);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_and_a_storage_account_of_one_name_keep_their_own_grants() {
    let emulator = start(emulator_config(vec![
        vault("stgrants", &[]),
        storage("stgrants", &[]),
    ]))
    .await;
    let kv = vault_id("stgrants");
    let st = storage_id("stgrants");
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let dir = state.to_str().unwrap();
    for id in [&kv, &st] {
        let granted = tagfence(
            &emulator,
            &[
                "grant",
                "--resource",
                id,
                "--ip",
                "52.9.9.9",
                "--ttl",
                "30m",
                "--state-dir",
                dir,
            ],
            &[],
        )
        .await;
        assert!(granted.status.success(), "{id}: {}", stderr(&granted));
    }
    assert_eq!(rules_of(&emulator, &kv), sorted(&["52.9.9.9/32"]));
    assert_eq!(rules_of(&emulator, &st), sorted(&["52.9.9.9"]));
    let revoked = tagfence(
        &emulator,
        &[
            "revoke",
            "--resource",
            &st,
            "--ip",
            "52.9.9.9",
            "--state-dir",
            dir,
        ],
        &[],
    )
    .await;
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(rules_of(&emulator, &st).is_empty());
    assert_eq!(
        rules_of(&emulator, &kv),
        sorted(&["52.9.9.9/32"]),
        "the vault's grant went with the account's"
    );
    // The vault's grant is still its own to revoke.
    let revoked = tagfence(
        &emulator,
        &[
            "revoke",
            "--resource",
            &kv,
            "--ip",
            "52.9.9.9",
            "--state-dir",
            dir,
        ],
        &[],
    )
    .await;
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(rules_of(&emulator, &kv).is_empty());
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Claim 8: just-in-time grants on storage accounts and registries
// ---------------------------------------------------------------------------------------------

async fn grant_cli(emulator: &Emulator, id: &str, ip: &str, dir: &str) -> Output {
    tagfence(
        emulator,
        &[
            "grant",
            "--resource",
            id,
            "--ip",
            ip,
            "--ttl",
            "30m",
            "--state-dir",
            dir,
            "--output",
            "json",
        ],
        &[],
    )
    .await
}

async fn revoke_cli(emulator: &Emulator, id: &str, ip: &str, dir: &str) -> Output {
    tagfence(
        emulator,
        &["revoke", "--resource", id, "--ip", ip, "--state-dir", dir],
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_on_a_registry_is_a_bare_address_and_leaves_the_rest_unchanged() {
    let emulator = start(emulator_config(vec![registry(
        "crgrant",
        "Premium",
        &[PERSON],
    )]))
    .await;
    let id = registry_id("crgrant");
    let rest = rest_of(&emulator, &id, "networkRuleSet");
    let bypass = emulator.vault(&id).unwrap()["properties"]["networkRuleBypassOptions"].clone();
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let dir = state.to_str().unwrap();
    let granted = grant_cli(&emulator, &id, "52.9.9.9", dir).await;
    assert!(granted.status.success(), "{}", stderr(&granted));
    assert_eq!(rules_of(&emulator, &id), sorted(&["52.9.9.9", PERSON]));
    assert_eq!(rest_of(&emulator, &id, "networkRuleSet"), rest);
    let revoked = revoke_cli(&emulator, &id, "52.9.9.9", dir).await;
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert_eq!(rules_of(&emulator, &id), sorted(&[PERSON]));
    assert_eq!(rest_of(&emulator, &id, "networkRuleSet"), rest);
    assert_eq!(
        emulator.vault(&id).unwrap()["properties"]["networkRuleBypassOptions"],
        bypass
    );
    assert_eq!(count(&emulator, Route::RegistryPatch), 2);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_grant_keeps_a_persons_identical_rule_on_storage_and_registries() {
    // A person's 52.9.9.9 on the account, and a person's 52.9.9.9/32 on the registry (the same
    // address in the spelling a person may use there).
    let emulator = start(emulator_config(vec![
        storage("stsame", &["52.9.9.9"]),
        registry("crsame", "Premium", &["52.9.9.9/32"]),
    ]))
    .await;
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let dir = state.to_str().unwrap();
    for (id, kept) in [
        (storage_id("stsame"), "52.9.9.9"),
        (registry_id("crsame"), "52.9.9.9/32"),
    ] {
        let granted = grant_cli(&emulator, &id, "52.9.9.9", dir).await;
        assert!(granted.status.success(), "{id}: {}", stderr(&granted));
        let revoked = revoke_cli(&emulator, &id, "52.9.9.9", dir).await;
        assert!(revoked.status.success(), "{id}: {}", stderr(&revoked));
        assert_eq!(
            rules_of(&emulator, &id),
            sorted(&[kept]),
            "{id}: the person's rule went with the grant"
        );
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_on_a_standard_registry_is_refused_with_nothing_written() {
    let emulator = start(emulator_config(vec![registry("crstd", "Standard", &[])])).await;
    let id = registry_id("crstd");
    let before = stored(&emulator, &id);
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let granted = grant_cli(&emulator, &id, "52.9.9.9", state.to_str().unwrap()).await;
    assert!(!granted.status.success(), "{}", stdout(&granted));
    let said = format!("{}{}", stdout(&granted), stderr(&granted));
    assert!(
        said.contains("the registry cannot hold IP rules: its tier is Standard"),
        "{said}"
    );
    assert_eq!(writes(&emulator), 0);
    assert_eq!(stored(&emulator, &id), before);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_takes_an_ended_grant_off_a_storage_account_and_only_it() {
    use support::grants::{make_runner, TestClock};
    use tagfence::run::{GrantRequest, Requester, RunRequest};

    let emulator = start(emulator_config(vec![storage(
        "stsweep",
        &[PERSON, "52.9.9.8"],
    )]))
    .await;
    let id = storage_id("stsweep");
    let scratch = Scratch::new();
    let settings = support::observe::settings(&emulator, std::slice::from_ref(&id), Some(&scratch));
    let clock = TestClock::new();
    let runner = make_runner(&emulator, &settings, &clock);
    let report = runner.run(&RunRequest::default()).await.unwrap();
    assert_eq!(report.failures(), 0, "{}", report.to_text());
    let rest = rest_of(&emulator, &id, "networkAcls");
    for (ip, ttl) in [("52.9.9.9", 60), ("52.9.9.8", 60), ("52.9.9.7", 3600)] {
        let granted = runner
            .grant(&GrantRequest {
                vault: id.clone(),
                address: ip.parse().unwrap(),
                ttl: Some(Duration::from_secs(ttl)),
                reason: None,
                requester: Requester::Cli {
                    label: "attacker".into(),
                },
                trigger: "cli",
            })
            .await
            .unwrap_or_else(|e| panic!("{ip}: {e}"));
        assert!(granted.succeeded(), "{}", granted.to_text());
    }
    let mut expected: Vec<&str> = AZURE_DEVOPS.to_vec();
    expected.extend([PERSON, "52.9.9.8", "52.9.9.9", "52.9.9.7"]);
    assert_eq!(rules_of(&emulator, &id), sorted(&expected));
    clock.advance(Duration::from_secs(120));
    runner.sweep("test").await.unwrap();
    // 52.9.9.9 ended and goes; 52.9.9.8 ended but a person holds it; 52.9.9.7 lives on.
    let mut expected: Vec<&str> = AZURE_DEVOPS.to_vec();
    expected.extend([PERSON, "52.9.9.8", "52.9.9.7"]);
    assert_eq!(rules_of(&emulator, &id), sorted(&expected));
    assert_eq!(rest_of(&emulator, &id, "networkAcls"), rest);
    all_rules_valid_for_storage(&emulator, &id);
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Claim 9: the same-region warning
// ---------------------------------------------------------------------------------------------

fn region_warnings(resource: &Value) -> Vec<String> {
    resource["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|w| w.as_str())
                .filter(|w| w.contains("private addresses"))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_warning_compares_regions_without_case_or_spaces() {
    let emulator = start(emulator_config(vec![located(
        storage("stwest", &[]),
        "West Europe",
    )]))
    .await;
    let (output, report) = apply(
        &emulator,
        &[
            "--dry-run",
            "--resource",
            &storage_id("stwest"),
            "--tag",
            "AzureCloud.WestEurope",
            "--fit",
            "summarize",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let warnings = region_warnings(resource_report(&report, "stwest"));
    assert_eq!(warnings.len(), 1, "{report:#}");
    assert!(
        warnings[0].contains("AzureCloud.westeurope")
            || warnings[0].contains("AzureCloud.WestEurope"),
        "{warnings:?}"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_warning_reaches_the_run_record() {
    let emulator = start(emulator_config(vec![storage("strecord", &[])])).await;
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let (output, report) = apply(
        &emulator,
        &[
            "--resource",
            &storage_id("strecord"),
            "--tag",
            "AzureCloud.westeurope",
            "--fit",
            "summarize",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        region_warnings(resource_report(&report, "strecord")).len(),
        1
    );
    let runs = json_files(&state.join("runs"));
    assert_eq!(runs.len(), 1, "{runs:?}");
    let record = runs[0].1.to_string();
    assert!(
        record.contains("the storage account's own region"),
        "{record}"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_warning_comes_for_a_profile_holding_the_region_too() {
    let emulator = start(emulator_config(vec![storage("stprofile", &[])])).await;
    let (output, report) = apply(
        &emulator,
        &[
            "--dry-run",
            "--resource",
            &storage_id("stprofile"),
            "--tag",
            "hosted-agents:europe",
            "--fit",
            "summarize",
        ],
    )
    .await;
    let resource = resource_report(&report, "stprofile");
    let warnings = region_warnings(resource);
    assert_eq!(warnings.len(), 1, "{resource:#}\n{}", stderr(&output));
    assert!(warnings[0].contains("westeurope"), "{warnings:?}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_region_warning_for_a_vault_a_registry_or_an_account_elsewhere() {
    let emulator = start(emulator_config(vec![
        vault("kv-west", &[]),
        registry("crwest", "Premium", &[]),
        located(storage("stnorth", &[]), "northeurope"),
    ]))
    .await;
    let (output, report) = apply(
        &emulator,
        &[
            "--dry-run",
            "--resource",
            &vault_id("kv-west"),
            "--resource",
            &registry_id("crwest"),
            "--resource",
            &storage_id("stnorth"),
            "--tag",
            "AzureCloud.westeurope",
            "--fit",
            "summarize",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    for name in ["kv-west", "crwest", "stnorth"] {
        assert!(
            region_warnings(resource_report(&report, name)).is_empty(),
            "{name}: {report:#}"
        );
    }
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Claim 10: reports, records, status and notifications name the kind
// ---------------------------------------------------------------------------------------------

/// A loopback webhook that keeps the body of every POST.
async fn webhook() -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buffer = [0u8; 8192];
                loop {
                    let Ok(n) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    data.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())
                                    .flatten()
                            })
                            .unwrap_or(0);
                        if data.len() >= end + 4 + length {
                            kept.lock()
                                .unwrap()
                                .push(String::from_utf8_lossy(&data[end + 4..]).to_string());
                            break;
                        }
                    }
                }
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_records_status_and_notifications_name_the_kind() {
    let emulator = start(emulator_config(vec![
        storage("stnamed", &[]),
        registry("crnamed", "Premium", &[]),
        registry("crrefused", "Basic", &[]),
    ]))
    .await;
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let dir = state.to_str().unwrap();
    let (url, bodies) = webhook().await;
    let st = storage_id("stnamed");
    let cr = registry_id("crnamed");
    let low = registry_id("crrefused");
    let output = tagfence(
        &emulator,
        &[
            "apply",
            "--resource",
            &st,
            "--resource",
            &cr,
            "--resource",
            &low,
            "--tag",
            "AzureDevOps",
            "--state-dir",
            dir,
            "--notify-url",
            &url,
        ],
        &[],
    )
    .await;
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(2), "{text}\n{}", stderr(&output));
    assert!(text.contains("stnamed (storage account)"), "{text}");
    assert!(text.contains("crnamed (container registry)"), "{text}");
    assert!(text.contains("crrefused (container registry)"), "{text}");

    // The run record.
    let runs = json_files(&state.join("runs"));
    assert_eq!(runs.len(), 1);
    let record = runs[0].1.to_string();
    for (name, kind) in [
        ("stnamed", "storage_account"),
        ("crnamed", "container_registry"),
        ("crrefused", "container_registry"),
    ] {
        let found = find_object_named(&runs[0].1, name)
            .unwrap_or_else(|| panic!("{name} not in the run record {record}"));
        assert_eq!(found["kind"], kind, "{found:#}");
    }

    // Status.
    let status = tagfence(
        &emulator,
        &[
            "status",
            "--output",
            "json",
            "--state-dir",
            dir,
            "--resource",
            &st,
            "--resource",
            &cr,
        ],
        &[],
    )
    .await;
    assert!(status.status.success(), "{}", stderr(&status));
    let status_json: Value = serde_json::from_str(&stdout(&status)).unwrap();
    for (name, kind) in [
        ("stnamed", "storage_account"),
        ("crnamed", "container_registry"),
    ] {
        let found = find_object_named(&status_json, name)
            .unwrap_or_else(|| panic!("{name} not in status {status_json:#}"));
        assert_eq!(found["kind"], kind, "{found:#}");
    }
    let status_text = tagfence(
        &emulator,
        &[
            "status",
            "--state-dir",
            dir,
            "--resource",
            &st,
            "--resource",
            &cr,
        ],
        &[],
    )
    .await;
    let shown = stdout(&status_text);
    assert!(
        shown.contains("stnamed (storage account)")
            && shown.contains("crnamed (container registry)"),
        "{shown}"
    );

    // The notification.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = bodies.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}\n{}", stderr(&output));
    let note: Value = serde_json::from_str(&sent[0]).unwrap();
    let note = note["text"].as_str().unwrap_or_default();
    assert!(note.contains("stnamed (storage account)"), "{note}");
    assert!(note.contains("crrefused (container registry)"), "{note}");
    emulator.shutdown().await;
}

/// The first JSON object (depth first) whose `name` is `name`, or whose `id` ends with `/name`.
fn find_object_named<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => {
            let named = map.get("name").and_then(Value::as_str) == Some(name)
                || map
                    .get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.ends_with(&format!("/{name}")))
                || map
                    .get("vault")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.ends_with(&format!("/{name}")));
            if named && map.contains_key("kind") {
                return Some(value);
            }
            map.values().find_map(|v| find_object_named(v, name))
        }
        Value::Array(items) => items.iter().find_map(|v| find_object_named(v, name)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Claim 11: a registry's long-running update (the emulator's opt-in `RegistryUpdates`)
// ---------------------------------------------------------------------------------------------

use tagfence_emulator::{OperationOutcome, RegistryUpdates};

async fn premium_with_updates(name: &str, updates: RegistryUpdates) -> Emulator {
    let mut config = emulator_config(vec![registry(name, "Premium", &[PERSON])]);
    config.registry_updates = Some(updates);
    start(config).await
}

fn routes_of(emulator: &Emulator) -> Vec<Route> {
    emulator
        .requests()
        .iter()
        .filter(|r| r.route.is_resource() || r.route == Route::RegistryOperation)
        .map(|r| r.route)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_update_answered_201_is_followed_until_it_succeeded_then_read_back() {
    let emulator = premium_with_updates(
        "crasync",
        RegistryUpdates {
            in_progress: 2,
            retry_after: Some(1),
            ..RegistryUpdates::default()
        },
    )
    .await;
    let id = registry_id("crasync");
    let rest = rest_of(&emulator, &id, "networkRuleSet");
    let (output, report) = apply(&emulator, &["--resource", &id, "--tag", "AzureDevOps"]).await;
    assert!(output.status.success(), "{report:#}\n{}", stderr(&output));
    assert_eq!(status_of(&report, "crasync"), "applied", "{report:#}");
    let mut expected: Vec<&str> = AZURE_DEVOPS.to_vec();
    expected.push(PERSON);
    assert_eq!(rules_of(&emulator, &id), sorted(&expected));
    assert_eq!(rest_of(&emulator, &id, "networkRuleSet"), rest);
    let routes = routes_of(&emulator);
    // Read, re-read, PATCH, three polls (two InProgress, one Succeeded), then a read back.
    let patch = routes
        .iter()
        .position(|r| *r == Route::RegistryPatch)
        .unwrap();
    assert_eq!(
        routes[patch + 1..],
        [
            Route::RegistryOperation,
            Route::RegistryOperation,
            Route::RegistryOperation,
            Route::RegistryGet
        ],
        "{routes:?}"
    );
    assert!(emulator
        .requests()
        .iter()
        .filter(|r| r.route == Route::RegistryOperation)
        .all(|r| r.tls && r.authorized && r.status == 200));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_update_that_fails_or_is_canceled_fails_the_resource_and_changes_nothing() {
    for outcome in [
        OperationOutcome::Failed {
            code: "RegistryUpdateFailed".into(),
            message: "the update failed on the service".into(),
        },
        OperationOutcome::Canceled,
    ] {
        let emulator = premium_with_updates(
            "crfail",
            RegistryUpdates {
                in_progress: 1,
                retry_after: Some(1),
                outcome: outcome.clone(),
                ..RegistryUpdates::default()
            },
        )
        .await;
        let id = registry_id("crfail");
        let before = stored(&emulator, &id);
        let (output, report) = apply(&emulator, &["--resource", &id, "--tag", "AzureDevOps"]).await;
        assert!(!output.status.success(), "{outcome:?}: {report:#}");
        let resource = resource_report(&report, "crfail");
        assert_eq!(resource["outcome"]["status"], "failed", "{resource:#}");
        if let OperationOutcome::Failed { code, .. } = &outcome {
            assert!(
                resource.to_string().contains(code.as_str()),
                "the operation's code is not named: {resource:#}"
            );
        }
        assert_eq!(stored(&emulator, &id), before, "{outcome:?}");
        assert_eq!(count(&emulator, Route::RegistryPatch), 1, "{outcome:?}");
        emulator.shutdown().await;
    }
}

/// A loopback listener counting the connections made to it (whatever is sent).
async fn trap() -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16384];
                let n = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buffer))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0);
                buffer.truncate(n);
                kept.lock().unwrap().push(buffer);
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_url_off_the_arm_endpoint_is_never_followed() {
    let (port, seen) = trap().await;
    for (what, base) in [
        ("another host", "https://evil.example".to_owned()),
        (
            "another host on loopback",
            format!("https://localhost:{port}"),
        ),
        ("another port", format!("https://127.0.0.1:{port}")),
        (
            "plain http on another port",
            format!("http://127.0.0.1:{port}"),
        ),
    ] {
        let emulator = premium_with_updates(
            "crforeign",
            RegistryUpdates {
                in_progress: 0,
                foreign_base: Some(base.clone()),
                ..RegistryUpdates::default()
            },
        )
        .await;
        let id = registry_id("crforeign");
        let before = stored(&emulator, &id);
        let (output, report) = apply(&emulator, &["--resource", &id, "--tag", "AzureDevOps"]).await;
        assert_ne!(
            status_of(&report, "crforeign"),
            "applied",
            "{what}: {report:#}"
        );
        assert!(!output.status.success(), "{what}");
        assert_eq!(stored(&emulator, &id), before, "{what}");
        assert!(
            seen.lock().unwrap().is_empty(),
            "{what}: {base} was followed"
        );
        assert_eq!(count(&emulator, Route::RegistryOperation), 0, "{what}");
        emulator.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_url_that_only_starts_like_the_arm_endpoint_is_never_followed() {
    let (port, seen) = trap().await;
    // The same text as the ARM endpoint up to the host, then `@`: the host is the trap's.
    let mut config = emulator_config(vec![registry("crprefix", "Premium", &[PERSON])]);
    config.registry_updates = Some(RegistryUpdates::default());
    let emulator = start(config).await;
    let arm = emulator.https_url().unwrap();
    let tricky = format!("{arm}@localhost:{port}");
    emulator.set_registry_updates(Some(RegistryUpdates {
        foreign_base: Some(tricky.clone()),
        ..RegistryUpdates::default()
    }));
    let id = registry_id("crprefix");
    let before = stored(&emulator, &id);
    let (_, report) = apply(&emulator, &["--resource", &id, "--tag", "AzureDevOps"]).await;
    assert_ne!(status_of(&report, "crprefix"), "applied", "{report:#}");
    assert!(seen.lock().unwrap().is_empty(), "{tricky} was followed");
    assert_eq!(stored(&emulator, &id), before);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_url_on_the_arm_host_over_plain_http_never_gets_the_token() {
    // tagfence's ARM endpoint is https://127.0.0.1:P; the operation's URL is http://127.0.0.1:P
    // (the emulator serves both on the one port, so a client that follows it is seen).
    let mut config = emulator_config(vec![registry("crdowngrade", "Premium", &[PERSON])]);
    config.registry_updates = Some(RegistryUpdates::default());
    let emulator = start(config).await;
    emulator.set_registry_updates(Some(RegistryUpdates {
        foreign_base: Some(emulator.base_url()),
        ..RegistryUpdates::default()
    }));
    let id = registry_id("crdowngrade");
    let (_, report) = apply(&emulator, &["--resource", &id, "--tag", "AzureDevOps"]).await;
    let clear: Vec<_> = emulator
        .requests()
        .into_iter()
        .filter(|r| r.route == Route::RegistryOperation && !r.tls)
        .collect();
    assert!(
        clear.is_empty(),
        "the operation was followed over plain http with the token: {clear:?}\n{report:#}"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_after_is_capped_at_10_s() {
    let emulator = premium_with_updates(
        "crslowpoll",
        RegistryUpdates {
            in_progress: 1,
            retry_after: Some(3600),
            ..RegistryUpdates::default()
        },
    )
    .await;
    let id = registry_id("crslowpoll");
    let started = std::time::Instant::now();
    let (output, report) = tokio::time::timeout(
        Duration::from_secs(60),
        apply(&emulator, &["--resource", &id, "--tag", "AzureDevOps"]),
    )
    .await
    .expect("an hour's Retry-After was obeyed");
    assert!(output.status.success(), "{report:#}\n{}", stderr(&output));
    assert_eq!(status_of(&report, "crslowpoll"), "applied");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    emulator.shutdown().await;
}

/// Found (fixed): the give-up was a transient timeout, so the reconcile read, planned and
/// PATCHed again on top of the running update: (retries + 1) × 120 s and 4 PATCHes for one
/// registry. Now the update is followed for at most the call timeout (6 s here; 120 s by default)
/// and never sent again on top of itself; the resource ends as a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_update_that_never_finishes_is_given_up_after_the_call_timeout() {
    let emulator = premium_with_updates(
        "crforever",
        RegistryUpdates {
            in_progress: u32::MAX,
            retry_after: Some(1),
            ..RegistryUpdates::default()
        },
    )
    .await;
    let id = registry_id("crforever");
    let before = stored(&emulator, &id);
    let started = std::time::Instant::now();
    let (output, report) = tokio::time::timeout(
        Duration::from_secs(60),
        apply_env(
            &emulator,
            &["--resource", &id, "--tag", "AzureDevOps"],
            &[("TAGFENCE_HTTP_CALL_TIMEOUT_SECS", "6")],
        ),
    )
    .await
    .expect("followed for more than 60 s");
    let took = started.elapsed();
    assert!(!output.status.success(), "{report:#}");
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(20),
        "gave up after {took:?}"
    );
    let resource = resource_report(&report, "crforever");
    assert_eq!(resource["outcome"]["kind"], "conflict", "{resource:#}");
    assert!(
        resource
            .to_string()
            .contains("the update was accepted but had not finished after 6 s; it may still land, so it is not sent again now"),
        "{resource:#}"
    );
    let polls = count(&emulator, Route::RegistryOperation);
    assert!((4..=8).contains(&polls), "{polls} polls");
    assert_eq!(
        count(&emulator, Route::RegistryPatch),
        1,
        "never sent again on top of itself"
    );
    assert_eq!(stored(&emulator, &id), before);
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Grants through the same gate (claims 1, 2, 3 and 8 together)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_grants_cannot_push_a_full_account_past_400_rules() {
    let people = person_rules(376);
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    let emulator = start(emulator_config(vec![storage("stgrantfull", &refs)])).await;
    let id = storage_id("stgrantfull");
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let dir = state.to_str().unwrap();
    let (output, _) = apply(
        &emulator,
        &[
            "--resource",
            &id,
            "--tag",
            "AzureDevOps",
            "--state-dir",
            dir,
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(rules_of(&emulator, &id).len(), 400);
    let before = stored(&emulator, &id);
    emulator.clear_requests();
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
            dir,
            "--grant-max-per-vault",
            "1000",
        ],
        &[],
    )
    .await;
    assert!(!granted.status.success(), "{}", stdout(&granted));
    assert!(
        format!("{}{}", stdout(&granted), stderr(&granted)).contains("over its limit of 400"),
        "{}",
        stdout(&granted)
    );
    assert_eq!(
        count(&emulator, Route::StorageAccountPatch),
        0,
        "a 401st rule was sent: {}",
        stderr(&granted)
    );
    assert_eq!(stored(&emulator, &id), before);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_on_a_registry_never_sends_network_rule_bypass_options() {
    let emulator = start(emulator_config(vec![registry(
        "crgrantbypass",
        "Premium",
        &[],
    )]))
    .await;
    let id = registry_id("crgrantbypass");
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let all: Vec<String> = [
        "grant",
        "--resource",
        &id,
        "--ip",
        "52.9.9.9",
        "--ttl",
        "30m",
        "--state-dir",
        state.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let output =
        command_with_write_held(&emulator, Route::RegistryPatch, "crgrantbypass", all, |e| {
            assert!(e.update_vault(&id, |r| {
                r["properties"]["networkRuleBypassOptions"] = json!("None");
            }));
        })
        .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        emulator.vault(&id).unwrap()["properties"]["networkRuleBypassOptions"],
        "None"
    );
    assert_eq!(rules_of(&emulator, &id), sorted(&["52.9.9.9"]));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_is_never_written_from_a_partial_read() {
    let emulator = start(emulator_config(vec![
        storage("stgrantpartial", &[PERSON]),
        registry("crgrantpartial", "Premium", &[PERSON]),
    ]))
    .await;
    let scratch = Scratch::new();
    let state = scratch.join("state");
    let dir = state.to_str().unwrap();
    let cases = [
        (
            storage_id("stgrantpartial"),
            "stgrantpartial",
            Route::StorageAccountGet,
            "/properties/networkAcls/bypass",
        ),
        (
            storage_id("stgrantpartial"),
            "stgrantpartial",
            Route::StorageAccountGet,
            "/properties/networkAcls/ipRules",
        ),
        (
            storage_id("stgrantpartial"),
            "stgrantpartial",
            Route::StorageAccountGet,
            "/properties/networkAcls/virtualNetworkRules",
        ),
        (
            registry_id("crgrantpartial"),
            "crgrantpartial",
            Route::RegistryGet,
            "/properties/networkRuleSet/ipRules",
        ),
        (
            registry_id("crgrantpartial"),
            "crgrantpartial",
            Route::RegistryGet,
            "/properties/networkRuleSet",
        ),
    ];
    for (id, name, route, pointer) in cases {
        let before = stored(&emulator, &id);
        emulator.clear_requests();
        emulator.add_fault(fault(route, name, FaultKind::remove_fields(&[pointer]), 50));
        let granted = grant_cli(&emulator, &id, "52.9.9.9", dir).await;
        emulator.clear_faults();
        assert!(!granted.status.success(), "{pointer}: {}", stdout(&granted));
        assert_eq!(writes(&emulator), 0, "{pointer}: {}", stderr(&granted));
        assert_eq!(stored(&emulator, &id), before, "{pointer}");
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_grid_hook_takes_a_storage_write_named_in_lower_case() {
    let emulator = start(emulator_config(vec![tagged(
        storage("stcase", &[]),
        "AzureDevOps",
    )]))
    .await;
    let mut host = host_for(&emulator, &[]).await;
    let id = storage_id("stcase").to_ascii_lowercase();
    let answer = host
        .invoke_event(
            &write_event(&id, "microsoft.storage/storageaccounts/write"),
            false,
        )
        .await;
    assert!(answer.succeeded(), "{}", answer.body);
    assert_eq!(
        answer.body["ReturnValue"]["outcome"]["status"], "applied",
        "{}",
        answer.body
    );
    assert_eq!(answer.body["ReturnValue"]["kind"], "storage_account");
    assert_eq!(rules_of(&emulator, "stcase"), sorted(&AZURE_DEVOPS));
    host.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_storage_account_is_told_about_its_own_region_too() {
    let emulator = start(emulator_config(vec![tagged(
        storage("stdiscwest", &[]),
        "AzureCloud.westeurope",
    )]))
    .await;
    let (output, report) = apply(
        &emulator,
        &[
            "--dry-run",
            "--discover-subscription",
            SUBSCRIPTION,
            "--fit",
            "summarize",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let resource = resource_report(&report, "stdiscwest");
    assert_eq!(region_warnings(resource).len(), 1, "{resource:#}");
    emulator.shutdown().await;
}
