//! A vault's firewall as Azure Resource Manager returns it, reduced to what tagfence plans with.
//!
//! The shape is `Vault.properties.networkAcls` (azure-interfaces.md §2.1). Everything but the IP
//! rules is kept verbatim so that a write can send it back unchanged: ARM replaces `networkAcls`
//! wholesale on PATCH (§2.2), so dropping a field here would erase it on the vault.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cidr;

/// The firewall of one vault as read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveAcl {
    /// The vault's name, when the document has one.
    pub vault_name: Option<String>,
    /// `Allow` or `Deny`; `None` when the vault has no `networkAcls` at all.
    pub default_action: Option<String>,
    /// `AzureServices` or `None`; ARM's default when absent is `AzureServices`.
    pub bypass: Option<String>,
    /// The IP rules, normalised (bare addresses as `/32`), in the vault's order, deduplicated.
    pub ip_rules: Vec<Ipv4Net>,
    /// Virtual network rules, verbatim.
    pub virtual_network_rules: Vec<Value>,
    /// `Enabled`/`Disabled`; when `Disabled` the IP rules have no effect (§2.2).
    pub public_network_access: Option<String>,
}

/// Why a vault document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("the vault document is not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("the vault holds IP rule '{value}', which tagfence cannot read: {reason}")]
    Rule {
        value: String,
        reason: cidr::RuleError,
    },
}

#[derive(Deserialize)]
struct VaultDoc {
    name: Option<String>,
    #[serde(default)]
    properties: VaultProperties,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct VaultProperties {
    network_acls: Option<NetworkAcls>,
    public_network_access: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NetworkAcls {
    default_action: Option<String>,
    bypass: Option<String>,
    #[serde(default)]
    ip_rules: Option<Vec<IpRule>>,
    #[serde(default)]
    virtual_network_rules: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct IpRule {
    value: String,
}

impl LiveAcl {
    /// A vault with no firewall rules (used when no live state is given).
    pub fn empty() -> Self {
        LiveAcl {
            vault_name: None,
            default_action: None,
            bypass: None,
            ip_rules: Vec::new(),
            virtual_network_rules: Vec::new(),
            public_network_access: None,
        }
    }

    /// Reads a vault document as ARM's `GET …/vaults/{name}` returns it.
    ///
    /// # Errors
    /// [`LiveError`] when it is not JSON or holds an IP rule that is not an IPv4 prefix.
    pub fn from_vault_json(bytes: &[u8]) -> Result<LiveAcl, LiveError> {
        let doc: VaultDoc = serde_json::from_slice(bytes).map_err(LiveError::Json)?;
        let acls = doc.properties.network_acls.unwrap_or_default();
        let values: Vec<String> = acls
            .ip_rules
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.value)
            .collect();
        Ok(LiveAcl {
            vault_name: doc.name,
            default_action: acls.default_action,
            bypass: acls.bypass,
            ip_rules: normalise_rules(&values)?,
            virtual_network_rules: acls.virtual_network_rules.unwrap_or_default(),
            public_network_access: doc.properties.public_network_access,
        })
    }

    /// Whether the vault ignores its IP rules because public network access is off.
    pub fn public_access_disabled(&self) -> bool {
        self.public_network_access
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
    }
}

/// Normalises rule values as Key Vault stores them: a bare address becomes a `/32`; duplicates
/// (`1.2.3.4` and `1.2.3.4/32`) are kept once, in first-seen order.
///
/// # Errors
/// [`LiveError::Rule`] for a value that is not an IPv4 address or canonical prefix.
pub fn normalise_rules(values: &[String]) -> Result<Vec<Ipv4Net>, LiveError> {
    let mut rules: Vec<Ipv4Net> = Vec::with_capacity(values.len());
    let mut seen = std::collections::HashSet::with_capacity(values.len());
    for value in values {
        let rule = cidr::parse_rule(value).map_err(|reason| LiveError::Rule {
            value: value.clone(),
            reason,
        })?;
        if seen.insert(rule) {
            rules.push(rule);
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_arm_vault_shape() {
        let doc = r#"{"id":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-prod","name":"kv-prod",
          "properties":{"publicNetworkAccess":"Enabled","networkAcls":{"defaultAction":"Deny","bypass":"AzureServices",
          "ipRules":[{"value":"124.56.78.91"},{"value":"124.56.78.91/32"},{"value":"20.37.158.0/23"}],
          "virtualNetworkRules":[{"id":"/subscriptions/s/resourcegroups/rg/providers/microsoft.network/virtualnetworks/v/subnets/a","ignoreMissingVnetServiceEndpoint":false}]}}}"#;
        let live = LiveAcl::from_vault_json(doc.as_bytes()).unwrap();
        assert_eq!(live.vault_name.as_deref(), Some("kv-prod"));
        assert_eq!(live.default_action.as_deref(), Some("Deny"));
        assert_eq!(live.bypass.as_deref(), Some("AzureServices"));
        assert_eq!(
            live.ip_rules
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["124.56.78.91/32", "20.37.158.0/23"]
        );
        assert_eq!(live.virtual_network_rules.len(), 1);
        assert!(!live.public_access_disabled());
    }

    #[test]
    fn a_vault_without_acls_has_no_rules() {
        let live = LiveAcl::from_vault_json(
            br#"{"name":"kv","properties":{"publicNetworkAccess":"Disabled"}}"#,
        )
        .unwrap();
        assert!(live.ip_rules.is_empty() && live.default_action.is_none());
        assert!(live.public_access_disabled());
    }

    #[test]
    fn refuses_unreadable_rules_naming_them() {
        let err = LiveAcl::from_vault_json(
            br#"{"properties":{"networkAcls":{"ipRules":[{"value":"1.2.3.4/33"}]}}}"#,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "the vault holds IP rule '1.2.3.4/33', which tagfence cannot read: '1.2.3.4/33' is not an IPv4 address or CIDR prefix");
        assert!(LiveAcl::from_vault_json(b"{").is_err());
    }
}
