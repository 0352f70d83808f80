//! The three-way plan: desired × live × last-applied → what to add, remove and keep; and the
//! guards that refuse a plan no sane run should write.
//!
//! With D the desired rules, L the live rules and O the rules tagfence owns (the ones it added
//! itself, or adopted explicitly), all normalised the same way:
//! - `add` = D − L
//! - `remove` = (O ∩ L) − D: only what tagfence itself added and no longer wants
//! - `unmanaged` = L − D − O: rules a person (or another tool) added; kept and reported, removed
//!   only with `prune`
//! - `coincident` = (D ∩ L) − O: desired rules a person put there first. They stay the person's
//!   (kept when Microsoft retires the range) unless adopted (`adopt`).
//!
//! Without O (first run, lost state) nothing is removed: the safe reading of "I don't know who
//! added this".

use std::collections::HashSet;

use ipnet::Ipv4Net;
use serde::Serialize;

use super::desired::{self, DesireError, DesiredRules, FitMode, Limits, SelectedTag, Selection};
use super::grant::GrantRefusal;
use super::kind::Kind;
use super::service_tags::{Cloud, ServiceTags};

/// Which document the plan was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceInfo {
    pub cloud: Cloud,
    pub change_number: u64,
}

/// What to change on one vault.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The vault's name when known.
    pub vault: Option<String>,
    /// The firewall's kind (Key Vault unless the caller says otherwise: the plan's rules do not
    /// depend on it, only how they are written and named).
    pub kind: Kind,
    pub source: SourceInfo,
    pub desired: DesiredRules,
    /// Rules to add, sorted.
    pub add: Vec<Ipv4Net>,
    /// Rules to remove, sorted.
    pub remove: Vec<Ipv4Net>,
    /// Desired rules the vault already has.
    pub unchanged: usize,
    /// Live rules that are neither desired nor tagfence's own, sorted; kept unless pruning.
    pub unmanaged: Vec<Ipv4Net>,
    /// Whether unmanaged rules are being removed.
    pub prune: bool,
    /// Desired rules already on the vault that tagfence does not own (a person put them there
    /// first), sorted; empty when ownership is unknown.
    pub coincident: Vec<Ipv4Net>,
    /// Whether this plan adopts the coincident rules (`--adopt-existing`): they become
    /// tagfence's to manage.
    pub adopting: bool,
    /// IP rules on the vault that tagfence cannot read; kept verbatim, counted against the limit.
    pub unreadable: usize,
    pub max_rules: usize,
    pub fit: FitMode,
    /// What the desired rules were computed from ([`desired::inputs_key`]); `None` when unknown.
    pub inputs: Option<String>,
    /// Whether the desired rules were taken from the last apply instead of recomputed, because
    /// nothing they depend on changed.
    pub reused: bool,
    /// The rules live just-in-time grants want that the desired rules do not hold, sorted:
    /// kept (or added), and counted against the vault's room.
    pub granted: Vec<Ipv4Net>,
    /// The removals that are rules of ended grants, sorted (not counted by the removal guard:
    /// removing them is what a grant promises).
    pub grant_removals: Vec<Ipv4Net>,
    /// Whether only grants' rules change ([`plan_grants`]): a grant, revoke or sweep, which
    /// fetch no Service Tags; the desired rules are then the recorded ones the vault holds,
    /// and the vault's record keeps its last applied set.
    pub grants_only: bool,
}

impl Plan {
    /// Whether applying the plan changes the vault.
    pub fn has_changes(&self) -> bool {
        !self.add.is_empty() || !self.remove.is_empty()
    }

    /// The vault's rules after applying the plan to `live`: its rules minus `remove`, plus
    /// `add`, sorted.
    pub fn rules_after(&self, live: &[Ipv4Net]) -> Vec<Ipv4Net> {
        let removed: HashSet<&Ipv4Net> = self.remove.iter().collect();
        let mut rules: Vec<Ipv4Net> = live
            .iter()
            .filter(|r| !removed.contains(r))
            .copied()
            .collect();
        rules.extend(&self.add);
        rules.sort_unstable();
        rules.dedup();
        rules
    }

    /// How many rules the vault holds after the plan.
    pub fn total_after(&self) -> usize {
        self.desired.rules.len()
            + self.granted.len()
            + if self.prune { 0 } else { self.unmanaged.len() }
            + self.unreadable
    }

    /// The rules this plan claims as tagfence's without writing them: the coincident ones,
    /// when adopting.
    pub fn adopted(&self) -> &[Ipv4Net] {
        if self.adopting {
            &self.coincident
        } else {
            &[]
        }
    }
}

/// Computes the plan for `desired` against `live`, given the rules tagfence owns.
pub fn plan(
    source: SourceInfo,
    desired: DesiredRules,
    live: &[Ipv4Net],
    owned: Option<&[Ipv4Net]>,
    prune: bool,
    limits: &Limits,
) -> Plan {
    plan_granting(
        source,
        desired,
        live,
        owned,
        prune,
        limits,
        &Grants::default(),
    )
}

/// The rules of a vault's just-in-time grants at the time of a plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct Grants<'a> {
    /// The live grants' rules: wanted like desired rules.
    pub live: &'a [Ipv4Net],
    /// The ended grants' rules that no live grant wants: removed when tagfence owns them and
    /// no desired rule wants them.
    pub ended: &'a [Ipv4Net],
}

/// [`plan`], with the rules of live grants wanted besides `desired`.
fn plan_granting(
    source: SourceInfo,
    desired: DesiredRules,
    live: &[Ipv4Net],
    owned: Option<&[Ipv4Net]>,
    prune: bool,
    limits: &Limits,
    grants: &Grants<'_>,
) -> Plan {
    let mut wanted: HashSet<&Ipv4Net> = desired.rules.iter().collect();
    let mut granted: Vec<Ipv4Net> = grants
        .live
        .iter()
        .filter(|r| !wanted.contains(r))
        .copied()
        .collect();
    granted.sort_unstable();
    granted.dedup();
    wanted.extend(granted.iter());
    let known = owned.is_some();
    let owned: HashSet<&Ipv4Net> = owned.unwrap_or_default().iter().collect();
    let present: HashSet<&Ipv4Net> = live.iter().collect();
    // Without an ownership record nothing is known of who put what there: no section.
    let mut coincident: Vec<Ipv4Net> = desired
        .rules
        .iter()
        .filter(|r| known && present.contains(r) && !owned.contains(r))
        .copied()
        .collect();
    coincident.sort_unstable();

    let mut add: Vec<Ipv4Net> = desired
        .rules
        .iter()
        .filter(|r| !present.contains(r))
        .copied()
        .collect();
    let unchanged = desired.rules.len() - add.len();
    add.extend(granted.iter().filter(|r| !present.contains(r)));
    let mut remove = Vec::new();
    let mut unmanaged = Vec::new();
    for rule in live.iter().filter(|r| !wanted.contains(r)) {
        if owned.contains(rule) {
            remove.push(*rule);
        } else {
            unmanaged.push(*rule);
        }
    }
    if prune {
        remove.append(&mut unmanaged.clone());
    }
    add.sort_unstable();
    remove.sort_unstable();
    remove.dedup();
    unmanaged.sort_unstable();
    unmanaged.dedup();
    let ended: HashSet<&Ipv4Net> = grants.ended.iter().collect();
    let grant_removals = remove
        .iter()
        .filter(|r| ended.contains(r))
        .copied()
        .collect();
    Plan {
        vault: None,
        kind: Kind::KeyVault,
        source,
        desired,
        add,
        remove,
        unchanged,
        unmanaged,
        prune,
        coincident,
        adopting: false,
        unreadable: 0,
        max_rules: limits.max_rules,
        fit: limits.fit,
        inputs: None,
        reused: false,
        granted,
        grant_removals,
        grants_only: false,
    }
}

/// Why a plan was refused before anything was written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the selection yields no rules for a firewall (every prefix is IPv6 or reserved); refusing to write an empty allow-list")]
    EmptyDesired,
    #[error(
        "the plan removes {remove} of the {managed} rules tagfence manages on this vault ({percent:.0}%), more than --max-remove-fraction {max} allows; check the source, then rerun with a higher --max-remove-fraction"
    )]
    TooManyRemovals {
        remove: usize,
        managed: usize,
        percent: f64,
        max: f64,
    },
    #[error("the firewall would hold {} rules ({} desired + {} unmanaged kept), over its limit of {}; use --fit summarize, select fewer tags or --prune", crate::core::text::count(*.total), crate::core::text::count(*.desired), crate::core::text::count(*.kept), crate::core::text::count(*.limit))]
    OverLimit {
        total: usize,
        desired: usize,
        kept: usize,
        limit: usize,
    },
    #[error("service tag {tag} has no IPv4 prefixes in change {change_number} of the Service Tags{}; refusing to apply an emptied tag (it would lock its users out). If that is really intended, rerun with --allow-tag-shrink {tag}", .before.map(|(n, c)| format!(" (it had {n} in change {c}, applied last)")).unwrap_or_default())]
    TagEmptied {
        tag: String,
        change_number: u64,
        /// Its prefixes in the last applied document, and that document's change number.
        before: Option<(usize, u64)>,
    },
    #[error("service tag {tag} shrank from {before} IPv4 prefixes in change {from} (applied last) to {after} in change {to} ({percent:.0}% gone, more than --max-tag-shrink {max} allows); check the source, then rerun with --allow-tag-shrink {tag} if it is intended")]
    TagShrank {
        tag: String,
        before: usize,
        after: usize,
        from: u64,
        to: u64,
        percent: f64,
        max: f64,
    },
}

/// How far a selected tag may shrink between two applied documents before its vaults are
/// refused.
#[derive(Debug, Clone, Copy)]
pub struct TagGuard<'a> {
    /// The tags of the last applied desired rules, and that document's change number.
    pub previous: Option<(&'a [SelectedTag], u64)>,
    /// The largest fraction of a tag's IPv4 prefixes that may go in one step (0.5 by default).
    pub max_shrink: f64,
    /// Tags allowed to shrink or empty anyway (case-insensitive; `*` for all).
    pub allowed: &'a [String],
}

/// The default of [`TagGuard::max_shrink`].
pub const DEFAULT_MAX_TAG_SHRINK: f64 = 0.5;

impl Default for TagGuard<'_> {
    fn default() -> Self {
        TagGuard {
            previous: None,
            max_shrink: DEFAULT_MAX_TAG_SHRINK,
            allowed: &[],
        }
    }
}

/// Refuses desired rules whose tags emptied or shrank more than the guard allows.
///
/// # Errors
/// The first [`Refusal::TagEmptied`] or [`Refusal::TagShrank`] that applies.
pub fn guard_tags(
    tags: &[SelectedTag],
    change_number: u64,
    guard: &TagGuard<'_>,
) -> Result<(), Refusal> {
    let allowed = |name: &str| {
        guard
            .allowed
            .iter()
            .any(|a| a.trim() == "*" || a.trim().eq_ignore_ascii_case(name))
    };
    for tag in tags.iter().filter(|t| !allowed(&t.name)) {
        let before = guard.previous.and_then(|(tags, document)| {
            tags.iter()
                .find(|t| t.name.eq_ignore_ascii_case(&tag.name))
                .map(|t| (t.ipv4_prefixes, document))
        });
        if tag.ipv4_prefixes == 0 {
            return Err(Refusal::TagEmptied {
                tag: tag.name.clone(),
                change_number,
                before,
            });
        }
        if let Some((count, from)) = before.filter(|(count, _)| *count > 0) {
            let lost = count.saturating_sub(tag.ipv4_prefixes) as f64 / count as f64;
            if lost > guard.max_shrink {
                return Err(Refusal::TagShrank {
                    tag: tag.name.clone(),
                    before: count,
                    after: tag.ipv4_prefixes,
                    from,
                    to: change_number,
                    percent: lost * 100.0,
                    max: guard.max_shrink,
                });
            }
        }
    }
    Ok(())
}

/// Checks a plan against the safety rules.
///
/// # Errors
/// The first [`Refusal`] that applies.
pub fn guard(
    plan: &Plan,
    live: &[Ipv4Net],
    owned: Option<&[Ipv4Net]>,
    limits: &Limits,
) -> Result<(), Refusal> {
    if plan.desired.rules.is_empty() {
        return Err(Refusal::EmptyDesired);
    }
    // Removing an ended grant's rule is what the grant promised: not a removal to guard.
    let removing = plan.remove.len() - plan.grant_removals.len();
    if removing > 0 {
        let grant_rules: HashSet<&Ipv4Net> = plan.grant_removals.iter().collect();
        let managed = if plan.prune {
            live.len() - plan.grant_removals.len()
        } else {
            let owned: HashSet<&Ipv4Net> = owned.unwrap_or_default().iter().collect();
            live.iter()
                .filter(|r| owned.contains(r) && !grant_rules.contains(r))
                .count()
        };
        let fraction = removing as f64 / managed.max(1) as f64;
        if fraction > limits.max_remove_fraction {
            return Err(Refusal::TooManyRemovals {
                remove: removing,
                managed,
                percent: fraction * 100.0,
                max: limits.max_remove_fraction,
            });
        }
    }
    if plan.total_after() > limits.max_rules {
        return Err(Refusal::OverLimit {
            total: plan.total_after(),
            desired: plan.desired.rules.len(),
            kept: plan.total_after() - plan.desired.rules.len(),
            limit: limits.max_rules,
        });
    }
    Ok(())
}

/// Why no plan could be made for a vault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Desire(#[from] DesireError),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Everything a vault's plan depends on.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub tags: &'a ServiceTags,
    pub selection: &'a Selection,
    pub limits: &'a Limits,
    pub live: &'a [Ipv4Net],
    /// How many IP rules the vault holds that tagfence cannot read (kept verbatim).
    pub unreadable: usize,
    /// The rules tagfence owns on the vault; `None` when it does not know (nothing is removed).
    pub owned: Option<&'a [Ipv4Net]>,
    pub prune: bool,
    /// Claim the desired rules a person put on the vault first (`--adopt-existing`).
    pub adopt: bool,
    /// The desired rules of the last apply, to tell whether this plan's are the same.
    pub recorded: Option<Recorded<'a>>,
    /// How far selected tags may shrink.
    pub tag_guard: TagGuard<'a>,
    /// The vault's just-in-time grants.
    pub grants: Grants<'a>,
}

/// The desired rules applied last time, with what they were computed from.
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    pub desired: &'a DesiredRules,
    /// Their [`desired::inputs_key`].
    pub inputs: &'a str,
}

/// Desired rules, plan and guards for one vault: the whole pure part of a reconcile.
///
/// The rules tagfence keeps but does not manage use slots of the limit too, and which live rules
/// end up unmanaged depends on the desired set itself. So the room is first estimated from the
/// lossless desired set; if a summarized fit then leaves more unmanaged rules than estimated,
/// the fit is redone with the room that is actually left (at most a few rounds: each round only
/// shrinks the room).
///
/// The desired rules are always computed from the document and the selection. When the tags'
/// change numbers, the selection, the limits and the room are those of the last apply
/// (`recorded`) and the computed rules are the recorded ones, the plan says so (`reused`); a
/// recorded set that differs (edited by hand, or written by another fit) is never used.
///
/// # Errors
/// [`PlanError::Desire`] when the desired rules cannot be computed, [`PlanError::Refused`] when a
/// guard refuses the plan.
pub fn plan_vault(input: PlanInput<'_>) -> Result<Plan, PlanError> {
    let plan = plan_unguarded(input)?;
    guard_plan(&plan, input)?;
    Ok(plan)
}

/// The plan before its guards: what [`plan_vault`] would write, also when a guard then refuses
/// it (so that a refusal can show the change it refused).
///
/// # Errors
/// A [`PlanError`] when no plan can be made at all (no desired rules can be computed).
pub fn plan_unguarded(input: PlanInput<'_>) -> Result<Plan, PlanError> {
    let source = SourceInfo {
        cloud: input.tags.cloud,
        change_number: input.tags.change_number,
    };
    let inputs = desired::inputs_key(input.tags, input.selection, input.limits);
    let owned: HashSet<&Ipv4Net> = input.owned.unwrap_or_default().iter().collect();
    // The record is never a source of rules by itself: it is a document anyone who can write
    // the state could edit, and rules taken from it unchecked could open the firewall. The
    // plan is always computed (a summarized fit of nine US regions into 1,000 rules takes
    // 1.8 ms, BENCHMARKS.md `desired/US_9_regions/summarize_1000`); the record only
    // tells that nothing changed.
    let mut plan = plan_afresh(&input, &owned, source)?;
    let reused = input.recorded.is_some_and(|recorded| {
        inputs.as_deref() == Some(recorded.inputs) && recorded.desired.rules == plan.desired.rules
    });
    plan.inputs = inputs;
    plan.reused = reused;
    plan.adopting = input.adopt;
    plan.unreadable = input.unreadable;
    Ok(plan)
}

/// Everything a grants-only plan depends on ([`plan_grants`]).
#[derive(Debug, Clone)]
pub struct GrantsInput<'a> {
    pub source: SourceInfo,
    /// The desired rules applied last, from the vault's record: those the vault holds stay as
    /// they are (never added from the record, which only ever keeps a rule).
    pub recorded: Option<&'a DesiredRules>,
    pub live: &'a [Ipv4Net],
    /// How many IP rules the vault holds that tagfence cannot read (kept verbatim).
    pub unreadable: usize,
    /// The rules tagfence owns on the vault.
    pub owned: &'a [Ipv4Net],
    pub grants: Grants<'a>,
    pub limits: &'a Limits,
}

/// A plan that changes only grants' rules, for a grant, a revoke or a sweep (no Service Tags
/// document at hand): it adds the live grants' rules the vault lacks and removes the ended
/// grants' rules tagfence owns that no live grant and no recorded desired rule wants. Every
/// other rule stays as the vault holds it, so a grant never waits for, nor carries, a change of
/// the tags' rules, and the removal of an ended grant is never held up by a guard of theirs.
///
/// # Errors
/// [`GrantRefusal::NoRoom`] when the plan adds a rule and the vault would then hold more rules
/// than its limit (a plan that only removes is never refused).
pub fn plan_grants(input: GrantsInput<'_>) -> Result<Plan, GrantRefusal> {
    let present: HashSet<&Ipv4Net> = input.live.iter().collect();
    let desired = match input.recorded {
        Some(recorded) => {
            let (rules, info) = recorded
                .rules
                .iter()
                .zip(&recorded.info)
                .filter(|(rule, _)| present.contains(rule))
                .map(|(rule, info)| (*rule, *info))
                .unzip();
            DesiredRules {
                rules,
                info,
                ..recorded.clone()
            }
        }
        None => DesiredRules {
            rules: Vec::new(),
            info: Vec::new(),
            extra_addresses: 0,
            dropped: desired::Dropped::default(),
            tags: Vec::new(),
            static_rules: Vec::new(),
            grace: Vec::new(),
        },
    };
    // Only an ended grant's rule is tagfence's to remove here.
    let ended: HashSet<&Ipv4Net> = input.grants.ended.iter().collect();
    let removable: Vec<Ipv4Net> = input
        .owned
        .iter()
        .filter(|r| ended.contains(r))
        .copied()
        .collect();
    let mut plan = plan_granting(
        input.source,
        desired,
        input.live,
        Some(&removable),
        false,
        input.limits,
        &input.grants,
    );
    plan.coincident.clear();
    plan.grants_only = true;
    plan.unreadable = input.unreadable;
    if !plan.add.is_empty() && plan.total_after() > input.limits.max_rules {
        return Err(GrantRefusal::NoRoom {
            after: plan.total_after(),
            limit: input.limits.max_rules,
        });
    }
    Ok(plan)
}

/// The plan's guards: a selected tag emptied or shrunk, an empty allow-list, too many
/// removals, over the limit.
///
/// # Errors
/// The first [`Refusal`] that applies.
pub fn guard_plan(plan: &Plan, input: PlanInput<'_>) -> Result<(), Refusal> {
    guard_tags(
        &plan.desired.tags,
        input.tags.change_number,
        &input.tag_guard,
    )?;
    guard(plan, input.live, input.owned, input.limits)
}

/// How many rules the vault keeps besides `desired`: the unreadable ones and the live grants'
/// whatever happens, pruning or not, and without `--prune` every live rule neither desired nor
/// tagfence's.
fn kept_besides(input: &PlanInput<'_>, owned: &HashSet<&Ipv4Net>, desired: &[Ipv4Net]) -> usize {
    let wanted: HashSet<&Ipv4Net> = desired.iter().collect();
    // The live grants' rules keep their slots: a grant is placed only where there was room, so
    // the fit works around it until it ends.
    let granted: HashSet<&Ipv4Net> = input
        .grants
        .live
        .iter()
        .filter(|r| !wanted.contains(r))
        .collect();
    let kept_live = input
        .live
        .iter()
        .filter(|r| !wanted.contains(r) && !owned.contains(r) && !granted.contains(r))
        .count();
    input.unreadable + granted.len() + if input.prune { 0 } else { kept_live }
}

/// Computes the desired rules and plans with them, finding the room in rounds (see
/// [`plan_vault`]): estimated from the lossless desired set, then narrowed while a summarized
/// fit leaves more rules kept than the room assumed.
fn plan_afresh(
    input: &PlanInput<'_>,
    owned: &HashSet<&Ipv4Net>,
    source: SourceInfo,
) -> Result<Plan, PlanError> {
    let PlanInput {
        tags,
        selection,
        limits,
        ..
    } = *input;
    let lossless_limits = Limits {
        fit: FitMode::Exact,
        max_rules: usize::MAX,
        ..limits.clone()
    };
    let lossless = desired::desired_rules(tags, selection, &lossless_limits, 0)?;
    let mut kept = kept_besides(input, owned, &lossless.rules);
    let mut result = None;
    for _ in 0..4 {
        let desired = desired::desired_rules(tags, selection, limits, kept)?;
        let actually_kept = kept_besides(input, owned, &desired.rules);
        let done = actually_kept <= kept || limits.fit == FitMode::Exact;
        result = Some(plan_granting(
            source.clone(),
            desired,
            input.live,
            input.owned,
            input.prune,
            limits,
            &input.grants,
        ));
        if done {
            break;
        }
        kept = actually_kept;
    }
    Ok(result.expect("the loop runs at least once"))
}

/// The selected tags in `location`, the resource's own region, on a kind whose same-region
/// traffic arrives from private addresses (Storage: "Services deployed in the same region as the
/// storage account use private Azure IP addresses for communication", Microsoft Learn, "Azure
/// Storage firewall rules"): the rules allow nothing from there, and a person should know.
/// Regions compare as Azure spells them, without case or spaces (`West Europe`, `westeurope`).
pub fn same_region_tags<'a>(
    kind: Kind,
    location: Option<&str>,
    tags: &'a [SelectedTag],
) -> Vec<&'a SelectedTag> {
    let normal = |region: &str| {
        region
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let Some(location) = location.map(normal).filter(|l| !l.is_empty()) else {
        return Vec::new();
    };
    if !kind.same_region_is_private() {
        return Vec::new();
    }
    tags.iter()
        .filter(|tag| !tag.region.is_empty() && normal(&tag.region) == location)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::desired::{parse_static_rule, Origin, RuleInfo};
    use crate::core::fit::Slash31;

    fn nets(texts: &[&str]) -> Vec<Ipv4Net> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn strings(nets: &[Ipv4Net]) -> Vec<String> {
        nets.iter().map(ToString::to_string).collect()
    }

    fn desired_of(rules: &[&str]) -> DesiredRules {
        let rules = nets(rules);
        DesiredRules {
            info: vec![
                RuleInfo {
                    origin: Origin::Static,
                    extra_addresses: 0
                };
                rules.len()
            ],
            rules,
            extra_addresses: 0,
            dropped: Default::default(),
            tags: vec![],
            static_rules: vec![],
            grace: vec![],
        }
    }

    fn source() -> SourceInfo {
        SourceInfo {
            cloud: Cloud::Public,
            change_number: 1,
        }
    }

    #[test]
    fn three_way_plan_table() {
        // (desired, live, last applied, prune) → (add, remove, unchanged, unmanaged)
        type Case<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            Option<&'a [&'a str]>,
            bool,
            &'a [&'a str],
            &'a [&'a str],
            usize,
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            // First run: empty vault.
            (
                &["20.0.0.0/24"],
                &[],
                None,
                false,
                &["20.0.0.0/24"],
                &[],
                0,
                &[],
            ),
            // In sync.
            (
                &["20.0.0.0/24"],
                &["20.0.0.0/24"],
                Some(&["20.0.0.0/24"]),
                false,
                &[],
                &[],
                1,
                &[],
            ),
            // A retired range tagfence added is removed; a manual rule is kept.
            (
                &["20.0.1.0/24"],
                &["20.0.0.0/24", "52.1.2.3/32"],
                Some(&["20.0.0.0/24"]),
                false,
                &["20.0.1.0/24"],
                &["20.0.0.0/24"],
                0,
                &["52.1.2.3/32"],
            ),
            // No state: nothing is removed, everything unknown is unmanaged.
            (
                &["20.0.1.0/24"],
                &["20.0.0.0/24", "52.1.2.3/32"],
                None,
                false,
                &["20.0.1.0/24"],
                &[],
                0,
                &["20.0.0.0/24", "52.1.2.3/32"],
            ),
            // Prune removes unmanaged rules too.
            (
                &["20.0.1.0/24"],
                &["20.0.0.0/24", "52.1.2.3/32"],
                None,
                true,
                &["20.0.1.0/24"],
                &["20.0.0.0/24", "52.1.2.3/32"],
                0,
                &["20.0.0.0/24", "52.1.2.3/32"],
            ),
            // A rule in A but already gone from the vault is not removed again.
            (
                &["20.0.1.0/24"],
                &["20.0.1.0/24"],
                Some(&["20.0.0.0/24", "20.0.1.0/24"]),
                false,
                &[],
                &[],
                1,
                &[],
            ),
        ];
        for (d, l, a, prune, add, remove, unchanged, unmanaged) in cases {
            let a = a.map(nets);
            let p = plan(
                source(),
                desired_of(d),
                &nets(l),
                a.as_deref(),
                *prune,
                &Limits::default(),
            );
            assert_eq!(strings(&p.add), *add, "add for {d:?} {l:?}");
            assert_eq!(strings(&p.remove), *remove, "remove for {d:?} {l:?}");
            assert_eq!(p.unchanged, *unchanged, "unchanged for {d:?} {l:?}");
            assert_eq!(
                strings(&p.unmanaged),
                *unmanaged,
                "unmanaged for {d:?} {l:?}"
            );
        }
    }

    #[test]
    fn guards_refuse_with_reasons() {
        let limits = Limits {
            max_rules: 3,
            ..Limits::default()
        };
        let empty = plan(source(), desired_of(&[]), &[], None, false, &limits);
        assert_eq!(
            guard(&empty, &[], None, &limits),
            Err(Refusal::EmptyDesired)
        );

        let live = nets(&["20.0.0.0/24", "20.0.1.0/24", "20.0.2.0/24"]);
        let many = plan(
            source(),
            desired_of(&["20.0.9.0/24"]),
            &live,
            Some(&live),
            false,
            &limits,
        );
        let err = guard(&many, &live, Some(&live), &limits).unwrap_err();
        assert_eq!(err.to_string(), "the plan removes 3 of the 3 rules tagfence manages on this vault (100%), more than --max-remove-fraction 0.2 allows; check the source, then rerun with a higher --max-remove-fraction");
        let relaxed = Limits {
            max_remove_fraction: 1.0,
            ..limits.clone()
        };
        assert_eq!(guard(&many, &live, Some(&live), &relaxed), Ok(()));

        let crowded = plan(
            source(),
            desired_of(&["20.0.9.0/24", "20.0.10.0/24"]),
            &live,
            None,
            false,
            &limits,
        );
        assert_eq!(
            guard(&crowded, &live, None, &limits).unwrap_err().to_string(),
            "the firewall would hold 5 rules (2 desired + 3 unmanaged kept), over its limit of 3; use --fit summarize, select fewer tags or --prune"
        );
    }

    const DOC: &str = r#"{"changeNumber": 9, "cloud": "Public", "values": [
      {"name": "A", "properties": {"changeNumber": 1, "addressPrefixes": ["20.0.0.0/24", "20.0.2.0/24", "20.0.4.0/24", "20.0.6.0/24"]}}]}"#;

    #[test]
    fn summarize_leaves_room_for_unmanaged_rules() {
        let tags = ServiceTags::parse(DOC.as_bytes()).unwrap();
        let selection = Selection {
            tags: vec!["A".into()],
            static_rules: vec![parse_static_rule("52.0.0.1").unwrap()],
            ..Selection::default()
        };
        // One slot for the unmanaged rule, one for the static rule: three for the four /24s.
        let limits = Limits {
            max_rules: 5,
            fit: FitMode::Summarize,
            ..Limits::default()
        };
        let live = nets(&["52.9.9.9/32"]);
        let p = plan_vault(PlanInput {
            tags: &tags,
            selection: &selection,
            limits: &limits,
            live: &live,
            unreadable: 0,
            owned: None,
            prune: false,
            adopt: false,
            recorded: None,
            tag_guard: TagGuard::default(),
            grants: Grants::default(),
        })
        .unwrap();
        assert_eq!(p.total_after(), 5);
        assert_eq!(strings(&p.unmanaged), ["52.9.9.9/32"]);
        assert!(p.desired.rules.contains(&"52.0.0.1/32".parse().unwrap()));
        assert_eq!(p.desired.extra_addresses, 512);
    }

    #[test]
    fn a_live_rule_equal_to_a_lossless_rule_does_not_eat_room_twice() {
        // The vault already holds the lossless rules (no state): they must not count as kept.
        let tags = ServiceTags::parse(DOC.as_bytes()).unwrap();
        let selection = Selection {
            tags: vec!["A".into()],
            ..Selection::default()
        };
        let limits = Limits {
            max_rules: 4,
            fit: FitMode::Summarize,
            slash31: Slash31::Split,
            ..Limits::default()
        };
        let live = nets(&["20.0.0.0/24", "20.0.2.0/24", "20.0.4.0/24", "20.0.6.0/24"]);
        let p = plan_vault(PlanInput {
            tags: &tags,
            selection: &selection,
            limits: &limits,
            live: &live,
            unreadable: 0,
            owned: None,
            prune: false,
            adopt: false,
            recorded: None,
            tag_guard: TagGuard::default(),
            grants: Grants::default(),
        })
        .unwrap();
        assert!(!p.has_changes());
        assert_eq!(p.desired.extra_addresses, 0);
    }

    #[test]
    fn the_last_desired_rules_are_reused_only_while_their_inputs_hold() {
        let tags = ServiceTags::parse(DOC.as_bytes()).unwrap();
        let selection = Selection {
            tags: vec!["A".into()],
            ..Selection::default()
        };
        let limits = Limits {
            max_rules: 3,
            fit: FitMode::Summarize,
            ..Limits::default()
        };
        let input = |live: &'static [Ipv4Net], recorded| PlanInput {
            tags: &tags,
            selection: &selection,
            limits: &limits,
            live,
            unreadable: 0,
            owned: None,
            prune: false,
            adopt: false,
            recorded,
            tag_guard: TagGuard::default(),
            grants: Grants::default(),
        };
        let fresh = plan_vault(input(&[], None)).unwrap();
        assert!(!fresh.reused);
        let inputs = fresh.inputs.clone().expect("known tags give a key");
        // The same rules as last time: said so.
        let same = Recorded {
            desired: &fresh.desired,
            inputs: &inputs,
        };
        let reused = plan_vault(input(&[], Some(same))).unwrap();
        assert!(reused.reused);
        assert_eq!(reused.desired.rules, fresh.desired.rules);
        // A set that recomputation would never give (a record edited by hand, here one that
        // would open the firewall to a /8): never used, whatever its inputs key says.
        let marker = desired_of(&["20.0.0.0/8", "1.0.0.0/8"]);
        let recorded = Recorded {
            desired: &marker,
            inputs: &inputs,
        };
        let tampered = plan_vault(input(&[], Some(recorded))).unwrap();
        assert!(!tampered.reused);
        assert_eq!(tampered.desired.rules, fresh.desired.rules);

        // Other room (an unmanaged rule now takes a slot): the fit is redone.
        let crowded: &'static [Ipv4Net] = Box::leak(nets(&["52.9.9.9/32"]).into_boxed_slice());
        let refit = plan_vault(input(crowded, Some(recorded))).unwrap();
        assert!(!refit.reused);
        assert!(refit.total_after() <= 3);
        assert_eq!(strings(&refit.unmanaged), ["52.9.9.9/32"]);

        // Other inputs (a tag moved): recomputed.
        let stale = Recorded {
            inputs: "something else",
            ..recorded
        };
        assert!(!plan_vault(input(&[], Some(stale))).unwrap().reused);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn rule_set() -> impl Strategy<Value = Vec<Ipv4Net>> {
            prop::collection::vec((0u32..32, 22u8..=24), 0..12).prop_map(|raw| {
                let mut v: Vec<Ipv4Net> = raw
                    .into_iter()
                    .map(|(i, l)| crate::core::cidr::net(0x1400_0000 + (i << 10), l))
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            })
        }

        proptest! {
            /// Applying a plan to L yields D ∪ unmanaged; planning again from there (with D as the
            /// last-applied set) changes nothing.
            #[test]
            fn applying_a_plan_converges(d in rule_set(), l in rule_set(), a in prop::option::of(rule_set()), prune in any::<bool>()) {
                let limits = Limits::default();
                let desired = DesiredRules { info: vec![RuleInfo { origin: Origin::Static, extra_addresses: 0 }; d.len()], rules: d.clone(), extra_addresses: 0, dropped: Default::default(), tags: vec![], static_rules: vec![], grace: vec![] };
                let p = plan(source(), desired.clone(), &l, a.as_deref(), prune, &limits);
                let after = p.rules_after(&l);
                let mut expected: Vec<Ipv4Net> = d.iter().chain(if prune { [].iter() } else { p.unmanaged.iter() }).copied().collect();
                expected.sort_unstable();
                expected.dedup();
                prop_assert_eq!(&after, &expected);
                let again = plan(source(), desired, &after, Some(&d), prune, &limits);
                prop_assert!(!again.has_changes());
                prop_assert_eq!(again.unmanaged, if prune { after.iter().filter(|r| !d.contains(r)).copied().collect::<Vec<_>>() } else { p.unmanaged.clone() });
            }
        }
    }

    fn grants_input<'a>(
        recorded: Option<&'a DesiredRules>,
        live: &'a [Ipv4Net],
        owned: &'a [Ipv4Net],
        grants: Grants<'a>,
        limits: &'a Limits,
    ) -> GrantsInput<'a> {
        GrantsInput {
            source: source(),
            recorded,
            live,
            unreadable: 0,
            owned,
            grants,
            limits,
        }
    }

    #[test]
    fn a_grants_only_plan_adds_live_grants_and_removes_only_ended_grants_it_owns() {
        let recorded = desired_of(&["20.0.0.0/24", "20.0.1.0/24"]);
        // A recorded rule the vault lost is not put back; a stale owned rule is kept.
        let live = nets(&[
            "20.0.0.0/24",
            "52.1.1.1/32",
            "40.0.0.9/32",
            "40.0.0.7/32",
            "30.0.0.0/24",
        ]);
        let owned = nets(&["20.0.0.0/24", "40.0.0.9/32", "40.0.0.7/32", "30.0.0.0/24"]);
        let granted = nets(&["40.0.0.8/32"]);
        // 40.0.0.7 ended and is tagfence's: removed; 52.1.1.1 ended but is a person's: kept.
        let ended = nets(&["40.0.0.7/32", "52.1.1.1/32"]);
        let limits = Limits::default();
        let plan = plan_grants(grants_input(
            Some(&recorded),
            &live,
            &owned,
            Grants {
                live: &granted,
                ended: &ended,
            },
            &limits,
        ))
        .unwrap();
        assert_eq!(strings(&plan.add), ["40.0.0.8/32"]);
        assert_eq!(strings(&plan.remove), ["40.0.0.7/32"]);
        assert_eq!(plan.grant_removals, plan.remove);
        assert!(plan.grants_only && plan.coincident.is_empty());
        assert_eq!(strings(&plan.desired.rules), ["20.0.0.0/24"]);
        assert_eq!(plan.total_after(), live.len());
        assert_eq!(
            plan.rules_after(&live).len(),
            plan.total_after(),
            "the count is what the vault holds after"
        );
    }

    #[test]
    fn a_grant_without_room_is_refused_but_a_removal_never_is() {
        let live = nets(&["20.0.0.0/24", "20.0.1.0/24", "40.0.0.7/32"]);
        let owned = live.clone();
        let limits = Limits {
            max_rules: 3,
            ..Limits::default()
        };
        let granted = nets(&["40.0.0.8/32"]);
        let err = plan_grants(grants_input(
            None,
            &live,
            &owned,
            Grants {
                live: &granted,
                ended: &[],
            },
            &limits,
        ))
        .unwrap_err();
        assert_eq!(err, GrantRefusal::NoRoom { after: 4, limit: 3 });
        // Over its limit already (the limit lowered since): a removal still goes through.
        let ended = nets(&["40.0.0.7/32"]);
        let tight = Limits {
            max_rules: 1,
            ..Limits::default()
        };
        let plan = plan_grants(grants_input(
            None,
            &live,
            &owned,
            Grants {
                live: &[],
                ended: &ended,
            },
            &tight,
        ))
        .unwrap();
        assert_eq!(strings(&plan.remove), ["40.0.0.7/32"]);
    }

    #[test]
    fn a_regular_plan_keeps_live_grants_counts_them_against_the_room_and_does_not_guard_ended_ones()
    {
        let desired = desired_of(&["20.0.0.0/24"]);
        let live = nets(&["20.0.0.0/24", "40.0.0.7/32", "40.0.0.8/32", "40.0.0.9/32"]);
        let owned = live.clone();
        let granted = nets(&["40.0.0.9/32"]);
        let ended = nets(&["40.0.0.7/32", "40.0.0.8/32"]);
        let limits = Limits {
            max_remove_fraction: 0.2,
            ..Limits::default()
        };
        let p = plan_granting(
            source(),
            desired,
            &live,
            Some(&owned),
            false,
            &limits,
            &Grants {
                live: &granted,
                ended: &ended,
            },
        );
        assert_eq!(strings(&p.remove), ["40.0.0.7/32", "40.0.0.8/32"]);
        assert_eq!(p.grant_removals, p.remove);
        assert_eq!(strings(&p.granted), ["40.0.0.9/32"]);
        assert!(p.add.is_empty());
        assert_eq!(p.total_after(), 2);
        // Two of three managed rules go, far over 20 %: all are ended grants, so no refusal.
        guard(&p, &live, Some(&owned), &limits).unwrap();
    }
}
