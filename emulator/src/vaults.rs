//! The pure PATCH/PUT semantics of `Microsoft.KeyVault/vaults`.
//!
//! Vaults are kept as the JSON ARM returns from GET (in [`crate::store`]). The write semantics,
//! which `keyvault.json` in Azure/azure-rest-api-specs does not state, follow JSON merge-patch
//! and what Terraform's azurerm provider relies on: PATCH merges at the top level of `properties`
//! and replaces a present `networkAcls` wholesale (the client must send all four fields, since
//! how ARM treats an omitted one is UNVERIFIED); PUT replaces `properties` entirely. Both
//! validate first and only then store, so a refused write leaves the vault unchanged.

use serde_json::{Map, Value};

use crate::acl::{existing_rule_values, normalise_network_acls, RulePolicy};
use crate::error::ArmError;
use crate::paths::ResourcePath;
use crate::writes::{apply_tags, mark_succeeded, object_entry, Stamp};

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
    path: &ResourcePath,
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
    path: &ResourcePath,
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
    path: &ResourcePath,
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
fn keep_vault_uri(properties: &mut Map<String, Value>, current: &Value, path: &ResourcePath) {
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

    fn path() -> ResourcePath {
        ResourcePath::parse_id(
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
}
