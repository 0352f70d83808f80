//! The policy values of [`crate::Config`]: ARM's write throttle and the two UNVERIFIED behaviours
//! of Key Vault's firewall validation.
//!
//! They are plain values with no emulator imports, kept apart from `Config` (which also holds the
//! seed and therefore depends on resource paths) so that the modules that act on them — rule
//! validation in `acl`, the token buckets in `throttle` — depend on these values only, not on the
//! whole configuration.

use serde::{Deserialize, Serialize};

/// A per-subscription token bucket for ARM writes (Microsoft Learn, "Understand how Azure Resource
/// Manager throttles requests": 200 writes per subscription, refilled at 10/s).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throttle {
    /// Bucket size: how many writes may burst before throttling starts.
    pub capacity: u32,
    /// Tokens added per second.
    pub refill_per_sec: f64,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            capacity: 200,
            refill_per_sec: 10.0,
        }
    }
}

/// How PATCH/PUT treat an ipRule with a `/31` prefix, which Key Vault may or may not accept
/// (UNVERIFIED: no public source says; Azure Storage refuses them, Azure/azure-cli#7417).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Slash31Policy {
    /// Store it like any other prefix.
    #[default]
    Accept,
    /// Refuse the request with 400 `BadRequest`.
    Reject,
}

/// What PATCH/PUT do with an ipRule whose value the emulator's validation refuses (not an IPv4
/// address or prefix, IPv6, a private or reserved range, a `/31` under
/// [`Slash31Policy::Reject`]).
///
/// Such values exist on real vaults: Microsoft's own API spec examples hold `"'10.91.4.0/24'"` and
/// `""`, and older tools wrote what they were given. Whether ARM refuses a PATCH that sends such a
/// value back is UNVERIFIED, so this is a policy rather than a guess. Host bits
/// (`203.0.113.5/24`) are not an odd value: the emulator accepts and keeps them in every policy,
/// as ARM does. Bare addresses still gain `/32`; only refused values are affected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OddRulePolicy {
    /// Store a refused value as sent only when the vault already holds a rule with exactly this
    /// `value` (byte-identical: a client sending back what it read); refuse any other with 400
    /// `BadRequest`, as for a new value.
    #[default]
    KeepExisting,
    /// Refuse every such value with 400 `BadRequest`, even one the vault holds already (a vault
    /// holding one can then only be written without it).
    RejectAll,
    /// Store every rule whose value would be refused as sent, new or not (rule count limits still
    /// apply).
    AcceptAll,
}
