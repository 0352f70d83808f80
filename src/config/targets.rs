//! The resources to reconcile: those listed (flags and environment, the file's `resources` and
//! `vaults`, its `[[resource]]` and `[[vault]]` entries), and where tagged ones are discovered
//! and of which kinds; and the checks of a resource's layered settings taken together (options
//! that only make sense with others).

use super::error::{ConfigError, ConfigErrors};
use super::given::{allowed, is_guid, spelled, Given, Reader};
use super::layers::{static_rule_problem, ConfigFile, Resolved};
use super::settings::{Key, Origin, DEFAULT_DISCOVERY_TAG};
use super::vault::{kind_grants, kind_limits, TargetSource, VaultTarget};
use crate::azure::ResourceId;
use crate::core::desired::{self, FitMode, Selection};
use crate::core::kind::Kind;
use crate::core::profiles;

/// The shape of the resource ids tagfence manages, for the message that refuses another: the
/// provider types are the kinds' ([`Kind::resource_type`]; a test holds this to them).
pub const RESOURCE_ID_SHAPE: &str = "/subscriptions/<GUID>/resourceGroups/<group>/providers/<type>/<name>, <type> being Microsoft.KeyVault/vaults, Microsoft.Storage/storageAccounts or Microsoft.ContainerRegistry/registries";

/// Where and how tagged resources are discovered (of the kinds [`super::Config::kinds`]
/// names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub subscriptions: Vec<String>,
    pub management_groups: Vec<String>,
    /// The tag that marks a vault.
    pub tag: String,
}

/// What the checks of a vault's settings need to know about the rest of the configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct Context {
    /// Whether each vault must select something (reconciling; not for `status`).
    pub needs_selection: bool,
    /// Whether state is configured (grace windows and the tag-shrink guard need it).
    pub has_state: bool,
}

/// The listed resources, each with its settings: the defaults, or for a `[[resource]]` or
/// `[[vault]]` entry its own settings over them. `resources` and `vaults` are one list, by two
/// names: the targets are their union, and a resource listed twice anywhere is a problem naming
/// both places. Each problem is recorded; a resource with one is left out.
pub(super) fn listed_targets(
    reader: &mut Reader<'_>,
    file: &ConfigFile,
    defaults: &Resolved,
    context: Context,
) -> Vec<VaultTarget> {
    // Each resource: its id, how it was given (shown, and where), and its settings.
    let mut listed: Vec<(ResourceId, &Given, String, Resolved)> = Vec::new();
    let plain = [
        reader.givens.get(Key::Resources),
        reader.givens.get(Key::Vaults),
        file.resources.as_ref(),
        file.vaults.as_ref(),
    ];
    for given in plain.into_iter().flatten() {
        for value in &given.values {
            if let Some(id) = resource_id(given, value, reader.problems) {
                listed.push((id, given, given.shown(value), defaults.clone()));
            }
        }
    }
    for entry in &file.entries {
        if let Some(id) = resource_id(&entry.id, entry.id.text(), reader.problems) {
            let settings = entry.settings.over(defaults);
            listed.push((id, &entry.id, entry.id.shown_all(), settings));
        }
    }
    let mut targets: Vec<VaultTarget> = Vec::new();
    let mut seen: Vec<(ResourceId, String)> = Vec::new();
    for (id, given, shown, settings) in listed {
        if let Some((_, first)) = seen.iter().find(|(other, _)| other.same_as(&id)) {
            reader.problems.push(ConfigError::DuplicateVault {
                noun: id.kind.noun(),
                vault: id.to_string(),
                first: first.clone(),
                again: shown,
            });
            continue;
        }
        seen.push((id.clone(), shown));
        let vault = Some((&id, given.origin.as_ref()));
        check_vault(&settings, vault, context, reader.problems);
        if let Ok(target) = target(id, &settings, !context.needs_selection) {
            targets.push(target);
        }
    }
    targets
}

/// The resource `value` of `given` names (its kind from the id's provider type), or the problem
/// recorded.
fn resource_id(given: &Given, value: &str, problems: &mut ConfigErrors) -> Option<ResourceId> {
    let refuse = |problems: &mut ConfigErrors, what: String| {
        problems.push(ConfigError::Invalid {
            setting: given.shown(value),
            reason: format!(
                "not a resource id tagfence manages ({what}); expected {RESOURCE_ID_SHAPE}"
            ),
        });
    };
    match value.parse::<ResourceId>() {
        Err(err) => {
            refuse(problems, err.reason.to_owned());
            None
        }
        Ok(id) if !is_guid(&id.subscription) => {
            refuse(
                problems,
                format!("the subscription '{}' is not a GUID", id.subscription),
            );
            None
        }
        Ok(id) => Some(id),
    }
}

/// Checks a vault's settings taken together (`vault`: the vault and where it was listed; `None`
/// for the defaults themselves):
/// options of a summarised fit with an exact one, the tag-shrink guard without state, and a
/// vault that selects nothing.
pub(super) fn check_vault(
    settings: &Resolved,
    vault: Option<(&ResourceId, Option<&Origin>)>,
    context: Context,
    problems: &mut ConfigErrors,
) {
    if settings.limits.fit != FitMode::Summarize {
        for key in [Key::Envelope, Key::MaxExtraAddresses] {
            if let Some(given) = settings.given.get(&key) {
                let fit = match settings.given.get(&Key::Fit) {
                    Some(fit) => format!("and {} asks for an exact one", fit.shown_all()),
                    None => format!(
                        "and the fit is exact by default; give {} too, or leave it out",
                        spelled(given.origin.as_ref(), Key::Fit, Some("summarize"))
                    ),
                };
                problems.push(ConfigError::Conflict {
                    setting: given.named(),
                    reason: format!("only used by a summarized fit, {fit}"),
                });
            }
        }
    }
    if let (Some(given), false) = (settings.given.get(&Key::MaxTagShrink), context.has_state) {
        problems.push(needs_state(given));
    }
    // A selection given but refused entry by entry is a problem already.
    let given = |key| settings.given.contains_key(&key);
    let selects = !settings.tags.is_empty()
        || !settings.static_rules.is_empty()
        || given(Key::Tags)
        || given(Key::StaticRules);
    if let (Some((id, listed)), true, false) = (vault, context.needs_selection, selects) {
        // Say how to select the way the vault was listed: a flag, a variable, the file.
        let like = settings.origin(Key::Tags).or(listed);
        problems.push(ConfigError::NothingSelected {
            noun: id.kind.noun(),
            vault: id.to_string(),
            hint: format!(
                "{} or {}",
                spelled(like, Key::Tags, None),
                spelled(like, Key::StaticRules, None)
            ),
        });
    }
}

/// The problem of a setting that needs state when there is none.
pub(super) fn needs_state(given: &Given) -> ConfigError {
    let like = given.origin.as_ref();
    ConfigError::Conflict {
        setting: given.named(),
        reason: format!(
            "needs state, and no state location is configured; give {} or {} too",
            spelled(like, Key::StateDir, None),
            spelled(like, Key::StateUrl, None)
        ),
    }
}

/// Builds a resource's target from its layered settings, its limits and grants capped by its
/// kind ([`kind_limits`], [`kind_grants`]); with `may_select_nothing` (`status`, which
/// reconciles nothing), also one that selects nothing.
///
/// # Errors
/// Why the settings make no target: a static rule or profile refused, or nothing selected.
pub(super) fn target(
    id: ResourceId,
    settings: &Resolved,
    may_select_nothing: bool,
) -> Result<VaultTarget, String> {
    let static_rules = settings
        .static_rules
        .iter()
        .map(|r| {
            desired::parse_static_rule(r)
                .map_err(|e| format!("static rule '{r}' {}", static_rule_problem(&e)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tags = profiles::expand(&settings.tags).map_err(|e| e.to_string())?;
    if tags.is_empty() && static_rules.is_empty() && !may_select_nothing {
        return Err("no tags or static rules selected".to_owned());
    }
    let kind = id.kind;
    Ok(VaultTarget {
        id,
        selection: Selection {
            tags,
            static_rules,
            grace: Vec::new(),
        },
        limits: kind_limits(kind, &settings.limits),
        prune: settings.prune,
        safety: settings.safety.clone(),
        grants: kind_grants(kind, &settings.grants),
        source: TargetSource::Listed,
    })
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
        settings.given.remove(&Key::Tags);
    }
    settings
        .static_rules
        .extend(rules.iter().map(|r| (*r).to_owned()));
    settings
}

/// Discovery as the settings give it; `None` without a subscription or management group.
pub(super) fn discovery(reader: &mut Reader<'_>) -> Option<Discovery> {
    let givens = reader.givens;
    if let Some(given) = givens.get(Key::DiscoverSubscriptions) {
        for bad in given.values.iter().filter(|s| !is_guid(s)) {
            let reason =
                "not a subscription id; expected a GUID (00000000-0000-0000-0000-000000000000)";
            reader.invalid(given, bad, reason);
        }
    }
    if let Some(given) = givens.get(Key::DiscoverManagementGroups) {
        for bad in given.values.iter().filter(|g| !is_management_group(g)) {
            let reason = "not a management group id; expected up to 90 letters, digits, hyphens, underscores, periods or parentheses";
            reader.invalid(given, bad, reason);
        }
    }
    let tag = discovery_tag(reader);
    let subscriptions = reader.list(Key::DiscoverSubscriptions).to_vec();
    let management_groups = reader.list(Key::DiscoverManagementGroups).to_vec();
    if subscriptions.is_empty() && management_groups.is_empty() {
        return None;
    }
    Some(Discovery {
        subscriptions,
        management_groups,
        tag,
    })
}

/// A management group's id (its name): 1-90 letters, digits, `-`, `_`, `.`, `(`, `)`.
fn is_management_group(name: &str) -> bool {
    (1..=90).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c))
}

/// The tag that marks a vault. It goes inside a quoted string of the Resource Graph query, so
/// it may not hold quotes or backslashes, nor what Azure refuses in a tag name.
fn discovery_tag(reader: &mut Reader<'_>) -> String {
    let Some(given) = reader.givens.get(Key::DiscoverTag) else {
        return DEFAULT_DISCOVERY_TAG.to_owned();
    };
    let tag = given.text().trim();
    if tag.contains(['\'', '"', '\\', '<', '>', '%', '&', '?', '/']) || tag.len() > 512 {
        let reason = "expected a tag name of at most 512 characters without quotes, backslashes or any of < > % & ? /";
        reader.invalid(given, tag, reason);
        return DEFAULT_DISCOVERY_TAG.to_owned();
    }
    tag.to_owned()
}

/// The kinds discovery and the Event Grid hook consider: those the `kinds` setting names,
/// sorted and once each; every kind when it is not given (or names none it takes).
pub(super) fn kinds(reader: &mut Reader<'_>) -> Vec<Kind> {
    let mut kinds = Vec::new();
    if let Some(given) = reader.givens.get(Key::Kinds) {
        for name in &given.values {
            match Kind::from_name(name) {
                Some(kind) => kinds.push(kind),
                None => {
                    let reason = format!(
                        "not a kind tagfence manages; expected {}",
                        allowed(Key::Kinds)
                    );
                    reader.invalid(given, name, reason);
                }
            }
        }
    }
    if kinds.is_empty() {
        kinds = Kind::ALL.to_vec();
    }
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

/// The resources the settings name, with no flag or variable left to say which: for a message
/// asking for some.
pub(super) fn no_vaults(like: Option<&Origin>) -> ConfigError {
    ConfigError::NoVaults {
        hint: format!(
            "{}, {}, resources or vaults in the configuration file, or a discovery scope ({} or {})",
            spelled(like, Key::Resources, None),
            spelled(like, Key::Vaults, None),
            spelled(like, Key::DiscoverSubscriptions, None),
            spelled(like, Key::DiscoverManagementGroups, None)
        ),
    }
}
