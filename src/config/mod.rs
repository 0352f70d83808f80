//! Run configuration: a [`Settings`] value (what the command line's flags and their
//! environment forms gave, or what a test or library caller built) and an optional TOML file,
//! validated once into a [`Config`]. Nothing after this reads the environment for settings, and
//! nothing here knows the command line: `cli` turns its arguments into [`Settings`].
//!
//! Layering, lowest first: built-in defaults; the file's `[defaults]`; flags and environment
//! variables; a `[[vault]]` entry's own settings for that vault. Each layer records where the
//! values it gives came from ([`Origin`]).
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
//!
//! # Layout
//!
//! Lowest first: each module uses only the ones listed before it, never this one, which
//! validates [`Settings`] into a [`Config`] with them and re-exports what callers use.
//!
//! - [`settings`]: [`Settings`], the input, and where each setting came from ([`Origins`]).
//! - `error`: [`ConfigError`].
//! - `vault`: what a validated vault target holds ([`VaultTarget`], [`Safety`],
//!   [`TargetSource`]).
//! - `endpoints`: the URLs (ARM, download page, Service Tags source, notifications).
//! - `state`: where the state lives ([`StateSpec`]).
//! - `layers`: the TOML file and the layering of per-vault settings.
//! - `targets`: the listed vaults and discovery ([`Discovery`]).

mod endpoints;
mod error;
mod layers;
pub mod settings;
mod state;
mod targets;
mod vault;

use std::time::Duration;

use url::Url;

use crate::azure::auth::CredentialKind;
use crate::azure::budget::BudgetLimits;
use crate::azure::pipeline::HttpOptions;
use crate::azure::{CloudEndpoints, VaultId};
use crate::core::service_tags::Cloud;
use crate::source::{self, SourceSpec};

pub use error::ConfigError;
use layers::{ConfigFile, Resolved};
pub use settings::{
    Key, LimitSettings, Origin, Origins, SelectionSettings, Settings, DEFAULT_CONCURRENCY,
    DEFAULT_DISCOVERY_TAG, DEFAULT_GRACE_DAYS, DEFAULT_HTTP_CALL_TIMEOUT_SECS,
    DEFAULT_HTTP_MAX_RETRIES, DEFAULT_HTTP_RETRY_DELAY_MS, DEFAULT_HTTP_TIMEOUT_SECS,
    DEFAULT_SOURCE, DEFAULT_STATE_CONTAINER,
};
pub use state::StateSpec;
pub use targets::Discovery;
pub use vault::{Safety, TargetSource, VaultTarget};

/// A grace window longer than this is surely a typo (a tag changes every few weeks at most).
pub const MAX_GRACE_DAYS: u32 = 90;

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

impl Config {
    /// Validates `settings` (and the file they name) into a configuration.
    ///
    /// # Errors
    /// The first [`ConfigError`] found, naming the setting at fault.
    pub fn from_settings(settings: &Settings) -> Result<Config, ConfigError> {
        let file = match &settings.config_file {
            Some(path) => layers::load_file(path)?,
            None => ConfigFile::default(),
        };
        let cloud = settings.cloud.unwrap_or(Cloud::Public);
        let endpoints = endpoints::endpoints(settings, cloud)?;
        let source = endpoints::source_spec(settings, &endpoints)?;
        let defaults = layers::vault_defaults(settings, &file);
        let targets = targets::listed_targets(settings, &file, &defaults)?;
        let concurrency = concurrency(settings)?;
        let state = state::state_spec(settings, cloud)?;
        let grace_days = grace_days(settings)?;
        Ok(Config {
            cloud,
            endpoints,
            credential: settings.credential.unwrap_or_default(),
            source,
            min_service_tags: settings
                .min_service_tags
                .unwrap_or_else(|| source::default_min_tags(cloud)),
            targets,
            concurrency,
            http: http_options(settings),
            state,
            grace_days,
            allow_older: settings.allow_older,
            discovery: targets::discovery(settings)?,
            defaults,
            write_budget: BudgetLimits::default(),
            notify_url: endpoints::notify_url(settings)?,
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
        let settings = targets::discovered_settings(&self.defaults, value);
        let mut target = targets::target(id, &settings).map_err(|err| ConfigError::Discovered {
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

/// Vaults reconciled at the same time: at least one.
fn concurrency(settings: &Settings) -> Result<usize, ConfigError> {
    match settings.concurrency.unwrap_or(DEFAULT_CONCURRENCY) {
        0 => Err(ConfigError::Setting {
            setting: "--concurrency (TAGFENCE_CONCURRENCY)",
            reason: "must be at least 1".to_owned(),
        }),
        n => Ok(n),
    }
}

/// Days to keep a changed tag's previous ranges: at most [`MAX_GRACE_DAYS`].
fn grace_days(settings: &Settings) -> Result<u32, ConfigError> {
    let days = settings.grace_days.unwrap_or(DEFAULT_GRACE_DAYS);
    if days > MAX_GRACE_DAYS {
        return Err(ConfigError::Setting {
            setting: "--grace-days (TAGFENCE_GRACE_DAYS)",
            reason: format!("{days} is more than {MAX_GRACE_DAYS} days"),
        });
    }
    Ok(days)
}

/// How hard to try over HTTP. A timeout of 0 would fail every call, so it counts as 1 s.
fn http_options(settings: &Settings) -> HttpOptions {
    let secs =
        |value: Option<u64>, default: u64| Duration::from_secs(value.unwrap_or(default).max(1));
    HttpOptions {
        attempt_timeout: secs(settings.http_timeout_secs, DEFAULT_HTTP_TIMEOUT_SECS),
        max_retries: settings
            .http_max_retries
            .unwrap_or(DEFAULT_HTTP_MAX_RETRIES),
        initial_retry_delay: Duration::from_millis(
            settings
                .http_retry_delay_ms
                .unwrap_or(DEFAULT_HTTP_RETRY_DELAY_MS),
        ),
        call_timeout: secs(
            settings.http_call_timeout_secs,
            DEFAULT_HTTP_CALL_TIMEOUT_SECS,
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::core::desired::{FitMode, Limits};

    const KV_A: &str =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-a";
    const KV_B: &str =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-b";

    /// Settings selecting `tags`, as a flag would.
    fn tagged(tags: &[&str]) -> Settings {
        Settings {
            selection: SelectionSettings {
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                static_rules: Vec::new(),
            },
            ..Settings::default()
        }
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
        let config = Config::from_settings(&Settings {
            vaults: vec![KV_A.into(), KV_B.into()],
            selection: SelectionSettings {
                tags: vec!["AzureDevOps".into()],
                static_rules: vec!["52.1.2.3".into()],
            },
            limits: LimitSettings {
                max_rules: Some(500),
                ..LimitSettings::default()
            },
            ..Settings::default()
        })
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
    fn settings_not_given_take_their_defaults() {
        let config = Config::from_settings(&tagged(&["X"])).unwrap();
        assert_eq!(config.cloud, Cloud::Public);
        assert_eq!(config.credential, CredentialKind::Auto);
        assert_eq!(config.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(
            config.http,
            HttpOptions {
                attempt_timeout: Duration::from_secs(30),
                max_retries: 4,
                initial_retry_delay: Duration::from_millis(800),
                call_timeout: Duration::from_secs(120),
            }
        );
        assert_eq!((config.grace_days, config.allow_older), (0, false));
        assert_eq!((config.discovery, config.notify_url), (None, None));
        assert_eq!(config.defaults.limits, Limits::default());
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
        let config = Config::from_settings(&Settings {
            config_file: Some(path),
            limits: LimitSettings {
                max_rules: Some(800),
                ..LimitSettings::default()
            },
            ..Settings::default()
        })
        .unwrap();
        let a = config.find_target("kv-a").unwrap();
        assert_eq!(
            (a.selection.tags.clone(), a.limits.max_rules, a.limits.fit),
            (vec!["AzureDevOps".to_owned()], 800, FitMode::Summarize)
        );
        let b = config.find_target(KV_B).unwrap();
        assert_eq!(
            (b.selection.tags.clone(), b.limits.max_rules),
            (vec!["AzureCloud.westeurope".to_owned()], 300)
        );
    }

    #[test]
    fn a_vault_entry_records_its_own_keys_origins() {
        let path = temp_file(
            "origins.toml",
            &format!("[defaults]\ntags = [\"AzureDevOps\"]\n\n[[vault]]\nid = \"{KV_B}\"\nmax_rules = 300\n"),
        );
        let file = layers::load_file(&path).unwrap();
        let defaults = layers::vault_defaults(&Settings::default(), &file);
        let origin = |table: &str, key| Origin::File {
            path: path.clone(),
            table: table.to_owned(),
            key,
        };
        assert_eq!(
            defaults.origins.get(Key::Tags),
            Some(&origin("[defaults]", Key::Tags))
        );
        let entry = &file.vault_entries[0].settings;
        let own = entry.over(
            &defaults,
            &layers::file_origin(&path, "[[vault]] #1".into()),
        );
        assert_eq!(
            own.origins.get(Key::MaxRules),
            Some(&origin("[[vault]] #1", Key::MaxRules))
        );
        assert_eq!(
            own.origins.get(Key::Tags),
            Some(&origin("[defaults]", Key::Tags))
        );
    }

    #[test]
    fn bad_settings_are_refused_naming_them() {
        let bad_file = temp_file("bad.toml", "[defaults]\ntagz = [\"x\"]\n");
        let upper = KV_A.to_uppercase();
        let with = |vaults: &[&str], tags: &[&str]| Settings {
            vaults: vaults.iter().map(|v| (*v).to_owned()).collect(),
            ..tagged(tags)
        };
        let cases: Vec<(Settings, &str)> = vec![
            (with(&["kv-a"], &["X"]), "invalid vault 'kv-a' (--vault / TAGFENCE_VAULTS): it does not have eight segments"),
            (with(&[KV_A], &[]), "vault /subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-a: no tags or static rules selected (give --tag/TAGFENCE_TAGS, or tags in the configuration file)"),
            (with(&[KV_A, &KV_A[..KV_A.len() - 4]], &["X"]), "invalid vault '/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/' (--vault / TAGFENCE_VAULTS): it does not have eight segments"),
            (with(&[KV_A, &upper], &["X"]), "vault /subscriptions/S1/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/KV-A is listed twice"),
            (Settings { selection: SelectionSettings { tags: Vec::new(), static_rules: vec!["10.0.0.1".into()] }, ..with(&[KV_A], &[]) }, "vault kv-a: invalid static rule: '10.0.0.1' overlaps the reserved range 10.0.0.0/8 (private network, RFC 1918); key vault refuses it"),
            (Settings { source: Some("api".into()), ..tagged(&["X"]) }, "--source api: needs --subscription-id (TAGFENCE_SUBSCRIPTION_ID) and --location (TAGFENCE_LOCATION)"),
            (Settings { source: Some("http://example.com/tags.json".into()), ..tagged(&["X"]) }, "--source (TAGFENCE_SOURCE): 'http://example.com/tags.json' uses plain http; only https is allowed, except for a loopback host (a local emulator)"),
            (Settings { source: Some(" ".into()), ..tagged(&["X"]) }, "--source (TAGFENCE_SOURCE): is empty"),
            (Settings { arm_endpoint: Some("http://management.azure.com".into()), ..tagged(&["X"]) }, "--arm-endpoint (TAGFENCE_ARM_ENDPOINT): 'http://management.azure.com/' uses plain http; only https is allowed, except for a loopback host (a local emulator)"),
            (Settings { config_file: Some(bad_file), ..Settings::default() }, "unknown field `tagz`"),
            (Settings { state_dir: Some("/tmp/s".into()), state_url: Some("https://a.blob.core.windows.net".into()), ..tagged(&["X"]) }, "give either a state directory or a state URL (TAGFENCE_STATE_URL), not both"),
            (Settings { state_url: Some("http://a.blob.core.windows.net".into()), ..tagged(&["X"]) }, "--state-url (TAGFENCE_STATE_URL): 'http://a.blob.core.windows.net' must use https"),
            (Settings { state_url: Some("https://a.blob.core.windows.net/c?sig=x".into()), ..tagged(&["X"]) }, "must not carry a query (no SAS tokens"),
            (Settings { state_url: Some("https://a.blob.core.windows.net/Bad_Name".into()), ..tagged(&["X"]) }, "'Bad_Name' is not a valid container name"),
            (Settings { grace_days: Some(400), ..tagged(&["X"]) }, "--grace-days (TAGFENCE_GRACE_DAYS): 400 is more than 90 days"),
            (Settings { concurrency: Some(0), ..tagged(&["X"]) }, "--concurrency (TAGFENCE_CONCURRENCY): must be at least 1"),
            (Settings { max_tag_shrink: Some(1.5), ..with(&[KV_A], &["X"]) }, "--max-tag-shrink (TAGFENCE_MAX_TAG_SHRINK, max_tag_shrink): 1.5 is not between 0 and 1"),
            (Settings { discover_subscriptions: vec!["s1".into()], ..tagged(&["X"]) }, "--discover-subscription (TAGFENCE_DISCOVER_SUBSCRIPTIONS): 's1' is not a subscription id (a GUID)"),
            (Settings { discover_management_groups: vec!["mg".into()], discover_tag: Some("a'b".into()), ..tagged(&["X"]) }, "--discover-tag (TAGFENCE_DISCOVER_TAG): 'a'b' may not contain quotes or backslashes"),
            (Settings { notify_url: Some("http://hooks.example.com/secret".into()), ..tagged(&["X"]) }, "--notify-url (TAGFENCE_NOTIFY_URL): must use https (plain http only for a loopback host)"),
        ];
        for (settings, expected) in cases {
            let err = Config::from_settings(&settings).unwrap_err().to_string();
            assert!(err.contains(expected), "{settings:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn state_lives_where_the_settings_say() {
        let state = |settings: Settings| {
            Config::from_settings(&Settings {
                selection: tagged(&["X"]).selection,
                ..settings
            })
            .unwrap()
            .state
        };
        assert_eq!(state(Settings::default()), None);
        assert_eq!(
            state(Settings {
                state_dir: Some("/var/lib/tagfence".into()),
                ..Settings::default()
            }),
            Some(StateSpec::Dir("/var/lib/tagfence".into()))
        );
        let blob = |settings: Settings| match state(settings) {
            Some(StateSpec::Blob { container_url, .. }) => container_url.to_string(),
            other => panic!("{other:?}"),
        };
        let url = |url: &str| Settings {
            state_url: Some(url.into()),
            ..Settings::default()
        };
        assert_eq!(
            blob(url("https://acct.blob.core.windows.net")),
            "https://acct.blob.core.windows.net/tagfence"
        );
        assert_eq!(
            blob(url("https://acct.blob.core.windows.net/mine/")),
            "https://acct.blob.core.windows.net/mine"
        );
        assert_eq!(
            blob(Settings {
                webjobs_account_name: Some("funcstore".into()),
                cloud: Some(Cloud::AzureGovernment),
                ..Settings::default()
            }),
            "https://funcstore.blob.core.usgovcloudapi.net/tagfence"
        );
        assert_eq!(
            blob(Settings {
                webjobs_blob_service_uri: Some("https://funcstore.blob.core.windows.net/".into()),
                state_container: Some("tf-state".into()),
                ..Settings::default()
            }),
            "https://funcstore.blob.core.windows.net/tf-state"
        );
        assert_eq!(
            blob(url("https://127.0.0.1:10000/devstoreaccount1/tagfence")),
            "https://127.0.0.1:10000/devstoreaccount1/tagfence"
        );
    }

    #[test]
    fn the_source_setting_takes_every_form() {
        let spec = |s: &str| {
            Config::from_settings(&Settings {
                source: Some(s.into()),
                subscription_id: Some("s1".into()),
                location: Some("westeurope".into()),
                ..Settings::default()
            })
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

    #[test]
    fn a_discovered_vaults_tag_value_chooses_its_tags_and_adds_rules() {
        let config = Config::from_settings(&Settings {
            selection: SelectionSettings {
                tags: vec!["AzureDevOps".into()],
                static_rules: vec!["52.1.2.3".into()],
            },
            discover_subscriptions: vec!["00000000-0000-0000-0000-000000000001".into()],
            ..Settings::default()
        })
        .unwrap();
        let id: VaultId = KV_A.parse().unwrap();
        let target = config.discovered_target(id.clone(), "default").unwrap();
        assert_eq!(target.selection.tags, ["AzureDevOps"]);
        let target = config
            .discovered_target(id.clone(), "AzureCloud.westeurope; 52.4.5.6")
            .unwrap();
        assert_eq!(target.selection.tags, ["AzureCloud.westeurope"]);
        assert_eq!(target.selection.static_rules.len(), 2);
        let err = config.discovered_target(id, "10.0.0.1").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("its tag tagfence='10.0.0.1': vault kv-a: invalid static rule"),
            "{err}"
        );
    }
}
