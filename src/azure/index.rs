//! The firewalls of many vaults in one Resource Graph query: how a run observes a fleet without
//! one ARM read per vault.
//!
//! Resource Graph is an index over ARM, kept up to date asynchronously: Microsoft Learn ("Choose
//! a query strategy for Azure Resource Graph",
//! https://learn.microsoft.com/azure/governance/resource-graph/choose-query-strategy) calls it
//! near real-time and eventually consistent, lagging "behind the source of truth by a brief
//! period, occasionally longer in case there are any backend disruptions". A maintainer of the
//! Azure Developer CLI gave the figure "95% of all changes present under 30 s, no upper bound"
//! (Azure/azure-dev#540; UNVERIFIED as a service promise). So an indexed firewall may only say
//! "this vault looks in sync" (nothing is written then) or "this one needs work"; every write is
//! still planned and gated from an ARM read.

use std::collections::HashMap;

use serde_json::{json, Map, Value};
use tracing::{info, warn};

use super::arm::{ArmClient, GraphScope, Resource};
use super::kinds;
use super::pipeline::AzureError;
use super::ResourceId;
use crate::core::kind::Kind;
use crate::core::live::LiveAcl;

/// How long after a write of tagfence's a vault is observed through ARM rather than Resource
/// Graph: the index may not show the write yet. Microsoft documents no bound on the index's lag
/// (above); a quarter of an hour covers the reported seconds many times over, and costs one ARM
/// read per vault written in that time.
pub const INDEX_TRUSTED_AFTER_WRITE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Subscriptions per query: Resource Graph's guidance is to group queries by subscription in
/// groups of fewer than 300 (Microsoft Learn, "Guidance for throttled requests in Azure Resource
/// Graph", "Grouping queries").
const SUBSCRIPTIONS_PER_QUERY: usize = 250;

/// The columns a row needs besides `id` and `name` to stand for its resource's firewall: its
/// type and location, its tags (a discovered resource's check), the rule set of every kind
/// (`networkAcls`, `networkRuleSet`; a column the resource lacks is `null`) and
/// `publicNetworkAccess` (its warnings). Discovery's own query projects them too, so that the
/// resources it finds need no second query.
pub const FIREWALL_COLUMNS: &str = "type, location, tags, networkAcls = properties.networkAcls, networkRuleSet = properties.networkRuleSet, publicNetworkAccess = properties.publicNetworkAccess";

/// The query: every firewall of the given kinds.
fn query(kinds: &[Kind]) -> String {
    format!(
        "resources | where {} | project id, name, {FIREWALL_COLUMNS}",
        kinds::graph_type_filter(kinds)
    )
}

/// The indexed firewalls of the vaults of some subscriptions, as Resource Graph answered.
#[derive(Debug, Default, Clone)]
pub struct FirewallIndex {
    vaults: HashMap<String, Resource>,
}

impl FirewallIndex {
    /// The vault as indexed, if the index has it.
    pub fn get(&self, id: &ResourceId) -> Option<&Resource> {
        self.vaults.get(&id.key())
    }

    /// How many vaults it holds.
    pub fn len(&self) -> usize {
        self.vaults.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.vaults.is_empty()
    }

    /// An index of the given vaults (tests, and callers that read them some other way).
    pub fn from_vaults(vaults: impl IntoIterator<Item = Resource>) -> Self {
        FirewallIndex {
            vaults: vaults.into_iter().map(|v| (v.id.key(), v)).collect(),
        }
    }

    /// An index of Resource Graph rows projecting `id`, `name` and [`FIREWALL_COLUMNS`]. A row
    /// that cannot be read is left out, with a warning, and so is a vault with two rows that
    /// disagree: such a vault is then observed through ARM.
    pub fn from_rows(rows: &[Value]) -> Self {
        let mut index = FirewallIndex::default();
        let mut unreadable = 0usize;
        // Vaults with two rows that disagree: the index cannot say which is current.
        let mut conflicting = std::collections::HashSet::new();
        for row in rows {
            match vault_of_row(row) {
                Ok(vault) => {
                    let key = vault.id.key();
                    match index.vaults.get(&key) {
                        Some(earlier) if earlier.raw != vault.raw => {
                            conflicting.insert(key);
                        }
                        _ => {
                            index.vaults.insert(key, vault);
                        }
                    }
                }
                Err(reason) => {
                    unreadable += 1;
                    if unreadable <= 5 {
                        warn!(%reason, "a Resource Graph row could not be read; its vault is read through ARM");
                    }
                }
            }
        }
        for key in &conflicting {
            index.vaults.remove(key);
        }
        if unreadable + conflicting.len() > 0 {
            info!(
                unreadable,
                conflicting = conflicting.len(),
                "Resource Graph rows left out of the index"
            );
        }
        index
    }

    /// Adds the vaults of `other` this index lacks.
    pub fn extend(&mut self, other: FirewallIndex) {
        for (key, vault) in other.vaults {
            self.vaults.entry(key).or_insert(vault);
        }
    }
}

/// Queries Resource Graph for the firewalls of every vault in `subscriptions` (all pages, in
/// groups of subscriptions); see [`FirewallIndex::from_rows`] for the rows left out.
///
/// # Errors
/// [`AzureError`] from a query.
pub async fn firewalls(
    arm: &ArmClient,
    subscriptions: &[String],
    kinds: &[Kind],
) -> Result<FirewallIndex, AzureError> {
    let mut rows = Vec::new();
    for group in subscriptions.chunks(SUBSCRIPTIONS_PER_QUERY) {
        let scope = GraphScope::Subscriptions(group.to_vec());
        rows.extend(arm.resource_graph(&scope, &query(kinds)).await?);
    }
    let index = FirewallIndex::from_rows(&rows);
    info!(
        vaults = index.len(),
        subscriptions = subscriptions.len(),
        "read the firewalls of the vaults from Resource Graph"
    );
    Ok(index)
}

/// A row of [`query`] (or discovery's) as a vault, its document shaped as ARM would answer it (only the fields
/// projected).
fn vault_of_row(row: &Value) -> Result<Resource, String> {
    let id_text = row
        .get("id")
        .and_then(Value::as_str)
        .ok_or("the row has no id")?;
    let id: ResourceId = id_text
        .parse()
        .map_err(|err| format!("'{id_text}' is not a resource id tagfence manages: {err}"))?;
    let mut properties = Map::new();
    // The row's column of the kind's own rule set only: a column of another kind's name is not
    // this resource's firewall.
    for property in [id.kind.rule_set_property(), "publicNetworkAccess"] {
        if let Some(value) = row.get(property).filter(|v| !v.is_null()) {
            properties.insert(property.to_owned(), value.clone());
        }
    }
    let raw = json!({
        "id": id_text,
        "name": row.get("name").cloned().unwrap_or(Value::Null),
        "type": id.kind.resource_type(),
        "location": row.get("location").cloned().unwrap_or(Value::Null),
        "tags": row.get("tags").cloned().unwrap_or(Value::Null),
        "properties": properties,
    });
    let acl = LiveAcl::read(id.kind, &raw)
        .map_err(|err| format!("{} {id_text}: {err}", id.kind.noun()))?;
    Ok(Resource { id, acl, raw })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str =
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-one";

    #[test]
    fn a_row_reads_as_the_vault_arm_would_answer() {
        let row = json!({"id": ID, "name": "kv-one", "tags": {"tagfence": "on"},
            "networkAcls": {"defaultAction": "Deny", "bypass": "None", "ipRules": [{"value": "20.1.2.3/32"}], "virtualNetworkRules": []},
            "publicNetworkAccess": "Enabled"});
        let vault = vault_of_row(&row).unwrap();
        assert!(vault.acl.is_whole());
        assert_eq!(vault.acl.ip_rules, vec!["20.1.2.3/32".parse().unwrap()]);
        assert_eq!(vault.tag("TAGFENCE"), Some("on"));
        assert_eq!(vault.acl.public_network_access.as_deref(), Some("Enabled"));
    }

    #[test]
    fn a_row_without_a_firewall_is_not_whole_and_a_bad_row_is_refused() {
        let vault = vault_of_row(&json!({"id": ID, "networkAcls": null})).unwrap();
        assert!(!vault.acl.is_whole());
        assert!(vault_of_row(&json!({"name": "kv"})).is_err());
        assert!(vault_of_row(&json!({"id": "/subscriptions/x/resourceGroups/rg"})).is_err());
        assert!(vault_of_row(&json!({"id": ID, "networkAcls": "Deny"})).is_err());
    }

    #[test]
    fn the_index_finds_vaults_by_id_whatever_their_case() {
        let vault = vault_of_row(&json!({"id": ID})).unwrap();
        let index = FirewallIndex::from_vaults([vault]);
        let upper: ResourceId = ID.to_ascii_uppercase().parse().unwrap();
        assert!(index.get(&upper).is_some());
    }
}
