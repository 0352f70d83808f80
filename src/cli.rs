//! The `tagfence` command line: clap arguments → validated inputs → the core → output and an
//! exit code.
//!
//! The clap argument types live here, and only here. The arguments of each command become a
//! [`Settings`], which records whether each was given as a flag or in the environment, and
//! `config` validates that (into a [`Config`] for `apply`, `status` and `serve`, a
//! [`PlanSettings`] for `plan`). Every value is taken as clap gives it, as text: a value of the
//! wrong type is refused by `config`, which names it as the user wrote it
//! (`TAGFENCE_MAX_RULES=lots`), not by clap, which would name the flag and stop `serve` before
//! it listens.
//!
//! Each command takes only the arguments it uses: `status` the resources (vaults, storage
//! accounts, container registries), the cloud and its endpoints, the state and the log filter;
//! `apply` and `serve` those and what a reconcile needs; `plan` and `tags` what reading a file
//! needs.
//!
//! Exit codes (one scheme for every command, as kubectl and grep use it):
//! - 0: success (and, for `plan`, also when there are changes unless `--exit-code` is given);
//! - 1: `plan --exit-code` found changes;
//! - 2: any error, including clap's usage errors. Errors go to stderr, one line each,
//!   lowercase.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use ipnet::Ipv4Net;

use crate::azure::auth::IdentityEnv;
use crate::config::{
    self, Config, ConfigError, ConfigErrors, DocumentSettings, Key, Origin, Origins, PlanSettings,
    Settings,
};
use crate::core::desired;
use crate::core::kind::Kind;
use crate::core::live::{self, LiveAcl};
use crate::core::plan::{self, PlanInput, TagGuard};
use crate::core::profiles;
use crate::core::render;
use crate::core::service_tags::ServiceTags;
use crate::run::{
    policy, GrantReport, GrantRequest, Requester, RevokeRequest, RevokeTarget, RunRequest, Runner,
};
use crate::server;
use crate::source::{Fetcher, SourceError};

/// Keeps the firewalls of Azure Key Vaults, Storage accounts and Container Registries in step
/// with Azure Service Tags.
#[derive(Debug, Parser)]
#[command(name = "tagfence", version, about, long_about = None)]
#[command(after_help = "Exit codes: 0 success, 1 `plan --exit-code` found changes, 2 error.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan the firewall change for one resource from a Service Tags file (writes nothing).
    Plan(PlanArgs),
    /// Reconcile the configured resources with the current Service Tags through ARM.
    Apply(ApplyArgs),
    /// List the tags of a Service Tags file, or the prefixes of some of them.
    Tags(TagsArgs),
    /// Show what the state remembers: the document applied and each resource's last run.
    Status(StatusArgs),
    /// Run as the Azure Functions custom handler (the host starts this).
    Serve(ServeArgs),
    /// Allow one address on one resource for a while (a just-in-time grant): the rule is
    /// written now and removed at expiry even if nobody revokes it.
    Grant(GrantArgs),
    /// End a grant: its rule is removed unless a person, a tag or another grant wants it.
    Revoke(RevokeArgs),
    /// Remove the rules of every grant that ended (the sweep timer's work).
    Sweep(SweepArgs),
}

#[derive(Debug, Clone, Default, Args)]
pub struct GrantArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// The address to allow: the pipeline agent's public IPv4 address (one single-address rule).
    /// The resource is the one --resource or --vault names.
    #[arg(long, value_name = "ADDRESS")]
    pub ip: String,

    /// How long: 30m, 2h, 1h30m, … [default: 30m, or the resource's --grant-max-ttl if
    /// shorter].
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,

    /// Why, recorded with the grant (one line, at most 200 characters).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Who asks, as recorded [default: GITHUB_ACTOR, BUILD_REQUESTEDFOR or USER from the
    /// environment]. A label only: the command's authority is the ARM role it signs in with.
    #[arg(long, value_name = "LABEL")]
    pub by: Option<String>,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Default, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// The granted address to revoke (with --resource or --vault).
    #[arg(
        long,
        value_name = "ADDRESS",
        conflicts_with = "grant",
        required_unless_present = "grant"
    )]
    pub ip: Option<String>,

    /// The grant's id, as `grant` printed it (the resource may be left out).
    #[arg(long, value_name = "ID")]
    pub grant: Option<String>,

    /// Who asks, as recorded (see `grant --by`).
    #[arg(long, value_name = "LABEL")]
    pub by: Option<String>,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Default, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub run: RunArgs,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Default, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub targets: TargetArgs,

    #[command(flatten)]
    pub cloud: CloudArgs,

    #[command(flatten)]
    pub azure: AzureArgs,

    #[command(flatten)]
    pub state: StateArgs,

    #[command(flatten)]
    pub log: LogArgs,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// `apply`'s other arguments, which `status` does not use: accepted, so that one command
    /// line serves both, but hidden from `status --help`, and a warning names any given as a
    /// flag ([`command`]).
    #[command(flatten)]
    pub unused: ReconcileArgs,
}

/// The settings `status` uses; `apply`'s others are hidden from `status --help`.
const STATUS_KEYS: &[Key] = &[
    Key::Resources,
    Key::Vaults,
    Key::ConfigFile,
    Key::DiscoverSubscriptions,
    Key::DiscoverManagementGroups,
    Key::DiscoverTag,
    Key::Kinds,
    Key::Cloud,
    Key::ArmEndpoint,
    Key::Credential,
    Key::HttpTimeoutSecs,
    Key::HttpMaxRetries,
    Key::HttpRetryDelayMs,
    Key::HttpCallTimeoutSecs,
    Key::StateDir,
    Key::StateUrl,
    Key::StateContainer,
    Key::StateCaFile,
    Key::CaFile,
    Key::WebjobsBlobServiceUri,
    Key::WebjobsAccountName,
    Key::Log,
];

/// The command line: [`Cli`]'s, with the arguments `status` accepts but does not use hidden
/// from its help.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommand("status", |mut status| {
        let unused: Vec<String> = status
            .get_arguments()
            .map(|arg| arg.get_id().to_string())
            .filter(|id| Key::from_name(id).is_some_and(|key| !STATUS_KEYS.contains(&key)))
            .collect();
        for id in unused {
            status = status.mut_arg(id, |arg| arg.hide(true));
        }
        status
    })
}

#[derive(Debug, Clone, Default, Args)]
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

#[derive(Debug, Clone, Default, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// Plan against the live resources but write nothing (`--dry-run=false`, like the variable's
    /// `false` or `0`, turns it off).
    #[arg(long, env = "TAGFENCE_DRY_RUN", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub dry_run: Option<String>,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Args)]
pub struct PlanArgs {
    /// The Service Tags document (download file or Discovery API response; JSON or gzip; `-`
    /// for stdin).
    #[arg(long, value_name = "FILE")]
    pub service_tags: PathBuf,

    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub cloud: CloudArgs,

    #[command(flatten)]
    pub document: DocumentArgs,

    /// The resource as ARM's GET returns it: a key vault or storage account (its
    /// `properties.networkAcls` is used) or a container registry (`properties.networkRuleSet`),
    /// by its `type` (a key vault without one); its kind caps --max-rules. Without it the
    /// resource is taken to be a key vault with no rules.
    #[arg(long, value_name = "FILE")]
    pub live: Option<PathBuf>,

    /// The rules tagfence applied last time, as a JSON array of CIDRs: only these are ever
    /// removed. Without it nothing is removed.
    #[arg(long, value_name = "FILE")]
    pub last_applied: Option<PathBuf>,

    /// Also remove unmanaged rules (rules neither selected nor applied by tagfence).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub prune: Option<String>,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Exit with 1 when the plan has changes (0 when it has none).
    #[arg(long)]
    pub exit_code: bool,
}

#[derive(Debug, Clone, Default, Args)]
pub struct TagsArgs {
    /// The Service Tags document (JSON or gzip; `-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub service_tags: PathBuf,

    /// Show this tag's prefixes instead of the listing (repeatable), or a profile's tags':
    /// `hosted-agents:<geography>` or `azure-devops`.
    #[arg(long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,

    #[command(flatten)]
    pub cloud: CloudArgs,

    #[command(flatten)]
    pub document: DocumentArgs,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
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

    /// A literal rule to allow: your self-hosted agent's public IP, for instance (repeatable).
    /// Must be a public IPv4 address or prefix without host bits.
    #[arg(
        long = "static-rule",
        value_name = "CIDR|IP",
        env = "TAGFENCE_STATIC_RULES",
        value_delimiter = ','
    )]
    pub static_rules: Vec<String>,
}

/// How to fit the rules into the firewall. Each is optional so that a configuration file can
/// give values underneath it; the defaults are those of
/// [`Limits::default`](crate::core::desired::Limits::default), capped by each resource's kind
/// ([`config::kind_limits`]).
#[derive(Debug, Clone, Default, Args)]
pub struct LimitArgs {
    /// The most IPv4 rules a firewall may hold in all, unmanaged rules included: 1 to 1000,
    /// capped at each kind's own limit (key vault 1000, storage account 400, container registry
    /// 100) [default: the kind's limit].
    #[arg(
        long,
        value_name = "N",
        env = "TAGFENCE_MAX_RULES",
        allow_negative_numbers = true
    )]
    pub max_rules: Option<String>,

    /// `exact` refuses a selection that needs more rules than there is room for; `summarize`
    /// finds the fewest extra addresses that fit [default: exact].
    #[arg(long, value_name = "exact|summarize", env = "TAGFENCE_FIT")]
    pub fit: Option<String>,

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
    #[arg(
        long,
        value_name = "N",
        env = "TAGFENCE_MAX_EXTRA_ADDRESSES",
        allow_negative_numbers = true
    )]
    pub max_extra_addresses: Option<String>,

    /// Refuse a plan that removes more than this fraction (0 to 1) of the rules tagfence
    /// manages [default: 0.2].
    #[arg(
        long,
        value_name = "FRACTION",
        env = "TAGFENCE_MAX_REMOVE_FRACTION",
        allow_negative_numbers = true
    )]
    pub max_remove_fraction: Option<String>,

    /// How to write /31 prefixes: as two single-address rules (`split`, safe: whether Key Vault
    /// and Container Registry accept /31 is unverified) or as one rule (`keep`); a storage
    /// account always splits (Storage refuses /31 ranges) [default: split].
    #[arg(long, value_name = "split|keep", env = "TAGFENCE_SLASH31")]
    pub slash31: Option<String>,
}

/// The cloud a run is in, and whose Service Tags documents it reads.
#[derive(Debug, Clone, Default, Args)]
pub struct CloudArgs {
    /// The Azure cloud: AzurePublic, AzureUSGovernment or AzureChina [default: AzurePublic].
    #[arg(long, value_name = "CLOUD", env = "TAGFENCE_CLOUD")]
    pub cloud: Option<String>,
}

/// What a Service Tags document must be to be used.
#[derive(Debug, Clone, Default, Args)]
pub struct DocumentArgs {
    /// Refuse a Service Tags document with fewer tags [default: 1000 Public, 100 Government,
    /// 20 China].
    #[arg(
        long,
        value_name = "N",
        env = "TAGFENCE_MIN_SERVICE_TAGS",
        allow_negative_numbers = true
    )]
    pub min_service_tags: Option<String>,
}

/// The resources a run concerns: listed, from a file, or discovered by their tag.
#[derive(Debug, Clone, Default, Args)]
pub struct TargetArgs {
    /// A resource to manage, by ARM resource id (repeatable): a key vault, storage account or
    /// container registry,
    /// /subscriptions/<GUID>/resourceGroups/<group>/providers/<type>/<name> with <type>
    /// Microsoft.KeyVault/vaults, Microsoft.Storage/storageAccounts or
    /// Microsoft.ContainerRegistry/registries.
    #[arg(
        long = "resource",
        value_name = "RESOURCE_ID",
        env = "TAGFENCE_RESOURCES",
        value_delimiter = ','
    )]
    pub resources: Vec<String>,

    /// The same as --resource (any kind too), by its older name; both lists are managed.
    #[arg(
        long = "vault",
        value_name = "RESOURCE_ID",
        env = "TAGFENCE_VAULTS",
        value_delimiter = ','
    )]
    pub vaults: Vec<String>,

    /// A TOML file with defaults and per-resource settings.
    #[arg(long = "config", value_name = "FILE", env = "TAGFENCE_CONFIG")]
    pub config_file: Option<PathBuf>,

    /// Also manage every resource carrying the discovery tag in this subscription (a GUID;
    /// repeatable), found with Azure Resource Graph at each run.
    #[arg(
        long = "discover-subscription",
        value_name = "ID",
        env = "TAGFENCE_DISCOVER_SUBSCRIPTIONS",
        value_delimiter = ','
    )]
    pub discover_subscriptions: Vec<String>,

    /// Also manage every resource carrying the discovery tag under this management group
    /// (repeatable).
    #[arg(
        long = "discover-management-group",
        value_name = "NAME",
        env = "TAGFENCE_DISCOVER_MANAGEMENT_GROUPS",
        value_delimiter = ','
    )]
    pub discover_management_groups: Vec<String>,

    /// The tag that marks a resource for discovery; its value names the service tags, profiles
    /// and static rules to allow (`default` for the defaults) [default: tagfence].
    #[arg(long, value_name = "NAME", env = "TAGFENCE_DISCOVER_TAG")]
    pub discover_tag: Option<String>,

    /// The kinds of resource discovery and the Event Grid hook consider (repeatable):
    /// key_vault, storage_account or container_registry (any case; - for _). Listed resources
    /// are managed whatever their kind [default: every kind].
    #[arg(
        long = "kind",
        value_name = "KIND",
        env = "TAGFENCE_KINDS",
        value_delimiter = ','
    )]
    pub kinds: Vec<String>,
}

/// How tagfence reaches Azure: ARM, the credential, and how hard to try over HTTP.
#[derive(Debug, Clone, Default, Args)]
pub struct AzureArgs {
    /// Override the ARM endpoint (https; plain http only for a loopback emulator).
    #[arg(long, value_name = "URL", env = "TAGFENCE_ARM_ENDPOINT")]
    pub arm_endpoint: Option<String>,

    /// Which credential to use: `auto` (the managed identity in Functions/App Service, else
    /// workload identity, else developer tools), `managed-identity`, `workload-identity`
    /// (AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID, AZURE_CLIENT_ID) or `developer-tools`
    /// (`az login`, `azd auth login`) [default: auto].
    #[arg(long, value_name = "KIND", env = "TAGFENCE_CREDENTIAL")]
    pub credential: Option<String>,

    /// Timeout of one HTTP attempt, in seconds (at least 1) [default: 30].
    #[arg(
        long,
        value_name = "SECONDS",
        env = "TAGFENCE_HTTP_TIMEOUT_SECS",
        allow_negative_numbers = true
    )]
    pub http_timeout_secs: Option<String>,

    /// Retries of a throttled, failed or timed-out HTTP call [default: 4].
    #[arg(
        long,
        value_name = "N",
        env = "TAGFENCE_HTTP_MAX_RETRIES",
        allow_negative_numbers = true
    )]
    pub http_max_retries: Option<String>,

    /// First retry delay in milliseconds; it doubles each time, and `Retry-After` wins when
    /// longer [default: 800].
    #[arg(
        long,
        value_name = "MS",
        env = "TAGFENCE_HTTP_RETRY_DELAY_MS",
        allow_negative_numbers = true
    )]
    pub http_retry_delay_ms: Option<String>,

    /// Deadline of one HTTP call, retries included, in seconds [default: 120].
    #[arg(
        long,
        value_name = "SECONDS",
        env = "TAGFENCE_HTTP_CALL_TIMEOUT_SECS",
        allow_negative_numbers = true
    )]
    pub http_call_timeout_secs: Option<String>,

    /// PEM certificates to trust for ARM, the Service Tags download and the webhook besides the
    /// system roots (a local emulator's CA, a TLS-inspecting proxy).
    #[arg(long, value_name = "FILE", env = "TAGFENCE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// Where the state lives.
#[derive(Debug, Clone, Default, Args)]
pub struct StateArgs {
    /// Keep state (the rules tagfence added, the documents used, run records) in this
    /// directory. For CLI use; the Functions app keeps it in Blob storage. `apply` creates it;
    /// `status` refuses one that does not exist.
    #[arg(long, value_name = "DIR", env = "TAGFENCE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Keep state in Blob storage at this https endpoint
    /// (`https://<account>.blob.core.windows.net`, optionally followed by `/<container>`; a
    /// path-style emulator endpoint must end with the container),
    /// reached with the same identity as ARM [default: the Function App's own storage,
    /// `AzureWebJobsStorage__blobServiceUri`].
    #[arg(long, value_name = "URL", env = "TAGFENCE_STATE_URL")]
    pub state_url: Option<String>,

    /// The state container when the URL names none [default: tagfence].
    #[arg(long, value_name = "NAME", env = "TAGFENCE_STATE_CONTAINER")]
    pub state_container: Option<String>,

    /// A PEM certificate to trust for the state endpoint besides the system roots (a storage
    /// emulator's test CA, or a TLS-inspecting proxy).
    #[arg(long, value_name = "FILE", env = "TAGFENCE_STATE_CA_FILE")]
    pub state_ca_file: Option<PathBuf>,

    /// The Functions host's identity-based storage settings; the state's default home.
    #[arg(long, hide = true, env = "AzureWebJobsStorage__blobServiceUri")]
    pub webjobs_blob_service_uri: Option<String>,

    #[arg(long, hide = true, env = "AzureWebJobsStorage__accountName")]
    pub webjobs_account_name: Option<String>,
}

/// What tagfence logs.
#[derive(Debug, Clone, Default, Args)]
pub struct LogArgs {
    /// The log filter: `tracing` directives such as `info` or `tagfence=debug,warn`
    /// [default: tagfence=info,warn].
    #[arg(long, value_name = "FILTER", env = "TAGFENCE_LOG")]
    pub log: Option<String>,
}

/// What a reconcile needs besides the vaults and the state (`apply`, `serve`).
#[derive(Debug, Clone, Default, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Also remove rules that neither the selection nor tagfence put there.
    #[arg(long, env = "TAGFENCE_PRUNE", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub prune: Option<String>,

    /// Claim the rules already on a vault that equal desired rules (a firewall a person kept
    /// by hand before tagfence): from then on tagfence removes them when Microsoft retires the
    /// range. Without it such rules stay the person's and are never removed.
    #[arg(long, env = "TAGFENCE_ADOPT_EXISTING", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub adopt_existing: Option<String>,

    /// Initialise the firewall of a resource that has none configured (no networkAcls, or
    /// networkRuleSet for a registry), keeping its current access: defaultAction Allow,
    /// AzureServices bypass where the kind has it, the desired IP rules. Never over a resource
    /// tagfence has seen Deny.
    #[arg(long, env = "TAGFENCE_INIT_FIREWALL", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub init_firewall: Option<String>,

    /// Trust a vault read that lacks most of the rules tagfence added and confirmed (refused
    /// as suspicious otherwise); for when a person really removed them. Needs state.
    #[arg(long, env = "TAGFENCE_ACCEPT_MISSING_RULES", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub accept_missing_rules: Option<String>,

    /// A selected tag allowed to empty or to shrink more than --max-tag-shrink in this run
    /// (repeatable; `*` for every tag). Needs state.
    #[arg(
        long = "allow-tag-shrink",
        value_name = "TAG",
        env = "TAGFENCE_ALLOW_TAG_SHRINK",
        value_delimiter = ','
    )]
    pub allow_tag_shrink: Vec<String>,

    /// Refuse the vaults of a selected tag that lost more than this fraction (0 to 1) of its
    /// IPv4 prefixes since the last applied document; needs state [default: 0.5].
    #[arg(
        long,
        value_name = "FRACTION",
        env = "TAGFENCE_MAX_TAG_SHRINK",
        allow_negative_numbers = true
    )]
    pub max_tag_shrink: Option<String>,

    /// A Microsoft Entra object id or application (client) id, a GUID, allowed to grant its own
    /// IP on the vaults for a while (`POST /api/grant`) (repeatable) [default: none: nobody may
    /// grant over HTTP].
    #[arg(
        long = "grant-principal",
        value_name = "ID",
        env = "TAGFENCE_GRANT_PRINCIPALS",
        value_delimiter = ','
    )]
    pub grant_principals: Vec<String>,

    /// The longest grant, from 1m to 24h, written like 30m, 2h or 1h30m [default: 2h].
    #[arg(long, value_name = "DURATION", env = "TAGFENCE_GRANT_MAX_TTL")]
    pub grant_max_ttl: Option<String>,

    /// Live grants a resource may hold at once, 1 to 1000, capped at its kind's rule limit
    /// [default: 50].
    #[arg(
        long,
        value_name = "N",
        env = "TAGFENCE_GRANT_MAX_PER_VAULT",
        allow_negative_numbers = true
    )]
    pub grant_max_per_vault: Option<String>,

    /// Where the Service Tags come from: `api` (the Discovery API; needs --subscription-id and
    /// --location), `download` (Microsoft's weekly file), a file path, or an https URL
    /// [default: download].
    #[arg(long, value_name = "api|download|FILE|URL", env = "TAGFENCE_SOURCE")]
    pub source: Option<String>,

    /// Subscription for the Discovery API (a GUID).
    #[arg(long, value_name = "ID", env = "TAGFENCE_SUBSCRIPTION_ID")]
    pub subscription_id: Option<String>,

    /// Location for the Discovery API (any region; the answer covers the whole cloud).
    #[arg(long, value_name = "REGION", env = "TAGFENCE_LOCATION")]
    pub location: Option<String>,

    /// Override the download page that links the weekly Service Tags file.
    #[arg(long, value_name = "URL", env = "TAGFENCE_DOWNLOAD_PAGE_URL")]
    pub download_page_url: Option<String>,

    #[command(flatten)]
    pub document: DocumentArgs,

    /// Resources reconciled at the same time in each subscription (at least 1) [default: 8].
    #[arg(
        long,
        value_name = "N",
        env = "TAGFENCE_CONCURRENCY",
        allow_negative_numbers = true
    )]
    pub concurrency: Option<String>,

    /// How a run observes the firewalls: `graph` reads them all in one Resource Graph query
    /// and reads through ARM only the resources that need work; `arm` reads every resource
    /// through ARM [default: graph].
    #[arg(long, value_name = "HOW", env = "TAGFENCE_OBSERVE")]
    pub observe: Option<String>,

    /// For this many days (0 to 90) after a selected tag changes, also keep the ranges of its
    /// previous version (Microsoft publishes new ranges ahead of use; old ones may still be in
    /// use). Needs state [default: 0].
    #[arg(
        long,
        value_name = "DAYS",
        env = "TAGFENCE_GRACE_DAYS",
        allow_negative_numbers = true
    )]
    pub grace_days: Option<String>,

    /// Use a Service Tags document older than the one last applied (normally refused). Needs
    /// state.
    #[arg(long, env = "TAGFENCE_ALLOW_OLDER", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub allow_older: Option<String>,

    /// Post a message to this webhook (Slack- and Teams-compatible `{"text"}`) when a run
    /// changes a resource or fails. https only; the URL is a secret and is never logged.
    #[arg(
        long,
        value_name = "URL",
        env = "TAGFENCE_NOTIFY_URL",
        hide_env_values = true
    )]
    pub notify_url: Option<String>,
}

/// The settings of a run that reconciles vaults (`apply`, and `serve` for the Functions host).
/// Every flag has an environment form, which is how the Functions app settings reach it. Each
/// field's name is its [`Key`]'s, which is how [`Invocation::origins`] finds it.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub targets: TargetArgs,

    #[command(flatten)]
    pub reconcile: ReconcileArgs,

    #[command(flatten)]
    pub cloud: CloudArgs,

    #[command(flatten)]
    pub azure: AzureArgs,

    #[command(flatten)]
    pub state: StateArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Puts each value given as text into `settings` for `config` to parse.
fn put_texts(settings: &mut Settings, texts: &[(Key, &Option<String>)]) {
    for (key, text) in texts {
        if let Some(text) = text {
            settings.texts.set(*key, text.clone());
        }
    }
}

impl SelectionArgs {
    fn put(&self, settings: &mut Settings) {
        settings.selection.tags = self.tags.clone();
        settings.selection.static_rules = self.static_rules.clone();
    }
}

impl LimitArgs {
    fn put(&self, settings: &mut Settings) {
        settings.limits.envelope = self.envelope.clone();
        put_texts(
            settings,
            &[
                (Key::MaxRules, &self.max_rules),
                (Key::Fit, &self.fit),
                (Key::MaxExtraAddresses, &self.max_extra_addresses),
                (Key::MaxRemoveFraction, &self.max_remove_fraction),
                (Key::Slash31, &self.slash31),
            ],
        );
    }
}

impl CloudArgs {
    fn put(&self, settings: &mut Settings) {
        put_texts(settings, &[(Key::Cloud, &self.cloud)]);
    }
}

impl DocumentArgs {
    fn put(&self, settings: &mut Settings) {
        put_texts(settings, &[(Key::MinServiceTags, &self.min_service_tags)]);
    }
}

impl TargetArgs {
    fn put(&self, settings: &mut Settings) {
        settings.resources = self.resources.clone();
        settings.vaults = self.vaults.clone();
        settings.config_file = self.config_file.clone();
        settings.discover_subscriptions = self.discover_subscriptions.clone();
        settings.discover_management_groups = self.discover_management_groups.clone();
        settings.discover_tag = self.discover_tag.clone();
        settings.kinds = self.kinds.clone();
    }
}

impl AzureArgs {
    fn put(&self, settings: &mut Settings) {
        settings.arm_endpoint = self.arm_endpoint.clone();
        settings.ca_file = self.ca_file.clone();
        put_texts(
            settings,
            &[
                (Key::Credential, &self.credential),
                (Key::HttpTimeoutSecs, &self.http_timeout_secs),
                (Key::HttpMaxRetries, &self.http_max_retries),
                (Key::HttpRetryDelayMs, &self.http_retry_delay_ms),
                (Key::HttpCallTimeoutSecs, &self.http_call_timeout_secs),
            ],
        );
    }
}

impl StateArgs {
    fn put(&self, settings: &mut Settings) {
        settings.state_dir = self.state_dir.clone();
        settings.state_url = self.state_url.clone();
        settings.state_container = self.state_container.clone();
        settings.state_ca_file = self.state_ca_file.clone();
        settings.webjobs_blob_service_uri = self.webjobs_blob_service_uri.clone();
        settings.webjobs_account_name = self.webjobs_account_name.clone();
    }
}

impl ReconcileArgs {
    fn put(&self, settings: &mut Settings) {
        self.selection.put(settings);
        self.limits.put(settings);
        self.document.put(settings);
        settings.allow_tag_shrink = self.allow_tag_shrink.clone();
        settings.grant_principals = self.grant_principals.clone();
        settings.source = self.source.clone();
        settings.subscription_id = self.subscription_id.clone();
        settings.location = self.location.clone();
        settings.download_page_url = self.download_page_url.clone();
        settings.notify_url = self.notify_url.clone();
        put_texts(
            settings,
            &[
                (Key::Prune, &self.prune),
                (Key::AdoptExisting, &self.adopt_existing),
                (Key::InitFirewall, &self.init_firewall),
                (Key::AcceptMissingRules, &self.accept_missing_rules),
                (Key::MaxTagShrink, &self.max_tag_shrink),
                (Key::GrantMaxTtl, &self.grant_max_ttl),
                (Key::GrantMaxPerVault, &self.grant_max_per_vault),
                (Key::Concurrency, &self.concurrency),
                (Key::Observe, &self.observe),
                (Key::GraceDays, &self.grace_days),
                (Key::AllowOlder, &self.allow_older),
            ],
        );
    }
}

impl RunArgs {
    /// The settings these arguments give. `origins` ([`Invocation::origins`]) says which ones
    /// the user gave and where; a hand-built `RunArgs` keeps every value it holds.
    pub fn to_settings(&self, origins: Origins) -> Settings {
        let mut settings = Settings {
            log: self.log.log.clone(),
            origins,
            ..Settings::default()
        };
        self.targets.put(&mut settings);
        self.reconcile.put(&mut settings);
        self.cloud.put(&mut settings);
        self.azure.put(&mut settings);
        self.state.put(&mut settings);
        settings
    }
}

impl StatusArgs {
    /// The settings `status` uses.
    pub fn to_settings(&self, origins: Origins) -> Settings {
        let mut settings = Settings {
            log: self.log.log.clone(),
            origins,
            ..Settings::default()
        };
        self.targets.put(&mut settings);
        self.cloud.put(&mut settings);
        self.azure.put(&mut settings);
        self.state.put(&mut settings);
        settings
    }
}

impl PlanArgs {
    /// The settings `plan` uses: a selection, its limits, `prune` and the document's.
    pub fn to_settings(&self, origins: Origins) -> Settings {
        let mut settings = Settings {
            origins,
            ..Settings::default()
        };
        self.selection.put(&mut settings);
        self.limits.put(&mut settings);
        self.cloud.put(&mut settings);
        self.document.put(&mut settings);
        put_texts(&mut settings, &[(Key::Prune, &self.prune)]);
        settings
    }
}

impl TagsArgs {
    /// The settings `tags` uses: what the document must be.
    pub fn to_settings(&self, origins: Origins) -> Settings {
        let mut settings = Settings {
            origins,
            ..Settings::default()
        };
        self.cloud.put(&mut settings);
        self.document.put(&mut settings);
        settings
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
        Invocation::from_matches(command().get_matches()).unwrap_or_else(|err| err.exit())
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
        Invocation::from_matches(command().try_get_matches_from(args)?)
    }

    fn from_matches(matches: ArgMatches) -> Result<Invocation, clap::Error> {
        // Not `from_arg_matches_mut`: it takes the values out, and their sources with them.
        let cli = Cli::from_arg_matches(&matches).map_err(|err| err.format(&mut command()))?;
        Ok(Invocation { cli, matches })
    }

    /// Where the user gave each setting of the subcommand.
    pub fn origins(&self) -> Origins {
        let mut origins = Origins::default();
        for key in Key::ALL {
            if let Some(origin) = self.origin_of(key.name()) {
                origins.record(*key, origin);
            }
        }
        origins
    }

    /// Where clap found the subcommand's argument `id`: on the command line or in the
    /// environment; `None` when it took its default, or the subcommand has no such argument.
    fn origin_of(&self, id: &str) -> Option<Origin> {
        let (name, matches) = self.matches.subcommand()?;
        let command = command();
        let arg = command
            .find_subcommand(name)?
            .get_arguments()
            .find(|arg| arg.get_id().as_str() == id)?;
        // Only ids of this command may be asked about: clap panics on others in debug builds.
        match matches.value_source(id)? {
            ValueSource::CommandLine => {
                arg.get_long().map(|long| Origin::Flag(format!("--{long}")))
            }
            ValueSource::EnvVariable => arg
                .get_env()
                .map(|env| Origin::Env(env.to_string_lossy().into_owned())),
            _ => None,
        }
    }
}

/// Runs a parsed command line.
///
/// # Errors
/// Any failure, with context naming what was being done; `main` prints it and exits 2.
pub fn run(invocation: Invocation) -> Result<ExitCode> {
    let origins = invocation.origins();
    let dry_run = invocation.origin_of("dry_run");
    match invocation.cli.command {
        Command::Plan(args) => run_plan(&args, origins),
        Command::Apply(args) => run_apply(&args, origins, dry_run),
        Command::Tags(args) => run_tags(&args, origins),
        Command::Status(args) => run_status(&args, origins),
        Command::Serve(args) => run_serve(args, origins),
        Command::Grant(args) => run_grant(&args, origins),
        Command::Revoke(args) => run_revoke(&args, origins),
        Command::Sweep(args) => run_sweep(&args, origins),
    }
}

/// The configuration problems as the error of the command: `main` prints one line each.
fn configuration<T>(result: Result<T, ConfigErrors>) -> Result<T> {
    result.map_err(|problems| anyhow::Error::new(problems).context("reading the configuration"))
}

/// The log filter given, or tagfence's default (`config` reports one it cannot read).
fn log_filter(given: Option<&str>) -> tracing_subscriber::EnvFilter {
    given
        .and_then(|text| {
            tracing_subscriber::EnvFilter::builder()
                .parse(text.trim())
                .ok()
        })
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("tagfence=info,warn"))
}

/// Logs for the Functions host: JSON lines on stdout (the host logs stdout at Information and
/// every stderr line as an Error), each carrying the invocation's span fields.
pub fn init_server_logging(filter: Option<&str>) {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(log_filter(filter))
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(io::stdout)
        .try_init();
}

/// `serve` never stops on its configuration: with problems, it listens all the same, logs
/// them once as one error, and every invocation fails with them (kind `not_configured`) until
/// the app settings are fixed; `GET /api/status` lists them.
fn run_serve(args: ServeArgs, origins: Origins) -> Result<ExitCode> {
    init_server_logging(args.run.log.log.as_deref());
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
        let config = Config::from_settings(&args.run.to_settings(origins));
        if let Err(problems) = &config {
            tracing::error!(
                count = problems.len(),
                problems = ?problems.lines(),
                "invalid configuration; every invocation fails until the app settings are fixed"
            );
        }
        let state = server::AppState::new(config, IdentityEnv::from_process(), schedule);
        tracing::info!(port, "tagfence serving");
        server::serve(listener, state, server::shutdown_signal()).await.context("serving")?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Progress logs for commands that talk to Azure: to stderr, so that stdout carries only the
/// report; `--log` (`TAGFENCE_LOG`) filters (default `tagfence=info,warn`).
pub fn init_cli_logging(filter: Option<&str>) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter(filter))
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

/// `--dry-run` (`TAGFENCE_DRY_RUN`): on, off, or a problem naming it as given.
fn dry_run(args: &ApplyArgs, origin: Option<Origin>) -> Result<bool, ConfigError> {
    let Some(text) = &args.dry_run else {
        return Ok(false);
    };
    config::parse_switch(text).ok_or_else(|| ConfigError::Invalid {
        setting: match origin {
            Some(Origin::Env(name)) => format!("{name}={text}"),
            _ => format!("--dry-run={text}"),
        },
        reason: "expected true or false (or 1 or 0)".to_owned(),
    })
}

fn run_apply(args: &ApplyArgs, origins: Origins, dry_origin: Option<Origin>) -> Result<ExitCode> {
    init_cli_logging(args.run.log.log.as_deref());
    let config = Config::from_settings(&args.run.to_settings(origins));
    let (config, dry_run) = configuration(match (config, dry_run(args, dry_origin)) {
        (Ok(config), Ok(dry_run)) => Ok((config, dry_run)),
        (config, dry_run) => {
            let mut problems = config.err().unwrap_or_default();
            if let Err(problem) = dry_run {
                problems.push(problem);
            }
            Err(problems)
        }
    })?;
    let runtime = runtime()?;
    let report = runtime.block_on(async {
        let runner = Runner::new(config, &IdentityEnv::from_process())?;
        runner
            .run(&RunRequest {
                dry_run,
                ..RunRequest::default()
            })
            .await
    })?;
    print_output(
        args.output,
        || report.to_text(),
        || report.to_json(),
        "the report",
    )?;
    // The exit code of a refused or failed vault is the error policy's, as the HTTP status is.
    Ok(match report.error_kind() {
        Some(kind) => ExitCode::from(policy::disposition(kind).exit_code),
        None => ExitCode::SUCCESS,
    })
}

fn run_status(args: &StatusArgs, origins: Origins) -> Result<ExitCode> {
    init_cli_logging(args.log.log.as_deref());
    let unused: Vec<String> = Key::ALL
        .iter()
        .filter(|key| !STATUS_KEYS.contains(key))
        .filter_map(|key| match origins.get(*key) {
            Some(Origin::Flag(flag)) => Some(flag.clone()),
            _ => None,
        })
        .collect();
    if !unused.is_empty() {
        eprintln!(
            "tagfence: warning: status does not use {}; ignored",
            unused.join(", ")
        );
    }
    let config = configuration(Config::for_status(&args.to_settings(origins)))?;
    let runtime = runtime()?;
    let status = runtime.block_on(async {
        let runner = Runner::new(config, &IdentityEnv::from_process())?;
        runner.status().await
    })?;
    print_output(
        args.output,
        || status.to_text(),
        || status.to_json(),
        "the status",
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The one resource a grant or revoke names: the `--resource` or `--vault` given on the command
/// line, or else the only one TAGFENCE_RESOURCES and TAGFENCE_VAULTS list together.
fn one_target(run: &RunArgs, origins: &Origins, command: &str) -> Result<Option<String>> {
    let lists = [
        (Key::Resources, &run.targets.resources),
        (Key::Vaults, &run.targets.vaults),
    ];
    let flag = |key| matches!(origins.get(key), Some(Origin::Flag(_)));
    let any_flag = lists.iter().any(|(key, _)| flag(*key));
    let given: Vec<&String> = lists
        .iter()
        .filter(|(key, _)| !any_flag || flag(*key))
        .flat_map(|(_, values)| values.iter())
        .filter(|value| !value.trim().is_empty())
        .collect();
    match given.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).clone())),
        many => bail!(
            "{command} names one resource; got {} (give exactly one --resource <RESOURCE_ID> or --vault <RESOURCE_ID>)",
            many.len()
        ),
    }
}

/// Who asks, as a grant records it: `--by`, else the pipeline's or the user's name.
fn requester(by: Option<&String>) -> Requester {
    let label = by.cloned().or_else(|| {
        ["GITHUB_ACTOR", "BUILD_REQUESTEDFOR", "USER", "USERNAME"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    });
    Requester::Cli {
        label: label.unwrap_or_else(|| "unknown".to_owned()),
    }
}

/// The address a grant or revoke names, or an error saying what is accepted.
fn address(text: &str) -> Result<std::net::IpAddr> {
    text.trim().parse().map_err(|_| {
        anyhow::anyhow!("--ip '{text}' is not an IP address; give the agent's public IPv4 address, e.g. 20.37.158.9")
    })
}

/// A grant or revoke's report on stdout; its exit code is the error policy's when the vault's
/// reconcile did not end as asked.
fn grant_outcome(report: &GrantReport, output: OutputFormat) -> Result<ExitCode> {
    print_output(
        output,
        || report.to_text(),
        || report.to_json(),
        "the report",
    )?;
    Ok(
        match report.vault.as_ref().and_then(|v| v.outcome.error_kind()) {
            Some(kind) => ExitCode::from(policy::disposition(kind).exit_code),
            None => ExitCode::SUCCESS,
        },
    )
}

fn run_grant(args: &GrantArgs, origins: Origins) -> Result<ExitCode> {
    init_cli_logging(args.run.log.log.as_deref());
    let vault = one_target(&args.run, &origins, "grant")?.context(
        "grant needs the resource: give --resource <RESOURCE_ID> (or --vault <RESOURCE_ID>)",
    )?;
    let address = address(&args.ip)?;
    let ttl = args
        .ttl
        .as_deref()
        .map(crate::core::grant::parse_duration)
        .transpose()
        .map_err(|err| anyhow::anyhow!("--ttl: {err}"))?;
    let config = configuration(Config::for_grants(&args.run.to_settings(origins)))?;
    let report = runtime()?.block_on(async {
        let runner = Runner::new(config, &IdentityEnv::from_process())?;
        runner
            .grant(&GrantRequest {
                vault,
                address,
                ttl,
                reason: args.reason.clone(),
                requester: requester(args.by.as_ref()),
                trigger: "cli",
            })
            .await
    })?;
    grant_outcome(&report, args.output)
}

fn run_revoke(args: &RevokeArgs, origins: Origins) -> Result<ExitCode> {
    init_cli_logging(args.run.log.log.as_deref());
    let vault = one_target(&args.run, &origins, "revoke")?;
    let target = match (&args.grant, &args.ip) {
        (Some(id), _) => RevokeTarget::Id(id.clone()),
        (None, Some(ip)) => {
            if vault.is_none() {
                bail!("revoke --ip needs the resource: give --resource <RESOURCE_ID> or --vault <RESOURCE_ID> (or revoke --grant <ID>)");
            }
            RevokeTarget::Address(address(ip)?)
        }
        (None, None) => {
            bail!("revoke needs --ip <ADDRESS> (with --resource or --vault) or --grant <ID>")
        }
    };
    let config = configuration(Config::for_grants(&args.run.to_settings(origins)))?;
    let report = runtime()?.block_on(async {
        let runner = Runner::new(config, &IdentityEnv::from_process())?;
        runner
            .revoke(&RevokeRequest {
                vault,
                target,
                requester: requester(args.by.as_ref()),
                trigger: "cli",
            })
            .await
    })?;
    grant_outcome(&report, args.output)
}

fn run_sweep(args: &SweepArgs, origins: Origins) -> Result<ExitCode> {
    init_cli_logging(args.run.log.log.as_deref());
    let config = configuration(Config::for_grants(&args.run.to_settings(origins)))?;
    let report = runtime()?.block_on(async {
        let runner = Runner::new(config, &IdentityEnv::from_process())?;
        runner.sweep("cli").await
    })?;
    print_output(
        args.output,
        || report.to_text(),
        || report.to_json(),
        "the report",
    )?;
    // Grants still on their vault are the sweep's failure: the next one tries again.
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(policy::disposition(crate::reconcile::ErrorKind::Unavailable).exit_code)
    })
}

/// Writes a command's result to stdout: `text` for people, or `json` (pretty, one trailing
/// newline) with `--output json`; `what` names it in an encoding error.
fn print_output<J: serde::Serialize>(
    output: OutputFormat,
    text: impl FnOnce() -> String,
    json: impl FnOnce() -> J,
    what: &str,
) -> Result<()> {
    let text = match output {
        OutputFormat::Text => text(),
        OutputFormat::Json => {
            let mut json = serde_json::to_string_pretty(&json())
                .with_context(|| format!("encoding {what}"))?;
            json.push('\n');
            json
        }
    };
    write_stdout(&text)
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
/// document is still checked as JSON). Refused as a fetched one would be: a document of
/// another cloud, or one too small to be complete.
fn load_service_tags(
    path: &Path,
    only: Option<&[String]>,
    document: &DocumentSettings,
) -> Result<ServiceTags> {
    let context = || format!("reading service tags from {}", path.display());
    let bytes = read_input(path).with_context(context)?;
    let tags = match only {
        Some(names) => ServiceTags::parse_only(&bytes, names),
        None => ServiceTags::parse(&bytes),
    }
    .with_context(context)?;
    let fetcher = Fetcher {
        cloud: document.cloud,
        min_tags: document.min_service_tags,
        arm: None,
        http: Default::default(),
    };
    let checked = fetcher.check(&tags, &path.display().to_string());
    let hint = match &checked {
        Err(SourceError::WrongCloud { found, .. }) => format!(
            "; give {} {} to read it",
            Key::Cloud.flag(),
            config::cloud_name(*found)
        ),
        Err(SourceError::TooSmall { tags, .. }) => format!(
            "; give {} {tags} to read it anyway",
            Key::MinServiceTags.flag()
        ),
        _ => String::new(),
    };
    checked
        .map_err(|err| anyhow::anyhow!("{err}{hint}"))
        .context("checking the service tags")?;
    Ok(tags)
}

/// The largest resource document `plan --live` reads: a vault of 1,000 rules is about 50 KB.
const MAX_VAULT_BYTES: u64 = 16 << 20;

/// The shape `--live` expects, for the message that refuses another: where each kind keeps its
/// rule set ([`Kind::rule_set_property`]; a test holds this to it).
const VAULT_SHAPE: &str = r#"one resource object as ARM's GET returns it: {"name": …, "type": …, "properties": {"networkAcls": {"defaultAction": …, "ipRules": [{"value": "52.1.2.3/32"}], …}}}, the rule set being properties.networkAcls for a key vault or storage account and properties.networkRuleSet for a container registry"#;

/// The kind of a `--live` document: its `type`'s, a key vault when it has none.
///
/// # Errors
/// A `type` that is no kind tagfence manages, naming the ones it does.
fn live_kind(doc: &serde_json::Value) -> Result<Kind> {
    let Some(given) = doc.get("type").and_then(serde_json::Value::as_str) else {
        return Ok(Kind::KeyVault);
    };
    Kind::from_resource_type(given).with_context(|| {
        format!(
            "its type is {given}, which tagfence does not manage; expected one of {}",
            crate::azure::supported_types()
        )
    })
}

fn load_live(path: &Path) -> Result<LiveAcl> {
    let context = || format!("reading the resource from {}", path.display());
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
            "{}: it is larger than {} MiB, which no resource document is",
            context(),
            MAX_VAULT_BYTES >> 20
        );
    }
    let shape = || format!("{} (expected {VAULT_SHAPE})", context());
    let doc = live::parse_document(&bytes).with_context(shape)?;
    let kind = live_kind(&doc).with_context(shape)?;
    LiveAcl::read(kind, &doc).with_context(shape)
}

/// Reads `--last-applied`: a JSON array of the CIDRs tagfence applied. A problem is named as
/// one of that file's entries, not as a rule of the vault.
fn load_last_applied(path: &Path) -> Result<Vec<Ipv4Net>> {
    let context = || format!("reading the last-applied rules from {}", path.display());
    let bytes = read_input(path).with_context(context)?;
    let shape =
        r#"expected a JSON array of CIDR strings, such as ["52.1.2.3/32", "20.37.158.0/23"]"#;
    let values: Vec<String> = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| match item.as_str() {
                Some(text) => Ok(text.to_owned()),
                None => Err(anyhow::anyhow!(
                    "entry {} is {item}, not a string; {shape}",
                    index + 1
                )),
            })
            .collect::<Result<_>>()
            .with_context(context)?,
        Ok(other) => {
            let what = match other {
                serde_json::Value::Object(_) => "an object (a resource document goes to --live)",
                _ => "not an array",
            };
            return Err(anyhow::anyhow!("the document is {what}; {shape}")).with_context(context);
        }
        Err(err) => return Err(anyhow::anyhow!("not JSON ({err}); {shape}")).with_context(context),
    };
    live::normalise_rules(&values)
        .map_err(|(value, reason)| {
            let index = values.iter().position(|v| *v == value).map_or(0, |i| i + 1);
            anyhow::anyhow!("entry {index} of this file is not a rule tagfence applies: {reason}")
        })
        .with_context(context)
}

fn run_plan(args: &PlanArgs, origins: Origins) -> Result<ExitCode> {
    let settings = configuration(PlanSettings::from_settings(&args.to_settings(origins)))?;
    let PlanSettings {
        selection,
        limits,
        prune,
        document,
    } = settings;
    // The plan needs the selected and envelope tags only.
    let needed: Vec<String> = selection
        .tags
        .iter()
        .chain(&limits.envelope)
        .cloned()
        .collect();
    let tags = load_service_tags(&args.service_tags, Some(&needed), &document)?;
    let live = match &args.live {
        Some(path) => load_live(path)?,
        None => LiveAcl::empty(),
    };
    // The resource's kind caps the limits: its own rule limit, its way with /31s.
    let limits = config::kind_limits(live.kind, &limits);
    let last_applied = args
        .last_applied
        .as_deref()
        .map(load_last_applied)
        .transpose()?;
    warn_about_live(args, &live);
    let mut plan = plan::plan_vault(PlanInput {
        tags: &tags,
        selection: &selection,
        limits: &limits,
        live: &live.ip_rules,
        unreadable: live.unreadable.len(),
        owned: last_applied.as_deref(),
        prune,
        adopt: false,
        recorded: None,
        tag_guard: TagGuard::default(),
        grants: Default::default(),
    })
    .context("planning the firewall change")?;
    plan.vault = live.vault_name.clone();
    plan.kind = live.kind;
    warn_about_region(&live, &plan);

    print_output(
        args.output,
        || render::plan_text(&plan),
        || render::plan_json(&plan),
        "the plan",
    )?;
    Ok(if args.exit_code && plan.has_changes() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The warnings about a `--live` resource that `apply` would refuse or that holds rules
/// tagfence cannot read.
fn warn_about_live(args: &PlanArgs, live: &LiveAcl) {
    let noun = live.kind.noun();
    if live.public_access_disabled() {
        eprintln!("tagfence: warning: the {noun}'s publicNetworkAccess is Disabled, so its IP rules have no effect");
    }
    if let Some(why) = &live.unsupported {
        eprintln!("tagfence: warning: the {noun} cannot take IP rules: {why}; apply refuses it");
    }
    if args.live.is_some() && !live.is_whole() {
        let missing: Vec<String> = live.missing.iter().map(|f| f.path(live.kind)).collect();
        eprintln!("tagfence: warning: the {noun} lacks {} (missing, null or not of its type): apply refuses to write from such a read", missing.join(" and "));
    }
    for rule in &live.unreadable {
        eprintln!(
            "tagfence: warning: the {noun} holds IP rule '{}', which tagfence cannot read ({}); it is kept as it is and counts against the limit",
            rule.value, rule.reason
        );
    }
}

/// The warning about selected tags in a `--live` resource's own region, on a kind whose traffic
/// from there arrives from private addresses (Storage), as `apply` reports it.
fn warn_about_region(live: &LiveAcl, plan: &plan::Plan) {
    let same = plan::same_region_tags(live.kind, live.location.as_deref(), &plan.desired.tags);
    if same.is_empty() {
        return;
    }
    let names: Vec<&str> = same.iter().map(|t| t.name.as_str()).collect();
    eprintln!(
        "tagfence: warning: {} in {}, the {}'s own region: requests from there reach it from private addresses, which IP rules cannot allow (use a virtual network rule or a private endpoint for them)",
        if names.len() == 1 {
            format!("selected tag {} is", names[0])
        } else {
            format!("selected tags {} are", names.join(", "))
        },
        live.location.as_deref().unwrap_or_default(),
        live.kind.noun(),
    );
}

/// `tags`: the listing, or the prefixes of the named tags; a profile names its tags.
fn run_tags(args: &TagsArgs, origins: Origins) -> Result<ExitCode> {
    let document = configuration(DocumentSettings::from_settings(&args.to_settings(origins)))?;
    let names: Vec<String> = args
        .tags
        .iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    let names = profiles::expand(&names).context("reading --tag")?;
    let doc = load_service_tags(&args.service_tags, None, &document)?;
    let mut detail = Vec::with_capacity(names.len());
    for name in &names {
        let Some(tag) = doc.find(name) else {
            let suggestions = desired::close_names(&doc, name);
            bail!(
                "{}",
                desired::DesireError::UnknownTag {
                    name: name.clone(),
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
    use crate::azure::auth::CredentialKind;
    use crate::core::desired::{FitMode, Limits};
    use crate::core::fit::Slash31;
    use crate::core::service_tags::Cloud;
    use clap::CommandFactory;

    const VAULT: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-a";

    #[test]
    fn the_command_line_is_well_formed() {
        command().debug_assert();
    }

    fn invocation(args: &[&str]) -> Result<Invocation, clap::Error> {
        Invocation::try_from_args(std::iter::once("tagfence").chain(args.iter().copied()))
    }

    /// The settings `plan` gets from `args`, checked.
    fn plan_settings(args: &[&str]) -> Result<PlanSettings, ConfigErrors> {
        let all: Vec<&str> = ["plan", "--service-tags", "f.json"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let invocation = invocation(&all).unwrap();
        let origins = invocation.origins();
        let Command::Plan(plan) = invocation.cli.command else {
            panic!("not a plan");
        };
        PlanSettings::from_settings(&plan.to_settings(origins))
    }

    /// The run settings `apply` gets from `args`, with their origins.
    fn apply_settings(args: &[&str]) -> Settings {
        let all: Vec<&str> = std::iter::once("apply")
            .chain(args.iter().copied())
            .collect();
        let invocation = invocation(&all).unwrap();
        let origins = invocation.origins();
        let Command::Apply(apply) = invocation.cli.command else {
            panic!("not apply");
        };
        apply.run.to_settings(origins)
    }

    fn argument<'a>(command: &'a clap::Command, id: &str) -> Option<&'a clap::Arg> {
        command
            .get_arguments()
            .find(|arg| arg.get_id().as_str() == id)
    }

    #[test]
    fn every_setting_is_an_argument_of_apply_and_serve_with_its_flag_and_variable() {
        let cli = Cli::command();
        for name in ["apply", "serve"] {
            let command = cli.find_subcommand(name).unwrap();
            for key in Key::ALL {
                let arg = argument(command, key.name()).unwrap_or_else(|| {
                    panic!("`{name}` has no argument {key:?}: its origin would never be recorded")
                });
                assert_eq!(
                    arg.get_long().map(|l| format!("--{l}")).as_deref(),
                    Some(key.flag()),
                    "{key:?}"
                );
                assert_eq!(
                    arg.get_env().and_then(|e| e.to_str()),
                    Some(key.env()),
                    "{key:?}"
                );
            }
        }
    }

    #[test]
    fn status_shows_only_the_options_it_uses_and_warns_of_others_given() {
        let cli = command();
        let status = cli.find_subcommand("status").unwrap();
        let mut shown: Vec<&str> = status
            .get_arguments()
            .filter(|arg| !arg.is_hide_set())
            .map(|arg| arg.get_id().as_str())
            .collect();
        shown.sort_unstable();
        let mut expected: Vec<&str> = STATUS_KEYS
            .iter()
            .filter(|key| !key.name().starts_with("webjobs"))
            .map(|key| key.name())
            .chain(["output"])
            .collect();
        expected.sort_unstable();
        assert_eq!(shown, expected);
        let help = status.clone().render_long_help().to_string();
        for absent in [
            "--tag",
            "--max-rules",
            "--prune",
            "--source",
            "--grace-days",
            "--notify-url",
        ] {
            assert!(!help.contains(absent), "status --help shows {absent}");
        }
        // One command line serves apply and status.
        let invocation =
            invocation(&["status", "--vault", VAULT, "--tag", "X", "--state-dir", "."]).unwrap();
        let origins = invocation.origins();
        let Command::Status(args) = invocation.cli.command else {
            panic!("not status");
        };
        assert_eq!(origins.get(Key::Tags), Some(&Origin::Flag("--tag".into())));
        assert!(args.to_settings(origins).selection.tags.is_empty());
    }

    #[test]
    fn plan_and_tags_take_the_cloud_and_the_fewest_tags() {
        let cli = Cli::command();
        for name in ["plan", "tags"] {
            let command = cli.find_subcommand(name).unwrap();
            for id in ["cloud", "min_service_tags"] {
                assert!(argument(command, id).is_some(), "`{name}` has no {id}");
            }
        }
    }

    #[test]
    fn plan_flags_have_their_documented_defaults() {
        let settings = plan_settings(&["--tag", "AzureDevOps"]).unwrap();
        assert_eq!(settings.limits, Limits::default());
        assert_eq!(settings.document.cloud, Cloud::Public);
        assert_eq!(settings.document.min_service_tags, 1000);
        assert!(!settings.prune);
    }

    #[test]
    fn repeatable_and_comma_separated_flags_collect_and_profiles_expand() {
        let settings = plan_settings(&[
            "--tag",
            "A,B",
            "--tag",
            "C",
            "--tag",
            "azure-devops",
            "--static-rule",
            "52.1.2.3",
            "--envelope",
            "AzureCloud",
            "--fit",
            "summarize",
        ])
        .unwrap();
        assert_eq!(settings.selection.tags, ["A", "B", "C", "AzureDevOps"]);
        assert_eq!(
            settings.selection.static_rules[0].to_string(),
            "52.1.2.3/32"
        );
        assert_eq!(settings.limits.envelope, ["AzureCloud"]);
    }

    #[test]
    fn wrong_values_are_configuration_problems_named_as_given() {
        let cases: &[(&[&str], &str)] = &[
            (&["--fit", "lossy"], "--fit lossy: expected exact or summarize"),
            (&["--max-rules", "-1"], "--max-rules -1: expected a whole number from 1 to 1000 (a firewall's IP rules; each kind's own limit caps it: key vault 1000, storage account 400, container registry 100)"),
            (&["--max-rules", "2000"], "--max-rules 2000: expected a whole number from 1 to 1000 (a firewall's IP rules; each kind's own limit caps it: key vault 1000, storage account 400, container registry 100)"),
            (&["--max-remove-fraction", "1.5"], "--max-remove-fraction 1.5: expected a fraction from 0 to 1 (0.2 is 20%)"),
            (&["--prune=yes"], "--prune=yes: expected true or false (or 1 or 0)"),
            (&["--envelope", "AzureCloud"], "--envelope AzureCloud: only used by a summarized fit, and the fit is exact by default; give --fit summarize too, or leave it out"),
            (&["--min-service-tags", "0"], "--min-service-tags 0: expected a whole number of tags, at least 1"),
            (&["--static-rule", "192.168.1.10"], "--static-rule 192.168.1.10: overlaps the reserved range 192.168.0.0/16 (private network, RFC 1918), which Key Vault and Storage refuse; expected a public address"),
        ];
        for (args, expected) in cases {
            let problems = plan_settings(args).unwrap_err();
            assert_eq!(problems.lines(), [*expected], "{args:?}");
        }
    }

    #[test]
    fn only_missing_arguments_are_usage_errors() {
        let err = invocation(&["plan"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn switches_turn_on_bare_and_take_true_false_1_0() {
        assert_eq!(
            apply_settings(&["--prune"]).texts.get(Key::Prune),
            Some("true")
        );
        assert_eq!(
            apply_settings(&["--prune=false"]).texts.get(Key::Prune),
            Some("false")
        );
        assert_eq!(apply_settings(&[]).texts.get(Key::Prune), None);
        let Command::Apply(args) = invocation(&["apply", "--dry-run=0"]).unwrap().cli.command
        else {
            panic!("not apply");
        };
        assert_eq!(dry_run(&args, None), Ok(false));
        let Command::Apply(args) = invocation(&["apply", "--dry-run=maybe"])
            .unwrap()
            .cli
            .command
        else {
            panic!("not apply");
        };
        assert_eq!(
            dry_run(&args, Some(Origin::Env("TAGFENCE_DRY_RUN".into())))
                .unwrap_err()
                .to_string(),
            "TAGFENCE_DRY_RUN=maybe: expected true or false (or 1 or 0)"
        );
    }

    #[test]
    fn a_setting_given_as_a_flag_records_the_flag_as_written() {
        let settings = apply_settings(&["--tag", "X", "--max-rules", "5", "--config", "t.toml"]);
        let origin = |key| settings.origins.get(key).map(ToString::to_string);
        assert_eq!(origin(Key::Tags).as_deref(), Some("--tag"));
        assert_eq!(origin(Key::MaxRules).as_deref(), Some("--max-rules"));
        assert_eq!(origin(Key::ConfigFile).as_deref(), Some("--config"));
        assert_eq!(origin(Key::Concurrency), None);
        assert_eq!(settings.texts.get(Key::MaxRules), Some("5"));
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
            let settings = apply_settings(&["--vault", VAULT, "--tag", "X", "--credential", flag]);
            assert_eq!(
                Config::from_settings(&settings).unwrap().credential,
                kind,
                "{flag}"
            );
        }
    }

    #[test]
    fn arguments_not_given_are_left_for_config_to_default() {
        let settings = apply_settings(&["--tag", "X"]);
        assert_eq!((settings.source, settings.discover_tag), (None, None));
        for key in [
            Key::Cloud,
            Key::Concurrency,
            Key::GraceDays,
            Key::Credential,
        ] {
            assert_eq!(settings.texts.get(key), None, "{key:?}");
        }
        let settings = apply_settings(&["--concurrency", "8", "--cloud", "china"]);
        assert_eq!(settings.texts.get(Key::Concurrency), Some("8"));
        assert_eq!(settings.texts.get(Key::Cloud), Some("china"));
    }

    #[test]
    fn a_hand_built_run_args_keeps_its_values() {
        let mut args = RunArgs::default();
        args.targets.vaults = vec![VAULT.to_owned()];
        args.reconcile.selection.tags = vec!["X".to_owned()];
        args.reconcile.concurrency = Some("3".to_owned());
        args.cloud.cloud = Some("AzureChina".to_owned());
        let config = Config::from_settings(&args.to_settings(Origins::default())).unwrap();
        assert_eq!((config.concurrency, config.cloud), (3, Cloud::AzureChina));
    }

    #[test]
    fn run_flags_become_the_settings_config_validates() {
        let settings = apply_settings(&[
            "--vault",
            VAULT,
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
        let err = Config::from_settings(&apply_settings(&[
            "--vault",
            VAULT,
            "--tag",
            "X",
            "--grace-days",
            "91",
        ]))
        .unwrap_err();
        assert_eq!(
            err.lines(),
            ["--grace-days 91: expected a whole number of days from 0 to 90"]
        );
    }

    const STORAGE: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sta1";

    #[test]
    fn resource_and_kind_are_target_arguments_of_every_command_that_lists_targets() {
        let cli = command();
        for name in ["apply", "serve", "status", "grant", "revoke", "sweep"] {
            let command = cli.find_subcommand(name).unwrap();
            for id in ["resources", "vaults", "kinds"] {
                assert!(argument(command, id).is_some(), "`{name}` has no {id}");
            }
        }
        let status = cli.find_subcommand("status").unwrap();
        for id in ["resources", "kinds"] {
            assert!(!argument(status, id).unwrap().is_hide_set(), "{id}");
        }
        for name in ["plan", "tags"] {
            let command = cli.find_subcommand(name).unwrap();
            assert!(argument(command, "resources").is_none(), "{name}");
        }
    }

    #[test]
    fn resources_and_vaults_given_together_are_managed_together() {
        let settings = apply_settings(&[
            "--resource",
            STORAGE,
            "--vault",
            VAULT,
            "--tag",
            "X",
            "--kind",
            "Storage-Account,key_vault",
        ]);
        assert_eq!(
            settings.origins.get(Key::Resources),
            Some(&Origin::Flag("--resource".into()))
        );
        assert_eq!(
            settings.origins.get(Key::Kinds),
            Some(&Origin::Flag("--kind".into()))
        );
        let config = Config::from_settings(&settings).unwrap();
        assert_eq!(config.targets.len(), 2);
        assert_eq!(config.kinds, [Kind::KeyVault, Kind::StorageAccount]);
        let sa = config.find_target("sta1").unwrap();
        assert_eq!(
            (sa.id.kind, sa.limits.max_rules),
            (Kind::StorageAccount, 400)
        );
        let err = Config::from_settings(&apply_settings(&[
            "--resource",
            VAULT,
            "--vault",
            VAULT,
            "--tag",
            "X",
            "--kind",
            "cosmos",
        ]))
        .unwrap_err();
        assert_eq!(
            err.lines(),
            [
                format!("vault {VAULT} is listed twice: --resource {VAULT} and --vault {VAULT}"),
                "--kind cosmos: not a kind tagfence manages; expected key_vault, storage_account or container_registry (any case; - for _)".to_owned(),
            ]
        );
    }

    #[test]
    fn grant_and_revoke_take_their_one_resource_by_either_name() {
        let one = |args: &[&str]| {
            let all: Vec<&str> = ["grant", "--ip", "52.1.2.3"]
                .into_iter()
                .chain(args.iter().copied())
                .collect();
            let invocation = invocation(&all).unwrap();
            let origins = invocation.origins();
            let Command::Grant(grant) = invocation.cli.command else {
                panic!("not grant");
            };
            one_target(&grant.run, &origins, "grant").map_err(|e| e.to_string())
        };
        assert_eq!(one(&["--resource", STORAGE]), Ok(Some(STORAGE.to_owned())));
        assert_eq!(one(&["--vault", VAULT]), Ok(Some(VAULT.to_owned())));
        assert_eq!(one(&[]), Ok(None));
        assert_eq!(
            one(&["--resource", STORAGE, "--vault", VAULT]),
            Err("grant names one resource; got 2 (give exactly one --resource <RESOURCE_ID> or --vault <RESOURCE_ID>)".to_owned())
        );
        // A resource given on the command line wins over the lists of the environment.
        let mut run = RunArgs::default();
        run.targets.vaults = vec![VAULT.to_owned(), VAULT.to_owned()];
        run.targets.resources = vec![STORAGE.to_owned()];
        let mut origins = Origins::default();
        origins.record(Key::Vaults, Origin::Env("TAGFENCE_VAULTS".into()));
        origins.record(Key::Resources, Origin::Flag("--resource".into()));
        assert_eq!(
            one_target(&run, &origins, "revoke").unwrap(),
            Some(STORAGE.to_owned())
        );
        origins.record(Key::Resources, Origin::Env("TAGFENCE_RESOURCES".into()));
        assert!(one_target(&run, &origins, "revoke").is_err());
    }

    #[test]
    fn a_live_document_is_read_as_the_kind_its_type_says() {
        let kind = |doc: serde_json::Value| live_kind(&doc).map_err(|e| e.to_string());
        assert_eq!(kind(serde_json::json!({"name": "kv"})), Ok(Kind::KeyVault));
        for each in Kind::ALL {
            let doc = serde_json::json!({"type": each.resource_type().to_ascii_lowercase()});
            assert_eq!(kind(doc), Ok(each));
            assert!(
                VAULT_SHAPE.contains(&format!("properties.{}", each.rule_set_property())),
                "{each}"
            );
        }
        assert_eq!(
            kind(serde_json::json!({"type": "Microsoft.Web/sites"})),
            Err(format!(
                "its type is Microsoft.Web/sites, which tagfence does not manage; expected one of {}",
                crate::azure::supported_types()
            ))
        );
    }
}
