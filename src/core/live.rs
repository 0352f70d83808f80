//! A resource's firewall as Azure Resource Manager returns it, reduced to what tagfence plans
//! with and kept verbatim for what it writes back.
//!
//! The shape is the kind's rule set under `properties` (see [`Kind`]): Key Vault's and
//! Storage's `networkAcls` (`defaultAction`, `bypass`, `ipRules[].value`,
//! `virtualNetworkRules[]`, and on Storage `resourceAccessRules[]` and `ipRules[].action`),
//! Container Registry's `networkRuleSet` (`defaultAction`, `ipRules[]`). ARM replaces the rule
//! set wholesale on PATCH, so the object is kept exactly as read ([`LiveAcl::network_acls`]),
//! for a write to send back with nothing changed but `ipRules`.
//!
//! A read is taken at its word only when it is whole: a document without `properties`, the rule
//! set, or one of the kind's required fields ([`Kind::required_fields`]; missing or `null`) is
//! *not* an empty firewall,
//! and [`LiveAcl::missing`] says what it lacks so that no write is made from it.
//! A rule value tagfence cannot read (host bits set, quotes, an empty string — Microsoft's own
//! API examples hold such values) is a person's rule like any other: kept verbatim
//! ([`LiveAcl::unreadable`]), never a reason to refuse the vault.

use ipnet::Ipv4Net;
use serde::Serialize;
use serde_json::{Map, Value};

use super::cidr;
use super::kind::{Kind, RuleSetField};

/// A field of a resource read that a write depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AclField {
    /// `properties`
    Properties,
    /// The rule set: `properties.networkAcls` (`properties.networkRuleSet` on a registry).
    NetworkAcls,
    /// `properties.networkAcls.defaultAction`
    DefaultAction,
    /// `properties.networkAcls.bypass`
    Bypass,
    /// `properties.networkAcls.ipRules`
    IpRules,
    /// `properties.networkAcls.virtualNetworkRules`
    VirtualNetworkRules,
}

impl AclField {
    /// The field's path in a document of `kind`.
    pub fn path(self, kind: Kind) -> String {
        let field = match self {
            AclField::Properties => return "properties".to_owned(),
            AclField::NetworkAcls => return format!("properties.{}", kind.rule_set_property()),
            AclField::DefaultAction => RuleSetField::DefaultAction,
            AclField::Bypass => RuleSetField::Bypass,
            AclField::IpRules => RuleSetField::IpRules,
            AclField::VirtualNetworkRules => RuleSetField::VirtualNetworkRules,
        };
        format!("properties.{}.{}", kind.rule_set_property(), field.name())
    }

    fn of(field: RuleSetField) -> AclField {
        match field {
            RuleSetField::DefaultAction => AclField::DefaultAction,
            RuleSetField::Bypass => AclField::Bypass,
            RuleSetField::IpRules => AclField::IpRules,
            RuleSetField::VirtualNetworkRules => AclField::VirtualNetworkRules,
        }
    }
}

/// An IP rule as read that is not an IPv4 address or canonical prefix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnreadableRule {
    /// The `ipRules` entry exactly as read (written back exactly so).
    pub entry: Value,
    /// Its value as text, for people (`<not a string>` when it is none).
    pub value: String,
    /// Why tagfence cannot read it.
    pub reason: String,
}

/// The firewall of one resource as read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveAcl {
    /// The firewall's kind: where its rule set is and what its rules look like.
    pub kind: Kind,
    /// The resource's name, when the document has one.
    pub vault_name: Option<String>,
    /// `Allow` or `Deny`; `None` when the read has none.
    pub default_action: Option<String>,
    /// `AzureServices` or `None`; ARM's default when absent is `AzureServices`.
    pub bypass: Option<String>,
    /// The IP rules tagfence can read, normalised (bare addresses as `/32`), in the vault's
    /// order, deduplicated.
    pub ip_rules: Vec<Ipv4Net>,
    /// The IP rules it cannot read, verbatim, in the vault's order.
    pub unreadable: Vec<UnreadableRule>,
    /// The `ipRules` entry of each readable rule as read (parallel to `ip_rules`; the first of
    /// duplicates), so that a rule kept is written back as it was.
    #[serde(skip)]
    pub entries: Vec<Value>,
    /// Virtual network rules, verbatim.
    pub virtual_network_rules: Vec<Value>,
    /// `Enabled`/`Disabled`; when `Disabled` the IP rules have no effect.
    pub public_network_access: Option<String>,
    /// The resource's Azure region (`location`), when the document has one.
    pub location: Option<String>,
    /// The rule set (`properties.networkAcls`, `properties.networkRuleSet`) exactly as read;
    /// `None` when it is missing or `null`.
    #[serde(skip)]
    pub network_acls: Option<Map<String, Value>>,
    /// Why this resource's firewall cannot take IP rules at all, when the read shows it: a
    /// container registry below the Premium tier ("Configuring IP access rules is available in
    /// the Premium container registry service tier", Microsoft Learn, "Configure public IP
    /// network rules").
    pub unsupported: Option<String>,
    /// The fields a write depends on that the read lacks (missing, `null`, or not of their type:
    /// `defaultAction` and `bypass` strings, the rule lists arrays), outermost first; empty for
    /// a whole read.
    pub missing: Vec<AclField>,
}

/// Why a document could not be read as a vault.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Not JSON, or JSON with a key twice in one object (which value counts is anyone's guess:
    /// serde would take the last, another reader the first, so such a read is not trusted).
    #[error("the vault document is not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("the document is not a {} resource: {reason}", kind.label())]
    NotAResource { kind: Kind, reason: String },
}

impl LiveAcl {
    /// A Key Vault with no firewall rules (used when no live state is given).
    pub fn empty() -> Self {
        LiveAcl::empty_of(Kind::KeyVault)
    }

    /// A resource of `kind` with no firewall rules.
    pub fn empty_of(kind: Kind) -> Self {
        LiveAcl {
            kind,
            location: None,
            vault_name: None,
            default_action: None,
            bypass: None,
            ip_rules: Vec::new(),
            unreadable: Vec::new(),
            entries: Vec::new(),
            virtual_network_rules: Vec::new(),
            public_network_access: None,
            network_acls: None,
            unsupported: None,
            missing: Vec::new(),
        }
    }

    /// Reads a Key Vault document as ARM's `GET …/vaults/{name}` returns it
    /// ([`LiveAcl::read`] of [`Kind::KeyVault`]).
    ///
    /// # Errors
    /// [`LiveError`] when it is not JSON or not a vault resource.
    pub fn from_vault_json(bytes: &[u8]) -> Result<LiveAcl, LiveError> {
        LiveAcl::read(Kind::KeyVault, &parse_document(bytes)?)
    }

    /// Reads a document of `kind` as ARM's `GET` of the resource returns it. A document that
    /// lacks fields is read (see [`LiveAcl::missing`]); one that is plainly something else — an
    /// ARM error body, a list response, an API example file, another resource type — is refused.
    ///
    /// # Errors
    /// [`LiveError::NotAResource`] when it is not a resource of `kind`.
    pub fn read(kind: Kind, doc: &Value) -> Result<LiveAcl, LiveError> {
        let doc = doc.as_object().ok_or_else(|| LiveError::NotAResource {
            kind,
            reason: format!("it is {}, not a JSON object", kind_of(doc)),
        })?;
        not_something_else(kind, doc).map_err(|reason| LiveError::NotAResource { kind, reason })?;
        let mut live = LiveAcl::empty_of(kind);
        live.vault_name = doc.get("name").and_then(Value::as_str).map(str::to_owned);
        live.location = doc
            .get("location")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if kind == Kind::ContainerRegistry {
            let sku = doc
                .get("sku")
                .and_then(|sku| sku.get("name"))
                .and_then(Value::as_str);
            if let Some(sku) = sku.filter(|sku| !sku.eq_ignore_ascii_case("Premium")) {
                live.unsupported = Some(format!(
                    "its tier is {sku}; IP network rules are only available on Premium registries"
                ));
            }
        }
        let Some(properties) = doc.get("properties").and_then(Value::as_object) else {
            if doc.get("properties").is_some_and(|p| !p.is_null()) {
                return Err(LiveError::NotAResource {
                    kind,
                    reason: "its properties are not an object".to_owned(),
                });
            }
            live.missing = vec![AclField::Properties];
            return Ok(live);
        };
        live.public_network_access = properties
            .get("publicNetworkAccess")
            .and_then(Value::as_str)
            .map(str::to_owned);
        // Absent or null: a firewall never configured (or a read that lost it). Anything else
        // that is not an object is no firewall tagfence can reason about.
        let property = kind.rule_set_property();
        let Some(acls) = properties.get(property).and_then(Value::as_object) else {
            if let Some(other) = properties.get(property).filter(|a| !a.is_null()) {
                return Err(LiveError::NotAResource {
                    kind,
                    reason: format!("properties.{property} is {}, not an object", kind_of(other)),
                });
            }
            live.missing = vec![AclField::NetworkAcls];
            return Ok(live);
        };
        live.network_acls = Some(acls.clone());
        live.default_action = acls
            .get("defaultAction")
            .and_then(Value::as_str)
            .map(str::to_owned);
        live.bypass = acls
            .get("bypass")
            .and_then(Value::as_str)
            .map(str::to_owned);
        live.virtual_network_rules = acls
            .get("virtualNetworkRules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(Value::Array(entries)) = acls.get("ipRules") {
            let (readable, unreadable) = read_rules(entries);
            (live.ip_rules, live.entries) = readable.into_iter().unzip();
            live.unreadable = unreadable;
        }
        // ARM's own answers carry every required field (Microsoft's getVault and updateVault
        // examples do); a read without `bypass` or the vnet rules would be sent back without
        // them, and ARM would then default `bypass` to AzureServices (more open) or drop the
        // vnet rules (locking their networks out).
        for field in kind.required_fields() {
            let present = match field {
                RuleSetField::DefaultAction | RuleSetField::Bypass => {
                    acls.get(field.name()).is_some_and(Value::is_string)
                }
                RuleSetField::IpRules | RuleSetField::VirtualNetworkRules => {
                    acls.get(field.name()).is_some_and(Value::is_array)
                }
            };
            if !present {
                live.missing.push(AclField::of(*field));
            }
        }
        Ok(live)
    }

    /// Whether the vault ignores its IP rules because public network access is off.
    pub fn public_access_disabled(&self) -> bool {
        self.public_network_access
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
    }

    /// Whether the read holds everything a write depends on.
    pub fn is_whole(&self) -> bool {
        self.missing.is_empty()
    }

    /// The unreadable rules' entries as JSON text, sorted: how they are compared (order is not
    /// meaning; their bytes are).
    pub fn verbatim_entries(&self) -> Vec<String> {
        let mut entries: Vec<String> = self
            .unreadable
            .iter()
            .map(|r| r.entry.to_string())
            .collect();
        entries.sort_unstable();
        entries
    }

    /// Whether two reads show the same firewall: every `networkAcls` field, the readable rules
    /// as sets (order is not meaning), the unreadable ones verbatim, public network access, and
    /// the same fields missing.
    pub fn same_firewall(&self, other: &LiveAcl) -> bool {
        let rules = |acl: &LiveAcl| {
            acl.ip_rules
                .iter()
                .copied()
                .collect::<std::collections::HashSet<_>>()
        };
        let rest = |acl: &LiveAcl| {
            acl.network_acls.as_ref().map(|m| {
                let mut m = m.clone();
                m.remove("ipRules");
                m
            })
        };
        self.missing == other.missing
            && self.public_network_access == other.public_network_access
            && rest(self) == rest(other)
            && rules(self) == rules(other)
            && self.verbatim_entries() == other.verbatim_entries()
    }

    /// How many IP rules the vault holds, readable or not.
    pub fn rule_count(&self) -> usize {
        self.ip_rules.len() + self.unreadable.len()
    }
}

/// Parses a vault document, refusing a key that appears twice in one object.
///
/// # Errors
/// [`LiveError::Json`] naming the problem.
pub fn parse_document(bytes: &[u8]) -> Result<Value, LiveError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde::Deserialize::deserialize(&mut deserializer)
        .map(|Strict(value)| value)
        .map_err(LiveError::Json)?;
    deserializer.end().map_err(LiveError::Json)?;
    Ok(value)
}

/// A JSON value read with every object's keys checked for repeats.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key \"{key}\" appears twice in one object"
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Splits `ipRules` entries into the rules tagfence can read (normalised, deduplicated, in
/// first-seen order) and the ones it keeps verbatim.
fn read_rules(entries: &[Value]) -> (Vec<(Ipv4Net, Value)>, Vec<UnreadableRule>) {
    let mut readable: Vec<(Ipv4Net, Value)> = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    let mut unreadable = Vec::new();
    for entry in entries {
        match entry.get("value").and_then(Value::as_str) {
            Some(text) => match cidr::parse_rule(text) {
                Ok(rule) => {
                    if seen.insert(rule) {
                        readable.push((rule, entry.clone()));
                    }
                }
                Err(reason) => unreadable.push(UnreadableRule {
                    entry: entry.clone(),
                    value: text.to_owned(),
                    reason: reason.to_string(),
                }),
            },
            None => unreadable.push(UnreadableRule {
                entry: entry.clone(),
                value: "<not a string>".to_owned(),
                reason: "the entry has no string value".to_owned(),
            }),
        }
    }
    (readable, unreadable)
}

/// Refuses the documents people mistake for a resource of `kind`: an ARM error body, a list
/// response, an API example file, another resource type.
fn not_something_else(kind: Kind, doc: &Map<String, Value>) -> Result<(), String> {
    if let Some(error) = doc.get("error") {
        let code = error.get("code").and_then(Value::as_str).unwrap_or("?");
        return Err(format!("it is an ARM error answer (code {code})"));
    }
    if doc.contains_key("responses") || doc.contains_key("parameters") {
        return Err(
            "it looks like an API example file (it has `parameters`/`responses`); give the resource object of a response body".to_owned(),
        );
    }
    if doc.get("value").is_some_and(Value::is_array) && !doc.contains_key("properties") {
        return Err("it is a list response (`value` array); give one resource object".to_owned());
    }
    if let Some(given) = doc.get("type").and_then(Value::as_str) {
        if !given.eq_ignore_ascii_case(kind.resource_type()) {
            return Err(format!("its type is {given}, not {}", kind.resource_type()));
        }
    }
    let looks_like_a_resource = ["id", "name", "type", "properties"]
        .iter()
        .any(|key| doc.contains_key(*key));
    if !looks_like_a_resource {
        return Err("it has none of id, name, type or properties".to_owned());
    }
    Ok(())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Normalises rule values as Key Vault stores them: a bare address becomes a `/32`; duplicates
/// (`1.2.3.4` and `1.2.3.4/32`) are kept once, in first-seen order.
///
/// # Errors
/// The value that is not an IPv4 address or canonical prefix, and why.
pub fn normalise_rules(values: &[String]) -> Result<Vec<Ipv4Net>, (String, cidr::RuleError)> {
    let mut rules: Vec<Ipv4Net> = Vec::with_capacity(values.len());
    let mut seen = std::collections::HashSet::with_capacity(values.len());
    for value in values {
        let rule = cidr::parse_rule(value).map_err(|reason| (value.clone(), reason))?;
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
        assert!(live.is_whole());
        assert_eq!(live.network_acls.as_ref().unwrap().len(), 4);
    }

    #[test]
    fn a_read_without_the_firewall_says_what_it_lacks() {
        use AclField::*;
        let cases: &[(&str, &[AclField])] = &[
            (
                r#"{"name":"kv","properties":{"publicNetworkAccess":"Disabled"}}"#,
                &[NetworkAcls],
            ),
            (
                r#"{"name":"kv","properties":{"networkAcls":null}}"#,
                &[NetworkAcls],
            ),
            (r#"{"name":"kv"}"#, &[Properties]),
            (r#"{"name":"kv","properties":null}"#, &[Properties]),
            (
                r#"{"name":"kv","properties":{"networkAcls":{"defaultAction":"Deny","bypass":"None","virtualNetworkRules":[]}}}"#,
                &[IpRules],
            ),
            (
                r#"{"name":"kv","properties":{"networkAcls":{"defaultAction":"Deny","bypass":"None","virtualNetworkRules":[],"ipRules":null}}}"#,
                &[IpRules],
            ),
            (
                r#"{"name":"kv","properties":{"networkAcls":{"bypass":"None","virtualNetworkRules":[],"ipRules":[]}}}"#,
                &[DefaultAction],
            ),
            (
                r#"{"name":"kv","properties":{"networkAcls":{"defaultAction":"Deny","virtualNetworkRules":[],"ipRules":[]}}}"#,
                &[Bypass],
            ),
            (
                r#"{"name":"kv","properties":{"networkAcls":{"defaultAction":"Deny","bypass":null,"ipRules":[]}}}"#,
                &[Bypass, VirtualNetworkRules],
            ),
            (
                r#"{"name":"kv","properties":{"networkAcls":{"defaultAction":null,"ipRules":null}}}"#,
                &[DefaultAction, Bypass, IpRules, VirtualNetworkRules],
            ),
            (
                r#"{"name":"kv","properties":{"networkAcls":{"defaultAction":"Deny","bypass":"None","virtualNetworkRules":[],"ipRules":[]}}}"#,
                &[],
            ),
        ];
        for (doc, missing) in cases {
            let live = LiveAcl::from_vault_json(doc.as_bytes()).unwrap();
            assert_eq!(live.missing, *missing, "{doc}");
            assert!(live.ip_rules.is_empty());
        }
    }

    #[test]
    fn unreadable_rules_are_kept_verbatim() {
        let live = LiveAcl::from_vault_json(
            br#"{"name":"kv","properties":{"networkAcls":{"defaultAction":"Deny","bypass":"None","virtualNetworkRules":[],"ipRules":[
                {"value":"203.0.113.5/24"},{"value":"'10.91.4.0/24'"},{"value":""},{"value":"1.2.3.4"},{"value":7},{"other":true}]}}}"#,
        )
        .unwrap();
        assert_eq!(live.ip_rules, ["1.2.3.4/32".parse::<Ipv4Net>().unwrap()]);
        let values: Vec<&str> = live.unreadable.iter().map(|r| r.value.as_str()).collect();
        assert_eq!(
            values,
            [
                "203.0.113.5/24",
                "'10.91.4.0/24'",
                "",
                "<not a string>",
                "<not a string>"
            ]
        );
        assert_eq!(live.unreadable[4].entry, serde_json::json!({"other": true}));
        assert_eq!(live.rule_count(), 6);
    }

    #[test]
    fn refuses_what_is_not_a_vault() {
        for (doc, says) in [
            (
                r#"{"value":[{"name":"kv","properties":{}}]}"#,
                "list response",
            ),
            (
                r#"{"error":{"code":"ResourceNotFound","message":"x"}}"#,
                "error answer (code ResourceNotFound)",
            ),
            (
                r#"{"parameters":{},"responses":{"200":{"body":{}}}}"#,
                "API example file",
            ),
            (
                r#"{"name":"st","type":"Microsoft.Storage/storageAccounts","properties":{}}"#,
                "not Microsoft.KeyVault/vaults",
            ),
            (r#"[1,2]"#, "an array, not a JSON object"),
            (r#"{}"#, "none of id, name, type or properties"),
            (
                r#"{"name":"kv","properties":{"networkAcls":"Deny"}}"#,
                "networkAcls is a string",
            ),
            (
                r#"{"name":"kv","properties":[]}"#,
                "properties are not an object",
            ),
        ] {
            let err = LiveAcl::from_vault_json(doc.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{doc}: {err}");
        }
        assert!(LiveAcl::from_vault_json(b"{").is_err());
    }

    #[test]
    fn a_key_twice_in_one_object_is_not_trusted() {
        for doc in [
            r#"{"name":"kv","properties":{"networkAcls":{"defaultAction":"Deny","defaultAction":"Allow"}}}"#,
            r#"{"name":"kv","properties":{"networkAcls":{"ipRules":[{"value":"1.2.3.4"}],"ipRules":[]}}}"#,
            r#"{"name":"kv","name":"other"}"#,
        ] {
            let err = LiveAcl::from_vault_json(doc.as_bytes()).unwrap_err();
            let text = format!("{}: {}", err, std::error::Error::source(&err).unwrap());
            assert!(text.contains("appears twice in one object"), "{text}");
        }
        // The same key in two objects is fine; numbers, nulls and nesting read as usual.
        let doc = br#"{"name":"kv","properties":{"x":{"value":1.5},"y":{"value":-2},"z":[null,true,{"value":"a"}]}}"#;
        assert!(parse_document(doc).is_ok());
        assert!(parse_document(b"{} trailing").is_err());
    }
}
