//! Each kind's firewall as the out-of-band edits and the test hooks see it: where its IP rules
//! live, the form an edited rule is stored in, and the shape a storage account always reads with.
//!
//! | Kind | Firewall | Rule entry an out-of-band edit writes |
//! |---|---|---|
//! | Key Vault | `properties.networkAcls` | `{"value": "1.2.3.4/32"}` (a bare address gains `/32`, as Key Vault stores it) |
//! | Storage account | `properties.networkAcls` | `{"value": "1.2.3.4", "action": "Allow"}` (stored as typed) |
//! | Container registry | `properties.networkRuleSet` | `{"action": "Allow", "value": "1.2.3.4"}` (stored as typed) |
//!
//! Pure: JSON in, JSON out.

use serde_json::{json, Map, Value};

use crate::ipv4;
use crate::paths::Kind;

/// The member of `properties` that holds the kind's firewall.
pub(crate) fn firewall_key(kind: Kind) -> &'static str {
    match kind {
        Kind::Vault | Kind::StorageAccount => "networkAcls",
        Kind::Registry => "networkRuleSet",
    }
}

/// The `ipRules[].value` strings of a resource of `kind`, as stored.
pub(crate) fn rule_values(kind: Kind, resource: &Value) -> Vec<String> {
    resource
        .get("properties")
        .and_then(|properties| properties.get(firewall_key(kind)))
        .and_then(|firewall| firewall.get("ipRules"))
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

/// The form a rule a person types is stored in: Key Vault's (a bare IPv4 address gains `/32`);
/// storage accounts and registries keep a single address as typed (Microsoft Learn, "Azure
/// Storage network security limitations": ranges in CIDR notation "or as individual IP addresses
/// like 16.17.18.19").
pub(crate) fn stored_form(kind: Kind, value: &str) -> String {
    match kind {
        Kind::Vault => ipv4::stored_form(value),
        Kind::StorageAccount | Kind::Registry => value.to_owned(),
    }
}

/// One rule entry in the kind's shape: `{"value"}` for Key Vault, with `"action": "Allow"` for
/// the others (storage.json and the ACR spec's `IPRule`, whose `action` defaults to `Allow`).
fn rule_entry(kind: Kind, value: &str) -> Value {
    match kind {
        Kind::Vault => json!({"value": stored_form(kind, value)}),
        Kind::StorageAccount => json!({"value": value, "action": "Allow"}),
        Kind::Registry => json!({"action": "Allow", "value": value}),
    }
}

/// Replaces a resource's IP rules out of band, as a person editing the firewall would, with
/// entries in the kind's shape. A resource without a firewall object gets one with the portal's
/// "selected networks" defaults (`defaultAction: Deny`; the emulator's choice, as for vaults).
pub(crate) fn set_rule_values(kind: Kind, resource: &mut Value, values: Vec<String>) {
    let rules: Vec<Value> = values.iter().map(|value| rule_entry(kind, value)).collect();
    let Some(root) = resource.as_object_mut() else {
        return;
    };
    let properties = object_entry(root, "properties");
    let firewall = properties
        .entry(firewall_key(kind))
        .or_insert_with(|| match kind {
            Kind::Vault | Kind::StorageAccount => {
                json!({"bypass": "AzureServices", "defaultAction": "Deny", "virtualNetworkRules": []})
            }
            Kind::Registry => json!({"defaultAction": "Deny"}),
        });
    if !firewall.is_object() {
        *firewall = Value::Object(Map::new());
    }
    if let Some(firewall) = firewall.as_object_mut() {
        firewall.insert("ipRules".to_owned(), Value::Array(rules));
    }
    read_shape(kind, resource);
}

/// Makes a stored resource read as the kind's resource provider always returns it. A storage
/// account's `networkAcls` always holds `bypass`, `virtualNetworkRules`, `ipRules` and
/// `defaultAction`, with storage.json's defaults (`AzureServices`, `[]`, `[]`, `Allow`) where
/// missing, and every ipRule carries `action` (default `Allow`): storage.json `NetworkRuleSet`
/// and `IPRule` (2025-01-01). Vaults and registries are kept as they are (a vault seed is
/// verbatim; whether a registry without a rule set reads with an empty one is UNVERIFIED).
pub(crate) fn read_shape(kind: Kind, resource: &mut Value) {
    if kind != Kind::StorageAccount {
        return;
    }
    let Some(root) = resource.as_object_mut() else {
        return;
    };
    let properties = object_entry(root, "properties");
    let acls = properties
        .entry("networkAcls")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(acls) = acls.as_object_mut() else {
        return;
    };
    for (key, default) in [
        ("bypass", json!("AzureServices")),
        ("virtualNetworkRules", json!([])),
        ("ipRules", json!([])),
        ("defaultAction", json!("Allow")),
    ] {
        let slot = acls.entry(key).or_insert(Value::Null);
        if slot.is_null() {
            *slot = default;
        }
    }
    if let Some(rules) = acls.get_mut("ipRules").and_then(Value::as_array_mut) {
        for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
            rule.entry("action")
                .or_insert_with(|| Value::String("Allow".to_owned()));
        }
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

/// An IP rule entry as Storage and Container Registry store it: `action` is `Allow`, added when
/// missing; `Err` with the action given when it is anything else (the only action either takes).
pub(crate) fn with_allow_action(entry: &Map<String, Value>) -> Result<Value, Value> {
    let mut stored = entry.clone();
    match entry.get("action") {
        None | Some(Value::Null) => {
            stored.insert("action".to_owned(), Value::String("Allow".to_owned()));
        }
        Some(Value::String(action)) if action.eq_ignore_ascii_case("Allow") => {}
        Some(other) => return Err(other.clone()),
    }
    Ok(Value::Object(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_reads_and_writes_its_own_rule_list() {
        let mut vault = json!({"properties": {}});
        set_rule_values(Kind::Vault, &mut vault, vec!["3.3.3.3".into()]);
        assert_eq!(rule_values(Kind::Vault, &vault), ["3.3.3.3/32"]);
        assert_eq!(vault["properties"]["networkAcls"]["defaultAction"], "Deny");

        let mut account = json!({"properties": {"networkAcls": {"defaultAction": "Deny", "resourceAccessRules": [1]}}});
        set_rule_values(Kind::StorageAccount, &mut account, vec!["3.3.3.3".into()]);
        assert_eq!(
            account["properties"]["networkAcls"],
            json!({"defaultAction": "Deny", "resourceAccessRules": [1], "bypass": "AzureServices",
                   "virtualNetworkRules": [], "ipRules": [{"value": "3.3.3.3", "action": "Allow"}]})
        );
        assert_eq!(rule_values(Kind::StorageAccount, &account), ["3.3.3.3"]);

        let mut registry =
            json!({"properties": {"networkRuleSet": {"defaultAction": "Deny", "ipRules": []}}});
        set_rule_values(Kind::Registry, &mut registry, vec!["4.4.4.0/24".into()]);
        assert_eq!(
            registry["properties"]["networkRuleSet"],
            json!({"defaultAction": "Deny", "ipRules": [{"action": "Allow", "value": "4.4.4.0/24"}]})
        );
        assert_eq!(rule_values(Kind::Registry, &registry), ["4.4.4.0/24"]);
        assert!(rule_values(Kind::Vault, &registry).is_empty());
    }

    #[test]
    fn a_storage_account_reads_with_the_documented_defaults() {
        let mut bare = json!({"id": "x"});
        read_shape(Kind::StorageAccount, &mut bare);
        assert_eq!(
            bare["properties"]["networkAcls"],
            json!({"bypass": "AzureServices", "virtualNetworkRules": [], "ipRules": [], "defaultAction": "Allow"})
        );
        let mut sparse = json!({"properties": {"networkAcls": {"defaultAction": "Deny", "ipRules": [{"value": "1.2.3.4"}], "bypass": null}}});
        read_shape(Kind::StorageAccount, &mut sparse);
        assert_eq!(
            sparse["properties"]["networkAcls"],
            json!({"defaultAction": "Deny", "ipRules": [{"value": "1.2.3.4", "action": "Allow"}],
                   "bypass": "AzureServices", "virtualNetworkRules": []})
        );
        let mut vault = json!({"id": "x"});
        read_shape(Kind::Vault, &mut vault);
        assert_eq!(vault, json!({"id": "x"}));
    }
}
