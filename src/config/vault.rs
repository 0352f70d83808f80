//! One validated target ([`VaultTarget`]: a firewalled resource of any kind): its selection,
//! limits (capped by its kind, [`kind_limits`]), what its writes may do ([`Safety`]), who may
//! grant on it and how far ([`GrantPolicy`]), and how it came to be managed ([`TargetSource`]).

use std::time::Duration;

use crate::azure::ResourceId;
use crate::core::desired::{Limits, Selection};
use crate::core::grant::{DEFAULT_MAX_LIVE, DEFAULT_MAX_TTL};
use crate::core::kind::Kind;

/// The limits `limits` give a firewall of `kind`: `max_rules` capped at the kind's own limit
/// ([`Kind::max_rules`]: the default, Key Vault's 1000, becomes 400 for a storage account and
/// 100 for a container registry), and `slash31` the kind's when it leaves no choice
/// ([`Kind::forced_slash31`]: a storage account always splits a /31).
pub fn kind_limits(kind: Kind, limits: &Limits) -> Limits {
    let mut limits = limits.clone();
    limits.max_rules = limits.max_rules.min(kind.max_rules());
    if let Some(forced) = kind.forced_slash31() {
        limits.slash31 = forced;
    }
    limits
}

/// The grant policy `grants` gives a firewall of `kind`: its live grants capped at the kind's
/// rule limit (each grant is one of its IP rules).
pub fn kind_grants(kind: Kind, grants: &GrantPolicy) -> GrantPolicy {
    GrantPolicy {
        max_live: grants.max_live.min(kind.max_rules()),
        ..grants.clone()
    }
}

/// One firewalled resource (a vault, storage account or container registry) to reconcile and
/// how. Its limits and grant policy are already capped by its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultTarget {
    pub id: ResourceId,
    pub selection: Selection,
    pub limits: Limits,
    pub prune: bool,
    pub safety: Safety,
    pub grants: GrantPolicy,
    pub source: TargetSource,
}

/// What a resource's writes may do beyond the safe defaults, and how far its tags may shrink.
#[derive(Debug, Clone, PartialEq)]
pub struct Safety {
    /// Claim the rules on the vault that equal desired rules (`--adopt-existing`).
    pub adopt_existing: bool,
    /// Initialise a firewall that was never configured (`--init-firewall`).
    pub init_firewall: bool,
    /// Trust a read that lacks most of tagfence's confirmed rules (`--accept-missing-rules`).
    pub accept_missing_rules: bool,
    /// The largest fraction of a selected tag's prefixes that may go between two applied
    /// documents (`--max-tag-shrink`).
    pub max_tag_shrink: f64,
    /// Tags allowed to shrink or empty anyway (`--allow-tag-shrink`).
    pub allow_tag_shrink: Vec<String>,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            adopt_existing: false,
            init_firewall: false,
            accept_missing_rules: false,
            max_tag_shrink: crate::core::plan::DEFAULT_MAX_TAG_SHRINK,
            allow_tag_shrink: Vec::new(),
        }
    }
}

/// Who may grant on the vault over HTTP, and the limits of its grants.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantPolicy {
    /// Lower-case object ids / application ids allowed to call POST /api/grant for this vault.
    pub principals: Vec<String>,
    /// The longest grant (`--grant-max-ttl`).
    pub max_ttl: Duration,
    /// The live grants the vault may hold at once (`--grant-max-per-vault`).
    pub max_live: usize,
}

impl Default for GrantPolicy {
    /// Nobody may grant over HTTP; the built-in limits.
    fn default() -> Self {
        GrantPolicy {
            principals: Vec::new(),
            max_ttl: DEFAULT_MAX_TTL,
            max_live: DEFAULT_MAX_LIVE,
        }
    }
}

/// How a target came to be managed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSource {
    /// Listed in the configuration.
    Listed,
    /// Found by its discovery tag, with this value.
    Discovered { tag: String, value: String },
}
