//! Every setting as it was given: its text (a list's entries) and where it came from
//! ([`Given`]), for flags, environment and TOML alike; and the one place that parses and
//! range-checks a setting's text ([`Reader`]), so that a malformed value is named the same way
//! wherever it came from: `TAGFENCE_MAX_RULES=lots`, `--max-rules 2000`,
//! `tagfence.toml: [defaults] max_rules = 2000`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use super::error::{ConfigError, ConfigErrors};
use super::settings::{Key, Observe, Origin, Settings, MAX_GRACE_DAYS};
use crate::azure::auth::CredentialKind;
use crate::core::desired::FitMode;
use crate::core::fit::Slash31;
use crate::core::grant::{self, MAX_MAX_TTL, MIN_TTL};
use crate::core::kind::Kind;
use crate::core::service_tags::Cloud;

/// One setting as given.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Given {
    pub key: Key,
    /// The text of a single value; the entries of a list (blank ones dropped). Never empty.
    pub values: Vec<String>,
    /// Where it came from; `None` when code set it (a test, a library caller).
    pub origin: Option<Origin>,
}

impl Given {
    /// The text of a single value (a list's first entry).
    pub fn text(&self) -> &str {
        self.values.first().map_or("", String::as_str)
    }

    /// The setting with `value`, as the user wrote it: `--max-rules 2000`,
    /// `TAGFENCE_MAX_RULES=2000`, `tagfence.toml: [defaults] max_rules = 2000`; a list's
    /// `value` is one of its entries. A secret is named without its value.
    pub fn shown(&self, value: &str) -> String {
        let key = self.key;
        if key.is_secret() {
            return self.name();
        }
        let one = !key.is_list() || self.values.len() == 1;
        match &self.origin {
            Some(Origin::Flag(flag)) if key.is_switch() => format!("{flag}={}", arg(value)),
            Some(Origin::Flag(flag)) => format!("{flag} {}", arg(value)),
            Some(Origin::Env(name)) if one => format!("{name}={value}"),
            Some(Origin::Env(name)) => format!("{name} entry '{value}'"),
            // A `[[vault]]` or `[[resource]]` entry's `id` is one value, though recorded as a
            // `vaults` or `resources` key.
            Some(file @ Origin::File { table, .. })
                if key.is_list() && !table.starts_with("[[") =>
            {
                format!("{file} entry {}", toml_value(value))
            }
            Some(file @ Origin::File { .. }) => format!("{file} = {}", toml_value(value)),
            None if one => format!("{} = {value}", key.name()),
            None => format!("{} entry '{value}'", key.name()),
        }
    }

    /// The setting with its (first) value, as the user wrote it.
    pub fn shown_all(&self) -> String {
        self.shown(self.text())
    }

    /// The setting as a whole: with its value, or by name alone for a list of several.
    pub fn named(&self) -> String {
        if self.key.is_list() && self.values.len() > 1 {
            self.name()
        } else {
            self.shown_all()
        }
    }

    /// The setting's name alone, as the user wrote it (`TAGFENCE_NOTIFY_URL`).
    pub fn name(&self) -> String {
        match &self.origin {
            Some(origin) => origin.to_string(),
            None => self.key.name().to_owned(),
        }
    }
}

/// A flag's value as typed in a shell: quoted when it is empty or has blanks or quotes.
fn arg(value: &str) -> String {
    if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
        format!("'{value}'")
    } else {
        value.to_owned()
    }
}

/// A TOML value as the file would spell it: numbers and booleans bare, the rest quoted.
fn toml_value(value: &str) -> String {
    let bare = value.parse::<f64>().is_ok() || value == "true" || value == "false";
    if bare {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

/// How the user would give `key` (with `value`) the way `like` was given: as a flag, a
/// variable or a key of the file; as both flag and variable when that is not known.
pub(super) fn spelled(like: Option<&Origin>, key: Key, value: Option<&str>) -> String {
    let in_file = matches!(like, Some(Origin::File { .. })) && key.in_file();
    match (like, value) {
        (Some(Origin::Flag(_)), Some(v)) => format!("{} {v}", key.flag()),
        (Some(Origin::Flag(_)), None) => key.flag().to_owned(),
        (Some(Origin::Env(_)), Some(v)) => format!("{}={v}", key.env()),
        (Some(Origin::Env(_)), None) => key.env().to_owned(),
        (_, Some(v)) if in_file => format!("{} = {}", key.name(), toml_value(v)),
        (_, None) if in_file => key.name().to_owned(),
        (_, Some(v)) => format!("{} {v} ({}={v})", key.flag(), key.env()),
        (_, None) => format!("{} ({})", key.flag(), key.env()),
    }
}

/// The settings one source gave: the flags and environment, or one table of the file.
#[derive(Debug, Clone, Default)]
pub(super) struct Givens(BTreeMap<Key, Given>);

impl Givens {
    /// Records `values` for `key` from `origin`; nothing when there are none.
    pub fn insert(&mut self, key: Key, values: Vec<String>, origin: Option<Origin>) {
        if !values.is_empty() {
            self.0.insert(
                key,
                Given {
                    key,
                    values,
                    origin,
                },
            );
        }
    }

    /// What was given for `key`, if anything.
    pub fn get(&self, key: Key) -> Option<&Given> {
        self.0.get(&key)
    }

    /// What `settings` give: each typed field as text, unless the command line gave its text.
    pub fn from_settings(settings: &Settings) -> Givens {
        let mut givens = Givens::default();
        let mut put = |key: Key, values: Vec<String>| {
            let values = match settings.texts.get(key) {
                Some(text) => vec![text.to_owned()],
                None => values,
            };
            givens.insert(key, values, settings.origins.get(key).cloned());
        };
        for (key, values) in lists(settings) {
            put(key, values);
        }
        for (key, value) in scalars(settings) {
            put(key, value.into_iter().collect());
        }
        givens
    }
}

/// The list settings, their entries trimmed and blank ones dropped.
fn lists(settings: &Settings) -> Vec<(Key, Vec<String>)> {
    let clean = |values: &[String]| -> Vec<String> {
        values
            .iter()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect()
    };
    vec![
        (Key::Resources, clean(&settings.resources)),
        (Key::Vaults, clean(&settings.vaults)),
        (Key::Tags, clean(&settings.selection.tags)),
        (Key::StaticRules, clean(&settings.selection.static_rules)),
        (Key::Envelope, clean(&settings.limits.envelope)),
        (Key::AllowTagShrink, clean(&settings.allow_tag_shrink)),
        (Key::GrantPrincipals, clean(&settings.grant_principals)),
        (
            Key::DiscoverSubscriptions,
            clean(&settings.discover_subscriptions),
        ),
        (
            Key::DiscoverManagementGroups,
            clean(&settings.discover_management_groups),
        ),
        (Key::Kinds, clean(&settings.kinds)),
    ]
}

/// The single-valued settings as text; `None` when not given (a blank text is not given).
fn scalars(settings: &Settings) -> Vec<(Key, Option<String>)> {
    let text = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
    let path = |value: &Option<std::path::PathBuf>| {
        value
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| p.display().to_string())
    };
    let on = |switch: bool| switch.then(|| "true".to_owned());
    let limits = &settings.limits;
    let mut out = vec![
        (Key::ConfigFile, path(&settings.config_file)),
        (Key::MaxRules, limits.max_rules.map(|n| n.to_string())),
        (Key::Fit, limits.fit.map(|f| fit_name(f).to_owned())),
        (
            Key::MaxExtraAddresses,
            limits.max_extra_addresses.map(|n| n.to_string()),
        ),
        (
            Key::MaxRemoveFraction,
            limits.max_remove_fraction.map(|f| f.to_string()),
        ),
        (
            Key::Slash31,
            limits.slash31.map(|s| slash31_name(s).to_owned()),
        ),
        (Key::Prune, on(settings.prune)),
        (Key::AdoptExisting, on(settings.adopt_existing)),
        (Key::InitFirewall, on(settings.init_firewall)),
        (Key::AcceptMissingRules, on(settings.accept_missing_rules)),
        (
            Key::MaxTagShrink,
            settings.max_tag_shrink.map(|f| f.to_string()),
        ),
        (
            Key::GrantMaxTtl,
            settings.grant_max_ttl.map(grant::duration_text),
        ),
        (
            Key::GrantMaxPerVault,
            settings.grant_max_per_vault.map(|n| n.to_string()),
        ),
        (Key::AllowOlder, on(settings.allow_older)),
        (Key::Log, text(&settings.log)),
    ];
    out.extend(azure_scalars(settings));
    out.extend([
        (Key::StateDir, path(&settings.state_dir)),
        (Key::StateUrl, text(&settings.state_url)),
        (Key::StateContainer, text(&settings.state_container)),
        (Key::StateCaFile, path(&settings.state_ca_file)),
        (Key::CaFile, path(&settings.ca_file)),
        (
            Key::WebjobsBlobServiceUri,
            text(&settings.webjobs_blob_service_uri),
        ),
        (
            Key::WebjobsAccountName,
            text(&settings.webjobs_account_name),
        ),
        (Key::GraceDays, settings.grace_days.map(|n| n.to_string())),
        (Key::DiscoverTag, text(&settings.discover_tag)),
        (Key::NotifyUrl, text(&settings.notify_url)),
    ]);
    out
}

/// The settings of the Azure calls and where the Service Tags come from, as text.
fn azure_scalars(settings: &Settings) -> Vec<(Key, Option<String>)> {
    let text = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
    let number = |value: Option<u64>| value.map(|n| n.to_string());
    vec![
        (Key::Source, text(&settings.source)),
        (Key::SubscriptionId, text(&settings.subscription_id)),
        (Key::Location, text(&settings.location)),
        (Key::Cloud, settings.cloud.map(|c| cloud_name(c).to_owned())),
        (Key::ArmEndpoint, text(&settings.arm_endpoint)),
        (Key::DownloadPageUrl, text(&settings.download_page_url)),
        (
            Key::Credential,
            settings.credential.map(|c| credential_name(c).to_owned()),
        ),
        (
            Key::MinServiceTags,
            settings.min_service_tags.map(|n| n.to_string()),
        ),
        (
            Key::Concurrency,
            settings.concurrency.map(|n| n.to_string()),
        ),
        (
            Key::Observe,
            settings.observe.map(|o| observe_name(o).to_owned()),
        ),
        (Key::HttpTimeoutSecs, number(settings.http_timeout_secs)),
        (
            Key::HttpMaxRetries,
            settings.http_max_retries.map(|n| n.to_string()),
        ),
        (Key::HttpRetryDelayMs, number(settings.http_retry_delay_ms)),
        (
            Key::HttpCallTimeoutSecs,
            number(settings.http_call_timeout_secs),
        ),
    ]
}

/// The spellings of each choice setting, the first of each the one shown.
const FITS: &[(&str, FitMode)] = &[("exact", FitMode::Exact), ("summarize", FitMode::Summarize)];
const SLASH31S: &[(&str, Slash31)] = &[("split", Slash31::Split), ("keep", Slash31::Keep)];
const CLOUDS: &[(&str, Cloud)] = &[
    ("AzurePublic", Cloud::Public),
    ("AzureUSGovernment", Cloud::AzureGovernment),
    ("AzureChina", Cloud::AzureChina),
    ("public", Cloud::Public),
    ("usgovernment", Cloud::AzureGovernment),
    ("china", Cloud::AzureChina),
    ("AzureGovernment", Cloud::AzureGovernment),
    // As the Azure CLI names them (`az cloud show`).
    ("AzureCloud", Cloud::Public),
    ("AzureChinaCloud", Cloud::AzureChina),
];
const CREDENTIALS: &[(&str, CredentialKind)] = &[
    ("auto", CredentialKind::Auto),
    ("managed-identity", CredentialKind::ManagedIdentity),
    ("workload-identity", CredentialKind::WorkloadIdentity),
    ("developer-tools", CredentialKind::DeveloperTools),
];

const OBSERVES: &[(&str, Observe)] = &[("graph", Observe::Graph), ("arm", Observe::Arm)];

fn name_of<T: PartialEq>(choices: &[(&'static str, T)], value: T) -> &'static str {
    choices
        .iter()
        .find(|(_, v)| *v == value)
        .map_or("", |(name, _)| name)
}

fn fit_name(fit: FitMode) -> &'static str {
    name_of(FITS, fit)
}

fn slash31_name(slash31: Slash31) -> &'static str {
    name_of(SLASH31S, slash31)
}

/// The cloud as the settings spell it (`AzureUSGovernment`).
pub fn cloud_name(cloud: Cloud) -> &'static str {
    name_of(CLOUDS, cloud)
}

fn credential_name(kind: CredentialKind) -> &'static str {
    name_of(CREDENTIALS, kind)
}

/// How a run observes, as the settings spell it (`graph`, `arm`).
fn observe_name(observe: Observe) -> &'static str {
    name_of(OBSERVES, observe)
}

/// Whether a switch's text turns it on (`true`, `1`) or off (`false`, `0`), any case.
pub fn parse_switch(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// The largest `max_rules` (and `grant_max_per_vault`) taken: the largest kind's limit (Key
/// Vault's 1000). Each target's own kind caps it further ([`super::kind_limits`]).
pub(super) fn max_rules_limit() -> usize {
    Kind::ALL
        .iter()
        .map(|kind| kind.max_rules())
        .max()
        .unwrap_or(1)
}

/// Each kind's own rule limit, for messages: `key vault 1000, storage account 400, container
/// registry 100`.
fn kind_limits_text() -> String {
    Kind::ALL
        .iter()
        .map(|kind| format!("{} {}", kind.label(), kind.max_rules()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kind names the `kinds` setting takes: `key_vault, storage_account or container_registry`.
fn kind_names() -> String {
    let names: Vec<&str> = Kind::ALL.iter().map(|kind| kind.name()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// What a setting takes, for the message that refuses a value.
pub(super) fn allowed(key: Key) -> String {
    let fraction = "a fraction from 0 to 1 (0.2 is 20%)";
    match key {
        Key::MaxRules => format!(
            "a whole number from 1 to {} (a firewall's IP rules; each kind's own limit caps it: {})",
            max_rules_limit(),
            kind_limits_text()
        ),
        Key::Fit => "exact or summarize".to_owned(),
        Key::MaxExtraAddresses => "a whole number of addresses, 0 or more".to_owned(),
        Key::MaxRemoveFraction | Key::MaxTagShrink => fraction.to_owned(),
        Key::Slash31 => "split or keep".to_owned(),
        Key::Cloud => "AzurePublic, AzureUSGovernment or AzureChina".to_owned(),
        Key::Credential => {
            "auto, managed-identity, workload-identity or developer-tools".to_owned()
        }
        Key::MinServiceTags => "a whole number of tags, at least 1".to_owned(),
        Key::Concurrency => "a whole number of vaults, at least 1".to_owned(),
        Key::Observe => "graph or arm".to_owned(),
        Key::HttpTimeoutSecs | Key::HttpCallTimeoutSecs => {
            "a whole number of seconds, at least 1".to_owned()
        }
        Key::HttpMaxRetries => "a whole number of retries, 0 or more".to_owned(),
        Key::HttpRetryDelayMs => "a whole number of milliseconds, 0 or more".to_owned(),
        Key::GraceDays => format!("a whole number of days from 0 to {}", MAX_GRACE_DAYS),
        Key::GrantMaxTtl => format!(
            "a duration from {} to {}, written with its units (90s, 30m, 2h, 1h30m)",
            grant::duration_text(MIN_TTL),
            grant::duration_text(MAX_MAX_TTL)
        ),
        Key::GrantMaxPerVault => format!(
            "a whole number of live grants from 1 to {} (each grant is one of the firewall's IP rules; each kind's own limit caps it)",
            max_rules_limit()
        ),
        Key::Kinds => format!("{} (any case; - for _)", kind_names()),
        Key::GrantPrincipals => {
            "a GUID: a Microsoft Entra object id or application (client) id (00000000-0000-0000-0000-000000000000)".to_owned()
        }
        _ => "true or false (or 1 or 0)".to_owned(),
    }
}

/// Reads typed settings from [`Givens`], recording each value it refuses.
pub(super) struct Reader<'a> {
    pub givens: &'a Givens,
    pub problems: &'a mut ConfigErrors,
}

impl Reader<'_> {
    /// Records that `given`'s `value` is wrong, and why.
    pub fn invalid(&mut self, given: &Given, value: &str, reason: impl Into<String>) {
        self.problems.push(ConfigError::Invalid {
            setting: given.shown(value),
            reason: reason.into(),
        });
    }

    /// Records that `given`'s value is not what `key` takes.
    fn refuse(&mut self, given: &Given) {
        let reason = format!("expected {}", allowed(given.key));
        self.invalid(given, given.text(), reason);
    }

    /// A number in `range`.
    pub fn number<T>(&mut self, key: Key, range: RangeInclusive<T>) -> Option<T>
    where
        T: FromStr + PartialOrd + Display,
    {
        let given = self.givens.get(key)?;
        match given.text().trim().parse::<T>() {
            Ok(value) if range.contains(&value) => Some(value),
            _ => {
                self.refuse(given);
                None
            }
        }
    }

    /// A fraction from 0 to 1.
    pub fn fraction(&mut self, key: Key) -> Option<f64> {
        self.number(key, 0.0..=1.0)
    }

    /// A duration in `range`, written as [`grant::parse_duration`] reads it (`2h`, `1h30m`).
    pub fn duration(&mut self, key: Key, range: RangeInclusive<Duration>) -> Option<Duration> {
        let given = self.givens.get(key)?;
        match grant::parse_duration(given.text()) {
            Ok(value) if range.contains(&value) => Some(value),
            _ => {
                self.refuse(given);
                None
            }
        }
    }

    /// A switch: true/false/1/0.
    pub fn switch(&mut self, key: Key) -> Option<bool> {
        let given = self.givens.get(key)?;
        let value = parse_switch(given.text());
        if value.is_none() {
            self.refuse(given);
        }
        value
    }

    /// One of `choices`, by name, any case.
    fn choice<T: Copy>(&mut self, key: Key, choices: &[(&str, T)]) -> Option<T> {
        let given = self.givens.get(key)?;
        let text = given.text().trim();
        let value = choices
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|&(_, value)| value);
        if value.is_none() {
            self.refuse(given);
        }
        value
    }

    /// `--fit`: exact or summarize.
    pub fn fit(&mut self) -> Option<FitMode> {
        self.choice(Key::Fit, FITS)
    }

    /// `--slash31`: split or keep.
    pub fn slash31(&mut self) -> Option<Slash31> {
        self.choice(Key::Slash31, SLASH31S)
    }

    /// `--cloud`, by the settings' names or the Azure CLI's.
    pub fn cloud(&mut self) -> Option<Cloud> {
        self.choice(Key::Cloud, CLOUDS)
    }

    /// `--observe`: graph or arm.
    pub fn observe(&mut self) -> Option<Observe> {
        self.choice(Key::Observe, OBSERVES)
    }

    /// `--credential`, by its spelling.
    pub fn credential(&mut self) -> Option<CredentialKind> {
        self.choice(Key::Credential, CREDENTIALS)
    }

    /// A text setting, trimmed.
    pub fn text(&self, key: Key) -> Option<&str> {
        self.givens.get(key).map(|g| g.text().trim())
    }

    /// A list setting's entries; empty when not given.
    pub fn list(&self, key: Key) -> &[String] {
        self.givens.get(key).map_or(&[], |g| g.values.as_slice())
    }
}

/// Whether `text` is a GUID (`00000000-0000-0000-0000-000000000000`), as subscription ids and
/// Microsoft Entra object and application ids are.
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(key: Key, values: &[&str], origin: Option<Origin>) -> Given {
        Given {
            key,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            origin,
        }
    }

    #[test]
    fn a_setting_is_shown_as_the_user_wrote_it() {
        let file = |key| {
            Some(Origin::File {
                path: "t.toml".into(),
                table: "[defaults]".into(),
                key,
            })
        };
        let cases = [
            (
                given(
                    Key::MaxRules,
                    &["2000"],
                    Some(Origin::Flag("--max-rules".into())),
                ),
                "--max-rules 2000",
            ),
            (
                given(
                    Key::MaxRules,
                    &["lots"],
                    Some(Origin::Env("TAGFENCE_MAX_RULES".into())),
                ),
                "TAGFENCE_MAX_RULES=lots",
            ),
            (
                given(Key::MaxRules, &["2000"], file(Key::MaxRules)),
                "t.toml: [defaults] max_rules = 2000",
            ),
            (
                given(Key::Fit, &["lossy"], file(Key::Fit)),
                "t.toml: [defaults] fit = \"lossy\"",
            ),
            (
                given(Key::Tags, &["a", "b"], file(Key::Tags)),
                "t.toml: [defaults] tags entry \"a\"",
            ),
            (
                given(
                    Key::Tags,
                    &["a", "b"],
                    Some(Origin::Env("TAGFENCE_TAGS".into())),
                ),
                "TAGFENCE_TAGS entry 'a'",
            ),
            (
                given(Key::Tags, &["a"], Some(Origin::Env("TAGFENCE_TAGS".into()))),
                "TAGFENCE_TAGS=a",
            ),
            (
                given(
                    Key::Source,
                    &["my file"],
                    Some(Origin::Flag("--source".into())),
                ),
                "--source 'my file'",
            ),
            (given(Key::GraceDays, &["400"], None), "grace_days = 400"),
            (
                given(
                    Key::NotifyUrl,
                    &["http://secret"],
                    Some(Origin::Env("TAGFENCE_NOTIFY_URL".into())),
                ),
                "TAGFENCE_NOTIFY_URL",
            ),
        ];
        for (given, shown) in cases {
            assert_eq!(given.shown_all(), shown);
        }
    }

    #[test]
    fn switches_read_true_false_1_and_0() {
        for (text, value) in [
            ("true", Some(true)),
            ("1", Some(true)),
            (" FALSE ", Some(false)),
            ("0", Some(false)),
            ("yes", None),
            ("", None),
        ] {
            assert_eq!(parse_switch(text), value, "{text:?}");
        }
    }

    #[test]
    fn guids_have_five_hex_groups() {
        assert!(is_guid("00000000-0000-0000-0000-00000000000a"));
        for bad in [
            "s1",
            "00000000-0000-0000-0000-00000000000g",
            "00000000000000000000000000000000----",
            "0000-0000-0000-0000-0000000000000000",
        ] {
            assert!(!is_guid(bad), "{bad}");
        }
    }
}
