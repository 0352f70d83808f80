//! The vault store and the pure PATCH/PUT semantics of `Microsoft.KeyVault/vaults`.
//!
//! Vaults are kept as the JSON ARM returns from GET, keyed by a case-insensitive resource path.
//! The write semantics, which `keyvault.json` in Azure/azure-rest-api-specs does not state, follow
//! JSON merge-patch and what Terraform's azurerm provider relies on: PATCH merges at the top level
//! of `properties` and replaces a present `networkAcls` wholesale (the client must send all four
//! fields, since how ARM treats an omitted one is UNVERIFIED); PUT replaces `properties` entirely.
//! Both validate first and only then store, so a refused write leaves the vault unchanged.

use serde_json::{Map, Value};

use crate::acl::{existing_rule_values, normalise_network_acls, RulePolicy};
use crate::config::{Seed, SeedError};
use crate::error::ArmError;
use crate::paths::VaultPath;

/// Result of looking a request path up in the store.
pub(crate) enum Lookup {
    Found(usize),
    /// The resource group exists (holds another vault) but not this vault.
    NoVault,
    /// No vault lives in this subscription and resource group.
    NoGroup,
}

struct StoredVault {
    path: VaultPath,
    value: Value,
}

/// All vaults the emulator knows, plus the ones the caller may not touch.
pub(crate) struct VaultStore {
    vaults: Vec<StoredVault>,
    forbidden: Vec<String>,
    management_groups: std::collections::BTreeMap<String, Vec<String>>,
}

impl VaultStore {
    pub fn from_seed(seed: &Seed) -> Result<VaultStore, SeedError> {
        let paths = seed.validate()?;
        let vaults = paths
            .into_iter()
            .zip(seed.vaults.iter().cloned())
            .map(|(path, value)| StoredVault { path, value })
            .collect();
        Ok(VaultStore {
            vaults,
            forbidden: seed.forbidden.clone(),
            management_groups: seed.management_groups.clone(),
        })
    }

    /// The subscriptions under a management group (case-insensitive name), if it exists.
    pub fn subscriptions_under(&self, group: &str) -> Option<&[String]> {
        self.management_groups
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(group))
            .map(|(_, subscriptions)| subscriptions.as_slice())
    }

    pub fn lookup(&self, path: &VaultPath) -> Lookup {
        if let Some(index) = self.vaults.iter().position(|v| v.path.same_vault(path)) {
            Lookup::Found(index)
        } else if self.vaults.iter().any(|v| v.path.same_group(path)) {
            Lookup::NoVault
        } else {
            Lookup::NoGroup
        }
    }

    /// The location ARM would name in a refusal for `path`: the vault's, else that of another
    /// vault in its resource group, else `westus`.
    pub fn location_hint(&self, path: &VaultPath) -> String {
        let location_of = |stored: &StoredVault| {
            stored
                .value
                .get("location")
                .and_then(Value::as_str)
                .map(crate::locations::normalise)
        };
        self.vaults
            .iter()
            .find(|v| v.path.same_vault(path))
            .and_then(location_of)
            .or_else(|| {
                self.vaults
                    .iter()
                    .filter(|v| v.path.same_group(path))
                    .find_map(location_of)
            })
            .unwrap_or_else(|| "westus".to_owned())
    }

    /// Finds a vault by resource id or by name (vault names are globally unique), ignoring case.
    pub fn find(&self, name_or_id: &str) -> Option<usize> {
        match VaultPath::parse_id(name_or_id) {
            Some(path) => self.vaults.iter().position(|v| v.path.same_vault(&path)),
            None => self
                .vaults
                .iter()
                .position(|v| v.path.name.eq_ignore_ascii_case(name_or_id)),
        }
    }

    pub fn is_forbidden(&self, path: &VaultPath) -> bool {
        self.forbidden
            .iter()
            .any(|entry| match VaultPath::parse_id(entry) {
                Some(forbidden) => forbidden.same_vault(path),
                None => entry.eq_ignore_ascii_case(&path.name),
            })
    }

    pub fn get(&self, index: usize) -> Option<&Value> {
        self.vaults.get(index).map(|v| &v.value)
    }

    pub fn replace(&mut self, index: usize, value: Value) {
        if let Some(stored) = self.vaults.get_mut(index) {
            stored.value = value;
        }
    }

    /// Every vault with its path, in seed order.
    pub fn iter(&self) -> impl Iterator<Item = (&VaultPath, &Value)> {
        self.vaults.iter().map(|v| (&v.path, &v.value))
    }
}

/// The `ipRules[].value` strings of a vault, as stored.
pub(crate) fn ip_rule_values(vault: &Value) -> Vec<String> {
    vault
        .pointer("/properties/networkAcls/ipRules")
        .and_then(Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .filter_map(|rule| rule.get("value").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Replaces a vault's ipRules out of band, as a person editing the firewall would. A vault without
/// `networkAcls` gets one with the portal's "selected networks" defaults.
pub(crate) fn set_ip_rule_values(vault: &mut Value, values: Vec<String>) {
    let rules: Vec<Value> = values
        .iter()
        .map(|value| serde_json::json!({"value": crate::acl::stored_form(value)}))
        .collect();
    let Some(root) = vault.as_object_mut() else {
        return;
    };
    let properties = object_entry(root, "properties");
    let acls = properties
        .entry("networkAcls")
        .or_insert_with(|| {
            serde_json::json!({"bypass": "AzureServices", "defaultAction": "Deny", "virtualNetworkRules": []})
        });
    if !acls.is_object() {
        *acls = Value::Object(Map::new());
    }
    if let Some(acls) = acls.as_object_mut() {
        acls.insert("ipRules".to_owned(), Value::Array(rules));
    }
}

/// The object under `key`, created (or reset) when missing or not an object.
fn object_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(object) => object,
        // The entry was made an object just above.
        _ => unreachable!("entry was just set to an object"),
    }
}

/// Applies a `VaultPatchParameters` body to a stored vault and returns the new vault.
pub(crate) fn apply_patch(
    current: &Value,
    body: &Value,
    policy: RulePolicy,
) -> Result<Value, ArmError> {
    let Value::Object(body) = body else {
        return Err(ArmError::invalid_content("expected a JSON object"));
    };
    let existing = existing_rule_values(current);
    let mut vault = current.clone();
    let Some(root) = vault.as_object_mut() else {
        return Err(ArmError::invalid_content(
            "the stored vault is not an object",
        ));
    };
    match body.get("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(patch)) => {
            let properties = object_entry(root, "properties");
            for (key, value) in patch {
                if value.is_null() {
                    // JSON merge-patch: an explicit null removes the property.
                    properties.remove(key);
                } else if key == "networkAcls" {
                    let acls = normalise_network_acls(value, policy, &existing)
                        .map_err(ArmError::bad_request)?;
                    properties.insert(key.clone(), acls);
                } else {
                    properties.insert(key.clone(), value.clone());
                }
            }
        }
        Some(_) => {
            return Err(ArmError::invalid_content(
                "\"properties\" must be an object",
            ))
        }
    }
    apply_tags(root, body.get("tags"), false)?;
    mark_succeeded(root);
    Ok(vault)
}

/// Applies a `VaultCreateOrUpdateParameters` body (full replace) to an existing vault.
///
/// The checks run in steps — the location, the required properties, then the firewall rules and
/// the tags — on a copy of the vault, so the first refusal is the answer and leaves it unchanged.
pub(crate) fn apply_put(
    current: &Value,
    path: &VaultPath,
    body: &Value,
    policy: RulePolicy,
) -> Result<Value, ArmError> {
    let Value::Object(body) = body else {
        return Err(ArmError::invalid_content("expected a JSON object"));
    };
    check_put_location(current, path, body)?;
    let new_properties = required_put_properties(body)?;
    let mut properties = new_properties.clone();
    if let Some(acls) = new_properties
        .get("networkAcls")
        .filter(|acls| !acls.is_null())
    {
        let acls = normalise_network_acls(acls, policy, &existing_rule_values(current))
            .map_err(ArmError::bad_request)?;
        properties.insert("networkAcls".to_owned(), acls);
    }
    keep_vault_uri(&mut properties, current, path);
    let mut vault = current.clone();
    let Some(root) = vault.as_object_mut() else {
        return Err(ArmError::invalid_content(
            "the stored vault is not an object",
        ));
    };
    root.insert("properties".to_owned(), Value::Object(properties));
    apply_tags(root, body.get("tags"), true)?;
    mark_succeeded(root);
    Ok(vault)
}

/// PUT step 1: a `location` is required, and a vault cannot move: ARM refuses a PUT naming
/// another location than the stored one (compared without case or spaces, so `West Europe` is
/// `westeurope`).
fn check_put_location(
    current: &Value,
    path: &VaultPath,
    body: &Map<String, Value>,
) -> Result<(), ArmError> {
    let location = body
        .get("location")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ArmError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "LocationRequired",
                "The location property is required for this definition.",
            )
        })?;
    let stored_location = current
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !stored_location.is_empty()
        && normalise_location(stored_location) != normalise_location(location)
    {
        return Err(ArmError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "InvalidResourceLocation",
            format!(
                "The resource '{}' already exists in location '{stored_location}' in resource group '{}'. A resource with the same name cannot be created in location '{location}'. Please select a new resource name.",
                path.name, path.resource_group
            ),
        ));
    }
    Ok(())
}

/// PUT step 2: the new `properties`, which replace the stored ones wholesale and so must carry
/// what a vault cannot exist without (`tenantId` and `sku.name`).
fn required_put_properties(body: &Map<String, Value>) -> Result<&Map<String, Value>, ArmError> {
    let Some(Value::Object(new_properties)) = body.get("properties") else {
        return Err(ArmError::bad_request(
            "The parameter 'properties' is required and must be an object.",
        ));
    };
    if !new_properties.get("tenantId").is_some_and(Value::is_string) {
        return Err(ArmError::bad_request(
            "The parameter 'properties.tenantId' is required.",
        ));
    }
    if !new_properties
        .get("sku")
        .is_some_and(|sku| sku.get("name").is_some_and(Value::is_string))
    {
        return Err(ArmError::bad_request(
            "The parameter 'properties.sku' is required.",
        ));
    }
    Ok(new_properties)
}

/// PUT step 3: ARM computes the vault URI; a client sending back a GET body may or may not
/// include it, so a PUT without one keeps the stored URI (or gets the one ARM would compute).
fn keep_vault_uri(properties: &mut Map<String, Value>, current: &Value, path: &VaultPath) {
    if !properties.contains_key("vaultUri") {
        let uri = current
            .pointer("/properties/vaultUri")
            .cloned()
            .unwrap_or_else(|| {
                Value::String(format!(
                    "https://{}.vault.azure.net/",
                    path.name.to_ascii_lowercase()
                ))
            });
        properties.insert("vaultUri".to_owned(), uri);
    }
}

/// PATCH replaces tags only when sent; PUT replaces them always (omitted means none).
fn apply_tags(
    root: &mut Map<String, Value>,
    tags: Option<&Value>,
    full_replace: bool,
) -> Result<(), ArmError> {
    match tags {
        Some(Value::Object(tags)) => {
            root.insert("tags".to_owned(), Value::Object(tags.clone()));
        }
        None | Some(Value::Null) => {
            if full_replace || matches!(tags, Some(Value::Null)) {
                root.insert("tags".to_owned(), Value::Object(Map::new()));
            }
        }
        Some(_) => return Err(ArmError::invalid_content("\"tags\" must be an object")),
    }
    Ok(())
}

fn mark_succeeded(root: &mut Map<String, Value>) {
    object_entry(root, "properties").insert(
        "provisioningState".to_owned(),
        Value::String("Succeeded".to_owned()),
    );
}

fn normalise_location(location: &str) -> String {
    location
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policy::Slash31Policy;

    fn vault() -> Value {
        json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
            "name": "kv",
            "location": "westeurope",
            "tags": {"env": "prod"},
            "properties": {
                "tenantId": "t",
                "sku": {"family": "A", "name": "standard"},
                "publicNetworkAccess": "Enabled",
                "networkAcls": {"defaultAction": "Deny", "bypass": "AzureServices", "ipRules": [{"value": "1.1.1.1/32"}], "virtualNetworkRules": [{"id": "/x"}]},
                "vaultUri": "https://kv.vault.azure.net/",
                "provisioningState": "RegisteringDns"
            }
        })
    }

    fn path() -> VaultPath {
        VaultPath::parse_id(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
        )
        .unwrap()
    }

    #[test]
    fn patch_replaces_network_acls_wholesale_and_merges_other_properties() {
        let body = json!({"properties": {"networkAcls": {"ipRules": [{"value": "2.2.2.2"}]}, "enableRbacAuthorization": true}});
        let patched = apply_patch(&vault(), &body, Slash31Policy::Accept.into()).unwrap();
        assert_eq!(
            patched["properties"]["networkAcls"],
            json!({"ipRules": [{"value": "2.2.2.2/32"}]})
        );
        assert_eq!(
            patched["properties"]["enableRbacAuthorization"],
            json!(true)
        );
        assert_eq!(
            patched["properties"]["publicNetworkAccess"],
            json!("Enabled")
        );
        assert_eq!(
            patched["properties"]["provisioningState"],
            json!("Succeeded")
        );
        assert_eq!(patched["tags"], json!({"env": "prod"}));
    }

    #[test]
    fn patch_with_tags_replaces_them_and_null_removes_a_property() {
        let body = json!({"tags": {"a": "b"}, "properties": {"publicNetworkAccess": null}});
        let patched = apply_patch(&vault(), &body, Slash31Policy::Accept.into()).unwrap();
        assert_eq!(patched["tags"], json!({"a": "b"}));
        assert!(patched["properties"].get("publicNetworkAccess").is_none());
    }

    #[test]
    fn patch_refuses_non_objects() {
        assert!(apply_patch(&vault(), &json!([]), Slash31Policy::Accept.into()).is_err());
        assert!(apply_patch(
            &vault(),
            &json!({"properties": 1}),
            Slash31Policy::Accept.into()
        )
        .is_err());
        assert!(apply_patch(&vault(), &json!({"tags": []}), Slash31Policy::Accept.into()).is_err());
    }

    #[test]
    fn put_replaces_properties_and_keeps_the_vault_uri() {
        let body = json!({"location": "West Europe", "properties": {"tenantId": "t", "sku": {"family": "A", "name": "premium"}}});
        let put = apply_put(&vault(), &path(), &body, Slash31Policy::Accept.into()).unwrap();
        assert_eq!(
            put["properties"],
            json!({"tenantId": "t", "sku": {"family": "A", "name": "premium"}, "vaultUri": "https://kv.vault.azure.net/", "provisioningState": "Succeeded"})
        );
        assert_eq!(put["tags"], json!({}));
    }

    #[test]
    fn put_requires_location_tenant_and_sku_and_the_same_location() {
        let cases = [
            (
                json!({"properties": {"tenantId": "t", "sku": {"name": "standard"}}}),
                "LocationRequired",
            ),
            (
                json!({"location": "westeurope", "properties": {"sku": {"name": "standard"}}}),
                "BadRequest",
            ),
            (
                json!({"location": "westeurope", "properties": {"tenantId": "t"}}),
                "BadRequest",
            ),
            (json!({"location": "westeurope"}), "BadRequest"),
            (
                json!({"location": "eastus", "properties": {"tenantId": "t", "sku": {"name": "standard"}}}),
                "InvalidResourceLocation",
            ),
        ];
        for (body, code) in cases {
            let err =
                apply_put(&vault(), &path(), &body, Slash31Policy::Accept.into()).unwrap_err();
            assert_eq!(err.code, code, "{body}");
        }
    }

    #[test]
    fn out_of_band_edits_create_network_acls_when_missing() {
        let mut bare = json!({"id": "x", "properties": {}});
        set_ip_rule_values(&mut bare, vec!["3.3.3.3".into(), "4.4.4.0/24".into()]);
        assert_eq!(ip_rule_values(&bare), ["3.3.3.3/32", "4.4.4.0/24"]);
        assert_eq!(
            bare["properties"]["networkAcls"]["defaultAction"],
            json!("Deny")
        );
    }
}
