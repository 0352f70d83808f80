//! One validated vault target ([`VaultTarget`]): its selection, limits, what its writes may do
//! ([`Safety`]), who may grant on it and how far ([`GrantPolicy`]), and how it came to be
//! managed ([`TargetSource`]).

use std::time::Duration;

use crate::azure::VaultId;
use crate::core::desired::{Limits, Selection};
use crate::core::grant::{DEFAULT_MAX_LIVE, DEFAULT_MAX_TTL};

/// One vault to reconcile and how.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultTarget {
    pub id: VaultId,
    pub selection: Selection,
    pub limits: Limits,
    pub prune: bool,
    pub safety: Safety,
    pub grants: GrantPolicy,
    pub source: TargetSource,
}

/// What a vault's writes may do beyond the safe defaults, and how far its tags may shrink.
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
