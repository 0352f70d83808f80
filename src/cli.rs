//! The `tagfence` command line: clap arguments → validated inputs → the core → output and an
//! exit code.
//!
//! The clap argument types live here, and only here. The arguments of a run command (`apply`,
//! `status`, `serve`) become a [`Settings`], which records whether each was given as a flag or
//! in the environment, and `config` validates that into a [`Config`].
//!
//! Exit codes (one scheme for every command, as kubectl and grep use it):
//! - 0: success (and, for `plan`, also when there are changes unless `--exit-code` is given);
//! - 1: `plan --exit-code` found changes;
//! - 2: any error, including clap's usage errors. Errors go to stderr, one line, lowercase.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use ipnet::Ipv4Net;

use crate::azure::auth::{CredentialKind, IdentityEnv};
use crate::config::{
    self, Config, Key, LimitSettings, Origin, Origins, SelectionSettings, Settings,
};
use crate::core::desired::{self, FitMode, Selection};
use crate::core::fit::Slash31;
use crate::core::live::{self, LiveAcl};
use crate::core::plan::{self, PlanInput, TagGuard};
use crate::core::profiles;
use crate::core::render;
use crate::core::service_tags::{Cloud, ServiceTags};
use crate::run::{policy, RunRequest, Runner};
use crate::server;

/// Keeps Azure Key Vault firewalls in step with Azure Service Tags.
#[derive(Debug, Parser)]
#[command(name = "tagfence", version, about, long_about = None)]
#[command(after_help = "Exit codes: 0 success, 1 `plan --exit-code` found changes, 2 error.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan the firewall change for one vault from a Service Tags file (writes nothing).
    Plan(PlanArgs),
    /// Reconcile the configured vaults with the current Service Tags through ARM.
    Apply(ApplyArgs),
    /// List the tags of a Service Tags file, or the prefixes of some of them.
    Tags(TagsArgs),
    /// Show what the state remembers: the document applied and each vault's last run.
    Status(StatusArgs),
    /// Run as the Azure Functions custom handler (the host starts this).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub run: RunArgs,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port to listen on, on 127.0.0.1; the Functions host passes a fresh one in
    /// FUNCTIONS_CUSTOMHANDLER_PORT.
    #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT")]
    pub port: Option<u16>,

    /// The timer's NCRONTAB schedule (six fields, Sunday = 0), as given to the host in the
    /// TAGFENCE_SCHEDULE app setting; checked at start-up and reported with the next run.
    #[arg(long, env = "TAGFENCE_SCHEDULE", default_value = crate::server::schedule::DEFAULT_SCHEDULE)]
    pub schedule: String,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// Plan against the live vaults but write nothing.
    #[arg(long, env = "TAGFENCE_DRY_RUN")]
    pub dry_run: bool,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The Service Tags document (download file or Discovery API response; JSON or gzip; `-`
    /// for stdin).
    #[arg(long, value_name = "FILE")]
    pub service_tags: PathBuf,

    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// The vault as ARM's GET returns it (only `properties.networkAcls` is used); without it
    /// the vault is taken to have no rules.
    #[arg(long, value_name = "FILE")]
    pub live: Option<PathBuf>,

    /// The rules tagfence applied last time, as a JSON array of CIDRs: only these are ever
    /// removed. Without it nothing is removed.
    #[arg(long, value_name = "FILE")]
    pub last_applied: Option<PathBuf>,

    /// Also remove unmanaged rules (rules neither selected nor applied by tagfence).
    #[arg(long)]
    pub prune: bool,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Exit with 1 when the plan has changes (0 when it has none).
    #[arg(long)]
    pub exit_code: bool,
}

#[derive(Debug, Args)]
pub struct TagsArgs {
    /// The Service Tags document (JSON or gzip; `-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub service_tags: PathBuf,

    /// Show this tag's prefixes instead of the listing (repeatable).
    #[arg(long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// The cloud, as the flag spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
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

/// The credential, as the flag spells it (`auto`, `managed-identity`, `workload-identity`,
/// `developer-tools`); each value's help repeats its [`CredentialKind`]'s doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum CredentialArg {
    /// Managed identity in Functions/App Service, else workload identity, else developer tools.
    #[default]
    Auto,
    /// The managed identity (App Service endpoint when present, else IMDS).
    ManagedIdentity,
    /// Workload identity federation (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`).
    WorkloadIdentity,
    /// `az login` or `azd auth login` on a developer machine.
    DeveloperTools,
}

impl From<CredentialArg> for CredentialKind {
    fn from(arg: CredentialArg) -> Self {
        match arg {
            CredentialArg::Auto => CredentialKind::Auto,
            CredentialArg::ManagedIdentity => CredentialKind::ManagedIdentity,
            CredentialArg::WorkloadIdentity => CredentialKind::WorkloadIdentity,
            CredentialArg::DeveloperTools => CredentialKind::DeveloperTools,
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
/// can give values underneath it; the defaults are those of
/// [`Limits::default`](crate::core::desired::Limits::default).
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

/// How to fit, as the flag spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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

/// How to write a /31, as the flag spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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

/// The settings of a run that reconciles vaults (`apply`, `status`, and `serve` for the
/// Functions host). Every flag has an environment form, which is how the Functions app settings
/// reach it. Each field's name is its [`Key`]'s, which is how [`Invocation::origins`] finds it.
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
    #[arg(long = "config", value_name = "FILE", env = "TAGFENCE_CONFIG")]
    pub config_file: Option<PathBuf>,

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
        default_value = config::DEFAULT_SOURCE
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
    #[arg(long, value_enum, env = "TAGFENCE_CREDENTIAL", default_value_t = CredentialArg::Auto)]
    pub credential: CredentialArg,

    /// Refuse a Service Tags document with fewer tags [default: 1000 Public, 100 Government,
    /// 20 China].
    #[arg(long, value_name = "N", env = "TAGFENCE_MIN_SERVICE_TAGS")]
    pub min_service_tags: Option<usize>,

    /// Vaults reconciled at the same time.
    #[arg(
        long,
        value_name = "N",
        env = "TAGFENCE_CONCURRENCY",
        default_value_t = config::DEFAULT_CONCURRENCY
    )]
    pub concurrency: usize,

    /// Timeout of one HTTP attempt, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "TAGFENCE_HTTP_TIMEOUT_SECS",
        default_value_t = config::DEFAULT_HTTP_TIMEOUT_SECS
    )]
    pub http_timeout_secs: u64,

    /// Retries of a throttled, failed or timed-out HTTP call.
    #[arg(
        long,
        value_name = "N",
        env = "TAGFENCE_HTTP_MAX_RETRIES",
        default_value_t = config::DEFAULT_HTTP_MAX_RETRIES
    )]
    pub http_max_retries: u32,

    /// First retry delay in milliseconds; it doubles each time, and `Retry-After` wins when
    /// longer.
    #[arg(
        long,
        value_name = "MS",
        env = "TAGFENCE_HTTP_RETRY_DELAY_MS",
        default_value_t = config::DEFAULT_HTTP_RETRY_DELAY_MS
    )]
    pub http_retry_delay_ms: u64,

    /// Deadline of one HTTP call, retries included, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "TAGFENCE_HTTP_CALL_TIMEOUT_SECS",
        default_value_t = config::DEFAULT_HTTP_CALL_TIMEOUT_SECS
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
        default_value = config::DEFAULT_STATE_CONTAINER
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
        default_value_t = config::DEFAULT_GRACE_DAYS
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
        default_value = config::DEFAULT_DISCOVERY_TAG
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

impl SelectionArgs {
    /// The selection as given.
    pub fn to_settings(&self) -> SelectionSettings {
        SelectionSettings {
            tags: self.tags.clone(),
            static_rules: self.static_rules.clone(),
        }
    }

    /// Checks the static rules and builds the selection.
    ///
    /// # Errors
    /// The first static rule that is not a public IPv4 address or prefix.
    pub fn to_selection(&self) -> Result<Selection> {
        let static_rules = self
            .static_rules
            .iter()
            .filter(|r| !r.trim().is_empty())
            .map(|r| desired::parse_static_rule(r).context("invalid --static-rule"))
            .collect::<Result<Vec<_>>>()?;
        let named: Vec<String> = self
            .tags
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        let tags = profiles::expand(&named).context("invalid --tag")?;
        Ok(Selection {
            tags,
            static_rules,
            grace: Vec::new(),
        })
    }
}

impl LimitArgs {
    /// The limits as given; [`LimitSettings::over`] layers them.
    pub fn to_settings(&self) -> LimitSettings {
        LimitSettings {
            max_rules: self.max_rules,
            fit: self.fit.map(FitMode::from),
            envelope: self.envelope.clone(),
            max_extra_addresses: self.max_extra_addresses,
            max_remove_fraction: self.max_remove_fraction,
            slash31: self.slash31.map(Slash31::from),
        }
    }
}

impl RunArgs {
    /// The settings these arguments give. `origins` ([`Invocation::origins`]) says which ones the
    /// user gave and where; an argument with a clap default that has no origin was not given,
    /// and is left for `config` to default (to the same constant clap shows in `--help`).
    pub fn to_settings(&self, origins: Origins) -> Settings {
        let given = |key: Key| origins.get(key).is_some();
        Settings {
            vaults: self.vaults.clone(),
            config_file: self.config_file.clone(),
            selection: self.selection.to_settings(),
            limits: self.limits.to_settings(),
            prune: self.prune,
            adopt_existing: self.adopt_existing,
            init_firewall: self.init_firewall,
            accept_missing_rules: self.accept_missing_rules,
            allow_tag_shrink: self.allow_tag_shrink.clone(),
            max_tag_shrink: self.max_tag_shrink,
            source: given(Key::Source).then(|| self.source.clone()),
            subscription_id: self.subscription_id.clone(),
            location: self.location.clone(),
            cloud: given(Key::Cloud).then(|| self.cloud.into()),
            arm_endpoint: self.arm_endpoint.clone(),
            download_page_url: self.download_page_url.clone(),
            credential: given(Key::Credential).then_some(self.credential.into()),
            min_service_tags: self.min_service_tags,
            concurrency: given(Key::Concurrency).then_some(self.concurrency),
            http_timeout_secs: given(Key::HttpTimeoutSecs).then_some(self.http_timeout_secs),
            http_max_retries: given(Key::HttpMaxRetries).then_some(self.http_max_retries),
            http_retry_delay_ms: given(Key::HttpRetryDelayMs).then_some(self.http_retry_delay_ms),
            http_call_timeout_secs: given(Key::HttpCallTimeoutSecs)
                .then_some(self.http_call_timeout_secs),
            state_dir: self.state_dir.clone(),
            state_url: self.state_url.clone(),
            state_container: given(Key::StateContainer).then(|| self.state_container.clone()),
            state_ca_file: self.state_ca_file.clone(),
            webjobs_blob_service_uri: self.webjobs_blob_service_uri.clone(),
            webjobs_account_name: self.webjobs_account_name.clone(),
            grace_days: given(Key::GraceDays).then_some(self.grace_days),
            allow_older: self.allow_older,
            discover_subscriptions: self.discover_subscriptions.clone(),
            discover_management_groups: self.discover_management_groups.clone(),
            discover_tag: given(Key::DiscoverTag).then(|| self.discover_tag.clone()),
            notify_url: self.notify_url.clone(),
            origins,
        }
    }
}

/// A parsed command line, with clap's record of where each value came from: a flag, the
/// environment, or clap's default. [`Cli::parse`] drops that record.
#[derive(Debug)]
pub struct Invocation {
    pub cli: Cli,
    matches: ArgMatches,
}

impl Invocation {
    /// Parses the process's arguments as [`Cli::parse`] does: a usage error exits with 2.
    pub fn from_env() -> Invocation {
        Invocation::from_matches(Cli::command().get_matches()).unwrap_or_else(|err| err.exit())
    }

    /// Parses `args`, the first being the program's name.
    ///
    /// # Errors
    /// clap's usage error.
    pub fn try_from_args<I, T>(args: I) -> Result<Invocation, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Invocation::from_matches(Cli::command().try_get_matches_from(args)?)
    }

    fn from_matches(matches: ArgMatches) -> Result<Invocation, clap::Error> {
        // Not `from_arg_matches_mut`: it takes the values out, and their sources with them.
        let cli = Cli::from_arg_matches(&matches).map_err(|err| err.format(&mut Cli::command()))?;
        Ok(Invocation { cli, matches })
    }

    /// Where the user gave each run setting of the subcommand (none for `plan` and `tags`,
    /// whose settings are not validated by `config`).
    pub fn origins(&self) -> Origins {
        let Some((name, matches)) = self.matches.subcommand() else {
            return Origins::default();
        };
        let command = Cli::command();
        match command.find_subcommand(name) {
            Some(subcommand) => origins(subcommand, matches),
            None => Origins::default(),
        }
    }
}

/// Where clap found each of `command`'s run settings: on the command line or in the
/// environment. One it took from its default is left out: the user did not give it.
fn origins(command: &clap::Command, matches: &ArgMatches) -> Origins {
    let mut origins = Origins::default();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        // Only ids of this command may be asked about: clap panics on others in debug builds.
        let Some(key) = Key::from_name(id) else {
            continue;
        };
        let origin = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => {
                arg.get_long().map(|long| Origin::Flag(format!("--{long}")))
            }
            Some(ValueSource::EnvVariable) => arg
                .get_env()
                .map(|env| Origin::Env(env.to_string_lossy().into_owned())),
            _ => None,
        };
        if let Some(origin) = origin {
            origins.record(key, origin);
        }
    }
    origins
}

/// Runs a parsed command line.
///
/// # Errors
/// Any failure, with context naming what was being done; `main` prints it and exits 2.
pub fn run(invocation: Invocation) -> Result<ExitCode> {
    let origins = invocation.origins();
    match invocation.cli.command {
        Command::Plan(args) => run_plan(&args),
        Command::Apply(args) => run_apply(&args, origins),
        Command::Tags(args) => run_tags(&args),
        Command::Status(args) => run_status(&args, origins),
        Command::Serve(args) => run_serve(args, origins),
    }
}

/// Logs for the Functions host: JSON lines on stdout (the host logs stdout at Information and
/// every stderr line as an Error), each carrying the invocation's span fields.
pub fn init_server_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAGFENCE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("tagfence=info,warn"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(io::stdout)
        .try_init();
}

fn run_serve(args: ServeArgs, origins: Origins) -> Result<ExitCode> {
    init_server_logging();
    let port = args
        .port
        .context("FUNCTIONS_CUSTOMHANDLER_PORT is not set; the Functions host sets it (use --port to run locally)")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
        let schedule = server::schedule::Schedule::parse(&args.schedule);
        match &schedule {
            Ok(schedule) => tracing::info!(
                schedule = %schedule.expression,
                description = %schedule.describe(),
                next_run_utc = %schedule.next_after(chrono::Utc::now()).map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
                "timer schedule"
            ),
            Err(error) => tracing::error!(%error, "the timer schedule is invalid; the host will not fire the timer"),
        }
        let config = Config::from_settings(&args.run.to_settings(origins))
            .map_err(|e| format!("reading the configuration: {e}"));
        if let Err(error) = &config {
            tracing::error!(%error, "invalid configuration");
        }
        let state = server::AppState::new(config, IdentityEnv::from_process(), schedule);
        tracing::info!(port, "tagfence serving");
        server::serve(listener, state, server::shutdown_signal()).await.context("serving")?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Progress logs for commands that talk to Azure: to stderr, so that stdout carries only the
/// report; `TAGFENCE_LOG` filters (default `info`).
pub fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAGFENCE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("tagfence=info,warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_target(false)
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run_apply(args: &ApplyArgs, origins: Origins) -> Result<ExitCode> {
    init_cli_logging();
    let config = Config::from_settings(&args.run.to_settings(origins))
        .context("reading the configuration")?;
    let runtime = runtime()?;
    let report = runtime.block_on(async {
        let runner = Runner::new(config, &IdentityEnv::from_process())?;
        runner
            .run(&RunRequest {
                only: None,
                dry_run: args.dry_run,
                trigger: "cli",
            })
            .await
    })?;
    let text = match args.output {
        OutputFormat::Text => report.to_text(),
        OutputFormat::Json => {
            let mut json =
                serde_json::to_string_pretty(&report.to_json()).context("encoding the report")?;
            json.push('\n');
            json
        }
    };
    write_stdout(&text)?;
    // The exit code of a refused or failed vault is the error policy's, as the HTTP status is.
    Ok(match report.error_kind() {
        Some(kind) => ExitCode::from(policy::disposition(kind).exit_code),
        None => ExitCode::SUCCESS,
    })
}

fn run_status(args: &StatusArgs, origins: Origins) -> Result<ExitCode> {
    init_cli_logging();
    let config = Config::from_settings(&args.run.to_settings(origins))
        .context("reading the configuration")?;
    let runtime = runtime()?;
    let status = runtime.block_on(async {
        let runner = Runner::new(config, &IdentityEnv::from_process())?;
        runner.status().await
    })?;
    let text = match args.output {
        OutputFormat::Text => status.to_text(),
        OutputFormat::Json => {
            let mut json =
                serde_json::to_string_pretty(&status.to_json()).context("encoding the status")?;
            json.push('\n');
            json
        }
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The bytes of a file (memory-mapped when large), or of stdin for `-`.
pub enum Input {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Input::Mapped(map) => map,
            Input::Owned(bytes) => bytes,
        }
    }
}

/// Reads `path` (or stdin for `-`).
///
/// # Errors
/// When the file cannot be opened or read.
pub fn read_input(path: &Path) -> io::Result<Input> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        io::stdin().lock().read_to_end(&mut bytes)?;
        return Ok(Input::Owned(bytes));
    }
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    // Mapping a 4 MB file is ~10× cheaper than reading it into a fresh buffer (BENCHMARKS.md).
    // The file is only read while it is parsed, by this process, right after opening it.
    if meta.is_file() && meta.len() >= 1 << 20 {
        // SAFETY: the mapping is read-only and lives only for this parse. Another process
        // truncating the file meanwhile could fault the read; for a CLI reading its own input
        // file that is the same risk as ripgrep's mmap search and is accepted for the speed.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
        return Ok(Input::Mapped(map));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)?;
    Ok(Input::Owned(bytes))
}

/// Reads a Service Tags document; with `only`, the prefixes of those tags only (the rest of the
/// document is still checked as JSON).
fn load_service_tags(path: &Path, only: Option<&[String]>) -> Result<ServiceTags> {
    let context = || format!("reading service tags from {}", path.display());
    let bytes = read_input(path).with_context(context)?;
    match only {
        Some(names) => ServiceTags::parse_only(&bytes, names),
        None => ServiceTags::parse(&bytes),
    }
    .with_context(context)
}

/// The largest vault document `plan --live` reads: a vault of 1,000 rules is about 50 KB.
const MAX_VAULT_BYTES: u64 = 16 << 20;

fn load_live(path: &Path) -> Result<LiveAcl> {
    let context = || format!("reading the vault from {}", path.display());
    let mut bytes = Vec::new();
    let reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).with_context(context)?)
    };
    reader
        .take(MAX_VAULT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(context)?;
    if bytes.len() as u64 > MAX_VAULT_BYTES {
        bail!(
            "{}: it is larger than {} MiB, which no vault document is",
            context(),
            MAX_VAULT_BYTES >> 20
        );
    }
    LiveAcl::from_vault_json(&bytes).with_context(|| {
        format!(
            "reading the vault from {} (expected one vault object as ARM's GET returns it)",
            path.display()
        )
    })
}

fn load_last_applied(path: &Path) -> Result<Vec<Ipv4Net>> {
    let context = || format!("reading the last-applied rules from {}", path.display());
    let bytes = read_input(path).with_context(context)?;
    let values: Vec<String> = serde_json::from_slice(&bytes)
        .context("expected a JSON array of CIDR strings")
        .with_context(context)?;
    live::normalise_rules(&values)
        .map_err(|(value, reason)| {
            anyhow::anyhow!("'{value}' is not a rule tagfence can read: {reason}")
        })
        .with_context(context)
}

fn run_plan(args: &PlanArgs) -> Result<ExitCode> {
    let selection = args.selection.to_selection()?;
    let limits = args.limits.to_settings().to_limits();
    // The plan needs the selected and envelope tags only.
    let needed: Vec<String> = selection
        .tags
        .iter()
        .chain(&limits.envelope)
        .cloned()
        .collect();
    let tags = load_service_tags(&args.service_tags, Some(&needed))?;
    let live = match &args.live {
        Some(path) => load_live(path)?,
        None => LiveAcl::empty(),
    };
    let last_applied = args
        .last_applied
        .as_deref()
        .map(load_last_applied)
        .transpose()?;
    if live.public_access_disabled() {
        eprintln!("tagfence: warning: the vault's publicNetworkAccess is Disabled, so its IP rules have no effect");
    }
    if args.live.is_some() && !live.is_whole() {
        let missing: Vec<&str> = live.missing.iter().map(|f| f.path()).collect();
        eprintln!("tagfence: warning: the vault lacks {} (missing, null or not of its type): apply refuses to write from such a read", missing.join(" and "));
    }
    for rule in &live.unreadable {
        eprintln!(
            "tagfence: warning: the vault holds IP rule '{}', which tagfence cannot read ({}); it is kept as it is and counts against the limit",
            rule.value, rule.reason
        );
    }
    let mut plan = plan::plan_vault(PlanInput {
        tags: &tags,
        selection: &selection,
        limits: &limits,
        live: &live.ip_rules,
        unreadable: live.unreadable.len(),
        owned: last_applied.as_deref(),
        prune: args.prune,
        adopt: false,
        recorded: None,
        tag_guard: TagGuard::default(),
    })
    .context("planning the firewall change")?;
    plan.vault = live.vault_name.clone();

    let text = match args.output {
        OutputFormat::Text => render::plan_text(&plan),
        OutputFormat::Json => {
            let mut json = serde_json::to_string_pretty(&render::plan_json(&plan))
                .context("encoding the plan")?;
            json.push('\n');
            json
        }
    };
    write_stdout(&text)?;
    Ok(if args.exit_code && plan.has_changes() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_tags(args: &TagsArgs) -> Result<ExitCode> {
    let doc = load_service_tags(&args.service_tags, None)?;
    let mut detail = Vec::with_capacity(args.tags.len());
    for name in &args.tags {
        let Some(tag) = doc.find(name.trim()) else {
            let suggestions = desired::close_names(&doc, name.trim());
            bail!(
                "{}",
                desired::DesireError::UnknownTag {
                    name: name.trim().to_owned(),
                    suggestions
                }
            );
        };
        detail.push(tag);
    }
    let text = match args.output {
        OutputFormat::Json => {
            let mut json = serde_json::to_string_pretty(&render::tags_json(&doc, &detail))
                .context("encoding the tag listing")?;
            json.push('\n');
            json
        }
        OutputFormat::Text if detail.is_empty() => render::tags_table(&doc),
        OutputFormat::Text => detail
            .iter()
            .map(render::tag_detail)
            .collect::<Vec<_>>()
            .join("\n"),
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes all of `text` to stdout. A closed pipe (`tagfence tags | head`) is not an error.
fn write_stdout(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => {
            Err(err).context("writing to stdout")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::desired::Limits;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tagfence").chain(args.iter().copied()))
    }

    #[test]
    fn plan_flags_have_their_documented_defaults() {
        let Command::Plan(args) =
            parse(&["plan", "--service-tags", "f.json", "--tag", "AzureDevOps"])
                .unwrap()
                .command
        else {
            panic!("not a plan");
        };
        let limits = args.limits.to_settings().to_limits();
        assert_eq!(limits, Limits::default());
        assert_eq!(args.output, OutputFormat::Text);
        assert!(!args.exit_code && !args.prune);
    }

    #[test]
    fn repeatable_and_comma_separated_flags_collect() {
        let Command::Plan(args) = parse(&[
            "plan",
            "--service-tags",
            "f",
            "--tag",
            "A,B",
            "--tag",
            "C",
            "--static-rule",
            "52.1.2.3",
            "--envelope",
            "AzureCloud",
        ])
        .unwrap()
        .command
        else {
            panic!("not a plan");
        };
        assert_eq!(args.selection.tags, ["A", "B", "C"]);
        let selection = args.selection.to_selection().unwrap();
        assert_eq!(selection.static_rules[0].to_string(), "52.1.2.3/32");
        assert_eq!(args.limits.envelope, ["AzureCloud"]);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["plan", "--service-tags", "f", "--fit", "lossy"][..],
            &["plan", "--service-tags", "f", "--max-rules", "-1"],
            &[
                "plan",
                "--service-tags",
                "f",
                "--max-remove-fraction",
                "1.5",
            ],
            &["plan"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    /// The run settings `apply` gets from `args`, with their origins.
    fn apply_settings(args: &[&str]) -> Settings {
        let all = ["tagfence", "apply"].iter().chain(args);
        let invocation = Invocation::try_from_args(all).unwrap();
        let origins = invocation.origins();
        let Command::Apply(apply) = invocation.cli.command else {
            panic!("not apply");
        };
        apply.run.to_settings(origins)
    }

    #[test]
    fn every_setting_is_an_argument_of_each_run_command() {
        let cli = Cli::command();
        for name in ["apply", "status", "serve"] {
            let command = cli.find_subcommand(name).unwrap();
            for key in Key::ALL {
                assert!(
                    command
                        .get_arguments()
                        .any(|arg| arg.get_id().as_str() == key.name()),
                    "`{name}` has no argument {key:?}: its origin would never be recorded"
                );
            }
        }
    }

    #[test]
    fn a_setting_given_as_a_flag_records_the_flag_as_written() {
        let settings = apply_settings(&["--tag", "X", "--max-rules", "5", "--config", "t.toml"]);
        let origin = |key| settings.origins.get(key).map(ToString::to_string);
        assert_eq!(origin(Key::Tags).as_deref(), Some("--tag"));
        assert_eq!(origin(Key::MaxRules).as_deref(), Some("--max-rules"));
        assert_eq!(origin(Key::ConfigFile).as_deref(), Some("--config"));
        assert_eq!(origin(Key::Concurrency), None);
        assert_eq!(settings.limits.max_rules, Some(5));
        assert_eq!(settings.config_file, Some(PathBuf::from("t.toml")));
    }

    #[test]
    fn every_credential_spelling_names_its_kind() {
        for (flag, kind) in [
            ("auto", CredentialKind::Auto),
            ("managed-identity", CredentialKind::ManagedIdentity),
            ("workload-identity", CredentialKind::WorkloadIdentity),
            ("developer-tools", CredentialKind::DeveloperTools),
        ] {
            let settings = apply_settings(&["--tag", "X", "--credential", flag]);
            assert_eq!(settings.credential, Some(kind), "{flag}");
        }
        assert_eq!(apply_settings(&["--tag", "X"]).credential, None);
    }

    #[test]
    fn arguments_left_at_their_clap_default_are_not_given() {
        let settings = apply_settings(&["--tag", "X"]);
        assert_eq!(
            (settings.source, settings.cloud, settings.concurrency),
            (None, None, None)
        );
        assert_eq!((settings.grace_days, settings.discover_tag), (None, None));
        let settings = apply_settings(&["--concurrency", "8", "--cloud", "china"]);
        assert_eq!(settings.concurrency, Some(8));
        assert_eq!(settings.cloud, Some(Cloud::AzureChina));
    }

    #[test]
    fn run_flags_become_the_settings_config_validates() {
        let vault = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-a";
        let settings = apply_settings(&[
            "--vault",
            vault,
            "--tag",
            "AzureDevOps",
            "--fit",
            "summarize",
            "--slash31",
            "keep",
            "--credential",
            "developer-tools",
            "--cloud",
            "AzureUSGovernment",
            "--prune",
        ]);
        let config = Config::from_settings(&settings).unwrap();
        assert_eq!(config.cloud, Cloud::AzureGovernment);
        assert_eq!(config.credential, CredentialKind::DeveloperTools);
        let target = config.find_target("kv-a").unwrap();
        assert_eq!(target.limits.fit, FitMode::Summarize);
        assert_eq!(target.limits.slash31, Slash31::Keep);
        assert!(target.prune);
        let err = Config::from_settings(&apply_settings(&["--tag", "X", "--grace-days", "91"]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--grace-days (TAGFENCE_GRACE_DAYS): 91 is more than 90 days"
        );
    }

    #[test]
    fn a_private_static_rule_is_refused_with_its_reason() {
        let Command::Plan(args) = parse(&[
            "plan",
            "--service-tags",
            "f",
            "--static-rule",
            "192.168.1.10",
        ])
        .unwrap()
        .command
        else {
            panic!("not a plan");
        };
        let err = args.selection.to_selection().unwrap_err();
        assert_eq!(format!("{err:#}"), "invalid --static-rule: '192.168.1.10' overlaps the reserved range 192.168.0.0/16 (private network, RFC 1918); key vault refuses it");
    }
}
