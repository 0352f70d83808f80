//! The vaults to reconcile: those listed (flags and environment, the file's `vaults`, its
//! `[[vault]]` entries), and where tagged vaults are discovered.

use super::error::ConfigError;
use super::layers::{file_origin, ConfigFile, Resolved};
use super::settings::{Key, Settings, DEFAULT_DISCOVERY_TAG};
use super::vault::{TargetSource, VaultTarget};
use crate::azure::{self, VaultId};
use crate::core::desired::{self, Selection};
use crate::core::profiles;

/// Where and how vaults are discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub subscriptions: Vec<String>,
    pub management_groups: Vec<String>,
    /// The tag that marks a vault.
    pub tag: String,
}

/// The listed vaults, each with its settings: the defaults, or for a `[[vault]]` entry its own
/// settings over them.
pub(super) fn listed_targets(
    settings: &Settings,
    file: &ConfigFile,
    defaults: &Resolved,
) -> Result<Vec<VaultTarget>, ConfigError> {
    let mut targets: Vec<VaultTarget> = Vec::new();
    for given in settings.vaults.iter().filter(|v| !v.trim().is_empty()) {
        add(&mut targets, given, "--vault / TAGFENCE_VAULTS", defaults)?;
    }
    for given in &file.vaults {
        add(
            &mut targets,
            given,
            "the configuration file's vaults",
            defaults,
        )?;
    }
    for (index, entry) in file.vault_entries.iter().enumerate() {
        let origin = file_origin(&file.path, format!("[[vault]] #{}", index + 1));
        let own = entry.settings.over(defaults, &origin);
        add(&mut targets, &entry.id, "a [[vault]] entry", &own)?;
    }
    Ok(targets)
}

/// Adds the vault `given` (listed at `origin`) with `settings`, unless it is listed already.
fn add(
    targets: &mut Vec<VaultTarget>,
    given: &str,
    origin: &'static str,
    settings: &Resolved,
) -> Result<(), ConfigError> {
    let id: VaultId = given
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
}

/// Checks a vault's layered settings into its target: static rules, profiles, a non-empty
/// selection, and fractions between 0 and 1 (the file's are not checked when it is read).
pub(super) fn target(id: VaultId, settings: &Resolved) -> Result<VaultTarget, ConfigError> {
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
    check_fractions(settings)?;
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

fn check_fractions(settings: &Resolved) -> Result<(), ConfigError> {
    let shrink = settings.safety.max_tag_shrink;
    if !(0.0..=1.0).contains(&shrink) {
        return Err(ConfigError::Setting {
            setting: "--max-tag-shrink (TAGFENCE_MAX_TAG_SHRINK, max_tag_shrink)",
            reason: format!(
                "{shrink} is not between 0 and 1 (the fraction of a tag's prefixes that may go between two documents)"
            ),
        });
    }
    let remove = settings.limits.max_remove_fraction;
    if !(0.0..=1.0).contains(&remove) {
        return Err(ConfigError::Setting {
            setting: "max_remove_fraction",
            reason: format!("{remove} is not between 0 and 1"),
        });
    }
    Ok(())
}

/// The settings of a discovered vault whose discovery tag has `value`: the defaults, with the
/// tags and profiles the value names (all of the defaults' when it names none, or is
/// `default`) and the static rules it gives added to the defaults' ones.
pub(super) fn discovered_settings(defaults: &Resolved, value: &str) -> Resolved {
    let mut settings = defaults.clone();
    let tokens: Vec<&str> = value
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    let defaults_only = tokens.is_empty()
        || (tokens.len() == 1
            && ["default", "on", "true", "yes"]
                .iter()
                .any(|word| tokens[0].eq_ignore_ascii_case(word)));
    if defaults_only {
        return settings;
    }
    // A token starting with a digit is a rule (no tag or profile name does).
    let (rules, names): (Vec<&str>, Vec<&str>) = tokens
        .iter()
        .partition(|t| t.starts_with(|c: char| c.is_ascii_digit()));
    if !names.is_empty() {
        settings.tags = names.iter().map(|n| (*n).to_owned()).collect();
        // The vault's own tag gave them, not a flag or the file.
        settings.origins.forget(Key::Tags);
    }
    settings
        .static_rules
        .extend(rules.iter().map(|r| (*r).to_owned()));
    settings
}

/// Discovery as the settings give it; `None` without a subscription or management group.
pub(super) fn discovery(settings: &Settings) -> Result<Option<Discovery>, ConfigError> {
    let clean = |values: &[String]| -> Vec<String> {
        values
            .iter()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect()
    };
    let subscriptions = clean(&settings.discover_subscriptions);
    let management_groups = clean(&settings.discover_management_groups);
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
    Ok(Some(Discovery {
        subscriptions,
        management_groups,
        tag: discovery_tag(settings)?,
    }))
}

/// The tag that marks a vault. It goes inside a quoted string of the Resource Graph query, so
/// it may not hold quotes or backslashes.
fn discovery_tag(settings: &Settings) -> Result<String, ConfigError> {
    match settings.discover_tag.as_deref().map(str::trim) {
        None | Some("") => Ok(DEFAULT_DISCOVERY_TAG.to_owned()),
        Some(tag) if tag.contains(['\'', '"', '\\']) => Err(ConfigError::Setting {
            setting: "--discover-tag (TAGFENCE_DISCOVER_TAG)",
            reason: format!("'{tag}' may not contain quotes or backslashes"),
        }),
        Some(tag) => Ok(tag.to_owned()),
    }
}
