//! Shared test support: an emulator with sample vaults, a credential that uses its tokens, and
//! the real binary wired to it the way the Functions host or a pipeline would wire it.

#![allow(dead_code)] // each test crate uses part of this

pub mod azurite;
pub mod grants;
pub mod host;
pub mod kinds;
pub mod observe;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use serde_json::{json, Value};
use tagfence_emulator::{Config as EmulatorConfig, Emulator, Seed, TlsIdentity};

/// splitmix64, the seeded generator of the chaos and safety-model tests: tiny, fast, and good
/// enough to scatter faults; a seed reproduces its scenario exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `k` distinct items, in random order.
    pub fn sample<T: Clone>(&mut self, items: &[T], k: usize) -> Vec<T> {
        let mut pool = items.to_vec();
        let k = k.min(pool.len());
        for i in 0..k {
            let j = i + self.below(pool.len() - i);
            pool.swap(i, j);
        }
        pool.truncate(k);
        pool
    }

    /// `lo..=hi` distinct items, in random order.
    pub fn sample_between<T: Clone>(&mut self, items: &[T], lo: u64, hi: u64) -> Vec<T> {
        let k = self.range(lo, hi) as usize;
        self.sample(items, k)
    }
}

/// A directory of its own under the system's temp directory, removed on drop; unique per
/// process and per call, so that tests running at once never share one.
pub struct Scratch(PathBuf);

static SCRATCH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Scratch {
    pub fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "tagfence-test-{}-{}",
            std::process::id(),
            SCRATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000001";
pub const RESOURCE_GROUP: &str = "rg-secrets";

/// The 24 IPv4 prefixes of the AzureDevOps tag in the fixtures (changeNumbers 363–365).
pub const AZURE_DEVOPS: [&str; 24] = [
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
];

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn fixture(change_number: u32) -> PathBuf {
    repo(&format!(
        "tests/fixtures/ServiceTags_Public.changeNumber-{change_number}.json.gz"
    ))
}

pub fn vault_id(name: &str) -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.KeyVault/vaults/{name}")
}

/// A vault as ARM returns it, with these IP rules, a vnet rule, and `Deny`/`AzureServices`.
pub fn vault(name: &str, ip_rules: &[&str]) -> Value {
    json!({
        "id": vault_id(name),
        "name": name,
        "type": "Microsoft.KeyVault/vaults",
        "location": "westeurope",
        "tags": {},
        "properties": {
            "sku": {"family": "A", "name": "standard"},
            "tenantId": "00000000-0000-0000-0000-0000000000aa",
            "enableRbacAuthorization": true,
            "publicNetworkAccess": "Enabled",
            "vaultUri": format!("https://{name}.vault.azure.net/"),
            "provisioningState": "Succeeded",
            "networkAcls": {
                "defaultAction": "Deny",
                "bypass": "None",
                "ipRules": ip_rules.iter().map(|r| json!({"value": r})).collect::<Vec<_>>(),
                "virtualNetworkRules": [{
                    "id": format!("/subscriptions/{SUBSCRIPTION}/resourcegroups/rg-net/providers/microsoft.network/virtualnetworks/vnet-agents/subnets/{name}"),
                    "ignoreMissingVnetServiceEndpoint": false
                }]
            }
        }
    })
}

/// The emulator's default configuration with these vaults and the changeNumber-365 document.
pub fn emulator_config(vaults: Vec<Value>) -> EmulatorConfig {
    EmulatorConfig {
        seed: Seed {
            vaults,
            ..Seed::default()
        },
        service_tags: Some(std::fs::read(fixture(365)).expect("fixture present")),
        identity_header: "test-identity-header".to_owned(),
        ..EmulatorConfig::default()
    }
}

/// Starts an emulator that serves https as well as plain http (on the same port), with the
/// certificate every emulator of this test process shares, so that the binary reaches ARM, Resource
/// Graph and the download page over TLS as in production ([`emulator_env`]).
/// `TAGFENCE_TEST_PLAIN_HTTP=1` keeps it plain http only (to compare, or to read a capture), and
/// so do the tests named in [`PLAIN_HTTP_TESTS`].
pub async fn start(mut config: EmulatorConfig) -> Emulator {
    let plain = std::env::var_os("TAGFENCE_TEST_PLAIN_HTTP").is_some()
        || std::thread::current()
            .name()
            .is_some_and(|test| PLAIN_HTTP_TESTS.iter().any(|name| test.ends_with(name)));
    if config.tls.is_none() && !plain {
        config.tls = Some(test_tls().clone());
    }
    Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("emulator starts")
}

/// Tests kept on plain http (matched by the test thread's name, which libtest sets to the test's):
/// they count every request after a token is refused, and over https tagfence's bearer path
/// (azure_core's own policy, beside its renewal on 401) was seen, rarely, to send the refused
/// token once more (an extra 401 on the PATCH or the verifying GET). To move back to https once
/// that path renews the token for every request.
const PLAIN_HTTP_TESTS: &[&str] = &[
    "a_token_refused_between_two_invocations_of_serve_is_renewed",
    "a_token_refused_in_the_middle_of_a_run_is_renewed_and_the_write_sent_again",
];

/// The CA and certificate of this test process's emulators, made once.
pub fn test_tls() -> &'static TlsIdentity {
    static TLS: std::sync::OnceLock<TlsIdentity> = std::sync::OnceLock::new();
    TLS.get_or_init(|| TlsIdentity::generate().expect("test certificate"))
}

/// A PEM file holding the CA of [`test_tls`], written once per test process.
pub fn test_ca_file() -> &'static Path {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("emulator-ca-{}.pem", std::process::id()));
        let pem = test_tls()
            .ca_pem()
            .expect("a generated certificate has a CA");
        std::fs::write(&path, pem).expect("CA file written");
        path
    })
}

/// A credential that hands out a token the emulator issued, without asking an endpoint.
#[derive(Debug)]
pub struct EmulatorToken(pub String);

#[async_trait::async_trait]
impl TokenCredential for EmulatorToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let expires =
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1);
        Ok(AccessToken::new(self.0.clone(), expires))
    }
}

pub fn credential(emulator: &Emulator) -> Arc<dyn TokenCredential> {
    Arc::new(EmulatorToken(
        emulator.issue_token("https://management.azure.com/"),
    ))
}

/// Emulator tokens by audience, as a managed identity would hand them out: Storage tokens for
/// `https://storage.azure.com` scopes, ARM tokens otherwise.
#[derive(Debug)]
pub struct EmulatorTokens {
    arm: String,
    storage: String,
}

#[async_trait::async_trait]
impl TokenCredential for EmulatorTokens {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let token = if scopes
            .iter()
            .any(|s| s.starts_with("https://storage.azure.com"))
        {
            &self.storage
        } else {
            &self.arm
        };
        let expires =
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1);
        Ok(AccessToken::new(token.clone(), expires))
    }
}

pub fn scoped_credential(emulator: &Emulator) -> Arc<dyn TokenCredential> {
    Arc::new(EmulatorTokens {
        arm: emulator.issue_token("https://management.azure.com/"),
        storage: emulator.issue_token("https://storage.azure.com/"),
    })
}

/// The environment a Functions app (or pipeline) would give tagfence, pointed at the emulator:
/// over https when it serves https ([`start`]), trusting its CA through `SSL_CERT_FILE` (which
/// tagfence's TLS reads for the platform's roots on Linux); the identity endpoint is plain http
/// on loopback, as App Service's is.
pub fn emulator_env(emulator: &Emulator) -> Vec<(String, String)> {
    let base = emulator.https_url().unwrap_or_else(|| emulator.base_url());
    let mut env: Vec<(String, String)> = vec![
        ("IDENTITY_ENDPOINT".into(), emulator.identity_endpoint()),
        ("IDENTITY_HEADER".into(), emulator.identity_header()),
        ("TAGFENCE_ARM_ENDPOINT".into(), base.clone()),
        (
            "TAGFENCE_DOWNLOAD_PAGE_URL".into(),
            format!("{base}/download/details.aspx?id=56519"),
        ),
        // Fast retries keep the fault tests short; Retry-After still wins when longer.
        ("TAGFENCE_HTTP_RETRY_DELAY_MS".into(), "50".into()),
        ("TAGFENCE_HTTP_MAX_RETRIES".into(), "3".into()),
        ("TAGFENCE_HTTP_TIMEOUT_SECS".into(), "5".into()),
        ("TAGFENCE_LOG".into(), "tagfence=debug".into()),
    ];
    if emulator.https_url().is_some() {
        env.push(("SSL_CERT_FILE".into(), test_ca_file().display().to_string()));
    }
    env
}

/// Runs the real `tagfence` binary with `args`, the emulator environment and `extra_env`.
pub async fn tagfence(emulator: &Emulator, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tagfence"));
    command.args(args).current_dir(repo("")).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    for (key, value) in emulator_env(emulator) {
        command.env(key, value);
    }
    for (key, value) in extra_env {
        command.env(key, value);
    }
    command.output().await.expect("tagfence runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The IP rules of a vault in the emulator, sorted.
pub fn rules_of(emulator: &Emulator, name: &str) -> Vec<String> {
    let mut rules = emulator.ip_rules(name);
    rules.sort();
    rules
}

/// `expected` as the emulator stores rules, sorted.
pub fn sorted(expected: &[&str]) -> Vec<String> {
    let mut rules: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    rules.sort();
    rules
}
