//! Run configuration: command-line flags, their environment forms (the Functions app settings)
//! and an optional TOML file, validated once into a [`Config`]. Nothing after this reads the
//! environment for settings.
//!
//! Layering, lowest first: built-in defaults; the file's `[defaults]`; flags and environment
//! variables; a `[[vault]]` entry's own settings for that vault.
//!
//! ```toml
//! # tagfence.toml
//! vaults = ["/subscriptions/…/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-a"]
//!
//! [defaults]
//! tags = ["AzureDevOps"]
//! static_rules = ["52.1.2.3"]
//! max_rules = 1000
//! fit = "exact"            # or "summarize"
//! envelope = []
//! max_remove_fraction = 0.2
//! adopt_existing = false
//! init_firewall = false
//! max_tag_shrink = 0.5
//!
//! [[vault]]
//! id = "/subscriptions/…/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-b"
//! tags = ["AzureDevOps", "AzureCloud.westeurope", "AzureCloud.northeurope"]
//! fit = "summarize"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;
use url::Url;

use crate::azure::auth::CredentialKind;
use crate::azure::budget::BudgetLimits;
use crate::azure::http::HttpOptions;
use crate::azure::{self, CloudEndpoints, VaultId};
use crate::core::desired::{self, FitMode, Limits, Selection};
use crate::core::fit::Slash31;
use crate::core::profiles;
use crate::core::service_tags::Cloud;
use crate::source::{self, SourceSpec};
use crate::state::blob::DEFAULT_CONTAINER;

/// The cloud, as the flag spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
pub enum CloudArg {
    #[default]
    #[value(name = "AzurePublic", alias = "public")]
    AzurePublic,
    #[value(name = "AzureUSGovernment", alias = "usgovernment")]
    AzureUsGovernment,
    #[value(name = "AzureChina", alias = "china")]
    AzureChina,
}

impl From<CloudArg> for Cloud {
    fn from(arg: CloudArg) -> Self {
        match arg {
            CloudArg::AzurePublic => Cloud::Public,
            CloudArg::AzureUsGovernment => Cloud::AzureGovernment,
            CloudArg::AzureChina => Cloud::AzureChina,
        }
    }
}

/// Which tags and literal rules to allow.
#[derive(Debug, Clone, Default, Args)]
pub struct SelectionArgs {
    /// A service tag to allow, e.g. AzureDevOps or AzureCloud.westeurope (repeatable;
    /// case-insensitive exact match), or a profile: `hosted-agents:<geography>` (every region
    /// of the geography, its capacity fallback, and AzureDevOps) or `azure-devops`.
    #[arg(
        long = "tag",
        value_name = "NAME",
        env = "TAGFENCE_TAGS",
        value_delimiter = ','
    )]
    pub tags: Vec<String>,

    /// A literal rule to allow, e.g. a self-hosted agent's public IP (repeatable). Must be a
    /// public IPv4 address or prefix without host bits.
    #[arg(
        long = "static-rule",
        value_name = "CIDR|IP",
        env = "TAGFENCE_STATIC_RULES",
        value_delimiter = ','
    )]
    pub static_rules: Vec<String>,
}

/// How to fit the rules into the vault. Each flag is optional so that a configuration file
/// can give values underneath it; the defaults are those of [`Limits::default`].
#[derive(Debug, Clone, Default, Args)]
pub struct LimitArgs {
    /// The most IPv4 rules the vault may hold in all, unmanaged rules included [default: 1000].
    #[arg(long, value_name = "N", env = "TAGFENCE_MAX_RULES")]
    pub max_rules: Option<usize>,

    /// `exact` refuses a selection that needs more rules than there is room for; `summarize`
    /// finds the fewest extra addresses that fit [default: exact].
    #[arg(long, value_enum, env = "TAGFENCE_FIT")]
    pub fit: Option<FitArg>,

    /// With --fit summarize: extra addresses must lie inside this tag's IPv4 space, e.g.
    /// AzureCloud (repeatable).
    #[arg(
        long,
        value_name = "TAG",
        env = "TAGFENCE_ENVELOPE",
        value_delimiter = ','
    )]
    pub envelope: Vec<String>,

    /// With --fit summarize: refuse a fit that admits more extra addresses than this.
    #[arg(long, value_name = "N", env = "TAGFENCE_MAX_EXTRA_ADDRESSES")]
    pub max_extra_addresses: Option<u64>,

    /// Refuse a plan that removes more than this fraction of the rules tagfence manages
    /// [default: 0.2].
    #[arg(long, value_name = "FRACTION", env = "TAGFENCE_MAX_REMOVE_FRACTION", value_parser = parse_fraction)]
    pub max_remove_fraction: Option<f64>,

    /// How to write /31 prefixes: as two /32 rules (`split`, safe: whether Key Vault accepts
    /// /31 is unverified) or as one rule (`keep`) [default: split].
    #[arg(long, value_enum, env = "TAGFENCE_SLASH31")]
    pub slash31: Option<Slash31Arg>,
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("'{text}' is not between 0 and 1"));
    }
    Ok(value)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FitArg {
    Exact,
    Summarize,
}

impl From<FitArg> for FitMode {
    fn from(arg: FitArg) -> Self {
        match arg {
            FitArg::Exact => FitMode::Exact,
            FitArg::Summarize => FitMode::Summarize,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slash31Arg {
    Split,
    Keep,
}

impl From<Slash31Arg> for Slash31 {
    fn from(arg: Slash31Arg) -> Self {
        match arg {
            Slash31Arg::Split => Slash31::Split,
            Slash31Arg::Keep => Slash31::Keep,
        }
    }
}

impl LimitArgs {
    /// The limits these flags give over `base`.
    pub fn over(&self, base: &Limits) -> Limits {
        let envelope: Vec<String> = self
            .envelope
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        Limits {
            max_rules: self.max_rules.unwrap_or(base.max_rules),
            fit: self.fit.map_or(base.fit, FitMode::from),
            envelope: if envelope.is_empty() {
                base.envelope.clone()
            } else {
                envelope
            },
            max_extra_addresses: self.max_extra_addresses.or(base.max_extra_addresses),
            max_remove_fraction: self.max_remove_fraction.unwrap_or(base.max_remove_fraction),
            slash31: self.slash31.map_or(base.slash31, Slash31::from),
        }
    }

    /// The limits these flags give over the defaults.
    pub fn to_limits(&self) -> Limits {
        self.over(&Limits::default())
    }
}

/// The settings of a run that reconciles vaults (`apply`, and `serve` for the Functions host).
/// Every flag has an environment form, which is how the Functions app settings reach it.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// A vault to manage, by ARM resource id (repeatable).
    #[arg(
        long = "vault",
        value_name = "RESOURCE_ID",
        env = "TAGFENCE_VAULTS",
        value_delimiter = ','
    )]
    pub vaults: Vec<String>,

    /// A TOML file with defaults and per-vault settings.
    #[arg(long, value_name = "FILE", env = "TAGFENCE_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Also remove rules that neither the selection nor tagfence put there.
    #[arg(long, env = "TAGFENCE_PRUNE")]
    pub prune: bool,

    /// Claim the rules already on a vault that equal desired rules (a firewall a person kept
    /// by hand before tagfence): from then on tagfence removes them when Microsoft retires the
    /// range. Without it such rules stay the person's and are never removed.
    #[arg(long, env = "TAGFENCE_ADOPT_EXISTING")]
    pub adopt_existing: bool,

    /// Initialise the firewall of a vault that has none configured (no networkAcls), keeping
    /// its current access: defaultAction Allow, AzureServices bypass, the desired IP rules.
    /// Never over a vault tagfence has seen Deny.
    #[arg(long, env = "TAGFENCE_INIT_FIREWALL")]
    pub init_firewall: bool,

    /// Trust a vault read that lacks most of the rules tagfence added and confirmed (refused
    /// as suspicious otherwise); for when a person really removed them.
    #[arg(long, env = "TAGFENCE_ACCEPT_MISSING_RULES")]
    pub accept_missing_rules: bool,

    /// A selected tag allowed to empty or to shrink more than --max-tag-shrink in this run
    /// (repeatable; `*` for every tag).
    #[arg(
        long = "allow-tag-shrink",
        value_name = "TAG",
        env = "TAGFENCE_ALLOW_TAG_SHRINK",
        value_delimiter = ','
    )]
    pub allow_tag_shrink: Vec<String>,

    /// Refuse the vaults of a selected tag that lost more than this fraction of its IPv4
    /// prefixes since the last applied document [default: 0.5].
    #[arg(long, value_name = "FRACTION", env = "TAGFENCE_MAX_TAG_SHRINK")]
    pub max_tag_shrink: Option<f64>,

    /// Where the Service Tags come from: `api` (the Discovery API; needs --subscription-id and
    /// --location), `download` (Microsoft's weekly file), a file path, or an https URL.
    #[arg(
        long,
        value_name = "api|download|FILE|URL",
        env = "TAGFENCE_SOURCE",
        default_value = "download"
    )]
    pub source: String,

    /// Subscription for the Discovery API.
    #[arg(long, value_name = "ID", env = "TAGFENCE_SUBSCRIPTION_ID")]
    pub subscription_id: Option<String>,

    /// Location for the Discovery API (any region; the answer covers the whole cloud).
    #[arg(long, value_name = "REGION", env = "TAGFENCE_LOCATION")]
    pub location: Option<String>,

    /// The Azure cloud.
    #[arg(long, value_enum, env = "TAGFENCE_CLOUD", default_value_t = CloudArg::AzurePublic)]
    pub cloud: CloudArg,

    /// Override the ARM endpoint (https; plain http only for a loopback emulator).
    #[arg(long, value_name = "URL", env = "TAGFENCE_ARM_ENDPOINT")]
    pub arm_endpoint: Option<String>,

    /// Override the download page that links the weekly Service Tags file.
    #[arg(long, value_name = "URL", env = "TAGFENCE_DOWNLOAD_PAGE_URL")]
    pub download_page_url: Option<String>,

    /// Which credential to use.
    #[arg(long, value_enum, env = "TAGFENCE_CREDENTIAL", default_value_t = CredentialKind::Auto)]
    pub credential: CredentialKind,

    /// Refuse a Service Tags document with fewer tags [default: 1000 Public, 100 Government,
    /// 20 China].
    #[arg(long, value_name = "N", env = "TAGFENCE_MIN_SERVICE_TAGS")]
    pub min_service_tags: Option<usize>,

    /// Vaults reconciled at the same time.
    #[arg(
        long,
        value_name = "N",
        env = "TAGFENCE_CONCURRENCY",
        default_value_t = 8
    )]
    pub concurrency: usize,

    /// Timeout of one HTTP attempt, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "TAGFENCE_HTTP_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub http_timeout_secs: u64,

    /// Retries of a throttled, failed or timed-out HTTP call.
    #[arg(
        long,
        value_name = "N",
        env = "TAGFENCE_HTTP_MAX_RETRIES",
        default_value_t = 4
    )]
    pub http_max_retries: u32,

    /// First retry delay in milliseconds; it doubles each time, and `Retry-After` wins when
    /// longer.
    #[arg(
        long,
        value_name = "MS",
        env = "TAGFENCE_HTTP_RETRY_DELAY_MS",
        default_value_t = 800
    )]
    pub http_retry_delay_ms: u64,

    /// Deadline of one HTTP call, retries included, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "TAGFENCE_HTTP_CALL_TIMEOUT_SECS",
        default_value_t = 120
    )]
    pub http_call_timeout_secs: u64,

    /// Keep state (the rules tagfence added, the documents used, run records) in this
    /// directory. For CLI use; the Functions app keeps it in Blob storage.
    #[arg(long, value_name = "DIR", env = "TAGFENCE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Keep state in Blob storage at this https endpoint
    /// (`https://<account>.blob.core.windows.net`, optionally followed by `/<container>`; a
    /// path-style emulator endpoint must end with the container),
    /// reached with the same identity as ARM [default: the Function App's own storage,
    /// `AzureWebJobsStorage__blobServiceUri`].
    #[arg(long, value_name = "URL", env = "TAGFENCE_STATE_URL")]
    pub state_url: Option<String>,

    /// The state container when the URL names none.
    #[arg(
        long,
        value_name = "NAME",
        env = "TAGFENCE_STATE_CONTAINER",
        default_value = DEFAULT_CONTAINER
    )]
    pub state_container: String,

    /// A PEM certificate to trust for the state endpoint besides the system roots (a storage
    /// emulator's test CA, or a TLS-inspecting proxy).
    #[arg(long, value_name = "FILE", env = "TAGFENCE_STATE_CA_FILE")]
    pub state_ca_file: Option<PathBuf>,

    /// The Functions host's identity-based storage settings; the state's default home.
    #[arg(long, hide = true, env = "AzureWebJobsStorage__blobServiceUri")]
    pub webjobs_blob_service_uri: Option<String>,

    #[arg(long, hide = true, env = "AzureWebJobsStorage__accountName")]
    pub webjobs_account_name: Option<String>,

    /// For this many days after a selected tag changes, also keep the ranges of its previous
    /// version (Microsoft publishes new ranges ahead of use; old ones may still be in use).
    /// Needs state.
    #[arg(
        long,
        value_name = "DAYS",
        env = "TAGFENCE_GRACE_DAYS",
        default_value_t = 0
    )]
    pub grace_days: u32,

    /// Use a Service Tags document older than the one last applied (normally refused).
    #[arg(long, env = "TAGFENCE_ALLOW_OLDER")]
    pub allow_older: bool,

    /// Also manage every vault carrying the discovery tag in this subscription (repeatable),
    /// found with Azure Resource Graph at each run.
    #[arg(
        long = "discover-subscription",
        value_name = "ID",
        env = "TAGFENCE_DISCOVER_SUBSCRIPTIONS",
        value_delimiter = ','
    )]
    pub discover_subscriptions: Vec<String>,

    /// Also manage every vault carrying the discovery tag under this management group
    /// (repeatable).
    #[arg(
        long = "discover-management-group",
        value_name = "NAME",
        env = "TAGFENCE_DISCOVER_MANAGEMENT_GROUPS",
        value_delimiter = ','
    )]
    pub discover_management_groups: Vec<String>,

    /// The tag that marks a vault for discovery; its value names the service tags, profiles
    /// and static rules to allow (`default` for the defaults).
    #[arg(
        long,
        value_name = "NAME",
        env = "TAGFENCE_DISCOVER_TAG",
        default_value = DEFAULT_DISCOVERY_TAG
    )]
    pub discover_tag: String,

    /// Post a message to this webhook (Slack- and Teams-compatible `{"text"}`) when a run
    /// changes a vault or fails. https only; the URL is a secret and is never logged.
    #[arg(
        long,
        value_name = "URL",
        env = "TAGFENCE_NOTIFY_URL",
        hide_env_values = true
    )]
    pub notify_url: Option<String>,
}

/// The tag that marks a vault for discovery, by default.
pub const DEFAULT_DISCOVERY_TAG: &str = "tagfence";

/// Where and how vaults are discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub subscriptions: Vec<String>,
    pub management_groups: Vec<String>,
    /// The tag that marks a vault.
    pub tag: String,
}

/// How a target came to be managed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSource {
    /// Listed in the configuration.
    Listed,
    /// Found by its discovery tag, with this value.
    Discovered { tag: String, value: String },
}

/// Where tagfence keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSpec {
    /// A directory (CLI).
    Dir(PathBuf),
    /// A blob container, reached with the run's credential.
    Blob {
        container_url: Url,
        /// Extra trusted CA (PEM file).
        ca_file: Option<PathBuf>,
    },
}

impl std::fmt::Display for StateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateSpec::Dir(dir) => write!(f, "the directory {}", dir.display()),
            StateSpec::Blob { container_url, .. } => {
                write!(f, "the blob container {container_url}")
            }
        }
    }
}

/// What a vault's writes may do beyond the safe defaults, and how far its tags may shrink.
#[derive(Debug, Clone, PartialEq)]
pub struct Safety {
    /// Claim the rules on the vault that equal desired rules (`--adopt-existing`).
    pub adopt_existing: bool,
    /// Initialise a firewall that was never configured (`--init-firewall`).
    pub init_firewall: bool,
    /// Trust a read that lacks most of tagfence's confirmed rules (`--accept-missing-rules`).
    pub accept_missing_rules: bool,
    /// The largest fraction of a selected tag's prefixes that may go between two applied
    /// documents (`--max-tag-shrink`).
    pub max_tag_shrink: f64,
    /// Tags allowed to shrink or empty anyway (`--allow-tag-shrink`).
    pub allow_tag_shrink: Vec<String>,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            adopt_existing: false,
            init_firewall: false,
            accept_missing_rules: false,
            max_tag_shrink: crate::core::plan::DEFAULT_MAX_TAG_SHRINK,
            allow_tag_shrink: Vec::new(),
        }
    }
}

/// One vault to reconcile and how.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultTarget {
    pub id: VaultId,
    pub selection: Selection,
    pub limits: Limits,
    pub prune: bool,
    pub safety: Safety,
    pub source: TargetSource,
}

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub cloud: Cloud,
    pub endpoints: CloudEndpoints,
    pub credential: CredentialKind,
    pub source: SourceSpec,
    pub min_service_tags: usize,
    pub targets: Vec<VaultTarget>,
    pub concurrency: usize,
    pub http: HttpOptions,
    /// Where state lives; `None` runs without memory (nothing is ever removed).
    pub state: Option<StateSpec>,
    /// Days to keep a changed tag's previous ranges (0: none).
    pub grace_days: u32,
    pub allow_older: bool,
    /// Tagged vaults to manage besides the listed ones.
    pub discovery: Option<Discovery>,
    /// The settings a discovered vault gets (built in < file `[defaults]` < flags).
    defaults: Resolved,
    /// Where to post run messages.
    pub notify_url: Option<Url>,
    /// The ARM write budget tagfence paces itself by, per subscription: ARM's (200, +10/s).
    /// Not a setting (ARM's budget is not the caller's to choose); tests lower it.
    pub write_budget: BudgetLimits,
}

/// Why the configuration was refused. Each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the configuration file {path}: {detail}")]
    File { path: String, detail: String },
    #[error("invalid vault '{given}' ({origin}): {reason}")]
    Vault {
        given: String,
        origin: &'static str,
        reason: String,
    },
    #[error("vault {vault} is listed twice")]
    DuplicateVault { vault: String },
    #[error("vault {vault}: no tags or static rules selected (give --tag/TAGFENCE_TAGS, or tags in the configuration file)")]
    NothingSelected { vault: String },
    #[error("vault {vault}: invalid static rule: {reason}")]
    StaticRule { vault: String, reason: String },
    #[error("vault {vault}: {reason}")]
    Profile { vault: String, reason: String },
    #[error("its tag {tag}='{value}': {reason}")]
    Discovered {
        tag: String,
        value: String,
        reason: String,
    },
    #[error("{setting}: {reason}")]
    Setting {
        setting: &'static str,
        reason: String,
    },
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    vaults: Vec<String>,
    #[serde(default)]
    defaults: VaultSettings,
    #[serde(default, rename = "vault")]
    vault_entries: Vec<VaultEntry>,
}

/// Settings that may appear in `[defaults]` and in a `[[vault]]` entry.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultSettings {
    tags: Option<Vec<String>>,
    static_rules: Option<Vec<String>>,
    max_rules: Option<usize>,
    fit: Option<FitArg>,
    envelope: Option<Vec<String>>,
    max_extra_addresses: Option<u64>,
    max_remove_fraction: Option<f64>,
    slash31: Option<Slash31Arg>,
    prune: Option<bool>,
    adopt_existing: Option<bool>,
    init_firewall: Option<bool>,
    max_tag_shrink: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultEntry {
    id: String,
    #[serde(flatten)]
    settings: VaultSettings,
}

impl VaultSettings {
    /// These settings over `base`: each one given replaces the base's.
    fn over(&self, base: &Resolved) -> Resolved {
        let limits = &base.limits;
        Resolved {
            tags: self.tags.clone().unwrap_or_else(|| base.tags.clone()),
            static_rules: self
                .static_rules
                .clone()
                .unwrap_or_else(|| base.static_rules.clone()),
            limits: Limits {
                max_rules: self.max_rules.unwrap_or(limits.max_rules),
                fit: self.fit.map_or(limits.fit, Into::into),
                envelope: self
                    .envelope
                    .clone()
                    .unwrap_or_else(|| limits.envelope.clone()),
                max_extra_addresses: self.max_extra_addresses.or(limits.max_extra_addresses),
                max_remove_fraction: self
                    .max_remove_fraction
                    .unwrap_or(limits.max_remove_fraction),
                slash31: self.slash31.map_or(limits.slash31, Into::into),
            },
            prune: self.prune.unwrap_or(base.prune),
            safety: Safety {
                adopt_existing: self.adopt_existing.unwrap_or(base.safety.adopt_existing),
                init_firewall: self.init_firewall.unwrap_or(base.safety.init_firewall),
                max_tag_shrink: self.max_tag_shrink.unwrap_or(base.safety.max_tag_shrink),
                ..base.safety.clone()
            },
        }
    }
}

/// Settings with every layer applied, before validation.
#[derive(Debug, Clone)]
struct Resolved {
    tags: Vec<String>,
    static_rules: Vec<String>,
    limits: Limits,
    prune: bool,
    safety: Safety,
}

fn load_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    let err = |detail: String| ConfigError::File {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    toml::from_str(&text).map_err(|e| err(e.to_string().trim().replace('\n', " ")))
}

impl Config {
    /// Validates the flags (and the file they name) into a configuration.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn from_args(args: &RunArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => ConfigFile::default(),
        };
        let cloud: Cloud = args.cloud.into();
        let mut endpoints = CloudEndpoints::of(cloud);
        if let Some(url) = args
            .arm_endpoint
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            endpoints.arm = azure::parse_endpoint(url).map_err(|e| ConfigError::Setting {
                setting: "--arm-endpoint (TAGFENCE_ARM_ENDPOINT)",
                reason: e.to_string(),
            })?;
        }
        if let Some(url) = args
            .download_page_url
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            endpoints.download_page =
                azure::parse_endpoint(url).map_err(|e| ConfigError::Setting {
                    setting: "--download-page-url (TAGFENCE_DOWNLOAD_PAGE_URL)",
                    reason: e.to_string(),
                })?;
        }
        let source = source_spec(args, &endpoints)?;

        // Defaults: built in < file [defaults] < flags and environment.
        let builtin = Resolved {
            tags: Vec::new(),
            static_rules: Vec::new(),
            limits: Limits::default(),
            prune: false,
            safety: Safety::default(),
        };
        let mut defaults = file.defaults.over(&builtin);
        if !args.selection.tags.is_empty() {
            defaults.tags = args.selection.tags.clone();
        }
        if !args.selection.static_rules.is_empty() {
            defaults.static_rules = args.selection.static_rules.clone();
        }
        defaults.limits = args.limits.over(&defaults.limits);
        defaults.prune |= args.prune;
        defaults.safety.adopt_existing |= args.adopt_existing;
        defaults.safety.init_firewall |= args.init_firewall;
        defaults.safety.accept_missing_rules |= args.accept_missing_rules;
        if let Some(max) = args.max_tag_shrink {
            defaults.safety.max_tag_shrink = max;
        }
        defaults.safety.allow_tag_shrink = args
            .allow_tag_shrink
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();

        let mut targets: Vec<VaultTarget> = Vec::new();
        let mut add =
            |given: &str, origin: &'static str, settings: &Resolved| -> Result<(), ConfigError> {
                let id: VaultId =
                    given
                        .parse()
                        .map_err(|e: azure::VaultIdError| ConfigError::Vault {
                            given: given.trim().to_owned(),
                            origin,
                            reason: e.reason.to_owned(),
                        })?;
                if targets.iter().any(|t| t.id.same_as(&id)) {
                    return Err(ConfigError::DuplicateVault {
                        vault: id.to_string(),
                    });
                }
                targets.push(target(id, settings)?);
                Ok(())
            };
        for given in args.vaults.iter().filter(|v| !v.trim().is_empty()) {
            add(given, "--vault / TAGFENCE_VAULTS", &defaults)?;
        }
        for given in file.vaults.iter() {
            add(given, "the configuration file's vaults", &defaults)?;
        }
        for entry in &file.vault_entries {
            add(
                &entry.id,
                "a [[vault]] entry",
                &entry.settings.over(&defaults),
            )?;
        }

        let min_service_tags = args
            .min_service_tags
            .unwrap_or_else(|| source::default_min_tags(cloud));
        if args.concurrency == 0 {
            return Err(ConfigError::Setting {
                setting: "--concurrency (TAGFENCE_CONCURRENCY)",
                reason: "must be at least 1".to_owned(),
            });
        }
        let state = state_spec(args, cloud)?;
        if args.grace_days > MAX_GRACE_DAYS {
            return Err(ConfigError::Setting {
                setting: "--grace-days (TAGFENCE_GRACE_DAYS)",
                reason: format!("{} is more than {MAX_GRACE_DAYS} days", args.grace_days),
            });
        }
        Ok(Config {
            cloud,
            endpoints,
            credential: args.credential,
            source,
            min_service_tags,
            targets,
            concurrency: args.concurrency,
            http: HttpOptions {
                attempt_timeout: Duration::from_secs(args.http_timeout_secs.max(1)),
                max_retries: args.http_max_retries,
                initial_retry_delay: Duration::from_millis(args.http_retry_delay_ms),
                call_timeout: Duration::from_secs(args.http_call_timeout_secs.max(1)),
            },
            state,
            grace_days: args.grace_days,
            allow_older: args.allow_older,
            discovery: discovery(args)?,
            defaults,
            write_budget: BudgetLimits::default(),
            notify_url: match given(&args.notify_url) {
                None => None,
                Some(url) => {
                    Some(
                        azure::parse_endpoint(url).map_err(|e| ConfigError::Setting {
                            setting: "--notify-url (TAGFENCE_NOTIFY_URL)",
                            // The URL is a secret: name the problem, not the value.
                            reason: match e {
                                azure::EndpointError::Insecure(_) => {
                                    "must use https (plain http only for a loopback host)"
                                        .to_owned()
                                }
                                azure::EndpointError::Scheme(_, scheme) => {
                                    format!("must use https, not '{scheme}'")
                                }
                                azure::EndpointError::Invalid(_) => "is not a URL".to_owned(),
                            },
                        })?,
                    )
                }
            },
        })
    }

    /// The target for a discovered vault whose discovery tag has `value`: the defaults, with
    /// the tags and profiles the value names (all of the defaults' when it names none, or is
    /// `default`) and the static rules it gives added to the defaults' ones.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the vault and what in the value is wrong.
    pub fn discovered_target(&self, id: VaultId, value: &str) -> Result<VaultTarget, ConfigError> {
        let tag = self
            .discovery
            .as_ref()
            .map_or(DEFAULT_DISCOVERY_TAG, |d| d.tag.as_str())
            .to_owned();
        let mut settings = self.defaults.clone();
        let tokens: Vec<&str> = value
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .collect();
        let defaults_only = tokens.is_empty()
            || (tokens.len() == 1
                && ["default", "on", "true", "yes"]
                    .iter()
                    .any(|word| tokens[0].eq_ignore_ascii_case(word)));
        if !defaults_only {
            // A token starting with a digit is a rule (no tag or profile name does).
            let (rules, names): (Vec<&str>, Vec<&str>) = tokens
                .iter()
                .partition(|t| t.starts_with(|c: char| c.is_ascii_digit()));
            if !names.is_empty() {
                settings.tags = names.iter().map(|n| (*n).to_owned()).collect();
            }
            settings
                .static_rules
                .extend(rules.iter().map(|r| (*r).to_owned()));
        }
        let mut target = target(id, &settings).map_err(|err| ConfigError::Discovered {
            tag: tag.clone(),
            value: value.to_owned(),
            reason: err.to_string(),
        })?;
        target.source = TargetSource::Discovered {
            tag,
            value: value.to_owned(),
        };
        Ok(target)
    }

    /// The target for `vault` (by id or, when unambiguous, by name).
    pub fn find_target(&self, vault: &str) -> Option<&VaultTarget> {
        if let Ok(id) = vault.parse::<VaultId>() {
            return self.targets.iter().find(|t| t.id.same_as(&id));
        }
        let mut by_name = self
            .targets
            .iter()
            .filter(|t| t.id.name.eq_ignore_ascii_case(vault.trim()));
        match (by_name.next(), by_name.next()) {
            (Some(target), None) => Some(target),
            _ => None,
        }
    }
}

fn target(id: VaultId, settings: &Resolved) -> Result<VaultTarget, ConfigError> {
    let static_rules = settings
        .static_rules
        .iter()
        .filter(|r| !r.trim().is_empty())
        .map(|r| desired::parse_static_rule(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::StaticRule {
            vault: id.name.clone(),
            reason: e.to_string(),
        })?;
    let named: Vec<String> = settings
        .tags
        .iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    let tags = profiles::expand(&named).map_err(|e| ConfigError::Profile {
        vault: id.name.clone(),
        reason: e.to_string(),
    })?;
    if tags.is_empty() && static_rules.is_empty() {
        return Err(ConfigError::NothingSelected {
            vault: id.to_string(),
        });
    }
    if !(0.0..=1.0).contains(&settings.safety.max_tag_shrink) {
        return Err(ConfigError::Setting {
            setting: "--max-tag-shrink (TAGFENCE_MAX_TAG_SHRINK, max_tag_shrink)",
            reason: format!(
                "{} is not between 0 and 1 (the fraction of a tag's prefixes that may go between two documents)",
                settings.safety.max_tag_shrink
            ),
        });
    }
    if !(0.0..=1.0).contains(&settings.limits.max_remove_fraction) {
        return Err(ConfigError::Setting {
            setting: "max_remove_fraction",
            reason: format!(
                "{} is not between 0 and 1",
                settings.limits.max_remove_fraction
            ),
        });
    }
    Ok(VaultTarget {
        id,
        selection: Selection {
            tags,
            static_rules,
            grace: Vec::new(),
        },
        limits: settings.limits.clone(),
        prune: settings.prune,
        safety: settings.safety.clone(),
        source: TargetSource::Listed,
    })
}

/// Discovery as the flags give it; `None` without a subscription or management group.
fn discovery(args: &RunArgs) -> Result<Option<Discovery>, ConfigError> {
    let clean = |values: &[String]| -> Vec<String> {
        values
            .iter()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect()
    };
    let subscriptions = clean(&args.discover_subscriptions);
    let management_groups = clean(&args.discover_management_groups);
    if subscriptions.is_empty() && management_groups.is_empty() {
        return Ok(None);
    }
    if let Some(bad) = subscriptions
        .iter()
        .find(|s| s.len() != 36 || !s.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
    {
        return Err(ConfigError::Setting {
            setting: "--discover-subscription (TAGFENCE_DISCOVER_SUBSCRIPTIONS)",
            reason: format!("'{bad}' is not a subscription id (a GUID)"),
        });
    }
    let tag = match args.discover_tag.trim() {
        "" => DEFAULT_DISCOVERY_TAG.to_owned(),
        tag if tag.contains(['\'', '"', '\\']) => {
            return Err(ConfigError::Setting {
                setting: "--discover-tag (TAGFENCE_DISCOVER_TAG)",
                reason: format!("'{tag}' may not contain quotes or backslashes"),
            })
        }
        tag => tag.to_owned(),
    };
    Ok(Some(Discovery {
        subscriptions,
        management_groups,
        tag,
    }))
}

/// A grace window longer than this is surely a typo (a tag changes every few weeks at most).
pub const MAX_GRACE_DAYS: u32 = 90;

/// The blob endpoint suffix of each cloud, for `AzureWebJobsStorage__accountName`.
fn blob_suffix(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Public => "blob.core.windows.net",
        Cloud::AzureGovernment => "blob.core.usgovcloudapi.net",
        Cloud::AzureChina => "blob.core.chinacloudapi.cn",
    }
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Where the state lives: `--state-dir`, else `--state-url`, else the Function App's own
/// storage (identity-based `AzureWebJobsStorage__*` settings), else nowhere.
fn state_spec(args: &RunArgs, cloud: Cloud) -> Result<Option<StateSpec>, ConfigError> {
    let dir = args
        .state_dir
        .as_ref()
        .filter(|d| !d.as_os_str().is_empty());
    let url = given(&args.state_url);
    if let (Some(_), Some(_)) = (dir, url) {
        return Err(ConfigError::Setting {
            setting: "--state-dir (TAGFENCE_STATE_DIR)",
            reason: "give either a state directory or a state URL (TAGFENCE_STATE_URL), not both"
                .to_owned(),
        });
    }
    if let Some(dir) = dir {
        return Ok(Some(StateSpec::Dir(dir.clone())));
    }
    // The Functions settings name the blob *service*: any path in them is part of the
    // endpoint (an emulator's account), never a container.
    let (setting, endpoint, service_only) = if let Some(url) = url {
        ("--state-url (TAGFENCE_STATE_URL)", url.to_owned(), false)
    } else if let Some(url) = given(&args.webjobs_blob_service_uri) {
        ("AzureWebJobsStorage__blobServiceUri", url.to_owned(), true)
    } else if let Some(account) = given(&args.webjobs_account_name) {
        (
            "AzureWebJobsStorage__accountName",
            format!("https://{account}.{}", blob_suffix(cloud)),
            true,
        )
    } else {
        return Ok(None);
    };
    let bad = |reason: String| ConfigError::Setting { setting, reason };
    let mut container_url =
        Url::parse(&endpoint).map_err(|e| bad(format!("'{endpoint}' is not a URL: {e}")))?;
    if container_url.scheme() != "https" {
        return Err(bad(format!(
            "'{endpoint}' must use https: storage tokens are never sent in clear"
        )));
    }
    if container_url.query().is_some() {
        return Err(bad(
            "the URL must not carry a query (no SAS tokens: tagfence uses its identity)".to_owned(),
        ));
    }
    let named: Vec<String> = container_url
        .path_segments()
        .map(|segments| {
            segments
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    // `https://<account>.blob.core.windows.net[/<container>]`; a path-style endpoint (an
    // emulator: `https://127.0.0.1:10000/<account>/<container>`) must end with the container.
    let configured = match args.state_container.trim() {
        "" => DEFAULT_CONTAINER.to_owned(),
        name => name.to_owned(),
    };
    let (prefix, container) = match named.split_last() {
        Some((last, rest)) if !service_only => (rest.to_vec(), last.clone()),
        _ => (named.clone(), configured),
    };
    if !valid_container_name(&container) {
        return Err(bad(format!("'{container}' is not a valid container name (3-63 lowercase letters, digits and single hyphens)")));
    }
    let mut path = String::new();
    for segment in prefix.iter().chain(std::iter::once(&container)) {
        path.push('/');
        path.push_str(segment);
    }
    container_url.set_path(&path);
    let ca_file = args
        .state_ca_file
        .clone()
        .filter(|p| !p.as_os_str().is_empty());
    Ok(Some(StateSpec::Blob {
        container_url,
        ca_file,
    }))
}

fn valid_container_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

fn source_spec(args: &RunArgs, endpoints: &CloudEndpoints) -> Result<SourceSpec, ConfigError> {
    let given = args.source.trim();
    match given {
        "api" => {
            let subscription = args
                .subscription_id
                .clone()
                .filter(|s| !s.trim().is_empty());
            let location = args.location.clone().filter(|s| !s.trim().is_empty());
            match (subscription, location) {
                (Some(subscription), Some(location)) => Ok(SourceSpec::Api {
                    subscription: subscription.trim().to_owned(),
                    location: location.trim().to_owned(),
                }),
                _ => Err(ConfigError::Setting {
                    setting: "--source api",
                    reason: "needs --subscription-id (TAGFENCE_SUBSCRIPTION_ID) and --location (TAGFENCE_LOCATION)".to_owned(),
                }),
            }
        }
        "download" => Ok(SourceSpec::Download {
            page: endpoints.download_page.clone(),
        }),
        "" => Err(ConfigError::Setting {
            setting: "--source (TAGFENCE_SOURCE)",
            reason: "is empty".to_owned(),
        }),
        url if url.contains("://") => {
            let url = Url::parse(url).map_err(|_| ConfigError::Setting {
                setting: "--source (TAGFENCE_SOURCE)",
                reason: format!("'{url}' is not a URL"),
            })?;
            azure::check_endpoint(&url).map_err(|e| ConfigError::Setting {
                setting: "--source (TAGFENCE_SOURCE)",
                reason: e.to_string(),
            })?;
            Ok(SourceSpec::Url(url))
        }
        path => Ok(SourceSpec::File(PathBuf::from(path))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    const KV_A: &str =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-a";
    const KV_B: &str =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-b";

    fn parse(args: &[&str]) -> RunArgs {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
            .run
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tagfence-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn flags_give_every_vault_the_same_settings() {
        let config = Config::from_args(&parse(&[
            "--vault",
            KV_A,
            "--vault",
            KV_B,
            "--tag",
            "AzureDevOps",
            "--static-rule",
            "52.1.2.3",
            "--max-rules",
            "500",
        ]))
        .unwrap();
        assert_eq!(config.targets.len(), 2);
        for target in &config.targets {
            assert_eq!(target.selection.tags, ["AzureDevOps"]);
            assert_eq!(target.selection.static_rules[0].to_string(), "52.1.2.3/32");
            assert_eq!(target.limits.max_rules, 500);
        }
        assert_eq!(
            config.source,
            SourceSpec::Download {
                page: CloudEndpoints::of(Cloud::Public).download_page
            }
        );
        assert_eq!(config.min_service_tags, 1000);
    }

    #[test]
    fn the_file_layers_under_flags_and_over_defaults() {
        let path = temp_file(
            "layers.toml",
            &format!(
                r#"vaults = ["{KV_A}"]
[defaults]
tags = ["AzureDevOps"]
max_rules = 900
fit = "summarize"

[[vault]]
id = "{KV_B}"
tags = ["AzureCloud.westeurope"]
max_rules = 300
"#
            ),
        );
        let config = Config::from_args(&parse(&[
            "--config",
            path.to_str().unwrap(),
            "--max-rules",
            "800",
        ]))
        .unwrap();
        let a = config.find_target("kv-a").unwrap();
        assert_eq!(
            (a.selection.tags.clone(), a.limits.max_rules, a.limits.fit),
            (
                vec!["AzureDevOps".to_owned()],
                800,
                desired::FitMode::Summarize
            )
        );
        let b = config.find_target(KV_B).unwrap();
        assert_eq!(
            (b.selection.tags.clone(), b.limits.max_rules),
            (vec!["AzureCloud.westeurope".to_owned()], 300)
        );
    }

    #[test]
    fn bad_settings_are_refused_naming_them() {
        let bad_file = temp_file("bad.toml", "[defaults]\ntagz = [\"x\"]\n");
        let upper = KV_A.to_uppercase();
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec!["--vault", "kv-a", "--tag", "X"], "invalid vault 'kv-a' (--vault / TAGFENCE_VAULTS): it does not have eight segments"),
            (vec!["--vault", KV_A], "vault /subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-a: no tags or static rules selected (give --tag/TAGFENCE_TAGS, or tags in the configuration file)"),
            (vec!["--vault", KV_A, "--vault", &KV_A[..KV_A.len() - 4], "--tag", "X"], "invalid vault '/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/' (--vault / TAGFENCE_VAULTS): it does not have eight segments"),
            (vec!["--vault", KV_A, "--vault", &upper, "--tag", "X"], "vault /subscriptions/S1/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/KV-A is listed twice"),
            (vec!["--vault", KV_A, "--static-rule", "10.0.0.1"], "vault kv-a: invalid static rule: '10.0.0.1' overlaps the reserved range 10.0.0.0/8 (private network, RFC 1918); key vault refuses it"),
            (vec!["--tag", "X", "--source", "api"], "--source api: needs --subscription-id (TAGFENCE_SUBSCRIPTION_ID) and --location (TAGFENCE_LOCATION)"),
            (vec!["--tag", "X", "--source", "http://example.com/tags.json"], "--source (TAGFENCE_SOURCE): 'http://example.com/tags.json' uses plain http; only https is allowed, except for a loopback host (a local emulator)"),
            (vec!["--tag", "X", "--arm-endpoint", "http://management.azure.com"], "--arm-endpoint (TAGFENCE_ARM_ENDPOINT): 'http://management.azure.com/' uses plain http; only https is allowed, except for a loopback host (a local emulator)"),
            (vec!["--config", bad_file.to_str().unwrap()], "unknown field `tagz`"),
            (vec!["--tag", "X", "--state-dir", "/tmp/s", "--state-url", "https://a.blob.core.windows.net"], "give either a state directory or a state URL (TAGFENCE_STATE_URL), not both"),
            (vec!["--tag", "X", "--state-url", "http://a.blob.core.windows.net"], "--state-url (TAGFENCE_STATE_URL): 'http://a.blob.core.windows.net' must use https"),
            (vec!["--tag", "X", "--state-url", "https://a.blob.core.windows.net/c?sig=x"], "must not carry a query (no SAS tokens"),
            (vec!["--tag", "X", "--state-url", "https://a.blob.core.windows.net/Bad_Name"], "'Bad_Name' is not a valid container name"),
            (vec!["--tag", "X", "--grace-days", "400"], "--grace-days (TAGFENCE_GRACE_DAYS): 400 is more than 90 days"),
        ];
        for (args, expected) in cases {
            let err = Config::from_args(&parse(&args)).unwrap_err().to_string();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn state_lives_where_the_settings_say() {
        let state = |args: &[&str]| {
            let mut all = vec!["--tag", "X"];
            all.extend_from_slice(args);
            Config::from_args(&parse(&all)).unwrap().state
        };
        assert_eq!(state(&[]), None);
        assert_eq!(
            state(&["--state-dir", "/var/lib/tagfence"]),
            Some(StateSpec::Dir("/var/lib/tagfence".into()))
        );
        let blob = |args: &[&str]| match state(args) {
            Some(StateSpec::Blob { container_url, .. }) => container_url.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            blob(&["--state-url", "https://acct.blob.core.windows.net"]),
            "https://acct.blob.core.windows.net/tagfence"
        );
        assert_eq!(
            blob(&["--state-url", "https://acct.blob.core.windows.net/mine/"]),
            "https://acct.blob.core.windows.net/mine"
        );
        assert_eq!(
            blob(&[
                "--webjobs-account-name",
                "funcstore",
                "--cloud",
                "AzureUSGovernment"
            ]),
            "https://funcstore.blob.core.usgovcloudapi.net/tagfence"
        );
        assert_eq!(
            blob(&[
                "--webjobs-blob-service-uri",
                "https://funcstore.blob.core.windows.net/",
                "--state-container",
                "tf-state"
            ]),
            "https://funcstore.blob.core.windows.net/tf-state"
        );
        assert_eq!(
            blob(&[
                "--state-url",
                "https://127.0.0.1:10000/devstoreaccount1/tagfence"
            ]),
            "https://127.0.0.1:10000/devstoreaccount1/tagfence"
        );
    }

    #[test]
    fn the_source_flag_takes_every_form() {
        let spec = |s: &str| {
            Config::from_args(&parse(&[
                "--source",
                s,
                "--subscription-id",
                "s1",
                "--location",
                "westeurope",
            ]))
            .unwrap()
            .source
        };
        assert_eq!(
            spec("api"),
            SourceSpec::Api {
                subscription: "s1".into(),
                location: "westeurope".into()
            }
        );
        assert_eq!(
            spec("tags.json.gz"),
            SourceSpec::File("tags.json.gz".into())
        );
        assert_eq!(
            spec("https://example.com/t.json"),
            SourceSpec::Url(Url::parse("https://example.com/t.json").unwrap())
        );
        assert_eq!(
            spec("http://127.0.0.1:9/t.json"),
            SourceSpec::Url(Url::parse("http://127.0.0.1:9/t.json").unwrap())
        );
    }
}
