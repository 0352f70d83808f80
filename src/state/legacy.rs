//! Vault (resource) records of the formats before the current one, exactly as those versions wrote
//! them, and their upgrade.
//!
//! Formats 1 and 2 wrote `applied.desired` with the core's serde derive of its desired rules of
//! the time: the rules, and parallel to them an `info` list whose origins were `{"tag": N}`, a
//! position in `tags`, or `"static"`. The shapes below are frozen copies of what they wrote,
//! owned here: the core may change, these may not.
//!
//! | format | written by | upgrade to the current format |
//! |---|---|---|
//! | 1 | up to 7310dc5 | as format 2, and it claims no rule: format 1 recorded every desired rule as tagfence's own, whoever put it on the vault, so only its pending rules are kept as tagfence's ([`VaultState::migrated_from`] is set; the reconcile says so and `--adopt-existing` claims the rest) |
//! | 2 | up to 5227c2b | each origin's position becomes the name of the tag there (one that points past the tags is a corrupt document); everything else is carried over as it was |

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;
use serde::Deserialize;

use super::documents::{
    AppliedRule, AppliedRules, AppliedState, DroppedPrefixes, LastRun, RecordedOutcome,
    RecordedTag, RuleOrigin, UncheckedRules, VaultState,
};
use super::format::{cloud_name, rfc3339, VAULT_STATE_FORMAT};
use crate::core::service_tags::Cloud;

/// A vault document of format 1 or 2 (format 1 lacks the fields format 2 added; each has a
/// default).
#[derive(Deserialize)]
struct VaultStateV2 {
    vault: String,
    #[serde(default)]
    applied: Option<AppliedStateV2>,
    #[serde(default)]
    last_run: Option<LastRunV2>,
    #[serde(default)]
    owned: Vec<Ipv4Net>,
    #[serde(default)]
    pending: Vec<Ipv4Net>,
    #[serde(default)]
    pending_removal: Vec<Ipv4Net>,
    #[serde(default)]
    seen_default_action: Option<String>,
    #[serde(default)]
    seen_bypass: Option<String>,
}

#[derive(Deserialize)]
struct AppliedStateV2 {
    desired: DesiredRulesV2,
    #[serde(with = "cloud_name")]
    cloud: Cloud,
    change_number: u64,
    inputs: String,
    kept: usize,
    #[serde(with = "rfc3339")]
    applied_at: DateTime<Utc>,
    run_id: String,
}

#[derive(Deserialize)]
struct DesiredRulesV2 {
    rules: Vec<Ipv4Net>,
    info: Vec<RuleInfoV2>,
    extra_addresses: u64,
    dropped: DroppedPrefixes,
    tags: Vec<RecordedTag>,
    static_rules: Vec<Ipv4Net>,
    #[serde(default)]
    grace: Vec<RecordedTag>,
}

#[derive(Deserialize)]
struct RuleInfoV2 {
    origin: OriginV2,
    extra_addresses: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum OriginV2 {
    /// A position in `tags`.
    Tag(usize),
    Static,
}

#[derive(Deserialize)]
struct LastRunV2 {
    run_id: String,
    #[serde(with = "rfc3339")]
    at: DateTime<Utc>,
    trigger: String,
    status: RecordedOutcome,
    #[serde(default)]
    detail: Option<String>,
    change_number: u64,
    added: usize,
    removed: usize,
}

impl DesiredRulesV2 {
    fn upgrade(self) -> Result<AppliedRules, String> {
        if self.rules.len() != self.info.len() {
            return Err(format!(
                "the applied rules have {} rules but {} origins",
                self.rules.len(),
                self.info.len()
            ));
        }
        let tags = &self.tags;
        let rules = self
            .rules
            .iter()
            .zip(self.info)
            .map(|(rule, info)| {
                let origin = match info.origin {
                    OriginV2::Static => RuleOrigin::Static,
                    OriginV2::Tag(index) => RuleOrigin::Tag(
                        tags.get(index)
                            .ok_or_else(|| {
                                format!(
                                    "the applied rule {rule} comes from tag {index}, but {} tags are recorded",
                                    tags.len()
                                )
                            })?
                            .name
                            .clone(),
                    ),
                };
                Ok(AppliedRule {
                    rule: *rule,
                    origin,
                    extra_addresses: info.extra_addresses,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        AppliedRules::try_from(UncheckedRules {
            rules,
            extra_addresses: self.extra_addresses,
            dropped: self.dropped,
            tags: self.tags,
            static_rules: self.static_rules,
            grace: self.grace,
        })
    }
}

/// Reads a vault document of format `found` (1 or 2) and brings it to the current format.
///
/// # Errors
/// The reason the document is not a valid one of its format.
pub(super) fn upgrade_vault(bytes: &[u8], found: u32) -> Result<VaultState, String> {
    let old: VaultStateV2 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let applied = match old.applied {
        None => None,
        Some(applied) => Some(AppliedState {
            desired: applied.desired.upgrade()?,
            cloud: applied.cloud,
            change_number: applied.change_number,
            inputs: applied.inputs,
            kept: applied.kept,
            applied_at: applied.applied_at,
            run_id: applied.run_id,
        }),
    };
    let last_run = old.last_run.map(|run| LastRun {
        run_id: run.run_id,
        at: run.at,
        trigger: run.trigger,
        outcome: run.status,
        detail: run.detail,
        change_number: run.change_number,
        added: run.added,
        removed: run.removed,
    });
    // Format 1 cannot tell tagfence's rules from a person's: it claims none but those a write
    // of its own was adding (absent from the vault when planned).
    let (owned, migrated_from) = if found < 2 {
        (Vec::new(), Some(found))
    } else {
        (old.owned, None)
    };
    Ok(VaultState {
        format_version: VAULT_STATE_FORMAT,
        vault: old.vault,
        applied,
        last_run,
        owned,
        pending: old.pending,
        pending_removal: old.pending_removal,
        seen_default_action: old.seen_default_action,
        seen_bypass: old.seen_bypass,
        // Unknown for records of older formats: they are from runs before this version.
        written_at: None,
        grants: Vec::new(),
        migrated_from,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// A format-2 record as 5227c2b wrote it (abridged): two tags, origins by position.
    fn format_2() -> Value {
        json!({
            "format_version": 2,
            "vault": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
            "applied": {
                "desired": {
                    "rules": ["20.37.158.0/23", "40.74.28.0/23", "52.1.2.3/32"],
                    "info": [
                        {"origin": {"tag": 0}, "extra_addresses": 0},
                        {"origin": {"tag": 1}, "extra_addresses": 12},
                        {"origin": "static", "extra_addresses": 0}
                    ],
                    "extra_addresses": 12,
                    "dropped": {"ipv6": 1, "private": 0},
                    "tags": [
                        {"name": "AzureDevOps", "change_number": 7, "ipv4_prefixes": 2},
                        {"name": "AzureCloud.westeurope", "change_number": 160, "ipv4_prefixes": 3}
                    ],
                    "static_rules": ["52.1.2.3/32"]
                },
                "cloud": "Public",
                "change_number": 365,
                "inputs": "{}",
                "kept": 1,
                "applied_at": "2026-12-07T12:25:08.907Z",
                "run_id": "20261207T122508Z-2da0e51a"
            },
            "last_run": {
                "run_id": "20261207T122508Z-2da0e51a", "at": "2026-12-07T12:25:08.907Z",
                "trigger": "cli", "status": "applied", "change_number": 365, "added": 1, "removed": 0
            },
            "owned": ["20.37.158.0/23", "40.74.28.0/23"],
            "pending": ["52.1.2.3/32"],
            "seen_default_action": "Deny",
            "seen_bypass": "AzureServices"
        })
    }

    fn upgrade(doc: &Value) -> Result<VaultState, String> {
        let found = doc["format_version"].as_u64().unwrap() as u32;
        upgrade_vault(&serde_json::to_vec(doc).unwrap(), found)
    }

    #[test]
    fn a_format_2_record_names_each_origin_s_tag_and_keeps_its_ownership() {
        let upgraded = upgrade(&format_2()).unwrap();
        assert_eq!(upgraded.format_version, VAULT_STATE_FORMAT);
        assert_eq!(upgraded.migrated_from, None);
        assert!(upgraded.ownership_known());
        assert_eq!(upgraded.owned.len(), 2);
        assert_eq!(upgraded.pending.len(), 1);
        assert_eq!(upgraded.seen_default_action.as_deref(), Some("Deny"));
        let applied = upgraded.applied.unwrap();
        let origins: Vec<&RuleOrigin> = applied.desired.rules().iter().map(|r| &r.origin).collect();
        assert_eq!(
            origins,
            [
                &RuleOrigin::Tag("AzureDevOps".to_owned()),
                &RuleOrigin::Tag("AzureCloud.westeurope".to_owned()),
                &RuleOrigin::Static
            ]
        );
        assert_eq!(applied.desired.rules()[1].extra_addresses, 12);
        assert_eq!(applied.desired.dropped().ipv6, 1);
        assert_eq!(upgraded.last_run.unwrap().outcome, RecordedOutcome::Applied);
    }

    #[test]
    fn a_format_1_record_claims_nothing_but_its_pending_rules() {
        let mut doc = format_2();
        doc["format_version"] = json!(1);
        for field in ["seen_default_action", "seen_bypass"] {
            doc.as_object_mut().unwrap().remove(field);
        }
        let upgraded = upgrade(&doc).unwrap();
        assert_eq!(upgraded.migrated_from, Some(1));
        assert!(upgraded.owned.is_empty());
        assert_eq!(upgraded.owned_rules(), ["52.1.2.3/32".parse().unwrap()]);
        assert!(!upgraded.ownership_known());
        assert_eq!(upgraded.applied.unwrap().desired.len(), 3);
    }

    #[test]
    fn an_origin_past_the_tags_or_a_missing_one_is_a_corrupt_record() {
        let mut doc = format_2();
        doc["applied"]["desired"]["info"][1]["origin"] = json!({"tag": 2});
        assert_eq!(
            upgrade(&doc).unwrap_err(),
            "the applied rule 40.74.28.0/23 comes from tag 2, but 2 tags are recorded"
        );
        let mut doc = format_2();
        doc["applied"]["desired"]["info"]
            .as_array_mut()
            .unwrap()
            .pop();
        assert_eq!(
            upgrade(&doc).unwrap_err(),
            "the applied rules have 3 rules but 2 origins"
        );
        let mut doc = format_2();
        doc["last_run"]["status"] = json!("done");
        assert!(upgrade(&doc)
            .unwrap_err()
            .contains("unknown variant `done`"));
    }
}
