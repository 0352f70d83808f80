//! The body edits of a [`crate::FaultKind::Reshape`] fault: RFC 6901 JSON Pointers applied to an
//! answer that is already made. Everything here is pure: bytes in, bytes out.

use serde_json::{Map, Value};

/// Splits a JSON Pointer into its unescaped reference tokens (`""` is the whole document).
///
/// # Errors
///
/// A pointer that is neither empty nor starts with `/`, or holds a `~` not followed by `0` or `1`.
pub(crate) fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "JSON Pointer '{pointer}' must be empty (the whole body) or start with '/'"
        ));
    };
    rest.split('/')
        .map(|token| {
            let mut unescaped = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    unescaped.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => unescaped.push('~'),
                    Some('1') => unescaped.push('/'),
                    _ => {
                        return Err(format!(
                            "JSON Pointer '{pointer}' holds '~' not followed by '0' or '1'"
                        ))
                    }
                }
            }
            Ok(unescaped)
        })
        .collect()
}

/// The array index a token names: decimal without leading zeros, below `len` (or equal to it, or
/// `-`, when `append` is allowed).
fn array_index(token: &str, len: usize, append: bool) -> Option<usize> {
    if append && token == "-" {
        return Some(len);
    }
    let digits = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    let index: usize = token.parse().ok().filter(|_| digits)?;
    (index < len || (append && index == len)).then_some(index)
}

/// The value at `tokens`, if it exists.
fn get_mut<'a>(mut value: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    for token in tokens {
        value = match value {
            Value::Object(map) => map.get_mut(token)?,
            Value::Array(items) => {
                let index = array_index(token, items.len(), false)?;
                items.get_mut(index)?
            }
            _ => return None,
        };
    }
    Some(value)
}

/// Removes the member or element at `tokens` (non-empty); `false` when there was none.
fn remove(document: &mut Value, tokens: &[String]) -> bool {
    let Some((last, parent)) = tokens.split_last() else {
        return false;
    };
    match get_mut(document, parent) {
        Some(Value::Object(map)) => map.remove(last).is_some(),
        Some(Value::Array(items)) => match array_index(last, items.len(), false) {
            Some(index) => {
                items.remove(index);
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// Sets the member or element at `tokens` (non-empty), creating missing (or non-container)
/// parents as objects; `false` when an array index was out of range.
fn set(document: &mut Value, tokens: &[String], new: Value) -> bool {
    let Some((last, parent_tokens)) = tokens.split_last() else {
        *document = new;
        return true;
    };
    let mut parent = document;
    for token in parent_tokens {
        if !parent.is_object() && !parent.is_array() {
            *parent = Value::Object(Map::new());
        }
        parent = match parent {
            Value::Object(map) => map
                .entry(token.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => match array_index(token, items.len(), false) {
                Some(index) => &mut items[index],
                None => return false,
            },
            _ => unreachable!("the parent was just made a container"),
        };
    }
    if !parent.is_object() && !parent.is_array() {
        *parent = Value::Object(Map::new());
    }
    match parent {
        Value::Object(map) => {
            map.insert(last.clone(), new);
            true
        }
        Value::Array(items) => match array_index(last, items.len(), true) {
            Some(index) if index == items.len() => {
                items.push(new);
                true
            }
            Some(index) => {
                items[index] = new;
                true
            }
            None => false,
        },
        _ => unreachable!("the parent was just made a container"),
    }
}

/// Applies the edits of a reshape fault to a body: every `remove`, then every `null`, then every
/// `set`. Returns the new body, or `None` when nothing applies (a body that is not JSON and no
/// whole-body edit). A removed whole body is empty. Malformed pointers are skipped (faults are
/// checked when queued).
pub(crate) fn reshape(
    body: &[u8],
    remove_pointers: &[String],
    null_pointers: &[String],
    set_pointers: &[(String, Value)],
) -> Option<Vec<u8>> {
    let parse = |pointer: &String| parse_pointer(pointer).ok();
    let removes: Vec<Vec<String>> = remove_pointers.iter().filter_map(parse).collect();
    let sets: Vec<(Vec<String>, Value)> = null_pointers
        .iter()
        .map(|pointer| (pointer, Value::Null))
        .chain(
            set_pointers
                .iter()
                .map(|(pointer, value)| (pointer, value.clone())),
        )
        .filter_map(|(pointer, value)| Some((parse(pointer)?, value)))
        .collect();
    let mut document: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(body) {
            Ok(value) => Some(value),
            Err(_) => {
                let whole = removes.iter().any(Vec::is_empty)
                    || sets.iter().any(|(tokens, _)| tokens.is_empty());
                if !whole {
                    return None;
                }
                None
            }
        }
    };
    for tokens in &removes {
        if tokens.is_empty() {
            document = None;
        } else if let Some(value) = document.as_mut() {
            remove(value, tokens);
        }
    }
    for (tokens, value) in sets {
        let target = document.get_or_insert_with(|| Value::Object(Map::new()));
        set(target, &tokens, value);
    }
    Some(
        document
            .map(|value| value.to_string().into_bytes())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn apply(body: &Value, remove: &[&str], null: &[&str], set: &[(&str, Value)]) -> Value {
        let owned = |list: &[&str]| list.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        let set: Vec<(String, Value)> = set
            .iter()
            .map(|(p, v)| ((*p).to_owned(), v.clone()))
            .collect();
        let bytes = reshape(
            body.to_string().as_bytes(),
            &owned(remove),
            &owned(null),
            &set,
        )
        .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn vault() -> Value {
        json!({"name": "kv", "properties": {"networkAcls": {"defaultAction": "Deny", "ipRules": [{"value": "1.1.1.1/32"}, {"value": "2.2.2.0/24"}]}}})
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        assert_eq!(parse_pointer("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_pointer("/").unwrap(), [""]);
        assert_eq!(
            parse_pointer("/a~1b/c~0d/~01").unwrap(),
            ["a/b", "c~d", "~1"]
        );
        assert!(parse_pointer("a").is_err());
        assert!(parse_pointer("/a~").is_err());
        assert!(parse_pointer("/a~x").is_err());
    }

    #[test]
    fn members_and_elements_are_removed_missing_ones_ignored() {
        let out = apply(
            &vault(),
            &[
                "/properties/networkAcls/ipRules/0",
                "/properties/networkAcls/defaultAction",
                "/nothing/here",
                "/properties/networkAcls/ipRules/7",
            ],
            &[],
            &[],
        );
        assert_eq!(
            out,
            json!({"name": "kv", "properties": {"networkAcls": {"ipRules": [{"value": "2.2.2.0/24"}]}}})
        );
    }

    #[test]
    fn null_and_set_create_parents_and_append() {
        let out = apply(
            &vault(),
            &["/properties"],
            &["/properties/networkAcls"],
            &[("/extra/deep", json!(1)), ("/name", json!("other"))],
        );
        assert_eq!(
            out,
            json!({"name": "other", "properties": {"networkAcls": null}, "extra": {"deep": 1}})
        );
        let appended = apply(
            &vault(),
            &[],
            &[],
            &[
                ("/properties/networkAcls/ipRules/-", json!({"value": "''"})),
                ("/properties/networkAcls/ipRules/0", json!({"value": ""})),
                ("/properties/networkAcls/ipRules/9", json!("ignored")),
            ],
        );
        assert_eq!(
            appended["properties"]["networkAcls"]["ipRules"],
            json!([{"value": ""}, {"value": "2.2.2.0/24"}, {"value": "''"}])
        );
    }

    #[test]
    fn the_whole_body_can_be_replaced_or_emptied() {
        let list = json!({"value": [vault()]});
        assert_eq!(apply(&vault(), &[], &[], &[("", list.clone())]), list);
        let empty = reshape(b"{}", &["".to_owned()], &[], &[]).unwrap();
        assert!(empty.is_empty());
        // Removed, then set again: the set wins.
        assert_eq!(
            apply(&vault(), &[""], &[], &[("/a", json!(1))]),
            json!({"a": 1})
        );
    }

    #[test]
    fn bodies_that_are_not_json_change_only_by_whole_body_edits() {
        assert!(reshape(b"<html>", &["/a".to_owned()], &[], &[]).is_none());
        let replaced = reshape(b"<html>", &[], &[], &[(String::new(), json!([]))]).unwrap();
        assert_eq!(replaced, b"[]");
    }
}
