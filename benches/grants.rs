//! Just-in-time grants against the emulator (issue 15): the ARM requests of one grant and one
//! revoke, their wall time (median of ROUNDS), 20 grants asked at once on one vault, and a sweep
//! over VAULTS vaults holding one expired grant each. Not a criterion bench: one grant, revoke
//! or sweep is a whole run (lock, state record, GET, GET, PATCH, record, run record, grants
//! index), and each is reported on its own line.
//!
//! Run: `cargo bench --bench grants -- [VAULTS] [ROUNDS]` (defaults 100, 20). The emulator runs
//! in this process on loopback (plain http, no added latency, ARM's write throttling on); the
//! state is a fresh temporary directory. Time moves on the runner's clock, not the wall's: the
//! grants of the sweep expire without waiting. Figures: BENCHMARKS.md.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde_json::json;
use tagfence::config::{Config, SelectionSettings, Settings};
use tagfence::run::{GrantRequest, Requester, RevokeRequest, RevokeTarget, Runner};
use tagfence_emulator::{Config as EmulatorConfig, Emulator, Route, Seed};

/// Emulator tokens for ARM.
#[derive(Debug)]
struct Token(String);

#[async_trait::async_trait]
impl TokenCredential for Token {
    async fn get_token(
        &self,
        _: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            self.0.clone(),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

/// The runners' clock, moved by the bench.
#[derive(Clone)]
struct BenchClock(Arc<Mutex<DateTime<Utc>>>);

impl BenchClock {
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += chrono::Duration::from_std(by).unwrap();
    }
    fn clock(&self) -> tagfence::run::Clock {
        let inner = self.0.clone();
        Arc::new(move || *inner.lock().unwrap())
    }
}

/// The single-vault cases live in one subscription, the sweep's vaults in another: each has
/// ARM's write bucket (and tagfence's client-side budget) to itself.
const SINGLE: &str = "00000000-0000-0000-0000-000000000001";
const FLEET: &str = "00000000-0000-0000-0000-000000000002";

fn vault_id(subscription: &str, name: &str) -> String {
    format!("/subscriptions/{subscription}/resourceGroups/rg-bench/providers/Microsoft.KeyVault/vaults/{name}")
}

/// A vault holding the 24 AzureDevOps rules and a person's rule, as after a regular run.
fn vault(subscription: &str, name: &str) -> serde_json::Value {
    let mut rules: Vec<serde_json::Value> = [
        "20.37.158.0/23",
        "20.37.194.0/24",
        "20.39.13.0/26",
        "20.41.6.0/23",
        "20.41.194.0/24",
        "20.42.5.0/24",
        "20.42.134.0/23",
        "20.42.226.0/24",
        "20.45.196.64/26",
        "20.91.148.128/25",
        "20.125.155.0/24",
        "20.166.41.0/24",
        "20.189.107.0/24",
        "20.195.68.0/24",
        "20.204.197.192/26",
        "20.233.130.0/25",
        "40.74.28.0/23",
        "40.80.187.0/24",
        "40.82.252.0/24",
        "40.119.10.0/24",
        "51.104.26.0/24",
        "52.150.138.0/24",
        "52.228.82.0/24",
        "191.235.226.0/24",
    ]
    .iter()
    .map(|r| json!({"value": r}))
    .collect();
    rules.push(json!({"value": "52.174.10.20/32"}));
    json!({"id": vault_id(subscription, name), "name": name, "type": "Microsoft.KeyVault/vaults", "location": "westeurope",
        "properties": {"tenantId": "00000000-0000-0000-0000-0000000000aa", "sku": {"family": "A", "name": "standard"},
            "networkAcls": {"defaultAction": "Deny", "bypass": "None", "ipRules": rules, "virtualNetworkRules": []}}})
}

fn grant(vault: &str, address: &str) -> GrantRequest {
    GrantRequest {
        vault: vault.to_owned(),
        address: address.parse().unwrap(),
        ttl: Some(Duration::from_secs(60)),
        reason: Some("bench".to_owned()),
        requester: Requester::Cli {
            label: "bench".to_owned(),
        },
        trigger: "cli",
    }
}

fn revoke(vault: &str, address: &str) -> RevokeRequest {
    RevokeRequest {
        vault: Some(vault.to_owned()),
        target: RevokeTarget::Address(address.parse().unwrap()),
        requester: Requester::Cli {
            label: "bench".to_owned(),
        },
        trigger: "cli",
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// GETs, PATCHes and 429s of the vault routes since the log was last cleared.
fn counts(emulator: &Emulator) -> (usize, usize, usize) {
    let requests = emulator.requests();
    let count = |route: Route| requests.iter().filter(|r| r.route == route).count();
    let throttled = requests.iter().filter(|r| r.status == 429).count();
    (count(Route::VaultGet), count(Route::VaultPatch), throttled)
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let vaults: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let rounds: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(20)
        .max(1);
    let state_dir =
        std::env::temp_dir().join(format!("tagfence-bench-grants-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let fleet: Vec<String> = (0..vaults).map(|i| format!("kv-fleet-{i:04}")).collect();
        let mut seed = vec![vault(SINGLE, "kv-one"), vault(SINGLE, "kv-many")];
        seed.extend(fleet.iter().map(|name| vault(FLEET, name)));
        let emulator = Emulator::start(
            EmulatorConfig {
                seed: Seed {
                    vaults: seed,
                    ..Seed::default()
                },
                ..EmulatorConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let one = vault_id(SINGLE, "kv-one");
        let many = vault_id(SINGLE, "kv-many");
        let fleet_ids: Vec<String> = fleet.iter().map(|n| vault_id(FLEET, n)).collect();
        let mut listed = vec![one.clone(), many.clone()];
        listed.extend(fleet_ids.iter().cloned());
        let settings = Settings {
            vaults: listed,
            selection: SelectionSettings {
                tags: vec!["AzureDevOps".into()],
                static_rules: Vec::new(),
            },
            arm_endpoint: Some(emulator.base_url()),
            concurrency: Some(8),
            http_timeout_secs: Some(30),
            http_max_retries: Some(8),
            http_retry_delay_ms: Some(800),
            http_call_timeout_secs: Some(600),
            state_dir: Some(state_dir.clone()),
            ..Settings::default()
        };
        let clock = BenchClock(Arc::new(Mutex::new(Utc::now())));
        let token = emulator.issue_token("https://management.azure.com/");
        let runner = || {
            Runner::with_credential(
                Config::for_grants(&settings).unwrap(),
                Arc::new(Token(token.clone())),
                "bench".into(),
            )
            .unwrap()
            .with_clock(clock.clock())
        };
        let single = runner();

        // (a) and (b): one grant, then its revoke, ROUNDS times on one vault.
        let (mut granting, mut revoking) = (Vec::new(), Vec::new());
        let (mut grant_requests, mut revoke_requests) = ((0, 0, 0), (0, 0, 0));
        for _ in 0..rounds {
            emulator.clear_requests();
            let started = Instant::now();
            let report = single.grant(&grant(&one, "52.174.20.1")).await.unwrap();
            granting.push(started.elapsed());
            assert!(report.succeeded(), "{}", report.to_text());
            let (g, p, t) = counts(&emulator);
            grant_requests = (grant_requests.0 + g, grant_requests.1 + p, grant_requests.2 + t);
            emulator.clear_requests();
            let started = Instant::now();
            let report = single.revoke(&revoke(&one, "52.174.20.1")).await.unwrap();
            revoking.push(started.elapsed());
            assert!(report.succeeded(), "{}", report.to_text());
            let (g, p, t) = counts(&emulator);
            revoke_requests = (revoke_requests.0 + g, revoke_requests.1 + p, revoke_requests.2 + t);
        }
        let per = |n: usize| n as f64 / rounds as f64;
        println!(
            "grant, {rounds} rounds: median {} (min {}, max {}); per grant {:.1} GET, {:.1} PATCH, {} answered 429",
            ms(median(granting.clone())),
            ms(*granting.iter().min().unwrap()),
            ms(*granting.iter().max().unwrap()),
            per(grant_requests.0),
            per(grant_requests.1),
            grant_requests.2
        );
        println!(
            "revoke, {rounds} rounds: median {} (min {}, max {}); per revoke {:.1} GET, {:.1} PATCH, {} answered 429",
            ms(median(revoking.clone())),
            ms(*revoking.iter().min().unwrap()),
            ms(*revoking.iter().max().unwrap()),
            per(revoke_requests.0),
            per(revoke_requests.1),
            revoke_requests.2
        );

        // (c): 20 grants asked at once on one vault, then their 20 revokes at once.
        let addresses: Vec<String> = (1..=20).map(|i| format!("52.174.21.{i}")).collect();
        let requests: Vec<GrantRequest> = addresses.iter().map(|a| grant(&many, a)).collect();
        emulator.clear_requests();
        let started = Instant::now();
        let reports = join_all(requests.iter().map(|r| single.grant(r))).await;
        let elapsed = started.elapsed();
        assert!(reports.iter().all(|r| r.as_ref().unwrap().succeeded()));
        let (g, p, t) = counts(&emulator);
        println!(
            "20 grants at once on one vault: {} wall; {g} GET, {p} PATCH, {t} answered 429",
            ms(elapsed)
        );
        let requests: Vec<RevokeRequest> = addresses.iter().map(|a| revoke(&many, a)).collect();
        emulator.clear_requests();
        let started = Instant::now();
        let reports = join_all(requests.iter().map(|r| single.revoke(r))).await;
        let elapsed = started.elapsed();
        assert!(reports.iter().all(|r| r.as_ref().unwrap().succeeded()));
        let (g, p, t) = counts(&emulator);
        println!(
            "20 revokes at once on one vault: {} wall; {g} GET, {p} PATCH, {t} answered 429",
            ms(elapsed)
        );

        // (d): VAULTS vaults with one grant each (placed 8 at a time), then expired and swept.
        // Twice: right after placing them, when ARM's read bucket is nearly spent by the
        // placing (2 reads each), and again once its buckets are full (reads 250/25 per s, writes
        // 200/10 per s: 20 s), as when a sweep runs minutes after the grants.
        let mut full_budget_sweep = Duration::ZERO;
        for (round, pause) in [("right after placing", 0u64), ("ARM's budgets full", 20)] {
            let requests: Vec<GrantRequest> =
                fleet_ids.iter().map(|v| grant(v, "52.174.22.1")).collect();
            let placing = runner();
            let started = Instant::now();
            for chunk in requests.chunks(8) {
                let reports = join_all(chunk.iter().map(|r| placing.grant(r))).await;
                assert!(reports.iter().all(|r| r.as_ref().unwrap().succeeded()));
            }
            println!(
                "{vaults} grants on {vaults} vaults, 8 at a time: {:.2} s wall",
                started.elapsed().as_secs_f64()
            );
            drop(placing);
            // A sweep as the timer starts it: a fresh instance.
            let sweeper = runner();
            emulator.clear_requests();
            let started = Instant::now();
            let sweep = sweeper.sweep("timer").await.unwrap();
            let elapsed = started.elapsed();
            let (g, p, t) = counts(&emulator);
            assert!(sweep.vaults.is_empty());
            println!(
                "sweep, {} vaults indexed, every grant live: {} wall; {g} GET, {p} PATCH, {t} answered 429",
                sweep.indexed,
                ms(elapsed)
            );
            tokio::time::sleep(Duration::from_secs(pause)).await;
            clock.advance(Duration::from_secs(61));
            let sweeper = runner();
            emulator.clear_requests();
            let started = Instant::now();
            let sweep = sweeper.sweep("timer").await.unwrap();
            let elapsed = started.elapsed();
            let (g, p, t) = counts(&emulator);
            assert_eq!(sweep.vaults.len(), vaults, "{}", sweep.to_text());
            assert!(sweep.failed.is_empty(), "{}", sweep.to_text());
            assert!(fleet
                .iter()
                .all(|n| !emulator.ip_rules(n).contains(&"52.174.22.1/32".to_owned())));
            println!(
                "sweep ({round}), {} vaults indexed, one expired grant each: {} wall; {g} GET, {p} PATCH, {t} answered 429; {} not removed",
                sweep.indexed,
                ms(elapsed),
                sweep.failed.len()
            );
            full_budget_sweep = elapsed;
        }
        // (e): the sweep timer fires every 5 minutes.
        println!(
            "worst-case removal after expiry: {} s (sweep period) + {} (the sweep, budgets full) = {:.2} s",
            tagfence::core::grant::SWEEP_EVERY.as_secs(),
            ms(full_budget_sweep),
            (tagfence::core::grant::SWEEP_EVERY + full_budget_sweep).as_secs_f64()
        );
        emulator.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&state_dir);
}
