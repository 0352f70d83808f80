//! The vault store and the pure PATCH/PUT semantics of `Microsoft.KeyVault/vaults`.
//!
//! Vaults are kept as the JSON ARM returns from GET, keyed by a case-insensitive resource path.
//! The write semantics, which `keyvault.json` in Azure/azure-rest-api-specs does not state, follow
//! JSON merge-patch and what Terraform's azurerm provider relies on: PATCH merges at the top level
//! of `properties` and replaces a present `networkAcls` wholesale (the client must send all four
//! fields, since how ARM treats an omitted one is UNVERIFIED); PUT replaces `properties` entirely.
//! Both validate first and only then store, so a refused write leaves the vault unchanged. The
//! store journals every change ([`VaultStore::take_changes`]) for Resource Graph's index, which
//! the state stamps with the time.

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
    /// Vaults deleted through ARM, kept as Key Vault's soft delete keeps them: their names stay
    /// taken until recovered (`createMode: recover`).
    deleted: Vec<StoredVault>,
    /// The resource groups that exist: those of the seed's vaults and its `resourceGroups`.
    groups: Vec<VaultPath>,
    forbidden: Vec<String>,
    management_groups: std::collections::BTreeMap<String, Vec<String>>,
    /// Every change since [`VaultStore::take_changes`] last ran, oldest first: the vault's path
    /// and its new value (`None`: deleted). Resource Graph's index is built from these.
    changes: Vec<(VaultPath, Option<Value>)>,
}

impl VaultStore {
    pub fn from_seed(seed: &Seed) -> Result<VaultStore, SeedError> {
        let (paths, extra_groups) = seed.validate()?;
        let mut groups: Vec<VaultPath> = Vec::new();
        for group in paths.iter().chain(&extra_groups) {
            if !groups.iter().any(|known| known.same_group(group)) {
                groups.push(group.clone());
            }
        }
        let vaults = paths
            .into_iter()
            .zip(seed.vaults.iter().cloned())
            .map(|(path, value)| StoredVault { path, value })
            .collect();
        Ok(VaultStore {
            vaults,
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

    pub fn lookup(&self, path: &VaultPath) -> Lookup {
        if let Some(index) = self.vaults.iter().position(|v| v.path.same_vault(path)) {
            Lookup::Found(index)
        } else if self.group_exists(path) {
            Lookup::NoVault
        } else {
            Lookup::NoGroup
        }
    }

    /// Whether the resource group of `path` exists (`path.name` is not looked at).
    pub fn group_exists(&self, path: &VaultPath) -> bool {
        self.groups.iter().any(|group| group.same_group(path))
    }

    /// Whether a vault of this name lives in another resource group or subscription (vault names
    /// are global: they are DNS names under `vault.azure.net`).
    pub fn name_taken_elsewhere(&self, path: &VaultPath) -> bool {
        self.vaults
            .iter()
            .any(|v| v.path.name.eq_ignore_ascii_case(&path.name) && !v.path.same_vault(path))
    }

    /// The position in the soft-deleted vaults of one named like `path`.
    pub fn deleted_named(&self, path: &VaultPath) -> Option<usize> {
        self.deleted
            .iter()
            .position(|v| v.path.name.eq_ignore_ascii_case(&path.name))
    }

    /// The soft-deleted vault at `index`, taken out of the deleted list (a recovery).
    pub fn take_deleted(&mut self, index: usize) -> Option<Value> {
        (index < self.deleted.len()).then(|| self.deleted.remove(index).value)
    }

    /// Stores a new vault at `path`; returns its index.
    pub fn insert(&mut self, path: &VaultPath, value: Value) -> usize {
        self.changes.push((path.clone(), Some(value.clone())));
        self.vaults.push(StoredVault {
            path: path.clone(),
            value,
        });
        self.vaults.len() - 1
    }

    /// Deletes the vault at `index` into the soft-deleted list.
    pub fn delete(&mut self, index: usize) {
        if index < self.vaults.len() {
            let vault = self.vaults.remove(index);
            self.changes.push((vault.path.clone(), None));
            self.deleted.push(vault);
        }
    }

    /// The vaults in a subscription, or one of its resource groups, with their paths.
    pub fn in_scope<'a>(
        &'a self,
        subscription: &'a str,
        resource_group: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a VaultPath, &'a Value)> + 'a {
        self.iter().filter(move |(path, _)| {
            path.subscription.eq_ignore_ascii_case(subscription)
                && resource_group
                    .is_none_or(|group| path.resource_group.eq_ignore_ascii_case(group))
        })
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
            self.changes
                .push((stored.path.clone(), Some(value.clone())));
            stored.value = value;
        }
    }

    /// The changes made since the last call, oldest first (`None`: the vault was deleted).
    pub fn take_changes(&mut self) -> Vec<(VaultPath, Option<Value>)> {
        std::mem::take(&mut self.changes)
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

/// Who writes a vault and when: ARM's `systemData` (common-types `systemData`; keyvault.json's
/// examples show it on every vault).
#[derive(Clone, Debug)]
pub(crate) struct Stamp {
    /// `createdBy` / `lastModifiedBy`: the caller's client id.
    pub by: String,
    /// `createdByType` / `lastModifiedByType`: `User`, `Application`, `ManagedIdentity` or `Key`.
    pub by_type: &'static str,
    /// `createdAt` / `lastModifiedAt`, RFC 3339.
    pub at: String,
}

impl Stamp {
    /// Marks a recovered vault as modified now.
    pub fn apply_to(&self, root: &mut Map<String, Value>) {
        self.apply(root, false);
    }

    /// Sets `systemData`: on a new vault all of it; on a stored one the `lastModified…` fields,
    /// when it has `systemData` (a seed without any is kept without, as seeds are verbatim:
    /// tests compare such vaults before and after a write).
    fn apply(&self, root: &mut Map<String, Value>, created: bool) {
        if !created && !root.get("systemData").is_some_and(Value::is_object) {
            return;
        }
        let data = object_entry(root, "systemData");
        if created || !data.contains_key("createdAt") {
            data.insert("createdBy".to_owned(), Value::String(self.by.clone()));
            data.insert(
                "createdByType".to_owned(),
                Value::String(self.by_type.to_owned()),
            );
            data.insert("createdAt".to_owned(), Value::String(self.at.clone()));
        }
        data.insert("lastModifiedBy".to_owned(), Value::String(self.by.clone()));
        data.insert(
            "lastModifiedByType".to_owned(),
            Value::String(self.by_type.to_owned()),
        );
        data.insert("lastModifiedAt".to_owned(), Value::String(self.at.clone()));
    }
}

/// Applies a `VaultPatchParameters` body to a stored vault and returns the new vault.
pub(crate) fn apply_patch(
    current: &Value,
    body: &Value,
    policy: RulePolicy,
    stamp: &Stamp,
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
            let old = current.get("properties").and_then(Value::as_object);
            crate::properties::check(patch, Some(old.unwrap_or(&Map::new())))?;
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
    stamp.apply(root, false);
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
    stamp: &Stamp,
) -> Result<Value, ArmError> {
    let Value::Object(body) = body else {
        return Err(ArmError::invalid_content("expected a JSON object"));
    };
    check_put_location(current, path, body)?;
    let new_properties = required_put_properties(body)?;
    let empty = Map::new();
    let old = current
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    crate::properties::check(new_properties, Some(old))?;
    let mut properties = new_properties.clone();
    crate::properties::carry_over(&mut properties, old);
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
    stamp.apply(root, false);
    Ok(vault)
}

/// Creates a vault from a `VaultCreateOrUpdateParameters` body (a PUT where none exists).
///
/// Checked in the order a refusal is most useful in: the name, the location (required, and a
/// public region), the required properties, then the firewall rules and the tags. The new vault
/// gets what ARM and Key Vault fill in: `id`, `name`, `type`, the location's name, `vaultUri`,
/// `provisioningState` and `systemData`.
pub(crate) fn apply_create(
    path: &VaultPath,
    body: &Value,
    policy: RulePolicy,
    stamp: &Stamp,
) -> Result<Value, ArmError> {
    let Value::Object(body) = body else {
        return Err(ArmError::invalid_content("expected a JSON object"));
    };
    check_vault_name(&path.name)?;
    let location = required_location(body)?;
    if !crate::locations::is_known(location) {
        return Err(ArmError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "LocationNotAvailableForResourceType",
            format!(
                "The provided location '{location}' is not available for resource type 'Microsoft.KeyVault/vaults'. List of available regions for the resource type is '{}'.",
                crate::locations::listed(",")
            ),
        ));
    }
    let new_properties = required_put_properties(body)?;
    crate::properties::check(new_properties, None)?;
    let mut properties = new_properties.clone();
    crate::properties::defaults(&mut properties);
    properties.remove("createMode");
    if let Some(acls) = new_properties
        .get("networkAcls")
        .filter(|acls| !acls.is_null())
    {
        let acls = normalise_network_acls(acls, policy, &[]).map_err(ArmError::bad_request)?;
        properties.insert("networkAcls".to_owned(), acls);
    }
    keep_vault_uri(&mut properties, &Value::Null, path);
    let mut root = Map::new();
    root.insert("id".to_owned(), Value::String(path.id()));
    root.insert("name".to_owned(), Value::String(path.name.clone()));
    root.insert(
        "type".to_owned(),
        Value::String("Microsoft.KeyVault/vaults".to_owned()),
    );
    root.insert(
        "location".to_owned(),
        Value::String(crate::locations::normalise(location)),
    );
    root.insert("properties".to_owned(), Value::Object(properties));
    apply_tags(&mut root, body.get("tags"), true)?;
    mark_succeeded(&mut root);
    stamp.apply(&mut root, true);
    Ok(Value::Object(root))
}

/// A vault name as keyvault.json's `vaultName` parameter requires it, `^[a-zA-Z0-9-]{3,24}$`,
/// and as Microsoft Learn's "Naming rules and restrictions for Azure resources" adds (starts
/// with a letter, ends with a letter or digit, no consecutive hyphens). The code and wording of
/// Key Vault's refusal are UNVERIFIED.
fn check_vault_name(name: &str) -> Result<(), ArmError> {
    let valid = (3..=24).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(ArmError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "VaultNameNotValid",
            format!("The vault name '{name}' is invalid. A vault's name must be between 3-24 alphanumeric characters. The name must begin with a letter, end with a letter or digit, and not contain consecutive hyphens."),
        ))
    }
}

/// PUT step 1: a `location` is required, and a vault cannot move: ARM refuses a PUT naming
/// another location than the stored one (compared without case or spaces, so `West Europe` is
/// `westeurope`).
fn check_put_location(
    current: &Value,
    path: &VaultPath,
    body: &Map<String, Value>,
) -> Result<(), ArmError> {
    let location = required_location(body)?;
    let stored_location = current
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !stored_location.is_empty()
        && crate::locations::normalise(stored_location) != crate::locations::normalise(location)
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

/// The body's `location`, which ARM requires on a PUT.
fn required_location(body: &Map<String, Value>) -> Result<&str, ArmError> {
    body.get("location").and_then(Value::as_str).ok_or_else(|| {
        ArmError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "LocationRequired",
            "The location property is required for this definition.",
        )
    })
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

    fn stamp() -> Stamp {
        Stamp {
            by: "client".into(),
            by_type: "ManagedIdentity",
            at: "2026-01-01T00:00:00.0000000Z".into(),
        }
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
        let patched = apply_patch(&vault(), &body, Slash31Policy::Accept.into(), &stamp()).unwrap();
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
        let patched = apply_patch(&vault(), &body, Slash31Policy::Accept.into(), &stamp()).unwrap();
        assert_eq!(patched["tags"], json!({"a": "b"}));
        assert!(patched["properties"].get("publicNetworkAccess").is_none());
    }

    #[test]
    fn patch_refuses_non_objects() {
        assert!(apply_patch(&vault(), &json!([]), Slash31Policy::Accept.into(), &stamp()).is_err());
        assert!(apply_patch(
            &vault(),
            &json!({"properties": 1}),
            Slash31Policy::Accept.into(),
            &stamp()
        )
        .is_err());
        assert!(apply_patch(
            &vault(),
            &json!({"tags": []}),
            Slash31Policy::Accept.into(),
            &stamp()
        )
        .is_err());
    }

    #[test]
    fn put_replaces_properties_and_keeps_the_vault_uri() {
        let body = json!({"location": "West Europe", "properties": {"tenantId": "t", "sku": {"family": "A", "name": "premium"}}});
        let put = apply_put(
            &vault(),
            &path(),
            &body,
            Slash31Policy::Accept.into(),
            &stamp(),
        )
        .unwrap();
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
            let err = apply_put(
                &vault(),
                &path(),
                &body,
                Slash31Policy::Accept.into(),
                &stamp(),
            )
            .unwrap_err();
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

    #[test]
    fn every_change_to_the_store_is_journaled_once() {
        let seed = Seed {
            vaults: vec![vault()],
            ..Seed::default()
        };
        let mut store = VaultStore::from_seed(&seed).unwrap();
        assert!(store.take_changes().is_empty());
        let edited = json!({"id": "x", "v": 1});
        store.replace(0, edited.clone());
        let path = VaultPath::parse_id(
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
}
