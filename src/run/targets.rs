//! Which vaults a run covers: the listed ones and, with discovery, the tagged ones found with
//! Resource Graph, or read through ARM when a write event names one the index does not know yet.

use serde_json::Value;
use tracing::{info, warn};

use super::error::RunError;
use super::request::RunRequest;
use crate::azure::arm::{ArmClient, GraphScope};
use crate::azure::index::{FirewallIndex, FIREWALL_COLUMNS};
use crate::azure::{kinds, ResourceId};
use crate::config::{Config, Discovery, VaultTarget};
use crate::core::kind::Kind;

/// The vaults of a run.
#[derive(Debug, Clone)]
pub struct Targets {
    pub targets: Vec<VaultTarget>,
    /// Discovered vaults whose tag value is invalid, with the reason: reported as refused.
    pub invalid: Vec<(ResourceId, String)>,
    /// The firewalls of the discovered vaults, from discovery's own query: a run observing
    /// through Resource Graph asks again only for the vaults this lacks.
    pub indexed: FirewallIndex,
}

/// Resolves a run's targets from the configuration, asking Resource Graph and ARM where
/// discovery needs them.
pub struct Resolver<'a> {
    pub config: &'a Config,
    pub arm: &'a ArmClient,
}

/// A vault named by id that discovery had not found: a target, or tagged with an invalid value.
enum Onboarded {
    Target(Box<VaultTarget>),
    Invalid(ResourceId, String),
}

impl Resolver<'_> {
    /// The listed targets a request names, without discovery (to check a request before any
    /// call is made).
    ///
    /// # Errors
    /// [`RunError::NoVaults`] or [`RunError::UnknownVault`].
    pub fn targets(&self, request: &RunRequest) -> Result<Vec<VaultTarget>, RunError> {
        if self.config.targets.is_empty() {
            return Err(RunError::NoVaults);
        }
        match &request.only {
            None => Ok(self.config.targets.clone()),
            Some(names) => names
                .iter()
                .map(|name| {
                    self.config
                        .find_target(name)
                        .cloned()
                        .ok_or_else(|| RunError::UnknownVault(name.clone()))
                })
                .collect(),
        }
    }

    /// Whether `vault` is one of the listed vaults.
    pub fn manages(&self, vault: &ResourceId) -> bool {
        self.config.targets.iter().any(|t| t.id.same_as(vault))
    }

    /// The kinds discovery and the Event Grid hook consider (the `kinds` setting).
    pub fn discovery_kinds(&self) -> Vec<Kind> {
        self.config.kinds.clone()
    }

    /// Whether vaults are also discovered by their tag.
    pub fn discovers(&self) -> bool {
        self.config.discovery.is_some()
    }

    /// The targets of a run: the listed vaults and, with discovery, the tagged ones (Resource
    /// Graph); a vault named by id that Resource Graph does not know yet (it lags) is read
    /// through ARM and taken when it carries the tag and lies in a discovery scope.
    ///
    /// # Errors
    /// [`RunError::NoVaults`], [`RunError::UnknownVault`], [`RunError::NotManaged`], or
    /// [`RunError::Discovery`] when Resource Graph or ARM cannot be asked.
    pub async fn resolve(&self, request: &RunRequest) -> Result<Targets, RunError> {
        let Some(discovery) = &self.config.discovery else {
            return Ok(Targets {
                targets: self.targets(request)?,
                invalid: Vec::new(),
                indexed: FirewallIndex::default(),
            });
        };
        let listed = &self.config.targets;
        let Some(names) = &request.only else {
            let mut all = Targets {
                targets: listed.clone(),
                invalid: Vec::new(),
                indexed: FirewallIndex::default(),
            };
            self.add_discovered(discovery, &mut all).await?;
            return Ok(all);
        };
        // Named vaults: a listed one is taken as listed; one named by id is read through ARM
        // (one GET, not a Resource Graph query per Event Grid event); only a bare name needs
        // the whole discovery, done at most once.
        let mut discovered: Option<Targets> = None;
        let mut chosen = Targets {
            targets: Vec::new(),
            invalid: Vec::new(),
            indexed: FirewallIndex::default(),
        };
        for name in names {
            if let Some(target) = self.config.find_target(name) {
                chosen.targets.push(target.clone());
            } else if let Ok(id) = name.parse::<ResourceId>() {
                match self.onboard(discovery, id).await? {
                    Onboarded::Target(target) => chosen.targets.push(*target),
                    Onboarded::Invalid(id, reason) => chosen.invalid.push((id, reason)),
                }
            } else {
                if discovered.is_none() {
                    let mut found = Targets {
                        targets: Vec::new(),
                        invalid: Vec::new(),
                        indexed: FirewallIndex::default(),
                    };
                    self.add_discovered(discovery, &mut found).await?;
                    discovered = Some(found);
                }
                let found = discovered.as_ref().expect("set above");
                let named = |id: &ResourceId| id.name.eq_ignore_ascii_case(name.trim());
                if let Some(target) = found.targets.iter().find(|t| named(&t.id)) {
                    chosen.targets.push(target.clone());
                } else if let Some(invalid) = found.invalid.iter().find(|(id, _)| named(id)) {
                    chosen.invalid.push(invalid.clone());
                } else {
                    return Err(RunError::UnknownVault(name.clone()));
                }
            }
        }
        Ok(chosen)
    }

    /// Adds the discovered vaults that are not listed to `targets` (invalid tag values to its
    /// `invalid`).
    async fn add_discovered(
        &self,
        discovery: &Discovery,
        targets: &mut Targets,
    ) -> Result<(), RunError> {
        let (found, indexed) = self.discover(discovery).await?;
        targets.indexed.extend(indexed);
        for (id, value) in found {
            if self.config.targets.iter().any(|t| t.id.same_as(&id)) {
                continue;
            }
            match self.config.discovered_target(id.clone(), &value) {
                Ok(target) => targets.targets.push(target),
                Err(err) => targets.invalid.push((id, err.to_string())),
            }
        }
        Ok(())
    }

    /// Every vault carrying the discovery tag in the discovery scopes, with the tag's value,
    /// and their firewalls as indexed.
    async fn discover(
        &self,
        discovery: &Discovery,
    ) -> Result<(Vec<(ResourceId, String)>, FirewallIndex), RunError> {
        let tag = &discovery.tag;
        // Every enabled kind in one query: one pass over the index finds them all.
        let kinds = self.discovery_kinds();
        let query = format!(
            "resources | where {} | where isnotempty(tags['{tag}']) | project id, name, subscriptionId, value = tostring(tags['{tag}']), {FIREWALL_COLUMNS}",
            kinds::graph_type_filter(&kinds)
        );
        let mut scopes = Vec::new();
        if !discovery.subscriptions.is_empty() {
            scopes.push(GraphScope::Subscriptions(discovery.subscriptions.clone()));
        }
        if !discovery.management_groups.is_empty() {
            scopes.push(GraphScope::ManagementGroups(
                discovery.management_groups.clone(),
            ));
        }
        let mut found: Vec<(ResourceId, String)> = Vec::new();
        let mut indexed = FirewallIndex::default();
        for scope in &scopes {
            let rows = self
                .arm
                .resource_graph(scope, &query)
                .await
                .map_err(|err| RunError::Discovery(err.to_string()))?;
            indexed.extend(FirewallIndex::from_rows(&rows));
            for row in rows {
                let id = row.get("id").and_then(Value::as_str).unwrap_or_default();
                let Ok(vault) = id.parse::<ResourceId>() else {
                    warn!(
                        id,
                        "Resource Graph returned a row that is not the id of a resource tagfence manages; ignored"
                    );
                    continue;
                };
                // The query asked for the enabled kinds only; a row of another kind (an index
                // answering more than it was asked) is not managed.
                if !kinds.contains(&vault.kind) {
                    warn!(
                        id,
                        kind = %vault.kind,
                        "Resource Graph returned a resource of a kind the setting kinds does not enable; ignored"
                    );
                    continue;
                }
                if found.iter().any(|(known, _)| known.same_as(&vault)) {
                    continue;
                }
                let value = row
                    .get("value")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                found.push((vault, value));
            }
        }
        let count = |kind: Kind| found.iter().filter(|(id, _)| id.kind == kind).count();
        info!(
            resources = found.len(),
            vaults = count(Kind::KeyVault),
            storage_accounts = count(Kind::StorageAccount),
            registries = count(Kind::ContainerRegistry),
            tag = %tag,
            "discovered tagged resources"
        );
        Ok((found, indexed))
    }

    /// A vault named by id that discovery has not found (yet): taken when it carries the tag
    /// (read through ARM, never from the lagging index) and lies in a discovery scope.
    async fn onboard(&self, discovery: &Discovery, id: ResourceId) -> Result<Onboarded, RunError> {
        let not_managed = |reason: String| RunError::NotManaged {
            vault: id.to_string(),
            reason,
        };
        if !self.discovery_kinds().contains(&id.kind) {
            return Err(not_managed(format!(
                "it is a {}, a kind the setting kinds does not enable",
                id.kind.label()
            )));
        }
        let mut in_scope = discovery
            .subscriptions
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&id.subscription));
        if !in_scope && !discovery.management_groups.is_empty() {
            // Only whether the vault exists under the groups: that part of the index does not
            // lag behind a tag change.
            let query = format!(
                "resources | where id =~ '{}' | project id",
                id.to_string().replace('\'', "")
            );
            let scope = GraphScope::ManagementGroups(discovery.management_groups.clone());
            in_scope = !self
                .arm
                .resource_graph(&scope, &query)
                .await
                .map_err(|err| RunError::Discovery(err.to_string()))?
                .is_empty();
        }
        if !in_scope {
            return Err(not_managed(
                "it is neither listed nor in a discovery scope".to_owned(),
            ));
        }
        let vault = self
            .arm
            .get_resource(&id)
            .await
            .map_err(|err| RunError::Discovery(err.to_string()))?;
        let Some(value) = vault.tag(&discovery.tag) else {
            return Err(not_managed(format!(
                "it is neither listed nor tagged '{}'",
                discovery.tag
            )));
        };
        info!(kind = %id.kind, resource = %id.name, value, "onboarding a newly tagged resource");
        Ok(match self.config.discovered_target(id.clone(), value) {
            Ok(target) => Onboarded::Target(Box::new(target)),
            Err(err) => Onboarded::Invalid(id, err.to_string()),
        })
    }
}
