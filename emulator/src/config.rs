//! Emulator configuration and the seed file that describes the resources it starts with.
//!
//! Everything that differs between a test and the README demo is a value here, so tests configure
//! the emulator by constructing a [`Config`] and the binary builds the same struct from its flags.
//! Behaviour the reference marks UNVERIFIED (how Key Vault treats a `/31`, and a PATCH sending back a
//! rule value it would refuse new) is a policy value rather than a hard-coded guess, so every
//! reading can be tested; those values live in `policy`, below the modules that act on them.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::paths::{Kind, ResourcePath};
use crate::policy::{
    GraphIndex, GraphQuota, OddRulePolicy, RegistryUpdates, Slash31Policy, Throttle,
};
use crate::tls::TlsIdentity;

/// Everything the emulator needs to start.
#[derive(Clone)]
pub struct Config {
    /// The resources (vaults, storage accounts, registries) the emulator starts with, and those
    /// the caller may not touch.
    pub seed: Seed,
    /// A Service Tags document in download-file format (JSON or gzip bytes); served by the
    /// Discovery API route (converted to API format) and by the download page/file routes.
    pub service_tags: Option<Vec<u8>>,
    /// The value the App Service identity endpoint requires in `X-IDENTITY-HEADER`.
    pub identity_header: String,
    /// Lifetime of issued tokens (default 3600 s).
    pub token_lifetime: Duration,
    /// The token audience ARM routes require (default `https://management.azure.com/`; accepted
    /// with or without trailing slash and with `/.default` stripped).
    pub arm_audience: String,
    /// ARM write throttling per subscription: a token bucket for PATCH and PUT (of every kind,
    /// one bucket), and another with
    /// the same limits for DELETE (ARM documents the same for both: [`Throttle::DELETES`] equals
    /// [`Throttle::WRITES`]); default [`Throttle::WRITES`]
    /// (200, refilled at 10/s: Microsoft Learn, "Understand how Azure Resource Manager throttles
    /// requests"); `None` disables both (answers then report a constant
    /// `x-ms-ratelimit-remaining-subscription-writes` or `-deletes` of 199).
    pub throttle: Option<Throttle>,
    /// ARM read throttling per subscription (GETs of vaults, storage accounts and registries,
    /// vault and resource lists, Service Tags): `Some` refuses a read that finds the bucket empty with 429
    /// `SubscriptionRequestsThrottled` and `Retry-After`; [`Throttle::READS`] is ARM's
    /// documented bucket (250, refilled at 25/s, the same page). Default `None`: reads are
    /// counted in a bucket of that size only for the `x-ms-ratelimit-remaining-subscription-reads`
    /// header, and never refused. Resource Graph queries do not spend it.
    pub read_throttle: Option<Throttle>,
    /// Which state of the vaults Resource Graph queries see: [`GraphIndex::Live`] (default, the
    /// vaults as they are), [`GraphIndex::Lag`] or [`GraphIndex::Manual`]; switch at run time
    /// with [`crate::Emulator::set_graph_index`].
    pub graph_index: GraphIndex,
    /// Resource Graph's quota per principal: default `Some(GraphQuota::default())`, 15 queries
    /// every 5 seconds (Microsoft Learn, "Guidance for throttled requests in Azure Resource
    /// Graph"); `None` never refuses a query (answers then report 14 left, resetting after
    /// `00:00:05`).
    pub graph_quota: Option<GraphQuota>,
    /// Added before answering every ARM and Resource Graph request (not the identity endpoints
    /// nor the Service Tags download page and file), as an async sleep; default zero. For
    /// benchmarks that want a network's round trip.
    pub latency: Duration,
    /// How PATCH/PUT treat a `/31` ipRule (UNVERIFIED for Key Vault): accept (default) or reject
    /// with 400.
    pub slash31: Slash31Policy,
    /// What PATCH/PUT do with an ipRule value the emulator's validation would refuse (`''`,
    /// `"'10.91.4.0/24'"`, a private range, …) — UNVERIFIED for Key Vault; by default such a value
    /// is stored as sent only when the vault already holds exactly that value.
    pub odd_rules: OddRulePolicy,
    /// Discovery API page size (`None` = one page); when `Some(n)`, responses hold `n` tags and an
    /// absolute `nextLink`. `Some(0)` is treated as `None`.
    pub service_tags_page_size: Option<usize>,
    /// Serve https too, with this certificate (default `None`: plain http only). Both schemes
    /// share the one listening port: a connection that opens with a TLS handshake is served
    /// over TLS, any other as plain http.
    pub tls: Option<TlsIdentity>,
    /// How a registry's PATCH finishes: `None` (default) at once with 200; `Some` as a
    /// long-running operation, 201 with `Azure-AsyncOperation` ([`RegistryUpdates`]). Switch at
    /// run time with [`crate::Emulator::set_registry_updates`].
    pub registry_updates: Option<RegistryUpdates>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: Seed::default(),
            service_tags: None,
            identity_header: crate::ids::random_guid(),
            token_lifetime: Duration::from_secs(3600),
            arm_audience: DEFAULT_ARM_AUDIENCE.to_owned(),
            throttle: Some(Throttle::WRITES),
            read_throttle: None,
            graph_index: GraphIndex::Live,
            graph_quota: Some(GraphQuota::default()),
            latency: Duration::ZERO,
            slash31: Slash31Policy::Accept,
            odd_rules: OddRulePolicy::KeepExisting,
            service_tags_page_size: None,
            tls: None,
            registry_updates: None,
        }
    }
}

impl fmt::Debug for Config {
    // Hand-written so a 4 MB Service Tags document does not end up in a debug log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("seed", &self.seed)
            .field(
                "service_tags",
                &self
                    .service_tags
                    .as_ref()
                    .map(|bytes| format!("{} bytes", bytes.len())),
            )
            .field("identity_header", &"<redacted>")
            .field("token_lifetime", &self.token_lifetime)
            .field("arm_audience", &self.arm_audience)
            .field("throttle", &self.throttle)
            .field("read_throttle", &self.read_throttle)
            .field("graph_index", &self.graph_index)
            .field("graph_quota", &self.graph_quota)
            .field("latency", &self.latency)
            .field("slash31", &self.slash31)
            .field("odd_rules", &self.odd_rules)
            .field("service_tags_page_size", &self.service_tags_page_size)
            .field("tls", &self.tls)
            .field("registry_updates", &self.registry_updates)
            .finish()
    }
}

/// The audience ARM tokens are issued for in the public cloud.
pub const DEFAULT_ARM_AUDIENCE: &str = "https://management.azure.com/";

/// The resources the emulator starts with: Key Vault vaults, storage accounts and container
/// registries.
///
/// File format: `{"vaults": [ <resource objects exactly as ARM GET returns them, each with "id">
/// ], "forbidden": [ "<resource id or name>" ] }`. The key is `vaults` for every kind; each
/// resource's kind is its `type` (`Microsoft.KeyVault/vaults`, `Microsoft.Storage/storageAccounts`,
/// `Microsoft.ContainerRegistry/registries`), which must agree with its id (without a `type`, the
/// id decides). Vaults and registries are stored verbatim (no normalisation), so a test can seed a
/// state ARM itself would never return; a storage account gains the `networkAcls` members Storage
/// always returns, with their defaults, and `action: Allow` on each ipRule.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Resource objects as ARM `GET` returns them, of any of the three kinds; each needs an `id`
    /// of the form `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}`
    /// (or `…/Microsoft.Storage/storageAccounts/{name}`, `…/Microsoft.ContainerRegistry/registries/{name}`).
    #[serde(default)]
    pub vaults: Vec<Value>,
    /// Resource ids (or bare names) the caller has no RBAC on: every route of the resource
    /// answers 403 `AuthorizationFailed` for them, and lists and Resource Graph leave them out.
    #[serde(default)]
    pub forbidden: Vec<String>,
    /// Management groups by name, each with the subscription ids under it (descendants
    /// included), for Resource Graph queries scoped by `managementGroups`.
    #[serde(default)]
    pub management_groups: std::collections::BTreeMap<String, Vec<String>>,
    /// Resource groups that exist besides those of `vaults`, as ids
    /// (`/subscriptions/{sub}/resourceGroups/{rg}`): a vault can be created (PUT) in any
    /// resource group that exists, and ARM answers `ResourceGroupNotFound` for any other.
    #[serde(default)]
    pub resource_groups: Vec<String>,
}

impl Seed {
    /// Parses and checks a seed file.
    ///
    /// # Errors
    ///
    /// Fails when the bytes are not JSON of the documented shape, a resource has no usable `id`
    /// (the id is authoritative for routing; `name` is kept verbatim) or a `type` other than its
    /// id's, `properties` is not an object, two resources share an id, or a forbidden entry
    /// contains `/` but is not a resource id.
    pub fn from_json(bytes: &[u8]) -> Result<Seed, SeedError> {
        let seed: Seed = serde_json::from_slice(bytes).map_err(SeedError::Json)?;
        seed.validate()?;
        Ok(seed)
    }

    /// Checks the seed and returns each resource's parsed path, in order, and the extra resource
    /// groups (as paths with an empty name).
    pub(crate) fn validate(&self) -> Result<(Vec<ResourcePath>, Vec<ResourcePath>), SeedError> {
        let mut paths: Vec<ResourcePath> = Vec::with_capacity(self.vaults.len());
        for (index, vault) in self.vaults.iter().enumerate() {
            let invalid = |reason: String| SeedError::InvalidVault { index, reason };
            let id = vault
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("it has no string \"id\"".to_owned()))?;
            let path = ResourcePath::parse_id(id).ok_or_else(|| {
                invalid(format!(
                    "\"{id}\" is not the resource id of a vault, a storage account or a container registry"
                ))
            })?;
            // The kind is the `type`'s when the resource has one, and the id must agree.
            match vault.get("type") {
                None | Some(Value::Null) => {}
                Some(Value::String(type_name)) if Kind::from_type(type_name) == Some(path.kind) => {
                }
                Some(other) => {
                    return Err(invalid(format!(
                        "its \"type\" {other} is not that of its id, '{}'",
                        path.kind.type_name()
                    )))
                }
            }
            if !vault.get("properties").is_none_or(Value::is_object) {
                return Err(invalid("its \"properties\" is not an object".to_owned()));
            }
            if paths.iter().any(|seen| seen.same_resource(&path)) {
                return Err(SeedError::DuplicateVault { id: id.to_owned() });
            }
            paths.push(path);
        }
        for entry in &self.forbidden {
            if entry.contains('/') && ResourcePath::parse_id(entry).is_none() {
                return Err(SeedError::InvalidForbidden {
                    entry: entry.clone(),
                });
            }
        }
        let groups = self
            .resource_groups
            .iter()
            .map(|entry| {
                ResourcePath::parse_group_id(entry).ok_or_else(|| SeedError::InvalidResourceGroup {
                    entry: entry.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((paths, groups))
    }
}

/// Why a seed could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The file is not JSON of the seed shape.
    #[error("parsing the seed file")]
    Json(#[source] serde_json::Error),
    /// A resource object cannot be stored.
    #[error("resource {index} in the seed is unusable: {reason}")]
    InvalidVault {
        /// Position in `vaults`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Two resources have the same resource id.
    #[error("the seed holds resource '{id}' twice")]
    DuplicateVault {
        /// The repeated id.
        id: String,
    },
    /// A `resource_groups` entry is not a resource group id.
    #[error("resource group entry '{entry}' is not a resource group id")]
    InvalidResourceGroup {
        /// The entry as written.
        entry: String,
    },
    /// A `forbidden` entry contains `/` but is not a resource id of a kind the emulator serves.
    #[error("forbidden entry '{entry}' is not a resource id")]
    InvalidForbidden {
        /// The entry as written.
        entry: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str =
        "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv-one";

    #[test]
    fn a_valid_seed_parses() {
        let seed = Seed::from_json(
            format!(r#"{{"vaults":[{{"id":"{ID}","name":"kv-one","properties":{{}}}}],"forbidden":["{ID}","kv-two"]}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(seed.vaults.len(), 1);
        assert_eq!(seed.forbidden.len(), 2);
    }

    #[test]
    fn a_vault_without_an_id_is_refused() {
        let err = Seed::from_json(br#"{"vaults":[{"name":"kv"}]}"#).unwrap_err();
        assert!(
            matches!(err, SeedError::InvalidVault { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn duplicate_ids_differing_in_case_are_refused() {
        let upper = ID.to_ascii_uppercase();
        let err = Seed::from_json(
            format!(r#"{{"vaults":[{{"id":"{ID}"}},{{"id":"{upper}"}}]}}"#).as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, SeedError::DuplicateVault { .. }), "{err}");
    }

    #[test]
    fn the_type_decides_the_kind_and_must_agree_with_the_id() {
        let storage =
            "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/st";
        let seed = Seed::from_json(
            format!(r#"{{"vaults":[{{"id":"{ID}"}},{{"id":"{storage}","type":"microsoft.storage/storageaccounts"}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(seed.vaults.len(), 2);
        let err = Seed::from_json(
            format!(r#"{{"vaults":[{{"id":"{storage}","type":"Microsoft.KeyVault/vaults"}}]}}"#)
                .as_bytes(),
        )
        .unwrap_err();
        assert!(
            matches!(err, SeedError::InvalidVault { index: 0, .. }),
            "{err}"
        );
        let err = Seed::from_json(br#"{"vaults":[{"id":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/x"}]}"#)
            .unwrap_err();
        assert!(
            matches!(err, SeedError::InvalidVault { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn resource_groups_must_be_group_ids() {
        let seed =
            Seed::from_json(br#"{"resource_groups":["/subscriptions/s/resourceGroups/rg-new"]}"#)
                .unwrap();
        assert_eq!(seed.validate().unwrap().1[0].resource_group, "rg-new");
        let err = Seed::from_json(br#"{"resource_groups":["rg-new"]}"#).unwrap_err();
        assert!(
            matches!(err, SeedError::InvalidResourceGroup { .. }),
            "{err}"
        );
    }

    #[test]
    fn unknown_top_level_keys_are_refused() {
        assert!(Seed::from_json(br#"{"vault":[]}"#).is_err());
    }

    #[test]
    fn a_forbidden_entry_that_is_a_broken_id_is_refused() {
        let err = Seed::from_json(br#"{"forbidden":["/subscriptions/x"]}"#).unwrap_err();
        assert!(matches!(err, SeedError::InvalidForbidden { .. }), "{err}");
    }

    #[test]
    fn debug_output_hides_the_identity_header_and_document() {
        let config = Config {
            service_tags: Some(vec![0; 10]),
            identity_header: "secret-value".into(),
            ..Config::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("secret-value"));
        assert!(text.contains("10 bytes"));
    }
}
