//! What every ARM write of a resource does, whatever its kind: `systemData` stamped, `tags`
//! replaced, `provisioningState` set, and the PATCH model the emulator uses for every kind — JSON
//! merge-patch at the top level of `properties`, the firewall object replaced whole.
//!
//! Pure: JSON in, JSON or an ARM error out.

use serde_json::{Map, Value};

use crate::error::ArmError;

/// The object under `key`, created (or reset) when missing or not an object.
pub(crate) fn object_entry<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> &'a mut Map<String, Value> {
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

/// Who writes a resource and when: ARM's `systemData` (common-types `systemData`; keyvault.json's
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

    /// Sets `systemData`: on a new resource all of it; on a stored one the `lastModified…`
    /// fields, when it has `systemData` (a seed without any is kept without, as seeds are
    /// verbatim: tests compare such resources before and after a write).
    pub fn apply(&self, root: &mut Map<String, Value>, created: bool) {
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

/// PATCH replaces tags only when sent; PUT replaces them always (omitted means none).
pub(crate) fn apply_tags(
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

pub(crate) fn mark_succeeded(root: &mut Map<String, Value>) {
    object_entry(root, "properties").insert(
        "provisioningState".to_owned(),
        Value::String("Succeeded".to_owned()),
    );
}

/// The PATCH of a storage account or a registry: `properties` merged at the top level (`null`
/// removes a property), a present firewall object (`firewall_key`) replaced whole by what
/// `normalise` makes of it (validation first: a refusal leaves nothing changed), `sku` replaced
/// when sent, `tags` replaced when sent, then `provisioningState` and `systemData`. `normalise`
/// also gets the `sku` the resource will have.
pub(crate) fn merge_patch(
    current: &Value,
    body: &Value,
    firewall_key: &str,
    normalise: impl Fn(&Value, Option<&Value>) -> Result<Value, ArmError>,
    stamp: &Stamp,
) -> Result<Value, ArmError> {
    let Value::Object(body) = body else {
        return Err(ArmError::invalid_content("expected a JSON object"));
    };
    let mut resource = current.clone();
    let Some(root) = resource.as_object_mut() else {
        return Err(ArmError::invalid_content(
            "the stored resource is not an object",
        ));
    };
    match body.get("sku") {
        None | Some(Value::Null) => {}
        Some(sku @ Value::Object(_)) => {
            root.insert("sku".to_owned(), sku.clone());
        }
        Some(_) => return Err(ArmError::invalid_content("\"sku\" must be an object")),
    }
    let sku = root.get("sku").cloned();
    match body.get("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(patch)) => {
            let properties = object_entry(root, "properties");
            for (key, value) in patch {
                if value.is_null() {
                    properties.remove(key);
                } else if key == firewall_key {
                    properties.insert(key.clone(), normalise(value, sku.as_ref())?);
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
    Ok(resource)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            by: "client".into(),
            by_type: "ManagedIdentity",
            at: "2026-01-01T00:00:00.0000000Z".into(),
        }
    }

    #[test]
    fn a_merge_patch_replaces_the_firewall_whole_and_merges_the_rest() {
        let current = json!({"sku": {"name": "Premium"}, "tags": {"a": "b"},
            "properties": {"networkRuleSet": {"defaultAction": "Deny", "ipRules": [1]}, "publicNetworkAccess": "Enabled", "x": 1}});
        let body = json!({"properties": {"networkRuleSet": {"defaultAction": "Allow"}, "x": null, "y": 2}});
        let patched = merge_patch(
            &current,
            &body,
            "networkRuleSet",
            |value, sku| {
                assert_eq!(sku, Some(&json!({"name": "Premium"})));
                Ok(value.clone())
            },
            &stamp(),
        )
        .unwrap();
        assert_eq!(
            patched,
            json!({"sku": {"name": "Premium"}, "tags": {"a": "b"}, "properties": {
                "networkRuleSet": {"defaultAction": "Allow"}, "publicNetworkAccess": "Enabled", "y": 2,
                "provisioningState": "Succeeded"}})
        );
        let refused = merge_patch(
            &current,
            &body,
            "networkRuleSet",
            |_, _| Err(ArmError::bad_request("no")),
            &stamp(),
        );
        assert!(refused.is_err());
        for bad in [
            json!([]),
            json!({"properties": 1}),
            json!({"sku": "Premium"}),
        ] {
            assert!(merge_patch(&current, &bad, "k", |v, _| Ok(v.clone()), &stamp()).is_err());
        }
    }
}
