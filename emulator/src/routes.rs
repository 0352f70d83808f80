//! Request classification: which emulated endpoint a method and path address.
//!
//! ARM treats the fixed segments of a resource path (`resourceGroups`, `providers`,
//! `Microsoft.KeyVault`, …) case-insensitively, and clients do send them in different cases, so
//! matching is done here by hand rather than with axum's case-sensitive router. Classification
//! happens before a request is handled because faults, the request log and the rate-limit headers
//! all depend on the route and the resource (a vault, a storage account or a registry).

use axum::http::Method;

use crate::error::ArmError;
use crate::identity::Principal;
use crate::model::Route;
use crate::paths::{segments, Kind, ResourcePath};
use crate::service_tags;

/// A classified request.
#[derive(Clone, Debug)]
pub(crate) struct Classified {
    pub route: Route,
    pub target: Target,
}

/// The resource a request names.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    None,
    /// One resource of any kind: a vault, a storage account or a container registry.
    Resource(ResourcePath),
    /// A subscription-scoped, non-vault ARM request (the Service Tags Discovery API).
    ServiceTags {
        subscription: String,
        location: String,
    },
    /// A list over a subscription or one of its resource groups (vaults, resources).
    Collection {
        subscription: String,
        resource_group: Option<String>,
    },
    /// A long-running operation of a registry PATCH, by its id.
    Operation {
        subscription: String,
        location: String,
        id: String,
    },
}

impl Classified {
    /// The resource's name, lower-cased, for the routes of one resource (of any kind).
    pub fn vault_name(&self) -> Option<String> {
        match &self.target {
            Target::Resource(path) => Some(path.name.to_ascii_lowercase()),
            _ => None,
        }
    }

    /// The subscription id, lower-cased, for subscription-scoped ARM routes.
    pub fn subscription(&self) -> Option<String> {
        match &self.target {
            Target::Resource(path) => Some(path.subscription.to_ascii_lowercase()),
            Target::ServiceTags { subscription, .. }
            | Target::Collection { subscription, .. }
            | Target::Operation { subscription, .. } => Some(subscription.to_ascii_lowercase()),
            Target::None => None,
        }
    }
}

/// What the wrapper hands to the router along with a (non-control) request: the
/// classification and, for ARM routes, the result of authenticating the caller.
#[derive(Clone)]
pub(crate) struct RequestContext {
    pub classified: Classified,
    pub arm_auth: Option<Result<Principal, ArmError>>,
    /// Whether the request came over TLS (links in the answer then use https).
    pub secure: bool,
}

/// Classifies a request by method and (undecoded) path.
pub(crate) fn classify(method: &Method, path: &str) -> Classified {
    let owned = segments(path);
    let parts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let lower: Vec<String> = parts.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    let none = |route| Classified {
        route,
        target: Target::None,
    };

    if lower.first() == Some(&"_emulator") {
        return none(Route::Control);
    }
    if let Some(resource) = ResourcePath::from_segments(&parts) {
        // Storage accounts and registries are served for GET and PATCH only.
        let route = match (resource.kind, method.clone()) {
            (Kind::Vault, Method::GET) => Route::VaultGet,
            (Kind::Vault, Method::PATCH) => Route::VaultPatch,
            (Kind::Vault, Method::PUT) => Route::VaultPut,
            (Kind::Vault, Method::DELETE) => Route::VaultDelete,
            (Kind::StorageAccount, Method::GET) => Route::StorageAccountGet,
            (Kind::StorageAccount, Method::PATCH) => Route::StorageAccountPatch,
            (Kind::Registry, Method::GET) => Route::RegistryGet,
            (Kind::Registry, Method::PATCH) => Route::RegistryPatch,
            _ => return none(Route::Other),
        };
        return Classified {
            route,
            target: Target::Resource(resource),
        };
    }
    let get = *method == Method::GET;
    let collection = |route, resource_group: Option<&str>| Classified {
        route,
        target: Target::Collection {
            subscription: parts[1].to_owned(),
            resource_group: resource_group.map(str::to_owned),
        },
    };
    let named = |index: usize| parts.get(index).is_some_and(|part| !part.is_empty());
    match lower.as_slice() {
        ["subscriptions", _, "providers", "microsoft.network", "locations", _, kind @ ("servicetags" | "servicetagdetails")]
            if get && named(1) && named(5) =>
        {
            Classified {
                route: if *kind == "servicetags" {
                    Route::ServiceTagsApi
                } else {
                    Route::ServiceTagDetails
                },
                target: Target::ServiceTags {
                    subscription: parts[1].to_owned(),
                    location: parts[5].to_owned(),
                },
            }
        }
        ["subscriptions", _, "providers", "microsoft.containerregistry", "locations", _, "operationresults", _]
            if get && named(1) && named(5) && named(7) =>
        {
            Classified {
                route: Route::RegistryOperation,
                target: Target::Operation {
                    subscription: parts[1].to_owned(),
                    location: parts[5].to_owned(),
                    id: parts[7].to_owned(),
                },
            }
        }
        ["subscriptions", _, "providers", "microsoft.keyvault", "vaults"] if get && named(1) => {
            collection(Route::VaultList, None)
        }
        ["subscriptions", _, "resourcegroups", _, "providers", "microsoft.keyvault", "vaults"]
            if get && named(1) && named(3) =>
        {
            collection(Route::VaultList, Some(parts[3]))
        }
        ["subscriptions", _, "resources"] if get && named(1) => {
            collection(Route::ResourceList, None)
        }
        ["subscriptions", _, "resourcegroups", _, "resources"] if get && named(1) && named(3) => {
            collection(Route::ResourceList, Some(parts[3]))
        }
        ["providers", "microsoft.resourcegraph", "resources"] if *method == Method::POST => {
            none(Route::ResourceGraph)
        }
        ["msi", "token"] if get => none(Route::TokenAppService),
        ["metadata", "identity", "oauth2", "token"] if get => none(Route::TokenImds),
        ["download", "details.aspx" | "confirmation.aspx"]
        | [_, "download", "details.aspx" | "confirmation.aspx"]
            if get =>
        {
            none(Route::DownloadPage)
        }
        ["download", .., file] if get && service_tags::is_download_file_name(file) => {
            none(Route::DownloadFile)
        }
        _ => none(Route::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str) -> Route {
        classify(&method, path).route
    }

    #[test]
    fn vault_paths_match_in_any_case() {
        let path =
            "/subscriptions/S1/resourcegroups/RG/providers/microsoft.keyvault/VAULTS/KV-Prod";
        let classified = classify(&Method::PATCH, path);
        assert_eq!(classified.route, Route::VaultPatch);
        assert_eq!(classified.vault_name().as_deref(), Some("kv-prod"));
        assert_eq!(classified.subscription().as_deref(), Some("s1"));
        assert_eq!(route(Method::GET, path), Route::VaultGet);
        assert_eq!(route(Method::PUT, path), Route::VaultPut);
        assert_eq!(route(Method::DELETE, path), Route::VaultDelete);
        assert_eq!(route(Method::POST, path), Route::Other);
    }

    #[test]
    fn storage_and_registry_paths_match_in_any_case_for_get_and_patch() {
        let storage =
            "/subscriptions/S1/resourceGroups/rg/providers/MICROSOFT.STORAGE/storageaccounts/StProd";
        let classified = classify(&Method::PATCH, storage);
        assert_eq!(classified.route, Route::StorageAccountPatch);
        assert_eq!(classified.vault_name().as_deref(), Some("stprod"));
        assert_eq!(classified.subscription().as_deref(), Some("s1"));
        assert_eq!(route(Method::GET, storage), Route::StorageAccountGet);
        assert_eq!(route(Method::PUT, storage), Route::Other);
        assert_eq!(route(Method::DELETE, storage), Route::Other);
        let registry = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/Registries/cr";
        assert_eq!(route(Method::GET, registry), Route::RegistryGet);
        assert_eq!(route(Method::PATCH, registry), Route::RegistryPatch);
        assert_eq!(route(Method::PUT, registry), Route::Other);
    }

    #[test]
    fn percent_encoded_resource_groups_are_decoded() {
        let classified = classify(
            &Method::GET,
            "/subscriptions/s/resourceGroups/rg%28one%29/providers/Microsoft.KeyVault/vaults/kv",
        );
        match classified.target {
            Target::Resource(path) => assert_eq!(path.resource_group, "rg(one)"),
            other => panic!("unexpected target {other:?}"),
        }
    }

    #[test]
    fn the_other_endpoints_are_recognised() {
        assert_eq!(
            route(
                Method::GET,
                "/subscriptions/s/providers/Microsoft.Network/locations/westeurope/serviceTags"
            ),
            Route::ServiceTagsApi
        );
        assert_eq!(
            route(Method::POST, "/providers/Microsoft.ResourceGraph/resources"),
            Route::ResourceGraph
        );
        assert_eq!(
            route(
                Method::GET,
                "/subscriptions/s/providers/Microsoft.Network/locations/westeurope/serviceTagDetails"
            ),
            Route::ServiceTagDetails
        );
        assert_eq!(
            route(
                Method::GET,
                "/subscriptions/s/providers/Microsoft.KeyVault/vaults"
            ),
            Route::VaultList
        );
        let by_group = classify(
            &Method::GET,
            "/subscriptions/s/resourceGroups/RG/providers/Microsoft.KeyVault/vaults",
        );
        assert_eq!(by_group.route, Route::VaultList);
        assert!(matches!(
            by_group.target,
            Target::Collection { resource_group: Some(ref rg), .. } if rg == "RG"
        ));
        assert_eq!(
            route(Method::GET, "/subscriptions/s/resources"),
            Route::ResourceList
        );
        assert_eq!(
            route(Method::GET, "/subscriptions/s/resourcegroups/rg/resources"),
            Route::ResourceList
        );
        assert_eq!(
            route(Method::GET, "/subscriptions//resources"),
            Route::Other
        );
        assert_eq!(route(Method::GET, "/msi/token"), Route::TokenAppService);
        assert_eq!(
            route(Method::GET, "/metadata/identity/oauth2/token"),
            Route::TokenImds
        );
        assert_eq!(
            route(Method::GET, "/download/details.aspx"),
            Route::DownloadPage
        );
        assert_eq!(
            route(Method::GET, "/en-us/download/confirmation.aspx"),
            Route::DownloadPage
        );
        assert_eq!(
            route(Method::GET, "/download/7/1/d/71d86715-5596-4529-9b13-da13a5de5b63/ServiceTags_Public_20250804.json"),
            Route::DownloadFile
        );
        assert_eq!(route(Method::GET, "/_emulator/requests"), Route::Control);
        assert_eq!(route(Method::GET, "/"), Route::Other);
        assert_eq!(route(Method::POST, "/msi/token"), Route::Other);
    }
}
