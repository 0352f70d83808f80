//! Firewall kinds: the Azure resources whose firewall takes literal IPv4 rules and not Service
//! Tags, and what their rules look like and cost.
//!
//! The engine (selection, merge, fit, ownership, gate, verify) is the same for every kind; a kind
//! is a small, declared difference, and this module is the only place where one kind's rule
//! facts live. Where each firewall is on the wire (resource type, api-version, the role actions)
//! is the Azure shell's part of the kind (`azure::kinds`).
//!
//! The facts, with their sources, are tabled in `docs/kinds.md`; what is unconfirmed is marked
//! UNVERIFIED there and here.

use std::fmt;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::fit::Slash31;

/// A kind of firewall tagfence writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Azure Key Vault: `Microsoft.KeyVault/vaults`, `properties.networkAcls`.
    KeyVault,
    /// Azure Storage account: `Microsoft.Storage/storageAccounts`, `properties.networkAcls`.
    StorageAccount,
    /// Azure Container Registry (Premium): `Microsoft.ContainerRegistry/registries`,
    /// `properties.networkRuleSet`.
    ContainerRegistry,
}

/// How a rule for one address is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingleAddress {
    /// `a.b.c.d/32`.
    WithPrefix,
    /// `a.b.c.d`, no prefix: the kind refuses `/32` ranges.
    Bare,
}

/// A field of the firewall object that a write depends on. Which ones a kind's reads must carry
/// is [`Kind::required_fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSetField {
    DefaultAction,
    Bypass,
    IpRules,
    VirtualNetworkRules,
}

impl RuleSetField {
    /// The field's name inside the firewall object.
    pub fn name(self) -> &'static str {
        match self {
            RuleSetField::DefaultAction => "defaultAction",
            RuleSetField::Bypass => "bypass",
            RuleSetField::IpRules => "ipRules",
            RuleSetField::VirtualNetworkRules => "virtualNetworkRules",
        }
    }
}

impl Kind {
    /// Every kind, in the order they are listed to people.
    pub const ALL: [Kind; 3] = [
        Kind::KeyVault,
        Kind::StorageAccount,
        Kind::ContainerRegistry,
    ];

    /// The kind's name where it is stored or configured (`key_vault`, `storage_account`,
    /// `container_registry`). Never changes: run records and settings hold it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::KeyVault => "key_vault",
            Kind::StorageAccount => "storage_account",
            Kind::ContainerRegistry => "container_registry",
        }
    }

    /// The kind by its [`Kind::name`] (case-insensitive; `-` taken for `_`).
    pub fn from_name(name: &str) -> Option<Kind> {
        let name = name.trim().replace('-', "_");
        Kind::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(&name))
    }

    /// What people call one: `key vault`, `storage account`, `container registry`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::KeyVault => "key vault",
            Kind::StorageAccount => "storage account",
            Kind::ContainerRegistry => "container registry",
        }
    }

    /// The most IPv4 rules one firewall of the kind holds.
    ///
    /// - Key Vault: "A maximum of 200 virtual network rules and 1000 IPv4 rules are allowed"
    ///   (Microsoft Learn, "Configure Azure Key Vault networking settings").
    /// - Storage: "You can have a maximum of 400 IP rules" per account (Microsoft Learn,
    ///   "Azure Storage firewall rules"; the same 400 is in "Scalability and performance targets
    ///   for standard storage accounts").
    /// - Container Registry: "Each registry supports a maximum of 100 IP access rules"
    ///   (Microsoft Learn, "Configure public IP network rules"); the newer tiers table says 200
    ///   for Premium. The documents conflict, so the lower figure holds (a `max_rules` setting
    ///   cannot raise it).
    pub fn max_rules(self) -> usize {
        match self {
            Kind::KeyVault => 1000,
            Kind::StorageAccount => 400,
            Kind::ContainerRegistry => 100,
        }
    }

    /// What a resource of the kind is called in messages about it: `vault`, `storage account`,
    /// `registry`.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::KeyVault => "vault",
            Kind::StorageAccount => "storage account",
            Kind::ContainerRegistry => "registry",
        }
    }

    /// The ARM resource type, as ids and documents spell it (matched without case).
    pub fn resource_type(self) -> &'static str {
        match self {
            Kind::KeyVault => "Microsoft.KeyVault/vaults",
            Kind::StorageAccount => "Microsoft.Storage/storageAccounts",
            Kind::ContainerRegistry => "Microsoft.ContainerRegistry/registries",
        }
    }

    /// The kind whose resource type is `resource_type` (case-insensitive).
    pub fn from_resource_type(resource_type: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| {
            kind.resource_type()
                .eq_ignore_ascii_case(resource_type.trim())
        })
    }

    /// The property of `properties` that holds the firewall.
    pub fn rule_set_property(self) -> &'static str {
        match self {
            Kind::KeyVault | Kind::StorageAccount => "networkAcls",
            Kind::ContainerRegistry => "networkRuleSet",
        }
    }

    /// The fields of the firewall object every whole read carries, and that a write must
    /// therefore send back (a write without them would have ARM apply its defaults: `bypass`
    /// back to `AzureServices`, the virtual network rules dropped).
    ///
    /// Key Vault's and Storage's answers carry all four (Microsoft's getVault and
    /// StorageAccountGetProperties examples do). A registry's `networkRuleSet` has only
    /// `defaultAction` and `ipRules` (its trusted-services switch, `networkRuleBypassOptions`,
    /// is a property of the registry, outside the rule set, and is never sent).
    pub fn required_fields(self) -> &'static [RuleSetField] {
        match self {
            Kind::KeyVault | Kind::StorageAccount => &[
                RuleSetField::DefaultAction,
                RuleSetField::Bypass,
                RuleSetField::IpRules,
                RuleSetField::VirtualNetworkRules,
            ],
            Kind::ContainerRegistry => &[RuleSetField::DefaultAction, RuleSetField::IpRules],
        }
    }

    /// How a one-address rule is written. Key Vault takes both forms and stores `/32` (its
    /// examples show `"124.56.78.91/32"` read back for `"124.56.78.91"`); Storage refuses `/32`
    /// ("small address ranges using /31 or /32 prefix sizes are not supported"); Container
    /// Registry documents "IPv4 address or CIDR range" and its examples use bare addresses
    /// (whether it takes `/32` is UNVERIFIED, so it gets the documented form).
    pub fn single_address(self) -> SingleAddress {
        match self {
            Kind::KeyVault => SingleAddress::WithPrefix,
            Kind::StorageAccount | Kind::ContainerRegistry => SingleAddress::Bare,
        }
    }

    /// How /31s must be written, when the kind leaves no choice: Storage refuses /31 ranges, so
    /// a /31 is two single-address rules and costs two slots. `None`: the setting `slash31`
    /// decides (Key Vault and Container Registry: whether they take a /31 is UNVERIFIED, and the
    /// default, `split`, is safe either way).
    pub fn forced_slash31(self) -> Option<Slash31> {
        match self {
            Kind::StorageAccount => Some(Slash31::Split),
            Kind::KeyVault | Kind::ContainerRegistry => None,
        }
    }

    /// Whether the kind accepts `net` as one rule as tagfence writes it (the prefix lengths it
    /// takes). `Err` says why not.
    ///
    /// # Errors
    /// A /31 on a kind that refuses /31 ranges.
    pub fn accepts(self, net: Ipv4Net) -> Result<(), &'static str> {
        match (self, net.prefix_len()) {
            (Kind::StorageAccount, 31) => {
                Err("storage accounts refuse /31 ranges (a /31 is written as its two addresses)")
            }
            _ => Ok(()),
        }
    }

    /// Whether a rule value spelled `text` may be sent: Storage refuses the `/31` and `/32`
    /// spellings, and tagfence writes no `/32` where single addresses are bare.
    pub fn spelling_accepted(self, text: &str) -> bool {
        match self.single_address() {
            SingleAddress::WithPrefix => true,
            SingleAddress::Bare => {
                !(text.ends_with("/32") || (self == Kind::StorageAccount && text.ends_with("/31")))
            }
        }
    }

    /// The rule value for `net` in the kind's spelling.
    pub fn rule_value(self, net: Ipv4Net) -> String {
        match (self.single_address(), net.prefix_len()) {
            (SingleAddress::Bare, 32) => net.addr().to_string(),
            _ => net.to_string(),
        }
    }

    /// The `ipRules` entry tagfence writes for `net`. Storage and Container Registry rules carry
    /// `action: Allow` (the only action either takes); Key Vault's have only `value`.
    pub fn rule_entry(self, net: Ipv4Net) -> Value {
        match self {
            Kind::KeyVault => json!({"value": self.rule_value(net)}),
            Kind::StorageAccount => json!({"value": self.rule_value(net), "action": "Allow"}),
            Kind::ContainerRegistry => json!({"action": "Allow", "value": self.rule_value(net)}),
        }
    }

    /// The firewall object, IP rules aside, that tagfence gives a firewall it initialises on
    /// request: what a resource without one already does (every network allowed; Azure services
    /// allowed where the object has the switch).
    pub fn initial_rule_set(self) -> Map<String, Value> {
        let value = match self {
            Kind::KeyVault | Kind::StorageAccount => json!({
                "defaultAction": "Allow",
                "bypass": "AzureServices",
                "virtualNetworkRules": [],
            }),
            Kind::ContainerRegistry => json!({"defaultAction": "Allow"}),
        };
        let Value::Object(map) = value else {
            unreachable!("a JSON object literal")
        };
        map
    }

    /// Whether requests from the resource's own Azure region reach it from private addresses,
    /// which IP rules cannot allow: "Services deployed in the same region as the storage account
    /// use private Azure IP addresses for communication" (Microsoft Learn, "Azure Storage
    /// firewall rules"). Documented for Storage only.
    pub fn same_region_is_private(self) -> bool {
        self == Kind::StorageAccount
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    #[test]
    fn names_round_trip_and_are_the_stored_spelling() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                Value::String(kind.name().to_owned())
            );
        }
        assert_eq!(
            Kind::from_name("Storage-Account"),
            Some(Kind::StorageAccount)
        );
        assert_eq!(Kind::from_name("cosmos"), None);
    }

    #[test]
    fn single_addresses_are_written_in_each_kinds_form() {
        let one = net("52.1.2.3/32");
        assert_eq!(
            Kind::KeyVault.rule_entry(one),
            json!({"value": "52.1.2.3/32"})
        );
        assert_eq!(
            Kind::StorageAccount.rule_entry(one),
            json!({"value": "52.1.2.3", "action": "Allow"})
        );
        assert_eq!(
            Kind::ContainerRegistry.rule_entry(one),
            json!({"action": "Allow", "value": "52.1.2.3"})
        );
        let range = net("52.1.2.0/24");
        for kind in Kind::ALL {
            assert_eq!(kind.rule_entry(range)["value"], json!("52.1.2.0/24"));
            assert!(kind.spelling_accepted(&kind.rule_value(one)));
            assert!(kind.spelling_accepted(&kind.rule_value(range)));
        }
    }

    #[test]
    fn storage_refuses_31s_and_32s_as_ranges() {
        let kind = Kind::StorageAccount;
        assert_eq!(kind.forced_slash31(), Some(Slash31::Split));
        assert!(kind.accepts(net("52.1.2.2/31")).is_err());
        assert!(kind.accepts(net("52.1.2.3/32")).is_ok());
        assert!(!kind.spelling_accepted("52.1.2.3/32"));
        assert!(!kind.spelling_accepted("52.1.2.2/31"));
        assert!(kind.spelling_accepted("52.1.2.0/30"));
        assert!(Kind::KeyVault.accepts(net("52.1.2.2/31")).is_ok());
        assert!(Kind::KeyVault.spelling_accepted("52.1.2.3/32"));
    }

    #[test]
    fn limits_and_paths() {
        assert_eq!(Kind::KeyVault.max_rules(), 1000);
        assert_eq!(Kind::StorageAccount.max_rules(), 400);
        assert_eq!(
            Kind::ContainerRegistry.rule_set_property(),
            "networkRuleSet"
        );
        assert!(Kind::StorageAccount.same_region_is_private());
        assert!(!Kind::KeyVault.same_region_is_private());
        for kind in Kind::ALL {
            let initial = kind.initial_rule_set();
            assert_eq!(initial["defaultAction"], json!("Allow"));
            for field in kind.required_fields() {
                assert!(
                    *field == RuleSetField::IpRules || initial.contains_key(field.name()),
                    "{kind}: {}",
                    field.name()
                );
            }
        }
    }
}
