//! Validation and normalisation of `properties.networkAcls`, the part of a vault tagfence writes.
//!
//! Key Vault refuses some firewall rules and rewrites others (the spec example
//! `createVaultWithNetworkAcls.json` in Azure/azure-rest-api-specs; Microsoft Learn,
//! learn.microsoft.com/azure/key-vault/general/network-security; Azure/azure-powershell#11471):
//! a bare IPv4 address comes back as `/32`, subnet ids come back lower-cased, and private or
//! reserved ranges, IPv6, more than 1000 IP rules or more than 200 virtual network rules are
//! refused with 400 `BadRequest`. The emulator copies that so a client that only works against a
//! lenient fake fails here first. Host bits are not cleared (ARM keeps `20.37.158.1/23` as sent).
//! A value refused here may still be stored as sent, per [`OddRulePolicy`] (UNVERIFIED): by default
//! when the vault already holds exactly that value.
//! Everything here is pure: JSON in, JSON or an ARM error message out.

use serde_json::{Map, Value};

use crate::ipv4::{forbidden_range, parse_ipv4_rule, RuleProblem};
use crate::policy::{OddRulePolicy, Slash31Policy};

/// How PATCH/PUT validate ipRule values: the two UNVERIFIED policies of [`crate::Config`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RulePolicy {
    pub slash31: Slash31Policy,
    pub odd_rules: OddRulePolicy,
}

impl From<Slash31Policy> for RulePolicy {
    fn from(slash31: Slash31Policy) -> Self {
        RulePolicy {
            slash31,
            odd_rules: OddRulePolicy::default(),
        }
    }
}

impl RulePolicy {
    /// Whether an ipRule that validation refused is stored as sent anyway: `value` is the rule's
    /// `value` member as sent; `existing` the `value` members the vault holds now.
    fn keeps_refused(self, value: Option<&Value>, existing: &[Value]) -> bool {
        match self.odd_rules {
            OddRulePolicy::AcceptAll => true,
            OddRulePolicy::RejectAll => false,
            OddRulePolicy::KeepExisting => value.is_some_and(|value| existing.contains(value)),
        }
    }
}

/// The `value` members of a vault's ipRules and the `id` members of its virtual network rules
/// as stored (any JSON type), for [`OddRulePolicy::KeepExisting`].
pub(crate) fn existing_rule_values(vault: &Value) -> Vec<Value> {
    let members = |pointer: &str, key: &str| -> Vec<Value> {
        vault
            .pointer(pointer)
            .and_then(Value::as_array)
            .map(|rules| {
                rules
                    .iter()
                    .filter_map(|rule| rule.get(key).cloned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut values = members("/properties/networkAcls/ipRules", "value");
    values.extend(members("/properties/networkAcls/virtualNetworkRules", "id"));
    values
}

/// Most IPv4 rules a vault may hold (KV-NETDOC).
pub(crate) const MAX_IP_RULES: usize = 1000;
/// Most virtual network rules a vault may hold (KV-NETDOC).
pub(crate) const MAX_VNET_RULES: usize = 200;

/// Checks one ipRule value and returns the form to store, or the ARM error message.
fn check_ip_rule(index: usize, value: &str, slash31: Slash31Policy) -> Result<String, String> {
    let at =
        format!("Invalid value found at properties.networkAcls.ipRules[{index}].value: {value}");
    let rule = match parse_ipv4_rule(value) {
        Ok(rule) => rule,
        Err(RuleProblem::Ipv6) => {
            return Err(format!(
                "{at} is an IPv6 address range; only IPv4 addresses are supported"
            ))
        }
        Err(RuleProblem::Malformed) => {
            return Err(format!("{at} is not a valid IPv4 address or CIDR range"))
        }
    };
    if let Some(range) = forbidden_range(&rule) {
        return Err(format!("{at} belongs to forbidden range {range}"));
    }
    if rule.prefix == 31 && slash31 == Slash31Policy::Reject {
        return Err(format!(
            "{at} has a /31 prefix, which is not supported; use two single IP addresses instead"
        ));
    }
    Ok(rule.stored)
}

/// Validates a `networkAcls` object from a request body and returns what ARM would store.
///
/// Only `ipRules[].value` and `virtualNetworkRules[].id` are rewritten; every other field is kept
/// as sent. `null` arrays are kept as `null`. An ipRule that validation refuses is kept verbatim
/// instead when `policy.odd_rules` allows it; `existing` holds the `value` members of the ipRules
/// the vault holds now ([`existing_rule_values`]).
pub(crate) fn normalise_network_acls(
    acls: &Value,
    policy: RulePolicy,
    existing: &[Value],
) -> Result<Value, String> {
    let Value::Object(fields) = acls else {
        return Err("Invalid value found at properties.networkAcls: expected an object".to_owned());
    };
    let mut stored = fields.clone();
    check_enum(fields, "defaultAction", &["Allow", "Deny"])?;
    check_enum(fields, "bypass", &["AzureServices", "None"])?;

    match fields.get("ipRules") {
        None | Some(Value::Null) => {}
        Some(Value::Array(rules)) => {
            let normalised = normalise_ip_rules(rules, policy, existing)?;
            stored.insert("ipRules".to_owned(), Value::Array(normalised));
        }
        Some(_) => {
            return Err(
                "Invalid value found at properties.networkAcls.ipRules: expected an array"
                    .to_owned(),
            )
        }
    }

    match fields.get("virtualNetworkRules") {
        None | Some(Value::Null) => {}
        Some(Value::Array(rules)) => {
            let normalised = normalise_vnet_rules(rules, policy, existing)?;
            stored.insert("virtualNetworkRules".to_owned(), Value::Array(normalised));
        }
        Some(_) => return Err(
            "Invalid value found at properties.networkAcls.virtualNetworkRules: expected an array"
                .to_owned(),
        ),
    }
    Ok(Value::Object(stored))
}

/// The `ipRules` array as ARM stores it: the count limit first (ARM refuses the whole request),
/// then each rule's `value` checked and normalised, or kept verbatim when the policy keeps a
/// refused value.
fn normalise_ip_rules(
    rules: &[Value],
    policy: RulePolicy,
    existing: &[Value],
) -> Result<Vec<Value>, String> {
    if rules.len() > MAX_IP_RULES {
        return Err(format!(
            "Invalid value found at properties.networkAcls.ipRules: {} IP rules exceed the limit of {MAX_IP_RULES} IPv4 rules per vault",
            rules.len()
        ));
    }
    let mut normalised = Vec::with_capacity(rules.len());
    for (index, rule) in rules.iter().enumerate() {
        let checked = member_string(rule, "value")
            .ok_or_else(|| {
                format!("Invalid value found at properties.networkAcls.ipRules[{index}]: an IP rule needs a string \"value\"")
            })
            .and_then(|(object, value)| {
                check_ip_rule(index, &value, policy.slash31).map(|value| (object, value))
            });
        match checked {
            Ok((mut object, value)) => {
                object.insert("value".to_owned(), Value::String(value));
                normalised.push(Value::Object(object));
            }
            Err(_) if policy.keeps_refused(rule.get("value"), existing) => {
                normalised.push(rule.clone());
            }
            Err(message) => return Err(message),
        }
    }
    Ok(normalised)
}

/// The `virtualNetworkRules` array as ARM stores it: the count limit first, then each rule's
/// subnet `id` lower-cased (ARM returns subnet ids lower-cased whatever case was sent).
fn normalise_vnet_rules(
    rules: &[Value],
    policy: RulePolicy,
    existing: &[Value],
) -> Result<Vec<Value>, String> {
    if rules.len() > MAX_VNET_RULES {
        return Err(format!(
            "Invalid value found at properties.networkAcls.virtualNetworkRules: {} virtual network rules exceed the limit of {MAX_VNET_RULES} per vault",
            rules.len()
        ));
    }
    let mut normalised = Vec::with_capacity(rules.len());
    for (index, rule) in rules.iter().enumerate() {
        let (mut object, id) = member_string(rule, "id").ok_or_else(|| {
            format!("Invalid value found at properties.networkAcls.virtualNetworkRules[{index}]: a virtual network rule needs a string \"id\"")
        })?;
        if !is_subnet_id(&id) {
            if policy.keeps_refused(rule.get("id"), existing) {
                normalised.push(rule.clone());
                continue;
            }
            return Err(format!(
                "Invalid value found at properties.networkAcls.virtualNetworkRules[{index}].id: '{id}' is not a subnet resource id (/subscriptions/{{subscription}}/resourceGroups/{{group}}/providers/Microsoft.Network/virtualNetworks/{{network}}/subnets/{{subnet}})"
            ));
        }
        object.insert("id".to_owned(), Value::String(id.to_ascii_lowercase()));
        normalised.push(Value::Object(object));
    }
    Ok(normalised)
}

/// Whether `id` is a subnet's resource id, the shape keyvault.json's `VirtualNetworkRule.id`
/// documents ("Full resource id of a vnet subnet, such as '/subscriptions/subid/resourceGroups/
/// rg1/providers/Microsoft.Network/virtualNetworks/test-vnet/subnets/subnet1'"); fixed segments
/// without case. Key Vault's wording for a refused one is UNVERIFIED.
fn is_subnet_id(id: &str) -> bool {
    let parts: Vec<&str> = id.strip_prefix('/').unwrap_or("").split('/').collect();
    let fixed = [
        (0, "subscriptions"),
        (2, "resourceGroups"),
        (4, "providers"),
        (5, "Microsoft.Network"),
        (6, "virtualNetworks"),
        (8, "subnets"),
    ];
    parts.len() == 10
        && fixed
            .iter()
            .all(|(at, word)| parts[*at].eq_ignore_ascii_case(word))
        && [1, 3, 7, 9].iter().all(|at| !parts[*at].is_empty())
}

/// The object and its string member `key`, if `value` is an object that has one.
fn member_string(value: &Value, key: &str) -> Option<(Map<String, Value>, String)> {
    let object = value.as_object()?;
    let text = object.get(key)?.as_str()?.to_owned();
    Some((object.clone(), text))
}

/// ARM models these enums as strings but still refuses unknown values; case is not significant.
fn check_enum(fields: &Map<String, Value>, key: &str, allowed: &[&str]) -> Result<(), String> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(text)) if allowed.iter().any(|a| a.eq_ignore_ascii_case(text)) => Ok(()),
        Some(other) => Err(format!(
            "Invalid value found at properties.networkAcls.{key}: {other} is not one of {}",
            allowed.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(value: &str) -> Result<String, String> {
        check_ip_rule(0, value, Slash31Policy::Accept)
    }

    #[test]
    fn bare_addresses_gain_slash_32_and_prefixes_keep_host_bits() {
        assert_eq!(check("52.174.10.20").unwrap(), "52.174.10.20/32");
        assert_eq!(check("20.37.158.0/23").unwrap(), "20.37.158.0/23");
        assert_eq!(check("20.37.158.1/23").unwrap(), "20.37.158.1/23");
        assert_eq!(check("198.51.100.7/32").unwrap(), "198.51.100.7/32");
    }

    #[test]
    fn ipv6_and_garbage_are_refused_with_their_index() {
        let err = check_ip_rule(3, "2603:1030:a07:15::3d2/127", Slash31Policy::Accept).unwrap_err();
        assert!(err.starts_with("Invalid value found at properties.networkAcls.ipRules[3].value: 2603:1030:a07:15::3d2/127"), "{err}");
        assert!(err.contains("IPv6"), "{err}");
        for garbage in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "1.2.3.4/",
            "1.2.3.4/+8",
            "1.2.3.4/08",
            "01.2.3.4",
            " 1.2.3.4",
            "'10.91.4.0/24'",
        ] {
            let err = check(garbage).unwrap_err();
            assert!(
                err.contains("is not a valid IPv4 address or CIDR range"),
                "{garbage}: {err}"
            );
        }
    }

    #[test]
    fn private_and_reserved_ranges_are_refused_with_the_range_named() {
        assert_eq!(
            check("10.0.0.0/8").unwrap_err(),
            "Invalid value found at properties.networkAcls.ipRules[0].value: 10.0.0.0/8 belongs to forbidden range 10.0.0.0–10.255.255.255 (private IP addresses)"
        );
        for (value, range) in [
            ("172.20.1.0/24", "172.16.0.0–172.31.255.255"),
            ("192.168.1.1", "192.168.0.0–192.168.255.255"),
            ("8.0.0.0/6", "10.0.0.0–10.255.255.255"),
            ("0.0.0.0/0", "10.0.0.0–10.255.255.255"),
        ] {
            let err = check(value).unwrap_err();
            assert!(
                err.contains(&format!("belongs to forbidden range {range}")),
                "{value}: {err}"
            );
        }
        // Not documented as refused: accepted (UNVERIFIED).
        for public in [
            "172.15.255.255",
            "172.32.0.0/16",
            "100.128.0.0/10",
            "11.0.0.0/8",
            "192.0.2.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.0/10",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(check(public).is_ok(), "{public}");
        }
    }

    #[test]
    fn slash_31_follows_the_policy() {
        assert_eq!(check("20.1.2.2/31").unwrap(), "20.1.2.2/31");
        let err = check_ip_rule(1, "20.1.2.2/31", Slash31Policy::Reject).unwrap_err();
        assert!(err.contains("ipRules[1]") && err.contains("/31"), "{err}");
    }

    #[test]
    fn network_acls_are_normalised_and_other_fields_kept() {
        let acls = json!({
            "defaultAction": "Deny",
            "bypass": "AzureServices",
            "ipRules": [{"value": "52.174.10.20"}, {"value": "20.37.158.0/23"}],
            "virtualNetworkRules": [{"id": "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/virtualNetworks/V/subnets/S1", "ignoreMissingVnetServiceEndpoint": true}],
            "somethingElse": 1
        });
        let stored = normalise_network_acls(&acls, Slash31Policy::Accept.into(), &[]).unwrap();
        assert_eq!(
            stored,
            json!({
                "defaultAction": "Deny",
                "bypass": "AzureServices",
                "ipRules": [{"value": "52.174.10.20/32"}, {"value": "20.37.158.0/23"}],
                "virtualNetworkRules": [{"id": "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/virtualnetworks/v/subnets/s1", "ignoreMissingVnetServiceEndpoint": true}],
                "somethingElse": 1
            })
        );
    }

    #[test]
    fn rule_counts_above_the_limits_are_refused() {
        let ip_rules: Vec<Value> = (0..=MAX_IP_RULES)
            .map(|i| json!({"value": format!("20.{}.{}.0/24", i / 256, i % 256)}))
            .collect();
        let err = normalise_network_acls(
            &json!({"ipRules": ip_rules}),
            Slash31Policy::Accept.into(),
            &[],
        )
        .unwrap_err();
        assert!(
            err.contains("1001 IP rules exceed the limit of 1000"),
            "{err}"
        );

        let exactly: Vec<Value> = ip_rules[..MAX_IP_RULES].to_vec();
        assert!(normalise_network_acls(
            &json!({"ipRules": exactly}),
            Slash31Policy::Accept.into(),
            &[]
        )
        .is_ok());

        let vnet_rules: Vec<Value> = (0..=MAX_VNET_RULES)
            .map(|i| json!({"id": format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s{i}")}))
            .collect();
        let err = normalise_network_acls(
            &json!({"virtualNetworkRules": vnet_rules}),
            Slash31Policy::Accept.into(),
            &[],
        )
        .unwrap_err();
        assert!(
            err.contains("201 virtual network rules exceed the limit of 200"),
            "{err}"
        );
    }

    #[test]
    fn malformed_shapes_are_refused() {
        for acls in [
            json!([]),
            json!({"ipRules": {}}),
            json!({"ipRules": ["1.2.3.4"]}),
            json!({"ipRules": [{"value": 5}]}),
            json!({"virtualNetworkRules": [{}]}),
            json!({"defaultAction": "Block"}),
            json!({"bypass": 1}),
        ] {
            assert!(
                normalise_network_acls(&acls, Slash31Policy::Accept.into(), &[]).is_err(),
                "{acls}"
            );
        }
        assert!(normalise_network_acls(
            &json!({"defaultAction": "deny", "bypass": "none"}),
            Slash31Policy::Accept.into(),
            &[]
        )
        .is_ok());
    }

    #[test]
    fn refused_values_follow_the_odd_rule_policy() {
        let policy = |odd_rules| RulePolicy {
            slash31: Slash31Policy::Reject,
            odd_rules,
        };
        let existing = [
            json!("'10.91.4.0/24'"),
            json!(""),
            json!("10.0.0.0/8"),
            json!("20.1.2.2/31"),
            json!(7),
        ];
        let sent = json!({"ipRules": [
            {"value": "'10.91.4.0/24'"}, {"value": ""}, {"value": "10.0.0.0/8"},
            {"value": "20.1.2.2/31", "note": "kept"}, {"value": 7}, {"value": "203.0.113.5/24"}, {"value": "52.1.2.3"}
        ]});
        let kept =
            normalise_network_acls(&sent, policy(OddRulePolicy::KeepExisting), &existing).unwrap();
        let mut expected = sent.clone();
        expected["ipRules"][6]["value"] = json!("52.1.2.3/32");
        assert_eq!(
            kept, expected,
            "held values kept verbatim, valid ones normalised"
        );
        // A value the vault does not hold (not even trimmed or re-quoted) is refused.
        for new in ["10.91.4.0/24'", " ", "10.0.0.0/9", "20.1.2.4/31"] {
            let err = normalise_network_acls(
                &json!({"ipRules": [{"value": new}]}),
                policy(OddRulePolicy::KeepExisting),
                &existing,
            )
            .unwrap_err();
            assert!(err.contains("ipRules[0].value"), "{new}: {err}");
        }
        let err =
            normalise_network_acls(&sent, policy(OddRulePolicy::RejectAll), &existing).unwrap_err();
        assert!(err.contains("ipRules[0].value: '10.91.4.0/24'"), "{err}");
        let accepted = normalise_network_acls(
            &json!({"ipRules": [{"value": "never-seen"}, {"other": 1}, "bare"]}),
            policy(OddRulePolicy::AcceptAll),
            &[],
        )
        .unwrap();
        assert_eq!(
            accepted,
            json!({"ipRules": [{"value": "never-seen"}, {"other": 1}, "bare"]})
        );
        // Elements without a value never match a held value.
        assert!(normalise_network_acls(
            &json!({"ipRules": [{"other": 1}]}),
            policy(OddRulePolicy::KeepExisting),
            &existing
        )
        .is_err());
    }

    #[test]
    fn subnet_ids_must_have_the_documented_shape() {
        let policy: RulePolicy = Slash31Policy::Accept.into();
        for bad in [
            "",
            "/x",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/virtualNetworks/v/subnets/a",
            "subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/a",
            "/subscriptions//resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/a",
        ] {
            let err = normalise_network_acls(
                &json!({"virtualNetworkRules": [{"id": bad}]}),
                policy,
                &[],
            )
            .unwrap_err();
            assert!(err.contains("virtualNetworkRules[0].id"), "{bad}: {err}");
        }
        // One the vault holds already is kept as it is (the spec's own example holds "").
        let kept = normalise_network_acls(
            &json!({"virtualNetworkRules": [{"id": ""}]}),
            policy,
            &[json!("")],
        )
        .unwrap();
        assert_eq!(kept["virtualNetworkRules"], json!([{"id": ""}]));
    }

    #[test]
    fn existing_values_are_read_from_the_stored_vault() {
        let vault = json!({"properties": {"networkAcls": {"ipRules": [{"value": ""}, {"value": 5}, {"x": 1}], "virtualNetworkRules": [{"id": ""}]}}});
        assert_eq!(
            existing_rule_values(&vault),
            [json!(""), json!(5), json!("")]
        );
        assert!(existing_rule_values(&json!({"properties": {}})).is_empty());
    }
}
