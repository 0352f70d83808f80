//! The three-way plan: desired × live × last-applied → what to add, remove and keep; and the
//! guards that refuse a plan no sane run should write.
//!
//! With D the desired rules, L the live rules and A the rules tagfence applied last time (when
//! known), all normalised the same way:
//! - `add` = D − L
//! - `remove` = (A ∩ L) − D: only what tagfence itself added and no longer wants
//! - `unmanaged` = L − D − A: rules a person (or another tool) added; kept and reported, removed
//!   only with `prune`
//!
//! Without A (first run, lost state) nothing is removed: the safe reading of "I don't know who
//! added this".

use std::collections::HashSet;

use ipnet::Ipv4Net;
use serde::Serialize;

use super::desired::{self, DesireError, DesiredRules, FitMode, Limits, Selection};
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
    pub max_rules: usize,
    pub fit: FitMode,
    /// What the desired rules were computed from ([`desired::inputs_key`]); `None` when unknown.
    pub inputs: Option<String>,
    /// Whether the desired rules were taken from the last apply instead of recomputed, because
    /// nothing they depend on changed.
    pub reused: bool,
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
        self.desired.rules.len() + if self.prune { 0 } else { self.unmanaged.len() }
    }
}

/// Computes the plan for `desired` against `live`, given the rules tagfence applied last time.
pub fn plan(
    source: SourceInfo,
    desired: DesiredRules,
    live: &[Ipv4Net],
    last_applied: Option<&[Ipv4Net]>,
    prune: bool,
    limits: &Limits,
) -> Plan {
    let wanted: HashSet<&Ipv4Net> = desired.rules.iter().collect();
    let owned: HashSet<&Ipv4Net> = last_applied.unwrap_or_default().iter().collect();
    let present: HashSet<&Ipv4Net> = live.iter().collect();

    let mut add: Vec<Ipv4Net> = desired
        .rules
        .iter()
        .filter(|r| !present.contains(r))
        .copied()
        .collect();
    let unchanged = desired.rules.len() - add.len();
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
    Plan {
        vault: None,
        source,
        desired,
        add,
        remove,
        unchanged,
        unmanaged,
        prune,
        max_rules: limits.max_rules,
        fit: limits.fit,
        inputs: None,
        reused: false,
    }
}

/// Why a plan was refused before anything was written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the selection yields no rules for a key vault (every prefix is IPv6 or reserved); refusing to write an empty allow-list")]
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
    #[error("the vault would hold {total} rules ({desired} desired + {kept} unmanaged kept), over its limit of {limit}; use --fit summarize, select fewer tags or --prune")]
    OverLimit {
        total: usize,
        desired: usize,
        kept: usize,
        limit: usize,
    },
}

/// Checks a plan against the safety rules.
///
/// # Errors
/// The first [`Refusal`] that applies.
pub fn guard(
    plan: &Plan,
    live: &[Ipv4Net],
    last_applied: Option<&[Ipv4Net]>,
    limits: &Limits,
) -> Result<(), Refusal> {
    if plan.desired.rules.is_empty() {
        return Err(Refusal::EmptyDesired);
    }
    if !plan.remove.is_empty() {
        let managed = if plan.prune {
            live.len()
        } else {
            let owned: HashSet<&Ipv4Net> = last_applied.unwrap_or_default().iter().collect();
            live.iter().filter(|r| owned.contains(r)).count()
        };
        let fraction = plan.remove.len() as f64 / managed.max(1) as f64;
        if fraction > limits.max_remove_fraction {
            return Err(Refusal::TooManyRemovals {
                remove: plan.remove.len(),
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
            kept: plan.unmanaged.len(),
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
    pub last_applied: Option<&'a [Ipv4Net]>,
    pub prune: bool,
    /// The desired rules of the last apply, reused when nothing they depend on changed.
    pub recorded: Option<Recorded<'a>>,
}

/// The desired rules applied last time, with what they were computed from.
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    pub desired: &'a DesiredRules,
    /// Their [`desired::inputs_key`].
    pub inputs: &'a str,
    /// The unmanaged rules kept then (a summarized fit depends on the room they left).
    pub kept: usize,
}

/// Desired rules, plan and guards for one vault: the whole pure part of a reconcile.
///
/// The rules tagfence keeps but does not manage use slots of the limit too, and which live rules
/// end up unmanaged depends on the desired set itself. So the room is first estimated from the
/// lossless desired set; if a summarized fit then leaves more unmanaged rules than estimated,
/// the fit is redone with the room that is actually left (at most a few rounds: each round only
/// shrinks the room).
///
/// When the tags' change numbers, the selection and the limits are those of the last apply
/// (`recorded`), its desired rules are reused rather than recomputed: an exact selection would
/// give the same rules anyway, and a summarized fit gives the same rules when the room is the
/// same (the same number of unmanaged rules kept).
///
/// # Errors
/// [`PlanError::Desire`] when the desired rules cannot be computed, [`PlanError::Refused`] when a
/// guard refuses the plan.
pub fn plan_vault(input: PlanInput<'_>) -> Result<Plan, PlanError> {
    let PlanInput {
        tags,
        selection,
        limits,
        live,
        last_applied,
        prune,
        recorded,
    } = input;
    let source = SourceInfo {
        cloud: tags.cloud,
        change_number: tags.change_number,
    };
    let inputs = desired::inputs_key(tags, selection, limits);
    let owned: HashSet<&Ipv4Net> = last_applied.unwrap_or_default().iter().collect();
    let kept_besides = |desired: &[Ipv4Net]| -> usize {
        if prune {
            return 0;
        }
        let wanted: HashSet<&Ipv4Net> = desired.iter().collect();
        live.iter()
            .filter(|r| !wanted.contains(r) && !owned.contains(r))
            .count()
    };

    if let Some(recorded) = recorded.filter(|r| inputs.as_deref() == Some(r.inputs)) {
        let kept = kept_besides(&recorded.desired.rules);
        if limits.fit == FitMode::Exact || kept == recorded.kept {
            let mut plan = plan(
                source,
                recorded.desired.clone(),
                live,
                last_applied,
                prune,
                limits,
            );
            plan.inputs = inputs;
            plan.reused = true;
            guard(&plan, live, last_applied, limits)?;
            return Ok(plan);
        }
    }

    let lossless_limits = Limits {
        fit: FitMode::Exact,
        max_rules: usize::MAX,
        ..limits.clone()
    };
    let lossless = desired::desired_rules(tags, selection, &lossless_limits, 0)?;
    let mut kept = kept_besides(&lossless.rules);
    let mut result = None;
    for _ in 0..4 {
        let desired = desired::desired_rules(tags, selection, limits, kept)?;
        let actually_kept = kept_besides(&desired.rules);
        let done = actually_kept <= kept || limits.fit == FitMode::Exact;
        result = Some(plan(
            source.clone(),
            desired,
            live,
            last_applied,
            prune,
            limits,
        ));
        if done {
            break;
        }
        kept = actually_kept;
    }
    let mut plan = result.expect("the loop runs at least once");
    plan.inputs = inputs;
    guard(&plan, live, last_applied, limits)?;
    Ok(plan)
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
            "the vault would hold 5 rules (2 desired + 3 unmanaged kept), over its limit of 3; use --fit summarize, select fewer tags or --prune"
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
            last_applied: None,
            prune: false,
            recorded: None,
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
            last_applied: None,
            prune: false,
            recorded: None,
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
            last_applied: None,
            prune: false,
            recorded,
        };
        let fresh = plan_vault(input(&[], None)).unwrap();
        assert!(!fresh.reused);
        let inputs = fresh.inputs.clone().expect("known tags give a key");
        // A marker set that recomputation would never give: reuse is visible.
        let marker = desired_of(&["20.0.0.0/22", "20.0.4.0/22"]);
        let recorded = Recorded {
            desired: &marker,
            inputs: &inputs,
            kept: 0,
        };
        let reused = plan_vault(input(&[], Some(recorded))).unwrap();
        assert!(reused.reused);
        assert_eq!(reused.desired.rules, marker.rules);

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
}
