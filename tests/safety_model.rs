//! The model-based safety property test of issue 11: random sequences of Service Tags documents,
//! people editing vaults, tagfence runs with reads that lie and lost locks, checked after every
//! run against the test's own record of who added what; with just-in-time grants (grant, revoke,
//! sweep, a clock the test moves) mixed in and their own invariants checked after every step.
//! The steps, the property and the known window are described in
//! `tests/support/safety_model.rs`; the figures are in docs/reliability.md ("Safety property
//! test (issue 11)").
//!
//! CI runs seeds 1..=20. `TAGFENCE_SAFETY_SEEDS=N` runs N seeds from 1 (or from
//! `TAGFENCE_SAFETY_FROM=M`, for a campaign in chunks), `TAGFENCE_SAFETY_SEED=K` replays seed K
//! alone, `TAGFENCE_SAFETY_PARALLEL=P` runs P seeds at once (default 4; each has its own emulator
//! and state directory), and `TAGFENCE_SAFETY_SHOW=1` prints the trace of every seed that passes
//! too (with `-- --nocapture`). `TAGFENCE_SAFETY_GRANTS=0` leaves the grants out: the seeds then
//! replay the scenario of before grants existed (seed 270 of `KNOWN_FAILURES` needs it).
//! `TAGFENCE_SAFETY_KIND=key_vault|storage_account|container_registry|mixed` chooses the kind of
//! every resource of a scenario; unset (or `mixed`), each resource's kind is drawn from the seed
//! (Key Vault, storage account or Premium registry). The kinds come from a generator of their
//! own, so `key_vault` replays the scenario of before kinds existed (seed 270 needs it too); the
//! default `mixed` gives a seed the same steps but other kinds, so a seed's outcome may differ.

mod support;

#[path = "support/safety_model.rs"]
mod safety_model_support;

use safety_model_support::{
    kind_mode, run_seed, Tally, KNOWN_FAILURES, KNOWN_SIGNATURES, UNWRITTEN_PENDING,
};
use tagfence::core::kind::Kind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_model() {
    use futures::stream::{self, StreamExt};
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let from = env("TAGFENCE_SAFETY_FROM").unwrap_or(1);
    let seeds: Vec<u64> = match (env("TAGFENCE_SAFETY_SEED"), env("TAGFENCE_SAFETY_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, Some(n)) => (from..from + n).collect(),
        (None, None) => (1..=20).collect(),
    };
    let parallel = env("TAGFENCE_SAFETY_PARALLEL").unwrap_or(4).max(1) as usize;
    // The kinds of the scenarios (checked before any seed runs: a typo is refused at once).
    let kinds = kind_mode();
    let kinds_text = kinds.map_or("mixed", Kind::name);
    let started = std::time::Instant::now();
    let mut results: Vec<(u64, Result<Tally, String>)> = stream::iter(seeds.clone())
        .map(|seed| async move { (seed, run_seed(seed).await) })
        .buffer_unordered(parallel)
        .collect()
        .await;
    results.sort_by_key(|(seed, _)| *seed);
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    // Failures of a known bug of tagfence's: by signature (or seed), with their seeds.
    let mut known: std::collections::BTreeMap<String, Vec<(u64, String)>> = Default::default();
    for (seed, result) in results {
        match result {
            Ok(one) => tally.add(&one),
            Err(failure) => {
                let signature = KNOWN_SIGNATURES
                    .iter()
                    .find(|s| failure.contains(**s))
                    .map(|s| s.to_string())
                    .or_else(|| {
                        // Known by seed, and only in the shape of the bug (B4: pending rules of
                        // an unwritten plan claimed), whatever the resources' kinds: every kind
                        // mode plays the seed's steps.
                        KNOWN_FAILURES
                            .iter()
                            .find(|(s, _)| *s == seed && failure.contains(UNWRITTEN_PENDING))
                            .map(|(_, why)| format!("known failure of seed {seed}: {why}"))
                    });
                match signature {
                    Some(signature) => known.entry(signature).or_default().push((seed, failure)),
                    None => failures.push((seed, failure)),
                }
            }
        }
    }
    let known_count: usize = known.values().map(Vec::len).sum();
    eprintln!(
        "safety model: {} seeds of kind {kinds_text} ({} failed, {} failed with a known bug of tagfence's) in {:.1} s; figures of the {} seeds that ran to the end: {tally:#?}",
        seeds.len(),
        failures.len(),
        known_count,
        started.elapsed().as_secs_f64(),
        tally.seeds
    );
    for (signature, seeds) in &known {
        eprintln!(
            "known bug, {} seed(s) {:?}: {signature}\nthe first:\n{}\n",
            seeds.len(),
            seeds.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            seeds[0].1
        );
    }
    let text: Vec<String> = failures.iter().map(|(_, f)| f.clone()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} seeds of kind {kinds_text} broke the safety property (seeds {:?}; replay one with TAGFENCE_SAFETY_SEED=<seed> and the same TAGFENCE_SAFETY_KIND):\n\n{}",
        failures.len(),
        seeds.len(),
        failures.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        text.join("\n\n")
    );
    // The steps did something: writes, refusals, lies, grants placed and swept (a replay of one
    // seed may have none; `TAGFENCE_SAFETY_GRANTS=0` has no grants).
    let grants_on = std::env::var("TAGFENCE_SAFETY_GRANTS").map_or(true, |v| v.trim() != "0");
    assert!(
        seeds.len() < 10
            || (tally.applied > 0
                && tally.refused > 0
                && tally.lying_reads > 0
                && (!grants_on || (tally.grants_placed > 0 && tally.expired_and_swept > 0))),
        "{tally:?}"
    );
    // Mixed scenarios reconciled and wrote every kind.
    assert!(
        seeds.len() < 10
            || kinds.is_some()
            || Kind::ALL.iter().all(|k| {
                tally
                    .kinds_reconciled
                    .get(k.name())
                    .is_some_and(|(_, wrote)| *wrote > 0)
            }),
        "{:?}",
        tally.kinds_reconciled
    );
}

/// The shortest trace of the failure the property test found (seeds 58 and 306 of the first
/// campaign, on 58995f1; fixed in 51d56c7), with tagfence's default settings: a run recorded the
/// rules it was about to add as pending, then wrote nothing (here its re-read answers
/// `networkAcls: null` and it is refused; a lost lock ended the same way in seed 306), and left
/// them pending. A person then added one of those ranges by hand; tagfence counted it as its own
/// pending rule and removed it when Microsoft retired the range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_planned_by_a_run_that_wrote_nothing_and_then_added_by_a_person_stays_theirs() {
    use serde_json::json;
    use support::{credential, emulator_config, start, vault, vault_id};
    use tagfence::config::{Config, SelectionSettings, Settings};
    use tagfence::reconcile::Outcome;
    use tagfence::run::{RunRequest, Runner};
    use tagfence_emulator::{Fault, FaultKind, Route};

    const PERSON: &str = "52.100.1.7/32";
    const NEW: &str = "20.30.10.0/24";
    let emulator = start(emulator_config(vec![vault("kv-0", &[PERSON])])).await;
    let work = support::Scratch::new();
    let tag: Vec<String> = (0..10).map(|i| format!("20.{}.10.0/24", 10 + i)).collect();
    let document = |change: u64, prefixes: &[String]| {
        let path = work.join(&format!("doc-{change}.json"));
        let doc = json!({"changeNumber": change, "cloud": "Public", "values": [
            {"name": "SafeA", "id": "SafeA", "properties": {"changeNumber": change, "region": "",
             "systemService": "SafetyModel", "addressPrefixes": prefixes}}]});
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        path
    };
    let apply = |source: std::path::PathBuf| {
        let args = Settings {
            vaults: vec![vault_id("kv-0")],
            selection: SelectionSettings {
                tags: vec!["SafeA".into()],
                static_rules: Vec::new(),
            },
            source: Some(source.display().to_string()),
            min_service_tags: Some(1),
            arm_endpoint: Some(emulator.base_url()),
            concurrency: Some(1),
            http_timeout_secs: Some(5),
            http_max_retries: Some(3),
            http_retry_delay_ms: Some(20),
            http_call_timeout_secs: Some(20),
            state_dir: Some(work.join("state")),
            ..Settings::default()
        };
        let config = Config::from_settings(&args).unwrap();
        Runner::with_credential(config, credential(&emulator), "test token".into()).unwrap()
    };
    let outcome = |report: &tagfence::run::RunReport| report.vaults[0].outcome.clone();

    // 1. Document 100, ten ranges: applied.
    let report = apply(document(100, &tag))
        .run(&RunRequest::default())
        .await
        .unwrap();
    assert_eq!(outcome(&report), Outcome::Applied);

    // 2. Document 101 adds a range; the first read is whole, the re-read before the write
    //    answers without the firewall: refused, nothing written.
    let mut grown = tag.clone();
    grown.push(NEW.into());
    let on_reads = |kind, count| Fault {
        route: Some(Route::VaultGet),
        vault: Some("kv-0".into()),
        kind,
        count,
    };
    emulator.add_fault(on_reads(FaultKind::Delay { ms: 0 }, 1));
    emulator.add_fault(on_reads(
        FaultKind::null_fields(&["/properties/networkAcls"]),
        3,
    ));
    let report = apply(document(101, &grown))
        .run(&RunRequest::default())
        .await
        .unwrap();
    emulator.clear_faults();
    assert!(
        matches!(outcome(&report), Outcome::Refused(_)) && !report.vaults[0].wrote,
        "{:?}",
        outcome(&report)
    );
    assert!(!emulator.ip_rules("kv-0").contains(&NEW.to_owned()));

    // 3. A person adds that range by hand: tagfence never wrote it.
    let mut edited = emulator.ip_rules("kv-0");
    edited.push(NEW.into());
    emulator.set_ip_rules("kv-0", edited);

    // 4. Document 102 retires it again (1 of 11, under every guard); a clean run.
    let report = apply(document(102, &tag))
        .run(&RunRequest::default())
        .await
        .unwrap();
    let rules = emulator.ip_rules("kv-0");
    emulator.shutdown().await;
    assert!(
        rules.iter().any(|r| r == NEW),
        "the person's rule {NEW} was removed: the vault holds {rules:?} ({:?}, removed {:?})",
        outcome(&report),
        report.vaults[0].plan.as_ref().map(|p| &p.remove)
    );
}

/// Found by the property test (seed 1270 of the campaign on 965a7e7), here without any lie: a
/// person adds a desired range by hand right after tagfence's first read. The re-read shows it,
/// so the plan that is written does not add it (it is the person's, coincident) — but the
/// superseded plan had recorded it as pending, and the record then takes it for tagfence's own:
/// when Microsoft retires the range, tagfence removes the person's rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_a_person_adds_between_the_read_and_the_reread_stays_theirs() {
    use serde_json::json;
    use support::{credential, emulator_config, start, vault, vault_id};
    use tagfence::config::{Config, SelectionSettings, Settings};
    use tagfence::reconcile::Outcome;
    use tagfence::run::{RunRequest, Runner};
    use tagfence_emulator::{Fault, FaultKind, Route};

    const PERSON: &str = "20.19.10.0/24";
    let emulator = start(emulator_config(vec![vault("kv-0", &[])])).await;
    let work = support::Scratch::new();
    let tag: Vec<String> = (0..10).map(|i| format!("20.{}.10.0/24", 10 + i)).collect();
    let document = |change: u64, prefixes: &[String]| {
        let path = work.join(&format!("doc-{change}.json"));
        let doc = json!({"changeNumber": change, "cloud": "Public", "values": [
            {"name": "SafeA", "id": "SafeA", "properties": {"changeNumber": change, "region": "",
             "systemService": "SafetyModel", "addressPrefixes": prefixes}}]});
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        path
    };
    let apply = |source: std::path::PathBuf| {
        let args = Settings {
            vaults: vec![vault_id("kv-0")],
            selection: SelectionSettings {
                tags: vec!["SafeA".into()],
                static_rules: Vec::new(),
            },
            source: Some(source.display().to_string()),
            min_service_tags: Some(1),
            arm_endpoint: Some(emulator.base_url()),
            concurrency: Some(1),
            http_timeout_secs: Some(5),
            http_max_retries: Some(3),
            http_retry_delay_ms: Some(20),
            http_call_timeout_secs: Some(20),
            state_dir: Some(work.join("state")),
            ..Settings::default()
        };
        let config = Config::from_settings(&args).unwrap();
        Runner::with_credential(config, credential(&emulator), "test token".into()).unwrap()
    };

    // 1. Document 100, nine ranges: applied.
    let report = apply(document(100, &tag[..9]))
        .run(&RunRequest::default())
        .await
        .unwrap();
    assert_eq!(report.vaults[0].outcome, Outcome::Applied);

    // 2. Document 101 adds a tenth range; a person adds exactly that range by hand right after
    //    tagfence's first read. The re-read shows it: the written plan adds nothing.
    emulator.add_fault(Fault {
        route: Some(Route::VaultGet),
        vault: Some("kv-0".into()),
        kind: FaultKind::EditAfter {
            add: vec![PERSON.into()],
            remove: Vec::new(),
        },
        count: 1,
    });
    let report = apply(document(101, &tag))
        .run(&RunRequest::default())
        .await
        .unwrap();
    emulator.clear_faults();
    assert!(
        matches!(report.vaults[0].outcome, Outcome::InSync | Outcome::Applied),
        "{:?}",
        report.vaults[0].outcome
    );
    assert!(report.vaults[0]
        .plan
        .as_ref()
        .is_some_and(|p| !p.add.iter().any(|r| r.to_string() == PERSON)));

    // 3. Document 102 retires it (1 of 10, under every guard); a clean run.
    let report = apply(document(102, &tag[..9]))
        .run(&RunRequest::default())
        .await
        .unwrap();
    let rules = emulator.ip_rules("kv-0");
    emulator.shutdown().await;
    assert!(
        rules.iter().any(|r| r == PERSON),
        "the person's rule {PERSON} was removed: the vault holds {rules:?} ({:?}, removed {:?})",
        report.vaults[0].outcome,
        report.vaults[0].plan.as_ref().map(|p| &p.remove)
    );
}

/// Found by the property test (seeds 35, 58, 1252, … of the campaigns on 965a7e7; the test adds
/// answers that lie the firewall open to the list of lies): the first read of the run
/// shows the true firewall, closed (`bypass: None`); the re-read before the write answers
/// `bypass: AzureServices`. tagfence takes that for a person's edit, plans again from it and
/// writes the vault open, although this very run saw it closed a moment before (and when the
/// state had seen it closed, a refused lie is recorded as seen, so the next run does the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_read_that_shows_the_firewall_opened_within_the_run_is_not_written_from() {
    use serde_json::json;
    use support::{credential, emulator_config, start, vault, vault_id};
    use tagfence::config::{Config, SelectionSettings, Settings};
    use tagfence::run::{RunRequest, Runner};
    use tagfence_emulator::{Fault, FaultKind, Route};

    let emulator = start(emulator_config(vec![vault("kv-0", &[])])).await;
    let work = support::Scratch::new();
    let source = work.join("doc-100.json");
    let doc = json!({"changeNumber": 100, "cloud": "Public", "values": [
        {"name": "SafeA", "id": "SafeA", "properties": {"changeNumber": 100, "region": "",
         "systemService": "SafetyModel", "addressPrefixes": ["20.10.10.0/24", "20.11.10.0/24"]}}]});
    std::fs::write(&source, serde_json::to_vec(&doc).unwrap()).unwrap();
    let args = Settings {
        vaults: vec![vault_id("kv-0")],
        selection: SelectionSettings {
            tags: vec!["SafeA".into()],
            static_rules: Vec::new(),
        },
        source: Some(source.display().to_string()),
        min_service_tags: Some(1),
        arm_endpoint: Some(emulator.base_url()),
        concurrency: Some(1),
        http_timeout_secs: Some(5),
        http_max_retries: Some(3),
        http_retry_delay_ms: Some(20),
        http_call_timeout_secs: Some(20),
        state_dir: Some(work.join("state")),
        ..Settings::default()
    };
    let runner = Runner::with_credential(
        Config::from_settings(&args).unwrap(),
        credential(&emulator),
        "test token".into(),
    )
    .unwrap();
    let on_reads = |kind, count| Fault {
        route: Some(Route::VaultGet),
        vault: Some("kv-0".into()),
        kind,
        count,
    };
    emulator.add_fault(on_reads(FaultKind::Delay { ms: 0 }, 1));
    emulator.add_fault(on_reads(
        FaultKind::set_field("/properties/networkAcls/bypass", json!("AzureServices")),
        3,
    ));
    let report = runner.run(&RunRequest::default()).await.unwrap();
    let bypass = emulator.vault("kv-0").unwrap()["properties"]["networkAcls"]["bypass"].clone();
    emulator.shutdown().await;
    assert_eq!(
        bypass,
        json!("None"),
        "the vault was written open: {:?}",
        report.vaults[0].outcome
    );
}

/// Found by the property test with grants (seed 1158 of seeds 1000–2499, on e1560e2 and on
/// ce26d48): a vault people filled past its `max_rules` while a grant was live keeps the ended
/// grant's rule, because the sweep's write (which only removes that rule) is refused for holding
/// more than `max_rules`. docs/grants.md promises the rule gone within TTL + 5 minutes, and `plan_grants`
/// says a plan that only removes is never refused. Fixed: the gate lets a write hold more than
/// `max_rules` when it holds fewer rules than the read (docs/reliability.md J1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_grant_is_removed_from_a_vault_people_filled_past_max_rules() {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use support::observe::{settings, MANUAL};
    use support::{credential, emulator_config, start, vault, vault_id};
    use tagfence::config::Config;
    use tagfence::run::{GrantRequest, Requester, RunRequest, Runner};

    const AGENT: &str = "20.37.158.9";
    let emulator = start(emulator_config(vec![vault("kv1", &[MANUAL])])).await;
    let work = support::Scratch::new();
    let mut args = settings(&emulator, &[vault_id("kv1")], Some(&work));
    // The 24 AzureDevOps rules, the person's, and room for one grant.
    args.limits.max_rules = Some(26);
    let now = Arc::new(Mutex::new(chrono::Utc::now()));
    let clock = now.clone();
    let runner = Runner::with_credential(
        Config::from_settings(&args).unwrap(),
        credential(&emulator),
        "test token".into(),
    )
    .unwrap()
    .with_clock(Arc::new(move || *clock.lock().unwrap()));
    runner.run(&RunRequest::default()).await.unwrap();
    let granted = runner
        .grant(&GrantRequest {
            vault: vault_id("kv1"),
            address: AGENT.parse().unwrap(),
            ttl: Some(Duration::from_secs(600)),
            reason: None,
            requester: Requester::Cli {
                label: "test".into(),
            },
            trigger: "cli",
        })
        .await
        .unwrap();
    assert!(granted.succeeded(), "{}", granted.to_text());

    // People add two rules of their own while the grant is live: 28 rules, over 26.
    let mut rules = emulator.ip_rules("kv1");
    rules.extend(["52.174.10.21/32".to_owned(), "52.174.10.22/32".to_owned()]);
    emulator.set_ip_rules("kv1", rules);

    // The grant expires; the sweep only has to take its rule off.
    *now.lock().unwrap() += chrono::Duration::seconds(601);
    let sweep = runner.sweep("test").await.unwrap();
    let rules = emulator.ip_rules("kv1");
    emulator.shutdown().await;
    assert!(
        !rules.contains(&format!("{AGENT}/32")),
        "the ended grant's rule is still on the vault: {}",
        sweep.to_text()
    );
}

/// Found by the property test with grants (seed 69 on ce26d48): a revoke whose re-read answers
/// `ipRules: []` (a lie: the first read showed the grant's rule and tagfence's others) plans
/// nothing to write from it, so the vault counts as in sync, and the record is settled against
/// the lie: tagfence forgets every rule it owns, and drops the revoked grant, whose rule then
/// stays on the vault for good (no sweep or regular run may remove a rule it does not own). A
/// regular run reading the same lie would add its desired rules and be refused as a suspicious
/// read; a grants-only run with nothing to add never asked the gate. Fixed: a grants-only run
/// found in sync is held to the gate's agreement with the state (docs/reliability.md J2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_whose_re_read_lies_empty_leaves_no_grant_rule_behind() {
    use serde_json::json;
    use std::time::Duration;
    use support::observe::{settings, MANUAL};
    use support::{credential, emulator_config, start, vault, vault_id};
    use tagfence::config::Config;
    use tagfence::run::{GrantRequest, Requester, RevokeRequest, RevokeTarget, RunRequest, Runner};
    use tagfence_emulator::{Fault, FaultKind, Route};

    const AGENT: &str = "20.37.158.9";
    let emulator = start(emulator_config(vec![vault("kv1", &[MANUAL])])).await;
    let work = support::Scratch::new();
    let args = settings(&emulator, &[vault_id("kv1")], Some(&work));
    let runner = Runner::with_credential(
        Config::from_settings(&args).unwrap(),
        credential(&emulator),
        "test token".into(),
    )
    .unwrap();
    let cli = || Requester::Cli {
        label: "test".into(),
    };
    runner.run(&RunRequest::default()).await.unwrap();
    let granted = runner
        .grant(&GrantRequest {
            vault: vault_id("kv1"),
            address: AGENT.parse().unwrap(),
            ttl: Some(Duration::from_secs(1800)),
            reason: None,
            requester: cli(),
            trigger: "cli",
        })
        .await
        .unwrap();
    assert!(granted.succeeded(), "{}", granted.to_text());

    // The revoke's first read is true; its re-read, just before the write, answers no rules.
    let on_reads = |kind, count| Fault {
        route: Some(Route::VaultGet),
        vault: Some("kv1".into()),
        kind,
        count,
    };
    emulator.add_fault(on_reads(FaultKind::Delay { ms: 0 }, 1));
    emulator.add_fault(on_reads(
        FaultKind::set_field("/properties/networkAcls/ipRules", json!([])),
        3,
    ));
    let revoked = runner
        .revoke(&RevokeRequest {
            vault: Some(vault_id("kv1")),
            target: RevokeTarget::Address(AGENT.parse().unwrap()),
            requester: cli(),
            trigger: "cli",
        })
        .await
        .unwrap();
    emulator.clear_faults();

    // Whatever the revoke answered, a sweep and a regular run with true reads take the
    // revoked grant's rule off.
    let sweep = runner.sweep("test").await.unwrap();
    runner.run(&RunRequest::default()).await.unwrap();
    let rules = emulator.ip_rules("kv1");
    emulator.shutdown().await;
    assert!(
        !rules.contains(&format!("{AGENT}/32")),
        "the revoked grant's rule is still on the vault: the revoke {}, then {}",
        revoked.to_text(),
        sweep.to_text()
    );
}
