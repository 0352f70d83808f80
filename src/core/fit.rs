//! The exact fit of a prefix set into a rule budget.
//!
//! Problem: given the collapsed desired set S (disjoint prefixes) and a budget of K rule slots,
//! choose prefixes that cover every address of S, use at most K slots, and admit the **fewest
//! addresses outside S**, where every chosen prefix must stay inside the allowed space (S plus an
//! optional envelope such as `AzureCloud`, and never a reserved range Key Vault refuses).
//!
//! Method: a tree knapsack over the path-compressed binary trie of S (exact, not greedy). For a
//! trie node v with prefix p_v, `f_v(k)` is the fewest extra addresses that cover S ∩ p_v within
//! k slots: either take p_v itself (its extra is |p_v| − |S ∩ p_v|), or split k between the two
//! children. Prefixes between two trie nodes are never better than the lower node's own prefix
//! (same addresses of S, more extra), so only trie nodes are candidates — with one exception
//! handled below: when /31 rules must be written as two /32s, a /31 leaf costs two slots and the
//! /30 above it (one slot, two extra addresses) becomes a real candidate. Capping every table at
//! min(K, slots below v) bounds the work by O(n·K), the usual tree-knapsack argument.
//!
//! Among all covers with the optimal extra count, the one with the fewest rules is returned.

use ipnet::Ipv4Net;

use super::cidr::{self, Range};

/// Costs at or above this are "impossible"; two of them still add without overflow.
const INF: u64 = 1 << 62;

/// What a rule slot costs for a given prefix length, for the target's rule form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slash31 {
    /// A /31 is written as one rule.
    Keep,
    /// A /31 is written as its two /32 addresses (two rules), because the target may not
    /// accept /31 rules (unverified for Key Vault; Azure Storage refuses them,
    /// Azure/azure-cli#7417).
    Split,
}

impl Slash31 {
    /// The form's name where it is stored: in the key of what desired rules were computed from,
    /// which the state keeps between runs. These are the names the derived `Debug` gave when the
    /// first keys were stored; a different spelling would make every stored key stale, so they
    /// never change, whatever `Debug` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Slash31::Keep => "Keep",
            Slash31::Split => "Split",
        }
    }

    fn cost(self, len: u8) -> usize {
        match (self, len) {
            (Slash31::Split, 31) => 2,
            _ => 1,
        }
    }

    /// Writes `net` as rules in this form.
    pub fn emit(self, net: Ipv4Net, out: &mut Vec<Ipv4Net>) {
        if self == Slash31::Split && net.prefix_len() == 31 {
            let base = u32::from(net.network());
            out.push(cidr::net(base, 32));
            out.push(cidr::net(base + 1, 32));
        } else {
            out.push(net);
        }
    }

    /// How many rules `nets` take in this form.
    pub fn slots(self, nets: &[Ipv4Net]) -> usize {
        nets.iter().map(|n| self.cost(n.prefix_len())).sum()
    }
}

/// Where a fit may place extra addresses.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// Merged ranges of the envelope (plus S itself) when one is set; `None` means anywhere.
    envelope: Option<Vec<Range>>,
}

impl Allowed {
    /// Extra addresses may go anywhere public.
    pub fn anywhere() -> Self {
        Allowed { envelope: None }
    }

    /// Extra addresses may only fall inside `envelope`.
    pub fn within(desired: &[Ipv4Net], envelope: &[Ipv4Net]) -> Self {
        let mut ranges: Vec<Range> = desired.iter().chain(envelope).map(cidr::range).collect();
        cidr::merge_ranges(&mut ranges);
        Allowed {
            envelope: Some(ranges),
        }
    }

    /// Whether the whole of `(start, end)` may be allowed by one rule.
    fn permits(&self, (start, end): Range) -> bool {
        let reserved = cidr::RESERVED.iter().any(|r| {
            let (r_start, r_end) = cidr::range(&r.net);
            start < r_end && r_start < end
        });
        if reserved {
            return false;
        }
        match &self.envelope {
            None => true,
            Some(ranges) => {
                let i = ranges.partition_point(|&(_, e)| e <= start);
                ranges.get(i).is_some_and(|&(s, e)| s <= start && end <= e)
            }
        }
    }
}

/// The result of a fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    /// The chosen prefixes, sorted, in the target's rule form (see [`Slash31`]).
    pub rules: Vec<Ipv4Net>,
    /// Addresses the rules admit beyond the desired set.
    pub extra_addresses: u64,
}

/// Why no fit exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    #[error("no room for any rule: the budget is 0 slots")]
    NoBudget,
    #[error("cannot cover the {prefixes} desired prefixes with {budget} rules without admitting addresses outside the allowed space (the envelope, and never a reserved range)")]
    Infeasible { prefixes: usize, budget: usize },
}

struct Node {
    start: u64,
    len: u8,
    /// The prefix length of the trie parent (0 for the root).
    parent_len: u8,
    /// Children in the trie, or `None` for a leaf (a prefix of S).
    children: Option<(usize, usize)>,
}

/// Fits the collapsed, sorted, disjoint set `desired` into `budget` slots.
///
/// # Errors
/// [`FitError::NoBudget`] when `budget` is 0 and `desired` is not empty;
/// [`FitError::Infeasible`] when the allowed space leaves no cover within the budget.
pub fn fit(
    desired: &[Ipv4Net],
    budget: usize,
    allowed: &Allowed,
    slash31: Slash31,
) -> Result<Fitted, FitError> {
    if desired.is_empty() {
        return Ok(Fitted {
            rules: Vec::new(),
            extra_addresses: 0,
        });
    }
    if budget == 0 {
        return Err(FitError::NoBudget);
    }
    debug_assert!(desired
        .windows(2)
        .all(|w| cidr::range(&w[0]).1 <= cidr::range(&w[1]).0));

    let mut nodes = Vec::with_capacity(2 * desired.len());
    let root = build_trie(desired, 0, &mut nodes);
    let knapsack = Knapsack::solve(&nodes, budget, allowed, slash31);

    let root_table = &knapsack.tables[root];
    let best = *root_table.last().expect("tables have at least two entries");
    if best >= INF {
        return Err(FitError::Infeasible {
            prefixes: desired.len(),
            budget,
        });
    }
    // The fewest slots that reach the optimum.
    let slots = root_table
        .iter()
        .position(|&v| v == best)
        .expect("best is in the table");

    let mut chosen = knapsack.trace_back(root, slots);
    chosen.sort_unstable();
    let mut rules = Vec::with_capacity(chosen.len() + 8);
    for net in chosen {
        slash31.emit(net, &mut rules);
    }
    Ok(Fitted {
        rules,
        extra_addresses: best,
    })
}

/// The tree knapsack over one trie (see the module documentation), and what reading its
/// tables back needs.
struct Knapsack<'a> {
    /// The trie, children before parents.
    nodes: &'a [Node],
    budget: usize,
    allowed: &'a Allowed,
    slash31: Slash31,
    /// `tables[v][k]` is f_v(k), the fewest extra addresses that cover S ∩ p_v within k slots
    /// (`INF` when none does), non-increasing in k, for k up to min(budget, slots below v).
    tables: Vec<Vec<u64>>,
    /// `covered[v]` is |S ∩ p_v|.
    covered: Vec<u64>,
}

impl<'a> Knapsack<'a> {
    /// Fills the tables bottom-up; nodes are stored children-first, so index order is a valid
    /// order.
    fn solve(nodes: &'a [Node], budget: usize, allowed: &'a Allowed, slash31: Slash31) -> Self {
        let mut knapsack = Knapsack {
            nodes,
            budget,
            allowed,
            slash31,
            tables: Vec::with_capacity(nodes.len()),
            covered: Vec::with_capacity(nodes.len()),
        };
        for node in nodes {
            let size = 1u64 << (32 - node.len);
            let (table, inside) = match node.children {
                None => (knapsack.leaf_table(node), size),
                Some((left, right)) => {
                    let inside = knapsack.covered[left] + knapsack.covered[right];
                    (knapsack.inner_table(node, inside, left, right), inside)
                }
            };
            knapsack.covered.push(inside);
            knapsack.tables.push(table);
        }
        knapsack
    }

    /// f(k) for a prefix of S: no extra addresses once its own slots fit.
    fn leaf_table(&self, node: &Node) -> Vec<u64> {
        let cost = self.slash31.cost(node.len);
        let mut table = vec![INF; cost.min(self.budget) + 1];
        if cost <= self.budget {
            table[cost] = 0;
        }
        // A /31 written as two rules: the /30 above it (one rule, two extra
        // addresses) is a candidate unless it is already the parent trie node.
        if cost == 2 && node.parent_len < 30 {
            let block = (node.start & !3, (node.start & !3) + 4);
            if self.allowed.permits(block) {
                table[1] = 2;
            }
        }
        non_increasing(&mut table);
        table
    }

    /// f(k) for an inner node holding `inside` addresses of S: the best split of k between
    /// the children's tables, or the node's own prefix when the allowed space permits it.
    fn inner_table(&self, node: &Node, inside: u64, left: usize, right: usize) -> Vec<u64> {
        let (fl, fr) = (&self.tables[left], &self.tables[right]);
        let cap = (fl.len() - 1 + fr.len() - 1).min(self.budget);
        let mut merged = vec![INF; cap + 1];
        for (a, &fa) in fl.iter().enumerate().skip(1) {
            if fa >= INF {
                continue;
            }
            let upper = (fr.len() - 1).min(cap.saturating_sub(a));
            for (slot, &fb) in merged[a + 1..=a + upper].iter_mut().zip(&fr[1..=upper]) {
                *slot = (*slot).min(fa + fb);
            }
        }
        let size = 1u64 << (32 - node.len);
        let cost = self.slash31.cost(node.len);
        if cost <= cap && self.allowed.permits((node.start, node.start + size)) {
            let extra = size - inside;
            for slot in &mut merged[cost..] {
                *slot = (*slot).min(extra);
            }
        }
        non_increasing(&mut merged);
        merged
    }

    /// The prefixes of a cover of the subtree at `root` within `slots` that reaches its table
    /// value, unsorted and not yet in the rule form.
    fn trace_back(&self, root: usize, slots: usize) -> Vec<Ipv4Net> {
        let mut chosen = Vec::new();
        let mut stack = vec![(root, slots)];
        while let Some((index, k)) = stack.pop() {
            let node = &self.nodes[index];
            let target = self.tables[index][k];
            let size = 1u64 << (32 - node.len);
            match node.children {
                None => {
                    if self.slash31.cost(node.len) <= k {
                        chosen.push(cidr::net(node.start as u32, node.len));
                    } else {
                        // Only the /30 option reaches a finite value with fewer slots.
                        chosen.push(cidr::net((node.start & !3) as u32, 30));
                    }
                }
                Some((left, right)) => {
                    let cost = self.slash31.cost(node.len);
                    let take_extra = size - self.covered[index];
                    if cost <= k
                        && take_extra == target
                        && self.allowed.permits((node.start, node.start + size))
                    {
                        chosen.push(cidr::net(node.start as u32, node.len));
                        continue;
                    }
                    let (fl, fr) = (&self.tables[left], &self.tables[right]);
                    let split = (1..fl.len().min(k))
                        .find(|&a| {
                            let b = (k - a).min(fr.len() - 1);
                            fl[a] + fr[b] == target
                        })
                        .expect("the DP value is reached by some split");
                    stack.push((left, split));
                    stack.push((right, (k - split).min(fr.len() - 1)));
                }
            }
        }
        chosen
    }
}

/// "At most k slots": makes the table non-increasing in k.
fn non_increasing(table: &mut [u64]) {
    for k in 1..table.len() {
        table[k] = table[k].min(table[k - 1]);
    }
}

/// Builds the path-compressed trie of sorted, disjoint `leaves` into `nodes` (children before
/// parents) and returns the root's index. `parent_len` is the prefix length of the node above.
fn build_trie(leaves: &[Ipv4Net], parent_len: u8, nodes: &mut Vec<Node>) -> usize {
    if let [only] = leaves {
        nodes.push(Node {
            start: u64::from(u32::from(only.network())),
            len: only.prefix_len(),
            parent_len,
            children: None,
        });
        return nodes.len() - 1;
    }
    let first = u32::from(leaves[0].network());
    let last = u32::from(leaves[leaves.len() - 1].network());
    // Disjoint prefixes differ within both lengths, so this is shorter than either.
    let len = (first ^ last).leading_zeros() as u8;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let bit = 1u32 << (31 - len);
    let split = leaves.partition_point(|n| u32::from(n.network()) & bit == 0);
    let left = build_trie(&leaves[..split], len, nodes);
    let right = build_trie(&leaves[split..], len, nodes);
    nodes.push(Node {
        start: u64::from(first & mask),
        len,
        parent_len,
        children: Some((left, right)),
    });
    nodes.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ps(texts: &[&str]) -> Vec<Ipv4Net> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn strings(nets: &[Ipv4Net]) -> Vec<String> {
        nets.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_slash31_form_keeps_its_stored_spelling() {
        // Stored keys hold these spellings; a new form gets its own here, an old one never
        // changes.
        for form in [Slash31::Keep, Slash31::Split] {
            let stored = match form {
                Slash31::Keep => "Keep",
                Slash31::Split => "Split",
            };
            assert_eq!(form.as_str(), stored);
        }
    }

    #[test]
    fn fits_exactly_when_the_budget_allows() {
        let set = ps(&["20.0.0.0/24", "20.0.2.0/24", "20.0.8.0/22"]);
        let fitted = fit(&set, 3, &Allowed::anywhere(), Slash31::Keep).unwrap();
        assert_eq!(
            (strings(&fitted.rules), fitted.extra_addresses),
            (strings(&set), 0)
        );
    }

    #[test]
    fn merges_the_cheapest_neighbours_first() {
        let cases: &[(&[&str], usize, &[&str], u64)] = &[
            // 20.0.0.0/24 + 20.0.2.0/24 → 20.0.0.0/22 costs 512 extra; merging anything with
            // 20.0.8.0/22 costs more.
            (
                &["20.0.0.0/24", "20.0.2.0/24", "20.0.8.0/22"],
                2,
                &["20.0.0.0/22", "20.0.8.0/22"],
                512,
            ),
            (
                &["20.0.0.0/24", "20.0.2.0/24", "20.0.8.0/22"],
                1,
                &["20.0.0.0/20"],
                4096 - 1536,
            ),
            (
                &["20.0.0.1/32", "20.0.0.3/32", "20.0.0.6/32"],
                2,
                &["20.0.0.0/30", "20.0.0.6/32"],
                2,
            ),
        ];
        for (input, budget, expected, extra) in cases {
            let fitted = fit(&ps(input), *budget, &Allowed::anywhere(), Slash31::Keep).unwrap();
            assert_eq!(
                strings(&fitted.rules),
                strings(&ps(expected)),
                "{input:?} into {budget}"
            );
            assert_eq!(fitted.extra_addresses, *extra);
        }
    }

    #[test]
    fn never_admits_a_reserved_range() {
        // 9.255.255.0/24 and 11.0.0.0/24 share 8.0.0.0/6, which contains 10.0.0.0/8.
        let set = ps(&["9.255.255.0/24", "11.0.0.0/24"]);
        assert_eq!(
            fit(&set, 1, &Allowed::anywhere(), Slash31::Keep),
            Err(FitError::Infeasible {
                prefixes: 2,
                budget: 1
            })
        );
    }

    #[test]
    fn stays_inside_the_envelope() {
        let set = ps(&["20.0.0.0/24", "20.0.2.0/24", "20.0.8.0/24"]);
        let envelope = ps(&["20.0.0.0/22"]);
        let allowed = Allowed::within(&set, &envelope);
        let fitted = fit(&set, 2, &allowed, Slash31::Keep).unwrap();
        assert_eq!(strings(&fitted.rules), ["20.0.0.0/22", "20.0.8.0/24"]);
        assert_eq!(
            fit(&set, 1, &allowed, Slash31::Keep),
            Err(FitError::Infeasible {
                prefixes: 3,
                budget: 1
            })
        );
    }

    #[test]
    fn writes_slash_31s_as_two_rules_when_asked() {
        let set = ps(&["20.0.0.0/31", "20.0.0.8/32"]);
        let kept = fit(&set, 2, &Allowed::anywhere(), Slash31::Keep).unwrap();
        assert_eq!(
            (strings(&kept.rules), kept.extra_addresses),
            (vec!["20.0.0.0/31".into(), "20.0.0.8/32".into()], 0)
        );
        let split = fit(&set, 3, &Allowed::anywhere(), Slash31::Split).unwrap();
        assert_eq!(
            strings(&split.rules),
            ["20.0.0.0/32", "20.0.0.1/32", "20.0.0.8/32"]
        );
        // With two slots, the /30 above the /31 (2 extra) beats merging everything (/28: 13 extra).
        let two = fit(&set, 2, &Allowed::anywhere(), Slash31::Split).unwrap();
        assert_eq!(
            (strings(&two.rules), two.extra_addresses),
            (vec!["20.0.0.0/30".into(), "20.0.0.8/32".into()], 2)
        );
    }

    #[test]
    fn prefers_fewer_rules_among_equal_optima() {
        let set = ps(&["20.0.0.0/24", "20.0.1.0/25"]);
        let fitted = fit(&set, 5, &Allowed::anywhere(), Slash31::Keep).unwrap();
        assert_eq!(fitted.rules.len(), 2);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeSet;

        const BASE: u32 = 0x1400_0000; // 20.0.0.0, a public block

        /// A random set inside a universe of 2^bits addresses at BASE, collapsed.
        fn universe_set(bits: u32) -> impl Strategy<Value = Vec<Ipv4Net>> {
            prop::collection::vec((0u32..(1 << bits), (32 - bits as u8)..=32), 1..8).prop_map(
                |raw| {
                    let nets: Vec<Ipv4Net> = raw
                        .into_iter()
                        .map(|(off, len)| cidr::net(BASE + off, len))
                        .collect();
                    cidr::collapse(&nets)
                },
            )
        }

        fn addresses(nets: &[Ipv4Net]) -> BTreeSet<u64> {
            nets.iter()
                .flat_map(|n| {
                    let (s, e) = cidr::range(n);
                    s..e
                })
                .collect()
        }

        /// Every prefix of the universe.
        fn all_prefixes(bits: u32) -> Vec<Ipv4Net> {
            (0..=bits)
                .flat_map(|depth| {
                    let len = 32 - bits + depth;
                    (0..(1u32 << depth))
                        .map(move |i| cidr::net(BASE + (i << (bits - depth)), len as u8))
                })
                .collect()
        }

        /// Brute force: the least extra over every subset of at most `budget` prefixes of the
        /// universe that covers the set and stays allowed.
        fn brute_force(
            set: &[Ipv4Net],
            budget: usize,
            allowed: &Allowed,
            bits: u32,
            slash31: Slash31,
        ) -> Option<u64> {
            let want = addresses(set);
            let candidates: Vec<Ipv4Net> = all_prefixes(bits)
                .into_iter()
                .filter(|n| allowed.permits(cidr::range(n)))
                .collect();
            /// Every subset of at most `budget` slots, depth first.
            struct Search<'a> {
                candidates: &'a [Ipv4Net],
                budget: usize,
                want: BTreeSet<u64>,
                slash31: Slash31,
                best: Option<u64>,
            }
            impl Search<'_> {
                fn walk(&mut self, from: usize, slots: usize, pick: &mut Vec<Ipv4Net>) {
                    let got = addresses(pick);
                    if self.want.is_subset(&got) {
                        let extra = (got.len() - self.want.len()) as u64;
                        self.best = Some(self.best.map_or(extra, |b| b.min(extra)));
                    }
                    for j in from..self.candidates.len() {
                        let cost = self.slash31.cost(self.candidates[j].prefix_len());
                        if slots + cost <= self.budget {
                            pick.push(self.candidates[j]);
                            self.walk(j + 1, slots + cost, pick);
                            pick.pop();
                        }
                    }
                }
            }
            let mut search = Search {
                candidates: &candidates,
                budget,
                want,
                slash31,
                best: None,
            };
            search.walk(0, 0, &mut Vec::new());
            search.best
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn equals_the_brute_force_optimum(
                set in universe_set(4),
                envelope in universe_set(4),
                use_envelope in any::<bool>(),
                budget in 1usize..4,
                split in any::<bool>(),
            ) {
                let allowed = if use_envelope { Allowed::within(&set, &envelope) } else { Allowed::anywhere() };
                let slash31 = if split { Slash31::Split } else { Slash31::Keep };
                let expected = brute_force(&set, budget, &allowed, 4, slash31);
                let got = fit(&set, budget, &allowed, slash31);
                match expected {
                    None => prop_assert!(got.is_err(), "expected infeasible, got {:?}", got),
                    Some(extra) => {
                        let fitted = got.unwrap();
                        prop_assert_eq!(fitted.extra_addresses, extra);
                        // It covers every desired address, within the budget, inside the allowed space.
                        let covered = addresses(&fitted.rules);
                        prop_assert!(addresses(&set).is_subset(&covered));
                        prop_assert_eq!((covered.len() - addresses(&set).len()) as u64, extra);
                        prop_assert!(fitted.rules.len() <= budget);
                        prop_assert!(fitted.rules.iter().all(|n| allowed.permits(cidr::range(n))));
                        if split { prop_assert!(fitted.rules.iter().all(|n| n.prefix_len() != 31)); }
                    }
                }
            }

            #[test]
            fn covers_everything_within_budget_on_larger_sets(
                raw in prop::collection::vec((0u32..(1 << 16), 18u8..=32), 1..300),
                budget in 1usize..64,
                envelope_len in 12u8..=16,
            ) {
                let set = cidr::collapse(&raw.into_iter().map(|(o, l)| cidr::net(BASE + o, l)).collect::<Vec<_>>());
                let envelope = [cidr::net(BASE, envelope_len)];
                let allowed = Allowed::within(&set, &envelope);
                let fitted = fit(&set, budget, &allowed, Slash31::Split).unwrap();
                prop_assert!(fitted.rules.len() <= budget);
                let (covered, wanted) = (addresses(&fitted.rules), addresses(&set));
                prop_assert!(wanted.is_subset(&covered));
                prop_assert_eq!((covered.len() - wanted.len()) as u64, fitted.extra_addresses);
                prop_assert!(fitted.rules.iter().all(|n| allowed.permits(cidr::range(n))));
                // More budget never costs more extra.
                let roomier = fit(&set, budget + 1, &allowed, Slash31::Split).unwrap();
                prop_assert!(roomier.extra_addresses <= fitted.extra_addresses);
            }
        }
    }
}
