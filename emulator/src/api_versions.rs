//! The api-versions each emulated ARM route accepts, oldest first, as ARM lists them in its
//! refusals.
//!
//! ARM routes a request by resource type and api-version: a version the resource provider has
//! not registered for the type is refused before the provider sees the request. These lists are
//! the versions the public REST specs (Azure/azure-rest-api-specs) publish for each type, stable
//! and preview, plus the defaults of the current Python SDKs where the specs the emulator's
//! authors could read did not show them yet. They were compiled by hand from the specs' folder
//! names and readme tags; a published version missing here is a bug in the emulator.

/// `Microsoft.KeyVault/vaults`: the `stable/` and `preview/` folders and package tags of
/// `specification/keyvault/resource-manager/Microsoft.KeyVault` (its `readme.md`, and since the
/// move to TypeSpec `KeyVault/stable/readme.md`, `KeyVault/preview/readme.md` and the
/// `Versions` enum of `KeyVault/main.tsp`), plus `2026-05-15`, the default of
/// azure-mgmt-keyvault 14.1.0.
pub const KEY_VAULT: &[&str] = &[
    "2015-06-01",
    "2016-10-01",
    "2018-02-14-preview",
    "2018-02-14",
    "2019-09-01",
    "2020-04-01-preview",
    "2021-04-01-preview",
    "2021-06-01-preview",
    "2021-10-01",
    "2021-11-01-preview",
    "2022-02-01-preview",
    "2022-07-01",
    "2022-11-01",
    "2023-02-01",
    "2023-07-01",
    "2024-04-01-preview",
    "2024-11-01",
    "2024-12-01-preview",
    "2025-05-01",
    "2026-02-01",
    "2026-03-01-preview",
    "2026-04-01-preview",
    "2026-04-01",
    "2026-05-15-preview",
    "2026-05-15",
];

/// `Microsoft.Storage/storageAccounts`: the stable versions tagfence's storage support was
/// written against (2022-09-01 … 2025-01-01; tagfence sends 2025-06-01) and the newer stable
/// folders of `specification/storage/resource-manager/Microsoft.Storage/stable` the REST
/// specs hold (2025-06-01, the first with `ipv6Rules`, to 2026-09-01, the readme's default
/// `package-2026-09`). UNVERIFIED: the older stable versions are listed only from 2022-09-01
/// (earlier ones exist and are refused here); previews are not listed; whether ARM serves the
/// 2026 versions in every region.
pub const STORAGE: &[&str] = &[
    "2022-09-01",
    "2023-01-01",
    "2023-04-01",
    "2023-05-01",
    "2024-01-01",
    "2025-01-01",
    "2025-06-01",
    "2025-08-01",
    "2026-04-01",
    "2026-06-01",
    "2026-09-01",
];

/// `Microsoft.ContainerRegistry/registries`: the versions tagfence's registry support was
/// written against (stable 2023-07-01, which tagfence sends, and 2025-04-01; previews
/// 2023-11-01-preview and 2024-11-01-preview) and 2025-11-01, the newest stable version with a
/// generated spec in `specification/containerregistry/resource-manager/Microsoft.ContainerRegistry`
/// (its TypeSpec `Versions` also names 2026-09-01-preview and 2026-11-01, without generated files:
/// not listed). UNVERIFIED: older versions exist and are refused here.
pub const CONTAINER_REGISTRY: &[&str] = &[
    "2023-07-01",
    "2023-11-01-preview",
    "2024-11-01-preview",
    "2025-04-01",
    "2025-11-01",
];

/// `Microsoft.Network/locations/serviceTags` (`ServiceTags_List`): the stable
/// `specification/network/resource-manager/Microsoft.Network/stable/{version}` folders from
/// `2019-04-01`, the first with `serviceTags.json`, and since the move to TypeSpec the package
/// tags of `Microsoft.Network/Network/readme.md`; `2026-01-01` and `2026-03-01` (the default)
/// from azure-mgmt-network 33.1.0. No preview Network version is known to publish the
/// operation.
pub const NETWORK_SERVICE_TAGS: &[&str] = &[
    "2019-04-01",
    "2019-06-01",
    "2019-07-01",
    "2019-08-01",
    "2019-09-01",
    "2019-11-01",
    "2019-12-01",
    "2020-03-01",
    "2020-04-01",
    "2020-05-01",
    "2020-06-01",
    "2020-07-01",
    "2020-08-01",
    "2020-11-01",
    "2021-02-01",
    "2021-03-01",
    "2021-05-01",
    "2021-08-01",
    "2022-01-01",
    "2022-05-01",
    "2022-07-01",
    "2022-09-01",
    "2022-11-01",
    "2023-02-01",
    "2023-04-01",
    "2023-05-01",
    "2023-06-01",
    "2023-09-01",
    "2023-11-01",
    "2024-01-01",
    "2024-03-01",
    "2024-05-01",
    "2024-07-01",
    "2024-10-01",
    "2025-01-01",
    "2025-03-01",
    "2025-05-01",
    "2025-07-01",
    "2025-09-01",
    "2026-01-01",
    "2026-03-01",
];

/// `Microsoft.Network/locations/serviceTagDetails` (`ServiceTagInformation_List`): the Service
/// Tags versions from `2022-01-01`, the first whose examples hold
/// `ServiceTagInformationListResult.json`.
pub fn network_service_tag_details() -> impl Iterator<Item = &'static str> + Clone {
    NETWORK_SERVICE_TAGS
        .iter()
        .copied()
        .filter(|version| *version >= "2022-01-01")
}

/// ARM's own `resources` collection (`Resources_List`, `Resources_ListByResourceGroup`), which
/// azure-mgmt-keyvault's `vaults.list` calls at `2015-11-01`: the stable folders of
/// `specification/resources/resource-manager/Microsoft.Resources/stable`.
pub const RESOURCES: &[&str] = &[
    "2015-11-01",
    "2016-02-01",
    "2016-07-01",
    "2016-09-01",
    "2017-05-10",
    "2018-02-01",
    "2018-05-01",
    "2019-03-01",
    "2019-05-01",
    "2019-05-10",
    "2019-07-01",
    "2019-08-01",
    "2019-10-01",
    "2020-06-01",
    "2020-08-01",
    "2020-10-01",
    "2021-01-01",
    "2021-04-01",
    "2022-09-01",
    "2023-07-01",
    "2024-03-01",
    "2024-07-01",
    "2024-11-01",
    "2025-03-01",
    "2025-04-01",
];

/// `Microsoft.ResourceGraph/resources`: the `stable/` and `preview/` folders of
/// `specification/resourcegraph/resource-manager/Microsoft.ResourceGraph` that hold the
/// `resources` operation (`2021-03-01` is azure-mgmt-resourcegraph 8.0's default).
pub const RESOURCE_GRAPH: &[&str] = &[
    "2019-04-01",
    "2020-04-01-preview",
    "2021-03-01",
    "2021-06-01-preview",
    "2022-10-01",
    "2024-04-01",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_oldest_first_without_repeats() {
        for list in [
            KEY_VAULT,
            STORAGE,
            CONTAINER_REGISTRY,
            NETWORK_SERVICE_TAGS,
            RESOURCES,
            RESOURCE_GRAPH,
        ] {
            let dates: Vec<&str> = list.iter().map(|version| &version[..10]).collect();
            assert!(dates.windows(2).all(|pair| pair[0] <= pair[1]), "{list:?}");
            let mut unique = list.to_vec();
            unique.dedup();
            assert_eq!(unique.len(), list.len());
        }
        assert_eq!(network_service_tag_details().next(), Some("2022-01-01"));
        assert!(KEY_VAULT.contains(&"2026-05-15"));
        assert!(STORAGE.contains(&"2023-05-01") && CONTAINER_REGISTRY.contains(&"2023-07-01"));
        assert!(NETWORK_SERVICE_TAGS.contains(&"2026-03-01"));
    }
}
