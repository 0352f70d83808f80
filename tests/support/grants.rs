//! What the tests of just-in-time grants share (`tests/grants.rs`, `tests/grants_attacks.rs`): a
//! clock the tests move, a runner on it, and one emulator with a directory state ([`World`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tagfence::config::{Config, Settings};
use tagfence::run::{GrantReport, RunReport, RunRequest, Runner};
use tagfence::state::{GrantRecord, GrantsIndex, State};
use tagfence_emulator::{Emulator, Fault, FaultKind, Route};

use super::observe::{count_for, settings, MANUAL};
use super::{credential, emulator_config, start, vault, vault_id, Scratch};

/// A public address inside the fixture's AzureDevOps range 20.37.158.0/23, as a hosted agent's.
pub const AGENT: &str = "20.37.158.9";

/// A clock the test moves (also backwards).
#[derive(Clone)]
pub struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    pub fn new() -> TestClock {
        TestClock(Arc::new(Mutex::new(Utc::now())))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += chrono::Duration::from_std(by).unwrap();
    }

    pub fn rewind(&self, by: Duration) {
        *self.0.lock().unwrap() -= chrono::Duration::from_std(by).unwrap();
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }

    /// The runner's view of it.
    pub fn clock(&self) -> tagfence::run::Clock {
        let inner = self.0.clone();
        Arc::new(move || *inner.lock().unwrap())
    }
}

/// A runner on `settings` against the emulator, reading the time from `clock`.
pub fn make_runner(emulator: &Emulator, settings: &Settings, clock: &TestClock) -> Runner {
    let config = Config::from_settings(settings).expect("valid configuration");
    Runner::with_credential(config, credential(emulator), "test token".into())
        .unwrap()
        .with_clock(clock.clock())
}

/// Vaults managed by one runner with a directory state, all on one emulator.
pub struct World {
    pub emulator: Emulator,
    pub scratch: Scratch,
    pub settings: Settings,
    pub clock: TestClock,
    pub runner: Runner,
}

impl World {
    /// `seed` in the emulator; the vaults named in `managed` listed; `edit` changes the
    /// settings before the runner is built.
    pub async fn new(
        seed: Vec<Value>,
        managed: &[&str],
        edit: impl FnOnce(&mut Settings),
    ) -> World {
        let emulator = start(emulator_config(seed)).await;
        let scratch = Scratch::new();
        let ids: Vec<String> = managed.iter().map(|n| vault_id(n)).collect();
        let mut settings = settings(&emulator, &ids, Some(&scratch));
        edit(&mut settings);
        let clock = TestClock::new();
        let runner = make_runner(&emulator, &settings, &clock);
        World {
            emulator,
            scratch,
            settings,
            clock,
            runner,
        }
    }

    /// One vault `kv1` holding a person's rule, managed, after a first regular run.
    pub async fn kv1(edit: impl FnOnce(&mut Settings)) -> World {
        let world = World::new(vec![vault("kv1", &[MANUAL])], &["kv1"], edit).await;
        world.regular_run().await;
        world
    }

    /// A second runner on the same settings, state and clock (another instance).
    pub fn another_runner(&self) -> Runner {
        make_runner(&self.emulator, &self.settings, &self.clock)
    }

    /// A regular run of every managed vault, which must not fail.
    pub async fn regular_run(&self) -> RunReport {
        let report = self.runner.run(&RunRequest::default()).await.unwrap();
        assert_eq!(report.failures(), 0, "{}", report.to_text());
        report
    }

    pub fn state(&self) -> &State {
        self.runner.state().expect("a state is configured")
    }

    pub async fn index(&self) -> GrantsIndex {
        self.state().read_grants_index().await.unwrap()
    }

    pub async fn grants(&self) -> Vec<GrantRecord> {
        self.runner.grants().await.unwrap()
    }

    pub fn patches(&self, name: &str) -> usize {
        count_for(&self.emulator, Route::VaultPatch, name)
    }

    pub fn rules(&self, name: &str) -> BTreeSet<String> {
        self.emulator.ip_rules(name).into_iter().collect()
    }
}

/// The vault's whole `networkAcls` as the emulator stores it.
pub fn acls(emulator: &Emulator, name: &str) -> Value {
    emulator.vault(name).expect("the vault exists")["properties"]["networkAcls"].clone()
}

/// `address` as the rule a grant writes.
pub fn rule(address: &str) -> String {
    format!("{address}/32")
}

pub fn succeeded(report: &GrantReport) {
    assert!(report.succeeded(), "{}", report.to_text());
}

/// An ARM error answer the emulator injects.
pub fn status_fault(status: u16, code: &str) -> FaultKind {
    FaultKind::Status {
        status,
        code: code.to_owned(),
        message: "Injected.".to_owned(),
        retry_after: None,
    }
}

/// `kind` injected `count` times on `route` of `vault`.
pub fn fault_on(route: Route, vault: &str, kind: FaultKind, count: u32) -> Fault {
    Fault {
        route: Some(route),
        vault: Some(vault.to_owned()),
        kind,
        count,
    }
}
