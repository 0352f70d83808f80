//! Observing a fleet through Resource Graph (issue 17), through the library against the
//! emulator: a vault the index shows in sync costs no ARM read; every write is planned and gated
//! from an ARM read, so a stale index delays a fix and never causes a wrong write; reads are
//! paced per subscription; subscriptions do not wait on each other; a write is verified from its
//! answer.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::observe::*;
use support::*;
use tagfence::azure::budget::BudgetLimits;
use tagfence::config::{Config, Observe, Settings};
use tagfence::reconcile::{Observed, Outcome};
use tagfence::run::{RunRequest, Runner};
use tagfence_emulator::{Fault, FaultKind, GraphIndex, GraphQuota, Route, Throttle};

const OTHER_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000002";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_in_sync_is_observed_in_one_query_without_arm_reads() {
    let names = ["kv-a", "kv-b", "kv-c"];
    let emulator = start(emulator_config(
        names.iter().map(|n| vault(n, &[MANUAL])).collect(),
    ))
    .await;
    let scratch = Scratch::new();
    let settings = settings(&emulator, &ids(&names), Some(&scratch));

    // First run: no records yet, so every vault is read through ARM; each is written once and
    // verified from the PATCH's answer (GET, GET again before writing, PATCH).
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(outcomes(&report), vec![Outcome::Applied; 3]);
    assert_eq!(observed(&report), vec![Observed::Arm; 3]);
    assert_eq!(count(&emulator, Route::VaultGet), 6);
    assert_eq!(count(&emulator, Route::VaultPatch), 3);

    // A week later: one Resource Graph query, no ARM read, nothing written.
    emulator.clear_requests();
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(outcomes(&report), vec![Outcome::InSync; 3]);
    assert_eq!(observed(&report), vec![Observed::ResourceGraph; 3]);
    assert_eq!(count(&emulator, Route::ResourceGraph), 1);
    assert_eq!(count(&emulator, Route::VaultGet), 0);
    assert_eq!(count(&emulator, Route::VaultPatch), 0);
    let record: Value = serde_json::from_slice(
        &std::fs::read(scratch.join(&format!(
            "state/vaults/{SUBSCRIPTION}/{RESOURCE_GROUP}/kv-a.json"
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(record["last_run"]["status"], "in_sync");
    assert!(record["last_run"]["detail"]
        .as_str()
        .unwrap()
        .contains("Resource Graph"));
    // The rules tagfence owns are what the verified write recorded, untouched by the index.
    assert_eq!(
        record["owned"].as_array().unwrap().len(),
        AZURE_DEVOPS.len()
    );
    let json = report.to_json();
    assert_eq!(json["vaults"][0]["observed"], "resource_graph", "{json}");

    // Minutes after the write (the index may not show it yet): read through ARM.
    emulator.clear_requests();
    let report = run(&runner(&emulator, &settings, false)).await;
    assert_eq!(outcomes(&report), vec![Outcome::InSync; 3]);
    assert_eq!(observed(&report), vec![Observed::Arm; 3]);
    assert_eq!(count(&emulator, Route::VaultGet), 3);

    // --observe arm: no query, one read per vault.
    emulator.clear_requests();
    let arm = Settings {
        observe: Some(Observe::Arm),
        ..settings.clone()
    };
    let report = run(&runner(&emulator, &arm, true)).await;
    assert_eq!(observed(&report), vec![Observed::Arm; 3]);
    assert_eq!(count(&emulator, Route::ResourceGraph), 0);
    assert_eq!(count(&emulator, Route::VaultGet), 3);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_index_delays_a_fix_and_the_hook_or_observe_arm_makes_it() {
    let mut config = emulator_config(vec![vault("kv-a", &[MANUAL])]);
    config.graph_index = GraphIndex::Manual;
    let emulator = start(config).await;
    let scratch = Scratch::new();
    let settings = settings(&emulator, &ids(&["kv-a"]), Some(&scratch));
    run(&runner(&emulator, &settings, true)).await;
    emulator.refresh_index();

    // A person removes two of tagfence's rules; the index still shows them.
    let mut rules = rules_of(&emulator, "kv-a");
    let gone: Vec<String> = rules.drain(..2).collect();
    emulator.set_ip_rules("kv-a", rules.clone());
    emulator.clear_requests();
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(outcomes(&report), vec![Outcome::InSync]);
    assert_eq!(observed(&report), vec![Observed::ResourceGraph]);
    assert_eq!(count(&emulator, Route::VaultPatch), 0);
    assert_eq!(rules_of(&emulator, "kv-a"), {
        let mut r = rules.clone();
        r.sort();
        r
    });

    // The Event Grid hook reads through ARM whatever the index says.
    let report = runner(&emulator, &settings, true)
        .run(&RunRequest {
            only: Some(ids(&["kv-a"])),
            trigger: "eventgrid",
            read_through_arm: true,
            ..RunRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(outcomes(&report), vec![Outcome::Applied]);
    assert!(gone.iter().all(|r| rules_of(&emulator, "kv-a").contains(r)));

    // The same with --observe arm after another deletion.
    let mut rules = rules_of(&emulator, "kv-a");
    rules.retain(|r| r != &gone[0]);
    emulator.set_ip_rules("kv-a", rules);
    let arm = Settings {
        observe: Some(Observe::Arm),
        ..settings.clone()
    };
    let report = run(&runner(&emulator, &arm, true)).await;
    assert_eq!(outcomes(&report), vec![Outcome::Applied]);
    assert!(rules_of(&emulator, "kv-a").contains(&gone[0]));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_planned_from_arm_never_from_the_index() {
    let mut config = emulator_config(vec![vault("kv-a", &[MANUAL]), vault("kv-b", &[])]);
    config.graph_index = GraphIndex::Manual;
    let emulator = start(config).await;
    let scratch = Scratch::new();
    let settings = settings(&emulator, &ids(&["kv-a", "kv-b"]), Some(&scratch));

    // The index was taken before anything was written: it shows both vaults needing work, and
    // a person's rule on kv-a that the person has since removed.
    emulator.set_ip_rules("kv-a", vec![MANUAL.to_owned(), "52.9.9.9/32".to_owned()]);
    emulator.refresh_index();
    emulator.set_ip_rules("kv-a", vec![MANUAL.to_owned()]);
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(outcomes(&report), vec![Outcome::Applied; 2]);
    let mut expected: Vec<&str> = AZURE_DEVOPS.to_vec();
    expected.push(MANUAL);
    assert_eq!(rules_of(&emulator, "kv-a"), sorted(&expected));

    // The index still shows the old firewalls (needing work): each vault costs one ARM read,
    // which finds it in sync.
    emulator.clear_requests();
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(outcomes(&report), vec![Outcome::InSync; 2]);
    assert_eq!(observed(&report), vec![Observed::Arm; 2]);
    assert_eq!(count(&emulator, Route::VaultGet), 2);
    assert_eq!(count(&emulator, Route::VaultPatch), 0);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_index_query_reads_every_vault_through_arm() {
    let emulator = start(emulator_config(vec![
        vault("kv-a", &[]),
        vault("kv-b", &[]),
    ]))
    .await;
    emulator.add_fault(Fault {
        route: Some(Route::ResourceGraph),
        vault: None,
        kind: FaultKind::Status {
            status: 500,
            code: "InternalServerError".into(),
            message: "boom".into(),
            retry_after: None,
        },
        count: 100,
    });
    let settings = settings(&emulator, &ids(&["kv-a", "kv-b"]), None);
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(outcomes(&report), vec![Outcome::Applied; 2]);
    assert_eq!(observed(&report), vec![Observed::Arm; 2]);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_does_not_show_it_is_verified_by_a_read() {
    let emulator = start(emulator_config(vec![vault("kv-a", &[])])).await;
    emulator.add_fault(Fault {
        route: Some(Route::VaultPatch),
        vault: Some("kv-a".into()),
        kind: FaultKind::remove_fields(&["/properties/networkAcls/ipRules/0"]),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_paced_by_the_read_budget_and_never_throttled() {
    let names: Vec<String> = (0..20).map(|i| format!("kv-{i:02}")).collect();
    let mut config = emulator_config(names.iter().map(|n| vault(n, &[])).collect());
    // A small read bucket (10, +20/s), the same on both sides: 40 reads take about 1.5 s.
    let limits = BudgetLimits {
        burst: 10,
        refill_per_second: 20,
    };
    config.read_throttle = Some(Throttle {
        capacity: 10,
        refill_per_sec: 20.0,
    });
    let emulator = start(config).await;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let settings = Settings {
        observe: Some(Observe::Arm),
        ..settings(&emulator, &ids(&refs), None)
    };
    let mut config = Config::from_settings(&settings).unwrap();
    config.read_budget = limits;
    let runner =
        Runner::with_credential(config, credential(&emulator), "test token".into()).unwrap();
    let report = run(&runner).await;
    assert!(report.vaults.iter().all(|v| v.outcome == Outcome::Applied));
    let throttled = emulator
        .requests()
        .iter()
        .filter(|r| r.route == Route::VaultGet && r.status == 429)
        .count();
    assert_eq!(throttled, 0);
    assert_eq!(count(&emulator, Route::VaultGet), 40);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_waiting_for_its_write_budget_does_not_hold_up_another() {
    let mut busy: Vec<Value> = (0..4)
        .map(|i| vault(&format!("kv-busy-{i}"), &[]))
        .collect();
    let mut quiet = vault("kv-quiet", &[]);
    let other_id = vault_id("kv-quiet").replace(SUBSCRIPTION, OTHER_SUBSCRIPTION);
    quiet["id"] = Value::String(other_id.clone());
    busy.push(quiet);
    let emulator = start(emulator_config(busy)).await;
    let mut targets: Vec<String> = (0..4).map(|i| vault_id(&format!("kv-busy-{i}"))).collect();
    targets.push(other_id);
    let settings = Settings {
        concurrency: Some(1),
        ..settings(&emulator, &targets, None)
    };
    let mut config = Config::from_settings(&settings).unwrap();
    // One write a second per subscription: the busy one's four writes take three seconds.
    config.write_budget = BudgetLimits {
        burst: 1,
        refill_per_second: 1,
    };
    let runner =
        Runner::with_credential(config, credential(&emulator), "test token".into()).unwrap();
    let report = run(&runner).await;
    assert!(report.vaults.iter().all(|v| v.outcome == Outcome::Applied));
    let patches: Vec<String> = emulator
        .requests()
        .iter()
        .filter(|r| r.route == Route::VaultPatch)
        .filter_map(|r| r.vault.clone())
        .collect();
    let quiet_at = patches.iter().position(|v| v == "kv-quiet").unwrap();
    assert!(
        quiet_at <= 1,
        "the other subscription's vault waited for the busy one's budget: {patches:?}"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_resource_graph_quota_holds_the_next_query_instead_of_drawing_a_429() {
    let mut config = emulator_config(vec![vault("kv-a", &[])]);
    config.graph_quota = Some(GraphQuota {
        queries: 1,
        window: Duration::from_secs(1),
    });
    let emulator = start(config).await;
    let settings = settings(&emulator, &ids(&["kv-a"]), None);
    let runner = runner(&emulator, &settings, true);
    run(&runner).await;
    let started = std::time::Instant::now();
    let report = run(&runner).await;
    assert_eq!(observed(&report), vec![Observed::ResourceGraph]);
    let throttled = emulator
        .requests()
        .iter()
        .filter(|r| r.route == Route::ResourceGraph && r.status == 429)
        .count();
    assert_eq!(throttled, 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_vaults_are_observed_from_discoverys_own_query() {
    let tagged = |name: &str| {
        let mut v = vault(name, &[MANUAL]);
        v["tags"] = serde_json::json!({"tagfence": "default"});
        v
    };
    let emulator = start(emulator_config(vec![tagged("kv-a"), tagged("kv-b")])).await;
    let scratch = Scratch::new();
    let settings = Settings {
        discover_subscriptions: vec![SUBSCRIPTION.to_owned()],
        ..settings(&emulator, &[], Some(&scratch))
    };
    run(&runner(&emulator, &settings, true)).await;
    emulator.clear_requests();
    let report = run(&runner(&emulator, &settings, true)).await;
    assert_eq!(observed(&report), vec![Observed::ResourceGraph; 2]);
    // Discovery's query carried the firewalls: no second query, no ARM read.
    assert_eq!(count(&emulator, Route::ResourceGraph), 1);
    assert_eq!(count(&emulator, Route::VaultGet), 0);
    emulator.shutdown().await;
}
