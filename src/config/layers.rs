//! The per-vault settings, layered: built-in defaults, the TOML file's `[defaults]`, flags and
//! environment, then a `[[vault]]` entry's own settings for its vault. Each layer records
//! where the values it gives came from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use super::error::ConfigError;
use super::settings::{Key, Origin, Origins, Settings};
use super::vault::Safety;
use crate::core::desired::{FitMode, Limits};
use crate::core::fit::Slash31;

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    /// Where it was read from, for the origins of its keys.
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(default)]
    pub vaults: Vec<String>,
    #[serde(default)]
    pub defaults: Layer,
    #[serde(default, rename = "vault")]
    pub vault_entries: Vec<VaultEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VaultEntry {
    pub id: String,
    #[serde(flatten)]
    pub settings: Layer,
}

/// The per-vault settings one layer gives; `None` leaves the layer below in force. The TOML
/// file's `[defaults]` and `[[vault]]` entries have these keys.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Layer {
    tags: Option<Vec<String>>,
    static_rules: Option<Vec<String>>,
    max_rules: Option<usize>,
    fit: Option<FitMode>,
    envelope: Option<Vec<String>>,
    max_extra_addresses: Option<u64>,
    max_remove_fraction: Option<f64>,
    #[serde(default, deserialize_with = "slash31")]
    slash31: Option<Slash31>,
    prune: Option<bool>,
    adopt_existing: Option<bool>,
    init_firewall: Option<bool>,
    max_tag_shrink: Option<f64>,
}

/// `"split"` or `"keep"`, as the file spells [`Slash31`] (which the core keeps free of serde).
fn slash31<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Slash31>, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Form {
        Split,
        Keep,
    }
    Ok(
        Option::<Form>::deserialize(deserializer)?.map(|form| match form {
            Form::Split => Slash31::Split,
            Form::Keep => Slash31::Keep,
        }),
    )
}

/// Per-vault settings with every layer applied, before validation.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub tags: Vec<String>,
    pub static_rules: Vec<String>,
    pub limits: Limits,
    pub prune: bool,
    pub safety: Safety,
    /// Where each value above came from; a key missing here holds its built-in default.
    pub origins: Origins,
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
            origins: Origins::default(),
        }
    }
}

/// Applies one layer's values over a copy of the layer below, recording their origins.
struct Setter<'a> {
    origins: &'a mut Origins,
    origin: &'a dyn Fn(Key) -> Option<Origin>,
}

impl Setter<'_> {
    /// Puts the layer's value of `key` into `slot` when it gives one, with where it came from.
    fn set<T: Clone>(&mut self, key: Key, slot: &mut T, given: &Option<T>) {
        if let Some(value) = given {
            *slot = value.clone();
            if let Some(origin) = (self.origin)(key) {
                self.origins.record(key, origin);
            }
        }
    }
}

impl Layer {
    /// The per-vault part of the flags and environment. Empty lists and switches left off give
    /// nothing, so a switch can only turn on what the file's `[defaults]` left off.
    pub fn from_flags(settings: &Settings) -> Layer {
        let listed = |values: &Vec<String>| (!values.is_empty()).then(|| values.clone());
        let on = |switch: bool| switch.then_some(true);
        let limits = &settings.limits;
        // Blank envelope tags are dropped before deciding whether any were given.
        let envelope: Vec<String> = limits
            .envelope
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        Layer {
            tags: listed(&settings.selection.tags),
            static_rules: listed(&settings.selection.static_rules),
            max_rules: limits.max_rules,
            fit: limits.fit,
            envelope: listed(&envelope),
            max_extra_addresses: limits.max_extra_addresses,
            max_remove_fraction: limits.max_remove_fraction,
            slash31: limits.slash31,
            prune: on(settings.prune),
            adopt_existing: on(settings.adopt_existing),
            init_firewall: on(settings.init_firewall),
            max_tag_shrink: settings.max_tag_shrink,
        }
    }

    /// This layer over `base`: each setting given replaces the base's. `origin` says where
    /// this layer's value of a key came from.
    pub fn over(&self, base: &Resolved, origin: &dyn Fn(Key) -> Option<Origin>) -> Resolved {
        let mut out = base.clone();
        let mut at = Setter {
            origins: &mut out.origins,
            origin,
        };
        let (limits, safety) = (&mut out.limits, &mut out.safety);
        at.set(Key::Tags, &mut out.tags, &self.tags);
        at.set(Key::StaticRules, &mut out.static_rules, &self.static_rules);
        at.set(Key::MaxRules, &mut limits.max_rules, &self.max_rules);
        at.set(Key::Fit, &mut limits.fit, &self.fit);
        at.set(Key::Envelope, &mut limits.envelope, &self.envelope);
        // The limit is itself optional (no limit): a value given sets `Some`.
        let extra = self.max_extra_addresses.map(Some);
        at.set(
            Key::MaxExtraAddresses,
            &mut limits.max_extra_addresses,
            &extra,
        );
        let fraction = &self.max_remove_fraction;
        at.set(
            Key::MaxRemoveFraction,
            &mut limits.max_remove_fraction,
            fraction,
        );
        at.set(Key::Slash31, &mut limits.slash31, &self.slash31);
        at.set(Key::Prune, &mut out.prune, &self.prune);
        at.set(
            Key::AdoptExisting,
            &mut safety.adopt_existing,
            &self.adopt_existing,
        );
        at.set(
            Key::InitFirewall,
            &mut safety.init_firewall,
            &self.init_firewall,
        );
        at.set(
            Key::MaxTagShrink,
            &mut safety.max_tag_shrink,
            &self.max_tag_shrink,
        );
        out
    }
}

/// The origin of a key in `table` of the file at `path`.
pub(super) fn file_origin(path: &Path, table: String) -> impl Fn(Key) -> Option<Origin> + '_ {
    move |key| {
        Some(Origin::File {
            path: path.to_path_buf(),
            table: table.clone(),
            key,
        })
    }
}

/// The defaults every vault starts from: built in < the file's `[defaults]` < flags and
/// environment. The one-run settings (`accept_missing_rules`, `allow_tag_shrink`) have no file
/// key and come from the flags only.
pub(super) fn vault_defaults(settings: &Settings, file: &ConfigFile) -> Resolved {
    let from_file = file_origin(&file.path, "[defaults]".to_owned());
    let under_flags = file.defaults.over(&Resolved::builtin(), &from_file);
    let from_flags = |key| settings.origins.get(key).cloned();
    let mut defaults = Layer::from_flags(settings).over(&under_flags, &from_flags);
    defaults.safety.accept_missing_rules |= settings.accept_missing_rules;
    defaults.safety.allow_tag_shrink = settings
        .allow_tag_shrink
        .iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    for key in [Key::AcceptMissingRules, Key::AllowTagShrink] {
        if let Some(origin) = from_flags(key) {
            defaults.origins.record(key, origin);
        }
    }
    defaults
}

/// Reads the TOML file at `path`.
pub(super) fn load_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    let err = |detail: String| ConfigError::File {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut file: ConfigFile =
        toml::from_str(&text).map_err(|e| err(e.to_string().trim().replace('\n', " ")))?;
    file.path = path.to_path_buf();
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_layer_records_where_its_values_came_from() {
        let file: ConfigFile =
            toml::from_str("[defaults]\nmax_rules = 900\nslash31 = \"keep\"\nprune = true\n")
                .unwrap();
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
        let resolved = vault_defaults(&settings, &file);
        assert_eq!(resolved.limits.max_rules, 800);
        assert_eq!(resolved.limits.slash31, Slash31::Keep);
        assert!(resolved.prune);
        assert_eq!(
            resolved.origins.get(Key::MaxRules),
            Some(&Origin::Env("TAGFENCE_MAX_RULES".into()))
        );
        assert_eq!(
            resolved.origins.get(Key::Slash31),
            Some(&Origin::File {
                path: PathBuf::new(),
                table: "[defaults]".to_owned(),
                key: Key::Slash31
            })
        );
        assert_eq!(resolved.origins.get(Key::Fit), None);
    }

    #[test]
    fn a_switch_left_off_does_not_turn_off_the_files() {
        let file: ConfigFile = toml::from_str("[defaults]\nadopt_existing = true\n").unwrap();
        let resolved = vault_defaults(&Settings::default(), &file);
        assert!(resolved.safety.adopt_existing);
    }
}
