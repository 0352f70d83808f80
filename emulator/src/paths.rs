//! Resource paths: a request path split into percent-decoded segments, and the resource id shape
//! of the kinds the emulator serves
//! (`/subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{collection}/{name}`:
//! Key Vault vaults, storage accounts, container registries).
//!
//! Routing, the seed file, the resource store and Resource Graph rows all name resources by this
//! path, so it sits in the base layer with no emulator imports: each of them can use it without
//! reaching into another. ARM compares the fixed segments and the values without case; the
//! original case is kept for the answers.

use percent_encoding::percent_decode_str;

/// Splits a path into percent-decoded segments, without the leading slash.
pub(crate) fn segments(path: &str) -> Vec<String> {
    path.trim_start_matches('/')
        .split('/')
        .map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned())
        .collect()
}

/// A kind of resource the emulator serves: each has a firewall tagfence rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// `Microsoft.KeyVault/vaults`: `properties.networkAcls`.
    Vault,
    /// `Microsoft.Storage/storageAccounts`: `properties.networkAcls`.
    StorageAccount,
    /// `Microsoft.ContainerRegistry/registries`: `properties.networkRuleSet`.
    Registry,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Vault, Kind::StorageAccount, Kind::Registry];

    /// The resource provider's namespace, e.g. `Microsoft.Storage`.
    pub fn namespace(self) -> &'static str {
        match self {
            Kind::Vault => "Microsoft.KeyVault",
            Kind::StorageAccount => "Microsoft.Storage",
            Kind::Registry => "Microsoft.ContainerRegistry",
        }
    }

    /// The resource type's own name, e.g. `storageAccounts` (ARM's refusals name it so).
    pub fn collection(self) -> &'static str {
        match self {
            Kind::Vault => "vaults",
            Kind::StorageAccount => "storageAccounts",
            Kind::Registry => "registries",
        }
    }

    /// The full type as ARM GET returns it, e.g. `Microsoft.Storage/storageAccounts`.
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Vault => "Microsoft.KeyVault/vaults",
            Kind::StorageAccount => "Microsoft.Storage/storageAccounts",
            Kind::Registry => "Microsoft.ContainerRegistry/registries",
        }
    }

    /// The kind of a full type name, compared without case.
    pub fn from_type(type_name: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.type_name().eq_ignore_ascii_case(type_name))
    }

    fn from_segments(namespace: &str, collection: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| {
            kind.namespace().eq_ignore_ascii_case(namespace)
                && kind.collection().eq_ignore_ascii_case(collection)
        })
    }
}

/// Where a resource lives, as written in a request path or resource id (original case).
#[derive(Clone, Debug)]
pub(crate) struct ResourcePath {
    pub kind: Kind,
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

impl ResourcePath {
    /// Parses `/subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{collection}/{name}`
    /// for any [`Kind`] (segment names case-insensitive, an optional trailing slash tolerated).
    pub fn parse_id(id: &str) -> Option<ResourcePath> {
        let segments: Vec<String> = segments(id.trim_end_matches('/'));
        let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
        Self::from_segments(&refs)
    }

    /// Parses a resource group id, `/subscriptions/{sub}/resourceGroups/{rg}`, into a path with
    /// an empty name (for [`ResourcePath::same_group`]; its kind means nothing).
    pub fn parse_group_id(id: &str) -> Option<ResourcePath> {
        let segments: Vec<String> = segments(id.trim_end_matches('/'));
        let [subscriptions, subscription, resource_groups, resource_group] = segments.as_slice()
        else {
            return None;
        };
        (subscriptions.eq_ignore_ascii_case("subscriptions")
            && resource_groups.eq_ignore_ascii_case("resourceGroups")
            && !subscription.is_empty()
            && !resource_group.is_empty())
        .then(|| ResourcePath::group(subscription, resource_group))
    }

    /// A resource group as a path with an empty name (its kind means nothing).
    pub fn group(subscription: &str, resource_group: &str) -> ResourcePath {
        ResourcePath {
            kind: Kind::Vault,
            subscription: subscription.to_owned(),
            resource_group: resource_group.to_owned(),
            name: String::new(),
        }
    }

    /// Matches decoded path segments against the resource shape of any [`Kind`].
    pub fn from_segments(segments: &[&str]) -> Option<ResourcePath> {
        let [subscriptions, subscription, resource_groups, resource_group, providers, namespace, collection, name] =
            segments
        else {
            return None;
        };
        let fixed_ok = subscriptions.eq_ignore_ascii_case("subscriptions")
            && resource_groups.eq_ignore_ascii_case("resourceGroups")
            && providers.eq_ignore_ascii_case("providers");
        let kind = Kind::from_segments(namespace, collection)?;
        let values_ok = [subscription, resource_group, name]
            .iter()
            .all(|value| !value.is_empty());
        (fixed_ok && values_ok).then(|| ResourcePath {
            kind,
            subscription: (*subscription).to_owned(),
            resource_group: (*resource_group).to_owned(),
            name: (*name).to_owned(),
        })
    }

    /// The canonical resource id.
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{}/{}",
            self.subscription,
            self.resource_group,
            self.kind.type_name(),
            self.name
        )
    }

    pub fn same_group(&self, other: &ResourcePath) -> bool {
        self.subscription.eq_ignore_ascii_case(&other.subscription)
            && self
                .resource_group
                .eq_ignore_ascii_case(&other.resource_group)
    }

    /// The same resource: the same kind, group and name.
    pub fn same_resource(&self, other: &ResourcePath) -> bool {
        self.kind == other.kind
            && self.same_group(other)
            && self.name.eq_ignore_ascii_case(&other.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_parse_case_insensitively() {
        let path = ResourcePath::parse_id(
            "/SUBSCRIPTIONS/s/resourcegroups/Rg/PROVIDERS/microsoft.keyvault/Vaults/KV/",
        )
        .unwrap();
        assert_eq!(
            (
                path.kind,
                path.subscription.as_str(),
                path.resource_group.as_str(),
                path.name.as_str()
            ),
            (Kind::Vault, "s", "Rg", "KV")
        );
        let storage = ResourcePath::parse_id(
            "/subscriptions/s/resourceGroups/rg/providers/microsoft.storage/STORAGEACCOUNTS/st",
        )
        .unwrap();
        assert_eq!(storage.kind, Kind::StorageAccount);
        assert_eq!(
            storage.id(),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st"
        );
        let registry = ResourcePath::parse_id(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/cr",
        )
        .unwrap();
        assert_eq!(registry.kind, Kind::Registry);
        assert!(!registry.same_resource(&storage));
        assert!(ResourcePath::parse_id(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/x"
        )
        .is_none());
        assert!(ResourcePath::parse_id(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/vaults/x"
        )
        .is_none());
        assert!(ResourcePath::parse_id("kv").is_none());
        assert_eq!(
            Kind::from_type("microsoft.containerregistry/REGISTRIES"),
            Some(Kind::Registry)
        );
        assert_eq!(Kind::from_type("Microsoft.Web/sites"), None);
    }
}
