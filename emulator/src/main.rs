//! The `tagfence-emulator` binary: runs the emulator for the README demo and manual testing.
//!
//! It parses flags, loads the seed and Service Tags document (bundled defaults, so the binary
//! stands alone), starts the emulator, optionally writes an env file pointing tagfence at it,
//! prints exactly one line to stdout (`tagfence-emulator listening on <base>`) and serves until
//! SIGTERM or Ctrl-C. Logs go to stderr. Exit codes: 0 after a signal, 2 on a startup error.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tagfence_emulator::{
    Config, Emulator, GraphIndex, GraphQuota, OddRulePolicy, Seed, Slash31Policy, Throttle,
    TlsIdentity,
};
use tracing_subscriber::EnvFilter;

/// The sample seed used when `--seed` is not given: the vaults, a storage account and two
/// container registries.
const BUNDLED_SEED: &[u8] = include_bytes!("../samples/vaults.json");
/// Service Tags changeNumber 365 (gzip), used when `--service-tags` is not given.
const BUNDLED_SERVICE_TAGS: &[u8] =
    include_bytes!("../../tests/fixtures/ServiceTags_Public.changeNumber-365.json.gz");

/// A local emulator of the Azure endpoints tagfence uses: Key Vault, storage accounts and
/// container registries (ARM), managed identity, Service Tags (Discovery API and download page),
/// Resource Graph.
///
/// Prints `tagfence-emulator listening on <base>` to stdout once ready; logs go to stderr
/// (filter with RUST_LOG). Runs until SIGTERM or Ctrl-C, then exits 0; exits 2 if it cannot start.
#[derive(Debug, Parser)]
#[command(name = "tagfence-emulator", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Seed file: {"vaults": [<vault, storage account or registry as ARM GET returns it>],
    /// "forbidden": [<resource id>]}. Defaults to a bundled sample (vaults kv-prod, kv-build,
    /// kv-legacy in rg-secrets; storage account sttagfenceprod in rg-data; registries
    /// crtagfenceprod and crtagfencedev in rg-containers).
    #[arg(long, value_name = "FILE")]
    seed: Option<PathBuf>,

    /// Service Tags document in download-file format, JSON or gzip. Defaults to a bundled copy of
    /// changeNumber 365.
    #[arg(long, value_name = "FILE")]
    service_tags: Option<PathBuf>,

    /// Value the identity endpoint requires in X-IDENTITY-HEADER. Defaults to a random GUID.
    #[arg(long, value_name = "VALUE")]
    identity_header: Option<String>,

    /// Lifetime of issued tokens in seconds.
    #[arg(long, value_name = "N", default_value_t = 3600)]
    token_lifetime_secs: u64,

    /// Disable ARM write and delete throttling (default: per subscription, writes and deletes
    /// each 200 burst, 10/s refill).
    #[arg(long)]
    no_throttle: bool,

    /// Refuse ARM reads (GETs of vaults, lists, Service Tags) that find the subscription's read
    /// bucket empty: 250 burst, 25/s refill, with 429 and Retry-After. Without it reads are only
    /// counted for x-ms-ratelimit-remaining-subscription-reads.
    #[arg(long)]
    throttle_reads: bool,

    /// Resource Graph's quota per principal, QUERIES/SECONDS (default 15/5, the documented
    /// example).
    #[arg(long, value_name = "QUERIES/SECONDS", value_parser = parse_graph_quota, conflicts_with = "no_graph_quota")]
    graph_quota: Option<GraphQuota>,

    /// Never refuse a Resource Graph query for quota.
    #[arg(long)]
    no_graph_quota: bool,

    /// Resource Graph answers from the vaults as they were this many milliseconds ago (a vault
    /// created more recently is absent, one deleted more recently still there). Default: live.
    #[arg(long, value_name = "MS")]
    graph_index_lag: Option<u64>,

    /// Wait this many milliseconds before answering each ARM and Resource Graph request (not
    /// the identity endpoint nor the download page and file).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,

    /// How PATCH/PUT treat a /31 ipRule (Key Vault's behaviour is unverified).
    #[arg(long, value_enum, value_name = "POLICY", default_value = "accept")]
    slash31: Slash31Arg,

    /// How PATCH/PUT treat an ipRule value validation refuses ('', "'10.91.4.0/24'", a private
    /// range, …): stored only when the vault holds exactly that value already, always refused, or
    /// always stored (Key Vault's behaviour is unverified).
    #[arg(
        long,
        value_enum,
        value_name = "POLICY",
        default_value = "keep-existing"
    )]
    odd_rules: OddRulesArg,

    /// Tags per Discovery API page; without it the API answers in one page.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    service_tags_page_size: Option<u64>,

    /// Write TAGFENCE_ARM_ENDPOINT, IDENTITY_ENDPOINT, IDENTITY_HEADER and
    /// TAGFENCE_DOWNLOAD_PAGE_URL (with --tls also TAGFENCE_EMULATOR_CA_FILE) to this file
    /// (atomically, once listening).
    #[arg(long, value_name = "PATH")]
    env_file: Option<PathBuf>,

    /// Serve https as well, on the same port, with a CA and a certificate for localhost,
    /// 127.0.0.1 and ::1 made at start (needs --ca-file), or with --tls-cert and --tls-key.
    /// ARM, Resource Graph and the download page are then announced as https; the identity
    /// endpoint stays plain http, as App Service's is.
    #[arg(long)]
    tls: bool,

    /// Write the PEM of the CA made for --tls here (for REQUESTS_CA_BUNDLE, SSL_CERT_FILE, …).
    #[arg(long, value_name = "PATH", requires = "tls")]
    ca_file: Option<PathBuf>,

    /// Serve this certificate chain (PEM, leaf first) instead of making one; implies --tls.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Slash31Arg {
    Accept,
    Reject,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OddRulesArg {
    KeepExisting,
    RejectAll,
    AcceptAll,
}

/// The bundled sample: the vaults, the storage account and the registries.
fn bundled_seed() -> Result<Seed, tagfence_emulator::SeedError> {
    Seed::from_json(BUNDLED_SEED)
}

impl Args {
    /// Builds the emulator configuration, reading the seed and document files.
    fn config(&self) -> anyhow::Result<Config> {
        let seed = match &self.seed {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("reading seed file '{}'", path.display()))?;
                Seed::from_json(&bytes)
                    .with_context(|| format!("loading seed file '{}'", path.display()))?
            }
            None => bundled_seed().context("loading the bundled seed")?,
        };
        let service_tags = match &self.service_tags {
            Some(path) => std::fs::read(path)
                .with_context(|| format!("reading service tags file '{}'", path.display()))?,
            None => BUNDLED_SERVICE_TAGS.to_vec(),
        };
        let defaults = Config::default();
        Ok(Config {
            tls: self.tls_identity()?,
            seed,
            service_tags: Some(service_tags),
            identity_header: self
                .identity_header
                .clone()
                .unwrap_or(defaults.identity_header),
            token_lifetime: Duration::from_secs(self.token_lifetime_secs),
            throttle: if self.no_throttle {
                None
            } else {
                defaults.throttle
            },
            read_throttle: self.throttle_reads.then_some(Throttle::READS),
            graph_quota: match (self.no_graph_quota, self.graph_quota) {
                (true, _) => None,
                (false, Some(quota)) => Some(quota),
                (false, None) => defaults.graph_quota,
            },
            graph_index: self.graph_index_lag.map_or(GraphIndex::Live, |ms| {
                GraphIndex::Lag(Duration::from_millis(ms))
            }),
            latency: Duration::from_millis(self.latency_ms),
            slash31: match self.slash31 {
                Slash31Arg::Accept => Slash31Policy::Accept,
                Slash31Arg::Reject => Slash31Policy::Reject,
            },
            odd_rules: match self.odd_rules {
                OddRulesArg::KeepExisting => OddRulePolicy::KeepExisting,
                OddRulesArg::RejectAll => OddRulePolicy::RejectAll,
                OddRulesArg::AcceptAll => OddRulePolicy::AcceptAll,
            },
            service_tags_page_size: self
                .service_tags_page_size
                .map(|size| usize::try_from(size).unwrap_or(usize::MAX)),
            ..defaults
        })
    }
}

impl Args {
    /// The certificate to serve https with: given files, one made now, or none.
    fn tls_identity(&self) -> anyhow::Result<Option<TlsIdentity>> {
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let read = |path: &PathBuf| {
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading '{}'", path.display()))
                };
                TlsIdentity::from_pem(&read(cert)?, &read(key)?)?
            }
            _ if self.tls => {
                if self.ca_file.is_none() {
                    anyhow::bail!(
                        "--tls makes a CA that clients must trust: give --ca-file PATH to have it written (or --tls-cert and --tls-key)"
                    );
                }
                TlsIdentity::generate()?
            }
            _ => return Ok(None),
        };
        Ok(Some(identity))
    }
}

/// `QUERIES/SECONDS`, e.g. `15/5`: at least one query in a window of at least one second.
fn parse_graph_quota(text: &str) -> Result<GraphQuota, String> {
    let (queries, seconds) = text
        .split_once('/')
        .ok_or_else(|| format!("'{text}' is not QUERIES/SECONDS (e.g. 15/5)"))?;
    let queries: u32 = queries
        .trim()
        .parse()
        .map_err(|error| format!("queries '{queries}': {error}"))?;
    let seconds: u64 = seconds
        .trim()
        .parse()
        .map_err(|error| format!("seconds '{seconds}': {error}"))?;
    if queries == 0 || seconds == 0 {
        return Err(format!("'{text}': both numbers must be at least 1"));
    }
    Ok(GraphQuota {
        queries,
        window: Duration::from_secs(seconds),
    })
}

/// What the env file and the ready line announce: https for ARM when TLS is on.
fn announced_base(emulator: &Emulator) -> String {
    emulator.https_url().unwrap_or_else(|| emulator.base_url())
}

/// The env file's contents: one `NAME=value` per line.
fn env_file_contents(emulator: &Emulator, ca_file: Option<&Path>) -> String {
    let base = announced_base(emulator);
    let mut contents = format!(
        "TAGFENCE_ARM_ENDPOINT={base}\nIDENTITY_ENDPOINT={}\nIDENTITY_HEADER={}\nTAGFENCE_DOWNLOAD_PAGE_URL={base}{}\n",
        emulator.identity_endpoint(),
        emulator.identity_header(),
        tagfence_emulator::DOWNLOAD_PAGE_PATH,
    );
    if let Some(path) = ca_file {
        contents.push_str(&format!("TAGFENCE_EMULATOR_CA_FILE={}\n", path.display()));
    }
    contents
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, then a rename.
fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("env file path '{}' has no file name", path.display()))?;
    let mut temporary_name = file_name.to_os_string();
    temporary_name.push(format!(".tmp-{}", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    std::fs::write(&temporary, contents)
        .with_context(|| format!("writing '{}'", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| {
        // Best effort: do not leave the temporary file behind.
        std::fs::remove_file(&temporary).ok();
        format!("renaming '{}' to '{}'", temporary.display(), path.display())
    })
}

/// Resolves when the process receives SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("waiting for ctrl-c")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config()?;
    tracing::debug!(?config, "effective configuration");
    let emulator = Emulator::start(config, args.listen)
        .await
        .with_context(|| format!("starting the emulator on {}", args.listen))?;
    let ca_file = match (&args.ca_file, emulator.ca_pem()) {
        (Some(path), Some(pem)) => {
            write_atomically(path, &pem)?;
            Some(std::path::absolute(path).unwrap_or_else(|_| path.clone()))
        }
        _ => None,
    };
    if let Some(path) = &args.env_file {
        write_atomically(path, &env_file_contents(&emulator, ca_file.as_deref()))?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "tagfence-emulator listening on {}",
        announced_base(&emulator)
    )
    .and_then(|()| stdout.flush())
    .context("writing the ready line to stdout")?;
    drop(stdout);
    tracing::info!(base_url = %emulator.base_url(), https_url = emulator.https_url(), ca_file = ca_file.as_ref().map(|path| path.display().to_string()), "emulator ready");
    let waited = shutdown_signal().await;
    tracing::info!("shutting down");
    emulator.shutdown().await;
    waited
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    // The emulator serves from its own runtime thread; this runtime only waits for signals.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: building the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("tagfence-emulator").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_listen_on_a_free_loopback_port_with_bundled_data() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.listen, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
        let config = args.config().unwrap();
        // Three vaults, a storage account and two registries.
        assert_eq!(config.seed.vaults.len(), 6);
        assert!(config
            .service_tags
            .is_some_and(|bytes| bytes.starts_with(&[0x1f, 0x8b])));
        assert_eq!(config.token_lifetime, Duration::from_secs(3600));
        assert!(config.throttle.is_some());
        assert_eq!(config.slash31, Slash31Policy::Accept);
        assert_eq!(config.odd_rules, OddRulePolicy::KeepExisting);
        assert_eq!(config.service_tags_page_size, None);
        assert_eq!(config.identity_header.len(), 36);
        assert_eq!(config.read_throttle, None);
        assert_eq!(config.graph_quota, Some(GraphQuota::default()));
        assert_eq!(config.graph_index, GraphIndex::Live);
        assert_eq!(config.latency, Duration::ZERO);
    }

    #[test]
    fn throttling_index_and_latency_flags_parse() {
        let config = parse(&[
            "--throttle-reads",
            "--graph-quota",
            "3/2",
            "--graph-index-lag",
            "1500",
            "--latency-ms",
            "40",
        ])
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(config.read_throttle, Some(Throttle::READS));
        assert_eq!(
            config.graph_quota,
            Some(GraphQuota {
                queries: 3,
                window: Duration::from_secs(2)
            })
        );
        assert_eq!(
            config.graph_index,
            GraphIndex::Lag(Duration::from_millis(1500))
        );
        assert_eq!(config.latency, Duration::from_millis(40));
        let unlimited = parse(&["--no-graph-quota"]).unwrap().config().unwrap();
        assert_eq!(unlimited.graph_quota, None);
        assert!(parse(&["--no-graph-quota", "--graph-quota", "1/1"]).is_err());
        for bad in ["15", "0/5", "15/0", "x/5", "15/5s"] {
            assert!(parse(&["--graph-quota", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_flag_parses() {
        let args = parse(&[
            "--listen",
            "0.0.0.0:8080",
            "--identity-header",
            "h",
            "--token-lifetime-secs",
            "5",
            "--no-throttle",
            "--slash31",
            "reject",
            "--odd-rules",
            "accept-all",
            "--service-tags-page-size",
            "100",
            "--env-file",
            "/tmp/x.env",
        ])
        .unwrap();
        let config = args.config().unwrap();
        assert_eq!(args.listen.port(), 8080);
        assert_eq!(config.identity_header, "h");
        assert_eq!(config.token_lifetime, Duration::from_secs(5));
        assert!(config.throttle.is_none());
        assert_eq!(config.slash31, Slash31Policy::Reject);
        assert_eq!(config.odd_rules, OddRulePolicy::AcceptAll);
        assert_eq!(config.service_tags_page_size, Some(100));
        assert_eq!(args.env_file.as_deref(), Some(Path::new("/tmp/x.env")));
    }

    #[test]
    fn tls_flags_make_or_read_a_certificate() {
        assert!(parse(&[]).unwrap().config().unwrap().tls.is_none());
        let made = parse(&["--tls", "--ca-file", "/tmp/ca.pem"])
            .unwrap()
            .config()
            .unwrap();
        assert!(made.tls.unwrap().ca_pem().is_some());
        let error = parse(&["--tls"]).unwrap().config().unwrap_err();
        assert!(format!("{error:#}").contains("--ca-file"), "{error:#}");
        assert!(parse(&["--ca-file", "/tmp/ca.pem"]).is_err());
        assert!(parse(&["--tls-cert", "/tmp/cert.pem"]).is_err());
        let error = parse(&[
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ])
        .unwrap()
        .config()
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("/nonexistent/c.pem"),
            "{error:#}"
        );
    }

    #[test]
    fn bad_flag_values_are_refused() {
        assert!(parse(&["--slash31", "maybe"]).is_err());
        assert!(parse(&["--odd-rules", "sometimes"]).is_err());
        assert!(parse(&["--service-tags-page-size", "0"]).is_err());
        assert!(parse(&["--listen", "nowhere"]).is_err());
    }

    #[test]
    fn a_missing_seed_file_is_reported_with_its_path() {
        let error = parse(&["--seed", "/nonexistent/seed.json"])
            .unwrap()
            .config()
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("reading seed file '/nonexistent/seed.json'"),
            "{error:#}"
        );
    }

    #[test]
    fn env_files_are_written_atomically() {
        let directory =
            std::env::temp_dir().join(format!("tagfence-emulator-test-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("emulator.env");
        write_atomically(&path, "A=1\n").unwrap();
        write_atomically(&path, "A=2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "A=2\n");
        let leftovers = std::fs::read_dir(&directory).unwrap().count();
        assert_eq!(leftovers, 1);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
