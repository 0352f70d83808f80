//! Wall time of `apply` over many vaults against the emulator, with its ARM write throttling on
//! (a bucket of 200 writes refilled at 10/s per subscription, as ARM's). Not a criterion bench:
//! one reconcile of N vaults is the unit, and both runs are reported.
//!
//! Run: `cargo bench --bench apply -- [VAULTS] [CONCURRENCY] [STATE]` (defaults 100, 8, none).
//! STATE is `none`, `dir` (a fresh temporary directory) or an https container URL (Blob storage,
//! e.g. Azurite; its CA from `TAGFENCE_STATE_CA_FILE`); `scripts/bench_state.sh` runs the Blob
//! case against Azurite. Figures: BENCHMARKS.md.

use std::sync::Arc;
use std::time::Instant;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use serde_json::json;
use tagfence::config::{Config, SelectionSettings, Settings};
use tagfence::run::{RunRequest, Runner};
use tagfence_emulator::{Config as EmulatorConfig, Emulator, Route, Seed};

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

fn vault_id(i: usize) -> String {
    format!("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-bench/providers/Microsoft.KeyVault/vaults/kv-bench-{i:04}")
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let vaults: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let state = args.next().unwrap_or_else(|| "none".to_owned());
    let state_dir =
        std::env::temp_dir().join(format!("tagfence-bench-state-{}", std::process::id()));
    let (state_dir_arg, state_url) = match state.as_str() {
        "none" => (None, None),
        "dir" => (Some(state_dir.clone()), None),
        url => (None, Some(url.to_owned())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let seed: Vec<_> = (0..vaults)
            .map(|i| {
                json!({"id": vault_id(i), "name": format!("kv-bench-{i:04}"), "type": "Microsoft.KeyVault/vaults", "location": "westeurope",
                    "properties": {"tenantId": "00000000-0000-0000-0000-0000000000aa", "sku": {"family": "A", "name": "standard"},
                        "networkAcls": {"defaultAction": "Deny", "bypass": "AzureServices", "ipRules": [{"value": format!("52.174.{}.{}/32", i / 250, i % 250)}], "virtualNetworkRules": []}}})
            })
            .collect();
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ServiceTags_Public.changeNumber-365.json.gz");
        let emulator = Emulator::start(
            EmulatorConfig {
                seed: Seed { vaults: seed, ..Seed::default() },
                service_tags: Some(std::fs::read(fixture).unwrap()),
                ..EmulatorConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let args = Settings {
            vaults: (0..vaults).map(vault_id).collect(),
            selection: SelectionSettings { tags: vec!["AzureDevOps".into()], static_rules: vec!["52.1.2.3".into()] },
            source: Some("download".into()),
            arm_endpoint: Some(emulator.base_url()),
            download_page_url: Some(emulator.download_page_url()),
            concurrency: Some(concurrency),
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
        let runner = Runner::with_credential(Config::from_settings(&args).unwrap(), Arc::new(tokens), "bench".into()).unwrap();

        for label in ["first run (every vault written)", "second run (every vault in sync)"] {
            emulator.clear_requests();
            let started = Instant::now();
            let report = runner.run(&RunRequest::default()).await.unwrap();
            let elapsed = started.elapsed();
            let requests = emulator.requests();
            let count = |route: Route| requests.iter().filter(|r| r.route == route).count();
            let throttled = requests.iter().filter(|r| r.status == 429).count();
            println!(
                "{vaults} vaults, concurrency {concurrency}, state {state}, {label}: {:.2} s wall; {} GET, {} PATCH, {} throttled (429); {} failed vaults",
                elapsed.as_secs_f64(),
                count(Route::VaultGet),
                count(Route::VaultPatch),
                throttled,
                report.failures()
            );
            assert_eq!(report.failures(), 0, "{}", report.summary());
        }
        emulator.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&state_dir);
}
