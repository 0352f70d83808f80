//! The PATCH of `Microsoft.ContainerRegistry/registries` and the validation of its firewall,
//! `properties.networkRuleSet` (the ACR spec's `NetworkRuleSet`: `defaultAction`, `ipRules`).
//!
//! `Registries_Update` merges `properties` at the top level here, replaces a present
//! `networkRuleSet` whole (as `az acr network-rule add` assumes, sending the whole set it read;
//! the service's own semantics are UNVERIFIED) and answers 200 with the registry. The spec also
//! allows a 201 with `Azure-AsyncOperation` (a long-running update); the emulator finishes at
//! once unless `Config::registry_updates` asks for an operation (`operations`, handled in `arm`).
//!
//! | Refused (400) | Source |
//! |---|---|
//! | a rule set with ipRules or `defaultAction: Deny` on a registry whose SKU is not Premium: `NetworkRuleNotSupported` | Microsoft Learn, "Configure public IP network rules": "Configuring IP access rules is available in the Premium container registry service tier"; the code as public notes quote it (SEEN); the message's wording is UNVERIFIED (a quoted one reads "The requested feature virtual network rule is not supported for the SKU Basic.") |
//! | no `defaultAction`, or one other than Allow/Deny | the spec's `NetworkRuleSet`: `defaultAction` required, Allow or Deny |
//! | more than 200 ipRules | Microsoft Learn, the ACR limits table (2026): "Public IP network rules \| N/A \| N/A \| 200". The how-to page still says "a maximum of 100 IP access rules": the documents conflict |
//! | an IPv6 value, or one that is no IPv4 address or CIDR | the spec's `IPRule.value`: "Only IPV4 address is allowed" |
//! | RFC 1918 ranges | UNVERIFIED: ACR documents nothing about private ranges; refused as Key Vault and Storage refuse them |
//! | an `action` other than Allow | the spec's `IPRule.action`: only `Allow` |
//! | `publicNetworkAccess` other than Enabled/Disabled, `networkRuleBypassOptions` other than AzureServices/None | the spec's enums |
//!
//! Single addresses are stored as sent (bare), `/31` and `/32` accepted (nothing documents a
//! refusal), and a rule without `action` gains the spec's default `Allow` (whether ACR echoes it
//! is UNVERIFIED). The code and wording of every refusal but the SKU one are the emulator's
//! (code `BadRequest`, Key Vault's shape: UNVERIFIED for ACR), and enum values are compared
//! without case (UNVERIFIED).

use axum::http::StatusCode;
use serde_json::{Map, Value};

use crate::error::ArmError;
use crate::firewall;
use crate::ipv4::{forbidden_range, parse_ipv4_rule, RuleProblem};
use crate::writes::{merge_patch, Stamp};

/// Most IP rules a Premium registry may hold (Microsoft Learn's ACR limits table, 2026; the
/// how-to page says 100).
pub(crate) const MAX_IP_RULES: usize = 200;

fn invalid(at: &str, reason: impl std::fmt::Display) -> ArmError {
    ArmError::bad_request(format!("Invalid value found at {at}: {reason}"))
}

/// Applies a `RegistryUpdateParameters` body to a stored registry and returns the new registry.
pub(crate) fn apply_patch(current: &Value, body: &Value, stamp: &Stamp) -> Result<Value, ArmError> {
    if let Some(Value::Object(properties)) = body.get("properties") {
        check_enum(properties, "publicNetworkAccess", &["Enabled", "Disabled"])?;
        check_enum(
            properties,
            "networkRuleBypassOptions",
            &["AzureServices", "None"],
        )?;
    }
    merge_patch(current, body, "networkRuleSet", normalise_rule_set, stamp)
}

fn check_enum(
    properties: &Map<String, Value>,
    key: &str,
    allowed: &[&str],
) -> Result<(), ArmError> {
    match properties.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(text)) if allowed.iter().any(|a| a.eq_ignore_ascii_case(text)) => Ok(()),
        Some(other) => Err(invalid(
            &format!("properties.{key}"),
            format!("{other} is not one of {}", allowed.join(", ")),
        )),
    }
}

/// Validates a `networkRuleSet` from a request body for a registry of `sku` and returns what ACR
/// stores: as sent, with `action: Allow` added to each ipRule without one.
pub(crate) fn normalise_rule_set(rule_set: &Value, sku: Option<&Value>) -> Result<Value, ArmError> {
    let Value::Object(fields) = rule_set else {
        return Err(invalid("properties.networkRuleSet", "expected an object"));
    };
    let deny = match fields.get("defaultAction") {
        Some(Value::String(action)) if action.eq_ignore_ascii_case("Deny") => true,
        Some(Value::String(action)) if action.eq_ignore_ascii_case("Allow") => false,
        None | Some(Value::Null) => {
            return Err(invalid(
                "properties.networkRuleSet.defaultAction",
                "the default action is required",
            ))
        }
        Some(other) => {
            return Err(invalid(
                "properties.networkRuleSet.defaultAction",
                format!("{other} is not one of Allow, Deny"),
            ))
        }
    };
    let rules = match fields.get("ipRules") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(rules)) => rules.as_slice(),
        Some(_) => {
            return Err(invalid(
                "properties.networkRuleSet.ipRules",
                "expected an array",
            ))
        }
    };
    let sku_name = sku
        .and_then(|sku| sku.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("Basic");
    if (deny || !rules.is_empty()) && !sku_name.eq_ignore_ascii_case("Premium") {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "NetworkRuleNotSupported",
            format!("The requested feature network rule is not supported for the SKU {sku_name}."),
        ));
    }
    if rules.len() > MAX_IP_RULES {
        return Err(invalid(
            "properties.networkRuleSet.ipRules",
            format!(
                "{} IP rules exceed the limit of {MAX_IP_RULES} per registry",
                rules.len()
            ),
        ));
    }
    let mut stored = fields.clone();
    if fields.get("ipRules").is_some_and(Value::is_array) {
        let normalised = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| check_ip_rule(index, rule))
            .collect::<Result<Vec<Value>, ArmError>>()?;
        stored.insert("ipRules".to_owned(), Value::Array(normalised));
    }
    Ok(Value::Object(stored))
}

fn check_ip_rule(index: usize, rule: &Value) -> Result<Value, ArmError> {
    let at = format!("properties.networkRuleSet.ipRules[{index}]");
    let Some(object) = rule.as_object() else {
        return Err(invalid(&at, "an IP rule must be an object"));
    };
    let value_at = format!("{at}.value");
    let Some(value) = object.get("value").and_then(Value::as_str) else {
        return Err(invalid(&value_at, "an IP rule needs a string value"));
    };
    let parsed = parse_ipv4_rule(value).map_err(|problem| match problem {
        RuleProblem::Ipv6 => invalid(
            &value_at,
            format!("{value} is an IPv6 address range; only IPv4 addresses are supported"),
        ),
        RuleProblem::Malformed => invalid(
            &value_at,
            format!("{value} is not a valid IPv4 address or CIDR range"),
        ),
    })?;
    if let Some(range) = forbidden_range(&parsed) {
        return Err(invalid(
            &value_at,
            format!("{value} belongs to forbidden range {range}"),
        ));
    }
    firewall::with_allow_action(object).map_err(|other| {
        invalid(
            &format!("{at}.action"),
            format!("{other} is not Allow, the only action of an IP rule"),
        )
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn premium() -> Value {
        json!({"name": "Premium", "tier": "Premium"})
    }

    #[test]
    fn rules_are_stored_as_sent_with_the_allow_action() {
        let stored = normalise_rule_set(
            &json!({"defaultAction": "Deny", "ipRules": [{"value": "52.174.10.21"}, {"action": "Allow", "value": "20.1.2.3/32"}]}),
            Some(&premium()),
        )
        .unwrap();
        assert_eq!(
            stored,
            json!({"defaultAction": "Deny", "ipRules": [{"value": "52.174.10.21", "action": "Allow"}, {"action": "Allow", "value": "20.1.2.3/32"}]})
        );
    }

    #[test]
    fn network_rules_need_the_premium_sku() {
        let standard = json!({"name": "Standard", "tier": "Standard"});
        for rule_set in [
            json!({"defaultAction": "Deny", "ipRules": []}),
            json!({"defaultAction": "Allow", "ipRules": [{"value": "52.1.2.3"}]}),
        ] {
            let error = normalise_rule_set(&rule_set, Some(&standard)).unwrap_err();
            assert_eq!(error.code, "NetworkRuleNotSupported");
            assert_eq!(
                error.message,
                "The requested feature network rule is not supported for the SKU Standard."
            );
        }
        assert!(normalise_rule_set(
            &json!({"defaultAction": "Allow", "ipRules": []}),
            Some(&standard)
        )
        .is_ok());
    }

    #[test]
    fn each_refused_rule_is_named_by_its_index() {
        for (value, why) in [
            ("2603:1030::/48", "IPv6"),
            ("172.16.5.0/24", "forbidden range 172.16.0.0"),
            ("1.2.3.4/40", "not a valid IPv4"),
        ] {
            let error = normalise_rule_set(
                &json!({"defaultAction": "Deny", "ipRules": [{"value": "20.1.2.0/24"}, {"value": value}]}),
                Some(&premium()),
            )
            .unwrap_err();
            assert_eq!(error.code, "BadRequest");
            assert!(
                error.message.starts_with(
                    "Invalid value found at properties.networkRuleSet.ipRules[1].value:"
                ) && error.message.contains(why),
                "{value}: {}",
                error.message
            );
        }
        let error = normalise_rule_set(
            &json!({"defaultAction": "Deny", "ipRules": [{"value": "20.1.2.0/24", "action": "Deny"}]}),
            Some(&premium()),
        )
        .unwrap_err();
        assert!(
            error.message.contains("ipRules[0].action"),
            "{}",
            error.message
        );
        let many: Vec<Value> = (0..=MAX_IP_RULES)
            .map(|i| json!({"value": format!("20.0.{i}.0/24")}))
            .collect();
        let error = normalise_rule_set(
            &json!({"defaultAction": "Deny", "ipRules": many}),
            Some(&premium()),
        )
        .unwrap_err();
        assert!(
            error
                .message
                .contains("201 IP rules exceed the limit of 200"),
            "{}",
            error.message
        );
        assert!(normalise_rule_set(&json!({"ipRules": []}), Some(&premium())).is_err());
        assert!(normalise_rule_set(&json!({"defaultAction": "Block"}), Some(&premium())).is_err());
    }
}
