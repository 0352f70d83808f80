//! The PATCH of `Microsoft.Storage/storageAccounts` and the validation of its firewall,
//! `properties.networkAcls` (storage.json `NetworkRuleSet`, 2025-01-01).
//!
//! `StorageAccounts_Update` is synchronous: 200 with the whole account (storage.json; no
//! long-running extension). How it treats a `networkAcls` that leaves members out is not
//! documented; the emulator replaces a present `networkAcls` whole, as it does for vaults (and
//! as `az storage account network-rule add` assumes, sending the whole set it read), so a client
//! that drops `resourceAccessRules` or `virtualNetworkRules` loses them here. Omitted members of
//! the four Storage always returns read back with their defaults (`firewall::read_shape`).
//!
//! Refused, each with 400 `InvalidValuesForRequestParameters` and a message of the shape
//! Storage's answers quoted in Azure/azure-cli#7417 and #13828 and
//! Azure/azure-service-operator#3647 ("Values for request parameters are invalid:
//! networkAcls.ipRule[*].value. For more information, see - https://aka.ms/storagenetworkruleset"):
//!
//! | Refused | Source |
//! |---|---|
//! | no `defaultAction`, or one other than Allow/Deny | storage.json `NetworkRuleSet`: `required: ["defaultAction"]`, enum Allow, Deny |
//! | `bypass` other than a comma-joined set of None, Logging, Metrics, AzureServices | storage.json `NetworkRuleSet.bypass` |
//! | more than 400 ipRules, 400 virtual network rules or 200 resource access rules | Microsoft Learn, "Scalability and performance targets for standard storage accounts" (400, 400 and 200) |
//! | an IPv6 value, or one that is no IPv4 address or CIDR | Microsoft Learn, "Azure Storage network security limitations": "Only IPv4 addresses are supported for configuration of storage firewall rules"; storage.json `IPRule.value` "Only IPV4 address is allowed" |
//! | a `/31` or `/32` CIDR | the same page: "Small address ranges that use /31 or /32 prefix sizes aren't supported. Configure these ranges using individual IP address rules." |
//! | RFC 1918 ranges | the same page: "IP address ranges reserved for private networks (as defined in RFC 1918) aren't allowed in IP rules" |
//! | an `action` other than Allow | storage.json `IPRule.action`: enum `["Allow"]` |
//!
//! UNVERIFIED: Storage's message says `ipRule[*]`; the emulator names the index (and says why in
//! `error.details`, which Storage's answers do not carry); the wording of every refusal but the
//! ipRule one is the emulator's reading of the same shape; other reserved ranges (100.64/10,
//! 127/8, …) are accepted, as for vaults; `ipv6Rules` (api-version 2025-06-01 and later) is kept
//! as sent, unchecked; virtual network rule ids are not checked; enum values (`defaultAction`,
//! `bypass`, `action`) are compared without case, as ARM compares the vault's.

use axum::http::StatusCode;
use serde_json::Value;

use crate::error::ArmError;
use crate::firewall;
use crate::ipv4::{forbidden_range, parse_ipv4_rule, RuleProblem};
use crate::paths::Kind;
use crate::writes::{merge_patch, Stamp};

/// Most IP rules a storage account may hold (Microsoft Learn, "Scalability and performance
/// targets for standard storage accounts": "Maximum number of IP address rules per storage
/// account | 400").
pub(crate) const MAX_IP_RULES: usize = 400;
/// Most virtual network rules a storage account may hold (the same table).
pub(crate) const MAX_VNET_RULES: usize = 400;
/// Most resource access (resource instance) rules a storage account may hold (the same table).
pub(crate) const MAX_RESOURCE_ACCESS_RULES: usize = 200;

/// Storage's refusal naming `parameter` (e.g. `networkAcls.ipRule[3].value`), with the
/// emulator's explanation in `error.details`.
fn refused(parameter: &str, reason: impl Into<String>) -> ArmError {
    ArmError::new(
        StatusCode::BAD_REQUEST,
        "InvalidValuesForRequestParameters",
        format!(
            "Values for request parameters are invalid: {parameter}. For more information, see - https://aka.ms/storagenetworkruleset"
        ),
    )
    .with_detail("InvalidValuesForRequestParameters", reason)
}

/// Applies a `StorageAccountUpdateParameters` body to a stored account and returns the account
/// as it then reads.
pub(crate) fn apply_patch(current: &Value, body: &Value, stamp: &Stamp) -> Result<Value, ArmError> {
    let mut account = merge_patch(
        current,
        body,
        "networkAcls",
        |acls, _| normalise_network_acls(acls),
        stamp,
    )?;
    firewall::read_shape(Kind::StorageAccount, &mut account);
    Ok(account)
}

/// Validates a `networkAcls` object from a request body and returns what Storage stores: as
/// sent, with `action: Allow` added to each ipRule without one (single addresses stay bare).
pub(crate) fn normalise_network_acls(acls: &Value) -> Result<Value, ArmError> {
    let Value::Object(fields) = acls else {
        return Err(refused("networkAcls", "networkAcls must be an object"));
    };
    match fields.get("defaultAction") {
        Some(Value::String(action))
            if ["Allow", "Deny"]
                .iter()
                .any(|known| known.eq_ignore_ascii_case(action)) => {}
        None | Some(Value::Null) => {
            return Err(refused(
                "networkAcls.defaultAction",
                "defaultAction is required",
            ))
        }
        Some(other) => {
            return Err(refused(
                "networkAcls.defaultAction",
                format!("{other} is not one of Allow, Deny"),
            ))
        }
    }
    check_bypass(fields.get("bypass"))?;
    let count = |key: &str, singular: &str, limit: usize| -> Result<(), ArmError> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Array(items)) if items.len() <= limit => Ok(()),
            Some(Value::Array(items)) => Err(refused(
                &format!("networkAcls.{singular}"),
                format!(
                    "{} {key} exceed the limit of {limit} per storage account",
                    items.len()
                ),
            )),
            Some(_) => Err(refused(
                &format!("networkAcls.{singular}"),
                format!("{key} must be an array"),
            )),
        }
    };
    count("ipRules", "ipRule", MAX_IP_RULES)?;
    count("virtualNetworkRules", "virtualNetworkRule", MAX_VNET_RULES)?;
    count(
        "resourceAccessRules",
        "resourceAccessRule",
        MAX_RESOURCE_ACCESS_RULES,
    )?;
    let mut stored = fields.clone();
    if let Some(Value::Array(rules)) = fields.get("ipRules") {
        let normalised = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| check_ip_rule(index, rule))
            .collect::<Result<Vec<Value>, ArmError>>()?;
        stored.insert("ipRules".to_owned(), Value::Array(normalised));
    }
    Ok(Value::Object(stored))
}

/// `bypass`: a comma-joined combination of storage.json's `Bypass` values.
fn check_bypass(bypass: Option<&Value>) -> Result<(), ArmError> {
    const KNOWN: [&str; 4] = ["None", "Logging", "Metrics", "AzureServices"];
    match bypass {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(text))
            if text.split(',').all(|part| {
                KNOWN
                    .iter()
                    .any(|known| known.eq_ignore_ascii_case(part.trim()))
            }) =>
        {
            Ok(())
        }
        Some(other) => Err(refused(
            "networkAcls.bypass",
            format!("{other} is not a comma-separated combination of None, Logging, Metrics, AzureServices"),
        )),
    }
}

/// One ipRule: its `value` checked, `action` Allow (added when missing).
fn check_ip_rule(index: usize, rule: &Value) -> Result<Value, ArmError> {
    let parameter = format!("networkAcls.ipRule[{index}].value");
    let Some(object) = rule.as_object() else {
        return Err(refused(
            &format!("networkAcls.ipRule[{index}]"),
            "an IP rule must be an object",
        ));
    };
    let Some(value) = object.get("value").and_then(Value::as_str) else {
        return Err(refused(&parameter, "an IP rule needs a string value"));
    };
    let parsed = parse_ipv4_rule(value).map_err(|problem| {
        refused(
            &parameter,
            match problem {
                RuleProblem::Ipv6 => {
                    format!("{value} is an IPv6 address; only IPv4 addresses are supported")
                }
                RuleProblem::Malformed => {
                    format!("{value} is not a valid IPv4 address or CIDR range")
                }
            },
        )
    })?;
    if value.contains('/') && parsed.prefix >= 31 {
        return Err(refused(
            &parameter,
            format!("{value}: small address ranges using /31 or /32 prefix sizes are not supported; configure them as individual IP address rules"),
        ));
    }
    if let Some(range) = forbidden_range(&parsed) {
        return Err(refused(
            &parameter,
            format!("{value} belongs to forbidden range {range}"),
        ));
    }
    firewall::with_allow_action(object).map_err(|other| {
        refused(
            &format!("networkAcls.ipRule[{index}].action"),
            format!("{other} is not Allow, the only action of an IP rule"),
        )
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn acls(rules: Value) -> Value {
        json!({"defaultAction": "Deny", "bypass": "AzureServices", "ipRules": rules})
    }

    fn refusal(acls: &Value) -> (String, String) {
        let error = normalise_network_acls(acls).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.code, "InvalidValuesForRequestParameters");
        (error.message, error.details[0].1.clone())
    }

    #[test]
    fn single_addresses_stay_bare_and_gain_the_allow_action() {
        let stored = normalise_network_acls(&acls(
            json!([{"value": "52.174.10.21"}, {"value": "20.37.158.0/23", "action": "Allow"}]),
        ))
        .unwrap();
        assert_eq!(
            stored["ipRules"],
            json!([{"value": "52.174.10.21", "action": "Allow"}, {"value": "20.37.158.0/23", "action": "Allow"}])
        );
    }

    #[test]
    fn each_refused_value_is_named_by_its_index() {
        for (value, why) in [
            ("2603:1030::/48", "IPv6"),
            ("52.174.10.21/32", "/31 or /32"),
            ("52.174.10.20/31", "/31 or /32"),
            ("10.1.0.0/16", "forbidden range 10.0.0.0–10.255.255.255"),
            ("192.168.0.1", "forbidden range 192.168.0.0"),
            ("nonsense", "not a valid IPv4"),
        ] {
            let (message, detail) =
                refusal(&acls(json!([{"value": "20.1.2.0/24"}, {"value": value}])));
            assert_eq!(
                message,
                "Values for request parameters are invalid: networkAcls.ipRule[1].value. For more information, see - https://aka.ms/storagenetworkruleset",
                "{value}"
            );
            assert!(detail.contains(why), "{value}: {detail}");
        }
        let (message, _) = refusal(&acls(json!([{"value": "20.1.2.0/24", "action": "Deny"}])));
        assert!(
            message.contains("networkAcls.ipRule[0].action"),
            "{message}"
        );
        // Host bits and the other reserved ranges are accepted, as for vaults (UNVERIFIED).
        assert!(normalise_network_acls(&acls(
            json!([{"value": "100.64.0.0/10"}, {"value": "20.1.2.3/24"}])
        ))
        .is_ok());
    }

    #[test]
    fn the_set_itself_is_checked() {
        let (message, _) = refusal(&json!({"ipRules": []}));
        assert!(message.contains("networkAcls.defaultAction"), "{message}");
        let (message, _) = refusal(&json!({"defaultAction": "Block"}));
        assert!(message.contains("networkAcls.defaultAction"), "{message}");
        let (message, _) =
            refusal(&json!({"defaultAction": "Deny", "bypass": "Logging, Everything"}));
        assert!(message.contains("networkAcls.bypass"), "{message}");
        assert!(normalise_network_acls(
            &json!({"defaultAction": "deny", "bypass": "Logging, Metrics"})
        )
        .is_ok());
        let many: Vec<Value> = (0..=MAX_IP_RULES)
            .map(|i| json!({"value": format!("20.{}.{}.0/24", i / 256, i % 256)}))
            .collect();
        let (_, detail) = refusal(&acls(Value::Array(many[..MAX_IP_RULES + 1].to_vec())));
        assert!(
            detail.contains("401 ipRules exceed the limit of 400"),
            "{detail}"
        );
        assert!(normalise_network_acls(&acls(Value::Array(many[..MAX_IP_RULES].to_vec()))).is_ok());
        assert!(normalise_network_acls(&json!([])).is_err());
    }
}
