//! One validated vault target ([`VaultTarget`]): its selection, limits, what its writes may do
//! ([`Safety`]) and how it came to be managed ([`TargetSource`]).

use crate::azure::VaultId;
use crate::core::desired::{Limits, Selection};

/// One vault to reconcile and how.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultTarget {
    pub id: VaultId,
    pub selection: Selection,
    pub limits: Limits,
    pub prune: bool,
    pub safety: Safety,
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

/// How a target came to be managed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSource {
    /// Listed in the configuration.
    Listed,
    /// Found by its discovery tag, with this value.
    Discovered { tag: String, value: String },
}
