//! The Azure shell's part of each firewall kind: the api-version its resource is read and written
//! with, and how Azure Resource Graph and Event Grid name it. The role actions it needs are its
//! resource type's `read` and `write` (the custom role of `infra/main.bicep`, checked per kind by
//! the infra gate). What a kind's rules look like and cost is the core's part (`core::kind`).
//!
//! Sources for every figure are tabled in `docs/kinds.md`.

use crate::core::kind::Kind;

/// The api-version the kind's resource is read and written with.
///
/// - Key Vault `2023-07-01`: stable in every cloud, with the same `networkAcls` shape as the
///   newest, 2025-05-01 (Azure/azure-rest-api-specs, specification/keyvault/resource-manager).
/// - Storage `2025-06-01`: the first stable version whose `networkAcls` has `ipv6Rules`; a write
///   with an older version would not carry an account's IPv6 rules back, and whether Storage
///   then keeps or drops them is not documented (specification/storage/resource-manager,
///   `StorageAccounts_Update`, synchronous `200`). Its availability in sovereign clouds is
///   UNVERIFIED.
/// - Container Registry `2023-07-01`: stable, with the `networkRuleSet` shape of the newest
///   (`defaultAction`, `ipRules`; `virtualNetworkRules` left the stable API in 2021-09-01)
///   (specification/containerregistry/resource-manager, `Registries_Update`).
pub fn api_version(kind: Kind) -> &'static str {
    match kind {
        Kind::KeyVault => "2023-07-01",
        Kind::StorageAccount => "2025-06-01",
        Kind::ContainerRegistry => "2023-07-01",
    }
}

/// The operation an Event Grid `Microsoft.Resources.ResourceWriteSuccess` event names for a write
/// of the kind's resource (`data.operationName`).
pub fn write_operation(kind: Kind) -> String {
    format!("{}/write", kind.resource_type())
}

/// The kind an Event Grid operation name is a write of, if any (case-insensitive).
pub fn kind_of_write(operation: &str) -> Option<Kind> {
    Kind::ALL
        .into_iter()
        .find(|kind| operation.eq_ignore_ascii_case(&write_operation(*kind)))
}

/// The Resource Graph filter on the kinds' types:
/// `type in~ ('microsoft.keyvault/vaults', …)`.
pub fn graph_type_filter(kinds: &[Kind]) -> String {
    let types: Vec<String> = kinds
        .iter()
        .map(|kind| format!("'{}'", kind.resource_type().to_ascii_lowercase()))
        .collect();
    format!("type in~ ({})", types.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_resource_type() {
        assert_eq!(
            write_operation(Kind::StorageAccount),
            "Microsoft.Storage/storageAccounts/write"
        );
        assert_eq!(
            kind_of_write("microsoft.containerregistry/registries/write"),
            Some(Kind::ContainerRegistry)
        );
        assert_eq!(kind_of_write("Microsoft.KeyVault/vaults/delete"), None);
        assert_eq!(
            graph_type_filter(&Kind::ALL),
            "type in~ ('microsoft.keyvault/vaults', 'microsoft.storage/storageaccounts', 'microsoft.containerregistry/registries')"
        );
    }
}
