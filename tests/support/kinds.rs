//! What the tests of storage accounts and registries share (`tests/kinds.rs`,
//! `tests/kinds_attacks.rs`): their ids, the resources as ARM returns them, and how a run's
//! JSON report is read.

use serde_json::{json, Value};

use super::{stderr, stdout, RESOURCE_GROUP, SUBSCRIPTION};

pub fn storage_id(name: &str) -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Storage/storageAccounts/{name}")
}

pub fn registry_id(name: &str) -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.ContainerRegistry/registries/{name}")
}

/// A storage account as ARM returns it (2025-06-01): a vnet rule, a resource instance rule, an
/// IPv6 rule, `Deny` with logging and metrics let through.
pub fn storage(name: &str, ip_rules: &[&str]) -> Value {
    json!({
        "id": storage_id(name),
        "name": name,
        "type": "Microsoft.Storage/storageAccounts",
        "location": "westeurope",
        "kind": "StorageV2",
        "sku": {"name": "Standard_LRS", "tier": "Standard"},
        "tags": {},
        "properties": {
            "publicNetworkAccess": "Enabled",
            "minimumTlsVersion": "TLS1_2",
            "allowSharedKeyAccess": false,
            "networkAcls": {
                "bypass": "Logging, Metrics, AzureServices",
                "virtualNetworkRules": [{
                    "id": format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/vnet-agents/subnets/{name}"),
                    "action": "Allow",
                    "state": "Succeeded"
                }],
                "resourceAccessRules": [{
                    "tenantId": "00000000-0000-0000-0000-0000000000aa",
                    "resourceId": format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-data/providers/Microsoft.Synapse/workspaces/syn-{name}")
                }],
                "ipv6Rules": [{"value": "2603:1020:206::/48", "action": "Allow"}],
                "ipRules": ip_rules.iter().map(|r| json!({"value": r, "action": "Allow"})).collect::<Vec<_>>(),
                "defaultAction": "Deny"
            }
        }
    })
}

/// A container registry of `sku` as ARM returns it.
pub fn registry(name: &str, sku: &str, ip_rules: &[&str]) -> Value {
    json!({
        "id": registry_id(name),
        "name": name,
        "type": "Microsoft.ContainerRegistry/registries",
        "location": "westeurope",
        "sku": {"name": sku, "tier": sku},
        "tags": {},
        "properties": {
            "loginServer": format!("{name}.azurecr.io"),
            "adminUserEnabled": false,
            "publicNetworkAccess": "Enabled",
            "networkRuleBypassOptions": "AzureServices",
            "networkRuleSet": {
                "defaultAction": "Deny",
                "ipRules": ip_rules.iter().map(|r| json!({"action": "Allow", "value": r})).collect::<Vec<_>>()
            }
        }
    })
}

/// `resource` with the discovery tag `tagfence` set to `value`.
pub fn tagged(mut resource: Value, value: &str) -> Value {
    resource["tags"] = json!({ "tagfence": value });
    resource
}

/// A run's JSON report on stdout (the run's stdout and stderr in the panic when it is none).
pub fn report_of(output: &std::process::Output) -> Value {
    serde_json::from_str(&stdout(output))
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(output), stderr(output)))
}

/// Each resource of a report as (name, kind, outcome status), sorted.
pub fn outcomes(report: &Value) -> Vec<(String, String, String)> {
    let mut found: Vec<(String, String, String)> = report["vaults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                v["kind"].as_str().unwrap().to_owned(),
                v["outcome"]["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}
