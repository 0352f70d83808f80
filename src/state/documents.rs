//! The documents the state holds, in their current formats, and their conversions from and to
//! the core's types.
//!
//! Every shape written here is defined here: no document embeds a core type's serde derive, so a
//! refactor of the core cannot silently change what every deployment has stored. The core's
//! values cross at the boundary ([`AppliedRules::from_desired`], [`AppliedRules::to_desired`]);
//! the reconciler maps its outcomes to [`RecordedOutcome`]. Older formats are read by
//! the sibling module `legacy`, which upgrades them to these documents.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::format::{
    cloud_name, optional_cloud_name, optional_rfc3339, rfc3339, VAULT_STATE_FORMAT,
};
use crate::azure::ResourceId;
use crate::core::desired::{DesiredRules, Dropped, Origin, RuleInfo, SelectedTag};
use crate::core::service_tags::Cloud;

/// How a vault's reconcile ended, as records spell it (`in_sync`, `applied`, `would_apply`,
/// `refused`, `skipped`, `failed`): [`LastRun::outcome`] and [`VaultRecord::outcome`], written
/// under the key `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordedOutcome {
    /// The vault already held the desired rules; nothing written.
    InSync,
    /// The rules were written and verified.
    Applied,
    /// A dry run whose plan has changes; nothing written.
    WouldApply,
    /// A guard or the safety gate refused the write; nothing written.
    Refused,
    /// A discovered vault whose tag changed or went; nothing written.
    Skipped,
    /// A call failed.
    Failed,
}

impl RecordedOutcome {
    /// Every outcome, in the order above.
    pub const ALL: [RecordedOutcome; 6] = [
        RecordedOutcome::InSync,
        RecordedOutcome::Applied,
        RecordedOutcome::WouldApply,
        RecordedOutcome::Refused,
        RecordedOutcome::Skipped,
        RecordedOutcome::Failed,
    ];

    /// The outcome as records spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordedOutcome::InSync => "in_sync",
            RecordedOutcome::Applied => "applied",
            RecordedOutcome::WouldApply => "would_apply",
            RecordedOutcome::Refused => "refused",
            RecordedOutcome::Skipped => "skipped",
            RecordedOutcome::Failed => "failed",
        }
    }
}

impl fmt::Display for RecordedOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a recorded rule comes from: a selected tag, by the name the Service Tags document
/// gives it (`{"tag": "AzureDevOps"}`), or the static rules (`"static"`). Never a position in a
/// list, which a change of the selection or of the core would silently shift.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleOrigin {
    /// The first selected tag whose addresses the rule allows.
    Tag(String),
    /// A static rule.
    Static,
}

/// One rule of an [`AppliedRules`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRule {
    /// The rule as written to the vault.
    pub rule: Ipv4Net,
    pub origin: RuleOrigin,
    /// Addresses it admits that no selected tag or static rule asked for (0 unless summarized).
    pub extra_addresses: u64,
}

/// A selected tag as it was resolved in the document the rules were computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedTag {
    /// The tag's name as the document spells it.
    pub name: String,
    pub change_number: u64,
    /// Its IPv4 prefixes as published (the tag shrink guard compares them).
    pub ipv4_prefixes: usize,
    /// Its Azure region, for a regional tag (records written before kinds have none: the
    /// same-region note of a storage account then waits for the next recomputed plan).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
}

/// Prefixes left out because Key Vault cannot hold them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedPrefixes {
    /// IPv6 prefixes.
    pub ipv6: usize,
    /// IPv4 prefixes wholly or partly in reserved ranges.
    pub private: usize,
}

/// The desired rules of an apply, as recorded: everything of the core's [`DesiredRules`] that
/// a later run reuses (when nothing they depend on moved) or guards with (the tags' prefix
/// counts), in the state's own shape.
///
/// Always consistent: the rules are sorted with no rule twice, and every tag origin names a
/// recorded tag. Reading a document that breaks either fails (it is corrupt), so
/// [`AppliedRules::to_desired`] cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedRules")]
pub struct AppliedRules {
    rules: Vec<AppliedRule>,
    extra_addresses: u64,
    dropped: DroppedPrefixes,
    tags: Vec<RecordedTag>,
    static_rules: Vec<Ipv4Net>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    grace: Vec<RecordedTag>,
}

/// An [`AppliedRules`] as read, before its consistency is checked.
#[derive(Debug, Deserialize)]
pub(super) struct UncheckedRules {
    pub(super) rules: Vec<AppliedRule>,
    pub(super) extra_addresses: u64,
    pub(super) dropped: DroppedPrefixes,
    pub(super) tags: Vec<RecordedTag>,
    pub(super) static_rules: Vec<Ipv4Net>,
    #[serde(default)]
    pub(super) grace: Vec<RecordedTag>,
}

impl TryFrom<UncheckedRules> for AppliedRules {
    type Error = String;

    fn try_from(unchecked: UncheckedRules) -> Result<Self, String> {
        if let Some(pair) = unchecked.rules.windows(2).find(|w| w[0].rule >= w[1].rule) {
            return Err(format!(
                "the applied rules are not sorted, or hold a rule twice ({} before {})",
                pair[0].rule, pair[1].rule
            ));
        }
        for rule in &unchecked.rules {
            if let RuleOrigin::Tag(name) = &rule.origin {
                if !unchecked.tags.iter().any(|t| &t.name == name) {
                    return Err(format!(
                        "the applied rule {} comes from tag '{name}', which is not among the recorded tags",
                        rule.rule
                    ));
                }
            }
        }
        Ok(AppliedRules {
            rules: unchecked.rules,
            extra_addresses: unchecked.extra_addresses,
            dropped: unchecked.dropped,
            tags: unchecked.tags,
            static_rules: unchecked.static_rules,
            grace: unchecked.grace,
        })
    }
}

fn recorded_tag(tag: &SelectedTag) -> RecordedTag {
    RecordedTag {
        name: tag.name.clone(),
        change_number: tag.change_number,
        ipv4_prefixes: tag.ipv4_prefixes,
        region: tag.region.clone(),
    }
}

fn selected_tag(tag: &RecordedTag) -> SelectedTag {
    SelectedTag {
        name: tag.name.clone(),
        change_number: tag.change_number,
        ipv4_prefixes: tag.ipv4_prefixes,
        region: tag.region.clone(),
    }
}

impl AppliedRules {
    /// The record of desired rules the core computed.
    ///
    /// # Panics
    /// When a rule's origin is not an index into `desired.tags`. The core attributes a rule to
    /// a position in the very list it returns (`core::desired::rule_info`), and the plan's
    /// rendering relies on the same, so a desired set that breaks it is a bug of the core.
    pub fn from_desired(desired: &DesiredRules) -> Self {
        let mut rules: Vec<AppliedRule> = desired
            .rules
            .iter()
            .zip(&desired.info)
            .map(|(rule, info)| AppliedRule {
                rule: *rule,
                origin: match info.origin {
                    Origin::Static => RuleOrigin::Static,
                    Origin::Tag(index) => RuleOrigin::Tag(
                        desired
                            .tags
                            .get(index)
                            .expect("a desired rule's origin indexes its own tags")
                            .name
                            .clone(),
                    ),
                },
                extra_addresses: info.extra_addresses,
            })
            .collect();
        // The core keeps them sorted and unique; the record must be, whatever it is handed.
        rules.sort_by_key(|r| r.rule);
        rules.dedup_by_key(|r| r.rule);
        AppliedRules {
            rules,
            extra_addresses: desired.extra_addresses,
            dropped: DroppedPrefixes {
                ipv6: desired.dropped.ipv6,
                private: desired.dropped.private,
            },
            tags: desired.tags.iter().map(recorded_tag).collect(),
            static_rules: desired.static_rules.clone(),
            grace: desired.grace.iter().map(recorded_tag).collect(),
        }
    }

    /// The core's desired rules again, for the plan's reuse and the tag shrink guard: each tag
    /// origin points at the first recorded tag of its name.
    pub fn to_desired(&self) -> DesiredRules {
        let info = self
            .rules
            .iter()
            .map(|r| RuleInfo {
                origin: match &r.origin {
                    RuleOrigin::Static => Origin::Static,
                    RuleOrigin::Tag(name) => Origin::Tag(
                        self.tags
                            .iter()
                            .position(|t| &t.name == name)
                            // Checked whenever an `AppliedRules` is made (`try_from`), and
                            // `from_desired` names only tags it records.
                            .expect("a recorded origin names a recorded tag"),
                    ),
                },
                extra_addresses: r.extra_addresses,
            })
            .collect();
        DesiredRules {
            rules: self.rules.iter().map(|r| r.rule).collect(),
            info,
            extra_addresses: self.extra_addresses,
            dropped: Dropped {
                ipv6: self.dropped.ipv6,
                private: self.dropped.private,
            },
            tags: self.tags.iter().map(selected_tag).collect(),
            static_rules: self.static_rules.clone(),
            grace: self.grace.iter().map(selected_tag).collect(),
        }
    }

    /// The rules with their origins, in address order.
    pub fn rules(&self) -> &[AppliedRule] {
        &self.rules
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The recorded rule equal to `rule`, if any.
    pub fn get(&self, rule: &Ipv4Net) -> Option<&AppliedRule> {
        self.rules
            .binary_search_by_key(rule, |r| r.rule)
            .ok()
            .map(|i| &self.rules[i])
    }

    /// Addresses the rules admit beyond the selection (0 unless summarized).
    pub fn extra_addresses(&self) -> u64 {
        self.extra_addresses
    }

    /// Prefixes left out (IPv6, reserved ranges).
    pub fn dropped(&self) -> DroppedPrefixes {
        self.dropped
    }

    /// The selected tags, in selection order.
    pub fn tags(&self) -> &[RecordedTag] {
        &self.tags
    }

    /// The static rules, collapsed.
    pub fn static_rules(&self) -> &[Ipv4Net] {
        &self.static_rules
    }

    /// The previous versions of selected tags kept in the grace window.
    pub fn grace(&self) -> &[RecordedTag] {
        &self.grace
    }
}

/// The rules tagfence applied to a vault and verified, with what they were computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedState {
    /// The desired rules as computed, written and verified (which of them are tagfence's own
    /// is [`VaultState::owned`]).
    pub desired: AppliedRules,
    #[serde(with = "cloud_name")]
    pub cloud: Cloud,
    /// The document's change number.
    pub change_number: u64,
    /// What the desired rules were computed from (settings and tag change numbers), as the
    /// core's `inputs_key` wrote it; equal inputs give equal rules, which the next run reuses
    /// instead of re-planning. Only ever compared whole: a core that writes it differently
    /// costs one recomputation, never a misread.
    pub inputs: String,
    /// Unmanaged rules kept at the time (a summarized fit depends on the room they left).
    pub kept: usize,
    /// When the rules were written, or last found in place.
    #[serde(with = "rfc3339")]
    pub applied_at: DateTime<Utc>,
    pub run_id: String,
}

/// The last run's outcome for a vault, for `tagfence status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    pub run_id: String,
    #[serde(with = "rfc3339")]
    pub at: DateTime<Utc>,
    /// `timer`, `http`, `eventgrid` or `cli`.
    pub trigger: String,
    #[serde(rename = "status")]
    pub outcome: RecordedOutcome,
    /// The reason or error of a vault refused, skipped or failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    pub change_number: u64,
    pub added: usize,
    pub removed: usize,
}

/// Everything remembered about one vault (`vaults/{subscription}/{group}/{vault}.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaultState {
    pub format_version: u32,
    pub vault: String,
    #[serde(default)]
    pub applied: Option<AppliedState>,
    #[serde(default)]
    pub last_run: Option<LastRun>,
    /// The rules tagfence added to the vault itself (or adopted explicitly), confirmed there by
    /// a verified write or a later read; sorted. Only these are ever removed without `--prune`.
    /// A rule that was on the vault before tagfence first wanted it stays the person's, even
    /// when it equals a desired rule.
    #[serde(default)]
    pub owned: Vec<Ipv4Net>,
    /// Rules a write is adding whose outcome is not yet known: recorded before the `PATCH`,
    /// cleared once the write is verified. A crash between the two leaves them here, so the
    /// next run still knows tagfence added them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Ipv4Net>,
    /// Rules of tagfence's that a write is removing whose outcome is not yet known: recorded
    /// before the `PATCH` like `pending`, so that a read missing them after a crash or a lost
    /// answer is not taken for a suspicious one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_removal: Vec<Ipv4Net>,
    /// The firewall's `defaultAction` as last read, so that initialising a firewall never
    /// invents `Allow` over a vault tagfence has seen `Deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_default_action: Option<String>,
    /// The firewall's `bypass` as last read: a read that shows it opened (from `None`) is not
    /// written from on first sight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_bypass: Option<String>,
    /// When a write of tagfence's last may have reached the vault: until Resource Graph's index
    /// has surely caught up with it, the vault is observed through ARM. Added within format 3
    /// (absent in records written before; readers of format 3 ignore fields they do not know).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_rfc3339"
    )]
    pub written_at: Option<DateTime<Utc>>,
    /// The vault's just-in-time grants (format 4): live ones, and ended ones whose rule is not
    /// known to be gone yet. At most one per address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantRecord>,
    /// Set when this record was read from an older format whose ownership could not be
    /// carried over (format 1; never written).
    #[serde(skip)]
    pub migrated_from: Option<u32>,
}

impl VaultState {
    pub fn new(vault: &ResourceId) -> Self {
        VaultState {
            format_version: VAULT_STATE_FORMAT,
            vault: vault.to_string(),
            applied: None,
            last_run: None,
            owned: Vec::new(),
            pending: Vec::new(),
            pending_removal: Vec::new(),
            seen_default_action: None,
            seen_bypass: None,
            written_at: None,
            grants: Vec::new(),
            migrated_from: None,
        }
    }

    /// The rules tagfence may remove: the ones it added and confirmed, and any pending write's.
    pub fn owned_rules(&self) -> Vec<Ipv4Net> {
        let mut owned: Vec<Ipv4Net> = self
            .owned
            .iter()
            .chain(self.pending.iter())
            .copied()
            .collect();
        owned.sort_unstable();
        owned.dedup();
        owned
    }

    /// The rules tagfence added and confirmed, as far as a read showing `on_vault` can be held
    /// to them: a read missing many of these contradicts the state. A rule whose removal is
    /// pending is excused when the read lacks it (that removal may have landed), but one the
    /// read still shows counts as ever: left out, the rules a person removed would be the whole
    /// of what is confirmed once a plan removing the rest is recorded, and the read before that
    /// write refused as suspicious.
    pub fn confirmed_rules(&self, on_vault: &[Ipv4Net]) -> Vec<Ipv4Net> {
        self.owned
            .iter()
            .filter(|r| !self.pending_removal.contains(r) || on_vault.contains(r))
            .copied()
            .collect()
    }

    /// Whether tagfence knows what it added to this vault (it has reconciled it before, in a
    /// format that records it).
    pub fn ownership_known(&self) -> bool {
        self.migrated_from.is_none()
            && (self.applied.is_some() || !self.owned.is_empty() || !self.pending.is_empty())
    }
}

/// One just-in-time grant: `address/32` on a vault until `expires_at` (or until revoked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// Unique among all grants; `DELETE /api/grant/<id>` names it.
    pub id: String,
    /// The vault's ARM id.
    pub vault: String,
    pub address: Ipv4Addr,
    #[serde(with = "rfc3339")]
    pub granted_at: DateTime<Utc>,
    /// Extended by a second grant for the same address.
    #[serde(with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
    /// Who asked (`cli:<label>`, or `entra:<object id> app <app id> (<name>)`).
    pub requested_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The run that recorded it (or last extended it).
    pub run_id: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_rfc3339"
    )]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    /// Whether a verified write or read showed its rule on the vault.
    #[serde(default)]
    pub placed: bool,
    /// Why the last attempt to remove its rule after it ended failed; the sweep retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal_error: Option<String>,
}

impl GrantRecord {
    /// The rule it writes.
    pub fn rule(&self) -> Ipv4Net {
        Ipv4Net::new(self.address, 32).expect("32 is a valid IPv4 prefix length")
    }

    /// Whether it is live at `now`: not revoked, and not expired.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }

    /// Whether it is live at `now` and could have been made by a policy whose longest grant
    /// is `max_ttl`: expiring no later than `max_ttl` from now, for a public address. A record
    /// is a document anyone who can write the state could edit; a grant no policy could have
    /// made counts as ended, so its rule never outlives what a grant may.
    pub fn is_live_within(&self, now: DateTime<Utc>, max_ttl: std::time::Duration) -> bool {
        let latest = chrono::Duration::from_std(max_ttl).map_or(now, |max| now + max);
        self.is_live(now)
            && self.expires_at <= latest
            && crate::core::grant::grant_rule(self.address.into()).is_ok()
    }

    /// When it ends: its expiry, or its revocation if earlier.
    pub fn ends_at(&self) -> DateTime<Utc> {
        self.revoked_at
            .map_or(self.expires_at, |r| r.min(self.expires_at))
    }
}

/// The vaults that hold grants (`grants/index.json`), so that the sweep finds them without
/// reading every vault's record: a vault is added, under its lock, before its first grant is
/// recorded, and removed, under its lock, once its record holds none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantsIndex {
    pub format_version: u32,
    /// Resource ARM id → the grant ids recorded for it (to find a vault by grant id).
    #[serde(default)]
    pub vaults: BTreeMap<String, Vec<String>>,
}

/// Where the previous version of a tag can be found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousVersion {
    /// The tag's own change number then.
    pub change_number: u64,
    /// The document (its change number) that holds that version, in the snapshot archive.
    pub document: u64,
}

/// When a tag last changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagHistory {
    pub change_number: u64,
    /// When this change number was first seen.
    #[serde(with = "rfc3339")]
    pub since: DateTime<Utc>,
    /// The newest document seen holding this version (archived, for the grace window).
    pub seen_in: u64,
    /// The version it replaced, if seen.
    #[serde(default)]
    pub previous: Option<PreviousVersion>,
}

/// What is remembered about a cloud's Service Tags (`sources/{cloud}.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    pub format_version: u32,
    #[serde(with = "cloud_name")]
    pub cloud: Cloud,
    /// The newest document applied.
    pub change_number: u64,
    #[serde(with = "rfc3339")]
    pub applied_at: DateTime<Utc>,
    /// The selected tags, by name.
    #[serde(default)]
    pub tags: BTreeMap<String, TagHistory>,
}

/// One vault in a run record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaultRecord {
    pub vault: String,
    /// The firewall's kind (`key_vault`, `storage_account`, `container_registry`); records
    /// written before kinds have none and are Key Vaults (the id says so too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(rename = "status")]
    pub outcome: RecordedOutcome,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    pub wrote: bool,
    /// Whether the desired rules were reused from the last apply (inputs unchanged).
    pub reused_plan: bool,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
    pub unmanaged: Vec<String>,
    pub extra_addresses: u64,
    /// Ranges kept from the previous version of a tag inside the grace window.
    #[serde(default)]
    pub grace_tags: Vec<String>,
    pub elapsed_ms: u64,
    pub warnings: Vec<String>,
}

/// One run, as recorded (`runs/{date}/{run id}.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub format_version: u32,
    pub run_id: String,
    /// `timer`, `http`, `eventgrid` or `cli`.
    pub trigger: String,
    #[serde(with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub finished_at: DateTime<Utc>,
    pub elapsed_ms: u64,
    pub dry_run: bool,
    #[serde(with = "optional_cloud_name", default)]
    pub cloud: Option<Cloud>,
    pub change_number: Option<u64>,
    pub origin: Option<String>,
    /// Per selected tag: its change number in the document used.
    #[serde(default)]
    pub tag_change_numbers: BTreeMap<String, u64>,
    pub vaults: Vec<VaultRecord>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// The grants and revokes of the run, one line each (added within format 1: absent when
    /// none, so every earlier record reads and writes back as it was).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::desired::{desired_rules, GraceTag, Limits, Selection};
    use crate::core::service_tags::ServiceTags;

    const DOC: &str = r#"{"changeNumber": 365, "cloud": "Public", "values": [
      {"name": "AzureDevOps", "id": "AzureDevOps", "properties": {"changeNumber": 7, "region": "", "systemService": "AzureDevOps",
        "addressPrefixes": ["20.37.158.0/23", "20.37.194.0/24", "2603:1030:a07:15::3d2/127"]}},
      {"name": "AzureCloud.westeurope", "id": "AzureCloud.westeurope", "properties": {"changeNumber": 160, "region": "westeurope", "systemService": "",
        "addressPrefixes": ["20.37.158.0/24", "20.37.160.0/22", "10.1.0.0/16", "40.74.28.0/23"]}}
    ]}"#;

    fn nets(texts: &[&str]) -> Vec<Ipv4Net> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn a_rule_pending_removal_is_excused_only_when_the_read_lacks_it() {
        let mut record = VaultState::new(
            &"/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/kv-one"
                .parse()
                .unwrap(),
        );
        record.owned = nets(&["20.1.0.0/24", "20.2.0.0/24", "20.3.0.0/24"]);
        record.pending_removal = nets(&["20.2.0.0/24", "20.3.0.0/24"]);
        // 20.3 still on the vault: confirmed; 20.2 gone (its removal may have landed): excused.
        let on_vault = nets(&["20.1.0.0/24", "20.3.0.0/24"]);
        assert_eq!(
            record.confirmed_rules(&on_vault),
            nets(&["20.1.0.0/24", "20.3.0.0/24"])
        );
        assert_eq!(record.confirmed_rules(&[]), nets(&["20.1.0.0/24"]));
    }

    /// Desired rules as the core computes them: two tags (the second's origin is position 1),
    /// a static rule, a grace tag and dropped prefixes.
    fn desired() -> DesiredRules {
        let doc = ServiceTags::parse(DOC.as_bytes()).unwrap();
        let selection = Selection {
            tags: vec!["AzureDevOps".to_owned(), "AzureCloud.westeurope".to_owned()],
            static_rules: nets(&["52.1.2.3/32"]),
            grace: vec![GraceTag {
                tag: "AzureCloud.westeurope".to_owned(),
                change_number: 159,
                prefixes: nets(&["51.0.0.0/24"]),
            }],
        };
        desired_rules(&doc, &selection, &Limits::default(), 0).unwrap()
    }

    #[test]
    fn applied_rules_carry_origins_by_tag_name_and_give_the_core_s_rules_back() {
        let desired = desired();
        assert!(desired.info.iter().any(|i| i.origin == Origin::Tag(1)));
        let applied = AppliedRules::from_desired(&desired);
        assert_eq!(applied.to_desired(), desired);
        let west: Ipv4Net = "40.74.28.0/23".parse().unwrap();
        assert_eq!(
            applied.get(&west).unwrap().origin,
            RuleOrigin::Tag("AzureCloud.westeurope".to_owned())
        );
        let agent: Ipv4Net = "52.1.2.3/32".parse().unwrap();
        assert_eq!(applied.get(&agent).unwrap().origin, RuleOrigin::Static);
        assert_eq!(applied.grace()[0].change_number, 159);
        assert_eq!(applied.dropped().ipv6, 1);

        // On disk: one object per rule, the origin by name.
        let json = serde_json::to_value(&applied).unwrap();
        let rule = json["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == "40.74.28.0/23")
            .unwrap();
        assert_eq!(
            rule,
            &serde_json::json!({"rule": "40.74.28.0/23", "origin": {"tag": "AzureCloud.westeurope"}, "extra_addresses": 0})
        );
        assert!(json["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["origin"] == "static"));
        let back: AppliedRules = serde_json::from_value(json).unwrap();
        assert_eq!(back, applied);
    }

    #[test]
    fn the_origin_survives_a_change_of_the_tags_order() {
        // Two tags of one name keep pointing at the first (the core's own attribution).
        let mut desired = desired();
        let first = AppliedRules::from_desired(&desired);
        desired.tags.reverse();
        for info in &mut desired.info {
            if let Origin::Tag(i) = &mut info.origin {
                *i = 1 - *i;
            }
        }
        let reordered = AppliedRules::from_desired(&desired);
        assert_eq!(reordered.rules(), first.rules());
    }

    #[test]
    fn applied_rules_that_name_an_unknown_tag_or_are_out_of_order_are_not_read() {
        let json = serde_json::to_value(AppliedRules::from_desired(&desired())).unwrap();
        let mut unknown = json.clone();
        unknown["rules"][0]["origin"] = serde_json::json!({"tag": "AzureFrontDoor.Backend"});
        let err = serde_json::from_value::<AppliedRules>(unknown)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "comes from tag 'AzureFrontDoor.Backend', which is not among the recorded tags"
            ),
            "{err}"
        );
        let mut unsorted = json.clone();
        unsorted["rules"].as_array_mut().unwrap().reverse();
        let err = serde_json::from_value::<AppliedRules>(unsorted)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not sorted"), "{err}");
        let mut twice = json;
        let first = twice["rules"][0].clone();
        twice["rules"].as_array_mut().unwrap().insert(0, first);
        assert!(serde_json::from_value::<AppliedRules>(twice).is_err());
    }

    #[test]
    fn outcomes_are_spelled_as_records_always_spelled_them() {
        let spelled: Vec<String> = RecordedOutcome::ALL
            .iter()
            .map(|o| {
                serde_json::to_value(o)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            spelled,
            [
                "in_sync",
                "applied",
                "would_apply",
                "refused",
                "skipped",
                "failed"
            ]
        );
        for outcome in RecordedOutcome::ALL {
            assert_eq!(outcome.to_string(), outcome.as_str());
            let back: RecordedOutcome =
                serde_json::from_value(serde_json::json!(outcome.as_str())).unwrap();
            assert_eq!(back, outcome);
        }
        assert!(serde_json::from_value::<RecordedOutcome>(serde_json::json!("done")).is_err());
    }

    #[test]
    fn timestamps_and_clouds_are_written_as_before() {
        let text = r#"{"format_version":1,"cloud":"AzureGovernment","change_number":7,"applied_at":"2026-12-07T12:25:08.907Z","tags":{"AzureDevOps":{"change_number":7,"since":"2026-12-07T12:25:08.000Z","seen_in":7,"previous":null}}}"#;
        let source: SourceState = serde_json::from_str(text).unwrap();
        assert_eq!(source.cloud, Cloud::AzureGovernment);
        assert_eq!(
            source.applied_at,
            super::super::parse_timestamp("2026-12-07T12:25:08.907Z").unwrap()
        );
        assert_eq!(serde_json::to_string(&source).unwrap(), text);

        // Finer than a millisecond is cut on writing; `stored_time` cuts it before.
        let at = super::super::parse_timestamp("2026-12-07T12:25:08.907654321Z").unwrap();
        let history = TagHistory {
            change_number: 1,
            since: at,
            seen_in: 1,
            previous: None,
        };
        let json = serde_json::to_value(&history).unwrap();
        assert_eq!(json["since"], "2026-12-07T12:25:08.907Z");
        let back: TagHistory = serde_json::from_value(json).unwrap();
        assert_ne!(back.since, at);
        assert_eq!(back.since, super::super::stored_time(at));

        // Any RFC 3339 timestamp is read; anything else is not.
        let run: LastRun = serde_json::from_value(serde_json::json!({
            "run_id": "r", "at": "2026-12-01T01:00:00+01:00", "trigger": "timer",
            "status": "skipped", "change_number": 1, "added": 0, "removed": 0}))
        .unwrap();
        assert_eq!(super::super::timestamp(run.at), "2026-12-01T00:00:00.000Z");
        assert_eq!(run.outcome, RecordedOutcome::Skipped);
        let err = serde_json::from_value::<LastRun>(serde_json::json!({
            "run_id": "r", "at": "yesterday", "trigger": "timer",
            "status": "skipped", "change_number": 1, "added": 0, "removed": 0}))
        .unwrap_err();
        assert!(err
            .to_string()
            .contains("'yesterday' is not an RFC 3339 timestamp"));
        let err = serde_json::from_str::<SourceState>(
            r#"{"format_version":1,"cloud":"Mars","change_number":7,"applied_at":"2026-12-07T12:25:08.907Z"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown cloud 'Mars'"), "{err}");
    }

    #[test]
    fn a_run_record_without_a_cloud_reads_and_writes_null() {
        let record = RunRecord {
            format_version: 1,
            run_id: "r".to_owned(),
            trigger: "cli".to_owned(),
            started_at: super::super::stored_time(Utc::now()),
            finished_at: super::super::stored_time(Utc::now()),
            elapsed_ms: 1,
            dry_run: false,
            cloud: None,
            change_number: None,
            origin: None,
            tag_change_numbers: BTreeMap::new(),
            vaults: Vec::new(),
            warnings: Vec::new(),
            error: Some("no document".to_owned()),
            grants: Vec::new(),
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["cloud"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<RunRecord>(json).unwrap(), record);
        let mut missing = serde_json::to_value(&record).unwrap();
        missing.as_object_mut().unwrap().remove("cloud");
        assert_eq!(
            serde_json::from_value::<RunRecord>(missing).unwrap().cloud,
            None
        );
    }
}
