//! Wall time of `apply` over many vaults against the emulator, with ARM's throttling on: per
//! subscription a bucket of 200 writes refilled at 10/s and one of 250 reads refilled at 25/s, as
//! ARM's; Resource Graph's quota of 15 queries per 5 s. Not a criterion bench: one reconcile of N
//! vaults is the unit, and both runs are reported (first: every vault written; second: every
//! vault in sync, as a week later — the bench tells the runner its writes are old).
//!
//! Run: `cargo bench --bench apply -- [VAULTS] [CONCURRENCY] [STATE] [SUBSCRIPTIONS]
//! [LATENCY_MS] [OBSERVE] [IN_FLIGHT] [KINDS]` (defaults 100, 8, none, 1, 0, graph, 64, vaults).
//! KINDS is `vaults` or `mixed` (every other resource a storage account: half vaults, half
//! storage accounts, one ARM write budget per subscription for both). STATE is `none`, `dir` (a fresh
//! temporary directory) or an https container URL (Blob storage, e.g. Azurite; its CA from
//! `TAGFENCE_STATE_CA_FILE`); `scripts/bench_state.sh` runs the Blob case against Azurite.
//! LATENCY_MS is added by the emulator to every ARM and Resource Graph answer. OBSERVE is `graph`
//! or `arm`. Figures: BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use serde_json::json;
use tagfence::config::{Config, Observe, SelectionSettings, Settings};
use tagfence::reconcile::Observed;
use tagfence::run::{RunRequest, Runner};
use tagfence_emulator::{Config as EmulatorConfig, Emulator, Route, Seed, Throttle};

/// Emulator tokens: Storage ones for Storage scopes, ARM ones otherwise.
#[derive(Debug)]
struct Tokens {
    arm: String,
    storage: String,
}

#[async_trait::async_trait]
impl TokenCredential for Tokens {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let storage = scopes
            .iter()
            .any(|s| s.starts_with("https://storage.azure.com"));
        Ok(AccessToken::new(
            if storage { &self.storage } else { &self.arm }.clone(),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

fn subscription(i: usize) -> String {
    format!("00000000-0000-0000-0000-{:012}", i + 1)
}

/// Whether resource `i` is a storage account (`mixed`: every odd one) rather than a vault.
fn is_storage(i: usize, args: &Args) -> bool {
    args.kinds == "mixed" && i % 2 == 1
}

fn vault_id(i: usize, args: &Args) -> String {
    let subscription = subscription(i % args.subscriptions);
    if is_storage(i, args) {
        format!("/subscriptions/{subscription}/resourceGroups/rg-bench/providers/Microsoft.Storage/storageAccounts/stbench{i:05}")
    } else {
        format!("/subscriptions/{subscription}/resourceGroups/rg-bench/providers/Microsoft.KeyVault/vaults/kv-bench-{i:05}")
    }
}

/// The bench's arguments.
struct Args {
    vaults: usize,
    concurrency: usize,
    state: String,
    subscriptions: usize,
    latency_ms: u64,
    observe: String,
    in_flight: usize,
    kinds: String,
}

fn args() -> Args {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut next = || args.next();
    Args {
        vaults: next().and_then(|a| a.parse().ok()).unwrap_or(100),
        concurrency: next().and_then(|a| a.parse().ok()).unwrap_or(8),
        state: next().unwrap_or_else(|| "none".to_owned()),
        subscriptions: next().and_then(|a| a.parse().ok()).unwrap_or(1).max(1),
        latency_ms: next().and_then(|a| a.parse().ok()).unwrap_or(0),
        observe: next().unwrap_or_else(|| "graph".to_owned()),
        in_flight: next()
            .and_then(|a| a.parse().ok())
            .unwrap_or(tagfence::azure::arm::MAX_IN_FLIGHT),
        kinds: next().unwrap_or_else(|| "vaults".to_owned()),
    }
}

fn seed(args: &Args) -> Vec<serde_json::Value> {
    (0..args.vaults)
        .map(|i| {
            let person = format!("52.174.{}.{}", i / 250, i % 250);
            if is_storage(i, args) {
                json!({"id": vault_id(i, args), "name": format!("stbench{i:05}"), "type": "Microsoft.Storage/storageAccounts", "location": "westeurope",
                    "kind": "StorageV2", "sku": {"name": "Standard_LRS", "tier": "Standard"},
                    "properties": {"networkAcls": {"defaultAction": "Deny", "bypass": "AzureServices", "ipRules": [{"value": person, "action": "Allow"}], "virtualNetworkRules": [],
                        "resourceAccessRules": [{"tenantId": "00000000-0000-0000-0000-0000000000aa", "resourceId": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Synapse/workspaces/syn"}]}}})
            } else {
                json!({"id": vault_id(i, args), "name": format!("kv-bench-{i:05}"), "type": "Microsoft.KeyVault/vaults", "location": "westeurope",
                    "properties": {"tenantId": "00000000-0000-0000-0000-0000000000aa", "sku": {"family": "A", "name": "standard"},
                        "networkAcls": {"defaultAction": "Deny", "bypass": "AzureServices", "ipRules": [{"value": format!("{person}/32")}], "virtualNetworkRules": []}}})
            }
        })
        .collect()
}

fn main() {
    let args = args();
    let state_dir =
        std::env::temp_dir().join(format!("tagfence-bench-state-{}", std::process::id()));
    let (state_dir_arg, state_url) = match args.state.as_str() {
        "none" => (None, None),
        "dir" => (Some(state_dir.clone()), None),
        url => (None, Some(url.to_owned())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ServiceTags_Public.changeNumber-365.json.gz");
        let emulator = Emulator::start(
            EmulatorConfig {
                seed: Seed { vaults: seed(&args), ..Seed::default() },
                service_tags: Some(std::fs::read(fixture).unwrap()),
                read_throttle: Some(Throttle { capacity: 250, refill_per_sec: 25.0 }),
                latency: Duration::from_millis(args.latency_ms),
                ..EmulatorConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let settings = Settings {
            vaults: (0..args.vaults).map(|i| vault_id(i, &args)).collect(),
            selection: SelectionSettings { tags: vec!["AzureDevOps".into()], static_rules: vec!["52.1.2.3".into()] },
            source: Some("download".into()),
            arm_endpoint: Some(emulator.base_url()),
            download_page_url: Some(emulator.download_page_url()),
            concurrency: Some(args.concurrency),
            observe: Some(if args.observe == "arm" { Observe::Arm } else { Observe::Graph }),
            http_timeout_secs: Some(30),
            http_max_retries: Some(8),
            http_retry_delay_ms: Some(800),
            http_call_timeout_secs: Some(600),
            state_dir: state_dir_arg,
            state_url,
            state_ca_file: std::env::var_os("TAGFENCE_STATE_CA_FILE").map(Into::into),
            ..Settings::default()
        };
        let tokens = Tokens {
            arm: emulator.issue_token("https://management.azure.com/"),
            storage: emulator.issue_token("https://storage.azure.com/"),
        };
        let mut config = Config::from_settings(&settings).unwrap();
        // The second run stands for next week's: tagfence's writes of the first are old by then.
        config.index_trusted_after_write = Duration::ZERO;
        config.max_in_flight = args.in_flight;
        let runner = Runner::with_credential(config, Arc::new(tokens), "bench".into()).unwrap();

        for label in ["first run (every vault written)", "second run (every vault in sync)"] {
            emulator.clear_requests();
            let started = Instant::now();
            let report = runner.run(&RunRequest::default()).await.unwrap();
            let elapsed = started.elapsed();
            let requests = emulator.requests();
            let count = |routes: &[Route]| requests.iter().filter(|r| routes.contains(&r.route)).count();
            let throttled = |routes: &[Route]| requests.iter().filter(|r| routes.contains(&r.route) && r.status == 429).count();
            let gets = [Route::VaultGet, Route::StorageAccountGet];
            let patches = [Route::VaultPatch, Route::StorageAccountPatch];
            let by_index = report.vaults.iter().filter(|v| v.observed == Observed::ResourceGraph).count();
            println!(
                "{} resources ({}) in {} subscription(s), concurrency {} (in flight {}), latency {} ms, observe {}, state {}, {label}: {:.2} s wall; {} GET ({} of storage accounts), {} PATCH ({} of storage accounts), {} Resource Graph queries; 429: {} GET, {} PATCH, {} Resource Graph; {} in sync by the index; {} failed",
                args.vaults, args.kinds, args.subscriptions, args.concurrency, args.in_flight, args.latency_ms, args.observe, args.state,
                elapsed.as_secs_f64(),
                count(&gets),
                count(&[Route::StorageAccountGet]),
                count(&patches),
                count(&[Route::StorageAccountPatch]),
                count(&[Route::ResourceGraph]),
                throttled(&gets),
                throttled(&patches),
                throttled(&[Route::ResourceGraph]),
                by_index,
                report.failures()
            );
            assert_eq!(report.failures(), 0, "{}", report.summary());
        }
        emulator.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&state_dir);
}
