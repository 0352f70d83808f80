//! The settings of a run as the user gave them, before any validation: plain values, each
//! absent when the user did not give it (its default is applied by [`Config::from_settings`]),
//! and a record of where each given one came from.
//!
//! The command line (`cli`) fills a [`Settings`] from its flags and their environment forms;
//! tests and library callers fill one directly. The TOML file the settings may name is read by
//! [`Config::from_settings`], which records its keys' origins the same way.
//!
//! [`Config::from_settings`]: super::Config::from_settings

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::azure::auth::CredentialKind;
use crate::core::desired::{FitMode, Limits};
use crate::core::fit::Slash31;
use crate::core::service_tags::Cloud;

/// Where the Service Tags come from when no source is given.
pub const DEFAULT_SOURCE: &str = "download";
/// Vaults reconciled at the same time, by default.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Timeout of one HTTP attempt, in seconds, by default.
pub const DEFAULT_HTTP_TIMEOUT_SECS: u64 = 30;
/// Retries of one HTTP call, by default.
pub const DEFAULT_HTTP_MAX_RETRIES: u32 = 4;
/// First retry delay, in milliseconds, by default.
pub const DEFAULT_HTTP_RETRY_DELAY_MS: u64 = 800;
/// Deadline of one HTTP call with its retries, in seconds, by default.
pub const DEFAULT_HTTP_CALL_TIMEOUT_SECS: u64 = 120;
/// Days to keep a changed tag's previous ranges, by default (none).
pub const DEFAULT_GRACE_DAYS: u32 = 0;
/// A grace window longer than this is surely a typo (a tag changes every few weeks at most).
pub const MAX_GRACE_DAYS: u32 = 90;
/// The tag that marks a vault for discovery, by default.
pub const DEFAULT_DISCOVERY_TAG: &str = "tagfence";
/// The state container when the state URL names none, by default.
pub const DEFAULT_STATE_CONTAINER: &str = crate::state::blob::DEFAULT_CONTAINER;

/// Declares [`Key`] from one list, so that its variants, their names, flags and variables and
/// [`Key::ALL`] cannot drift apart.
macro_rules! keys {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $flag:literal, $env:literal;)*) => {
        /// One setting. Its [`name`](Key::name) is the setting's field in [`Settings`], the
        /// command line's argument id, and, for the settings a TOML file may give, its key there.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Key {
            $($(#[$doc])* $variant,)*
        }

        impl Key {
            /// Every setting.
            pub const ALL: &'static [Key] = &[$(Key::$variant,)*];

            /// The setting's name (`max_rules`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Key::$variant => $name,)*
                }
            }

            /// The command line's flag for it (`--max-rules`); `cli`'s tests hold the command
            /// line to this, so that a message may name a setting the user did not give.
            pub fn flag(self) -> &'static str {
                match self {
                    $(Key::$variant => $flag,)*
                }
            }

            /// The environment variable (app setting) for it (`TAGFENCE_MAX_RULES`).
            pub fn env(self) -> &'static str {
                match self {
                    $(Key::$variant => $env,)*
                }
            }
        }
    };
}

keys! {
    /// Firewalled resources to manage, by ARM resource id, of any supported kind (the kind is
    /// the id's provider type).
    Resources = "resources", "--resource", "TAGFENCE_RESOURCES";
    /// The same as [`Key::Resources`], by its older name: any supported kind too.
    Vaults = "vaults", "--vault", "TAGFENCE_VAULTS";
    ConfigFile = "config_file", "--config", "TAGFENCE_CONFIG";
    Tags = "tags", "--tag", "TAGFENCE_TAGS";
    StaticRules = "static_rules", "--static-rule", "TAGFENCE_STATIC_RULES";
    MaxRules = "max_rules", "--max-rules", "TAGFENCE_MAX_RULES";
    Fit = "fit", "--fit", "TAGFENCE_FIT";
    Envelope = "envelope", "--envelope", "TAGFENCE_ENVELOPE";
    MaxExtraAddresses = "max_extra_addresses", "--max-extra-addresses", "TAGFENCE_MAX_EXTRA_ADDRESSES";
    MaxRemoveFraction = "max_remove_fraction", "--max-remove-fraction", "TAGFENCE_MAX_REMOVE_FRACTION";
    Slash31 = "slash31", "--slash31", "TAGFENCE_SLASH31";
    Prune = "prune", "--prune", "TAGFENCE_PRUNE";
    AdoptExisting = "adopt_existing", "--adopt-existing", "TAGFENCE_ADOPT_EXISTING";
    InitFirewall = "init_firewall", "--init-firewall", "TAGFENCE_INIT_FIREWALL";
    AcceptMissingRules = "accept_missing_rules", "--accept-missing-rules", "TAGFENCE_ACCEPT_MISSING_RULES";
    AllowTagShrink = "allow_tag_shrink", "--allow-tag-shrink", "TAGFENCE_ALLOW_TAG_SHRINK";
    MaxTagShrink = "max_tag_shrink", "--max-tag-shrink", "TAGFENCE_MAX_TAG_SHRINK";
    /// Who may grant on a vault over HTTP: Microsoft Entra object ids or application ids.
    GrantPrincipals = "grant_principals", "--grant-principal", "TAGFENCE_GRANT_PRINCIPALS";
    /// The longest grant on a vault (`2h`, `30m`, `1h30m`).
    GrantMaxTtl = "grant_max_ttl", "--grant-max-ttl", "TAGFENCE_GRANT_MAX_TTL";
    /// The live grants a vault may hold at once.
    GrantMaxPerVault = "grant_max_per_vault", "--grant-max-per-vault", "TAGFENCE_GRANT_MAX_PER_VAULT";
    Source = "source", "--source", "TAGFENCE_SOURCE";
    SubscriptionId = "subscription_id", "--subscription-id", "TAGFENCE_SUBSCRIPTION_ID";
    Location = "location", "--location", "TAGFENCE_LOCATION";
    Cloud = "cloud", "--cloud", "TAGFENCE_CLOUD";
    ArmEndpoint = "arm_endpoint", "--arm-endpoint", "TAGFENCE_ARM_ENDPOINT";
    DownloadPageUrl = "download_page_url", "--download-page-url", "TAGFENCE_DOWNLOAD_PAGE_URL";
    Credential = "credential", "--credential", "TAGFENCE_CREDENTIAL";
    MinServiceTags = "min_service_tags", "--min-service-tags", "TAGFENCE_MIN_SERVICE_TAGS";
    Concurrency = "concurrency", "--concurrency", "TAGFENCE_CONCURRENCY";
    Observe = "observe", "--observe", "TAGFENCE_OBSERVE";
    HttpTimeoutSecs = "http_timeout_secs", "--http-timeout-secs", "TAGFENCE_HTTP_TIMEOUT_SECS";
    HttpMaxRetries = "http_max_retries", "--http-max-retries", "TAGFENCE_HTTP_MAX_RETRIES";
    HttpRetryDelayMs = "http_retry_delay_ms", "--http-retry-delay-ms", "TAGFENCE_HTTP_RETRY_DELAY_MS";
    HttpCallTimeoutSecs = "http_call_timeout_secs", "--http-call-timeout-secs", "TAGFENCE_HTTP_CALL_TIMEOUT_SECS";
    StateDir = "state_dir", "--state-dir", "TAGFENCE_STATE_DIR";
    StateUrl = "state_url", "--state-url", "TAGFENCE_STATE_URL";
    StateContainer = "state_container", "--state-container", "TAGFENCE_STATE_CONTAINER";
    StateCaFile = "state_ca_file", "--state-ca-file", "TAGFENCE_STATE_CA_FILE";
    CaFile = "ca_file", "--ca-file", "TAGFENCE_CA_FILE";
    /// The Functions host's `AzureWebJobsStorage__blobServiceUri`.
    WebjobsBlobServiceUri = "webjobs_blob_service_uri", "--webjobs-blob-service-uri", "AzureWebJobsStorage__blobServiceUri";
    /// The Functions host's `AzureWebJobsStorage__accountName`.
    WebjobsAccountName = "webjobs_account_name", "--webjobs-account-name", "AzureWebJobsStorage__accountName";
    GraceDays = "grace_days", "--grace-days", "TAGFENCE_GRACE_DAYS";
    AllowOlder = "allow_older", "--allow-older", "TAGFENCE_ALLOW_OLDER";
    DiscoverSubscriptions = "discover_subscriptions", "--discover-subscription", "TAGFENCE_DISCOVER_SUBSCRIPTIONS";
    DiscoverManagementGroups = "discover_management_groups", "--discover-management-group", "TAGFENCE_DISCOVER_MANAGEMENT_GROUPS";
    DiscoverTag = "discover_tag", "--discover-tag", "TAGFENCE_DISCOVER_TAG";
    /// The kinds of firewall discovery and the Event Grid hook consider (`key_vault`,
    /// `storage_account`, `container_registry`); listed resources are managed whatever their kind.
    Kinds = "kinds", "--kind", "TAGFENCE_KINDS";
    NotifyUrl = "notify_url", "--notify-url", "TAGFENCE_NOTIFY_URL";
    /// The log filter (`tracing_subscriber`'s `EnvFilter` directives).
    Log = "log", "--log", "TAGFENCE_LOG";
}

impl Key {
    /// The setting named `name`, if any.
    pub fn from_name(name: &str) -> Option<Key> {
        Key::ALL.iter().copied().find(|key| key.name() == name)
    }

    /// Whether the setting is a list (repeatable flag, comma-separated variable, TOML array).
    pub fn is_list(self) -> bool {
        matches!(
            self,
            Key::Resources
                | Key::Vaults
                | Key::Tags
                | Key::StaticRules
                | Key::Envelope
                | Key::AllowTagShrink
                | Key::GrantPrincipals
                | Key::DiscoverSubscriptions
                | Key::DiscoverManagementGroups
                | Key::Kinds
        )
    }

    /// Whether the TOML file may give it: its top-level `resources` and `vaults`, and the
    /// per-resource settings of `[defaults]` and of `[[resource]]` and `[[vault]]` entries.
    pub fn in_file(self) -> bool {
        matches!(
            self,
            Key::Resources
                | Key::Vaults
                | Key::Tags
                | Key::StaticRules
                | Key::MaxRules
                | Key::Fit
                | Key::Envelope
                | Key::MaxExtraAddresses
                | Key::MaxRemoveFraction
                | Key::Slash31
                | Key::Prune
                | Key::AdoptExisting
                | Key::InitFirewall
                | Key::MaxTagShrink
                | Key::GrantPrincipals
                | Key::GrantMaxTtl
                | Key::GrantMaxPerVault
        )
    }

    /// Whether the setting is a switch: its flag alone turns it on, `--flag=false` off.
    pub fn is_switch(self) -> bool {
        matches!(
            self,
            Key::Prune
                | Key::AdoptExisting
                | Key::InitFirewall
                | Key::AcceptMissingRules
                | Key::AllowOlder
        )
    }

    /// Whether the value is a secret, never repeated in a message.
    pub fn is_secret(self) -> bool {
        self == Key::NotifyUrl
    }
}

/// Where a setting's value came from, so that an error can name the setting the way the user
/// wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, as spelt there (`--max-rules`).
    Flag(String),
    /// An environment variable, which is how the Functions app settings arrive
    /// (`TAGFENCE_MAX_RULES`).
    Env(String),
    /// A key of the TOML file.
    File {
        path: PathBuf,
        /// The table the key is in: `[defaults]`, `[[vault]] #2`, `[[resource]] #1`, or empty
        /// for the top level.
        table: String,
        key: Key,
    },
}

impl fmt::Display for Origin {
    /// The setting as the user named it: `--max-rules`, `TAGFENCE_MAX_RULES`,
    /// `tagfence.toml: [defaults] max_rules`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => f.write_str(flag),
            Origin::Env(name) => f.write_str(name),
            Origin::File { path, table, key } if table.is_empty() => {
                write!(f, "{}: {}", path.display(), key.name())
            }
            // A `[[vault]]` or `[[resource]]` entry names its resource with `id`, recorded as a
            // `vaults` or `resources` key.
            Origin::File {
                path,
                table,
                key: Key::Vaults | Key::Resources,
            } => write!(f, "{}: {table} id", path.display()),
            Origin::File { path, table, key } => {
                write!(f, "{}: {table} {}", path.display(), key.name())
            }
        }
    }
}

/// Settings given as text, still to be parsed: the command line puts here what the user typed
/// for each typed setting (a number, a choice, a switch), so that `config` parses it where the
/// origin is known and can name a malformed value as the user wrote it. A text given here
/// replaces the setting's typed field of [`Settings`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Texts(BTreeMap<Key, String>);

impl Texts {
    /// Records `text` as what was given for `key`.
    pub fn set(&mut self, key: Key, text: impl Into<String>) {
        self.0.insert(key, text.into());
    }

    /// What was given for `key` as text, if anything.
    pub fn get(&self, key: Key) -> Option<&str> {
        self.0.get(&key).map(String::as_str)
    }
}

/// The origin of each setting the user gave. A setting missing here was not given, or was set
/// by code (a test, a library caller).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(BTreeMap<Key, Origin>);

impl Origins {
    /// Records that `key` was given at `origin`, replacing what a lower layer gave.
    pub fn record(&mut self, key: Key, origin: Origin) {
        self.0.insert(key, origin);
    }

    /// Where `key` was given, if it was.
    pub fn get(&self, key: Key) -> Option<&Origin> {
        self.0.get(&key)
    }

    /// Forgets where `key` came from (its value now comes from elsewhere).
    pub fn forget(&mut self, key: Key) {
        self.0.remove(&key);
    }
}

/// Which tags and literal rules to allow, as given (names and rules unchecked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectionSettings {
    /// Service tag and profile names; empty: none given.
    pub tags: Vec<String>,
    /// Literal rules (IPv4 addresses or prefixes); empty: none given.
    pub static_rules: Vec<String>,
}

/// How to fit the rules into a vault, as given; `None`: not given (a lower layer, or
/// [`Limits::default`], decides).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitSettings {
    /// The most IPv4 rules a vault may hold in all.
    pub max_rules: Option<usize>,
    /// Refuse a selection that does not fit, or summarise it.
    pub fit: Option<FitMode>,
    /// Tags the extra addresses of a summarised fit must lie in; empty: none given.
    pub envelope: Vec<String>,
    /// The most extra addresses a summarised fit may admit.
    pub max_extra_addresses: Option<u64>,
    /// The largest fraction of its managed rules a plan may remove.
    pub max_remove_fraction: Option<f64>,
    /// How to write a /31.
    pub slash31: Option<Slash31>,
}

impl LimitSettings {
    /// The limits these settings give over `base`: each one given replaces the base's.
    pub fn over(&self, base: &Limits) -> Limits {
        let envelope: Vec<String> = self
            .envelope
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        Limits {
            max_rules: self.max_rules.unwrap_or(base.max_rules),
            fit: self.fit.unwrap_or(base.fit),
            envelope: if envelope.is_empty() {
                base.envelope.clone()
            } else {
                envelope
            },
            max_extra_addresses: self.max_extra_addresses.or(base.max_extra_addresses),
            max_remove_fraction: self.max_remove_fraction.unwrap_or(base.max_remove_fraction),
            slash31: self.slash31.unwrap_or(base.slash31),
        }
    }

    /// The limits these settings give over the defaults.
    pub fn to_limits(&self) -> Limits {
        self.over(&Limits::default())
    }
}

/// The settings of a run that reconciles vaults (`apply`, `status`, and `serve` for the
/// Functions host), as the user gave them. `None`, an empty list or `false`: not given.
///
/// A switch's field (`prune`, `adopt_existing`, …) can only turn it on; given as text in
/// [`texts`](Settings::texts) (`true`, `false`, `1`, `0`) it turns it on or off, also over the
/// file's `[defaults]`. Typed settings given as text replace their fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// Firewalled resources to manage, by ARM resource id (any supported kind).
    pub resources: Vec<String>,
    /// The same as `resources`, by its older name (any supported kind too); both lists are
    /// managed.
    pub vaults: Vec<String>,
    /// A TOML file with defaults and per-vault settings.
    pub config_file: Option<PathBuf>,
    pub selection: SelectionSettings,
    pub limits: LimitSettings,
    /// Also remove rules neither selected nor added by tagfence.
    pub prune: bool,
    /// Claim the rules on a vault that equal desired rules.
    pub adopt_existing: bool,
    /// Initialise the firewall of a vault that has none.
    pub init_firewall: bool,
    /// Trust a read lacking most of tagfence's confirmed rules (one run; no file key).
    pub accept_missing_rules: bool,
    /// Tags allowed to shrink past `max_tag_shrink` in this run (`*`: every tag; no file key).
    pub allow_tag_shrink: Vec<String>,
    /// The largest fraction of a selected tag's prefixes that may go between two documents.
    pub max_tag_shrink: Option<f64>,
    /// Microsoft Entra object ids or application (client) ids allowed to grant on the vaults
    /// over HTTP (`POST /api/grant`); empty: none given (nobody may).
    pub grant_principals: Vec<String>,
    /// The longest grant [default: [`DEFAULT_MAX_TTL`](crate::core::grant::DEFAULT_MAX_TTL)];
    /// whole seconds (a fraction of a second is dropped).
    pub grant_max_ttl: Option<Duration>,
    /// Live grants a vault may hold at once
    /// [default: [`DEFAULT_MAX_LIVE`](crate::core::grant::DEFAULT_MAX_LIVE)].
    pub grant_max_per_vault: Option<usize>,
    /// `api`, `download`, a file path or a URL [default: [`DEFAULT_SOURCE`]].
    pub source: Option<String>,
    /// The subscription for the Discovery API.
    pub subscription_id: Option<String>,
    /// The location for the Discovery API.
    pub location: Option<String>,
    /// [default: the public cloud].
    pub cloud: Option<Cloud>,
    /// Overrides the cloud's ARM endpoint.
    pub arm_endpoint: Option<String>,
    /// Overrides the cloud's page linking the weekly Service Tags file.
    pub download_page_url: Option<String>,
    /// [default: [`CredentialKind::Auto`]].
    pub credential: Option<CredentialKind>,
    /// Refuse a Service Tags document with fewer tags [default: by cloud].
    pub min_service_tags: Option<usize>,
    /// [default: [`DEFAULT_CONCURRENCY`]].
    pub concurrency: Option<usize>,
    /// How a run observes the vaults' firewalls [default: [`Observe::Graph`]].
    pub observe: Option<Observe>,
    /// One HTTP attempt [default: [`DEFAULT_HTTP_TIMEOUT_SECS`]].
    pub http_timeout_secs: Option<u64>,
    /// [default: [`DEFAULT_HTTP_MAX_RETRIES`]].
    pub http_max_retries: Option<u32>,
    /// The first back-off [default: [`DEFAULT_HTTP_RETRY_DELAY_MS`]].
    pub http_retry_delay_ms: Option<u64>,
    /// One call, retries included [default: [`DEFAULT_HTTP_CALL_TIMEOUT_SECS`]].
    pub http_call_timeout_secs: Option<u64>,
    /// Keep state in this directory.
    pub state_dir: Option<PathBuf>,
    /// Keep state in Blob storage at this endpoint (optionally with the container).
    pub state_url: Option<String>,
    /// The state container when the URL names none [default: [`DEFAULT_STATE_CONTAINER`]].
    pub state_container: Option<String>,
    /// A PEM certificate to trust for the state endpoint.
    pub state_ca_file: Option<PathBuf>,
    /// PEM certificates to trust for ARM and the Service Tags download besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// The Functions host's `AzureWebJobsStorage__blobServiceUri`.
    pub webjobs_blob_service_uri: Option<String>,
    /// The Functions host's `AzureWebJobsStorage__accountName`.
    pub webjobs_account_name: Option<String>,
    /// Days to keep a changed tag's previous ranges [default: [`DEFAULT_GRACE_DAYS`]].
    pub grace_days: Option<u32>,
    /// Use a Service Tags document older than the one last applied.
    pub allow_older: bool,
    /// Subscriptions to discover tagged vaults in.
    pub discover_subscriptions: Vec<String>,
    /// Management groups to discover tagged vaults under.
    pub discover_management_groups: Vec<String>,
    /// [default: [`DEFAULT_DISCOVERY_TAG`]].
    pub discover_tag: Option<String>,
    /// The kinds discovery and the Event Grid hook consider, by name (`key_vault`,
    /// `storage_account`, `container_registry`) [default: every kind].
    pub kinds: Vec<String>,
    /// The webhook for run messages. A secret: never logged, and never repeated in an error.
    pub notify_url: Option<String>,
    /// The log filter (`tracing_subscriber` directives, e.g. `tagfence=debug`).
    pub log: Option<String>,
    /// Typed settings given as text, to be parsed by `config` (the command line's way).
    pub texts: Texts,
    /// Where each setting given above came from.
    pub origins: Origins,
}

/// How a run observes the vaults' firewalls before deciding which need work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Observe {
    /// All of them in one Resource Graph query; a vault whose indexed firewall is already what
    /// tagfence would write is in sync without an ARM read, every other one goes through ARM.
    #[default]
    Graph,
    /// Each vault by an ARM read (the Event Grid hook always does).
    Arm,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_its_own_name_flag_and_variable() {
        for key in Key::ALL {
            assert_eq!(Key::from_name(key.name()), Some(*key));
            assert_eq!(
                key.flag(),
                format!("--{}", key.flag().trim_start_matches('-'))
            );
            let others = Key::ALL.iter().filter(|k| *k != key);
            assert!(others
                .clone()
                .all(|k| k.flag() != key.flag() && k.env() != key.env()));
        }
        assert_eq!(Key::from_name("max-rules"), None);
    }

    #[test]
    fn an_origin_reads_as_the_user_wrote_it() {
        let file = |table: &str| Origin::File {
            path: "tagfence.toml".into(),
            table: table.to_owned(),
            key: Key::MaxRules,
        };
        assert_eq!(
            Origin::Flag("--max-rules".into()).to_string(),
            "--max-rules"
        );
        assert_eq!(
            Origin::Env("TAGFENCE_MAX_RULES".into()).to_string(),
            "TAGFENCE_MAX_RULES"
        );
        assert_eq!(
            file("[defaults]").to_string(),
            "tagfence.toml: [defaults] max_rules"
        );
        assert_eq!(file("").to_string(), "tagfence.toml: max_rules");
    }

    #[test]
    fn limits_given_replace_the_base_and_blank_envelope_tags_do_not_count() {
        let base = Limits {
            envelope: vec!["AzureCloud".into()],
            ..Limits::default()
        };
        let limits = LimitSettings {
            max_rules: Some(10),
            envelope: vec![" ".into()],
            ..LimitSettings::default()
        }
        .over(&base);
        assert_eq!(limits.max_rules, 10);
        assert_eq!(limits.envelope, ["AzureCloud"]);
        assert_eq!(LimitSettings::default().to_limits(), Limits::default());
    }
}
