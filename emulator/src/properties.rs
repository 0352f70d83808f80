//! The vault properties besides `networkAcls` that Key Vault's documentation says it refuses,
//! checked on every PUT and PATCH, and what a create fills in.
//!
//! Each rule names its source; the wording of the refusals is UNVERIFIED unless said otherwise
//! (Key Vault answers 400 `BadRequest` for a refused property value, as for an ipRule). What no
//! source documents is accepted.
//!
//! | Property | Rule | Source |
//! |---|---|---|
//! | `enableSoftDelete` | `false` refused on a new vault and on one that has soft delete | keyvault.json `VaultProperties.enableSoftDelete`: "Once set to true, it cannot be reverted to false"; Microsoft Learn, "Soft-delete will be enabled on all key vaults": it can no longer be turned off |
//! | `enablePurgeProtection` | `false` refused | keyvault.json `VaultProperties.enablePurgeProtection`: "the property does not accept false as its value" |
//! | `softDeleteRetentionInDays` | an integer from 7 to 90 | keyvault.json: "It accepts >=7 and <=90" |
//! | `publicNetworkAccess` | `Enabled` or `Disabled` (any case) | keyvault.json names only 'enabled' (the default) and 'disabled'; refusing others is inferred, UNVERIFIED |
//!
//! A PUT replaces `properties`, but what cannot be turned off stays on when the PUT leaves it
//! out (soft delete, purge protection), and the retention stays as it was: that a PUT omitting
//! them keeps them is UNVERIFIED, the alternative (turning them off) contradicts the rules above.

use axum::http::StatusCode;
use serde_json::{Map, Value};

use crate::error::ArmError;

/// Soft-deleted vaults are kept this many days unless told otherwise (keyvault.json's default).
const DEFAULT_RETENTION_DAYS: u64 = 90;

fn refused(message: String) -> ArmError {
    ArmError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// Checks the properties a write leaves the vault with (`new`) against those it had (`old`;
/// `None` for a vault being created). `sent` are the properties the request itself sent: a
/// PATCH that leaves a property out does not re-send the stored value.
pub(crate) fn check(
    sent: &Map<String, Value>,
    old: Option<&Map<String, Value>>,
) -> Result<(), ArmError> {
    let had_soft_delete = old.is_none_or(|old| {
        old.get("enableSoftDelete")
            .is_none_or(|value| value != &Value::Bool(false))
    });
    match sent.get("enableSoftDelete") {
        None | Some(Value::Null) | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) if had_soft_delete => {
            return Err(refused(
                "The property \"enableSoftDelete\" cannot be set to false: soft delete is enabled on all key vaults and cannot be turned off.".to_owned(),
            ))
        }
        Some(Value::Bool(false)) => {}
        Some(other) => return Err(not_a("enableSoftDelete", "boolean", other)),
    }
    match sent.get("enablePurgeProtection") {
        None | Some(Value::Null) | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            return Err(refused(
                "The property \"enablePurgeProtection\" cannot be set to false. Enabling the purge protection for a vault is an irreversible action.".to_owned(),
            ))
        }
        Some(other) => return Err(not_a("enablePurgeProtection", "boolean", other)),
    }
    match sent.get("softDeleteRetentionInDays") {
        None | Some(Value::Null) => {}
        Some(value) if value.as_u64().is_some_and(|days| (7..=90).contains(&days)) => {}
        Some(other) => {
            return Err(refused(format!(
                "Invalid value found at properties.softDeleteRetentionInDays: {other}. The retention of soft-deleted vaults must be between 7 and 90 days."
            )))
        }
    }
    match sent.get("publicNetworkAccess") {
        None | Some(Value::Null) => {}
        Some(Value::String(text))
            if ["Enabled", "Disabled"]
                .iter()
                .any(|known| known.eq_ignore_ascii_case(text)) => {}
        Some(other) => {
            return Err(refused(format!(
                "Invalid value found at properties.publicNetworkAccess: {other} is not one of Enabled, Disabled"
            )))
        }
    }
    Ok(())
}

fn not_a(property: &str, kind: &str, value: &Value) -> ArmError {
    ArmError::invalid_content(format!(
        "properties.{property} must be a {kind}, not {value}"
    ))
}

/// What a PUT keeps of `old` although it replaces `properties`: soft delete and purge
/// protection once on, and the retention period.
pub(crate) fn carry_over(new: &mut Map<String, Value>, old: &Map<String, Value>) {
    for key in ["enableSoftDelete", "enablePurgeProtection"] {
        if old.get(key) == Some(&Value::Bool(true)) && new.get(key).is_none_or(Value::is_null) {
            new.insert(key.to_owned(), Value::Bool(true));
        }
    }
    if let Some(days) = old.get("softDeleteRetentionInDays") {
        if new
            .get("softDeleteRetentionInDays")
            .is_none_or(Value::is_null)
        {
            new.insert("softDeleteRetentionInDays".to_owned(), days.clone());
        }
    }
}

/// What Key Vault fills in on a new vault when the request leaves it out: soft delete on, for
/// 90 days, and public network access enabled (keyvault.json's documented defaults).
pub(crate) fn defaults(new: &mut Map<String, Value>) {
    let mut default = |key: &str, value: Value| {
        if new.get(key).is_none_or(Value::is_null) {
            new.insert(key.to_owned(), value);
        }
    };
    default("enableSoftDelete", Value::Bool(true));
    default(
        "softDeleteRetentionInDays",
        Value::from(DEFAULT_RETENTION_DAYS),
    );
    default("publicNetworkAccess", Value::String("Enabled".to_owned()));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn documented_refusals() {
        let on = map(json!({"enableSoftDelete": true, "enablePurgeProtection": true}));
        for (sent, old) in [
            (json!({"enableSoftDelete": false}), None),
            (json!({"enableSoftDelete": false}), Some(&on)),
            (json!({"enablePurgeProtection": false}), Some(&on)),
            (json!({"enablePurgeProtection": false}), None),
            (json!({"softDeleteRetentionInDays": 3}), None),
            (json!({"softDeleteRetentionInDays": 91}), None),
            (json!({"softDeleteRetentionInDays": "30"}), None),
            (json!({"publicNetworkAccess": "Bogus"}), None),
            (json!({"publicNetworkAccess": 1}), None),
        ] {
            let error = check(&map(sent.clone()), old).unwrap_err();
            assert_eq!(error.status, 400, "{sent}");
        }
        let legacy = map(json!({"enableSoftDelete": false}));
        assert!(check(&map(json!({"enableSoftDelete": false})), Some(&legacy)).is_ok());
        for sent in [
            json!({"enableSoftDelete": true, "enablePurgeProtection": true}),
            json!({"softDeleteRetentionInDays": 7, "publicNetworkAccess": "disabled"}),
            json!({"softDeleteRetentionInDays": 90, "publicNetworkAccess": "Enabled"}),
            json!({"somethingUndocumented": "kept"}),
        ] {
            assert!(check(&map(sent.clone()), Some(&on)).is_ok(), "{sent}");
        }
    }

    #[test]
    fn a_put_keeps_what_cannot_be_turned_off_and_a_create_gets_defaults() {
        let mut new = map(json!({"tenantId": "t"}));
        carry_over(
            &mut new,
            &map(
                json!({"enableSoftDelete": true, "enablePurgeProtection": true, "softDeleteRetentionInDays": 30}),
            ),
        );
        assert_eq!(
            Value::Object(new),
            json!({"tenantId": "t", "enableSoftDelete": true, "enablePurgeProtection": true, "softDeleteRetentionInDays": 30})
        );
        let mut created = map(json!({"softDeleteRetentionInDays": 7}));
        defaults(&mut created);
        assert_eq!(
            Value::Object(created),
            json!({"softDeleteRetentionInDays": 7, "enableSoftDelete": true, "publicNetworkAccess": "Enabled"})
        );
    }
}
