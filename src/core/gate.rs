//! The safety gate: the one check every firewall write passes, and the verify after it.
//!
//! tagfence promises that it never loses a rule a person added and never locks anyone out. The
//! planner is built to keep that promise, but a promise kept by construction breaks quietly
//! when an input lies (a read without its firewall, a list that lost rules) or a later feature
//! builds its body another way. So every write is checked here, against what was read and what
//! the state says tagfence owns, independently of how the body was built:
//!
//! 1. **The read is whole.** A read that lacks `properties`, `networkAcls`, `defaultAction` or
//!    `ipRules` (missing or `null`) is not an empty firewall; nothing is written from it. A vault
//!    that never had a firewall configured reads without `networkAcls` (Microsoft's own getVault
//!    example in the Key Vault REST specs is one); it is initialised only on request
//!    ([`GateOptions::init_firewall`]), keeping its effective access (`Allow`), and never over a
//!    vault the state has seen `Deny`.
//! 2. **Nothing but `ipRules` changes.** Every other `networkAcls` field is sent exactly as
//!    read: `defaultAction`, `bypass`, the virtual network rules, and fields tagfence does not
//!    know. A write can never be more permissive than the read in any of them.
//! 3. **The read agrees with the state.** A firewall the state saw closed (`defaultAction`
//!    `Deny`, `bypass` `None`) that reads open is not written from on first sight. When more
//!    than half of the rules tagfence added and
//!    confirmed are gone from the read, the read is refused as suspicious rather than trusted
//!    (unless [`GateOptions::accept_missing_rules`]): a truncated or empty list would otherwise
//!    drop every rule a person added that it did not show.
//! 4. **Every rule tagfence did not add is kept.** A readable rule of the read leaves only when
//!    tagfence owns it (or with `--prune`); an unreadable one is kept verbatim, always.
//! 5. **The body fits the kind's limits.**
//!
//! The result, [`GatedWrite`], is the only value a write can be made from (the ARM client's
//! write takes one), and only [`check`] makes one. [`GatedWrite::verify`] then compares the
//! whole firewall read back after the write to the body sent, not only its IP rules.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use ipnet::Ipv4Net;
use serde_json::{json, Map, Value};

use super::kind::Kind;
use super::live::{AclField, LiveAcl};

/// What tagfence knows of who added which rule of a vault.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ownership<'a> {
    /// The rules tagfence may remove: added by it (confirmed or pending), or adopted.
    pub removable: &'a [Ipv4Net],
    /// The rules tagfence added and saw on the vault after its last verified write or read.
    pub confirmed: &'a [Ipv4Net],
    /// The `defaultAction` the state last saw on the vault.
    pub seen_default_action: Option<&'a str>,
    /// The `bypass` the state last saw on the vault.
    pub seen_bypass: Option<&'a str>,
}

/// What a run allows beyond the defaults.
#[derive(Debug, Clone, Copy)]
pub struct GateOptions {
    /// Remove rules tagfence did not add (`--prune`).
    pub prune: bool,
    /// Initialise the firewall of a vault that has none (`--init-firewall`).
    pub init_firewall: bool,
    /// Trust a read that lacks most of tagfence's confirmed rules (`--accept-missing-rules`).
    pub accept_missing_rules: bool,
    /// The most IP rules the firewall may hold (never above the kind's own limit).
    pub max_rules: usize,
}

impl Default for GateOptions {
    fn default() -> Self {
        GateOptions {
            prune: false,
            init_firewall: false,
            accept_missing_rules: false,
            max_rules: Kind::KeyVault.max_rules(),
        }
    }
}

/// The rule set object (`networkAcls`, `networkRuleSet`) a write proposes to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub network_acls: Map<String, Value>,
}

/// The body that replaces the readable IP rules of `read` with `rules` and keeps everything
/// else as read: a rule the firewall holds in its entry as read, a new one in the kind's form
/// ([`Kind::rule_entry`]), the unreadable rules verbatim after the readable ones. A read
/// without its rule set gets the kind's initial firewall when `init_firewall` (the gate decides
/// whether that is allowed).
pub fn propose(read: &LiveAcl, rules: &[Ipv4Net], init_firewall: bool) -> Proposal {
    let mut network_acls = match (&read.network_acls, init_firewall) {
        (Some(acls), _) => acls.clone(),
        (None, true) => read.kind.initial_rule_set(),
        (None, false) => Map::new(),
    };
    // A rule the vault holds goes back as it was read (its spelling, any other field).
    let as_read: std::collections::HashMap<&Ipv4Net, &Value> =
        read.ip_rules.iter().zip(&read.entries).collect();
    let mut entries: Vec<Value> = rules
        .iter()
        .map(|r| {
            as_read
                .get(r)
                .map_or_else(|| read.kind.rule_entry(*r), |entry| (*entry).clone())
        })
        .collect();
    entries.extend(read.unreadable.iter().map(|r| r.entry.clone()));
    network_acls.insert("ipRules".to_owned(), Value::Array(entries));
    Proposal { network_acls }
}

/// Why the gate refused a write. Nothing was written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateRefusal {
    #[error("the {} cannot hold IP rules: {reason}; nothing written", kind.noun())]
    Unsupported { kind: Kind, reason: String },
    #[error("the {} read lacks {} (missing, null or not of its type), so tagfence cannot tell what its firewall holds; nothing written (a partial read is never taken for an empty firewall)", kind.noun(), paths(*kind, .missing))]
    IncompleteRead { kind: Kind, missing: Vec<AclField> },
    #[error("the {} has no firewall configured (the read has no {}, as a {} that never had one reads); configure its firewall first (Networking → Firewalls and virtual networks), or rerun with --init-firewall to initialise it keeping its current access ({})", kind.noun(), AclField::NetworkAcls.path(*kind), kind.noun(), initial_access(*kind))]
    NoFirewall { kind: Kind },
    #[error("the {} read has no {}, but tagfence last saw its defaultAction as {seen}; a read that contradicts the state is not trusted, and a firewall is never initialised as Allow over a {} seen Deny; nothing written", kind.noun(), AclField::NetworkAcls.path(*kind), kind.noun())]
    FirewallVanished { kind: Kind, seen: String },
    #[error("the {} reads {field} {read}, but tagfence last saw {seen}: a read that shows the firewall opened is not written from on first sight; nothing written. If a person opened it, the next run proceeds; if not, check the {} and what answers for ARM", kind.noun(), kind.noun())]
    OpenedSinceSeen {
        kind: Kind,
        field: &'static str,
        seen: String,
        read: String,
    },
    #[error("the write would change {field} of the firewall (read {read}, about to send {sent}); tagfence changes only ipRules")]
    ChangesMoreThanIpRules {
        field: String,
        read: String,
        sent: String,
    },
    #[error("the {} read shows {present} of the {confirmed} rules tagfence added and confirmed ({missing} gone{}); a read that contradicts the state this much is refused as suspicious. If a person really removed them, rerun with --accept-missing-rules", kind.noun(), listed(.first_missing, *.missing))]
    Suspicious {
        kind: Kind,
        present: usize,
        confirmed: usize,
        missing: usize,
        first_missing: Vec<Ipv4Net>,
    },
    #[error("the write would drop {count} rule(s) tagfence did not add{}; a person's rules are never removed without --prune", listed(.first, *.count))]
    DropsPersonsRules { count: usize, first: Vec<Ipv4Net> },
    #[error("the write would drop or change {count} IP rule value(s) tagfence cannot read (first: '{first}'); such rules are a person's and are kept verbatim")]
    DropsUnreadableRules { count: usize, first: String },
    #[error("the write holds IP rule entry {entry}, which is neither a rule tagfence can read nor one the firewall holds")]
    InventedEntry { entry: String },
    #[error("the write holds {} IP rules, over the limit of {}", crate::core::text::count(*.count), crate::core::text::count(*.limit))]
    OverLimit { count: usize, limit: usize },
    #[error("the write holds the IP rule '{value}', which a {} refuses ({why}); nothing written", kind.label())]
    FormRefused {
        kind: Kind,
        value: String,
        why: &'static str,
    },
}

fn paths(kind: Kind, fields: &[AclField]) -> String {
    fields
        .iter()
        .map(|f| f.path(kind))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The access an initialised firewall keeps ([`Kind::initial_rule_set`]), for the message that
/// offers it.
fn initial_access(kind: Kind) -> &'static str {
    if kind.initial_rule_set().contains_key("bypass") {
        "defaultAction Allow, AzureServices bypass"
    } else {
        "defaultAction Allow"
    }
}

fn listed(rules: &[Ipv4Net], total: usize) -> String {
    if rules.is_empty() {
        return String::new();
    }
    let mut names: Vec<String> = rules.iter().map(ToString::to_string).collect();
    if total > rules.len() {
        names.push("…".to_owned());
    }
    format!(": {}", names.join(", "))
}

/// ` [a, b, …]`: the first few rules of a sorted set, or nothing when it is empty.
fn bracketed(rules: &[Ipv4Net]) -> String {
    if rules.is_empty() {
        return String::new();
    }
    let mut names: Vec<String> = rules.iter().take(SHOWN).map(ToString::to_string).collect();
    if rules.len() > SHOWN {
        names.push("…".to_owned());
    }
    format!(" [{}]", names.join(", "))
}

/// How many rules a message names at most.
const SHOWN: usize = 5;

/// A write that passed the gate: the only value the ARM client writes a firewall from.
#[derive(Debug, Clone, PartialEq)]
pub struct GatedWrite {
    kind: Kind,
    network_acls: Map<String, Value>,
    /// The readable IP rules sent, sorted.
    rules: Vec<Ipv4Net>,
    /// The entries sent verbatim, as text, sorted.
    verbatim: Vec<String>,
}

impl GatedWrite {
    /// The PATCH body: `{"properties": {"networkAcls": …}}` (the kind's rule set property).
    pub fn body(&self) -> Value {
        let mut properties = Map::new();
        properties.insert(
            self.kind.rule_set_property().to_owned(),
            Value::Object(self.network_acls.clone()),
        );
        json!({ "properties": properties })
    }

    /// The firewall's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The body as a proposal, to pass the gate again against a later read of the same
    /// firewall.
    pub fn proposal(&self) -> Proposal {
        Proposal {
            network_acls: self.network_acls.clone(),
        }
    }

    /// The readable IP rules the write holds, sorted.
    pub fn rules(&self) -> &[Ipv4Net] {
        &self.rules
    }

    /// Compares the whole firewall read back after the write to the body sent: every
    /// `networkAcls` field, and the IP rules as sets (ARM may reorder them, and stores a bare
    /// address as `/32`).
    ///
    /// # Errors
    /// [`Mismatch`] naming what differs.
    pub fn verify(&self, after: &LiveAcl) -> Result<(), Mismatch> {
        let mut mismatch = Mismatch {
            kind: self.kind,
            ..Mismatch::default()
        };
        if !after.is_whole() {
            mismatch.incomplete = after.missing.clone();
            return Err(mismatch);
        }
        let read = after
            .network_acls
            .as_ref()
            .expect("a whole read has networkAcls");
        mismatch.fields = differing_fields(&self.network_acls, read)
            .into_iter()
            .map(|(field, _, _)| field)
            .collect();
        let want: HashSet<&Ipv4Net> = self.rules.iter().collect();
        let got: HashSet<&Ipv4Net> = after.ip_rules.iter().collect();
        mismatch.missing = sorted(want.difference(&got));
        mismatch.unexpected = sorted(got.difference(&want));
        mismatch.total = after.rule_count();
        mismatch.verbatim_differ = after.verbatim_entries() != self.verbatim;
        if mismatch.is_empty() {
            Ok(())
        } else {
            Err(mismatch)
        }
    }
}

fn sorted<'a>(rules: impl Iterator<Item = &'a &'a Ipv4Net>) -> Vec<Ipv4Net> {
    let mut rules: Vec<Ipv4Net> = rules.map(|r| **r).collect();
    rules.sort_unstable();
    rules
}

/// How the firewall read back after a write differs from the body sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// The firewall's kind (for the message).
    pub kind: Kind,
    /// Fields the read-back lacks.
    pub incomplete: Vec<AclField>,
    /// `networkAcls` fields other than `ipRules` that differ.
    pub fields: Vec<String>,
    /// Rules written but not read back, sorted.
    pub missing: Vec<Ipv4Net>,
    /// Rules read back but not written, sorted.
    pub unexpected: Vec<Ipv4Net>,
    /// Whether the unreadable entries differ.
    pub verbatim_differ: bool,
    /// How many IP rules the vault holds now.
    pub total: usize,
}

impl Default for Mismatch {
    fn default() -> Self {
        Mismatch {
            kind: Kind::KeyVault,
            incomplete: Vec::new(),
            fields: Vec::new(),
            missing: Vec::new(),
            unexpected: Vec::new(),
            verbatim_differ: false,
            total: 0,
        }
    }
}

impl Mismatch {
    fn is_empty(&self) -> bool {
        self.incomplete.is_empty()
            && self.fields.is_empty()
            && self.missing.is_empty()
            && self.unexpected.is_empty()
            && !self.verbatim_differ
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.incomplete.is_empty() {
            return write!(
                f,
                "the read-back lacks {}",
                paths(self.kind, &self.incomplete)
            );
        }
        let mut parts = Vec::new();
        if !self.fields.is_empty() {
            parts.push(format!(
                "{} differ from what was sent",
                self.fields.join(", ")
            ));
        }
        if !self.missing.is_empty() || !self.unexpected.is_empty() {
            parts.push(format!(
                "the {} now holds {} rules, {} written rules missing{} and {} not written by this run{}",
                self.kind.noun(),
                self.total,
                self.missing.len(),
                bracketed(&self.missing),
                self.unexpected.len(),
                bracketed(&self.unexpected),
            ));
        }
        if self.verbatim_differ {
            parts.push("the rules tagfence cannot read differ from the ones sent back".to_owned());
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// The fields other than `ipRules` whose values differ between `a` and `b` (a field absent on
/// one side differs from any value on the other, `null` included), with both values as text.
fn differing_fields(
    a: &Map<String, Value>,
    b: &Map<String, Value>,
) -> Vec<(String, String, String)> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| k.as_str() != "ipRules")
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let text =
                |v: Option<&Value>| v.map_or_else(|| "(absent)".to_owned(), ToString::to_string);
            (k.clone(), text(b.get(k)), text(a.get(k)))
        })
        .collect()
}

/// Checks a proposed write against what was read and what tagfence owns; see the module
/// documentation for the five rules.
///
/// The checks run in the order of those rules (but for the opened firewall of rule 3, see
/// `read_not_opened_since_seen`), and the first refusal wins, so that a write failing several
/// rules is always refused for the same reason.
///
/// # Errors
/// The first [`GateRefusal`] that applies.
pub fn check(
    read: &LiveAcl,
    proposal: &Proposal,
    ownership: Ownership<'_>,
    options: GateOptions,
) -> Result<GatedWrite, GateRefusal> {
    let expected_rest = read_is_whole(read, ownership, options)?;
    read_not_opened_since_seen(read, ownership)?;
    only_ip_rules_change(proposal, &expected_rest)?;
    read_agrees_with_state(read, ownership, options)?;
    let sent = sent_ip_rules(proposal)?;
    unreadable_rules_kept(read, &sent.verbatim)?;
    if !options.prune {
        persons_rules_kept(read, &sent.rules, ownership)?;
    }
    body_fits(read, &sent, options)?;
    forms_accepted(read, proposal)?;
    Ok(GatedWrite {
        kind: read.kind,
        network_acls: proposal.network_acls.clone(),
        rules: sent.rules,
        verbatim: sent.verbatim,
    })
}

/// Rule 1: the read is whole, or it is a firewall that was never configured and may be
/// initialised. Returns the `networkAcls` the write must send, `ipRules` aside.
fn read_is_whole(
    read: &LiveAcl,
    ownership: Ownership<'_>,
    options: GateOptions,
) -> Result<Map<String, Value>, GateRefusal> {
    if let Some(reason) = &read.unsupported {
        return Err(GateRefusal::Unsupported {
            kind: read.kind,
            reason: reason.clone(),
        });
    }
    match read.missing.as_slice() {
        [] => Ok(read
            .network_acls
            .clone()
            .expect("a whole read has networkAcls")),
        [AclField::NetworkAcls] => {
            let kind = read.kind;
            // A vault the state saw as anything but `Allow` does not lose its firewall: the
            // read contradicts the state, and initialising it as `Allow` would open the vault.
            if let Some(seen) = ownership
                .seen_default_action
                .filter(|seen| !seen.eq_ignore_ascii_case("allow"))
            {
                return Err(GateRefusal::FirewallVanished {
                    kind,
                    seen: seen.to_owned(),
                });
            }
            if !options.init_firewall {
                return Err(GateRefusal::NoFirewall { kind });
            }
            Ok(kind.initial_rule_set())
        }
        missing => Err(GateRefusal::IncompleteRead {
            kind: read.kind,
            missing: missing.to_vec(),
        }),
    }
}

/// Rule 3, its first half, checked before rule 2: a firewall seen closed that reads open is not
/// believed at once. A lying read would otherwise be written back, opening the real vault; and
/// the body, copied from that read, would pass rule 2.
fn read_not_opened_since_seen(read: &LiveAcl, ownership: Ownership<'_>) -> Result<(), GateRefusal> {
    let refusal = opened(
        read.kind,
        "defaultAction",
        ownership.seen_default_action,
        read.default_action.as_deref(),
        "Deny",
    )
    .or_else(|| {
        opened(
            read.kind,
            "bypass",
            ownership.seen_bypass,
            read.bypass.as_deref(),
            "None",
        )
    });
    refusal.map_or(Ok(()), Err)
}

/// The refusal when `field` was `seen` as `closed` and is `read` as anything else (a field the
/// state never saw, or the read lacks, is left to the other rules).
fn opened(
    kind: Kind,
    field: &'static str,
    seen: Option<&str>,
    read: Option<&str>,
    closed: &str,
) -> Option<GateRefusal> {
    match (seen, read) {
        (Some(seen), Some(read))
            if seen.eq_ignore_ascii_case(closed) && !read.eq_ignore_ascii_case(closed) =>
        {
            Some(GateRefusal::OpenedSinceSeen {
                kind,
                field,
                seen: seen.to_owned(),
                read: read.to_owned(),
            })
        }
        _ => None,
    }
}

/// Rule 2: every `networkAcls` field but `ipRules` is sent exactly as `expected_rest`.
fn only_ip_rules_change(
    proposal: &Proposal,
    expected_rest: &Map<String, Value>,
) -> Result<(), GateRefusal> {
    match differing_fields(&proposal.network_acls, expected_rest)
        .into_iter()
        .next()
    {
        Some((field, read, sent)) => Err(GateRefusal::ChangesMoreThanIpRules { field, read, sent }),
        None => Ok(()),
    }
}

/// Rule 3: the read shows at least half of the rules tagfence added and confirmed. A truncated
/// or empty list would otherwise be taken at its word, and every person's rule it did not show
/// dropped.
///
/// Public for the writes that are not written: a run that finds nothing to write settles the
/// state against its read, which must agree with the state as a write's must.
///
/// # Errors
/// [`GateRefusal::Suspicious`].
pub fn read_agrees_with_state(
    read: &LiveAcl,
    ownership: Ownership<'_>,
    options: GateOptions,
) -> Result<(), GateRefusal> {
    let present: HashSet<&Ipv4Net> = read.ip_rules.iter().collect();
    let mut gone: Vec<Ipv4Net> = ownership
        .confirmed
        .iter()
        .filter(|r| !present.contains(r))
        .copied()
        .collect();
    gone.sort_unstable();
    gone.dedup();
    let confirmed = ownership.confirmed.iter().collect::<HashSet<_>>().len();
    if !options.accept_missing_rules && gone.len() * 2 > confirmed {
        return Err(GateRefusal::Suspicious {
            kind: read.kind,
            present: confirmed - gone.len(),
            confirmed,
            missing: gone.len(),
            first_missing: gone.iter().take(SHOWN).copied().collect(),
        });
    }
    Ok(())
}

/// The IP rules a write sends, split as the gate judges them.
struct SentIpRules {
    /// The entries tagfence can read, as rules, sorted and deduplicated (a rule sent twice is
    /// one rule on the vault).
    rules: Vec<Ipv4Net>,
    /// The other entries verbatim, as text, sorted.
    verbatim: Vec<String>,
}

/// The proposal's `ipRules`, which must be an array (anything else changes its type, a field
/// rule 2 leaves to this check).
fn sent_ip_rules(proposal: &Proposal) -> Result<SentIpRules, GateRefusal> {
    let entries: &[Value] = match proposal.network_acls.get("ipRules") {
        Some(Value::Array(entries)) => entries,
        other => {
            return Err(GateRefusal::ChangesMoreThanIpRules {
                field: "ipRules".to_owned(),
                read: "an array".to_owned(),
                sent: other.map_or_else(|| "(absent)".to_owned(), ToString::to_string),
            })
        }
    };
    let mut rules: Vec<Ipv4Net> = Vec::with_capacity(entries.len());
    let mut verbatim: Vec<String> = Vec::new();
    for entry in entries {
        let readable = entry
            .get("value")
            .and_then(Value::as_str)
            .and_then(|text| super::cidr::parse_rule(text).ok());
        match readable {
            Some(rule) => rules.push(rule),
            None => verbatim.push(entry.to_string()),
        }
    }
    rules.sort_unstable();
    rules.dedup();
    verbatim.sort_unstable();
    Ok(SentIpRules { rules, verbatim })
}

/// Rule 4, for the entries tagfence cannot read: the write sends back exactly those of the
/// read, none invented and none lost (invented first, so that an entry from nowhere is named as
/// such rather than counted as a difference).
fn unreadable_rules_kept(read: &LiveAcl, sent_verbatim: &[String]) -> Result<(), GateRefusal> {
    let want_verbatim = read.verbatim_entries();
    if let Some(invented) = sent_verbatim.iter().find(|e| !want_verbatim.contains(e)) {
        return Err(GateRefusal::InventedEntry {
            entry: invented.clone(),
        });
    }
    if want_verbatim == sent_verbatim {
        return Ok(());
    }
    let lost = lost_entries(&want_verbatim, sent_verbatim);
    Err(GateRefusal::DropsUnreadableRules {
        count: lost.len(),
        first: lost
            .first()
            .and_then(|e| serde_json::from_str::<Value>(e).ok())
            .and_then(|v| v.get("value").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| lost.first().map_or_else(String::new, |e| (*e).clone())),
    })
}

/// The entries of `want` that `have` lacks, counting duplicates: an entry the read holds twice
/// and the write sends once is one lost.
fn lost_entries<'a>(want: &'a [String], have: &[String]) -> Vec<&'a String> {
    let mut remaining = have.to_vec();
    want.iter()
        .filter(|e| match remaining.iter().position(|h| h == *e) {
            Some(i) => {
                remaining.swap_remove(i);
                false
            }
            None => true,
        })
        .collect()
}

/// Rule 4, for the readable rules (without `--prune`): a rule of the read that the write leaves
/// out must be one tagfence may remove.
fn persons_rules_kept(
    read: &LiveAcl,
    sent_rules: &[Ipv4Net],
    ownership: Ownership<'_>,
) -> Result<(), GateRefusal> {
    let sent: HashSet<&Ipv4Net> = sent_rules.iter().collect();
    let removable: HashSet<&Ipv4Net> = ownership.removable.iter().collect();
    let mut dropped: Vec<Ipv4Net> = read
        .ip_rules
        .iter()
        .filter(|r| !sent.contains(r) && !removable.contains(r))
        .copied()
        .collect();
    if dropped.is_empty() {
        return Ok(());
    }
    dropped.sort_unstable();
    Err(GateRefusal::DropsPersonsRules {
        count: dropped.len(),
        first: dropped.iter().take(SHOWN).copied().collect(),
    })
}

/// Rule 5: the body holds no more IP rules than the run allows, nor than the kind's own limit,
/// unless it holds fewer than the read: a firewall people filled past the run's limit may still
/// lose a rule of tagfence's (an ended grant's), never gain one.
fn body_fits(read: &LiveAcl, sent: &SentIpRules, options: GateOptions) -> Result<(), GateRefusal> {
    let count = sent.rules.len() + sent.verbatim.len();
    let limit = options.max_rules.min(read.kind.max_rules());
    let held = read.ip_rules.len() + read.unreadable.len();
    if count > limit && count >= held {
        return Err(GateRefusal::OverLimit { count, limit });
    }
    Ok(())
}

/// Rule 5, the form: every rule the write adds (one the read does not hold) is one the kind
/// takes, in its spelling (Storage: no /31, no `/32` range; a single address bare). A rule as
/// read goes back as it was.
fn forms_accepted(read: &LiveAcl, proposal: &Proposal) -> Result<(), GateRefusal> {
    let held: HashSet<&Value> = read.entries.iter().collect();
    let entries = proposal
        .network_acls
        .get("ipRules")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for entry in entries.iter().filter(|e| !held.contains(e)) {
        let Some(text) = entry.get("value").and_then(Value::as_str) else {
            continue;
        };
        let Ok(rule) = super::cidr::parse_rule(text) else {
            continue;
        };
        let refusal = |why| GateRefusal::FormRefused {
            kind: read.kind,
            value: text.to_owned(),
            why,
        };
        read.kind.accepts(rule).map_err(refusal)?;
        if !read.kind.spelling_accepted(text) {
            return Err(refusal("a single address is written without a prefix"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(texts: &[&str]) -> Vec<Ipv4Net> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn read(doc: Value) -> LiveAcl {
        LiveAcl::read(Kind::KeyVault, &doc).unwrap()
    }

    fn vault(ip_rules: &[&str]) -> LiveAcl {
        read(json!({"name": "kv", "properties": {"networkAcls": {
            "defaultAction": "Deny", "bypass": "None",
            "ipRules": ip_rules.iter().map(|r| json!({"value": r})).collect::<Vec<_>>(),
            "virtualNetworkRules": [{"id": "/subscriptions/s/resourcegroups/r/providers/microsoft.network/virtualnetworks/v/subnets/a"}],
            "someFutureField": {"x": 1}}}}))
    }

    #[test]
    fn a_write_keeps_everything_but_the_ip_rules() {
        let live = vault(&["52.1.2.3/32", "20.0.0.0/24"]);
        let owned = nets(&["20.0.0.0/24"]);
        let rules = nets(&["52.1.2.3/32", "20.0.1.0/24"]);
        let write = check(
            &live,
            &propose(&live, &rules, false),
            Ownership {
                removable: &owned,
                confirmed: &owned,
                seen_default_action: Some("Deny"),
                seen_bypass: None,
            },
            GateOptions::default(),
        )
        .unwrap();
        let acls = &write.body()["properties"]["networkAcls"];
        assert_eq!(acls["defaultAction"], "Deny");
        assert_eq!(acls["bypass"], "None");
        assert_eq!(acls["someFutureField"], json!({"x": 1}));
        assert_eq!(acls["virtualNetworkRules"].as_array().unwrap().len(), 1);
        assert_eq!(write.rules(), nets(&["20.0.1.0/24", "52.1.2.3/32"]));
    }

    #[test]
    fn a_partial_read_is_never_an_empty_firewall() {
        for doc in [
            json!({"name": "kv"}),
            json!({"name": "kv", "properties": null}),
            json!({"name": "kv", "properties": {"networkAcls": {"defaultAction": "Deny"}}}),
            json!({"name": "kv", "properties": {"networkAcls": {"defaultAction": "Deny", "ipRules": null}}}),
            json!({"name": "kv", "properties": {"networkAcls": {"ipRules": []}}}),
        ] {
            let live = read(doc.clone());
            let err = check(
                &live,
                &propose(&live, &nets(&["20.0.0.0/24"]), true),
                Ownership::default(),
                GateOptions {
                    init_firewall: true,
                    ..GateOptions::default()
                },
            )
            .unwrap_err();
            assert!(
                matches!(err, GateRefusal::IncompleteRead { .. }),
                "{doc}: {err}"
            );
        }
    }

    #[test]
    fn a_vault_without_a_firewall_is_initialised_only_on_request_and_never_over_deny() {
        let live = read(json!({"name": "kv", "properties": {"publicNetworkAccess": "Enabled"}}));
        let rules = nets(&["20.0.0.0/24"]);
        let err = check(
            &live,
            &propose(&live, &rules, false),
            Ownership::default(),
            GateOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            GateRefusal::NoFirewall {
                kind: Kind::KeyVault
            }
        );
        assert!(err.to_string().contains("--init-firewall"));
        let options = GateOptions {
            init_firewall: true,
            ..GateOptions::default()
        };
        let write = check(
            &live,
            &propose(&live, &rules, true),
            Ownership::default(),
            options,
        )
        .unwrap();
        assert_eq!(
            write.body()["properties"]["networkAcls"]["defaultAction"],
            "Allow"
        );
        let seen = Ownership {
            seen_default_action: Some("Deny"),
            ..Ownership::default()
        };
        assert_eq!(
            check(&live, &propose(&live, &rules, true), seen, options).unwrap_err(),
            GateRefusal::FirewallVanished {
                kind: Kind::KeyVault,
                seen: "Deny".to_owned()
            }
        );
        // A body that is more open than the initial one is refused too.
        let mut open = propose(&live, &rules, true);
        open.network_acls
            .insert("bypass".into(), json!("AzureServices, Logging"));
        assert!(matches!(
            check(&live, &open, Ownership::default(), options),
            Err(GateRefusal::ChangesMoreThanIpRules { .. })
        ));
    }

    #[test]
    fn a_firewall_seen_closed_that_reads_open_is_not_written_from_at_once() {
        let live = read(json!({"name": "kv", "properties": {"networkAcls": {
            "defaultAction": "Allow", "bypass": "AzureServices", "ipRules": [], "virtualNetworkRules": []}}}));
        let rules = nets(&["20.0.0.0/24"]);
        let seen = |action, bypass| Ownership {
            seen_default_action: Some(action),
            seen_bypass: Some(bypass),
            ..Ownership::default()
        };
        let err = check(
            &live,
            &propose(&live, &rules, false),
            seen("Deny", "AzureServices"),
            GateOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                &err,
                GateRefusal::OpenedSinceSeen {
                    kind: Kind::KeyVault,
                    field: "defaultAction",
                    ..
                }
            ),
            "{err}"
        );
        let err = check(
            &live,
            &propose(&live, &rules, false),
            seen("Allow", "None"),
            GateOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                &err,
                GateRefusal::OpenedSinceSeen {
                    kind: Kind::KeyVault,
                    field: "bypass",
                    ..
                }
            ),
            "{err}"
        );
        assert!(check(
            &live,
            &propose(&live, &rules, false),
            seen("Allow", "AzureServices"),
            GateOptions::default()
        )
        .is_ok());
        assert!(check(
            &live,
            &propose(&live, &rules, false),
            Ownership::default(),
            GateOptions::default()
        )
        .is_ok());
    }

    #[test]
    fn a_kept_rule_goes_back_as_it_was_read() {
        let live = read(json!({"name": "kv", "properties": {"networkAcls": {
            "defaultAction": "Deny", "bypass": "None", "virtualNetworkRules": [],
            "ipRules": [{"value": "52.1.2.3", "note": "office"}, {"value": "52.1.2.3/32"}]}}}));
        let rules = nets(&["52.1.2.3/32", "20.0.0.0/24"]);
        let write = check(
            &live,
            &propose(&live, &rules, false),
            Ownership::default(),
            GateOptions::default(),
        )
        .unwrap();
        assert_eq!(
            write.body()["properties"]["networkAcls"]["ipRules"],
            json!([{"value": "52.1.2.3", "note": "office"}, {"value": "20.0.0.0/24"}])
        );
    }

    #[test]
    fn any_other_field_changed_is_refused() {
        let live = vault(&["52.1.2.3/32"]);
        for (field, value) in [
            ("defaultAction", json!("Allow")),
            ("bypass", json!("AzureServices")),
            ("virtualNetworkRules", json!([])),
            ("someFutureField", Value::Null),
            ("newField", json!(1)),
        ] {
            let mut proposal = propose(&live, &nets(&["52.1.2.3/32"]), false);
            proposal.network_acls.insert(field.into(), value);
            let err = check(
                &live,
                &proposal,
                Ownership::default(),
                GateOptions::default(),
            )
            .unwrap_err();
            assert!(
                matches!(&err, GateRefusal::ChangesMoreThanIpRules { field: f, .. } if f == field),
                "{err}"
            );
        }
        let mut proposal = propose(&live, &nets(&["52.1.2.3/32"]), false);
        proposal.network_acls.remove("bypass");
        assert!(check(
            &live,
            &proposal,
            Ownership::default(),
            GateOptions::default()
        )
        .is_err());
    }

    #[test]
    fn a_read_that_lost_most_of_our_rules_is_suspicious() {
        let ours = nets(&["20.0.0.0/24", "20.0.1.0/24", "20.0.2.0/24"]);
        let owned = Ownership {
            removable: &ours,
            confirmed: &ours,
            seen_default_action: Some("Deny"),
            seen_bypass: None,
        };
        let empty = vault(&[]);
        let err = check(
            &empty,
            &propose(&empty, &ours, false),
            owned,
            GateOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                GateRefusal::Suspicious {
                    kind: Kind::KeyVault,
                    present: 0,
                    confirmed: 3,
                    missing: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("--accept-missing-rules"));
        let options = GateOptions {
            accept_missing_rules: true,
            ..GateOptions::default()
        };
        assert!(check(&empty, &propose(&empty, &ours, false), owned, options).is_ok());
        // One of three gone (a person removed it): believed.
        let most = vault(&["20.0.0.0/24", "20.0.1.0/24"]);
        assert!(check(
            &most,
            &propose(&most, &ours, false),
            owned,
            GateOptions::default()
        )
        .is_ok());
    }

    #[test]
    fn a_persons_rules_are_kept_and_unreadable_ones_verbatim() {
        let live = read(
            json!({"name": "kv", "properties": {"networkAcls": {"defaultAction": "Deny", "bypass": "None", "virtualNetworkRules": [],
            "ipRules": [{"value": "52.1.2.3/32"}, {"value": "203.0.113.5/24"}, {"value": "'10.91.4.0/24'"}, {"value": ""}, {"value": "20.0.0.0/24"}]}}}),
        );
        assert_eq!(live.unreadable.len(), 3);
        let ours = nets(&["20.0.0.0/24"]);
        let owned = Ownership {
            removable: &ours,
            confirmed: &ours,
            seen_default_action: None,
            seen_bypass: None,
        };
        // Dropping our own retired rule is fine; the unreadable ones travel verbatim.
        let write = check(
            &live,
            &propose(&live, &nets(&["52.1.2.3/32", "20.0.1.0/24"]), false),
            owned,
            GateOptions::default(),
        )
        .unwrap();
        let sent = write.body()["properties"]["networkAcls"]["ipRules"].clone();
        assert!(sent
            .as_array()
            .unwrap()
            .contains(&json!({"value": "203.0.113.5/24"})));
        assert!(sent.as_array().unwrap().contains(&json!({"value": ""})));
        // Dropping the person's rule is refused.
        let err = check(
            &live,
            &propose(&live, &nets(&["20.0.1.0/24"]), false),
            owned,
            GateOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            GateRefusal::DropsPersonsRules {
                count: 1,
                first: nets(&["52.1.2.3/32"])
            }
        );
        assert!(check(
            &live,
            &propose(&live, &nets(&["20.0.1.0/24"]), false),
            owned,
            GateOptions {
                prune: true,
                ..GateOptions::default()
            }
        )
        .is_ok());
        // Dropping an unreadable rule is refused even with prune.
        let mut proposal = propose(&live, &nets(&["52.1.2.3/32"]), false);
        proposal.network_acls["ipRules"]
            .as_array_mut()
            .unwrap()
            .retain(|e| e["value"] != "");
        let err = check(
            &live,
            &proposal,
            owned,
            GateOptions {
                prune: true,
                ..GateOptions::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err,
            GateRefusal::DropsUnreadableRules {
                count: 1,
                first: String::new()
            }
        );
        // Inventing one is refused.
        let mut proposal = propose(&live, &nets(&["52.1.2.3/32"]), false);
        proposal.network_acls["ipRules"]
            .as_array_mut()
            .unwrap()
            .push(json!({"value": "1.2.3.4/8"}));
        assert!(matches!(
            check(&live, &proposal, owned, GateOptions::default()),
            Err(GateRefusal::InventedEntry { .. })
        ));
    }

    #[test]
    fn the_body_fits_the_limit_counting_unreadable_rules() {
        let live = read(
            json!({"name": "kv", "properties": {"networkAcls": {"defaultAction": "Deny", "bypass": "None", "virtualNetworkRules": [], "ipRules": [{"value": "x"}]}}}),
        );
        let rules = nets(&["20.0.0.0/24", "20.0.1.0/24"]);
        let err = check(
            &live,
            &propose(&live, &rules, false),
            Ownership::default(),
            GateOptions {
                max_rules: 2,
                ..GateOptions::default()
            },
        )
        .unwrap_err();
        assert_eq!(err, GateRefusal::OverLimit { count: 3, limit: 2 });
        let many: Vec<Ipv4Net> = (0..1001u32)
            .map(|i| crate::core::cidr::net(0x1400_0000 + (i << 8), 24))
            .collect();
        let err = check(
            &live,
            &propose(&live, &many, false),
            Ownership::default(),
            GateOptions {
                max_rules: 5000,
                ..GateOptions::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err,
            GateRefusal::OverLimit {
                count: 1002,
                limit: 1000
            }
        );
    }

    #[test]
    fn a_firewall_people_filled_past_the_limit_may_lose_a_rule_of_tagfence_s_never_gain_one() {
        let live = vault(&["20.0.0.0/24", "20.0.1.0/24", "20.0.2.0/24", "52.1.2.3/32"]);
        let owned = nets(&["52.1.2.3/32"]);
        let ownership = Ownership {
            removable: &owned,
            confirmed: &owned,
            ..Ownership::default()
        };
        let options = GateOptions {
            max_rules: 2,
            prune: true,
            ..GateOptions::default()
        };
        let smaller = nets(&["20.0.0.0/24", "20.0.1.0/24", "20.0.2.0/24"]);
        check(&live, &propose(&live, &smaller, false), ownership, options).unwrap();
        let same = nets(&["20.0.0.0/24", "20.0.1.0/24", "20.0.2.0/24", "52.1.2.4/32"]);
        let err = check(&live, &propose(&live, &same, false), ownership, options).unwrap_err();
        assert_eq!(err, GateRefusal::OverLimit { count: 4, limit: 2 });
    }

    #[test]
    fn verify_compares_the_whole_firewall() {
        let live = vault(&["52.1.2.3/32"]);
        let write = check(
            &live,
            &propose(&live, &nets(&["52.1.2.3/32", "20.0.0.0/24"]), false),
            Ownership::default(),
            GateOptions::default(),
        )
        .unwrap();
        let same = vault(&["20.0.0.0/24", "52.1.2.3"]);
        assert_eq!(write.verify(&same), Ok(()));
        let mut opened = same.clone();
        opened
            .network_acls
            .as_mut()
            .unwrap()
            .insert("defaultAction".into(), json!("Allow"));
        let err = write.verify(&opened).unwrap_err();
        assert_eq!(err.fields, ["defaultAction"]);
        assert!(err.to_string().contains("defaultAction differ"), "{err}");
        let moved = vault(&["52.1.2.3/32", "52.9.9.9/32"]);
        let err = write.verify(&moved).unwrap_err();
        assert_eq!(err.to_string(), "the vault now holds 2 rules, 1 written rules missing [20.0.0.0/24] and 1 not written by this run [52.9.9.9/32]");
        let partial = read(json!({"name": "kv", "properties": {}}));
        assert!(write
            .verify(&partial)
            .unwrap_err()
            .to_string()
            .contains("lacks properties.networkAcls"));
    }
}

#[cfg(test)]
mod kind_tests {
    use super::*;

    fn nets(texts: &[&str]) -> Vec<Ipv4Net> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn storage() -> LiveAcl {
        LiveAcl::read(
            Kind::StorageAccount,
            &json!({"name": "stprod", "type": "Microsoft.Storage/storageAccounts", "location": "westeurope",
                "properties": {"networkAcls": {
                    "bypass": "AzureServices, Logging", "defaultAction": "Deny",
                    "virtualNetworkRules": [{"id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/virtualNetworks/v/subnets/a", "action": "Allow"}],
                    "resourceAccessRules": [{"tenantId": "t", "resourceId": "/subscriptions/s/providers/Microsoft.Security/datascanners/storageDataScanner"}],
                    "ipv6Rules": [],
                    "ipRules": [{"value": "52.1.2.3", "action": "Allow"}]}}}),
        )
        .unwrap()
    }

    #[test]
    fn a_storage_write_keeps_every_other_field_and_writes_single_addresses_bare() {
        let live = storage();
        assert!(live.is_whole());
        assert_eq!(live.location.as_deref(), Some("westeurope"));
        let rules = nets(&["52.1.2.3/32", "20.0.0.9/32", "20.0.1.0/24"]);
        let proposal = propose(&live, &rules, false);
        let write = check(
            &live,
            &proposal,
            Ownership::default(),
            GateOptions::default(),
        )
        .unwrap();
        let body = write.body();
        let acls = &body["properties"]["networkAcls"];
        assert_eq!(
            acls["ipRules"],
            json!([{"value": "52.1.2.3", "action": "Allow"}, {"value": "20.0.0.9", "action": "Allow"}, {"value": "20.0.1.0/24", "action": "Allow"}])
        );
        for field in [
            "bypass",
            "defaultAction",
            "virtualNetworkRules",
            "resourceAccessRules",
            "ipv6Rules",
        ] {
            assert_eq!(
                acls[field],
                live.network_acls.as_ref().unwrap()[field],
                "{field}"
            );
        }
    }

    #[test]
    fn a_31_or_a_32_range_never_goes_to_a_storage_account() {
        let live = storage();
        let mut proposal = propose(&live, &nets(&["52.1.2.3/32"]), false);
        for bad in ["20.0.0.8/31", "20.0.0.9/32"] {
            let mut sent = proposal.clone();
            sent.network_acls["ipRules"]
                .as_array_mut()
                .unwrap()
                .push(json!({"value": bad, "action": "Allow"}));
            let refusal =
                check(&live, &sent, Ownership::default(), GateOptions::default()).unwrap_err();
            assert!(
                matches!(refusal, GateRefusal::FormRefused { .. }),
                "{bad}: {refusal}"
            );
            assert!(
                refusal.to_string().starts_with(&format!(
                    "the write holds the IP rule '{bad}', which a storage account refuses"
                )),
                "{refusal}"
            );
        }
        // The limit is the kind's: 400, whatever the run allows.
        proposal = propose(
            &live,
            &(0..401u32)
                .map(|i| crate::core::cidr::net(0x1400_0000 + (i << 8), 24))
                .chain(nets(&["52.1.2.3/32"]))
                .collect::<Vec<_>>(),
            false,
        );
        let refusal = check(
            &live,
            &proposal,
            Ownership::default(),
            GateOptions {
                max_rules: 1000,
                ..GateOptions::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            refusal,
            GateRefusal::OverLimit {
                count: 402,
                limit: 400
            }
        );
    }

    #[test]
    fn a_registry_is_written_under_network_rule_set_and_refused_below_premium() {
        let doc = |sku: &str| {
            json!({"name": "crprod", "type": "Microsoft.ContainerRegistry/registries", "sku": {"name": sku},
            "properties": {"networkRuleSet": {"defaultAction": "Deny", "ipRules": [{"action": "Allow", "value": "52.1.2.3"}]}}})
        };
        let live = LiveAcl::read(Kind::ContainerRegistry, &doc("Premium")).unwrap();
        assert!(live.is_whole() && live.unsupported.is_none());
        let write = check(
            &live,
            &propose(&live, &nets(&["52.1.2.3/32", "20.0.0.9/32"]), false),
            Ownership::default(),
            GateOptions::default(),
        )
        .unwrap();
        assert_eq!(
            write.body(),
            json!({"properties": {"networkRuleSet": {"defaultAction": "Deny", "ipRules": [{"action": "Allow", "value": "52.1.2.3"}, {"action": "Allow", "value": "20.0.0.9"}]}}})
        );
        let standard = LiveAcl::read(Kind::ContainerRegistry, &doc("Standard")).unwrap();
        let refusal = check(
            &standard,
            &propose(&standard, &nets(&["52.1.2.3/32"]), false),
            Ownership::default(),
            GateOptions::default(),
        )
        .unwrap_err();
        assert_eq!(refusal.to_string(), "the registry cannot hold IP rules: its tier is Standard; IP network rules are only available on Premium registries; nothing written");
        // A document of another kind is not read as a registry.
        assert!(LiveAcl::read(Kind::ContainerRegistry, &storage_doc()).is_err());
    }

    fn storage_doc() -> Value {
        json!({"name": "stprod", "type": "Microsoft.Storage/storageAccounts", "properties": {"networkAcls": {}}})
    }

    #[test]
    fn a_partial_storage_read_names_the_storage_paths() {
        let live = LiveAcl::read(Kind::StorageAccount, &storage_doc()).unwrap();
        let refusal = check(
            &live,
            &propose(&live, &[], false),
            Ownership::default(),
            GateOptions::default(),
        )
        .unwrap_err();
        assert!(refusal.to_string().starts_with("the storage account read lacks properties.networkAcls.defaultAction and properties.networkAcls.bypass and properties.networkAcls.ipRules and properties.networkAcls.virtualNetworkRules"), "{refusal}");
    }
}
