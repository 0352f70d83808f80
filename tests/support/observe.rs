//! What the tests of observing through Resource Graph share (`tests/observe.rs`,
//! `tests/observe_attacks.rs`): run settings against the emulator, a runner whose earlier writes
//! may count as long past, and what a run did.

use std::time::Duration;

use tagfence::config::{Config, SelectionSettings, Settings};
use tagfence::reconcile::{Observed, Outcome};
use tagfence::run::{RunReport, RunRequest, Runner};
use tagfence_emulator::{Emulator, Route};

use super::{credential, vault_id, Scratch};

/// A rule a person typed in.
pub const MANUAL: &str = "52.174.10.20/32";

pub fn settings(emulator: &Emulator, vaults: &[String], state: Option<&Scratch>) -> Settings {
    Settings {
        vaults: vaults.to_vec(),
        selection: SelectionSettings {
            tags: vec!["AzureDevOps".to_owned()],
            static_rules: Vec::new(),
        },
        source: Some("download".into()),
        arm_endpoint: Some(emulator.base_url()),
        download_page_url: Some(emulator.download_page_url()),
        concurrency: Some(4),
        http_timeout_secs: Some(5),
        http_max_retries: Some(3),
        http_retry_delay_ms: Some(50),
        http_call_timeout_secs: Some(30),
        state_dir: state.map(|s| s.join("state")),
        ..Settings::default()
    }
}

/// A runner that believes the index about a vault this long after tagfence wrote it.
pub fn runner_with(emulator: &Emulator, settings: &Settings, trusted_after: Duration) -> Runner {
    let mut config = Config::from_settings(settings).expect("valid configuration");
    config.index_trusted_after_write = trusted_after;
    Runner::with_credential(config, credential(emulator), "test token".into()).unwrap()
}

/// A runner; `old_writes` makes tagfence's earlier writes count as long past (a week later).
pub fn runner(emulator: &Emulator, settings: &Settings, old_writes: bool) -> Runner {
    let after = if old_writes {
        Duration::ZERO
    } else {
        tagfence::reconcile::INDEX_TRUSTED_AFTER_WRITE
    };
    runner_with(emulator, settings, after)
}

pub fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| vault_id(n)).collect()
}

pub fn count(emulator: &Emulator, route: Route) -> usize {
    emulator
        .requests()
        .iter()
        .filter(|r| r.route == route)
        .count()
}

pub fn count_for(emulator: &Emulator, route: Route, name: &str) -> usize {
    emulator
        .requests()
        .iter()
        .filter(|r| r.route == route && r.vault.as_deref() == Some(name))
        .count()
}

pub fn observed(report: &RunReport) -> Vec<Observed> {
    report.vaults.iter().map(|v| v.observed).collect()
}

pub fn outcomes(report: &RunReport) -> Vec<Outcome> {
    report.vaults.iter().map(|v| v.outcome.clone()).collect()
}

pub async fn run(runner: &Runner) -> RunReport {
    let report = runner.run(&RunRequest::default()).await.unwrap();
    assert_eq!(report.failures(), 0, "{}", report.to_text());
    report
}
