//! The resource store: every vault, storage account and container registry the emulator knows,
//! each kept as the JSON ARM returns from GET, keyed by a case-insensitive resource path whose
//! kind comes from the resource's `type` and id.
//!
//! The store journals every change ([`ResourceStore::take_changes`]) for Resource Graph's index,
//! which the state stamps with the time. The write semantics of each kind live in `vaults`,
//! `storage` and `registries`; the store only keeps what they return.

use serde_json::Value;

use crate::config::{Seed, SeedError};
use crate::firewall;
use crate::paths::{Kind, ResourcePath};

/// Result of looking a request path up in the store.
pub(crate) enum Lookup {
    Found(usize),
    /// The resource group exists (holds another resource) but not this resource.
    NoResource,
    /// No resource lives in this subscription and resource group.
    NoGroup,
}

struct Stored {
    path: ResourcePath,
    value: Value,
}

/// All resources the emulator knows, plus the ones the caller may not touch.
pub(crate) struct ResourceStore {
    resources: Vec<Stored>,
    /// Vaults deleted through ARM, kept as Key Vault's soft delete keeps them: their names stay
    /// taken until recovered (`createMode: recover`).
    deleted: Vec<Stored>,
    /// The resource groups that exist: those of the seed's resources and its `resourceGroups`.
    groups: Vec<ResourcePath>,
    forbidden: Vec<String>,
    management_groups: std::collections::BTreeMap<String, Vec<String>>,
    /// Every change since [`ResourceStore::take_changes`] last ran, oldest first: the resource's
    /// path and its new value (`None`: deleted). Resource Graph's index is built from these.
    changes: Vec<(ResourcePath, Option<Value>)>,
}

impl ResourceStore {
    /// The store a seed describes. Vaults and registries are stored verbatim; a storage account
    /// gains the `networkAcls` defaults Storage always returns ([`firewall::read_shape`]).
    pub fn from_seed(seed: &Seed) -> Result<ResourceStore, SeedError> {
        let (paths, extra_groups) = seed.validate()?;
        let mut groups: Vec<ResourcePath> = Vec::new();
        for group in paths.iter().chain(&extra_groups) {
            if !groups.iter().any(|known| known.same_group(group)) {
                groups.push(group.clone());
            }
        }
        let resources = paths
            .into_iter()
            .zip(seed.vaults.iter().cloned())
            .map(|(path, mut value)| {
                firewall::read_shape(path.kind, &mut value);
                Stored { path, value }
            })
            .collect();
        Ok(ResourceStore {
            resources,
            deleted: Vec::new(),
            groups,
            forbidden: seed.forbidden.clone(),
            management_groups: seed.management_groups.clone(),
            changes: Vec::new(),
        })
    }

    /// The subscriptions under a management group (case-insensitive name), if it exists.
    pub fn subscriptions_under(&self, group: &str) -> Option<&[String]> {
        self.management_groups
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(group))
            .map(|(_, subscriptions)| subscriptions.as_slice())
    }

    pub fn lookup(&self, path: &ResourcePath) -> Lookup {
        if let Some(index) = self
            .resources
            .iter()
            .position(|r| r.path.same_resource(path))
        {
            Lookup::Found(index)
        } else if self.group_exists(path) {
            Lookup::NoResource
        } else {
            Lookup::NoGroup
        }
    }

    /// Whether the resource group of `path` exists (`path.name` is not looked at).
    pub fn group_exists(&self, path: &ResourcePath) -> bool {
        self.groups.iter().any(|group| group.same_group(path))
    }

    /// Whether a resource of this kind and name lives in another resource group or subscription
    /// (vault names are global: they are DNS names under `vault.azure.net`).
    pub fn name_taken_elsewhere(&self, path: &ResourcePath) -> bool {
        self.resources.iter().any(|r| {
            r.path.kind == path.kind
                && r.path.name.eq_ignore_ascii_case(&path.name)
                && !r.path.same_resource(path)
        })
    }

    /// The position in the soft-deleted vaults of one named like `path`.
    pub fn deleted_named(&self, path: &ResourcePath) -> Option<usize> {
        self.deleted
            .iter()
            .position(|r| r.path.kind == path.kind && r.path.name.eq_ignore_ascii_case(&path.name))
    }

    /// The soft-deleted vault at `index`, taken out of the deleted list (a recovery).
    pub fn take_deleted(&mut self, index: usize) -> Option<Value> {
        (index < self.deleted.len()).then(|| self.deleted.remove(index).value)
    }

    /// Stores a new resource at `path`; returns its index.
    pub fn insert(&mut self, path: &ResourcePath, value: Value) -> usize {
        self.changes.push((path.clone(), Some(value.clone())));
        self.resources.push(Stored {
            path: path.clone(),
            value,
        });
        self.resources.len() - 1
    }

    /// Deletes the resource at `index` into the soft-deleted list.
    pub fn delete(&mut self, index: usize) {
        if index < self.resources.len() {
            let resource = self.resources.remove(index);
            self.changes.push((resource.path.clone(), None));
            self.deleted.push(resource);
        }
    }

    /// The resources in a subscription, or one of its resource groups, with their paths.
    pub fn in_scope<'a>(
        &'a self,
        subscription: &'a str,
        resource_group: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ResourcePath, &'a Value)> + 'a {
        self.iter().filter(move |(path, _)| {
            path.subscription.eq_ignore_ascii_case(subscription)
                && resource_group
                    .is_none_or(|group| path.resource_group.eq_ignore_ascii_case(group))
        })
    }

    /// The location ARM would name in a refusal for `path`: the resource's, else that of another
    /// resource in its resource group, else `westus`.
    pub fn location_hint(&self, path: &ResourcePath) -> String {
        let location_of = |stored: &Stored| {
            stored
                .value
                .get("location")
                .and_then(Value::as_str)
                .map(crate::locations::normalise)
        };
        self.resources
            .iter()
            .find(|r| r.path.same_resource(path))
            .and_then(location_of)
            .or_else(|| {
                self.resources
                    .iter()
                    .filter(|r| r.path.same_group(path))
                    .find_map(location_of)
            })
            .unwrap_or_else(|| "westus".to_owned())
    }

    /// Finds a resource of any kind by resource id or by name, ignoring case. Names are assumed
    /// unique across kinds (the first in seed order wins); vault names are globally unique.
    pub fn find(&self, name_or_id: &str) -> Option<usize> {
        match ResourcePath::parse_id(name_or_id) {
            Some(path) => self
                .resources
                .iter()
                .position(|r| r.path.same_resource(&path)),
            None => self
                .resources
                .iter()
                .position(|r| r.path.name.eq_ignore_ascii_case(name_or_id)),
        }
    }

    pub fn is_forbidden(&self, path: &ResourcePath) -> bool {
        self.forbidden
            .iter()
            .any(|entry| match ResourcePath::parse_id(entry) {
                Some(forbidden) => forbidden.same_resource(path),
                None => entry.eq_ignore_ascii_case(&path.name),
            })
    }

    pub fn get(&self, index: usize) -> Option<&Value> {
        self.resources.get(index).map(|r| &r.value)
    }

    /// The kind of the resource at `index`.
    pub fn kind(&self, index: usize) -> Option<Kind> {
        self.resources.get(index).map(|r| r.path.kind)
    }

    pub fn replace(&mut self, index: usize, value: Value) {
        if let Some(stored) = self.resources.get_mut(index) {
            self.changes
                .push((stored.path.clone(), Some(value.clone())));
            stored.value = value;
        }
    }

    /// The changes made since the last call, oldest first (`None`: the resource was deleted).
    pub fn take_changes(&mut self) -> Vec<(ResourcePath, Option<Value>)> {
        std::mem::take(&mut self.changes)
    }

    /// Every resource with its path, in seed order.
    pub fn iter(&self) -> impl Iterator<Item = (&ResourcePath, &Value)> {
        self.resources.iter().map(|r| (&r.path, &r.value))
    }

    /// The resources of one kind with their paths, in seed order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (&ResourcePath, &Value)> {
        self.iter().filter(move |(path, _)| path.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vault() -> Value {
        json!({"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv", "properties": {}})
    }

    #[test]
    fn every_change_to_the_store_is_journaled_once() {
        let seed = Seed {
            vaults: vec![vault()],
            ..Seed::default()
        };
        let mut store = ResourceStore::from_seed(&seed).unwrap();
        assert!(store.take_changes().is_empty());
        let edited = json!({"id": "x", "v": 1});
        store.replace(0, edited.clone());
        let path = ResourcePath::parse_id(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv2",
        )
        .unwrap();
        store.insert(&path, json!({"v": 2}));
        store.delete(0);
        let changes: Vec<(String, Option<Value>)> = store
            .take_changes()
            .into_iter()
            .map(|(path, vault)| (path.name, vault))
            .collect();
        assert_eq!(
            changes,
            [
                ("kv".to_owned(), Some(edited)),
                ("kv2".to_owned(), Some(json!({"v": 2}))),
                ("kv".to_owned(), None),
            ]
        );
        assert!(store.take_changes().is_empty());
    }

    #[test]
    fn resources_of_every_kind_are_found_by_name_or_id_and_kind() {
        let account =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st";
        let registry =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/cr";
        let seed = Seed {
            vaults: vec![
                vault(),
                json!({"id": account, "type": "Microsoft.Storage/storageAccounts", "properties": {}}),
                json!({"id": registry, "properties": {}}),
            ],
            forbidden: vec!["cr".to_owned()],
            ..Seed::default()
        };
        let store = ResourceStore::from_seed(&seed).unwrap();
        assert_eq!(store.find("ST"), Some(1));
        assert_eq!(store.find(&account.to_ascii_uppercase()), Some(1));
        assert_eq!(store.kind(2), Some(Kind::Registry));
        assert_eq!(
            store.get(1).unwrap()["properties"]["networkAcls"]["defaultAction"],
            "Allow",
            "a storage account reads with Storage's defaults"
        );
        assert_eq!(
            store.get(0).unwrap()["properties"],
            json!({}),
            "a vault seed is verbatim"
        );
        let other_kind = ResourcePath::parse_id(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/kv",
        )
        .unwrap();
        assert!(matches!(store.lookup(&other_kind), Lookup::NoResource));
        assert!(store.is_forbidden(&ResourcePath::parse_id(registry).unwrap()));
        assert_eq!(store.of_kind(Kind::Vault).count(), 1);
    }
}
