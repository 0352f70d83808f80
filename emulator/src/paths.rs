//! Resource paths: a request path split into percent-decoded segments, and the Key Vault
//! resource id shape
//! (`/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}`).
//!
//! Routing, the seed file, the vault store and Resource Graph rows all name vaults by this path, so
//! it sits in the base layer with no emulator imports: each of them can use it without reaching
//! into another. ARM compares the fixed segments and the values without case; the original case
//! is kept for the answers.

use percent_encoding::percent_decode_str;

/// Splits a path into percent-decoded segments, without the leading slash.
pub(crate) fn segments(path: &str) -> Vec<String> {
    path.trim_start_matches('/')
        .split('/')
        .map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned())
        .collect()
}

/// Where a vault lives, as written in a request path or resource id (original case).
#[derive(Clone, Debug)]
pub(crate) struct VaultPath {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

impl VaultPath {
    /// Parses `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}`
    /// (segment names case-insensitive, an optional trailing slash tolerated).
    pub fn parse_id(id: &str) -> Option<VaultPath> {
        let segments: Vec<String> = segments(id.trim_end_matches('/'));
        let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
        Self::from_segments(&refs)
    }

    /// Parses a resource group id, `/subscriptions/{sub}/resourceGroups/{rg}`, into a path with
    /// an empty vault name (for [`VaultPath::same_group`]).
    pub fn parse_group_id(id: &str) -> Option<VaultPath> {
        let segments: Vec<String> = segments(id.trim_end_matches('/'));
        let [subscriptions, subscription, resource_groups, resource_group] = segments.as_slice()
        else {
            return None;
        };
        (subscriptions.eq_ignore_ascii_case("subscriptions")
            && resource_groups.eq_ignore_ascii_case("resourceGroups")
            && !subscription.is_empty()
            && !resource_group.is_empty())
        .then(|| VaultPath {
            subscription: subscription.clone(),
            resource_group: resource_group.clone(),
            name: String::new(),
        })
    }

    /// Matches decoded path segments against the vault resource shape.
    pub fn from_segments(segments: &[&str]) -> Option<VaultPath> {
        let [subscriptions, subscription, resource_groups, resource_group, providers, namespace, vaults, name] =
            segments
        else {
            return None;
        };
        let fixed_ok = subscriptions.eq_ignore_ascii_case("subscriptions")
            && resource_groups.eq_ignore_ascii_case("resourceGroups")
            && providers.eq_ignore_ascii_case("providers")
            && namespace.eq_ignore_ascii_case("Microsoft.KeyVault")
            && vaults.eq_ignore_ascii_case("vaults");
        let values_ok = [subscription, resource_group, name]
            .iter()
            .all(|value| !value.is_empty());
        (fixed_ok && values_ok).then(|| VaultPath {
            subscription: (*subscription).to_owned(),
            resource_group: (*resource_group).to_owned(),
            name: (*name).to_owned(),
        })
    }

    /// The canonical resource id.
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/{}",
            self.subscription, self.resource_group, self.name
        )
    }

    pub fn same_group(&self, other: &VaultPath) -> bool {
        self.subscription.eq_ignore_ascii_case(&other.subscription)
            && self
                .resource_group
                .eq_ignore_ascii_case(&other.resource_group)
    }

    pub fn same_vault(&self, other: &VaultPath) -> bool {
        self.same_group(other) && self.name.eq_ignore_ascii_case(&other.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_ids_parse_case_insensitively() {
        let path = VaultPath::parse_id(
            "/SUBSCRIPTIONS/s/resourcegroups/Rg/PROVIDERS/microsoft.keyvault/Vaults/KV/",
        )
        .unwrap();
        assert_eq!(
            (
                path.subscription.as_str(),
                path.resource_group.as_str(),
                path.name.as_str()
            ),
            ("s", "Rg", "KV")
        );
        assert!(VaultPath::parse_id(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/x"
        )
        .is_none());
        assert!(VaultPath::parse_id("kv").is_none());
    }
}
