//! Run configuration: a [`Settings`] value (what the command line's flags and their
//! environment forms gave, or what a test or library caller built) and an optional TOML file,
//! validated once into a [`Config`]. Nothing after this reads the environment for settings, and
//! nothing here knows the command line: `cli` turns its arguments into [`Settings`].
//!
//! Layering, lowest first: built-in defaults; the file's `[defaults]`; flags and environment
//! variables; a `[[resource]]` (or `[[vault]]`) entry's own settings for that resource. Each
//! layer records where the values it gives came from ([`Origin`]). A target's kind (Key Vault,
//! Storage account, Container Registry: its id's provider type) caps its `max_rules` and
//! `grant_max_per_vault` at the kind's own limit and may force its `slash31`
//! ([`kind_limits`]).
//!
//! `resources` (`--resource`, `TAGFENCE_RESOURCES`) and `vaults` (`--vault`,
//! `TAGFENCE_VAULTS`) are one list by two names, each taking every kind; `[[resource]]` and
//! `[[vault]]` entries likewise.
//!
//! ```toml
//! # tagfence.toml
//! resources = ["/subscriptions/…/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sta"]
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
//! grant_principals = []    # who may POST /api/grant: Entra object or application ids
//! grant_max_ttl = "2h"
//! grant_max_per_vault = 50
//!
//! [[vault]]
//! id = "/subscriptions/…/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-b"
//! tags = ["AzureDevOps", "AzureCloud.westeurope", "AzureCloud.northeurope"]
//! fit = "summarize"
//!
//! [[resource]]
//! id = "/subscriptions/…/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acr1"
//! max_rules = 80
//! ```
//!
//! # Layout
//!
//! Lowest first: each module uses only the ones listed before it, never this one, which
//! validates [`Settings`] into a [`Config`] with them and re-exports what callers use.
//!
//! - [`settings`]: [`Settings`], the input, and where each setting came from ([`Origins`]).
//! - `error`: [`ConfigError`], one problem, and [`ConfigErrors`], all of them.
//! - `given`: every setting as text with its origin, and the one parser of a setting's text
//!   (`Reader`), so that flags, environment and the file are checked and named alike.
//! - `vault`: what a validated target holds ([`VaultTarget`], [`Safety`], [`GrantPolicy`],
//!   [`TargetSource`]), and how its kind caps its limits ([`kind_limits`], [`kind_grants`]).
//! - `endpoints`: the URLs (ARM, download page, Service Tags source, notifications).
//! - `state`: where the state lives ([`StateSpec`]).
//! - `layers`: the TOML file and the layering of per-resource settings.
//! - `targets`: the listed resources, discovery ([`Discovery`]) and the kinds it considers, and
//!   the checks of a resource's settings taken together.
//!
//! # One pass
//!
//! Every setting is parsed and checked before anything else happens, and every problem is
//! collected: [`Config::from_settings`] returns all of them ([`ConfigErrors`]), each one line
//! naming the setting as the user wrote it and what is allowed. A step that finds a problem
//! carries on with a stand-in value, so that the next steps find theirs.

mod endpoints;
mod error;
mod given;
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
use crate::azure::{CloudEndpoints, ResourceId};
use crate::core::desired::{self, Limits, Selection};
use crate::core::kind::Kind;
use crate::core::profiles;
use crate::core::service_tags::Cloud;
use crate::source::{self, SourceSpec};

pub use error::{ConfigError, ConfigErrors};
pub use given::is_guid;
pub use given::{cloud_name, parse_switch};
use given::{Givens, Reader};
use layers::{ConfigFile, Resolved};
pub use settings::{
    Key, LimitSettings, Observe, Origin, Origins, SelectionSettings, Settings, Texts,
    DEFAULT_CONCURRENCY, DEFAULT_DISCOVERY_TAG, DEFAULT_GRACE_DAYS, DEFAULT_HTTP_CALL_TIMEOUT_SECS,
    DEFAULT_HTTP_MAX_RETRIES, DEFAULT_HTTP_RETRY_DELAY_MS, DEFAULT_HTTP_TIMEOUT_SECS,
    DEFAULT_SOURCE, DEFAULT_STATE_CONTAINER, MAX_GRACE_DAYS,
};
pub use state::StateSpec;
use targets::Context;
pub use targets::{Discovery, RESOURCE_ID_SHAPE};
pub use vault::{kind_grants, kind_limits, GrantPolicy, Safety, TargetSource, VaultTarget};

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub cloud: Cloud,
    pub endpoints: CloudEndpoints,
    pub credential: CredentialKind,
    pub source: SourceSpec,
    pub min_service_tags: usize,
    pub targets: Vec<VaultTarget>,
    /// Vaults reconciled at once per subscription (subscriptions do not wait on each other).
    pub concurrency: usize,
    /// How a run observes the firewalls before deciding which vaults need work.
    pub observe: Observe,
    pub http: HttpOptions,
    /// Where state lives; `None` runs without memory (nothing is ever removed).
    pub state: Option<StateSpec>,
    /// Days to keep a changed tag's previous ranges (0: none).
    pub grace_days: u32,
    pub allow_older: bool,
    /// Tagged resources to manage besides the listed ones.
    pub discovery: Option<Discovery>,
    /// The kinds discovery (the Resource Graph query) and the Event Grid hook consider: sorted,
    /// once each; every kind by default (`--kind`, `TAGFENCE_KINDS`). Listed resources are
    /// managed whatever their kind.
    pub kinds: Vec<Kind>,
    /// The settings a discovered vault gets (built in < file `[defaults]` < flags).
    defaults: Resolved,
    /// Where to post run messages.
    pub notify_url: Option<Url>,
    /// The ARM write budget tagfence paces itself by, per subscription: ARM's (200, +10/s).
    /// Not a setting (ARM's budget is not the caller's to choose); tests lower it.
    pub write_budget: BudgetLimits,
    /// The read budget likewise: ARM's (250, +25/s).
    pub read_budget: BudgetLimits,
    /// How long after a write of tagfence's a vault is read through ARM rather than believed
    /// in sync from Resource Graph. Not a setting; benchmarks set it to zero to measure the run a
    /// week after the last writes without waiting a week.
    pub index_trusted_after_write: std::time::Duration,
    /// ARM requests in flight at most over all subscriptions ([`crate::azure::arm::MAX_IN_FLIGHT`]).
    /// Not a setting; benchmarks vary it.
    pub max_in_flight: usize,
}

/// What a configuration is for, which decides what it must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// `apply` and `serve`: vaults to reconcile, each selecting something.
    Reconcile,
    /// `status`: a state location that exists; no selection.
    Status,
    /// `grant`, `revoke`, `sweep`: a state location (created when missing); no selection, as
    /// only grants' rules change.
    Grants,
}

impl Config {
    /// Validates `settings` (and the file they name) into a configuration that reconciles
    /// vaults (`apply`, `serve`): something to manage, each vault selecting something.
    ///
    /// # Errors
    /// Every problem found ([`ConfigErrors`]), each naming the setting at fault.
    pub fn from_settings(settings: &Settings) -> Result<Config, ConfigErrors> {
        build(settings, Purpose::Reconcile)
    }

    /// Validates `settings` into a configuration for `status`, which reads the state only: it
    /// needs a state location, one that exists, and no selection.
    ///
    /// # Errors
    /// Every problem found ([`ConfigErrors`]), each naming the setting at fault.
    pub fn for_status(settings: &Settings) -> Result<Config, ConfigErrors> {
        build(settings, Purpose::Status)
    }

    /// Validates `settings` into a configuration for `grant`, `revoke` and `sweep`: they need
    /// a state location, and no selection (they change only grants' rules).
    ///
    /// # Errors
    /// Every problem found ([`ConfigErrors`]), each naming the setting at fault.
    pub fn for_grants(settings: &Settings) -> Result<Config, ConfigErrors> {
        build(settings, Purpose::Grants)
    }

    /// The target for a discovered vault whose discovery tag has `value`: the defaults, with
    /// the tags and profiles the value names (all of the defaults' when it names none, or is
    /// `default`) and the static rules it gives added to the defaults' ones.
    ///
    /// # Errors
    /// A [`ConfigError::Discovered`] naming the tag and what in its value is wrong.
    pub fn discovered_target(
        &self,
        id: ResourceId,
        value: &str,
    ) -> Result<VaultTarget, ConfigError> {
        let tag = self
            .discovery
            .as_ref()
            .map_or(DEFAULT_DISCOVERY_TAG, |d| d.tag.as_str())
            .to_owned();
        let settings = targets::discovered_settings(&self.defaults, value);
        let name = format!("{} {}", id.kind.noun(), id.name);
        let mut target =
            targets::target(id, &settings, false).map_err(|reason| ConfigError::Discovered {
                tag: tag.clone(),
                value: value.to_owned(),
                reason: format!("{name}: {reason}"),
            })?;
        target.source = TargetSource::Discovered {
            tag,
            value: value.to_owned(),
        };
        Ok(target)
    }

    /// The target for `vault` (by id or, when unambiguous, by name).
    pub fn find_target(&self, vault: &str) -> Option<&VaultTarget> {
        if let Ok(id) = vault.parse::<ResourceId>() {
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

/// The one validation pass: every setting, every problem.
fn build(settings: &Settings, purpose: Purpose) -> Result<Config, ConfigErrors> {
    let givens = Givens::from_settings(settings);
    let mut problems = ConfigErrors::default();
    let file = match givens.get(Key::ConfigFile) {
        Some(given) => layers::load_file(given, &mut problems),
        None => ConfigFile::default(),
    };
    let mut reader = Reader {
        givens: &givens,
        problems: &mut problems,
    };
    let cloud = reader.cloud().unwrap_or(Cloud::Public);
    let endpoints = endpoints::endpoints(&mut reader, cloud);
    let source = endpoints::source_spec(&mut reader, &endpoints);
    let state = state::state_spec(&mut reader, cloud, purpose == Purpose::Status);
    let has_state = state.is_some() || state_given(&givens);
    let run = run_values(&mut reader, cloud, has_state);
    let defaults = layers::vault_defaults(&mut reader, &file);
    let context = Context {
        needs_selection: purpose == Purpose::Reconcile,
        has_state,
    };
    targets::check_vault(&defaults, None, context, reader.problems);
    check_one_run_switches(&defaults, has_state, reader.problems);
    let targets = targets::listed_targets(&mut reader, &file, &defaults, context);
    let discovery = targets::discovery(&mut reader);
    let kinds = targets::kinds(&mut reader);
    let notify_url = endpoints::notify_url(&mut reader);
    check_log(&mut reader);
    match purpose {
        Purpose::Reconcile if discovery.is_none() && !vaults_given(&givens, &file) => {
            problems.push(targets::no_vaults(None));
        }
        Purpose::Status | Purpose::Grants if !state_given(&givens) => {
            problems.push(state::no_state());
        }
        _ => {}
    }
    problems.into_result(Config {
        cloud,
        endpoints,
        credential: run.credential,
        source,
        min_service_tags: run.min_service_tags,
        targets,
        concurrency: run.concurrency,
        observe: run.observe,
        http: run.http,
        state,
        grace_days: run.grace_days,
        allow_older: run.allow_older,
        discovery,
        kinds,
        defaults,
        write_budget: BudgetLimits::ARM_WRITES,
        read_budget: BudgetLimits::ARM_READS,
        index_trusted_after_write: crate::azure::index::INDEX_TRUSTED_AFTER_WRITE,
        max_in_flight: crate::azure::arm::MAX_IN_FLIGHT,
        notify_url,
    })
}

/// Whether any state location was given (valid or not).
fn state_given(givens: &Givens) -> bool {
    [
        Key::StateDir,
        Key::StateUrl,
        Key::WebjobsBlobServiceUri,
        Key::WebjobsAccountName,
    ]
    .iter()
    .any(|key| givens.get(*key).is_some())
}

/// Whether any resource was listed (valid or not), by either name, or may be in a file that
/// could not be read.
fn vaults_given(givens: &Givens, file: &ConfigFile) -> bool {
    givens.get(Key::Resources).is_some()
        || givens.get(Key::Vaults).is_some()
        || file.resources.is_some()
        || file.vaults.is_some()
        || !file.entries.is_empty()
        || file.unread
}

/// The run-wide settings that are plain values.
struct RunValues {
    credential: CredentialKind,
    min_service_tags: usize,
    concurrency: usize,
    observe: Observe,
    http: HttpOptions,
    grace_days: u32,
    allow_older: bool,
}

/// Reads the run-wide values, each checked, with the built-in default for one not given or
/// refused. Keeping old ranges and going back to an older document need state.
fn run_values(reader: &mut Reader<'_>, cloud: Cloud, has_state: bool) -> RunValues {
    let grace_days = reader
        .number(Key::GraceDays, 0..=MAX_GRACE_DAYS)
        .unwrap_or(DEFAULT_GRACE_DAYS);
    let allow_older = reader.switch(Key::AllowOlder).unwrap_or(false);
    for (key, on) in [
        (Key::GraceDays, grace_days > 0),
        (Key::AllowOlder, allow_older),
    ] {
        if let (Some(given), true, false) = (reader.givens.get(key), on, has_state) {
            reader.problems.push(targets::needs_state(given));
        }
    }
    RunValues {
        credential: reader.credential().unwrap_or_default(),
        min_service_tags: reader
            .number(Key::MinServiceTags, 1..=usize::MAX)
            .unwrap_or_else(|| source::default_min_tags(cloud)),
        concurrency: reader
            .number(Key::Concurrency, 1..=usize::MAX)
            .unwrap_or(DEFAULT_CONCURRENCY),
        observe: reader.observe().unwrap_or_default(),
        http: http_options(reader),
        grace_days,
        allow_older,
    }
}

/// The one-run overrides of the guards that compare with what the state remembers.
fn check_one_run_switches(defaults: &Resolved, has_state: bool, problems: &mut ConfigErrors) {
    if has_state {
        return;
    }
    let on = [
        (
            Key::AcceptMissingRules,
            defaults.safety.accept_missing_rules,
        ),
        (
            Key::AllowTagShrink,
            !defaults.safety.allow_tag_shrink.is_empty(),
        ),
    ];
    for (key, on) in on {
        if let (Some(given), true) = (defaults.given.get(&key), on) {
            problems.push(targets::needs_state(given));
        }
    }
}

/// How hard to try over HTTP: timeouts of at least a second (a call's deadline shorter than one
/// attempt's simply cuts the attempt short).
fn http_options(reader: &mut Reader<'_>) -> HttpOptions {
    let mut secs =
        |key, default| Duration::from_secs(reader.number(key, 1..=u64::MAX).unwrap_or(default));
    let attempt_timeout = secs(Key::HttpTimeoutSecs, DEFAULT_HTTP_TIMEOUT_SECS);
    let call_timeout = secs(Key::HttpCallTimeoutSecs, DEFAULT_HTTP_CALL_TIMEOUT_SECS);
    HttpOptions {
        attempt_timeout,
        max_retries: reader
            .number(Key::HttpMaxRetries, 0..=u32::MAX)
            .unwrap_or(DEFAULT_HTTP_MAX_RETRIES),
        initial_retry_delay: Duration::from_millis(
            reader
                .number(Key::HttpRetryDelayMs, 0..=u64::MAX)
                .unwrap_or(DEFAULT_HTTP_RETRY_DELAY_MS),
        ),
        call_timeout,
        extra_ca: extra_ca(reader),
    }
}

/// The certificates of `--ca-file`, read and checked now: a file that is missing or holds no
/// PEM certificate is a problem of the settings, not a TLS failure at the first call.
fn extra_ca(reader: &mut Reader<'_>) -> Option<Vec<u8>> {
    let given = reader.givens.get(Key::CaFile)?;
    let path = given.text().trim().to_owned();
    let problem = match std::fs::read(&path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            "no such file; expected a PEM certificate file".to_owned()
        }
        Err(err) => format!("cannot be read ({err}); expected a PEM certificate file"),
        Ok(pem) => match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certificates) if !certificates.is_empty() => return Some(pem),
            _ => "holds no PEM certificate; expected a PEM certificate file".to_owned(),
        },
    };
    reader.invalid(given, &path, problem);
    None
}

/// The log filter must be one `tracing_subscriber` reads.
fn check_log(reader: &mut Reader<'_>) {
    let Some(given) = reader.givens.get(Key::Log) else {
        return;
    };
    let text = given.text().trim();
    if let Err(err) = tracing_subscriber::EnvFilter::builder().parse(text) {
        let reason = format!(
            "not a log filter ({err}); expected directives such as info or tagfence=debug,warn"
        );
        reader.invalid(given, text, reason);
    }
}

/// What a Service Tags document read from a file (`plan`, `tags`) must be, as a fetched one
/// must: of this cloud, with at least this many tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentSettings {
    /// The cloud the document must be for.
    pub cloud: Cloud,
    /// The fewest tags a complete document has.
    pub min_service_tags: usize,
}

impl DocumentSettings {
    /// Reads the cloud and the fewest tags from `settings`.
    ///
    /// # Errors
    /// Every problem found.
    pub fn from_settings(settings: &Settings) -> Result<DocumentSettings, ConfigErrors> {
        let givens = Givens::from_settings(settings);
        let mut problems = ConfigErrors::default();
        let document = document(&mut Reader {
            givens: &givens,
            problems: &mut problems,
        });
        problems.into_result(document)
    }
}

fn document(reader: &mut Reader<'_>) -> DocumentSettings {
    let cloud = reader.cloud().unwrap_or(Cloud::Public);
    DocumentSettings {
        cloud,
        min_service_tags: reader
            .number(Key::MinServiceTags, 1..=usize::MAX)
            .unwrap_or_else(|| source::default_min_tags(cloud)),
    }
}

/// The settings of `plan`, checked as `apply`'s are: a selection, its limits, and what the
/// document must be.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanSettings {
    /// Profiles expanded; may be empty (the plan then says nothing is selected).
    pub selection: Selection,
    /// As given, not yet capped by a kind: the plan's resource's kind caps them
    /// ([`kind_limits`]) once its document is read.
    pub limits: Limits,
    pub prune: bool,
    pub document: DocumentSettings,
}

impl PlanSettings {
    /// Reads the selection, the limits, `prune` and the document's settings from `settings`.
    ///
    /// # Errors
    /// Every problem found, each naming the setting at fault.
    pub fn from_settings(settings: &Settings) -> Result<PlanSettings, ConfigErrors> {
        let givens = Givens::from_settings(settings);
        let mut problems = ConfigErrors::default();
        let mut reader = Reader {
            givens: &givens,
            problems: &mut problems,
        };
        let document = document(&mut reader);
        let resolved = layers::Layer::read(&mut reader).over(&Resolved::builtin());
        let context = Context {
            needs_selection: false,
            has_state: true,
        };
        targets::check_vault(&resolved, None, context, reader.problems);
        let static_rules = resolved
            .static_rules
            .iter()
            .filter_map(|rule| desired::parse_static_rule(rule).ok())
            .collect();
        let tags = profiles::expand(&resolved.tags).unwrap_or_default();
        problems.into_result(PlanSettings {
            selection: Selection {
                tags,
                static_rules,
                grace: Vec::new(),
            },
            limits: resolved.limits,
            prune: resolved.prune,
            document,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::core::desired::FitMode;
    use crate::core::fit::Slash31;

    const KV_A: &str =
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-a";
    const KV_B: &str =
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-b";

    /// Settings listing kv-a and selecting `tags`, as flags would.
    fn tagged(tags: &[&str]) -> Settings {
        Settings {
            vaults: vec![KV_A.to_owned()],
            selection: SelectionSettings {
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                static_rules: Vec::new(),
            },
            ..Settings::default()
        }
    }

    /// `tagged(["X"])` with `key` given as `text` from the variable.
    fn from_env(key: Key, text: &str) -> Settings {
        let mut settings = tagged(&["X"]);
        settings.texts.set(key, text);
        settings
            .origins
            .record(key, Origin::Env(key.env().to_owned()));
        settings
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tagfence-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn problems(settings: &Settings) -> Vec<String> {
        Config::from_settings(settings).unwrap_err().lines()
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
                extra_ca: None,
            }
        );
        assert_eq!((config.grace_days, config.allow_older), (0, false));
        assert_eq!((config.discovery, config.notify_url), (None, None));
        assert_eq!(config.defaults.limits, Limits::default());
    }

    #[test]
    fn typed_settings_given_as_text_are_parsed_any_case() {
        let mut settings = tagged(&["X"]);
        for (key, text) in [
            (Key::MaxRules, " 900 "),
            (Key::Fit, "Summarize"),
            (Key::Cloud, "azurechinacloud"),
            (Key::Credential, "Developer-Tools"),
            (Key::Concurrency, "2"),
            (Key::HttpTimeoutSecs, "7"),
            (Key::MaxTagShrink, "0.25"),
        ] {
            settings.texts.set(key, text);
        }
        settings.state_dir = Some(std::env::temp_dir());
        let config = Config::from_settings(&settings).unwrap();
        let target = &config.targets[0];
        assert_eq!(
            (target.limits.max_rules, target.limits.fit),
            (900, FitMode::Summarize)
        );
        assert_eq!(
            (config.cloud, config.credential),
            (Cloud::AzureChina, CredentialKind::DeveloperTools)
        );
        assert_eq!(
            (config.concurrency, config.http.attempt_timeout),
            (2, Duration::from_secs(7))
        );
        assert_eq!(target.safety.max_tag_shrink, 0.25);
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
        let given = |key| {
            let mut givens = Givens::default();
            givens.insert(Key::ConfigFile, vec![path.display().to_string()], None);
            givens.get(key).cloned().unwrap()
        };
        let mut problems = ConfigErrors::default();
        let file = layers::load_file(&given(Key::ConfigFile), &mut problems);
        assert!(problems.is_empty(), "{problems}");
        let defaults = file.defaults.over(&Resolved::builtin());
        let origin = |table: &str, key| Origin::File {
            path: path.clone(),
            table: table.to_owned(),
            key,
        };
        assert_eq!(
            defaults.origin(Key::Tags),
            Some(&origin("[defaults]", Key::Tags))
        );
        let own = file.entries[0].settings.over(&defaults);
        assert_eq!(
            own.origin(Key::MaxRules),
            Some(&origin("[[vault]] #1", Key::MaxRules))
        );
        assert_eq!(
            own.origin(Key::Tags),
            Some(&origin("[defaults]", Key::Tags))
        );
        assert_eq!(
            file.entries[0].id.shown_all(),
            format!("{}: [[vault]] #1 id = \"{KV_B}\"", path.display())
        );
    }

    #[test]
    fn every_problem_is_reported_together_each_naming_its_setting() {
        let mut settings = tagged(&["hosted-agents:mars"]);
        settings.vaults.push("kv-b".to_owned());
        for (key, text) in [
            (Key::MaxRules, "lots"),
            (Key::Prune, "yes"),
            (Key::GraceDays, "3"),
        ] {
            settings.texts.set(key, text);
            settings
                .origins
                .record(key, Origin::Env(key.env().to_owned()));
        }
        settings.concurrency = Some(0);
        assert_eq!(
            problems(&settings),
            [
                "TAGFENCE_GRACE_DAYS=3: needs state, and no state location is configured; give TAGFENCE_STATE_DIR or TAGFENCE_STATE_URL too",
                "concurrency = 0: expected a whole number of vaults, at least 1",
                "tags = hosted-agents:mars: unknown geography 'mars' in profile 'hosted-agents:mars'; known: united-states, europe, united-kingdom, canada, brazil, australia, asia-pacific, india, france",
                "TAGFENCE_MAX_RULES=lots: expected a whole number from 1 to 1000 (a firewall's IP rules; each kind's own limit caps it: key vault 1000, storage account 400, container registry 100)",
                "TAGFENCE_PRUNE=yes: expected true or false (or 1 or 0)",
                "vaults entry 'kv-b': not a resource id tagfence manages (it does not have eight segments); expected /subscriptions/<GUID>/resourceGroups/<group>/providers/<type>/<name>, <type> being Microsoft.KeyVault/vaults, Microsoft.Storage/storageAccounts or Microsoft.ContainerRegistry/registries",
            ]
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
        let s1 = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-a";
        let cases: Vec<(Settings, String)> = vec![
            (with(&[s1], &["X"]), format!("vaults = {s1}: not a resource id tagfence manages (the subscription 's1' is not a GUID); expected {RESOURCE_ID_SHAPE}")),
            (with(&[KV_A], &[]), format!("vault {KV_A}: no tags or static rules selected; give --tag (TAGFENCE_TAGS) or --static-rule (TAGFENCE_STATIC_RULES)")),
            (with(&[KV_A, &upper], &["X"]), format!("vault {} is listed twice: vaults entry '{KV_A}' and vaults entry '{upper}'", upper.replace("RESOURCEGROUPS", "resourceGroups").replace("SUBSCRIPTIONS", "subscriptions").replace("PROVIDERS", "providers").replace("MICROSOFT.KEYVAULT", "Microsoft.KeyVault").replace("VAULTS", "vaults"))),
            (Settings { selection: SelectionSettings { tags: Vec::new(), static_rules: vec!["10.0.0.1".into()] }, ..with(&[KV_A], &[]) }, "static_rules = 10.0.0.1: overlaps the reserved range 10.0.0.0/8 (private network, RFC 1918), which Key Vault and Storage refuse; expected a public address".into()),
            (Settings { source: Some("api".into()), ..tagged(&["X"]) }, "source = api: the Discovery API needs a subscription and a location; give --subscription-id (TAGFENCE_SUBSCRIPTION_ID) and --location (TAGFENCE_LOCATION) too".into()),
            (Settings { source: Some("http://example.com/tags.json".into()), ..tagged(&["X"]) }, "source = http://example.com/tags.json: uses plain http; expected https (plain http only for a loopback host, a local emulator)".into()),
            (Settings { arm_endpoint: Some("http://management.azure.com".into()), ..tagged(&["X"]) }, "arm_endpoint = http://management.azure.com: uses plain http; expected https (plain http only for a loopback host, a local emulator)".into()),
            (Settings { config_file: Some(bad_file.clone()), ..tagged(&["X"]) }, format!("{}: [defaults] tagz: unknown key; [defaults] takes tags, static_rules, max_rules, fit, envelope, max_extra_addresses, max_remove_fraction, slash31, prune, adopt_existing, init_firewall, max_tag_shrink, grant_principals, grant_max_ttl, grant_max_per_vault", bad_file.display())),
            (Settings { state_dir: Some("/tmp/s".into()), state_url: Some("https://a.blob.core.windows.net".into()), ..tagged(&["X"]) }, "state_dir = /tmp/s: give either a state directory or a state URL, not both (state_url is given too)".into()),
            (Settings { state_url: Some("http://a.blob.core.windows.net".into()), ..tagged(&["X"]) }, "state_url = http://a.blob.core.windows.net: expected an https URL: storage tokens are never sent in clear".into()),
            (Settings { state_url: Some("https://a.blob.core.windows.net/c?sig=x".into()), ..tagged(&["X"]) }, "must not carry a query (no SAS tokens".into()),
            (Settings { state_url: Some("https://a.blob.core.windows.net/Bad_Name".into()), ..tagged(&["X"]) }, "'Bad_Name' is not a valid container".into()),
            (Settings { state_container: Some("Bad_Name".into()), webjobs_account_name: Some("acct".into()), ..tagged(&["X"]) }, "state_container = Bad_Name: expected a container name of 3-63 lowercase letters, digits and single hyphens".into()),
            (Settings { grace_days: Some(400), ..tagged(&["X"]) }, "grace_days = 400: expected a whole number of days from 0 to 90".into()),
            (Settings { max_tag_shrink: Some(1.5), state_dir: Some("/tmp/s".into()), ..tagged(&["X"]) }, "max_tag_shrink = 1.5: expected a fraction from 0 to 1 (0.2 is 20%)".into()),
            (Settings { max_tag_shrink: Some(0.3), ..tagged(&["X"]) }, "max_tag_shrink = 0.3: needs state, and no state location is configured; give --state-dir (TAGFENCE_STATE_DIR) or --state-url (TAGFENCE_STATE_URL) too".into()),
            (Settings { discover_subscriptions: vec!["s1".into()], ..tagged(&["X"]) }, "discover_subscriptions = s1: not a subscription id; expected a GUID (00000000-0000-0000-0000-000000000000)".into()),
            (Settings { subscription_id: Some("s1".into()), ..tagged(&["X"]) }, "subscription_id = s1: not a subscription id; expected a GUID (00000000-0000-0000-0000-000000000000)".into()),
            (Settings { discover_management_groups: vec!["mg".into()], discover_tag: Some("a'b".into()), ..tagged(&["X"]) }, "discover_tag = a'b: expected a tag name of at most 512 characters without quotes, backslashes or any of < > % & ? /".into()),
            (Settings { notify_url: Some("http://hooks.example.com/secret".into()), ..tagged(&["X"]) }, "notify_url: uses plain http; expected https (plain http only for a loopback host, a local emulator)".into()),
            (Settings { log: Some("tagfence=loud".into()), ..tagged(&["X"]) }, "log = tagfence=loud: not a log filter".into()),
            (Settings { http_timeout_secs: Some(0), ..tagged(&["X"]) }, "http_timeout_secs = 0: expected a whole number of seconds, at least 1".into()),
            (Settings { min_service_tags: Some(0), ..tagged(&["X"]) }, "min_service_tags = 0: expected a whole number of tags, at least 1".into()),
            (Settings { limits: LimitSettings { max_rules: Some(2000), ..LimitSettings::default() }, ..tagged(&["X"]) }, "max_rules = 2000: expected a whole number from 1 to 1000".into()),
            (Settings { limits: LimitSettings { max_extra_addresses: Some(5), ..LimitSettings::default() }, ..tagged(&["X"]) }, "max_extra_addresses = 5: only used by a summarized fit, and the fit is exact by default; give --fit summarize (TAGFENCE_FIT=summarize) too, or leave it out".into()),
            (Settings { allow_older: true, ..tagged(&["X"]) }, "allow_older = true: needs state".into()),
            (Settings { accept_missing_rules: true, ..tagged(&["X"]) }, "accept_missing_rules = true: needs state".into()),
            (Settings { location: Some("West Europe".into()), ..tagged(&["X"]) }, "location = West Europe: not an Azure region's name; expected one such as westeurope".into()),
            (Settings { webjobs_account_name: Some("My_Account".into()), ..tagged(&["X"]) }, "webjobs_account_name = My_Account: not a storage account's name; expected 3-24 lowercase letters and digits".into()),
            (Settings::default(), "no resources to manage; give --resource (TAGFENCE_RESOURCES), --vault (TAGFENCE_VAULTS), resources or vaults in the configuration file, or a discovery scope (--discover-subscription (TAGFENCE_DISCOVER_SUBSCRIPTIONS) or --discover-management-group (TAGFENCE_DISCOVER_MANAGEMENT_GROUPS))".into()),
        ];
        for (settings, expected) in cases {
            let lines = problems(&settings);
            assert!(
                lines.iter().any(|line| line.contains(&expected)),
                "{settings:?}: {lines:?}"
            );
            assert!(lines.iter().all(|line| !line.contains('\n')), "{lines:?}");
            assert!(
                lines.iter().all(|line| !line.contains("secret")),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn a_file_that_cannot_be_read_is_named_by_its_setting_and_hides_no_other_problem() {
        let settings = Settings {
            config_file: Some("no-such-file.toml".into()),
            ..Settings::default()
        };
        assert_eq!(
            problems(&settings),
            ["config_file = no-such-file.toml: cannot be read (No such file or directory (os error 2)); expected a TOML file"]
        );
    }

    #[test]
    fn a_vault_that_selects_nothing_is_told_how_in_the_way_it_was_listed() {
        let mut settings = Settings {
            vaults: vec![KV_A.into()],
            ..Settings::default()
        };
        settings
            .origins
            .record(Key::Vaults, Origin::Env("TAGFENCE_VAULTS".into()));
        assert_eq!(
            problems(&settings),
            [format!(
                "vault {KV_A}: no tags or static rules selected; give TAGFENCE_TAGS or TAGFENCE_STATIC_RULES"
            )]
        );
    }

    #[test]
    fn a_switch_from_the_environment_turns_off_too() {
        let path = temp_file("switch.toml", "[defaults]\nprune = true\n");
        let mut settings = from_env(Key::Prune, "0");
        settings.config_file = Some(path);
        let config = Config::from_settings(&settings).unwrap();
        assert!(!config.targets[0].prune);
        let config = Config::from_settings(&from_env(Key::AdoptExisting, "TRUE")).unwrap();
        assert!(config.targets[0].safety.adopt_existing);
    }

    #[test]
    fn status_needs_a_state_that_exists_and_no_selection() {
        let missing = std::env::temp_dir().join(format!("tagfence-no-such-{}", std::process::id()));
        let mut settings = Settings {
            vaults: vec![KV_A.to_owned()],
            state_dir: Some(missing.clone()),
            ..Settings::default()
        };
        settings
            .origins
            .record(Key::StateDir, Origin::Flag("--state-dir".into()));
        let err = Config::for_status(&settings).unwrap_err();
        assert_eq!(
            err.lines(),
            [format!(
                "--state-dir {0}: no such directory; status only reads state (`tagfence apply --state-dir {0}` creates it on its first run)",
                missing.display()
            )]
        );
        settings.state_dir = Some(std::env::temp_dir());
        let config = Config::for_status(&settings).unwrap();
        assert_eq!(config.targets.len(), 1, "status shows every listed vault");
        // `apply` creates the directory on its first run.
        settings.state_dir = Some(missing);
        settings.selection.tags = vec!["X".into()];
        assert!(Config::from_settings(&settings).is_ok());
        let err = Config::for_status(&Settings::default()).unwrap_err();
        assert!(
            err.lines()[0].starts_with("a state location is needed"),
            "{err}"
        );
    }

    #[test]
    fn state_lives_where_the_settings_say() {
        let state = |settings: Settings| {
            Config::from_settings(&Settings {
                vaults: tagged(&["X"]).vaults,
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
        let document = temp_file("tags.json", "{}");
        let spec = |s: &str| {
            Config::from_settings(&Settings {
                source: Some(s.into()),
                subscription_id: Some("00000000-0000-0000-0000-000000000001".into()),
                location: Some("westeurope".into()),
                ..tagged(&["X"])
            })
            .unwrap()
            .source
        };
        assert_eq!(
            spec("api"),
            SourceSpec::Api {
                subscription: "00000000-0000-0000-0000-000000000001".into(),
                location: "westeurope".into()
            }
        );
        let path = document.display().to_string();
        assert_eq!(spec(&path), SourceSpec::File(document));
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
    fn discovery_alone_checks_the_defaults_up_front() {
        let settings = Settings {
            selection: SelectionSettings {
                tags: vec!["hosted-agents:mars".into()],
                static_rules: vec!["10.0.0.1".into()],
            },
            max_tag_shrink: Some(2.0),
            discover_subscriptions: vec!["00000000-0000-0000-0000-000000000001".into()],
            ..Settings::default()
        };
        let lines = problems(&settings);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("static_rules = 10.0.0.1"), "{lines:?}");
        assert!(
            lines[1].starts_with("tags = hosted-agents:mars"),
            "{lines:?}"
        );
        assert!(lines[2].starts_with("max_tag_shrink = 2"), "{lines:?}");
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
        let id: ResourceId = KV_A.parse().unwrap();
        let target = config.discovered_target(id.clone(), "default").unwrap();
        assert_eq!(target.selection.tags, ["AzureDevOps"]);
        let target = config
            .discovered_target(id.clone(), "AzureCloud.westeurope; 52.4.5.6")
            .unwrap();
        assert_eq!(target.selection.tags, ["AzureCloud.westeurope"]);
        assert_eq!(target.selection.static_rules.len(), 2);
        let err = config.discovered_target(id, "10.0.0.1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "its tag tagfence='10.0.0.1': vault kv-a: static rule '10.0.0.1' overlaps the reserved range 10.0.0.0/8 (private network, RFC 1918), which Key Vault and Storage refuse; expected a public address"
        );
    }

    #[test]
    fn plan_settings_are_checked_as_applys_are() {
        let mut settings = Settings {
            selection: SelectionSettings {
                tags: vec!["hosted-agents:europe".into()],
                static_rules: vec!["52.1.2.3".into()],
            },
            ..Settings::default()
        };
        settings.texts.set(Key::Fit, "summarize");
        settings.texts.set(Key::Cloud, "AzureUSGovernment");
        let plan = PlanSettings::from_settings(&settings).unwrap();
        assert!(plan
            .selection
            .tags
            .contains(&"AzureCloud.westeurope".to_owned()));
        assert_eq!(plan.limits.fit, FitMode::Summarize);
        assert_eq!(
            plan.document,
            DocumentSettings {
                cloud: Cloud::AzureGovernment,
                min_service_tags: 100
            }
        );
        settings.texts.set(Key::MaxRules, "0");
        let err = PlanSettings::from_settings(&settings).unwrap_err();
        assert_eq!(err.len(), 1, "{err}");
    }

    const OBJECT_ID: &str = "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b";
    const APP_ID: &str = "0A1B2C3D-4E5F-4061-8273-94A5B6C7D8E9";

    #[test]
    fn grants_default_to_nobody_with_the_built_in_limits() {
        let config = Config::from_settings(&Settings {
            discover_subscriptions: vec!["00000000-0000-0000-0000-000000000001".into()],
            ..tagged(&["X"])
        })
        .unwrap();
        let expected = GrantPolicy {
            principals: Vec::new(),
            max_ttl: crate::core::grant::DEFAULT_MAX_TTL,
            max_live: crate::core::grant::DEFAULT_MAX_LIVE,
        };
        assert_eq!(GrantPolicy::default(), expected);
        assert_eq!(expected.max_ttl, Duration::from_secs(2 * 3600));
        assert_eq!(expected.max_live, 50);
        assert_eq!(config.targets[0].grants, expected);
        let discovered = config
            .discovered_target(KV_B.parse().unwrap(), "default")
            .unwrap();
        assert_eq!(discovered.grants, expected);
    }

    #[test]
    fn grant_settings_layer_like_the_others_and_a_vault_entry_overrides_each() {
        let path = temp_file(
            "grants.toml",
            &format!(
                "vaults = [\"{KV_A}\"]\n\n[defaults]\ntags = [\"AzureDevOps\"]\ngrant_principals = [\"{OBJECT_ID}\"]\ngrant_max_ttl = \"1h\"\ngrant_max_per_vault = 10\n\n[[vault]]\nid = \"{KV_B}\"\ngrant_principals = \"{APP_ID}, {OBJECT_ID}\"\ngrant_max_ttl = \"1h30m\"\ngrant_max_per_vault = 3\n"
            ),
        );
        // The variable is over [defaults], under the [[vault]] entry.
        let mut settings = from_env(Key::GrantMaxTtl, "45m");
        settings.vaults.clear();
        settings.selection.tags.clear();
        settings.config_file = Some(path);
        settings.discover_subscriptions = vec!["00000000-0000-0000-0000-000000000001".into()];
        let config = Config::from_settings(&settings).unwrap();
        let a = config.find_target("kv-a").unwrap();
        assert_eq!(
            a.grants,
            GrantPolicy {
                principals: vec![OBJECT_ID.to_owned()],
                max_ttl: Duration::from_secs(45 * 60),
                max_live: 10,
            }
        );
        let b = config.find_target("kv-b").unwrap();
        assert_eq!(
            b.grants,
            GrantPolicy {
                principals: vec![APP_ID.to_ascii_lowercase(), OBJECT_ID.to_owned()],
                max_ttl: Duration::from_secs(90 * 60),
                max_live: 3,
            }
        );
        // A discovered vault gets the defaults' grants, as it gets their other settings.
        let id = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-c";
        let c = config
            .discovered_target(id.parse().unwrap(), "default")
            .unwrap();
        assert_eq!(c.grants, a.grants);
    }

    #[test]
    fn grant_settings_given_as_typed_values_are_checked_as_text_is() {
        let config = Config::from_settings(&Settings {
            grant_principals: vec![format!(" {APP_ID} "), APP_ID.to_ascii_lowercase()],
            grant_max_ttl: Some(Duration::from_secs(24 * 3600)),
            grant_max_per_vault: Some(1000),
            ..tagged(&["X"])
        })
        .unwrap();
        assert_eq!(
            config.targets[0].grants,
            GrantPolicy {
                principals: vec![APP_ID.to_ascii_lowercase()],
                max_ttl: Duration::from_secs(24 * 3600),
                max_live: 1000,
            }
        );
        let lines = problems(&Settings {
            grant_max_ttl: Some(Duration::from_secs(59)),
            grant_max_per_vault: Some(1001),
            ..tagged(&["X"])
        });
        assert_eq!(
            lines,
            [
                "grant_max_ttl = 59s: expected a duration from 1m to 24h, written with its units (90s, 30m, 2h, 1h30m)",
                "grant_max_per_vault = 1001: expected a whole number of live grants from 1 to 1000 (each grant is one of the firewall's IP rules; each kind's own limit caps it)",
            ]
        );
    }

    #[test]
    fn a_bad_grant_setting_is_named_with_what_is_allowed() {
        let ttl =
            "expected a duration from 1m to 24h, written with its units (90s, 30m, 2h, 1h30m)";
        let live = "expected a whole number of live grants from 1 to 1000 (each grant is one of the firewall's IP rules; each kind's own limit caps it)";
        let guid = "not an object id or application id; expected a GUID: a Microsoft Entra object id or application (client) id (00000000-0000-0000-0000-000000000000)";
        let cases = [
            (
                Key::GrantMaxTtl,
                "2x",
                format!("TAGFENCE_GRANT_MAX_TTL=2x: {ttl}"),
            ),
            (
                Key::GrantMaxTtl,
                "30",
                format!("TAGFENCE_GRANT_MAX_TTL=30: {ttl}"),
            ),
            (
                Key::GrantMaxTtl,
                "25h",
                format!("TAGFENCE_GRANT_MAX_TTL=25h: {ttl}"),
            ),
            (
                Key::GrantMaxTtl,
                "24h1s",
                format!("TAGFENCE_GRANT_MAX_TTL=24h1s: {ttl}"),
            ),
            (
                Key::GrantMaxTtl,
                "30s",
                format!("TAGFENCE_GRANT_MAX_TTL=30s: {ttl}"),
            ),
            (
                Key::GrantMaxPerVault,
                "0",
                format!("TAGFENCE_GRANT_MAX_PER_VAULT=0: {live}"),
            ),
            (
                Key::GrantMaxPerVault,
                "many",
                format!("TAGFENCE_GRANT_MAX_PER_VAULT=many: {live}"),
            ),
        ];
        for (key, text, expected) in cases {
            assert_eq!(problems(&from_env(key, text)), [expected], "{text}");
        }
        // A list's entries are checked one by one, each named.
        let mut settings = Settings {
            grant_principals: vec![
                OBJECT_ID.into(),
                "pipeline-sp".into(),
                "{6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b}".into(),
            ],
            ..tagged(&["X"])
        };
        settings.origins.record(
            Key::GrantPrincipals,
            Origin::Env("TAGFENCE_GRANT_PRINCIPALS".into()),
        );
        assert_eq!(
            problems(&settings),
            [
                format!("TAGFENCE_GRANT_PRINCIPALS entry 'pipeline-sp': {guid}"),
                format!("TAGFENCE_GRANT_PRINCIPALS entry '{{6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b}}': {guid}"),
            ]
        );
        settings.grant_principals = vec!["pipeline-sp".into()];
        assert_eq!(
            problems(&settings),
            [format!("TAGFENCE_GRANT_PRINCIPALS=pipeline-sp: {guid}")]
        );
    }

    #[test]
    fn a_bad_grant_setting_in_the_file_is_named_by_its_table_and_key() {
        let path = temp_file(
            "bad-grants.toml",
            &format!(
                "[defaults]\ntags = [\"AzureDevOps\"]\ngrant_max_ttl = \"2x\"\n\n[[vault]]\nid = \"{KV_B}\"\ngrant_principals = [\"alice\"]\ngrant_max_ttl = \"25h\"\ngrant_max_per_vault = 0\n"
            ),
        );
        let lines = problems(&Settings {
            config_file: Some(path.clone()),
            ..Settings::default()
        });
        let file = path.display();
        assert_eq!(
            lines,
            [
                format!("{file}: [defaults] grant_max_ttl = \"2x\": expected a duration from 1m to 24h, written with its units (90s, 30m, 2h, 1h30m)"),
                format!("{file}: [[vault]] #1 grant_principals = \"alice\": not an object id or application id; expected a GUID: a Microsoft Entra object id or application (client) id (00000000-0000-0000-0000-000000000000)"),
                format!("{file}: [[vault]] #1 grant_max_ttl = \"25h\": expected a duration from 1m to 24h, written with its units (90s, 30m, 2h, 1h30m)"),
                format!("{file}: [[vault]] #1 grant_max_per_vault = 0: expected a whole number of live grants from 1 to 1000 (each grant is one of the firewall's IP rules; each kind's own limit caps it)"),
            ]
        );
    }

    const SA: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sta1";
    const ACR: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acr0001";

    /// `settings` with `key`'s origin recorded as its variable.
    fn env_origin(mut settings: Settings, key: Key) -> Settings {
        settings
            .origins
            .record(key, Origin::Env(key.env().to_owned()));
        settings
    }

    #[test]
    fn resources_and_vaults_are_one_list_of_every_kind() {
        let config = Config::from_settings(&Settings {
            resources: vec![SA.into(), ACR.into()],
            vaults: vec![KV_A.into()],
            ..tagged(&["X"])
        })
        .unwrap();
        let mut kinds: Vec<Kind> = config.targets.iter().map(|t| t.id.kind).collect();
        kinds.sort_unstable();
        assert_eq!(kinds, Kind::ALL);
        // `vaults` takes any kind too, and `resources` alone is enough.
        let config = Config::from_settings(&Settings {
            vaults: vec![SA.into()],
            ..tagged(&["X"])
        })
        .unwrap();
        assert_eq!(config.targets[0].id.kind, Kind::StorageAccount);
        let config = Config::from_settings(&Settings {
            resources: vec![KV_B.into()],
            vaults: Vec::new(),
            ..tagged(&["X"])
        })
        .unwrap();
        assert_eq!(config.find_target("kv-b").unwrap().id.kind, Kind::KeyVault);
    }

    #[test]
    fn a_resource_listed_under_both_names_is_listed_twice() {
        let upper = SA.replace("/resourceGroups/rg/", "/RESOURCEGROUPS/RG/");
        let settings = env_origin(
            env_origin(
                Settings {
                    resources: vec![SA.into()],
                    vaults: vec![upper.clone()],
                    ..tagged(&["X"])
                },
                Key::Resources,
            ),
            Key::Vaults,
        );
        assert_eq!(
            problems(&settings),
            [format!(
                "storage account {} is listed twice: TAGFENCE_RESOURCES={SA} and TAGFENCE_VAULTS={upper}",
                SA.replace("/rg/", "/RG/")
            )]
        );
        // Across the flags and the file, and between a list and an entry.
        let path = temp_file(
            "twice.toml",
            &format!("resources = [\"{KV_A}\"]\n\n[[vault]]\nid = \"{SA}\"\n\n[[resource]]\nid = \"{ACR}\"\n"),
        );
        let lines = problems(&Settings {
            config_file: Some(path.clone()),
            resources: vec![SA.into()],
            ..tagged(&["X"])
        });
        let file = path.display();
        assert_eq!(
            lines,
            [
                format!("vault {KV_A} is listed twice: vaults = {KV_A} and {file}: resources entry \"{KV_A}\""),
                format!("storage account {SA} is listed twice: resources = {SA} and {file}: [[vault]] #1 id = \"{SA}\""),
            ]
        );
    }

    #[test]
    fn resource_entries_are_vault_entries_by_another_name() {
        let path = temp_file(
            "resources.toml",
            &format!(
                "resources = [\"{KV_A}\"]\n\n[defaults]\ntags = [\"AzureDevOps\"]\n\n[[resource]]\nid = \"{SA}\"\nmax_rules = 300\nslash31 = \"keep\"\n\n[[resource]]\nid = \"{ACR}\"\ntags = [\"AzureCloud.westeurope\"]\n\n[[vault]]\nid = \"{KV_B}\"\nmax_rules = 200\n"
            ),
        );
        let config = Config::from_settings(&Settings {
            config_file: Some(path),
            ..Settings::default()
        })
        .unwrap();
        assert_eq!(config.targets.len(), 4);
        let sa = config.find_target("sta1").unwrap();
        assert_eq!(
            (sa.limits.max_rules, sa.limits.slash31),
            (300, Slash31::Split)
        );
        let acr = config.find_target(ACR).unwrap();
        assert_eq!(acr.selection.tags, ["AzureCloud.westeurope"]);
        assert_eq!(acr.limits.max_rules, 100);
        assert_eq!(config.find_target("kv-b").unwrap().limits.max_rules, 200);
        assert_eq!(config.find_target("kv-a").unwrap().limits.max_rules, 1000);
    }

    #[test]
    fn a_bad_resource_entry_is_named_by_the_table_written() {
        let path = temp_file(
            "bad-resources.toml",
            &format!(
                "[defaults]\ntags = [\"AzureDevOps\"]\n\n[[resource]]\nid = \"{SA}\"\n\n[[resource]]\nmax_rules = 5\n\n[[resource]]\nid = \"sta2\"\nfit = \"lossy\"\n\n[[vault]]\nid = \"{SA}\"\n"
            ),
        );
        let lines = Config::from_settings(&Settings {
            config_file: Some(path.clone()),
            ..Settings::default()
        })
        .unwrap_err()
        .lines();
        let file = path.display();
        assert_eq!(
            lines,
            [
                format!("{file}: [[resource]] #2 id is needed: each [[resource]] entry names its resource by ARM resource id"),
                format!("{file}: [[resource]] #3 fit = \"lossy\": expected exact or summarize"),
                format!("{file}: [[resource]] #3 id = \"sta2\": not a resource id tagfence manages (it does not have eight segments); expected {RESOURCE_ID_SHAPE}"),
                format!("storage account {SA} is listed twice: {file}: [[resource]] #1 id = \"{SA}\" and {file}: [[vault]] #1 id = \"{SA}\""),
            ]
        );
        // `resource` must be entries, as `vault` must.
        let path = temp_file("resource-scalar.toml", "resource = 3\n");
        let lines = problems(&Settings {
            config_file: Some(path.clone()),
            ..tagged(&["X"])
        });
        assert_eq!(
            lines,
            [format!(
                "{}: resource: expected a [defaults] table, and [[resource]] or [[vault]] entries",
                path.display()
            )]
        );
    }

    #[test]
    fn a_malformed_id_is_refused_naming_the_types_taken() {
        let web = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Web/sites/app";
        let settings = env_origin(
            Settings {
                resources: vec![web.into()],
                ..tagged(&["X"])
            },
            Key::Resources,
        );
        assert_eq!(
            problems(&settings),
            [format!("TAGFENCE_RESOURCES={web}: not a resource id tagfence manages (its type Microsoft.Web/sites is not one tagfence manages); expected {RESOURCE_ID_SHAPE}")]
        );
        for kind in Kind::ALL {
            assert!(RESOURCE_ID_SHAPE.contains(kind.resource_type()), "{kind}");
        }
        assert!(RESOURCE_ID_SHAPE.ends_with(
            &crate::azure::supported_types()
                .rsplit_once(", ")
                .map(|(_, last)| format!(" or {last}"))
                .unwrap()
        ));
    }

    #[test]
    fn nothing_listed_asks_for_resources_first() {
        let lines = problems(&env_origin(Settings::default(), Key::Tags));
        assert_eq!(
            lines,
            ["no resources to manage; give --resource (TAGFENCE_RESOURCES), --vault (TAGFENCE_VAULTS), resources or vaults in the configuration file, or a discovery scope (--discover-subscription (TAGFENCE_DISCOVER_SUBSCRIPTIONS) or --discover-management-group (TAGFENCE_DISCOVER_MANAGEMENT_GROUPS))"]
        );
        // A storage account that selects nothing is named as one.
        let lines = problems(&Settings {
            resources: vec![SA.into()],
            ..Settings::default()
        });
        assert_eq!(
            lines,
            [format!("storage account {SA}: no tags or static rules selected; give --tag (TAGFENCE_TAGS) or --static-rule (TAGFENCE_STATIC_RULES)")]
        );
    }

    #[test]
    fn kinds_default_to_all_and_read_any_spelling_once_each() {
        let kinds = |text: Option<&str>| {
            let mut settings = tagged(&["X"]);
            if let Some(text) = text {
                settings.kinds = text.split(',').map(str::to_owned).collect();
            }
            Config::from_settings(&settings).unwrap().kinds
        };
        assert_eq!(kinds(None), Kind::ALL);
        assert_eq!(
            kinds(Some("Storage-Account, key_vault,KEY_VAULT")),
            [Kind::KeyVault, Kind::StorageAccount]
        );
        assert_eq!(kinds(Some("container_registry")), [Kind::ContainerRegistry]);
        assert_eq!(kinds(Some(" , ")), Kind::ALL);
    }

    #[test]
    fn an_unknown_kind_is_refused_naming_the_kinds() {
        let expected = "not a kind tagfence manages; expected key_vault, storage_account or container_registry (any case; - for _)";
        let settings = env_origin(
            Settings {
                kinds: vec!["cosmos".into()],
                ..tagged(&["X"])
            },
            Key::Kinds,
        );
        assert_eq!(
            problems(&settings),
            [format!("TAGFENCE_KINDS=cosmos: {expected}")]
        );
        let mut settings = Settings {
            kinds: vec!["key_vault".into(), "keyvault".into(), "sql".into()],
            ..tagged(&["X"])
        };
        settings
            .origins
            .record(Key::Kinds, Origin::Flag("--kind".into()));
        assert_eq!(
            problems(&settings),
            [
                format!("--kind keyvault: {expected}"),
                format!("--kind sql: {expected}"),
            ]
        );
        let mut settings = tagged(&["X"]);
        settings.texts.set(Key::Kinds, "vaults");
        assert_eq!(problems(&settings), [format!("kinds = vaults: {expected}")]);
    }

    #[test]
    fn each_kind_caps_max_rules_and_grants_at_its_own_limit() {
        let targets = |limits: LimitSettings, grants: Option<usize>| {
            let config = Config::from_settings(&Settings {
                resources: vec![SA.into(), ACR.into()],
                limits,
                grant_max_per_vault: grants,
                ..tagged(&["X"])
            })
            .unwrap();
            let mut out: Vec<(Kind, usize, usize)> = config
                .targets
                .iter()
                .map(|t| (t.id.kind, t.limits.max_rules, t.grants.max_live))
                .collect();
            out.sort_unstable();
            out
        };
        // Unset: each kind's own limit; the grants' built-in 50 is under all of them.
        assert_eq!(
            targets(LimitSettings::default(), None),
            [
                (Kind::KeyVault, 1000, 50),
                (Kind::StorageAccount, 400, 50),
                (Kind::ContainerRegistry, 100, 50),
            ]
        );
        // Given: the smaller of the setting and the kind's limit.
        let given = LimitSettings {
            max_rules: Some(500),
            ..LimitSettings::default()
        };
        assert_eq!(
            targets(given, Some(1000)),
            [
                (Kind::KeyVault, 500, 1000),
                (Kind::StorageAccount, 400, 400),
                (Kind::ContainerRegistry, 100, 100),
            ]
        );
        let small = LimitSettings {
            max_rules: Some(60),
            ..LimitSettings::default()
        };
        assert_eq!(
            targets(small, Some(70)),
            [
                (Kind::KeyVault, 60, 70),
                (Kind::StorageAccount, 60, 70),
                (Kind::ContainerRegistry, 60, 70),
            ]
        );
        // A discovered resource is capped as a listed one is.
        let config = Config::from_settings(&Settings {
            discover_subscriptions: vec!["00000000-0000-0000-0000-000000000001".into()],
            ..tagged(&["X"])
        })
        .unwrap();
        let target = config
            .discovered_target(ACR.parse().unwrap(), "default")
            .unwrap();
        assert_eq!(target.limits.max_rules, 100);
        // The setting's range is the largest kind's.
        let lines = problems(&Settings {
            limits: LimitSettings {
                max_rules: Some(1001),
                ..LimitSettings::default()
            },
            ..tagged(&["X"])
        });
        assert_eq!(lines, ["max_rules = 1001: expected a whole number from 1 to 1000 (a firewall's IP rules; each kind's own limit caps it: key vault 1000, storage account 400, container registry 100)"]);
    }

    #[test]
    fn a_storage_account_always_splits_a_31() {
        let config = Config::from_settings(&Settings {
            resources: vec![SA.into(), ACR.into()],
            limits: LimitSettings {
                slash31: Some(Slash31::Keep),
                ..LimitSettings::default()
            },
            ..tagged(&["X"])
        })
        .unwrap();
        let slash31 = |name: &str| config.find_target(name).unwrap().limits.slash31;
        assert_eq!(slash31("sta1"), Slash31::Split);
        assert_eq!(slash31("acr0001"), Slash31::Keep);
        assert_eq!(slash31("kv-a"), Slash31::Keep);
        let limits = Limits {
            slash31: Slash31::Keep,
            max_rules: 700,
            ..Limits::default()
        };
        let capped = kind_limits(Kind::StorageAccount, &limits);
        assert_eq!((capped.max_rules, capped.slash31), (400, Slash31::Split));
        assert_eq!(kind_limits(Kind::KeyVault, &limits), limits);
    }
}
