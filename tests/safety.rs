//! The safety gate's regression tests (issue 11): each way the promise "never lose a rule a
//! person added, never lock anyone out" was found broken, replayed against the emulator with
//! the fault that breaks it, through the library `Runner` (request-level assertions) and the
//! real binary where the case is about its output.
//!
//! Every test checks the vault the emulator stores, not tagfence's report alone: a refused or
//! failed vault must be byte-for-byte as it was, and no PATCH may have been sent when the case
//! says nothing is written.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde_json::{json, Value};
use support::*;
use tagfence::azure::pipeline::AzureError;
use tagfence::config::{Config, SelectionSettings, Settings};
use tagfence::core::desired::DesireError;
use tagfence::core::fit::FitError;
use tagfence::core::gate::{GateRefusal, Mismatch};
use tagfence::core::kind::Kind;
use tagfence::core::live::AclField;
use tagfence::core::plan::{PlanError, Refusal};
use tagfence::reconcile::{AzureStep, ErrorKind, Outcome, ReconcileError, StateStep};
use tagfence::run::{RunReport, RunRequest, Runner};
use tagfence::state::{RecordedOutcome, StateError};
use tagfence_emulator::{Emulator, Fault, FaultKind, Route};

/// The selected tag of the synthetic documents, and the second one case 3 selects too.
const TAG: &str = "Pipelines";
const REGION: &str = "AzureCloud.westeurope";
/// A person's rule, on the vault before tagfence came.
const PERSON: &str = "45.67.89.0/24";

// ---------------------------------------------------------------------------------------------
// Helpers.

/// `n` ranges of the synthetic tag, from `from` on: `20.<from+i>.0.0/24`.
fn ranges(from: u32, n: u32) -> Vec<String> {
    (from..from + n).map(|i| format!("20.{i}.0.0/24")).collect()
}

/// Writes a download-format document with `TAG` holding `prefixes` and `REGION` one range.
fn document(dir: &Scratch, change_number: u64, prefixes: &[String]) -> PathBuf {
    let path = dir.join(&format!("tags-{change_number}.json"));
    let doc = json!({
        "changeNumber": change_number,
        "cloud": "Public",
        "values": [
            {"name": TAG, "id": TAG, "properties": {
                "changeNumber": change_number, "region": "", "systemService": "Pipelines",
                "addressPrefixes": prefixes}},
            {"name": REGION, "id": REGION, "properties": {
                "changeNumber": 160, "region": "westeurope", "systemService": "",
                "addressPrefixes": ["4.175.0.0/16"]}}
        ]
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    path
}

/// The run settings of these tests: the synthetic document, one vault, state in `state`.
fn args(emulator: &Emulator, vault: &str, document: &Path, state: &Path) -> Settings {
    Settings {
        vaults: vec![vault_id(vault)],
        selection: SelectionSettings {
            tags: vec![TAG.to_owned()],
            static_rules: Vec::new(),
        },
        source: Some(document.display().to_string()),
        min_service_tags: Some(1),
        arm_endpoint: Some(emulator.base_url()),
        concurrency: Some(2),
        http_timeout_secs: Some(5),
        http_max_retries: Some(1),
        http_retry_delay_ms: Some(20),
        http_call_timeout_secs: Some(10),
        state_dir: Some(state.to_path_buf()),
        ..Settings::default()
    }
}

fn runner_of(emulator: &Emulator, args: &Settings) -> Runner {
    let config = Config::from_settings(args).expect("valid configuration");
    Runner::with_credential(config, credential(emulator), "test token".into())
        .expect("runner builds")
}

async fn apply(emulator: &Emulator, args: &Settings) -> RunReport {
    runner_of(emulator, args)
        .run(&RunRequest::default())
        .await
        .expect("the run itself succeeds")
}

fn fault(route: Route, vault: &str, kind: FaultKind, count: u32) -> Fault {
    Fault {
        route: Some(route),
        vault: Some(vault.to_owned()),
        kind,
        count,
    }
}

fn patches(emulator: &Emulator) -> usize {
    emulator
        .requests()
        .iter()
        .filter(|r| r.route == Route::VaultPatch)
        .count()
}

/// The rules as the gate and the plan name them.
fn nets(rules: &[String]) -> Vec<Ipv4Net> {
    rules.iter().map(|r| r.parse().unwrap()).collect()
}

/// Why the first vault was refused; a refusal is always of kind `refused`.
fn refusal(report: &RunReport) -> ReconcileError {
    match &report.vaults[0].outcome {
        Outcome::Refused(reason) => {
            assert_eq!(reason.kind(), ErrorKind::Refused, "{reason:?}");
            reason.clone()
        }
        other => panic!("expected a refusal, got {other:?}\n{}", report.to_text()),
    }
}

/// Why the first vault failed.
fn failure(report: &RunReport) -> ReconcileError {
    match &report.vaults[0].outcome {
        Outcome::Failed(error) => error.clone(),
        other => panic!("expected a failure, got {other:?}\n{}", report.to_text()),
    }
}

/// A vault that a person keeps `Deny` with a vnet rule and their own rule, taken over by a
/// clean first run with `ranges(0, 10)`; returns the emulator, the scratch dir and the args.
async fn taken_over(name: &str) -> (Emulator, Scratch, Settings) {
    let emulator = start(emulator_config(vec![vault(name, &[PERSON])])).await;
    let dir = Scratch::new();
    let args = args(
        &emulator,
        name,
        &document(&dir, 100, &ranges(0, 10)),
        &dir.join("state"),
    );
    let report = apply(&emulator, &args).await;
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::Applied,
        "{}",
        report.to_text()
    );
    (emulator, dir, args)
}

// ---------------------------------------------------------------------------------------------
// 1. A read without the firewall never opens the vault.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_lacks_the_firewall_is_refused_and_the_vault_kept() {
    let vanished = GateRefusal::FirewallVanished {
        kind: Kind::KeyVault,
        seen: "Deny".to_owned(),
    };
    let lacks = |field: AclField| GateRefusal::IncompleteRead {
        kind: Kind::KeyVault,
        missing: vec![field],
    };
    let cases: Vec<(&str, FaultKind, GateRefusal)> = vec![
        (
            "no networkAcls",
            FaultKind::remove_fields(&["/properties/networkAcls"]),
            vanished.clone(),
        ),
        (
            "networkAcls null",
            FaultKind::null_fields(&["/properties/networkAcls"]),
            vanished,
        ),
        (
            "no properties",
            FaultKind::remove_fields(&["/properties"]),
            lacks(AclField::Properties),
        ),
        (
            "properties null",
            FaultKind::null_fields(&["/properties"]),
            lacks(AclField::Properties),
        ),
        (
            "no ipRules",
            FaultKind::remove_fields(&["/properties/networkAcls/ipRules"]),
            lacks(AclField::IpRules),
        ),
        (
            "ipRules null",
            FaultKind::null_fields(&["/properties/networkAcls/ipRules"]),
            lacks(AclField::IpRules),
        ),
        (
            "no defaultAction",
            FaultKind::remove_fields(&["/properties/networkAcls/defaultAction"]),
            lacks(AclField::DefaultAction),
        ),
        (
            "no bypass",
            FaultKind::remove_fields(&["/properties/networkAcls/bypass"]),
            lacks(AclField::Bypass),
        ),
        (
            "virtualNetworkRules null",
            FaultKind::null_fields(&["/properties/networkAcls/virtualNetworkRules"]),
            lacks(AclField::VirtualNetworkRules),
        ),
        (
            "ipRules []",
            FaultKind::set_field("/properties/networkAcls/ipRules", json!([])),
            GateRefusal::Suspicious {
                kind: Kind::KeyVault,
                present: 0,
                confirmed: 10,
                missing: 10,
                first_missing: nets(&ranges(0, 5)),
            },
        ),
    ];
    for (what, kind, refused) in cases {
        let (emulator, dir, mut args) = taken_over("kv-partial").await;
        // A newer document that retires two ranges and adds one: a write is due.
        args.source = Some(document(&dir, 101, &ranges(2, 9)).display().to_string());
        let before = emulator.vault("kv-partial").unwrap();
        emulator.clear_requests();
        // Every read of this run lies the same way (the first read, and any re-read).
        emulator.add_fault(fault(Route::VaultGet, "kv-partial", kind, 3));
        let report = apply(&emulator, &args).await;
        // Refused by the gate (kind `refused`: nothing written), naming why the read is not
        // trusted.
        assert_eq!(refusal(&report), ReconcileError::Gate(refused), "{what}");
        assert_eq!(patches(&emulator), 0, "{what}: a PATCH was sent");
        assert_eq!(emulator.vault("kv-partial").unwrap(), before, "{what}");
        assert!(!report.vaults[0].wrote);
        // The refusal is recorded as such, not as a failure.
        let status = runner_of(&emulator, &args).status().await.unwrap();
        let recorded = status.vaults[0]
            .1
            .as_ref()
            .and_then(|v| v.last_run.as_ref())
            .map(|run| run.outcome);
        assert_eq!(recorded, Some(RecordedOutcome::Refused), "{what}");
        emulator.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_that_never_had_a_firewall_is_initialised_only_on_request() {
    let emulator = start(emulator_config(vec![vault("kv-open", &[])])).await;
    emulator.update_vault("kv-open", |v| {
        v["properties"]
            .as_object_mut()
            .unwrap()
            .remove("networkAcls");
    });
    let dir = Scratch::new();
    let mut args = args(
        &emulator,
        "kv-open",
        &document(&dir, 100, &ranges(0, 4)),
        &dir.join("state"),
    );
    let before = emulator.vault("kv-open").unwrap();
    let reason = refusal(&apply(&emulator, &args).await);
    assert_eq!(
        reason,
        ReconcileError::Gate(GateRefusal::NoFirewall {
            kind: Kind::KeyVault
        })
    );
    // What the operator reads: where to configure the firewall, and the flag that initialises it.
    assert_eq!(
        reason.to_string(),
        "the vault has no firewall configured (the read has no properties.networkAcls, as a vault that never had one reads); configure its firewall first (Networking → Firewalls and virtual networks), or rerun with --init-firewall to initialise it keeping its current access (defaultAction Allow, AzureServices bypass)"
    );
    assert_eq!(emulator.vault("kv-open").unwrap(), before);
    assert_eq!(patches(&emulator), 0);

    // Initialised on request, keeping the vault's access: Allow, AzureServices.
    args.init_firewall = true;
    let report = apply(&emulator, &args).await;
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::Applied,
        "{}",
        report.to_text()
    );
    let acls = emulator.vault("kv-open").unwrap()["properties"]["networkAcls"].clone();
    assert_eq!(acls["defaultAction"], "Allow");
    assert_eq!(acls["bypass"], "AzureServices");
    assert_eq!(acls["virtualNetworkRules"], json!([]));
    assert_eq!(rules_of(&emulator, "kv-open"), ranges(0, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firewall_seen_deny_is_never_initialised_as_allow() {
    let (emulator, dir, mut args) = taken_over("kv-deny").await;
    args.init_firewall = true;
    args.source = Some(document(&dir, 101, &ranges(1, 10)).display().to_string());
    let before = emulator.vault("kv-deny").unwrap();
    emulator.clear_requests();
    emulator.add_fault(fault(
        Route::VaultGet,
        "kv-deny",
        FaultKind::remove_fields(&["/properties/networkAcls"]),
        3,
    ));
    // Even with --init-firewall: the state saw it Deny.
    let reason = refusal(&apply(&emulator, &args).await);
    assert_eq!(
        reason,
        ReconcileError::Gate(GateRefusal::FirewallVanished {
            kind: Kind::KeyVault,
            seen: "Deny".to_owned()
        })
    );
    assert_eq!(patches(&emulator), 0);
    assert_eq!(emulator.vault("kv-deny").unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_re_read_before_the_write_is_gated_too() {
    // The first read is whole; the re-read just before the PATCH lacks the firewall.
    let (emulator, dir, mut args) = taken_over("kv-reread").await;
    args.source = Some(document(&dir, 101, &ranges(1, 10)).display().to_string());
    let before = emulator.vault("kv-reread").unwrap();
    emulator.clear_requests();
    emulator.add_fault(fault(
        Route::VaultGet,
        "kv-reread",
        FaultKind::Delay { ms: 0 },
        1,
    ));
    emulator.add_fault(fault(
        Route::VaultGet,
        "kv-reread",
        FaultKind::remove_fields(&["/properties/networkAcls/ipRules"]),
        3,
    ));
    let report = apply(&emulator, &args).await;
    assert!(
        !matches!(report.vaults[0].outcome, Outcome::Applied),
        "{}",
        report.to_text()
    );
    assert_eq!(patches(&emulator), 0);
    assert_eq!(emulator.vault("kv-reread").unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_really_removing_our_rules_is_accepted_on_request() {
    let (emulator, _dir, mut args) = taken_over("kv-cleared").await;
    // A person clears every rule but their own.
    emulator.set_ip_rules("kv-cleared", vec![PERSON.to_owned()]);
    let reason = refusal(&apply(&emulator, &args).await);
    assert_eq!(
        reason,
        ReconcileError::Gate(GateRefusal::Suspicious {
            kind: Kind::KeyVault,
            present: 0,
            confirmed: 10,
            missing: 10,
            first_missing: nets(&ranges(0, 5)),
        })
    );
    // What the operator reads: which rules went, and the flag that accepts it.
    assert_eq!(
        reason.to_string(),
        "the vault read shows 0 of the 10 rules tagfence added and confirmed (10 gone: 20.0.0.0/24, 20.1.0.0/24, 20.2.0.0/24, 20.3.0.0/24, 20.4.0.0/24, …); a read that contradicts the state this much is refused as suspicious. If a person really removed them, rerun with --accept-missing-rules"
    );
    assert_eq!(rules_of(&emulator, "kv-cleared"), [PERSON]);
    args.accept_missing_rules = true;
    let report = apply(&emulator, &args).await;
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::Applied,
        "{}",
        report.to_text()
    );
    let mut want = ranges(0, 10);
    want.push(PERSON.to_owned());
    want.sort();
    assert_eq!(rules_of(&emulator, "kv-cleared"), want);
}

// ---------------------------------------------------------------------------------------------
// Verify compares the whole firewall.

/// A write is verified against every field of the firewall, whichever read shows it: the PATCH's
/// answer first, then (when the answer does not show exactly what was sent) a GET.
///
/// Protocol note: the write used to be verified by a GET after it, always; now the PATCH's
/// answer verifies it when it shows exactly the firewall sent. So an answer that differs from
/// the write in any one field must not be taken as its verification (a GET follows, and here
/// the GET shows the write: applied), and a GET that still shows the firewall opened is a
/// mismatch naming that field alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_compares_every_field_of_the_firewall() {
    let verify_reads = [
        Route::VaultGet,
        Route::VaultGet,
        Route::VaultPatch,
        Route::VaultGet,
    ];
    let routes = |emulator: &Emulator| -> Vec<Route> {
        emulator
            .requests()
            .iter()
            .filter(|r| r.vault.as_deref() == Some("kv-verify"))
            .map(|r| r.route)
            .collect()
    };
    // Each field of the answer is compared: an answer differing in one field alone (every rule
    // in it) is not the write's verification.
    let answers = [
        ("defaultAction", json!("Allow")),
        ("bypass", json!("AzureServices")),
        ("virtualNetworkRules", json!([])),
    ];
    for (field, shown) in answers {
        let (emulator, dir, mut args) = taken_over("kv-verify").await;
        args.source = Some(document(&dir, 101, &ranges(1, 10)).display().to_string());
        emulator.clear_requests();
        emulator.add_fault(fault(
            Route::VaultPatch,
            "kv-verify",
            FaultKind::set_field(&format!("/properties/networkAcls/{field}"), shown),
            1,
        ));
        let report = apply(&emulator, &args).await;
        assert_eq!(
            report.vaults[0].outcome,
            Outcome::Applied,
            "{field}: {}",
            report.to_text()
        );
        assert_eq!(routes(&emulator), verify_reads, "{field}");
        emulator.shutdown().await;
    }

    let (emulator, dir, mut args) = taken_over("kv-verify").await;
    args.source = Some(document(&dir, 101, &ranges(1, 10)).display().to_string());
    emulator.clear_requests();
    // The PATCH's answer shows the firewall opened, so the write is read to verify; read and
    // re-read pass, and the verify read shows the firewall opened too.
    let opened = || FaultKind::set_field("/properties/networkAcls/defaultAction", json!("Allow"));
    emulator.add_fault(fault(Route::VaultPatch, "kv-verify", opened(), 1));
    emulator.add_fault(fault(
        Route::VaultGet,
        "kv-verify",
        FaultKind::Delay { ms: 0 },
        2,
    ));
    emulator.add_fault(fault(Route::VaultGet, "kv-verify", opened(), 1));
    let report = apply(&emulator, &args).await;
    let error = failure(&report);
    // Only defaultAction differs: every rule written reads back.
    assert_eq!(
        error,
        ReconcileError::VerifyMismatch(Mismatch {
            fields: vec!["defaultAction".to_owned()],
            total: 11,
            ..Mismatch::default()
        })
    );
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert_eq!(routes(&emulator), verify_reads);
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. A person's rule is never claimed.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_rule_that_a_tag_later_holds_is_never_claimed_nor_removed() {
    let (emulator, dir, mut args) = taken_over("kv-claim").await;
    // The next document adds exactly the person's range to the tag…
    let mut with_person = ranges(0, 10);
    with_person.push(PERSON.to_owned());
    args.source = Some(document(&dir, 101, &with_person).display().to_string());
    let report = apply(&emulator, &args).await;
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::InSync,
        "{}",
        report.to_text()
    );
    let plan = report.vaults[0].plan.as_ref().unwrap();
    assert_eq!(plan.coincident, [PERSON.parse().unwrap()]);
    assert!(
        tagfence::core::render::plan_text(plan).contains("A person's rules equal to desired rules")
    );
    // …and a later one retires it: it stays, the person's.
    args.source = Some(document(&dir, 102, &ranges(0, 10)).display().to_string());
    let report = apply(&emulator, &args).await;
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::InSync,
        "{}",
        report.to_text()
    );
    assert!(rules_of(&emulator, "kv-claim").contains(&PERSON.to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_on_the_vault_before_the_first_run_stays_the_persons_unless_adopted() {
    for adopt in [false, true] {
        let person_range = ranges(3, 1)[0].clone();
        let emulator = start(emulator_config(vec![vault("kv-hand", &[&person_range])])).await;
        let dir = Scratch::new();
        let mut args = args(
            &emulator,
            "kv-hand",
            &document(&dir, 100, &ranges(0, 10)),
            &dir.join("state"),
        );
        args.adopt_existing = adopt;
        let report = apply(&emulator, &args).await;
        assert_eq!(
            report.vaults[0].outcome,
            Outcome::Applied,
            "{}",
            report.to_text()
        );
        assert_eq!(report.vaults[0].plan.as_ref().unwrap().adopting, adopt);
        if adopt {
            assert!(report.to_text().contains("Adopted"), "{}", report.to_text());
        }
        // Microsoft retires the range the person had typed by hand.
        args.adopt_existing = false;
        let retired: Vec<String> = ranges(0, 10)
            .into_iter()
            .filter(|r| *r != person_range)
            .collect();
        args.source = Some(document(&dir, 101, &retired).display().to_string());
        let report = apply(&emulator, &args).await;
        let kept = rules_of(&emulator, "kv-hand").contains(&person_range);
        assert_eq!(kept, !adopt, "adopt {adopt}: {}", report.to_text());
        emulator.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_record_claims_nothing_until_adoption() {
    let (emulator, dir, mut args) = taken_over("kv-old").await;
    // Rewrite the record as format 1 wrote it: every desired rule as tagfence's, no `owned`,
    // and the desired rules with their origins by position in a list beside the rules.
    let key = dir.join("state").join(format!(
        "vaults/{SUBSCRIPTION}/{}/kv-old.json",
        RESOURCE_GROUP.to_ascii_lowercase()
    ));
    let mut record: Value = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
    record["format_version"] = json!(1);
    record.as_object_mut().unwrap().remove("owned");
    let desired = &mut record["applied"]["desired"];
    let names: Vec<Value> = desired["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    let (rules, info): (Vec<Value>, Vec<Value>) = desired["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let origin = match &r["origin"]["tag"] {
                Value::Null => json!("static"),
                name => json!({"tag": names.iter().position(|n| n == name).unwrap()}),
            };
            (
                r["rule"].clone(),
                json!({"origin": origin, "extra_addresses": r["extra_addresses"]}),
            )
        })
        .unzip();
    desired["rules"] = json!(rules);
    desired["info"] = json!(info);
    std::fs::write(&key, serde_json::to_vec(&record).unwrap()).unwrap();

    args.source = Some(document(&dir, 101, &ranges(1, 10)).display().to_string());
    let report = apply(&emulator, &args).await;
    assert!(
        report.vaults[0]
            .warnings
            .iter()
            .any(|w| w.contains("written in format 1") && w.contains("--adopt-existing")),
        "{:?}",
        report.vaults[0].warnings
    );
    // The retired 20.0.0.0/24 is not removed: format 1 could not say who added it.
    assert!(rules_of(&emulator, "kv-old").contains(&"20.0.0.0/24".to_owned()));
    let migrated: Value = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
    assert_eq!(
        migrated["format_version"],
        tagfence::state::VAULT_STATE_FORMAT
    );
    // The one it added in this run is its own.
    assert_eq!(migrated["owned"], json!(["20.10.0.0/24"]));
}

// ---------------------------------------------------------------------------------------------
// 3. A selected tag published empty, or shrunk by more than half, is refused.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_tag_refuses_its_vaults_until_allowed() {
    let (emulator, dir, mut args) = taken_over("kv-empty").await;
    args.selection.tags = vec![TAG.to_owned(), REGION.to_owned()];
    args.limits.max_remove_fraction = Some(1.0);
    args.source = Some(document(&dir, 101, &[]).display().to_string());
    let before = emulator.vault("kv-empty").unwrap();
    let reason = refusal(&apply(&emulator, &args).await);
    assert_eq!(
        reason,
        ReconcileError::Plan(PlanError::Refused(Refusal::TagEmptied {
            tag: TAG.to_owned(),
            change_number: 101,
            before: Some((10, 100)),
        }))
    );
    // What the operator reads: what the tag had before, and the flag that lets it through.
    assert_eq!(
        reason.to_string(),
        "service tag Pipelines has no IPv4 prefixes in change 101 of the Service Tags (it had 10 in change 100, applied last); refusing to apply an emptied tag (it would lock its users out). If that is really intended, rerun with --allow-tag-shrink Pipelines"
    );
    assert_eq!(emulator.vault("kv-empty").unwrap(), before);

    args.allow_tag_shrink = vec!["pipelines".to_owned()];
    let report = apply(&emulator, &args).await;
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::Applied,
        "{}",
        report.to_text()
    );
    assert!(!rules_of(&emulator, "kv-empty").contains(&"20.0.0.0/24".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_that_lost_more_than_half_refuses_its_vaults() {
    let (emulator, dir, mut args) = taken_over("kv-shrink").await;
    args.limits.max_remove_fraction = Some(1.0);
    args.source = Some(document(&dir, 101, &ranges(0, 4)).display().to_string());
    let refused = apply(&emulator, &args).await;
    // The refusal shows the change it refused: six of the tag's ranges to remove.
    let plan = refused.vaults[0]
        .plan
        .as_ref()
        .expect("a refused plan is kept");
    assert_eq!(plan.remove.len(), 6, "{}", refused.to_text());
    assert!(
        refused.to_text().contains("to remove"),
        "{}",
        refused.to_text()
    );
    let reason = refusal(&refused);
    assert!(
        matches!(
            &reason,
            ReconcileError::Plan(PlanError::Refused(Refusal::TagShrank {
                tag,
                before: 10,
                after: 4,
                from: 100,
                to: 101,
                percent,
                max,
            })) if tag == TAG && (percent - 60.0).abs() < 1e-9 && *max == 0.5
        ),
        "{reason:?}"
    );
    assert_eq!(rules_of(&emulator, "kv-shrink").len(), 11);
    // Half is within the default.
    args.source = Some(document(&dir, 102, &ranges(0, 5)).display().to_string());
    let report = apply(&emulator, &args).await;
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::Applied,
        "{}",
        report.to_text()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A process that lost its lock never writes its stale plan.

/// Runs `args` with the vault's re-read held until `meanwhile` has run, then released.
async fn with_reread_held(
    emulator: &Emulator,
    args: &Settings,
    vault: &str,
    meanwhile: impl FnOnce(),
) -> RunReport {
    emulator.add_fault(fault(Route::VaultGet, vault, FaultKind::Delay { ms: 0 }, 1));
    emulator.add_fault(fault(Route::VaultGet, vault, FaultKind::hold("reread"), 1));
    let runner = runner_of(emulator, args);
    let run = tokio::spawn(async move { runner.run(&RunRequest::default()).await });
    assert!(emulator.wait_held("reread", Duration::from_secs(10)).await);
    meanwhile();
    assert_eq!(emulator.release("reread"), 1);
    run.await.unwrap().expect("the run itself succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_taken_over_meanwhile_stops_the_write() {
    let (emulator, dir, mut args) = taken_over("kv-lock").await;
    args.source = Some(document(&dir, 101, &ranges(1, 10)).display().to_string());
    let before = emulator.vault("kv-lock").unwrap();
    emulator.clear_requests();
    let lock = dir.join("state").join(format!(
        "locks/{SUBSCRIPTION}/{}/kv-lock",
        RESOURCE_GROUP.to_ascii_lowercase()
    ));
    let report = with_reread_held(&emulator, &args, "kv-lock", || {
        // Another instance found the lock stale and took it over: a new file, its own token.
        assert!(lock.exists(), "the run holds {}", lock.display());
        std::fs::remove_file(&lock).unwrap();
        std::fs::write(&lock, "pid 1 token another-instance\n").unwrap();
    })
    .await;
    // Lost at the confirmation just before the write: nothing written.
    let error = failure(&report);
    assert!(
        matches!(
            &error,
            ReconcileError::State {
                step: StateStep::ConfirmLock,
                error: StateError::LockLost { lock: lost, .. },
            } if *lost == lock.display().to_string()
        ),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert!(!report.vaults[0].wrote);
    assert_eq!(patches(&emulator), 0);
    assert_eq!(emulator.vault("kv-lock").unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_written_by_another_run_meanwhile_stops_the_write_and_is_kept() {
    let (emulator, dir, mut args) = taken_over("kv-newer").await;
    args.source = Some(document(&dir, 101, &ranges(1, 10)).display().to_string());
    let before = emulator.vault("kv-newer").unwrap();
    emulator.clear_requests();
    let key = dir.join("state").join(format!(
        "vaults/{SUBSCRIPTION}/{}/kv-newer.json",
        RESOURCE_GROUP.to_ascii_lowercase()
    ));
    let mut newer: Value = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
    newer["applied"]["change_number"] = json!(368);
    newer["last_run"]["run_id"] = json!("another-run");
    let report = with_reread_held(&emulator, &args, "kv-newer", || {
        std::fs::write(&key, serde_json::to_vec_pretty(&newer).unwrap()).unwrap();
    })
    .await;
    let error = failure(&report);
    assert_eq!(error, ReconcileError::RecordChanged);
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert_eq!(patches(&emulator), 0);
    assert_eq!(emulator.vault("kv-newer").unwrap(), before);
    // The other run's record stays: never rolled back to this run's change 101.
    let kept: Value = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
    assert_eq!(kept["applied"]["change_number"], 368);
    assert_eq!(kept["last_run"]["run_id"], "another-run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_is_never_moved_back_to_an_older_document() {
    let (emulator, dir, mut args) = taken_over("kv-older").await;
    // The source record is gone (another cloud's run, a restore): the vault's record still knows.
    std::fs::remove_file(dir.join("state/sources/public.json")).unwrap();
    args.source = Some(document(&dir, 99, &ranges(1, 10)).display().to_string());
    let reason = refusal(&apply(&emulator, &args).await);
    assert_eq!(
        reason,
        ReconcileError::OlderThanApplied {
            applied: 100,
            this: 99
        }
    );
    assert_eq!(rules_of(&emulator, "kv-older").len(), 11);
}

// ---------------------------------------------------------------------------------------------
// 7. An unreadable rule is a person's rule.

const ODD: [&str; 3] = ["203.0.113.5/24", "'10.91.4.0/24'", ""];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_rules_are_kept_verbatim_and_reported() {
    let mut rules = vec![PERSON];
    rules.extend(ODD);
    let emulator = start(emulator_config(vec![vault("kv-odd", &rules)])).await;
    let dir = Scratch::new();
    let mut args = args(
        &emulator,
        "kv-odd",
        &document(&dir, 100, &ranges(0, 4)),
        &dir.join("state"),
    );
    let report = apply(&emulator, &args).await;
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::Applied,
        "{}",
        report.to_text()
    );
    let stored = emulator.ip_rules("kv-odd");
    for odd in ODD {
        assert!(stored.contains(&odd.to_owned()), "'{odd}' kept: {stored:?}");
        assert!(
            report.vaults[0]
                .warnings
                .iter()
                .any(|w| w.contains(&format!("IP rule '{odd}'"))),
            "{:?}",
            report.vaults[0].warnings
        );
    }
    assert!(stored.contains(&PERSON.to_owned()));
    // They count against the limit: 4 desired + 1 person's + 3 unreadable = 8 > 7.
    args.limits.max_rules = Some(7);
    args.source = Some(document(&dir, 101, &ranges(1, 4)).display().to_string());
    let reason = refusal(&apply(&emulator, &args).await);
    assert_eq!(
        reason,
        ReconcileError::Plan(PlanError::Desire(DesireError::DoesNotFit {
            count: 4,
            available: 3,
            limit: 7,
            kept: 4,
        }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_live_keeps_unreadable_rules_and_refuses_what_is_not_a_vault() {
    let emulator = start(emulator_config(vec![])).await;
    let dir = Scratch::new();
    let doc = document(&dir, 100, &ranges(0, 4));
    let plan = |live: &Path| {
        let (doc, live) = (doc.display().to_string(), live.display().to_string());
        let emulator = &emulator;
        async move {
            tagfence(
                emulator,
                &[
                    "plan",
                    "--service-tags",
                    &doc,
                    "--tag",
                    TAG,
                    "--live",
                    &live,
                    // A test document of a few tags, not a complete one.
                    "--min-service-tags",
                    "1",
                ],
                &[],
            )
            .await
        }
    };
    let mut odd = vault("kv", &[PERSON]);
    for value in ODD {
        odd["properties"]["networkAcls"]["ipRules"]
            .as_array_mut()
            .unwrap()
            .push(json!({"value": value}));
    }
    let live = dir.join("odd.json");
    std::fs::write(&live, odd.to_string()).unwrap();
    let out = plan(&live).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("IP rule '203.0.113.5/24', which tagfence cannot read"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("Rules tagfence cannot read: 3"),
        "{}",
        stdout(&out)
    );

    for (name, body, says) in [
        (
            "list.json",
            json!({"value": [vault("kv", &[])]}),
            "list response",
        ),
        (
            "error.json",
            json!({"error": {"code": "ResourceNotFound", "message": "not found"}}),
            "ARM error answer",
        ),
        (
            "example.json",
            json!({"parameters": {"vaultName": "kv"}, "responses": {"200": {"body": vault("kv", &[])}}}),
            "API example file",
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body.to_string()).unwrap();
        let out = plan(&path).await;
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("is not a key vault resource") && stderr(&out).contains(says),
            "{name}: {}",
            stderr(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. A summarized fit that fails says why.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fit_that_fails_says_why_in_apply_too() {
    let mut rules: Vec<String> = (0..9).map(|i| format!("52.10.{i}.1/32")).collect();
    rules.push(PERSON.to_owned());
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let emulator = start(emulator_config(vec![vault("kv-full", &rules)])).await;
    let dir = Scratch::new();
    let mut args = args(
        &emulator,
        "kv-full",
        &document(&dir, 100, &ranges(0, 10)),
        &dir.join("state"),
    );
    args.limits.max_rules = Some(10);
    args.limits.fit = Some(tagfence::core::desired::FitMode::Summarize);
    let reason = refusal(&apply(&emulator, &args).await);
    assert_eq!(
        reason,
        ReconcileError::Plan(PlanError::Desire(DesireError::Fit {
            available: 0,
            source: FitError::NoBudget,
        }))
    );
    // What the operator reads: the fit's own cause, not only that it failed.
    assert_eq!(
        reason.to_string(),
        "fitting the selection into 0 rules: no room for any rule: the budget is 0 slots"
    );
}

// ---------------------------------------------------------------------------------------------
// Found by attacking the gate (docs/reliability.md, G19–G21).

/// A write ARM refused leaves no claim behind: the ranges a person then adds by hand stay the
/// person's, and one Microsoft later retires is not removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_leaves_no_claim_on_rules_a_person_adds_afterwards() {
    let emulator = start(emulator_config(vec![vault("kv-403", &[PERSON])])).await;
    let dir = Scratch::new();
    let mut args = args(
        &emulator,
        "kv-403",
        &document(&dir, 100, &ranges(0, 6)),
        &dir.join("state"),
    );
    emulator.add_fault(fault(
        Route::VaultPatch,
        "kv-403",
        FaultKind::Status {
            status: 403,
            code: "AuthorizationFailed".into(),
            message: "no write permission".into(),
            retry_after: None,
        },
        1,
    ));
    let error = failure(&apply(&emulator, &args).await);
    assert!(
        matches!(
            &error,
            ReconcileError::Azure {
                step: AzureStep::Write,
                error: AzureError::Api { status: 403, code, .. },
            } if code == "AuthorizationFailed"
        ),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Rejected);
    // The workaround: a person types the ranges in by hand.
    let mut by_hand = ranges(0, 6);
    by_hand.push(PERSON.to_owned());
    emulator.set_ip_rules("kv-403", by_hand);
    let report = apply(&emulator, &args).await;
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::InSync,
        "{}",
        report.to_text()
    );
    args.source = Some(document(&dir, 101, &ranges(0, 5)).display().to_string());
    let report = apply(&emulator, &args).await;
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::InSync,
        "{}",
        report.to_text()
    );
    assert!(rules_of(&emulator, "kv-403").contains(&"20.5.0.0/24".to_owned()));
}

/// A throttled write is not sent again blind: a person's edit made while ARM had tagfence wait
/// is seen by the reads before the next attempt, and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_made_while_a_throttled_write_waits_is_kept() {
    let (emulator, dir, mut args) = taken_over("kv-429").await;
    args.source = Some(document(&dir, 101, &ranges(1, 10)).display().to_string());
    emulator.clear_requests();
    emulator.add_fault(fault(
        Route::VaultGet,
        "kv-429",
        FaultKind::Delay { ms: 0 },
        2,
    ));
    emulator.add_fault(fault(
        Route::VaultPatch,
        "kv-429",
        FaultKind::Status {
            status: 429,
            code: "SubscriptionRequestsThrottled".into(),
            message: "Number of 'write' requests for subscription exceeded.".into(),
            retry_after: Some(1),
        },
        1,
    ));
    emulator.add_fault(fault(
        Route::VaultGet,
        "kv-429",
        FaultKind::hold("after-429"),
        1,
    ));
    let runner = runner_of(&emulator, &args);
    let run = tokio::spawn(async move { runner.run(&RunRequest::default()).await });
    assert!(
        emulator
            .wait_held("after-429", Duration::from_secs(10))
            .await
    );
    let mut edited = emulator.ip_rules("kv-429");
    edited.push("52.3.3.3/32".to_owned());
    emulator.set_ip_rules("kv-429", edited);
    assert_eq!(emulator.release("after-429"), 1);
    let report = run.await.unwrap().expect("the run itself succeeds");
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::Applied,
        "{}",
        report.to_text()
    );
    let rules = rules_of(&emulator, "kv-429");
    assert!(rules.contains(&"52.3.3.3/32".to_owned()), "{rules:?}");
    assert!(rules.contains(&PERSON.to_owned()), "{rules:?}");
    assert!(!rules.contains(&"20.0.0.0/24".to_owned()), "{rules:?}");
}

/// An answer about another vault (a proxy or cache mixing answers up) is never planned from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_about_another_vault_is_not_planned_from() {
    let (emulator, dir, mut args) = taken_over("kv-mixed").await;
    args.source = Some(document(&dir, 101, &ranges(1, 10)).display().to_string());
    let mut other = vault("kv-other", &[]);
    other["properties"]["networkAcls"]["defaultAction"] = json!("Allow");
    other["properties"]["networkAcls"]["virtualNetworkRules"] = json!([]);
    let before = emulator.vault("kv-mixed").unwrap();
    emulator.clear_requests();
    emulator.add_fault(fault(
        Route::VaultGet,
        "kv-mixed",
        FaultKind::replace_body(other),
        3,
    ));
    let error = failure(&apply(&emulator, &args).await);
    // The first read is not planned from; why is only in the decode error's detail, which
    // is text (the message an operator reads).
    let expected_detail = format!(
        "the answer is not vault {} (its id is '{}'); nothing is planned from it",
        vault_id("kv-mixed"),
        vault_id("kv-other")
    );
    assert!(
        matches!(
            &error,
            ReconcileError::Azure {
                step: AzureStep::Observe,
                error: AzureError::Decode { operation, detail },
            } if operation == "reading vault kv-mixed" && *detail == expected_detail
        ),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert_eq!(patches(&emulator), 0);
    assert_eq!(emulator.vault("kv-mixed").unwrap(), before);
}

/// A read that shows a firewall tagfence saw closed as open is not written from at once: a
/// lying read would otherwise open the real vault. A person's real change goes through the run
/// after the first that saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_shows_the_firewall_opened_is_not_written_from_at_once() {
    let (emulator, dir, mut args) = taken_over("kv-opened").await;
    args.source = Some(document(&dir, 101, &ranges(1, 10)).display().to_string());
    let before = emulator.vault("kv-opened").unwrap();
    emulator.clear_requests();
    emulator.add_fault(fault(
        Route::VaultGet,
        "kv-opened",
        FaultKind::set_field("/properties/networkAcls/defaultAction", json!("Allow")),
        3,
    ));
    let reason = refusal(&apply(&emulator, &args).await);
    assert_eq!(
        reason,
        ReconcileError::Gate(GateRefusal::OpenedSinceSeen {
            kind: Kind::KeyVault,
            field: "defaultAction",
            seen: "Deny".to_owned(),
            read: "Allow".to_owned(),
        })
    );
    assert_eq!(patches(&emulator), 0);
    assert_eq!(emulator.vault("kv-opened").unwrap(), before);

    // A person really opens it: the refused run saw it open, so the next run writes (keeping
    // Allow, as read). A lying read has to lie twice in a row to be written from.
    emulator.update_vault("kv-opened", |v| {
        v["properties"]["networkAcls"]["defaultAction"] = json!("Allow");
    });
    let report = apply(&emulator, &args).await;
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::Applied,
        "{}",
        report.to_text()
    );
    let acls = emulator.vault("kv-opened").unwrap()["properties"]["networkAcls"].clone();
    assert_eq!(acls["defaultAction"], "Allow");
}
