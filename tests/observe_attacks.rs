//! Adversarial tests of observing through Resource Graph (issue 17): an index that lies, is
//! stale, malformed or loops; quota headers that are garbage; state records hand-edited; runs at
//! once; subscriptions in another case; discovery; dry runs; the Event Grid hook. Each test
//! asserts the SAFE behaviour. Tests named `hardening_*` assert a stronger property than the
//! claims promise (a finding there is a hardening suggestion, not a broken claim).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::observe::*;
use support::*;
use tagfence::azure::budget::{parse_hh_mm_ss, BudgetLimits, GraphQuota};
use tagfence::config::{Config, Observe, Settings};
use tagfence::reconcile::{Observed, Outcome};
use tagfence::run::{RunRequest, Runner};
use tagfence_emulator::{Emulator, Fault, FaultKind, GraphIndex, Route};

const MANUAL_B: &str = "52.174.10.21/32";
const PERSON_NEW: &str = "52.174.99.1/32";

/// What tagfence would write on a vault holding `extra` besides.
fn desired_with(extra: &[&str]) -> Vec<String> {
    let mut all: Vec<&str> = AZURE_DEVOPS.to_vec();
    all.extend_from_slice(extra);
    sorted(&all)
}

/// A Resource Graph row for the vault `name` as the emulator stores it now.
fn row_of(emulator: &Emulator, name: &str) -> Value {
    let v = emulator.vault(name).expect("vault exists");
    json!({
        "id": v["id"],
        "name": v["name"],
        "tags": v["tags"],
        "networkAcls": v["properties"]["networkAcls"],
        "publicNetworkAccess": v["properties"]["publicNetworkAccess"],
    })
}

/// Resource Graph answers the next `count` queries with these rows (the query itself runs).
fn graph_answers(emulator: &Emulator, rows: Vec<Value>, count: u32) {
    emulator.add_fault(Fault {
        route: Some(Route::ResourceGraph),
        vault: None,
        kind: FaultKind::set_field("/data", Value::Array(rows)),
        count,
    });
}

/// Everything of a vault but its IP rules (what tagfence must never change).
fn all_but_ip_rules(emulator: &Emulator, name: &str) -> Value {
    let mut v = emulator.vault(name).unwrap();
    v["properties"]["networkAcls"]
        .as_object_mut()
        .unwrap()
        .remove("ipRules");
    v
}

/// An emulator with these vaults (each holding `MANUAL`), a state directory, and a first run
/// done: every vault in sync, with a record.
async fn fleet_in_sync(names: &[&str], index: GraphIndex) -> (Emulator, Scratch, Settings) {
    let mut config = emulator_config(names.iter().map(|n| vault(n, &[MANUAL])).collect());
    config.graph_index = index;
    let emulator = start(config).await;
    let scratch = Scratch::new();
    let settings = settings(&emulator, &ids(names), Some(&scratch));
    let report = run(&runner(&emulator, &settings, true)).await;
    assert!(report.vaults.iter().all(|v| v.outcome == Outcome::Applied));
    emulator.refresh_index();
    emulator.clear_requests();
    (emulator, scratch, settings)
}

fn record_path(scratch: &Scratch, name: &str) -> std::path::PathBuf {
    scratch.join(&format!(
        "state/vaults/{SUBSCRIPTION}/{RESOURCE_GROUP}/{name}.json"
    ))
}

// ---------------------------------------------------------------------------------------------
// Claim 2: a lying index never causes a wrong write.
// ---------------------------------------------------------------------------------------------

/// Rows that swap two vaults' firewalls: kv-a's id carries kv-b's (in-sync) firewall while ARM's
/// kv-a lacks two of tagfence's rules; kv-b's id carries kv-a's broken firewall. Nothing of
/// kv-b's may reach kv-a; kv-b is read through ARM and left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_swap_firewalls_between_vaults_never_write_one_vaults_rules_to_another() {
    let mut config = emulator_config(vec![vault("kv-a", &[MANUAL]), vault("kv-b", &[MANUAL_B])]);
    config.graph_index = GraphIndex::Manual;
    let emulator = start(config).await;
    let scratch = Scratch::new();
    let settings = settings(&emulator, &ids(&["kv-a", "kv-b"]), Some(&scratch));
    run(&runner(&emulator, &settings, true)).await;
    let mut rules = rules_of(&emulator, "kv-a");
    rules.retain(|r| r != AZURE_DEVOPS[0] && r != AZURE_DEVOPS[1]);
    emulator.set_ip_rules("kv-a", rules.clone());
    let mut a_row = row_of(&emulator, "kv-b");
    a_row["id"] = json!(vault_id("kv-a"));
    a_row["name"] = json!("kv-a");
    let mut b_row = row_of(&emulator, "kv-a");
    b_row["id"] = json!(vault_id("kv-b"));
    b_row["name"] = json!("kv-b");
    graph_answers(&emulator, vec![a_row, b_row], 1);
    emulator.clear_requests();
    let report = run(&runner(&emulator, &settings, true)).await;
    // kv-b: read through ARM (the row shows work), in sync, untouched.
    assert_eq!(report.vaults[1].outcome, Outcome::InSync);
    assert_eq!(report.vaults[1].observed, Observed::Arm);
    assert_eq!(rules_of(&emulator, "kv-b"), desired_with(&[MANUAL_B]));
    // kv-a: delayed at worst; never gains kv-b's person rule nor loses its own.
    let a = rules_of(&emulator, "kv-a");
    assert!(a.contains(&MANUAL.to_owned()), "{a:?}");
    assert!(!a.contains(&MANUAL_B.to_owned()), "{a:?}");
    assert_eq!(count_for(&emulator, Route::VaultPatch, "kv-b"), 0);
    emulator.shutdown().await;
}

/// The index shows a person's rule ARM no longer has and lacks one of tagfence's; ARM shows the
/// person replaced their rule. The write (planned from ARM) restores tagfence's rule, keeps the
/// person's new rule and never brings back the one the person removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_never_restores_a_person_rule_the_index_still_shows() {
    let (emulator, _scratch, settings) = fleet_in_sync(&["kv-a"], GraphIndex::Manual).await;
    let mut rules: Vec<String> = rules_of(&emulator, "kv-a");
    rules.retain(|r| r != MANUAL && r != AZURE_DEVOPS[3]);
    rules.push(PERSON_NEW.to_owned());
    emulator.set_ip_rules("kv-a", rules);
    // The index: tagfence's rule missing too (needs work) but the person's old rule still there.
    let mut row = row_of(&emulator, "kv-a");
    row["networkAcls"]["ipRules"] = json!(desired_with(&[MANUAL])
        .into_iter()
        .filter(|r| r != AZURE_DEVOPS[3] && r != AZURE_DEVOPS[4])
        .map(|r| json!({ "value": r }))
        .collect::<Vec<_>>());
    graph_answers(&emulator, vec![row], 1);
    let before = all_but_ip_rules(&emulator, "kv-a");
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(outcomes(&report), vec![Outcome::Applied]);
    assert_eq!(rules_of(&emulator, "kv-a"), desired_with(&[PERSON_NEW]));
    assert_eq!(all_but_ip_rules(&emulator, "kv-a"), before);
    emulator.shutdown().await;
}

/// The index shows the vault in sync while ARM lacks the person's rule and one of tagfence's:
/// nothing is written (a delay); the person's rule is not re-added by anybody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_in_sync_while_arm_lacks_a_person_rule_touches_nothing() {
    let (emulator, _scratch, settings) = fleet_in_sync(&["kv-a"], GraphIndex::Manual).await;
    let mut rules = rules_of(&emulator, "kv-a");
    rules.retain(|r| r != MANUAL && r != AZURE_DEVOPS[5]);
    emulator.set_ip_rules("kv-a", rules.clone());
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(outcomes(&report), vec![Outcome::InSync]);
    assert_eq!(observed(&report), vec![Observed::ResourceGraph]);
    assert_eq!(count(&emulator, Route::VaultPatch), 0);
    assert_eq!(count(&emulator, Route::VaultGet), 0);
    rules.sort();
    assert_eq!(rules_of(&emulator, "kv-a"), rules);
    // Through ARM: tagfence's rule comes back, the person's does not.
    let report = runner(&emulator, &settings, true)
        .run(&RunRequest {
            read_through_arm: true,
            trigger: "eventgrid",
            ..RunRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(
        outcomes(&report),
        vec![Outcome::Applied],
        "{}",
        report.to_text()
    );
    assert_eq!(rules_of(&emulator, "kv-a"), desired_with(&[]));
    emulator.shutdown().await;
}

/// The index shows the firewall open (Allow, AzureServices) or closed in ways ARM does not:
/// nothing but ipRules is ever changed, and an index showing it open never leads to a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_showing_the_firewall_open_or_closed_otherwise_changes_nothing_but_ip_rules() {
    let (emulator, scratch, settings) = fleet_in_sync(&["kv-a", "kv-b"], GraphIndex::Manual).await;
    // kv-a: ARM is open (Allow) and lacks a rule; the index shows it closed and in sync.
    emulator.update_vault("kv-a", |v| {
        v["properties"]["networkAcls"]["defaultAction"] = json!("Allow");
        v["properties"]["networkAcls"]["bypass"] = json!("AzureServices");
    });
    // kv-b: ARM is closed and in sync; the index shows it open, with rules missing.
    let mut b_row = row_of(&emulator, "kv-b");
    b_row["networkAcls"]["defaultAction"] = json!("Allow");
    b_row["networkAcls"]["bypass"] = json!("AzureServices");
    b_row["networkAcls"]["ipRules"] = json!([]);
    let a_row = row_of(&emulator, "kv-a");
    let mut a_row_closed = a_row.clone();
    a_row_closed["networkAcls"]["defaultAction"] = json!("Deny");
    a_row_closed["networkAcls"]["bypass"] = json!("None");
    graph_answers(&emulator, vec![a_row_closed, b_row], 1);
    let a_before = all_but_ip_rules(&emulator, "kv-a");
    let b_before = all_but_ip_rules(&emulator, "kv-b");
    let record_a_before = std::fs::read(record_path(&scratch, "kv-a")).unwrap();
    let report = runner(&emulator, &settings, true)
        .run(&RunRequest::default())
        .await
        .unwrap();
    assert_eq!(all_but_ip_rules(&emulator, "kv-a"), a_before);
    assert_eq!(all_but_ip_rules(&emulator, "kv-b"), b_before);
    assert_eq!(rules_of(&emulator, "kv-b"), desired_with(&[MANUAL]));
    assert_eq!(
        count(&emulator, Route::VaultPatch),
        0,
        "{}",
        report.to_text()
    );
    // The index's view of kv-a (closed) never lands in its record's seen_* fields.
    let record_a: Value =
        serde_json::from_slice(&std::fs::read(record_path(&scratch, "kv-a")).unwrap()).unwrap();
    let before: Value = serde_json::from_slice(&record_a_before).unwrap();
    assert_eq!(
        record_a["seen_default_action"],
        before["seen_default_action"]
    );
    assert_eq!(record_a["seen_bypass"], before["seen_bypass"]);
    emulator.shutdown().await;
}

/// Hardening: two rows for one vault that disagree (one in sync, one not) are a contradiction
/// the index cannot resolve; the vault should be read through ARM whichever row comes last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardening_conflicting_duplicate_rows_do_not_vouch() {
    let (emulator, _scratch, settings) = fleet_in_sync(&["kv-a"], GraphIndex::Live).await;
    let in_sync_row = row_of(&emulator, "kv-a");
    let mut rules = rules_of(&emulator, "kv-a");
    rules.retain(|r| r != AZURE_DEVOPS[0]);
    emulator.set_ip_rules("kv-a", rules);
    let broken_row = row_of(&emulator, "kv-a");
    let mut seen = Vec::new();
    for rows in [
        vec![broken_row.clone(), in_sync_row.clone()],
        vec![in_sync_row.clone(), broken_row.clone()],
    ] {
        graph_answers(&emulator, rows, 1);
        let report = run(&runner(&emulator, &settings, true)).await;
        seen.push((observed(&report)[0], outcomes(&report)[0].clone()));
        // Break it again for the second order.
        let mut rules = rules_of(&emulator, "kv-a");
        rules.retain(|r| r != AZURE_DEVOPS[0]);
        emulator.set_ip_rules("kv-a", rules);
    }
    assert_eq!(
        seen,
        vec![
            (Observed::Arm, Outcome::Applied),
            (Observed::Arm, Outcome::Applied)
        ],
        "conflicting duplicate rows: (observed, outcome) per row order"
    );
    emulator.shutdown().await;
}

/// A row whose id is the vault's in another case is the vault (ARM ids are case-insensitive);
/// rows for vaults that are not targeted (other subscriptions, other groups, same names) never
/// cause a read or a write of anything, even by the tens of thousands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_in_another_case_and_many_rows_for_other_vaults() {
    let (emulator, _scratch, settings) = fleet_in_sync(&["kv-a"], GraphIndex::Live).await;
    let mut row = row_of(&emulator, "kv-a");
    row["id"] = json!(vault_id("kv-a").to_ascii_uppercase());
    let mut rows = vec![row];
    let broken = {
        let mut r = row_of(&emulator, "kv-a");
        r["networkAcls"]["ipRules"] = json!([]);
        r
    };
    for i in 0..20_000 {
        let mut r = broken.clone();
        r["id"] = json!(vault_id(&format!("kv-other-{i}"))
            .replace(RESOURCE_GROUP, &format!("rg-{}", i % 7))
            .replace(SUBSCRIPTION, "00000000-0000-0000-0000-0000000000ff"));
        r["name"] = json!(format!("kv-other-{i}"));
        r["networkAcls"]["ipRules"] = json!([{"value": "0.0.0.0/0"}]);
        rows.push(r);
    }
    graph_answers(&emulator, rows, 1);
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(outcomes(&report), vec![Outcome::InSync]);
    assert_eq!(observed(&report), vec![Observed::ResourceGraph]);
    assert_eq!(count(&emulator, Route::VaultGet), 0);
    assert_eq!(count(&emulator, Route::VaultPatch), 0);
    assert_eq!(report.vaults.len(), 1);
    emulator.shutdown().await;
}

/// Rows of the wrong shape (networkAcls a string, ipRules an object, id a number, tags a string,
/// a row that is a string, null rows), and an answer whose `data` is not an array: every vault
/// is read through ARM, the run succeeds, nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rows_and_answers_fall_back_to_arm() {
    let (emulator, _scratch, settings) =
        fleet_in_sync(&["kv-a", "kv-b", "kv-c", "kv-d"], GraphIndex::Live).await;
    let mut a = row_of(&emulator, "kv-a");
    a["networkAcls"] = json!("Deny");
    let mut b = row_of(&emulator, "kv-b");
    b["networkAcls"]["ipRules"] = json!({"value": AZURE_DEVOPS[0]});
    let mut c = row_of(&emulator, "kv-c");
    c["tags"] = json!("tagfence=on");
    c["networkAcls"]["ipRules"] = json!([{"value": 42}, {"nope": true}, null]);
    let mut d = row_of(&emulator, "kv-d");
    d["networkAcls"]["defaultAction"] = json!(["Deny"]);
    let rows = vec![
        a,
        b,
        c,
        d,
        json!({"id": 12}),
        json!("a row"),
        Value::Null,
        json!([1, 2]),
    ];
    graph_answers(&emulator, rows, 1);
    let report = run(&runner(&emulator, &settings, true)).await;
    assert!(
        report.vaults.iter().all(|v| v.outcome == Outcome::InSync),
        "{}",
        report.to_text()
    );
    // kv-c's row has unreadable rules; whatever it vouches, no write and no failure.
    assert_eq!(report.vaults[0].observed, Observed::Arm);
    assert_eq!(report.vaults[1].observed, Observed::Arm);
    assert_eq!(report.vaults[3].observed, Observed::Arm);
    assert_eq!(count(&emulator, Route::VaultPatch), 0);

    // `data` an object: the query fails, every vault is read through ARM.
    emulator.clear_requests();
    emulator.add_fault(Fault {
        route: Some(Route::ResourceGraph),
        vault: None,
        kind: FaultKind::set_field("/data", json!({"rows": []})),
        count: 1,
    });
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(observed(&report), vec![Observed::Arm; 4]);
    assert_eq!(count(&emulator, Route::VaultPatch), 0);
    // A body that is not JSON at all.
    emulator.clear_requests();
    emulator.add_fault(Fault {
        route: Some(Route::ResourceGraph),
        vault: None,
        kind: FaultKind::replace_body(json!("<html>gateway</html>")),
        count: 1,
    });
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(observed(&report), vec![Observed::Arm; 4]);
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Claims 4 and 6: quotas, failing or looping queries; does a run hang?
// ---------------------------------------------------------------------------------------------

/// Resource Graph answers every page with the same `$skipToken` (a paging loop), under its
/// default quota (15 queries / 5 s). The run should notice the loop (or bound the query) and
/// fall back to ARM in reasonable time, not page 1,000 times at the quota's pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skip_token_loop_does_not_hold_the_run_for_minutes() {
    let (emulator, _scratch, settings) = fleet_in_sync(&["kv-a"], GraphIndex::Live).await;
    emulator.add_fault(Fault {
        route: Some(Route::ResourceGraph),
        vault: None,
        kind: FaultKind::set_field("/$skipToken", json!("tfemu-skip-0")),
        count: 100_000,
    });
    let runner = runner(&emulator, &settings, true);
    let started = std::time::Instant::now();
    let result =
        tokio::time::timeout(Duration::from_secs(45), runner.run(&RunRequest::default())).await;
    let pages = count(&emulator, Route::ResourceGraph);
    let elapsed = started.elapsed();
    emulator.clear_faults();
    let report = result.unwrap_or_else(|_| {
        panic!("the run was still paging after {elapsed:?}: {pages} Resource Graph queries sent, all with the same $skipToken")
    });
    let report = report.unwrap();
    assert_eq!(report.failures(), 0, "{}", report.to_text());
    assert_eq!(outcomes(&report), vec![Outcome::InSync]);
    emulator.shutdown().await;
}

/// Resource Graph answers 429 with a Retry-After of two minutes (longer than tagfence waits):
/// the query fails at once and the run reads through ARM, in seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_query_with_a_long_retry_after_falls_back_quickly() {
    let (emulator, _scratch, settings) = fleet_in_sync(&["kv-a"], GraphIndex::Live).await;
    emulator.add_fault(Fault {
        route: Some(Route::ResourceGraph),
        vault: None,
        kind: FaultKind::Status {
            status: 429,
            code: "RateLimiting".into(),
            message: "slow down".into(),
            retry_after: Some(120),
        },
        count: 100,
    });
    let started = std::time::Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        run(&runner(&emulator, &settings, true)),
    )
    .await
    .expect("the run does not wait two minutes for Resource Graph");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(observed(&report), vec![Observed::Arm]);
    assert_eq!(outcomes(&report), vec![Outcome::InSync]);
    emulator.shutdown().await;
}

/// `x-ms-user-quota-resets-after` values Resource Graph (or a proxy) could send: none may panic,
/// `00:00:00` holds nothing, and a huge value holds at most the documented minute.
#[tokio::test(start_paused = true)]
async fn graph_quota_headers_that_are_garbage_or_huge_never_panic_nor_hang() {
    for text in [
        "00:00:00",
        "5124095576030432:00:00", // hours * 3600 overflows u64
        "18446744073709551615:59:59.999",
        "99999999:59:59",
        "0:0:NaN",
        "0:0:inf",
        " 00:00:01 ",
        "00:00:-1",
        "",
    ] {
        let parsed = std::panic::catch_unwind(|| parse_hh_mm_ss(text));
        assert!(parsed.is_ok(), "parse_hh_mm_ss({text:?}) panicked");
    }
    let quota = GraphQuota::default();
    quota.observe(Some("0"), Some("00:00:00"));
    assert_eq!(quota.wait().await, Duration::ZERO);
    quota.observe(Some("-1"), Some("00:00:30"));
    assert_eq!(quota.wait().await, Duration::ZERO);
    quota.observe(Some("0"), Some("garbage"));
    assert_eq!(quota.wait().await, Duration::ZERO);
    quota.observe(Some("0"), Some("99999999:00:00"));
    let started = tokio::time::Instant::now();
    quota.wait().await;
    assert!(started.elapsed() <= Duration::from_secs(60));
    let quota = GraphQuota::default();
    let huge = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        quota.observe(Some("0"), Some("5124095576030432:00:00"))
    }));
    assert!(
        huge.is_ok(),
        "a huge resets-after header panicked in GraphQuota::observe"
    );
}

// ---------------------------------------------------------------------------------------------
// Claim 1: when the index may vouch.
// ---------------------------------------------------------------------------------------------

/// State records hand-edited: `written_at` in the future, `applied` taken out, pending rules
/// left, `written_at` unparsable. None may be vouched for by the index; nothing is written
/// wrongly; an unreadable record is a failure of that vault, not a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edited_state_records_are_never_vouched_for() {
    let (emulator, scratch, settings) =
        fleet_in_sync(&["kv-a", "kv-b", "kv-c", "kv-d"], GraphIndex::Live).await;
    let edit = |name: &str, f: &dyn Fn(&mut Value)| {
        let path = record_path(&scratch, name);
        let mut record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut record);
        std::fs::write(&path, serde_json::to_vec_pretty(&record).unwrap()).unwrap();
    };
    edit("kv-a", &|r| {
        r["written_at"] = json!("2999-01-01T00:00:00.000Z")
    });
    edit("kv-b", &|r| {
        r.as_object_mut().unwrap().remove("applied");
    });
    edit("kv-c", &|r| r["pending"] = json!([AZURE_DEVOPS[0]]));
    edit("kv-d", &|r| r["written_at"] = json!("yesterday-ish"));
    let report = runner(&emulator, &settings, true)
        .run(&RunRequest::default())
        .await
        .unwrap();
    let text = report.to_text();
    for (i, name) in ["kv-a", "kv-b", "kv-c"].iter().enumerate() {
        assert_eq!(report.vaults[i].observed, Observed::Arm, "{name}: {text}");
        assert_eq!(report.vaults[i].outcome, Outcome::InSync, "{name}: {text}");
    }
    assert_ne!(report.vaults[3].observed, Observed::ResourceGraph, "{text}");
    assert_ne!(report.vaults[3].outcome, Outcome::InSync, "kv-d: {text}");
    assert_eq!(count(&emulator, Route::VaultPatch), 0);
    for name in ["kv-a", "kv-b", "kv-c", "kv-d"] {
        assert_eq!(rules_of(&emulator, name), desired_with(&[MANUAL]), "{name}");
    }
    emulator.shutdown().await;
}

/// Adopting (`--adopt-existing`) is never vouched for by the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopting_is_never_vouched_for() {
    let (emulator, _scratch, settings) = fleet_in_sync(&["kv-a"], GraphIndex::Live).await;
    let adopt = Settings {
        adopt_existing: true,
        ..settings.clone()
    };
    let report = run(&runner(&emulator, &adopt, true)).await;
    assert_eq!(observed(&report), vec![Observed::Arm]);
    emulator.shutdown().await;
}

/// `written_at` is when the run started, not when its write landed: a run whose write lands
/// late (here 2.5 s after it started, with the trust window at 2 s) must still have the next
/// run (right after) read through ARM, since the write is younger than the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trust_window_counts_from_the_write_not_from_the_runs_start() {
    let emulator = start(emulator_config(vec![vault("kv-a", &[MANUAL])])).await;
    let scratch = Scratch::new();
    let settings = settings(&emulator, &ids(&["kv-a"]), Some(&scratch));
    let window = Duration::from_secs(2);
    emulator.add_fault(Fault {
        route: Some(Route::VaultPatch),
        vault: Some("kv-a".into()),
        kind: FaultKind::Delay { ms: 2_500 },
        count: 1,
    });
    let report = run(&runner_with(&emulator, &settings, window)).await;
    assert_eq!(outcomes(&report), vec![Outcome::Applied]);
    let written_at = std::time::Instant::now();
    let report = run(&runner_with(&emulator, &settings, window)).await;
    assert!(written_at.elapsed() < window);
    assert_eq!(
        observed(&report),
        vec![Observed::Arm],
        "the index vouched for a vault written {:?} ago (window {window:?})",
        written_at.elapsed()
    );
    emulator.shutdown().await;
}

/// A subscription id in another case across targets: one lane, one query, both vouched for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_in_another_case_across_targets() {
    let sub = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    let mut a = vault("kv-a", &[MANUAL]);
    a["id"] = json!(vault_id("kv-a").replace(SUBSCRIPTION, sub));
    let mut b = vault("kv-b", &[MANUAL]);
    b["id"] = json!(vault_id("kv-b").replace(SUBSCRIPTION, sub));
    let emulator = start(emulator_config(vec![a, b])).await;
    let scratch = Scratch::new();
    let targets = vec![
        vault_id("kv-a").replace(SUBSCRIPTION, &sub.to_ascii_uppercase()),
        vault_id("kv-b").replace(SUBSCRIPTION, sub),
    ];
    let settings = settings(&emulator, &targets, Some(&scratch));
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(outcomes(&report), vec![Outcome::Applied; 2]);
    emulator.clear_requests();
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(outcomes(&report), vec![Outcome::InSync; 2]);
    assert_eq!(count(&emulator, Route::ResourceGraph), 1);
    assert_eq!(
        observed(&report),
        vec![Observed::ResourceGraph; 2],
        "{}",
        report.to_text()
    );
    assert_eq!(count(&emulator, Route::VaultGet), 0);
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Claim 3: verification of the write.
// ---------------------------------------------------------------------------------------------

/// The PATCH answer shows exactly the firewall sent, but a person edits the vault right after
/// (removing one of tagfence's rules, adding their own): the write is verified from the answer;
/// the next run, once the index is trusted again, sees the change (the index is live) and fixes
/// it through ARM, keeping the person's rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_answer_showing_the_write_while_the_vault_moved_is_caught_next_run() {
    let emulator = start(emulator_config(vec![vault("kv-a", &[MANUAL])])).await;
    let scratch = Scratch::new();
    let settings = settings(&emulator, &ids(&["kv-a"]), Some(&scratch));
    emulator.add_fault(Fault {
        route: Some(Route::VaultPatch),
        vault: Some("kv-a".into()),
        kind: FaultKind::EditAfter {
            add: vec![PERSON_NEW.to_owned()],
            remove: vec![AZURE_DEVOPS[7].to_owned()],
        },
        count: 1,
    });
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(outcomes(&report), vec![Outcome::Applied]);
    assert_eq!(
        count(&emulator, Route::VaultGet),
        2,
        "verified from the answer"
    );
    emulator.clear_requests();
    let report = runner(&emulator, &settings, true)
        .run(&RunRequest::default())
        .await
        .unwrap();
    assert_eq!(
        observed(&report),
        vec![Observed::Arm],
        "{}",
        report.to_text()
    );
    let rules = rules_of(&emulator, "kv-a");
    assert!(rules.contains(&PERSON_NEW.to_owned()));
    assert!(rules.contains(&MANUAL.to_owned()));
    assert_eq!(
        outcomes(&report),
        vec![Outcome::Applied],
        "{}",
        report.to_text()
    );
    emulator.shutdown().await;
}

/// A PATCH answer that shows the rules sent but the firewall opened (defaultAction Allow) is
/// not "exactly the firewall sent": a GET verifies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_answer_showing_the_firewall_opened_is_verified_by_a_read() {
    let emulator = start(emulator_config(vec![vault("kv-a", &[])])).await;
    emulator.add_fault(Fault {
        route: Some(Route::VaultPatch),
        vault: Some("kv-a".into()),
        kind: FaultKind::set_field("/properties/networkAcls/defaultAction", json!("Allow")),
        count: 1,
    });
    let settings = settings(&emulator, &ids(&["kv-a"]), None);
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(outcomes(&report), vec![Outcome::Applied]);
    let routes: Vec<Route> = emulator
        .requests()
        .iter()
        .filter(|r| r.vault.as_deref() == Some("kv-a"))
        .map(|r| r.route)
        .collect();
    assert_eq!(
        routes,
        [
            Route::VaultGet,
            Route::VaultGet,
            Route::VaultPatch,
            Route::VaultGet
        ]
    );
    emulator.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Concurrency, discovery, dry runs, the hook.
// ---------------------------------------------------------------------------------------------

/// Two runs at once (two processes sharing one state) with a stale index: every vault ends with
/// tagfence's rules and the person's, each written at most once, no failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_with_a_stale_index() {
    let names = ["kv-a", "kv-b", "kv-c"];
    let (emulator, _scratch, settings) = fleet_in_sync(&names, GraphIndex::Manual).await;
    for name in names {
        let mut rules = rules_of(&emulator, name);
        rules.retain(|r| r != AZURE_DEVOPS[2]);
        rules.push(PERSON_NEW.to_owned());
        emulator.set_ip_rules(name, rules);
    }
    // The index still shows them in sync; each run trusts it for none (a write just happened).
    let one = runner(&emulator, &settings, false);
    let two = runner(&emulator, &settings, false);
    let request = RunRequest::default();
    let (r1, r2) = tokio::join!(one.run(&request), two.run(&request));
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(
        r1.failures() + r2.failures(),
        0,
        "{}\n{}",
        r1.to_text(),
        r2.to_text()
    );
    for name in names {
        assert_eq!(
            rules_of(&emulator, name),
            desired_with(&[MANUAL, PERSON_NEW]),
            "{name}"
        );
        assert_eq!(count_for(&emulator, Route::VaultPatch, name), 1, "{name}");
    }
    emulator.shutdown().await;
}

fn tagged(name: &str, value: &str) -> Value {
    let mut v = vault(name, &[MANUAL]);
    v["tags"] = json!({"tagfence": value});
    v
}

/// Discovery with index observation: a vault whose tag went (ARM) while the stale index still
/// shows it tagged and in sync is never written; once the index shows work, ARM says the tag is
/// gone and it is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_with_a_stale_index_never_writes_an_untagged_vault() {
    let mut config = emulator_config(vec![tagged("kv-a", "default"), tagged("kv-b", "default")]);
    config.graph_index = GraphIndex::Manual;
    let emulator = start(config).await;
    let scratch = Scratch::new();
    let settings = Settings {
        discover_subscriptions: vec![SUBSCRIPTION.to_owned()],
        ..settings(&emulator, &[], Some(&scratch))
    };
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(
        outcomes(&report),
        vec![Outcome::Applied; 2],
        "{}",
        report.to_text()
    );
    emulator.refresh_index();
    // Second run: discovered and vouched for by the index.
    emulator.clear_requests();
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(observed(&report), vec![Observed::ResourceGraph; 2]);
    assert_eq!(count(&emulator, Route::VaultGet), 0);
    // kv-a loses its tag and a tagfence rule in ARM; the index still shows both.
    emulator.update_vault("kv-a", |v| v["tags"] = json!({}));
    let mut rules = rules_of(&emulator, "kv-a");
    rules.retain(|r| r != AZURE_DEVOPS[0]);
    emulator.set_ip_rules("kv-a", rules.clone());
    emulator.clear_requests();
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(count(&emulator, Route::VaultPatch), 0);
    assert_eq!(rules_of(&emulator, "kv-a"), {
        let mut r = rules.clone();
        r.sort();
        r
    });
    let _ = report;
    // The index now shows kv-a's firewall needing work (but still the tag): ARM says untagged.
    let mut row = row_of(&emulator, "kv-a");
    row["tags"] = json!({"tagfence": "default"});
    let b_row = row_of(&emulator, "kv-b");
    // Both queries of the run (discovery, firewalls) see the same stale rows.
    graph_answers(&emulator, vec![row, b_row], 2);
    emulator.clear_requests();
    let report = runner(&emulator, &settings, true)
        .run(&RunRequest::default())
        .await
        .unwrap();
    let a = report
        .vaults
        .iter()
        .find(|v| v.vault.name == "kv-a")
        .unwrap();
    assert!(
        matches!(a.outcome, Outcome::Skipped { .. }),
        "{}",
        report.to_text()
    );
    assert_eq!(count_for(&emulator, Route::VaultPatch, "kv-a"), 0);
    emulator.shutdown().await;
}

/// A dry run never writes the vault nor its record, whatever the index says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_with_the_index_writes_nothing() {
    let (emulator, scratch, settings) = fleet_in_sync(&["kv-a", "kv-b"], GraphIndex::Manual).await;
    let mut rules = rules_of(&emulator, "kv-b");
    rules.retain(|r| r != AZURE_DEVOPS[0]);
    emulator.set_ip_rules("kv-b", rules);
    let mut b_row = row_of(&emulator, "kv-b");
    b_row["networkAcls"]["ipRules"] = json!([]);
    graph_answers(&emulator, vec![row_of(&emulator, "kv-a"), b_row], 1);
    let records: Vec<Vec<u8>> = ["kv-a", "kv-b"]
        .iter()
        .map(|n| std::fs::read(record_path(&scratch, n)).unwrap())
        .collect();
    let report = runner(&emulator, &settings, true)
        .run(&RunRequest {
            dry_run: true,
            ..RunRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(
        outcomes(&report),
        vec![Outcome::InSync, Outcome::WouldApply],
        "{}",
        report.to_text()
    );
    assert_eq!(
        observed(&report),
        vec![Observed::ResourceGraph, Observed::Arm]
    );
    assert_eq!(count(&emulator, Route::VaultPatch), 0);
    for (i, n) in ["kv-a", "kv-b"].iter().enumerate() {
        assert_eq!(
            std::fs::read(record_path(&scratch, n)).unwrap(),
            records[i],
            "{n}"
        );
    }
    emulator.shutdown().await;
}

/// The Event Grid hook never queries Resource Graph, even when the index would vouch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_never_queries_resource_graph() {
    let (emulator, _scratch, settings) = fleet_in_sync(&["kv-a", "kv-b"], GraphIndex::Live).await;
    let report = runner(&emulator, &settings, true)
        .run(&RunRequest {
            only: Some(ids(&["kv-a"])),
            trigger: "eventgrid",
            read_through_arm: true,
            ..RunRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(observed(&report), vec![Observed::Arm]);
    assert_eq!(count(&emulator, Route::ResourceGraph), 0);
    assert_eq!(count(&emulator, Route::VaultGet), 1);
    emulator.shutdown().await;
}

/// Claim 5 for reads: a subscription waiting for its read budget (1 token, +1/s) does not hold
/// up another subscription's vault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_waiting_for_its_read_budget_does_not_hold_up_another() {
    const OTHER: &str = "00000000-0000-0000-0000-000000000002";
    let mut vaults: Vec<Value> = (0..4)
        .map(|i| vault(&format!("kv-busy-{i}"), &[]))
        .collect();
    let mut quiet = vault("kv-quiet", &[]);
    let quiet_id = vault_id("kv-quiet").replace(SUBSCRIPTION, OTHER);
    quiet["id"] = json!(quiet_id);
    // The quiet subscription's vault listed last.
    vaults.push(quiet);
    let emulator = start(emulator_config(vaults)).await;
    let mut targets: Vec<String> = (0..4).map(|i| vault_id(&format!("kv-busy-{i}"))).collect();
    targets.push(quiet_id);
    let settings = Settings {
        concurrency: Some(1),
        observe: Some(Observe::Arm),
        ..settings(&emulator, &targets, None)
    };
    let mut config = Config::from_settings(&settings).unwrap();
    config.read_budget = BudgetLimits {
        burst: 1,
        refill_per_second: 1,
    };
    let runner =
        Runner::with_credential(config, credential(&emulator), "test token".into()).unwrap();
    let report = run(&runner).await;
    assert!(report.vaults.iter().all(|v| v.outcome == Outcome::Applied));
    let requests = emulator.requests();
    let first = requests
        .iter()
        .filter(|r| r.route == Route::VaultGet)
        .map(|r| r.at_ms)
        .min()
        .unwrap();
    let quiet_done = requests
        .iter()
        .filter(|r| r.route == Route::VaultPatch && r.vault.as_deref() == Some("kv-quiet"))
        .map(|r| r.at_ms)
        .next()
        .unwrap();
    assert!(
        quiet_done - first < 2_500,
        "the other subscription's vault was written {} ms after the first read",
        quiet_done - first
    );
    emulator.shutdown().await;
}
