//! From a Service Tags document and a selection to the rules a vault should hold.
//!
//! The steps, each pure: resolve the selected tag names → take their IPv4 prefixes (IPv6 dropped
//! and counted) → drop reserved space (counted) → collapse losslessly → fit into the slots left
//! by the rules kept for other reasons → add the static rules → write in the target's rule form.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::cidr::{self, RuleError};
use super::fit::{self, Allowed, FitError, Slash31};
use super::service_tags::{ServiceTag, ServiceTags};

/// Key Vault's documented limit of IPv4 rules per vault: "A maximum of 200 virtual network rules
/// and 1000 IPv4 rules are allowed" (learn.microsoft.com/azure/key-vault/general/network-security).
pub const KEY_VAULT_MAX_RULES: usize = 1000;

/// What to allow: tags by name, plus literal rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Service tag names, matched case-insensitively.
    pub tags: Vec<String>,
    /// Literal rules (e.g. a self-hosted agent's public IP), already checked with
    /// [`parse_static_rule`].
    pub static_rules: Vec<Ipv4Net>,
    /// Ranges of the previous version of selected tags, kept during a grace window after the
    /// tag changed (Microsoft publishes new ranges a week before use; pipelines may still use
    /// the old ones meanwhile).
    pub grace: Vec<GraceTag>,
}

/// The previous version's IPv4 prefixes of a selected tag, kept for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraceTag {
    /// The tag's name.
    pub tag: String,
    /// Its change number in the previous version.
    pub change_number: u64,
    pub prefixes: Vec<Ipv4Net>,
}

/// How to meet the rule limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitMode {
    /// Exactly the selected addresses; refuse when they need more rules than there is room for.
    #[default]
    Exact,
    /// The fewest extra addresses that fit the room (see [`fit`]).
    Summarize,
}

/// Limits and safety settings for one vault.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// All IPv4 rules the vault may hold, managed or not.
    pub max_rules: usize,
    pub fit: FitMode,
    /// Tags whose IPv4 space bounds the extra addresses a summarized fit may admit.
    pub envelope: Vec<String>,
    /// Refuse a fit that admits more extra addresses than this.
    pub max_extra_addresses: Option<u64>,
    /// Refuse a plan that removes more than this fraction of the managed rules.
    pub max_remove_fraction: f64,
    /// How /31 prefixes are written.
    pub slash31: Slash31,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rules: KEY_VAULT_MAX_RULES,
            fit: FitMode::Exact,
            envelope: Vec::new(),
            max_extra_addresses: None,
            max_remove_fraction: 0.2,
            slash31: Slash31::Split,
        }
    }
}

/// Counts of prefixes left out because Key Vault cannot hold them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// IPv6 prefixes (Key Vault rules are IPv4 only).
    pub ipv6: usize,
    /// IPv4 prefixes wholly or partly in reserved ranges.
    pub private: usize,
}

/// A selected tag as resolved in the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectedTag {
    /// The tag's name as the document spells it.
    pub name: String,
    pub change_number: u64,
    /// Its IPv4 prefixes as published.
    pub ipv4_prefixes: usize,
    /// Its Azure region as the document gives it (`westeurope`); empty for a global tag.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
}

/// Where a desired rule comes from and what it admits beyond the selection, for people reading
/// the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleInfo {
    pub origin: Origin,
    /// Addresses this rule admits that no selected tag or static rule asked for.
    pub extra_addresses: u64,
}

/// Where a desired rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The first selected tag (index into [`DesiredRules::tags`]) whose addresses it allows.
    Tag(usize),
    /// A static rule.
    Static,
}

/// The rules a vault should hold for a selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredRules {
    /// Sorted, canonical, in the target's rule form.
    pub rules: Vec<Ipv4Net>,
    /// Parallel to `rules`.
    pub info: Vec<RuleInfo>,
    /// Addresses the rules admit beyond the selection (0 unless summarized).
    pub extra_addresses: u64,
    pub dropped: Dropped,
    pub tags: Vec<SelectedTag>,
    pub static_rules: Vec<Ipv4Net>,
    /// Previous versions of selected tags whose ranges are kept during the grace window (their
    /// change number then, and how many IPv4 prefixes they had).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grace: Vec<SelectedTag>,
}

impl DesiredRules {
    /// What is known of `rule` if it is one of the desired rules.
    pub fn info_of(&self, rule: &Ipv4Net) -> Option<RuleInfo> {
        self.rules.binary_search(rule).ok().map(|i| self.info[i])
    }

    /// The origin of `rule` if it is one of the desired rules.
    pub fn origin_of(&self, rule: &Ipv4Net) -> Option<Origin> {
        self.info_of(rule).map(|info| info.origin)
    }
}

/// Why the desired rules could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DesireError {
    #[error("unknown service tag '{name}'{}", suggest(.suggestions))]
    UnknownTag {
        name: String,
        suggestions: Vec<String>,
    },
    #[error("unknown envelope tag '{name}'{}", suggest(.suggestions))]
    UnknownEnvelopeTag {
        name: String,
        suggestions: Vec<String>,
    },
    #[error("nothing selected: give at least one --tag or --static-rule")]
    NothingSelected,
    #[error(
        "the selection needs {} rules but only {} of the firewall's {} are free{}; select fewer tags or use --fit summarize",
        crate::core::text::count(*.count), crate::core::text::count(*.available), crate::core::text::count(*.limit), kept_note(*.kept)
    )]
    DoesNotFit {
        count: usize,
        available: usize,
        limit: usize,
        kept: usize,
    },
    #[error("the static rules alone need {} rules but only {} of the firewall's {} are free", crate::core::text::count(*.count), crate::core::text::count(*.available), crate::core::text::count(*.limit))]
    StaticRulesDoNotFit {
        count: usize,
        available: usize,
        limit: usize,
    },
    #[error("fitting the selection into {} rules", crate::core::text::count(*.available))]
    Fit {
        available: usize,
        #[source]
        source: FitError,
    },
    #[error("the fit admits {} extra addresses, more than --max-extra-addresses {max}", crate::core::text::count(*.extra))]
    TooManyExtraAddresses { extra: u64, max: u64 },
}

fn suggest(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        [one] => format!(" (did you mean '{one}'?)"),
        many => format!(
            " (did you mean one of: {}?)",
            many.iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn kept_note(kept: usize) -> String {
    if kept == 0 {
        String::new()
    } else {
        format!(" ({kept} are held by rules tagfence keeps)")
    }
}

/// Parses and checks a static rule: IPv4, public, no host bits; a bare address becomes a `/32`.
///
/// # Errors
/// A [`RuleError`] naming the rule.
pub fn parse_static_rule(text: &str) -> Result<Ipv4Net, RuleError> {
    cidr::check_public(cidr::parse_rule(text)?, text)
}

/// Names close to `name` among the document's tags, best first, for "did you mean".
pub fn close_names(doc: &ServiceTags, name: &str) -> Vec<String> {
    let wanted = name.to_ascii_lowercase();
    let mut scored: Vec<(f64, &str)> = doc
        .all_names()
        .map(|name| {
            let candidate = name.to_ascii_lowercase();
            let mut score = strsim::jaro_winkler(&wanted, &candidate);
            // "AzureCloud.westeur" should find "AzureCloud.westeurope".
            if candidate.starts_with(&wanted) || wanted.starts_with(&candidate) {
                score = score.max(0.9);
            }
            (score, name)
        })
        .filter(|(score, _)| *score >= 0.85)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(3)
        .map(|(_, n)| n.to_owned())
        .collect()
}

/// Every tag a selection and its limits name that `doc` does not hold (selected tags, then
/// envelope tags), each once, with suggestions: a run checks its listed vaults with this before
/// it reads any vault, so that a typo is reported once, not once per vault.
pub fn unknown_tags(doc: &ServiceTags, selection: &Selection, limits: &Limits) -> Vec<DesireError> {
    let mut unknown: Vec<DesireError> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let names = selection
        .tags
        .iter()
        .map(|n| (n, false))
        .chain(limits.envelope.iter().map(|n| (n, true)));
    for (name, envelope) in names {
        let name = name.trim();
        if doc.find(name).is_some() || seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            continue;
        }
        seen.push(name.to_owned());
        if let Err(err) = resolve(doc, &[name.to_owned()], envelope) {
            unknown.push(err);
        }
    }
    unknown
}

fn resolve<'d>(
    doc: &'d ServiceTags,
    names: &[String],
    envelope: bool,
) -> Result<Vec<ServiceTag<'d>>, DesireError> {
    let mut found: Vec<ServiceTag<'d>> = Vec::with_capacity(names.len());
    for name in names {
        let Some(tag) = doc.find(name.trim()) else {
            let name = name.trim().to_owned();
            let suggestions = close_names(doc, &name);
            return Err(if envelope {
                DesireError::UnknownEnvelopeTag { name, suggestions }
            } else {
                DesireError::UnknownTag { name, suggestions }
            });
        };
        if !found.iter().any(|t| t.name == tag.name) {
            found.push(tag);
        }
    }
    Ok(found)
}

/// The collapsed public IPv4 space of `tags` (plus any `extra` IPv4 prefixes), and what was
/// dropped on the way.
fn public_space(tags: &[ServiceTag<'_>], extra: &[Ipv4Net]) -> (Vec<Ipv4Net>, Dropped) {
    let mut dropped = Dropped::default();
    let mut public =
        Vec::with_capacity(tags.iter().map(|t| t.ipv4.len()).sum::<usize>() + extra.len());
    for tag in tags {
        dropped.ipv6 += tag.ipv6.len();
        dropped.private += cidr::drop_reserved(tag.ipv4, &mut public);
    }
    dropped.private += cidr::drop_reserved(extra, &mut public);
    (cidr::collapse(&public), dropped)
}

/// The grace prefixes of each resolved tag (empty for tags not in grace).
fn grace_of(tags: &[ServiceTag<'_>], grace: &[GraceTag]) -> Vec<Vec<Ipv4Net>> {
    tags.iter()
        .map(|tag| {
            grace
                .iter()
                .filter(|g| g.tag.eq_ignore_ascii_case(tag.name))
                .flat_map(|g| g.prefixes.iter().copied())
                .collect()
        })
        .collect()
}

/// What the desired rules of a selection depend on, as one comparable string: the resolved
/// tags and their change numbers (selected and envelope), the static rules, the grace ranges
/// and the limits. Equal keys give equal desired rules (for the same room); `None` when a tag
/// is unknown.
pub fn inputs_key(doc: &ServiceTags, selection: &Selection, limits: &Limits) -> Option<String> {
    let tags = resolve(doc, &selection.tags, false).ok()?;
    let envelope = resolve(doc, &limits.envelope, true).ok()?;
    let versions = |tags: &[ServiceTag<'_>]| -> Vec<(String, u64)> {
        tags.iter()
            .map(|t| (t.name.to_owned(), t.change_number))
            .collect()
    };
    let grace: Vec<(String, u64, usize)> = selection
        .grace
        .iter()
        .map(|g| (g.tag.clone(), g.change_number, g.prefixes.len()))
        .collect();
    let key = serde_json::json!({
        "cloud": doc.cloud,
        "tags": versions(&tags),
        "envelope": versions(&envelope),
        "static_rules": selection.static_rules.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "grace": grace,
        "max_rules": limits.max_rules,
        "fit": limits.fit,
        "max_extra_addresses": limits.max_extra_addresses,
        "slash31": limits.slash31.as_str(),
    });
    Some(key.to_string())
}

/// The rules a vault should hold, given `kept` rules it holds for other reasons (unmanaged
/// rules tagfence will not remove), which use slots of `limits.max_rules` too.
///
/// # Errors
/// A [`DesireError`]: an unknown tag, an empty selection, or a selection that cannot be fitted.
pub fn desired_rules(
    doc: &ServiceTags,
    selection: &Selection,
    limits: &Limits,
    kept: usize,
) -> Result<DesiredRules, DesireError> {
    if selection.tags.is_empty() && selection.static_rules.is_empty() {
        return Err(DesireError::NothingSelected);
    }
    let tags = resolve(doc, &selection.tags, false)?;
    let grace = grace_of(&tags, &selection.grace);
    let (tag_space, dropped) = public_space(&tags, &grace.concat());
    let statics = cidr::collapse(&selection.static_rules);
    let available = limits.max_rules.saturating_sub(kept);

    let (tag_rules, extra_addresses) = match limits.fit {
        FitMode::Exact => (tag_space.clone(), 0),
        FitMode::Summarize => summarize(doc, limits, &tag_space, &statics, available)?,
    };
    let mut rules = Vec::with_capacity(tag_rules.len() + statics.len());
    for net in cidr::collapse(&[tag_rules, statics.clone()].concat()) {
        limits.slash31.emit(net, &mut rules);
    }
    within_limits(rules.len(), extra_addresses, limits, available, kept)?;

    let info = rule_info(&rules, &tags, &grace, &tag_space, &statics);
    Ok(DesiredRules {
        rules,
        info,
        extra_addresses,
        dropped,
        tags: tags
            .iter()
            .map(|t| SelectedTag {
                name: t.name.to_owned(),
                change_number: t.change_number,
                ipv4_prefixes: t.ipv4.len(),
                region: t.region.to_owned(),
            })
            .collect(),
        static_rules: statics,
        grace: selection
            .grace
            .iter()
            .filter(|g| tags.iter().any(|t| t.name.eq_ignore_ascii_case(&g.tag)))
            .map(|g| SelectedTag {
                name: g.tag.clone(),
                change_number: g.change_number,
                ipv4_prefixes: g.prefixes.len(),
                region: String::new(),
            })
            .collect(),
    })
}

/// The summarized fit of the tags' space into the `available` slots the static rules leave,
/// within the envelope when one is set: the tag rules and the extra addresses they admit.
fn summarize(
    doc: &ServiceTags,
    limits: &Limits,
    tag_space: &[Ipv4Net],
    statics: &[Ipv4Net],
    available: usize,
) -> Result<(Vec<Ipv4Net>, u64), DesireError> {
    // The static rules are never summarized, so they must fit on their own first.
    let static_slots = limits.slash31.slots(statics);
    if static_slots > available {
        return Err(DesireError::StaticRulesDoNotFit {
            count: static_slots,
            available,
            limit: limits.max_rules,
        });
    }
    // The fit does not need to cover what the static rules already cover.
    let uncovered = subtract(tag_space, statics);
    let allowed = if limits.envelope.is_empty() {
        Allowed::anywhere()
    } else {
        let envelope_tags = resolve(doc, &limits.envelope, true)?;
        Allowed::within(&uncovered, &public_space(&envelope_tags, &[]).0)
    };
    let fitted = fit::fit(
        &uncovered,
        available - static_slots,
        &allowed,
        limits.slash31,
    )
    .map_err(|source| DesireError::Fit { available, source })?;
    Ok((fitted.rules, fitted.extra_addresses))
}

/// Refuses `count` rules that need more than the `available` slots, and a fit that admits more
/// extra addresses than `limits.max_extra_addresses`.
fn within_limits(
    count: usize,
    extra_addresses: u64,
    limits: &Limits,
    available: usize,
    kept: usize,
) -> Result<(), DesireError> {
    if count > available {
        return Err(DesireError::DoesNotFit {
            count,
            available,
            limit: limits.max_rules,
            kept,
        });
    }
    if let Some(max) = limits.max_extra_addresses {
        if extra_addresses > max {
            return Err(DesireError::TooManyExtraAddresses {
                extra: extra_addresses,
                max,
            });
        }
    }
    Ok(())
}

/// `set` minus the addresses of `minus`, collapsed.
fn subtract(set: &[Ipv4Net], minus: &[Ipv4Net]) -> Vec<Ipv4Net> {
    if minus.is_empty() {
        return set.to_vec();
    }
    let mut holes: Vec<cidr::Range> = minus.iter().map(cidr::range).collect();
    cidr::merge_ranges(&mut holes);
    let mut out = Vec::new();
    for net in set {
        let (start, end) = cidr::range(net);
        let mut cursor = start;
        for &(h_start, h_end) in &holes {
            if h_end <= cursor || h_start >= end {
                continue;
            }
            cidr::push_range_prefixes(cursor, h_start.max(cursor), &mut out);
            cursor = h_end.min(end);
        }
        cidr::push_range_prefixes(cursor, end, &mut out);
    }
    cidr::collapse(&out)
}

/// Attributes each rule to the first selected tag whose addresses it overlaps, else to the
/// static rules, and counts the addresses it admits beyond the selection.
fn rule_info(
    rules: &[Ipv4Net],
    tags: &[ServiceTag<'_>],
    grace: &[Vec<Ipv4Net>],
    tag_space: &[Ipv4Net],
    statics: &[Ipv4Net],
) -> Vec<RuleInfo> {
    // A rule kept for a tag's previous version is attributed to that tag.
    let tag_ranges: Vec<Vec<cidr::Range>> = tags
        .iter()
        .zip(grace)
        .map(|(t, previous)| {
            let mut ranges: Vec<cidr::Range> =
                t.ipv4.iter().chain(previous).map(cidr::range).collect();
            cidr::merge_ranges(&mut ranges);
            ranges
        })
        .collect();
    let overlaps = |ranges: &[cidr::Range], (start, end): cidr::Range| {
        let i = ranges.partition_point(|&(_, e)| e <= start);
        ranges.get(i).is_some_and(|&(s, _)| s < end)
    };
    let static_ranges: Vec<cidr::Range> = statics.iter().map(cidr::range).collect();
    let mut wanted: Vec<cidr::Range> = tag_space.iter().chain(statics).map(cidr::range).collect();
    cidr::merge_ranges(&mut wanted);
    rules
        .iter()
        .map(|rule| {
            let r = cidr::range(rule);
            // A static rule given exactly keeps its own name even if a tag also covers it.
            let origin = if static_ranges.contains(&r) {
                Origin::Static
            } else {
                tag_ranges
                    .iter()
                    .position(|ranges| overlaps(ranges, r))
                    .map_or(Origin::Static, Origin::Tag)
            };
            RuleInfo {
                origin,
                extra_addresses: (r.1 - r.0) - overlap(&wanted, r),
            }
        })
        .collect()
}

/// How many addresses of `(start, end)` the merged `ranges` cover.
fn overlap(ranges: &[cidr::Range], (start, end): cidr::Range) -> u64 {
    let first = ranges.partition_point(|&(_, e)| e <= start);
    ranges[first..]
        .iter()
        .take_while(|&&(s, _)| s < end)
        .map(|&(s, e)| e.min(end) - s.max(start))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const DOC: &str = r#"{"changeNumber": 365, "cloud": "Public", "values": [
      {"name": "AzureDevOps", "id": "AzureDevOps", "properties": {"changeNumber": 7, "region": "", "systemService": "AzureDevOps",
        "addressPrefixes": ["20.37.158.0/23", "20.37.194.0/24", "2603:1030:a07:15::3d2/127"]}},
      {"name": "AzureDevOps.WestEurope", "id": "AzureDevOps.WestEurope", "properties": {"changeNumber": 2, "region": "westeurope", "systemService": "AzureDevOps",
        "addressPrefixes": ["40.74.28.0/23"]}},
      {"name": "AzureCloud.westeurope", "id": "AzureCloud.westeurope", "properties": {"changeNumber": 160, "region": "westeurope", "systemService": "",
        "addressPrefixes": ["20.37.158.0/24", "20.37.159.0/24", "20.37.160.0/22", "10.1.0.0/16", "40.74.28.0/23", "40.74.30.0/31"]}}
    ]}"#;

    fn doc() -> ServiceTags {
        ServiceTags::parse(DOC.as_bytes()).unwrap()
    }

    fn select(tags: &[&str], statics: &[&str]) -> Selection {
        Selection {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            static_rules: statics
                .iter()
                .map(|s| parse_static_rule(s).unwrap())
                .collect(),
            grace: Vec::new(),
        }
    }

    fn strings(nets: &[Ipv4Net]) -> Vec<String> {
        nets.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn unknown_tags_are_named_once_each_with_suggestions_selected_before_envelope() {
        let selection = select(&["AzureDevOpz", "azuredevops", "azuredevopz", "Nope"], &[]);
        let limits = Limits {
            envelope: vec!["AzureCloud.westeurope".into(), "AzureCloud.Atlantis".into()],
            ..Limits::default()
        };
        let unknown = unknown_tags(&doc(), &selection, &limits);
        let names: Vec<(&str, bool)> = unknown
            .iter()
            .map(|e| match e {
                DesireError::UnknownTag { name, .. } => (name.as_str(), false),
                DesireError::UnknownEnvelopeTag { name, .. } => (name.as_str(), true),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                ("AzureDevOpz", false),
                ("Nope", false),
                ("AzureCloud.Atlantis", true)
            ]
        );
        assert!(
            unknown[0].to_string().contains("AzureDevOps"),
            "{}",
            unknown[0]
        );
        assert!(
            unknown_tags(&doc(), &select(&["AzureDevOps"], &[]), &Limits::default()).is_empty()
        );
    }

    #[test]
    fn selects_tags_case_insensitively_and_counts_what_it_drops() {
        let desired = desired_rules(
            &doc(),
            &select(&["azuredevops", "AZURECLOUD.WESTEUROPE"], &[]),
            &Limits::default(),
            0,
        )
        .unwrap();
        assert_eq!(
            strings(&desired.rules),
            [
                "20.37.158.0/23",
                "20.37.160.0/22",
                "20.37.194.0/24",
                "40.74.28.0/23",
                "40.74.30.0/32",
                "40.74.30.1/32"
            ]
        );
        assert_eq!(
            desired.dropped,
            Dropped {
                ipv6: 1,
                private: 1
            }
        );
        assert_eq!(desired.extra_addresses, 0);
        assert_eq!(
            desired
                .tags
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["AzureDevOps", "AzureCloud.westeurope"]
        );
        assert_eq!(
            desired.origin_of(&"20.37.160.0/22".parse().unwrap()),
            Some(Origin::Tag(1))
        );
        assert_eq!(
            desired.origin_of(&"20.37.158.0/23".parse().unwrap()),
            Some(Origin::Tag(0))
        );
    }

    #[test]
    fn unknown_tags_get_suggestions() {
        let cases: &[(&str, &str)] = &[
            ("AzureDevOp", "unknown service tag 'AzureDevOp' (did you mean one of: 'AzureDevOps', 'AzureDevOps.WestEurope'?)"),
            ("AzureCloud.westeur", "unknown service tag 'AzureCloud.westeur' (did you mean 'AzureCloud.westeurope'?)"),
            ("Storage", "unknown service tag 'Storage'"),
        ];
        for (name, expected) in cases {
            let err =
                desired_rules(&doc(), &select(&[name], &[]), &Limits::default(), 0).unwrap_err();
            assert_eq!(err.to_string(), *expected);
        }
    }

    #[test]
    fn static_rules_are_checked() {
        let cases: &[(&str, &str)] = &[
            ("10.0.0.1", "'10.0.0.1' overlaps the reserved range 10.0.0.0/8 (private network, RFC 1918); key vault and storage refuse it"),
            ("52.1.2.3/24", "'52.1.2.3/24' has host bits set (did you mean '52.1.2.0/24'?)"),
            ("52.1.2", "'52.1.2' is not an IPv4 address or CIDR prefix"),
            ("::1", "'::1' is IPv6; key vault firewall rules are IPv4 only"),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_static_rule(input).unwrap_err().to_string(), *expected);
        }
        assert_eq!(
            parse_static_rule("52.1.2.3").unwrap().to_string(),
            "52.1.2.3/32"
        );
    }

    #[test]
    fn static_rules_join_the_desired_set() {
        let desired = desired_rules(
            &doc(),
            &select(&["AzureDevOps"], &["52.1.2.3", "20.37.158.7"]),
            &Limits::default(),
            0,
        )
        .unwrap();
        assert_eq!(
            strings(&desired.rules),
            ["20.37.158.0/23", "20.37.194.0/24", "52.1.2.3/32"]
        );
        assert_eq!(
            desired.origin_of(&"52.1.2.3/32".parse().unwrap()),
            Some(Origin::Static)
        );
        assert_eq!(desired.static_rules.len(), 2);
    }

    #[test]
    fn exact_mode_refuses_with_count_and_limit() {
        let limits = Limits {
            max_rules: 5,
            ..Limits::default()
        };
        let err = desired_rules(
            &doc(),
            &select(&["AzureCloud.westeurope", "AzureDevOps"], &[]),
            &limits,
            1,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the selection needs 6 rules but only 4 of the firewall's 5 are free (1 are held by rules tagfence keeps); select fewer tags or use --fit summarize"
        );
    }

    #[test]
    fn summarize_mode_fits_and_reports_extra_addresses() {
        let limits = Limits {
            max_rules: 3,
            fit: FitMode::Summarize,
            ..Limits::default()
        };
        let desired = desired_rules(
            &doc(),
            &select(&["AzureCloud.westeurope", "AzureDevOps"], &[]),
            &limits,
            0,
        )
        .unwrap();
        assert!(desired.rules.len() <= 3);
        assert!(desired.extra_addresses > 0);
        let covered = cidr::address_count(&desired.rules);
        assert_eq!(
            covered - desired.extra_addresses,
            512 + 1024 + 256 + 512 + 2
        );

        let strict = Limits {
            max_extra_addresses: Some(10),
            ..limits.clone()
        };
        let err = desired_rules(
            &doc(),
            &select(&["AzureCloud.westeurope", "AzureDevOps"], &[]),
            &strict,
            0,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("the fit admits "), "{err}");
    }

    #[test]
    fn the_envelope_bounds_the_fit() {
        let limits = Limits {
            max_rules: 1,
            fit: FitMode::Summarize,
            envelope: vec!["AzureDevOps".into()],
            ..Limits::default()
        };
        let err = desired_rules(
            &doc(),
            &select(&["AzureDevOps.WestEurope", "AzureDevOps"], &[]),
            &limits,
            0,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                DesireError::Fit {
                    source: FitError::Infeasible { .. },
                    ..
                }
            ),
            "{err}"
        );
        let unknown = Limits {
            envelope: vec!["AzureCloudd".into()],
            ..limits
        };
        assert!(
            desired_rules(&doc(), &select(&["AzureDevOps"], &[]), &unknown, 0)
                .unwrap_err()
                .to_string()
                .starts_with("unknown envelope tag 'AzureCloudd'")
        );
    }

    #[test]
    fn inputs_keys_are_spelled_as_stored_keys_are() {
        // The state keeps these keys between runs: a change of spelling (a field, a tag, a form)
        // would make every stored key stale and every recorded fit recomputed.
        let mut selection = select(&["AzureDevOps"], &["52.1.2.3"]);
        selection.grace.push(GraceTag {
            tag: "AzureDevOps".into(),
            change_number: 6,
            prefixes: vec!["20.37.150.0/24".parse().unwrap()],
        });
        for (slash31, spelling) in [(Slash31::Keep, "Keep"), (Slash31::Split, "Split")] {
            let limits = Limits {
                fit: FitMode::Summarize,
                envelope: vec!["AzureCloud.westeurope".into()],
                max_extra_addresses: Some(7),
                slash31,
                ..Limits::default()
            };
            assert_eq!(
                inputs_key(&doc(), &selection, &limits).unwrap(),
                format!(
                    concat!(
                        r#"{{"cloud":"Public","envelope":[["AzureCloud.westeurope",160]],"#,
                        r#""fit":"summarize","grace":[["AzureDevOps",6,1]],"#,
                        r#""max_extra_addresses":7,"max_rules":1000,"slash31":"{}","#,
                        r#""static_rules":["52.1.2.3/32"],"tags":[["AzureDevOps",7]]}}"#,
                    ),
                    spelling
                )
            );
        }
    }

    #[test]
    fn an_empty_selection_is_refused() {
        assert_eq!(
            desired_rules(&doc(), &Selection::default(), &Limits::default(), 0),
            Err(DesireError::NothingSelected)
        );
    }
}
