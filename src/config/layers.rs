//! The per-resource settings, layered: built-in defaults, the TOML file's `[defaults]`, flags
//! and environment, then a `[[resource]]` or `[[vault]]` entry's own settings for its resource. Each layer is read and
//! checked on its own ([`Layer::read`]), so that a bad value is named where it was given, and
//! records where the values it gives came from.
//!
//! The file is read as TOML and walked key by key: an unknown key, a value of the wrong kind and
//! a value out of range are all problems of the same pass, each naming the file, the table and
//! the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{ConfigError, ConfigErrors};
use super::given::{allowed, is_guid, max_rules_limit, Given, Givens, Reader};
use super::settings::{Key, Origin};
use super::vault::{GrantPolicy, Safety};
use crate::core::cidr::RuleError;
use crate::core::desired::{self, FitMode, Limits};
use crate::core::fit::Slash31;
use crate::core::grant::{MAX_MAX_TTL, MIN_TTL};
use crate::core::profiles;

/// The keys a `[defaults]` table or a `[[resource]]` or `[[vault]]` entry may hold.
pub(super) const LAYER_KEYS: &[Key] = &[
    Key::Tags,
    Key::StaticRules,
    Key::MaxRules,
    Key::Fit,
    Key::Envelope,
    Key::MaxExtraAddresses,
    Key::MaxRemoveFraction,
    Key::Slash31,
    Key::Prune,
    Key::AdoptExisting,
    Key::InitFirewall,
    Key::MaxTagShrink,
    Key::GrantPrincipals,
    Key::GrantMaxTtl,
    Key::GrantMaxPerVault,
];

/// The TOML file, read and checked.
#[derive(Debug, Default)]
pub(super) struct ConfigFile {
    /// Its top-level `resources`.
    pub resources: Option<Given>,
    /// Its top-level `vaults` (the same as `resources`, by the older name).
    pub vaults: Option<Given>,
    /// Its `[defaults]`.
    pub defaults: Layer,
    /// Its `[[resource]]` entries, then its `[[vault]]` entries.
    pub entries: Vec<Entry>,
    /// It could not be read, or is not TOML: what it lists is unknown.
    pub unread: bool,
}

impl ConfigFile {
    /// What is known of a file that could not be read.
    fn unread() -> ConfigFile {
        ConfigFile {
            unread: true,
            ..ConfigFile::default()
        }
    }
}

/// One `[[resource]]` or `[[vault]]` entry.
#[derive(Debug)]
pub(super) struct Entry {
    /// Its `id`, as a one-value setting named `[[resource]] #n id` (a `resources` key) or
    /// `[[vault]] #n id` (a `vaults` key).
    pub id: Given,
    pub settings: Layer,
}

/// The two spellings of an entry's table: `[[resource]]` and `[[vault]]`, the older.
#[derive(Debug, Clone, Copy)]
struct EntryTable {
    /// The table's name in the file (`resource`).
    name: &'static str,
    /// The key its `id` is recorded as.
    key: Key,
}

const RESOURCE_TABLE: EntryTable = EntryTable {
    name: "resource",
    key: Key::Resources,
};
const VAULT_TABLE: EntryTable = EntryTable {
    name: "vault",
    key: Key::Vaults,
};

/// The per-vault settings one layer gives, checked; `None` leaves the layer below in force.
#[derive(Debug, Default, Clone)]
pub(super) struct Layer {
    tags: Option<Vec<String>>,
    static_rules: Option<Vec<String>>,
    max_rules: Option<usize>,
    fit: Option<FitMode>,
    envelope: Option<Vec<String>>,
    max_extra_addresses: Option<u64>,
    max_remove_fraction: Option<f64>,
    slash31: Option<Slash31>,
    prune: Option<bool>,
    adopt_existing: Option<bool>,
    init_firewall: Option<bool>,
    max_tag_shrink: Option<f64>,
    grant_principals: Option<Vec<String>>,
    grant_max_ttl: Option<Duration>,
    grant_max_per_vault: Option<usize>,
    /// What was given, for the origins.
    given: BTreeMap<Key, Given>,
}

impl Layer {
    /// The per-vault settings in `reader`'s settings, each checked; a refused value is recorded
    /// as a problem and leaves the layer below in force.
    pub fn read(reader: &mut Reader<'_>) -> Layer {
        let list = |reader: &Reader<'_>, key| {
            let values = reader.list(key);
            (!values.is_empty()).then(|| values.to_vec())
        };
        let (tags, static_rules) = checked_selection(reader);
        let mut layer = Layer {
            tags,
            static_rules,
            // The largest kind's limit; each target's kind caps it further.
            max_rules: reader.number(Key::MaxRules, 1..=max_rules_limit()),
            fit: reader.fit(),
            envelope: list(reader, Key::Envelope),
            max_extra_addresses: reader.number(Key::MaxExtraAddresses, 0..=u64::MAX),
            max_remove_fraction: reader.fraction(Key::MaxRemoveFraction),
            slash31: reader.slash31(),
            prune: reader.switch(Key::Prune),
            adopt_existing: reader.switch(Key::AdoptExisting),
            init_firewall: reader.switch(Key::InitFirewall),
            max_tag_shrink: reader.fraction(Key::MaxTagShrink),
            grant_principals: checked_principals(reader),
            grant_max_ttl: reader.duration(Key::GrantMaxTtl, MIN_TTL..=MAX_MAX_TTL),
            // A grant is one of the firewall's IP rules: a firewall cannot hold more (each
            // target's kind caps it further).
            grant_max_per_vault: reader.number(Key::GrantMaxPerVault, 1..=max_rules_limit()),
            given: BTreeMap::new(),
        };
        // Only the values taken are this layer's: a refused one leaves the layer below in
        // force, and its origin with it (a list whose entries were all refused still counts
        // as given, so that its vault is not also said to select nothing).
        for key in LAYER_KEYS {
            if let (Some(given), true) = (reader.givens.get(*key), layer.gives(*key)) {
                layer.given.insert(*key, given.clone());
            }
        }
        layer
    }

    /// Whether this layer gives a value of `key`.
    fn gives(&self, key: Key) -> bool {
        match key {
            Key::Tags => self.tags.is_some(),
            Key::StaticRules => self.static_rules.is_some(),
            Key::MaxRules => self.max_rules.is_some(),
            Key::Fit => self.fit.is_some(),
            Key::Envelope => self.envelope.is_some(),
            Key::MaxExtraAddresses => self.max_extra_addresses.is_some(),
            Key::MaxRemoveFraction => self.max_remove_fraction.is_some(),
            Key::Slash31 => self.slash31.is_some(),
            Key::Prune => self.prune.is_some(),
            Key::AdoptExisting => self.adopt_existing.is_some(),
            Key::InitFirewall => self.init_firewall.is_some(),
            Key::MaxTagShrink => self.max_tag_shrink.is_some(),
            Key::GrantPrincipals => self.grant_principals.is_some(),
            Key::GrantMaxTtl => self.grant_max_ttl.is_some(),
            Key::GrantMaxPerVault => self.grant_max_per_vault.is_some(),
            _ => false,
        }
    }

    /// This layer over `base`: each setting given replaces the base's.
    pub fn over(&self, base: &Resolved) -> Resolved {
        fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
            if let Some(value) = value {
                *slot = value.clone();
            }
        }
        let mut out = base.clone();
        set(&mut out.tags, &self.tags);
        set(&mut out.static_rules, &self.static_rules);
        let limits = &mut out.limits;
        set(&mut limits.max_rules, &self.max_rules);
        set(&mut limits.fit, &self.fit);
        set(&mut limits.envelope, &self.envelope);
        // The limit is itself optional (no limit): a value given sets `Some`.
        set(
            &mut limits.max_extra_addresses,
            &self.max_extra_addresses.map(Some),
        );
        set(&mut limits.max_remove_fraction, &self.max_remove_fraction);
        set(&mut limits.slash31, &self.slash31);
        set(&mut out.prune, &self.prune);
        let safety = &mut out.safety;
        set(&mut safety.adopt_existing, &self.adopt_existing);
        set(&mut safety.init_firewall, &self.init_firewall);
        set(&mut safety.max_tag_shrink, &self.max_tag_shrink);
        let grants = &mut out.grants;
        set(&mut grants.principals, &self.grant_principals);
        set(&mut grants.max_ttl, &self.grant_max_ttl);
        set(&mut grants.max_live, &self.grant_max_per_vault);
        for (key, given) in &self.given {
            out.given.insert(*key, given.clone());
        }
        out
    }
}

/// The tags and static rules given, each static rule and profile name checked where it was
/// given; the refused ones are left out.
fn checked_selection(reader: &mut Reader<'_>) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let givens = reader.givens;
    let rules = givens.get(Key::StaticRules).map(|given| {
        let mut rules = Vec::new();
        for rule in &given.values {
            match desired::parse_static_rule(rule) {
                Ok(_) => rules.push(rule.clone()),
                Err(err) => reader.invalid(given, rule, static_rule_problem(&err)),
            }
        }
        rules
    });
    let tags = givens.get(Key::Tags).map(|given| {
        let mut tags = Vec::new();
        for name in &given.values {
            match profiles::is_profile(name).then(|| profiles::profile_tags(name)) {
                Some(Err(err)) => reader.invalid(given, name, err.to_string()),
                _ => tags.push(name.clone()),
            }
        }
        tags
    });
    (tags, rules)
}

/// The principals allowed to grant, each checked where it was given and kept lower-case, once;
/// the refused ones are left out.
fn checked_principals(reader: &mut Reader<'_>) -> Option<Vec<String>> {
    let givens = reader.givens;
    let given = givens.get(Key::GrantPrincipals)?;
    let mut principals: Vec<String> = Vec::new();
    for principal in &given.values {
        if !is_guid(principal) {
            let reason = format!(
                "not an object id or application id; expected {}",
                allowed(Key::GrantPrincipals)
            );
            reader.invalid(given, principal, reason);
            continue;
        }
        let principal = principal.to_ascii_lowercase();
        if !principals.contains(&principal) {
            principals.push(principal);
        }
    }
    Some(principals)
}

/// Why a static rule is refused, and what is allowed (the rule itself is named already).
pub(super) fn static_rule_problem(err: &RuleError) -> String {
    match err {
        RuleError::Invalid(_) => {
            "expected a public IPv4 address or prefix (52.1.2.3, 52.1.2.0/24)".to_owned()
        }
        RuleError::Ipv6(_) => "is IPv6; tagfence writes IPv4 firewall rules only".to_owned(),
        RuleError::HostBits { network, .. } => {
            format!("has host bits set; expected the prefix {network}")
        }
        RuleError::Reserved { reserved, .. } => {
            format!(
                "overlaps the reserved range {reserved}, {}; expected a public address",
                if reserved.azure_refuses() {
                    "which Key Vault and Storage refuse"
                } else {
                    "which is no public address (tagfence refuses it; Key Vault and Storage document refusing only RFC 1918 ranges)"
                }
            )
        }
    }
}

/// Per-vault settings with every layer applied.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub tags: Vec<String>,
    pub static_rules: Vec<String>,
    pub limits: Limits,
    pub prune: bool,
    pub safety: Safety,
    pub grants: GrantPolicy,
    /// What gave each value above, by key; a key missing here holds its built-in default.
    pub given: BTreeMap<Key, Given>,
}

impl Resolved {
    /// The built-in defaults, the lowest layer.
    pub fn builtin() -> Resolved {
        Resolved {
            tags: Vec::new(),
            static_rules: Vec::new(),
            limits: Limits::default(),
            prune: false,
            safety: Safety::default(),
            grants: GrantPolicy::default(),
            given: BTreeMap::new(),
        }
    }

    /// Where `key`'s value came from, when some layer gave it.
    pub fn origin(&self, key: Key) -> Option<&Origin> {
        self.given.get(&key).and_then(|g| g.origin.as_ref())
    }
}

/// The defaults every vault starts from: built in < the file's `[defaults]` < flags and
/// environment (`flags`, read from `reader`). The one-run settings (`accept_missing_rules`,
/// `allow_tag_shrink`) have no file key and come from the flags only.
pub(super) fn vault_defaults(reader: &mut Reader<'_>, file: &ConfigFile) -> Resolved {
    let flags = Layer::read(reader);
    let mut defaults = flags.over(&file.defaults.over(&Resolved::builtin()));
    if let Some(accept) = reader.switch(Key::AcceptMissingRules) {
        defaults.safety.accept_missing_rules = accept;
    }
    defaults.safety.allow_tag_shrink = reader.list(Key::AllowTagShrink).to_vec();
    for key in [Key::AcceptMissingRules, Key::AllowTagShrink] {
        if let Some(given) = reader.givens.get(key) {
            defaults.given.insert(key, given.clone());
        }
    }
    defaults
}

/// The origin of `key` in `table` of the file at `path`.
fn file_origin(path: &Path, table: &str, key: Key) -> Option<Origin> {
    Some(Origin::File {
        path: path.to_path_buf(),
        table: table.to_owned(),
        key,
    })
}

/// Reads the TOML file `given` names, recording each problem in it.
pub(super) fn load_file(given: &Given, problems: &mut ConfigErrors) -> ConfigFile {
    let path = PathBuf::from(given.text().trim());
    let err = |detail: String| ConfigError::File {
        path: path.display().to_string(),
        detail,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            problems.push(ConfigError::Invalid {
                setting: given.shown_all(),
                reason: format!("cannot be read ({e}); expected a TOML file"),
            });
            return ConfigFile::unread();
        }
    };
    match toml::from_str::<toml::Table>(&text) {
        Ok(table) => walk_file(&path, &table, problems),
        Err(e) => {
            problems.push(err(toml_error(&text, &e)));
            ConfigFile::unread()
        }
    }
}

/// A TOML syntax error on one line: where, and what.
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// The file's top level: `resources`, `vaults`, `[defaults]`, `[[resource]]`, `[[vault]]`.
fn walk_file(path: &Path, table: &toml::Table, problems: &mut ConfigErrors) -> ConfigFile {
    let mut file = ConfigFile::default();
    let mut resource_entries = Vec::new();
    let mut vault_entries = Vec::new();
    for (name, value) in table {
        let at = |key: &str| format!("{}: {key}", path.display());
        match (name.as_str(), value) {
            ("resources" | "vaults", _) => {
                let key = if name == "resources" {
                    Key::Resources
                } else {
                    Key::Vaults
                };
                let mut givens = Givens::default();
                insert(
                    &mut givens,
                    key,
                    value,
                    file_origin(path, "", key),
                    problems,
                );
                let given = givens.get(key).cloned();
                match key {
                    Key::Resources => file.resources = given,
                    _ => file.vaults = given,
                }
            }
            ("defaults", toml::Value::Table(defaults)) => {
                file.defaults = read_table(path, "[defaults]", defaults, problems);
            }
            ("resource", toml::Value::Array(entries)) => {
                resource_entries = read_entries(path, RESOURCE_TABLE, entries, problems);
            }
            ("vault", toml::Value::Array(entries)) => {
                vault_entries = read_entries(path, VAULT_TABLE, entries, problems);
            }
            ("defaults" | "resource" | "vault", _) => problems.push(ConfigError::Invalid {
                setting: at(name),
                reason: "expected a [defaults] table, and [[resource]] or [[vault]] entries"
                    .to_owned(),
            }),
            _ => problems.push(ConfigError::Invalid {
                setting: at(name),
                reason: "unknown key; the file has resources, vaults, [defaults], and [[resource]] and [[vault]] entries"
                    .to_owned(),
            }),
        }
    }
    file.entries = resource_entries;
    file.entries.extend(vault_entries);
    file
}

/// The `[[resource]]` or `[[vault]]` entries: each an `id` and per-resource settings.
fn read_entries(
    path: &Path,
    kind: EntryTable,
    entries: &[toml::Value],
    problems: &mut ConfigErrors,
) -> Vec<Entry> {
    let mut out = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let table_name = format!("[[{}]] #{}", kind.name, index + 1);
        let at = format!("{}: {table_name}", path.display());
        let Some(table) = entry.as_table() else {
            problems.push(ConfigError::Invalid {
                setting: at,
                reason: format!("expected a table with the {}'s id and settings", kind.name),
            });
            continue;
        };
        let mut settings = table.clone();
        let id = match settings.remove("id") {
            Some(toml::Value::String(id)) => id,
            _ => {
                problems.push(ConfigError::Missing {
                    setting: format!("{at} id"),
                    reason: format!(
                        "each [[{0}]] entry names its {0} by ARM resource id",
                        kind.name
                    ),
                });
                continue;
            }
        };
        let id = Given {
            key: kind.key,
            values: vec![id],
            origin: file_origin(path, &table_name, kind.key),
        };
        let settings = read_table(path, &table_name, &settings, problems);
        out.push(Entry { id, settings });
    }
    out
}

/// A `[defaults]` table or the settings of a `[[resource]]` or `[[vault]]` entry, checked.
fn read_table(path: &Path, name: &str, table: &toml::Table, problems: &mut ConfigErrors) -> Layer {
    let mut givens = Givens::default();
    for (key_name, value) in table {
        match Key::from_name(key_name).filter(|k| LAYER_KEYS.contains(k)) {
            Some(key) => insert(
                &mut givens,
                key,
                value,
                file_origin(path, name, key),
                problems,
            ),
            None => problems.push(ConfigError::Invalid {
                setting: format!("{}: {name} {key_name}", path.display()),
                reason: format!(
                    "unknown key; {name} takes {}",
                    LAYER_KEYS
                        .iter()
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }
    Layer::read(&mut Reader {
        givens: &givens,
        problems,
    })
}

/// Records a TOML value as the text of `key`: a list's entries (an array, or a string with
/// commas as the variables have), or a single value's text.
fn insert(
    givens: &mut Givens,
    key: Key,
    value: &toml::Value,
    origin: Option<Origin>,
    problems: &mut ConfigErrors,
) {
    let shown = origin
        .as_ref()
        .map_or_else(|| key.name().to_owned(), ToString::to_string);
    let wrong = |problems: &mut ConfigErrors, what: &str| {
        problems.push(ConfigError::Invalid {
            setting: format!("{shown} = {value}"),
            reason: format!("expected {what}"),
        });
    };
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(s) => Some(s.trim().to_owned()),
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
            Some(value.to_string())
        }
        _ => None,
    };
    let values = match (key.is_list(), value) {
        (true, toml::Value::Array(items)) => {
            let Some(values) = items.iter().map(scalar).collect::<Option<Vec<String>>>() else {
                return wrong(problems, "a list of strings");
            };
            values
        }
        (true, toml::Value::String(text)) => text.split(',').map(|s| s.trim().to_owned()).collect(),
        (true, _) => return wrong(problems, "a list of strings"),
        (false, value) => match scalar(value) {
            Some(text) => vec![text],
            None => return wrong(problems, "a single value, not a list or table"),
        },
    };
    let values = values.into_iter().filter(|v| !v.is_empty()).collect();
    givens.insert(key, values, origin);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::Settings;

    fn read(text: &str) -> (ConfigFile, ConfigErrors) {
        let mut problems = ConfigErrors::default();
        let table: toml::Table = toml::from_str(text).unwrap();
        let file = walk_file(Path::new("t.toml"), &table, &mut problems);
        (file, problems)
    }

    fn defaults_of(settings: &Settings, file: &ConfigFile) -> (Resolved, ConfigErrors) {
        let givens = Givens::from_settings(settings);
        let mut problems = ConfigErrors::default();
        let resolved = vault_defaults(
            &mut Reader {
                givens: &givens,
                problems: &mut problems,
            },
            file,
        );
        (resolved, problems)
    }

    #[test]
    fn each_layer_records_where_its_values_came_from() {
        let (file, problems) =
            read("[defaults]\nmax_rules = 900\nslash31 = \"keep\"\nprune = true\n");
        assert!(problems.is_empty(), "{problems}");
        let mut settings = Settings {
            limits: super::super::settings::LimitSettings {
                max_rules: Some(800),
                ..Default::default()
            },
            ..Settings::default()
        };
        settings
            .origins
            .record(Key::MaxRules, Origin::Env("TAGFENCE_MAX_RULES".into()));
        let (resolved, problems) = defaults_of(&settings, &file);
        assert!(problems.is_empty(), "{problems}");
        assert_eq!(resolved.limits.max_rules, 800);
        assert_eq!(resolved.limits.slash31, Slash31::Keep);
        assert!(resolved.prune);
        assert_eq!(
            resolved.origin(Key::MaxRules),
            Some(&Origin::Env("TAGFENCE_MAX_RULES".into()))
        );
        assert_eq!(
            resolved.origin(Key::Slash31),
            file_origin(Path::new("t.toml"), "[defaults]", Key::Slash31).as_ref()
        );
        assert_eq!(resolved.origin(Key::Fit), None);
    }

    #[test]
    fn a_switch_given_false_turns_off_the_files_and_one_left_off_does_not() {
        let (file, _) = read("[defaults]\nadopt_existing = true\nprune = true\n");
        let mut settings = Settings::default();
        settings.texts.set(Key::Prune, "false");
        let (resolved, problems) = defaults_of(&settings, &file);
        assert!(problems.is_empty(), "{problems}");
        assert!(resolved.safety.adopt_existing);
        assert!(!resolved.prune);
    }

    #[test]
    fn every_problem_in_the_file_is_named_by_table_and_key() {
        let (_, problems) = read(
            "tagz = 1\n[defaults]\nmax_rules = 2000\nfit = \"lossy\"\ntagz = [\"x\"]\nstatic_rules = [\"10.0.0.1\", [5]]\nenvelope = \"AzureCloud, AzureCloud.westeurope\"\n\n[[vault]]\nmax_rules = 3\n",
        );
        // Keys are read in order of name.
        assert_eq!(
            problems.lines(),
            [
                "t.toml: [defaults] static_rules = [\"10.0.0.1\", [5]]: expected a list of strings",
                "t.toml: [defaults] tagz: unknown key; [defaults] takes tags, static_rules, max_rules, fit, envelope, max_extra_addresses, max_remove_fraction, slash31, prune, adopt_existing, init_firewall, max_tag_shrink, grant_principals, grant_max_ttl, grant_max_per_vault",
                "t.toml: [defaults] max_rules = 2000: expected a whole number from 1 to 1000 (a firewall's IP rules; each kind's own limit caps it: key vault 1000, storage account 400, container registry 100)",
                "t.toml: [defaults] fit = \"lossy\": expected exact or summarize",
                "t.toml: tagz: unknown key; the file has resources, vaults, [defaults], and [[resource]] and [[vault]] entries",
                "t.toml: [[vault]] #1 id is needed: each [[vault]] entry names its vault by ARM resource id",
            ]
        );
    }
}
