//! The fit is optimal under each kind's own cost model, checked against an exhaustive oracle that
//! knows nothing of the fit: it only asks the kind which prefixes it takes as one rule (a prefix
//! it refuses, Storage's /31, must be written as its two halves and costs two rules), and the
//! written entries are the kind's (`gate::propose`), counted as they would go out.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;
use proptest::prelude::*;
use serde_json::Value;
use tagfence::core::cidr;
use tagfence::core::desired::{self, FitMode, Limits, Selection};
use tagfence::core::fit::Slash31;
use tagfence::core::gate;
use tagfence::core::kind::Kind;
use tagfence::core::live::LiveAcl;
use tagfence::core::service_tags::ServiceTags;

/// A public /28 (16 addresses): small enough to search every cover.
const BASE: u32 = 0x1400_0000; // 20.0.0.0
const BITS: u32 = 4;

fn addresses(nets: &[Ipv4Net]) -> BTreeSet<u64> {
    nets.iter()
        .flat_map(|n| {
            let (start, end) = cidr::range(n);
            start..end
        })
        .collect()
}

/// Every prefix inside the universe.
fn universe() -> Vec<Ipv4Net> {
    (0..=BITS)
        .flat_map(|depth| {
            let len = (32 - BITS + depth) as u8;
            (0..(1u32 << depth)).map(move |i| cidr::net(BASE + (i << (BITS - depth)), len))
        })
        .collect()
}

/// What one chosen prefix costs on `kind` written in `form`: one rule if the kind takes it and
/// the form keeps it, else its two halves.
fn cost(kind: Kind, form: Slash31, net: Ipv4Net) -> usize {
    let split = net.prefix_len() == 31 && form == Slash31::Split;
    if kind.accepts(net).is_ok() && !split {
        1
    } else {
        2
    }
}

/// The forms a kind may be configured with: the one it forces, else both.
fn forms(kind: Kind) -> Vec<Slash31> {
    kind.forced_slash31()
        .map_or_else(|| vec![Slash31::Keep, Slash31::Split], |form| vec![form])
}

/// The fewest extra addresses of any cover of `want` within `budget` rules on `kind`.
fn oracle(kind: Kind, form: Slash31, want: &BTreeSet<u64>, budget: usize) -> Option<u64> {
    #[allow(clippy::too_many_arguments)]
    fn walk(
        kind: Kind,
        form: Slash31,
        candidates: &[Ipv4Net],
        want: &BTreeSet<u64>,
        budget: usize,
        from: usize,
        used: usize,
        pick: &mut Vec<Ipv4Net>,
        best: &mut Option<u64>,
    ) {
        let got = addresses(pick);
        if want.is_subset(&got) {
            let extra = (got.len() - want.len()) as u64;
            *best = Some(best.map_or(extra, |b| b.min(extra)));
        }
        for j in from..candidates.len() {
            let c = cost(kind, form, candidates[j]);
            if used + c <= budget {
                pick.push(candidates[j]);
                walk(
                    kind,
                    form,
                    candidates,
                    want,
                    budget,
                    j + 1,
                    used + c,
                    pick,
                    best,
                );
                pick.pop();
            }
        }
    }
    let mut best = None;
    walk(
        kind,
        form,
        &universe(),
        want,
        budget,
        0,
        0,
        &mut Vec::new(),
        &mut best,
    );
    best
}

fn document(prefixes: &[Ipv4Net]) -> ServiceTags {
    let list: Vec<String> = prefixes.iter().map(|p| format!("\"{p}\"")).collect();
    let doc = format!(
        r#"{{"changeNumber": 1, "cloud": "Public", "values": [
        {{"name": "Agents", "id": "Agents", "properties": {{"changeNumber": 1, "region": "", "systemService": "",
          "addressPrefixes": [{}]}}}}]}}"#,
        list.join(", ")
    );
    ServiceTags::parse(doc.as_bytes()).unwrap()
}

fn limits(form: Slash31, budget: usize) -> Limits {
    Limits {
        max_rules: budget,
        fit: FitMode::Summarize,
        slash31: form,
        ..Limits::default()
    }
}

/// The entries a write of `rules` to an empty firewall of `kind` sends.
fn written(kind: Kind, rules: &[Ipv4Net]) -> Vec<Value> {
    let empty = LiveAcl::empty_of(kind);
    let proposal = gate::propose(&empty, rules, true);
    proposal.network_acls["ipRules"].as_array().unwrap().clone()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    #[test]
    fn the_fit_is_optimal_under_each_kinds_cost_model(
        picks in prop::collection::vec(0usize..31, 1..6),
        budget in 1usize..5,
    ) {
        let all = universe();
        let set = cidr::collapse(&picks.iter().map(|&i| all[i]).collect::<Vec<_>>());
        let want = addresses(&set);
        let doc = document(&set);
        let selection = Selection { tags: vec!["Agents".into()], ..Selection::default() };
        for (kind, form) in Kind::ALL.into_iter().flat_map(|k| forms(k).into_iter().map(move |f| (k, f))) {
            let expected = oracle(kind, form, &want, budget);
            let got = desired::desired_rules(&doc, &selection, &limits(form, budget), 0);
            match expected {
                None => prop_assert!(got.is_err(), "{kind}: expected no fit, got {got:?}"),
                Some(extra) => {
                    let desired = got.unwrap_or_else(|e| panic!("{kind}: {e}"));
                    prop_assert_eq!(desired.extra_addresses, extra, "{} budget {} set {:?}", kind, budget, set);
                    let entries = written(kind, &desired.rules);
                    prop_assert!(entries.len() <= budget, "{kind}: {} entries for a budget of {budget}", entries.len());
                    let mut covered = Vec::new();
                    for entry in &entries {
                        let value = entry["value"].as_str().unwrap();
                        prop_assert!(kind.spelling_accepted(value), "{kind}: sent '{value}'");
                        let rule = cidr::parse_rule(value).unwrap();
                        prop_assert!(kind.accepts(rule).is_ok(), "{kind}: sent '{value}'");
                        covered.push(rule);
                    }
                    let covered = addresses(&covered);
                    prop_assert!(want.is_subset(&covered));
                    prop_assert_eq!((covered.len() - want.len()) as u64, extra);
                }
            }
        }
    }
}

#[test]
fn storage_writes_single_addresses_bare_and_31s_as_two_of_them() {
    let set = vec![cidr::net(BASE + 2, 31), cidr::net(BASE + 8, 32)];
    let doc = document(&set);
    let selection = Selection {
        tags: vec!["Agents".into()],
        ..Selection::default()
    };
    let desired =
        desired::desired_rules(&doc, &selection, &limits(Slash31::Split, 400), 0).unwrap();
    let values: Vec<Value> = written(Kind::StorageAccount, &desired.rules);
    assert_eq!(
        values,
        vec![
            serde_json::json!({"value": "20.0.0.2", "action": "Allow"}),
            serde_json::json!({"value": "20.0.0.3", "action": "Allow"}),
            serde_json::json!({"value": "20.0.0.8", "action": "Allow"}),
        ]
    );
    // With room for two rules only, the /31 and the lone address cannot stay exact: the
    // cheapest cover is the /28 (one rule, 13 extra) — or the /30 and the /32 (two rules, 2
    // extra) — and the /30 wins.
    let tight = desired::desired_rules(&doc, &selection, &limits(Slash31::Split, 2), 0).unwrap();
    assert_eq!(tight.extra_addresses, 2);
    assert_eq!(
        written(Kind::StorageAccount, &tight.rules),
        vec![
            serde_json::json!({"value": "20.0.0.0/30", "action": "Allow"}),
            serde_json::json!({"value": "20.0.0.8", "action": "Allow"}),
        ]
    );
}
