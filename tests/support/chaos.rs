//! The engine of the chaos property test in `tests/faults.rs`: from a seed, a dozen vaults with
//! random rules, two Service Tags documents (some ranges retired, some added), and a random mix
//! of faults for the emulator; then three runs — a clean one that takes the vaults over, one
//! under the faults, a clean one after — and the checks every vault must pass.
//!
//! # The property
//! After the run under faults, every vault holds either the rules it had before that run or
//! its new intended rules (`(before − (retired − initial)) ∪ desired`: a retired range is removed
//! only when tagfence added it, never when a person had it on the vault first), up to the rules a person added or
//! removed during the run (`EditAfter` faults). Which of the two is decided from the emulator's
//! request log, not from tagfence's report: the new rules exactly when some write was applied.
//! A rule a person added is still there, unless the edit landed in the window between the
//! re-read and a write that was then applied (no read answered in between) — the one round
//! trip Key Vault's lack of ETags leaves open; such losses are counted, not failed. tagfence's
//! report must agree: `applied` only with the new rules, a failure without a write only with the
//! old ones. The clean run after must leave every vault at `(after − (retired − initial)) ∪ desired` with
//! no failure, and the state with no pending rules.
//!
//! The PRNG is splitmix64, so a seed reproduces its scenario exactly; the timing of the faults'
//! effects (which retry a fault hits when it matches any vault) may still vary between runs,
//! which is the point: the property must hold whatever the interleaving.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tagfence::config::{Config, SelectionSettings, Settings};
use tagfence::reconcile::Outcome;
use tagfence::run::{RunReport, RunRequest, Runner};
use tagfence_emulator::{Emulator, Fault, FaultKind, RequestRecord, Route};

use crate::support::{credential, emulator_config, start, vault, vault_id, Rng};

/// Vaults per seed.
pub const VAULTS: usize = 12;
/// The selected tag of the synthetic documents.
const TAG: &str = "ChaosTag";
/// One HTTP attempt in the run under faults; a "long" delay is at least 600 ms longer. The
/// clean runs allow 5 s, so that a loaded machine cannot fail them.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1000);
const CLEAN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Ranges of the selected tag: /24s that never collapse into each other (distinct second
/// octets), so the desired set is exactly the tag's prefixes.
fn tag_pool() -> Vec<String> {
    (0..48).map(|i| format!("20.{}.10.0/24", 10 + i)).collect()
}

/// Rules people put on the vaults before tagfence came.
fn manual_pool() -> Vec<String> {
    (0..24).map(|i| format!("52.{}.20.7/32", 100 + i)).collect()
}

/// A rule added by a person, unique per scenario: never one tagfence selects or owns.
fn person_rule(n: usize) -> String {
    format!("51.{}.{}.9/32", 10 + n / 200, n % 200)
}

/// Everything one seed decides.
#[derive(Debug)]
pub struct Scenario {
    pub vaults: Vec<String>,
    /// Rules each vault starts with.
    pub initial: Vec<Vec<String>>,
    /// The tag's ranges in the document applied first (change number 100)…
    pub doc_a: Vec<String>,
    /// …and in the one applied under faults (101).
    pub doc_b: Vec<String>,
    /// Rules people add between the first and the second run, per vault.
    pub between: Vec<Vec<String>>,
    /// Injected before the second run, in this order.
    pub faults: Vec<Fault>,
}

impl Scenario {
    pub fn new(seed: u64) -> Scenario {
        let mut rng = Rng::new(seed);
        let tags = tag_pool();
        let manual = manual_pool();
        let vaults: Vec<String> = (0..VAULTS).map(|i| format!("kv-{i:02}")).collect();

        let doc_a = rng.sample_between(&tags[..32], 4, 12);
        let retired = rng.sample_between(&doc_a, 0, 3);
        let added = rng.sample_between(&tags[32..], 0, 3);
        let mut doc_b: Vec<String> = doc_a
            .iter()
            .filter(|r| !retired.contains(r))
            .cloned()
            .chain(added)
            .collect();
        if doc_b.is_empty() {
            doc_b.push(tags[47].clone());
        }

        let mut persons = 0;
        let mut person = || {
            persons += 1;
            person_rule(persons)
        };
        let mut initial = Vec::new();
        let mut between = Vec::new();
        for _ in &vaults {
            let mut rules = rng.sample_between(&manual, 0, 3);
            rules.extend(rng.sample_between(&doc_a, 0, 2));
            initial.push(rules);
            between.push(if rng.chance(30) {
                vec![person()]
            } else {
                Vec::new()
            });
        }

        let removable: Vec<String> = doc_a
            .iter()
            .chain(&doc_b)
            .chain(initial.iter().flatten())
            .cloned()
            .collect();
        let mut faults = Vec::new();
        for _ in 0..rng.range(3, 12) {
            let vault = rng.chance(80).then(|| rng.pick(&vaults).clone());
            let route = match rng.range(0, 99) {
                0..=44 => Some(Route::VaultGet),
                45..=84 => Some(Route::VaultPatch),
                _ => None,
            };
            // Sometimes aim at a later read of the vault (the re-read, the verify).
            if let (Some(name), Some(Route::VaultGet)) = (&vault, route) {
                if rng.chance(30) {
                    faults.push(Fault {
                        route,
                        vault: Some(name.clone()),
                        kind: FaultKind::Delay { ms: 0 },
                        count: rng.range(1, 2) as u32,
                    });
                }
            }
            let retry_after = |rng: &mut Rng| rng.chance(25).then_some(1);
            let (kind, count) = match rng.range(0, 99) {
                0..=19 => (status(429, retry_after(&mut rng)), rng.range(1, 5)),
                20..=29 => (status(500, None), rng.range(1, 5)),
                30..=39 => (status(503, retry_after(&mut rng)), rng.range(1, 5)),
                40..=44 => (status(*rng.pick(&[502, 504]), None), rng.range(1, 5)),
                45..=54 => (
                    FaultKind::Delay {
                        ms: rng.range(5, 150),
                    },
                    rng.range(1, 5),
                ),
                55..=62 => (
                    FaultKind::Delay {
                        ms: rng.range(1600, 2000),
                    },
                    rng.range(1, 4),
                ),
                63..=72 => (FaultKind::Drop, rng.range(1, 5)),
                73..=82 => (FaultKind::DropAfter, rng.range(1, 5)),
                _ => {
                    let add = (0..rng.range(1, 2)).map(|_| person()).collect();
                    let remove = if rng.chance(50) {
                        vec![rng.pick(&removable).clone()]
                    } else {
                        Vec::new()
                    };
                    (FaultKind::EditAfter { add, remove }, rng.range(1, 2))
                }
            };
            faults.push(Fault {
                route,
                vault,
                kind,
                count: count as u32,
            });
        }
        Scenario {
            vaults,
            initial,
            doc_a,
            doc_b,
            between,
            faults,
        }
    }
}

fn status(status: u16, retry_after: Option<u64>) -> FaultKind {
    let code = match status {
        429 => "SubscriptionRequestsThrottled",
        500 => "InternalServerError",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        _ => "GatewayTimeout",
    };
    FaultKind::Status {
        status,
        code: code.into(),
        message: format!("injected {status}"),
        retry_after,
    }
}

fn set(rules: &[String]) -> BTreeSet<String> {
    rules.iter().cloned().collect()
}

/// What one seed did, for the figures in docs/reliability.md.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub seeds: usize,
    /// Resource reconciles, all three runs.
    pub reconciles: usize,
    pub faults_queued: usize,
    /// Requests a fault acted on (the pass-through zero delays not counted).
    pub faulted_requests: usize,
    pub requests: usize,
    /// Outcomes of the run under faults.
    pub applied: usize,
    /// In sync without a write: the second document changed nothing for the vault (nothing
    /// retired or added that it lacked), or a read saw it that way before a person's edit.
    pub in_sync: usize,
    pub failed: usize,
    pub failed_after_write: usize,
    /// Rules people added during a run…
    pub person_rules: usize,
    /// …lost because the edit fell in the window between the re-read and the write.
    pub lost_in_window: usize,
    /// People's edits during the run under faults: seen by a later read (planned around, or
    /// reported by the verify step), overwritten by a write in the window, or after the last
    /// request.
    pub edits: usize,
    pub edits_seen: usize,
    pub edits_in_window: usize,
    /// The slowest seed, in milliseconds.
    pub slowest_seed_ms: u64,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.seeds += other.seeds;
        self.reconciles += other.reconciles;
        self.faults_queued += other.faults_queued;
        self.faulted_requests += other.faulted_requests;
        self.requests += other.requests;
        self.applied += other.applied;
        self.in_sync += other.in_sync;
        self.failed += other.failed;
        self.failed_after_write += other.failed_after_write;
        self.person_rules += other.person_rules;
        self.lost_in_window += other.lost_in_window;
        self.edits += other.edits;
        self.edits_seen += other.edits_seen;
        self.edits_in_window += other.edits_in_window;
        self.slowest_seed_ms = self.slowest_seed_ms.max(other.slowest_seed_ms);
    }
}

/// A synthetic document: the selected tag at `tag_change` holding `prefixes`, and one more tag.
fn write_document(path: &Path, change_number: u64, tag_change: u64, prefixes: &[String]) {
    let doc = json!({
        "changeNumber": change_number,
        "cloud": "Public",
        "values": [
            {"name": TAG, "id": TAG, "properties": {
                "changeNumber": tag_change, "region": "", "systemService": "Chaos",
                "addressPrefixes": prefixes}},
            {"name": "AzureCloud.westeurope", "id": "AzureCloud.westeurope", "properties": {
                "changeNumber": 160, "region": "westeurope", "systemService": "",
                "addressPrefixes": ["4.175.0.0/16"]}}
        ]
    });
    std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

fn runner(
    emulator: &Emulator,
    scenario: &Scenario,
    document: &Path,
    state: &Path,
    attempt_timeout: Duration,
) -> Runner {
    let args = Settings {
        vaults: scenario.vaults.iter().map(|v| vault_id(v)).collect(),
        selection: SelectionSettings {
            tags: vec![TAG.to_owned()],
            static_rules: Vec::new(),
        },
        source: Some(document.display().to_string()),
        min_service_tags: Some(1),
        arm_endpoint: Some(emulator.base_url()),
        concurrency: Some(4),
        http_timeout_secs: Some(1),
        http_max_retries: Some(3),
        http_retry_delay_ms: Some(20),
        http_call_timeout_secs: Some(10),
        state_dir: Some(state.to_path_buf()),
        ..Settings::default()
    };
    let mut config = Config::from_settings(&args).expect("valid configuration");
    config.http.attempt_timeout = attempt_timeout;
    // Retired ranges may be most of a small tag, and people here remove tagfence's rules (all
    // of a vault's one or two, at times): the removal and tag shrink guards and the
    // suspicious-read check are not under test here (they are in tests/safety.rs and
    // tests/safety_model.rs), and would refuse what this property expects written.
    for target in &mut config.targets {
        target.limits.max_remove_fraction = 1.0;
        target.safety.allow_tag_shrink = vec!["*".to_owned()];
        target.safety.accept_missing_rules = true;
    }
    Runner::with_credential(config, credential(emulator), "test token".into())
        .expect("runner builds")
}

async fn run(runner: &Runner, what: &str) -> Result<RunReport, String> {
    runner
        .run(&RunRequest::default())
        .await
        .map_err(|err| format!("{what}: the run failed: {err}"))
}

/// The rules a person's edit added and removed, from the request's fault description.
fn edit_of(record: &RequestRecord) -> Option<(Vec<String>, Vec<String>)> {
    let edit = record
        .fault
        .as_deref()?
        .strip_prefix("edit ip rules after: ")?;
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for word in edit.split_whitespace() {
        match word.split_at(1) {
            ("+", rule) => added.push(rule.to_owned()),
            ("-", rule) => removed.push(rule.to_owned()),
            _ => {}
        }
    }
    Some((added, removed))
}

fn answer_lost(record: &RequestRecord) -> bool {
    record.fault.as_deref() == Some("drop connection after handling")
}

/// A write that changed the vault (its answer may have been lost).
/// The retired ranges tagfence added itself: not the ones a person had on the vault first.
fn ours(retired: &BTreeSet<String>, initial: &[String]) -> BTreeSet<String> {
    retired
        .iter()
        .filter(|r| !initial.contains(r))
        .cloned()
        .collect()
}

fn write_applied(record: &RequestRecord) -> bool {
    record.route == Route::VaultPatch && record.status == 200
}

/// A read whose answer reached tagfence.
fn read_seen(record: &RequestRecord) -> bool {
    record.route == Route::VaultGet && record.status == 200 && !answer_lost(record)
}

/// Runs one seed; `Err` names the seed, the vault and what was wrong.
pub async fn run_seed(seed: u64) -> Result<Tally, String> {
    let scenario = Scenario::new(seed);
    let fail = |what: String| format!("seed {seed}: {what}");
    let emulator = start(emulator_config(
        scenario
            .vaults
            .iter()
            .zip(&scenario.initial)
            .map(|(name, rules)| {
                let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
                vault(name, &rules)
            })
            .collect(),
    ))
    .await;
    let work = crate::support::Scratch::new();
    let (doc_a, doc_b) = (work.join("a.json"), work.join("b.json"));
    write_document(&doc_a, 100, 1, &scenario.doc_a);
    write_document(&doc_b, 101, 2, &scenario.doc_b);
    let state = work.join("state");
    let started = std::time::Instant::now();
    let result = check(&emulator, &scenario, &doc_a, &doc_b, &state).await;
    emulator.shutdown().await;
    result.map_err(fail).map(|mut tally| {
        tally.slowest_seed_ms = started.elapsed().as_millis() as u64;
        tally
    })
}

async fn check(
    emulator: &Emulator,
    scenario: &Scenario,
    doc_a: &Path,
    doc_b: &Path,
    state: &Path,
) -> Result<Tally, String> {
    let mut tally = Tally {
        seeds: 1,
        ..Tally::default()
    };
    let a = set(&scenario.doc_a);
    let b = set(&scenario.doc_b);
    let retired: BTreeSet<String> = a.difference(&b).cloned().collect();
    let rules = |name: &str| -> BTreeSet<String> { emulator.ip_rules(name).into_iter().collect() };

    // 0. A clean run takes the vaults over with the first document.
    let clean = |doc| runner(emulator, scenario, doc, state, CLEAN_ATTEMPT_TIMEOUT);
    let report = run(&clean(doc_a), "first run").await?;
    tally.reconciles += report.vaults.len();
    if report.failures() > 0 {
        return Err(format!("the clean first run failed:\n{}", report.to_text()));
    }
    for (name, initial) in scenario.vaults.iter().zip(&scenario.initial) {
        let want: BTreeSet<String> = set(initial).union(&a).cloned().collect();
        if rules(name) != want {
            return Err(format!(
                "{name} after the first run: {:?}, not {want:?}",
                rules(name)
            ));
        }
    }
    // People add rules between the runs.
    for (name, added) in scenario.vaults.iter().zip(&scenario.between) {
        if !added.is_empty() {
            let mut edited = emulator.ip_rules(name);
            edited.extend(added.iter().cloned());
            emulator.set_ip_rules(name, edited);
        }
    }
    let before: Vec<BTreeSet<String>> = scenario.vaults.iter().map(|n| rules(n)).collect();

    // 1. The run under faults, with the second document.
    emulator.clear_requests();
    for fault in &scenario.faults {
        emulator.add_fault(fault.clone());
    }
    tally.faults_queued += scenario
        .faults
        .iter()
        .filter(|f| !matches!(f.kind, FaultKind::Delay { ms: 0 }))
        .count();
    let faulty = runner(emulator, scenario, doc_b, state, ATTEMPT_TIMEOUT);
    let report = run(&faulty, "the run under faults").await?;
    tally.reconciles += report.vaults.len();
    // A delayed request whose client gave up is recorded once the emulator notices, and is
    // never handled; wait out the longest delay anyway, so that nothing of this run can land in
    // the next.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    emulator.clear_faults();
    let log = emulator.requests();
    tally.requests += log.len();
    tally.faulted_requests += log
        .iter()
        .filter(|r| r.fault.as_deref().is_some_and(|f| f != "delay 0ms"))
        .count();

    let mut after_faults = Vec::new();
    for (index, name) in scenario.vaults.iter().enumerate() {
        let report_of = &report.vaults[index];
        let records: Vec<&RequestRecord> = log
            .iter()
            .filter(|r| r.vault.as_deref() == Some(name.as_str()))
            .collect();
        let before = &before[index];
        let ours_retired = ours(&retired, &scenario.initial[index]);
        let intended: BTreeSet<String> = before
            .difference(&ours_retired)
            .cloned()
            .chain(b.iter().cloned())
            .collect();
        let now = rules(name);
        let context = || {
            let trace: Vec<String> = records
                .iter()
                .map(|r| format!("{} {} {:?}", r.method, r.status, r.fault))
                .collect();
            format!(
                "{name}: before {before:?}\nintended {intended:?}\nnow {now:?}\noutcome {:?} wrote {}\nrequests {trace:#?}",
                report_of.outcome, report_of.wrote
            )
        };

        // The rules people touched during the run, and whether each added one may be lost.
        let mut touched = BTreeSet::new();
        let mut must_survive = BTreeSet::new();
        for (at, record) in records.iter().enumerate() {
            let Some((added, removed)) = edit_of(record) else {
                continue;
            };
            touched.extend(added.iter().cloned());
            touched.extend(removed.iter().cloned());
            // What happened next on this vault: a read tagfence saw, or a write that landed.
            let next = records[at + 1..]
                .iter()
                .find(|r| read_seen(r) || write_applied(r));
            let in_window = next.is_some_and(|r| write_applied(r));
            tally.edits += 1;
            if in_window {
                tally.edits_in_window += 1;
            } else if next.is_some() {
                tally.edits_seen += 1;
            }
            tally.person_rules += added.len();
            for rule in added {
                if in_window {
                    if !now.contains(&rule) {
                        tally.lost_in_window += 1;
                    }
                } else {
                    must_survive.insert(rule);
                }
            }
        }
        let untouched = |rules: &BTreeSet<String>| -> BTreeSet<String> {
            rules.difference(&touched).cloned().collect()
        };

        // Old or new, as the log says: new exactly when a write landed.
        let wrote = records.iter().any(|r| write_applied(r));
        let expected = if wrote { &intended } else { before };
        if untouched(&now) != untouched(expected) {
            return Err(format!(
                "the vault is neither as it was nor at its new intended state (a write landed: {wrote})\n{}",
                context()
            ));
        }
        if let Some(lost) = must_survive.iter().find(|r| !now.contains(*r)) {
            return Err(format!(
                "the person's rule {lost} was lost outside the re-read/write window\n{}",
                context()
            ));
        }
        // The report agrees with the vault.
        match &report_of.outcome {
            Outcome::Applied => {
                tally.applied += 1;
                if !wrote || untouched(&now) != untouched(&intended) {
                    return Err(format!("reported applied, but\n{}", context()));
                }
            }
            Outcome::Failed(error) => {
                tally.failed += 1;
                if report_of.wrote {
                    tally.failed_after_write += 1;
                } else if wrote {
                    return Err(format!(
                        "reported failed with nothing written, but a write landed ({error})\n{}",
                        context()
                    ));
                }
                if error.to_string().is_empty() {
                    return Err(format!("a failure without an error\n{}", context()));
                }
            }
            // Nothing to do is right only when the new intended rules are the old ones.
            Outcome::InSync if !wrote && untouched(before) == untouched(&intended) => {
                tally.in_sync += 1;
            }
            other => {
                return Err(format!(
                    "the run under faults ended {other:?}, which cannot be\n{}",
                    context()
                ))
            }
        }
        after_faults.push(now);
    }

    // 2. A clean run brings every vault to its intended state.
    emulator.clear_requests();
    let runner = clean(doc_b);
    let report = run(&runner, "the clean run after").await?;
    tally.reconciles += report.vaults.len();
    if report.failures() > 0 {
        return Err(format!(
            "the clean run after the faults failed:\n{}",
            report.to_text()
        ));
    }
    let status = runner.status().await.map_err(|e| e.to_string())?;
    for (index, name) in scenario.vaults.iter().enumerate() {
        let now = rules(name);
        let want: BTreeSet<String> = after_faults[index]
            .difference(&ours(&retired, &scenario.initial[index]))
            .cloned()
            .chain(b.iter().cloned())
            .collect();
        if now != want {
            return Err(format!(
                "{name} after the clean run: {now:?}, not {want:?} (after the faults: {:?}; outcome {:?})",
                after_faults[index], report.vaults[index].outcome
            ));
        }
        let remembered = status.vaults[index].1.as_ref();
        let pending = remembered.map_or(0, |r| r.pending.len());
        let recorded: Option<BTreeSet<String>> =
            remembered.and_then(|r| r.applied.as_ref()).map(|a| {
                a.desired
                    .rules()
                    .iter()
                    .map(|r| r.rule.to_string())
                    .collect()
            });
        if pending != 0 || recorded.as_ref() != Some(&b) {
            return Err(format!(
                "{name}: the state after the clean run holds {pending} pending rules and {recorded:?} as last applied"
            ));
        }
    }
    if emulator.requests().iter().any(|r| r.fault.is_some()) {
        return Err("a fault outlived the run it was meant for".into());
    }
    Ok(tally)
}
