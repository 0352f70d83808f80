//! The policy values of [`crate::Config`]: ARM's token buckets, Resource Graph's quota and how
//! its index follows the vaults, and the two UNVERIFIED behaviours of Key Vault's firewall
//! validation.
//!
//! They are plain values with no emulator imports, kept apart from `Config` (which also holds the
//! seed and therefore depends on resource paths) so that the modules that act on them — rule
//! validation in `acl`, the token buckets in `throttle`, the index in `graph_index` — depend on
//! these values only, not on the whole configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A per-subscription token bucket for one kind of ARM request.
///
/// Microsoft Learn, "Understand how Azure Resource Manager throttles requests"
/// (<https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling>),
/// documents a token bucket per subscription (and per security principal) and operation type:
/// reads 250 refilled at 25 per second, writes 200 at 10, deletes 200 at 10
/// ([`Throttle::READS`], [`Throttle::WRITES`], [`Throttle::DELETES`]). The default is the write
/// bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throttle {
    /// Bucket size: how many requests may burst before throttling starts.
    pub capacity: u32,
    /// Tokens added per second.
    pub refill_per_sec: f64,
}

impl Throttle {
    /// ARM's read bucket: 250, refilled at 25 per second (Microsoft Learn, "Understand how
    /// Azure Resource Manager throttles requests").
    pub const READS: Throttle = Throttle {
        capacity: 250,
        refill_per_sec: 25.0,
    };
    /// ARM's write bucket: 200, refilled at 10 per second (the same page).
    pub const WRITES: Throttle = Throttle {
        capacity: 200,
        refill_per_sec: 10.0,
    };
    /// ARM's delete bucket: 200, refilled at 10 per second (the same page).
    pub const DELETES: Throttle = Throttle {
        capacity: 200,
        refill_per_sec: 10.0,
    };
}

impl Default for Throttle {
    /// [`Throttle::WRITES`].
    fn default() -> Self {
        Throttle::WRITES
    }
}

/// Resource Graph's quota: at most `queries` queries per principal in every `window`.
///
/// Microsoft Learn, "Guidance for throttled requests in Azure Resource Graph"
/// (<https://learn.microsoft.com/azure/governance/resource-graph/concepts/guidance-for-throttled-requests>):
/// "a user can send at most 15 queries within every 5-second window without being throttled. The
/// quota value is determined by many factors and is subject to change." The default is that
/// example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphQuota {
    /// Queries allowed in one window.
    pub queries: u32,
    /// The window's length; it starts with the first query after the previous one ended.
    pub window: Duration,
}

impl Default for GraphQuota {
    /// 15 queries every 5 seconds.
    fn default() -> Self {
        GraphQuota {
            queries: 15,
            window: Duration::from_secs(5),
        }
    }
}

/// Which state of the vaults Resource Graph queries see.
///
/// Resource Graph is an index kept apart from the resource providers: Resource Manager notifies
/// it of changes and it "then updates its database", with a regular full scan for missed
/// notifications (Microsoft Learn, "What is Azure Resource Graph?", "How Resource Graph is kept
/// current"); it "lags behind the source of truth, typically by seconds, occasionally longer", and
/// a query right after a create "can return 404 Not Found even though the resource exists"
/// (Microsoft Learn, "Choose the right query strategy for Azure Resource Graph"). No fixed lag is
/// documented, so the default is no lag at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GraphIndex {
    /// Rows reflect the vaults as they are now.
    #[default]
    Live,
    /// Rows reflect each vault as it was this long ago: a vault created more recently is
    /// absent, one deleted more recently still present, and a change (tags, properties) shows
    /// only once it is this old.
    Lag(Duration),
    /// Rows reflect the snapshot taken at start and at each
    /// [`crate::Emulator::refresh_index`], whatever happened since.
    Manual,
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

/// How a registry's PATCH finishes: at once (the default, `None` in [`crate::Config`]) or, with
/// this value, as a long-running operation.
///
/// The Container Registry spec (`Registries_Update` in
/// `specification/containerregistry/…/stable/2025-11-01/containerregistry.json`, example
/// `RegistryUpdate.json`) documents 200 with the registry, or 201 with an `Azure-AsyncOperation`
/// header (`x-ms-long-running-operation-options: final-state-via: azure-async-operation`). With a
/// `RegistryUpdates` the emulator answers every registry PATCH that passes validation with 201,
/// the registry as stored (`provisioningState: Updating`) and that header; a GET of the header's
/// URL answers `{"status": "InProgress"}` [`RegistryUpdates::in_progress`] times, then the
/// [`RegistryUpdates::outcome`]; the registry's stored firewall changes only when the outcome
/// is `Succeeded`, at that GET. The URL's shape, `{base}/subscriptions/{sub}/providers/
/// Microsoft.ContainerRegistry/locations/{location}/operationResults/{id}?api-version=…`, is
/// the one ACR's answers carry (SEEN in public captures; UNVERIFIED in the spec, which names no
/// shape).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RegistryUpdates {
    /// GETs of the operation answered `InProgress` before the outcome.
    pub in_progress: u32,
    /// What the operation ends in.
    pub outcome: OperationOutcome,
    /// `Retry-After` in seconds on the 201 and on each `InProgress` answer; `None` sends none.
    pub retry_after: Option<u64>,
    /// The scheme and host (and port) of the header's URL instead of the emulator's own, e.g.
    /// `https://evil.example`: a client must never follow (nor send its token to) a URL off its
    /// ARM endpoint. The operation is still registered under its path, so the emulator answers
    /// it if asked on its own address.
    pub foreign_base: Option<String>,
}

/// The final status of a long-running operation (`Azure-AsyncOperation`'s `status`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum OperationOutcome {
    /// `{"status": "Succeeded"}`: the PATCH is applied then.
    #[default]
    Succeeded,
    /// `{"status": "Failed", "error": {"code", "message"}}`: nothing is applied.
    Failed {
        /// The error's code, e.g. `InternalServerError`.
        code: String,
        /// The error's message.
        message: String,
    },
    /// `{"status": "Canceled"}`: nothing is applied.
    Canceled,
}
