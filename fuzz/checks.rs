//! The checks behind the fuzz targets, shared by the cargo-fuzz crate (`fuzz_targets/*.rs`, on
//! nightly with libFuzzer) and by `tests/fuzz_corpus.rs` (on stable, replaying the committed
//! corpora). Each function takes raw fuzz bytes and panics on a bug: a panic inside tagfence
//! itself, or a broken invariant (`assert!`). Anything tagfence refuses cleanly is fine.
//!
//! Only crates that both the main crate and the fuzz crate depend on are used here (`tagfence`,
//! `serde_json`, `flate2`, `ipnet`), so the same file compiles in both.

use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::Value;
use tagfence::azure::ResourceId;
use tagfence::core::cidr::{self, RuleError};
use tagfence::core::desired;
use tagfence::core::service_tags::{
    Format, ParseError, ServiceTag, ServiceTags, MAX_DOCUMENT_BYTES,
};
use tagfence::server::invocation::{
    self as envelope, Events, HttpRequestData, InvocationError, InvocationRequest,
};

// ---------------------------------------------------------------------------------------------
// Service Tags
// ---------------------------------------------------------------------------------------------

/// The JSON errors of the Service Tags parser that are about a value's *type*, not its syntax:
/// a well-formed document may still draw them (e.g. `"cloud": 5`).
const TYPE_ERRORS: &[&str] = &[
    "expected an object",
    "expected an array",
    "expected a string",
];

/// A tag's data, owned, for comparing two parses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TagData {
    name: String,
    id: String,
    region: String,
    system_service: String,
    change_number: u64,
    ipv4: Vec<Ipv4Net>,
    ipv6: Vec<Ipv6Net>,
}

impl From<ServiceTag<'_>> for TagData {
    fn from(tag: ServiceTag<'_>) -> Self {
        TagData {
            name: tag.name.to_owned(),
            id: tag.id.to_owned(),
            region: tag.region.to_owned(),
            system_service: tag.system_service.to_owned(),
            change_number: tag.change_number,
            ipv4: tag.ipv4.to_vec(),
            ipv6: tag.ipv6.to_vec(),
        }
    }
}

fn tag_data(doc: &ServiceTags) -> Vec<TagData> {
    doc.tags().map(TagData::from).collect()
}

/// What the parser sees after decompression: gzip is detected by its magic bytes, and at most
/// `MAX_DOCUMENT_BYTES` are read. `None` when the gzip stream itself is broken or too large.
fn decompressed(input: &[u8]) -> Option<Vec<u8>> {
    if !input.starts_with(&[0x1f, 0x8b]) {
        return Some(input.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(input)
        .take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() <= MAX_DOCUMENT_BYTES).then_some(out)
}

/// The filter a filtered parse is checked with: every other name of the document, with its case
/// changed and padded with spaces (the filter ignores both), and a name no tag has.
fn filter_names(names: &[String]) -> Vec<String> {
    let mut filter: Vec<String> = names
        .iter()
        .step_by(2)
        .map(|n| format!(" {} ", n.to_ascii_uppercase()))
        .collect();
    filter.push("no such tag \u{1}".to_owned());
    filter
}

fn wanted(filter: &[String], name: &str) -> bool {
    filter.iter().any(|n| n.trim().eq_ignore_ascii_case(name))
}

/// `ServiceTags::parse`, `parse_only`, the accessors and `to_download_json`.
///
/// Invariants:
/// 1. Nothing panics.
/// 2. JSON: a document `parse` accepts is JSON per serde_json and valid UTF-8 (after the byte
///    order mark the reader documents accepting); and a document serde_json reads as a `Value`
///    is refused by `parse` for a JSON *syntax* reason never, only for a value of the wrong type.
///    (serde_json's `Value` stops at depth 127 and at numbers beyond f64: those limits are not
///    JSON's, so there the syntax-only `IgnoredAny` is the reference.)
/// 3. `parse_only` (documented: the whole document is checked as JSON, the named tags as
///    strictly as by `parse`, the prefixes of the others are not read) accepts every document
///    `parse` accepts, with the same header, the same names, and the named tags' data equal;
///    it may accept one `parse` refuses only when the fault is a prefix of a tag it left out.
/// 4. The accessors agree with each other and every prefix is canonical.
/// 5. `to_download_json` reads back to the same tags.
pub fn service_tags(input: &[u8]) {
    let full = ServiceTags::parse(input);
    let json = decompressed(input);

    // 2. JSON differential.
    match (&full, &json) {
        (Ok(_), None) => panic!("parse accepted a gzip stream flate2 refuses"),
        (Ok(_), Some(json)) => {
            let text = json.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(json);
            assert!(
                std::str::from_utf8(text).is_ok(),
                "parse accepted a document that is not UTF-8"
            );
            if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(text) {
                panic!("parse accepted a document serde_json refuses: {err}");
            }
            // The stricter `Value` also checks escapes (lone surrogates); past its own limits.
            if let Err(err) = serde_json::from_slice::<Value>(text) {
                let err = err.to_string();
                assert!(
                    err.starts_with("recursion limit exceeded")
                        || err.starts_with("number out of range"),
                    "parse accepted a document serde_json refuses as a Value: {err}"
                );
            }
        }
        (Err(ParseError::Json { message, .. }), Some(json)) => {
            if !TYPE_ERRORS.contains(&message.as_str()) {
                if let Ok(value) = serde_json::from_slice::<Value>(json) {
                    panic!("parse refused valid JSON ({message}): {value}");
                }
            }
        }
        (Err(_), _) => {}
    }

    // 3. Filtered parses: nothing wanted, and every other name.
    let only_none = ServiceTags::parse_only(input, &[]);
    let names: Vec<String> = match (&full, &only_none) {
        (Ok(doc), _) => doc.all_names().map(str::to_owned).collect(),
        (Err(_), Ok(doc)) => doc.all_names().map(str::to_owned).collect(),
        (Err(_), Err(_)) => Vec::new(),
    };
    let filter = filter_names(&names);
    let only_some = ServiceTags::parse_only(input, &filter);
    for (filter, only) in [(&[][..], &only_none), (&filter[..], &only_some)] {
        match (&full, only) {
            (Ok(_), Err(err)) => {
                panic!("parse accepted the document, parse_only({filter:?}) refused it: {err}")
            }
            (Ok(full), Ok(only)) => check_filtered(full, only, filter),
            (Err(ParseError::InvalidPrefix { tag, .. }), Ok(_)) if !wanted(filter, tag) => {}
            (Err(err), Ok(_)) => {
                panic!("parse refused the document ({err}), parse_only({filter:?}) accepted it")
            }
            (Err(_), Err(_)) => {}
        }
    }

    let Ok(doc) = full else { return };

    // 4. Accessors.
    let tags = tag_data(&doc);
    assert_eq!(doc.len(), tags.len());
    assert_eq!(
        doc.total_tags(),
        doc.len(),
        "an unfiltered parse skips nothing"
    );
    assert!(!doc.is_empty(), "a document without tags was accepted");
    assert_eq!(doc.all_names().count(), doc.total_tags());
    for (name, tag) in doc.all_names().zip(&tags) {
        assert_eq!(name, tag.name);
    }
    for tag in &tags {
        let found = doc.find(&tag.name).map(TagData::from);
        assert_eq!(found.as_ref(), Some(tag), "find({:?})", tag.name);
        let upper = doc.find(&tag.name.to_ascii_uppercase()).map(TagData::from);
        assert_eq!(upper.as_ref(), Some(tag), "find is case-insensitive");
        assert!(tag.ipv4.iter().all(|n| n.trunc() == *n), "host bits kept");
        assert!(tag.ipv6.iter().all(|n| n.trunc() == *n), "host bits kept");
    }
    let mut lower: Vec<String> = tags.iter().map(|t| t.name.to_ascii_lowercase()).collect();
    lower.sort_unstable();
    lower.dedup();
    assert_eq!(lower.len(), tags.len(), "a tag name is listed twice");

    // 5. The download-file rewrite reads back the same.
    let rewritten = doc.to_download_json();
    let again = match ServiceTags::parse(&rewritten) {
        Ok(again) => again,
        Err(err) => panic!(
            "to_download_json is refused by parse ({err}): {}",
            String::from_utf8_lossy(&rewritten)
        ),
    };
    assert_eq!(
        (again.cloud, again.change_number, again.format),
        (doc.cloud, doc.change_number, Format::DownloadFile)
    );
    assert_eq!(again.next_link, None);
    assert_eq!(tag_data(&again), tags, "to_download_json round trip");
}

/// A filtered parse against the full parse of the same document.
fn check_filtered(full: &ServiceTags, only: &ServiceTags, filter: &[String]) {
    assert_eq!(
        (only.cloud, only.change_number, only.format, &only.next_link),
        (full.cloud, full.change_number, full.format, &full.next_link)
    );
    assert_eq!(only.total_tags(), full.total_tags());
    let mut all: Vec<&str> = only.all_names().collect();
    let mut expected: Vec<&str> = full.all_names().collect();
    all.sort_unstable();
    expected.sort_unstable();
    assert_eq!(all, expected, "all_names of parse_only({filter:?})");
    let read: Vec<TagData> = tag_data(only);
    let expected: Vec<TagData> = full
        .tags()
        .filter(|t| wanted(filter, t.name))
        .map(TagData::from)
        .collect();
    assert_eq!(read, expected, "the tags parse_only({filter:?}) read");
}

// ---------------------------------------------------------------------------------------------
// The Functions host envelope
// ---------------------------------------------------------------------------------------------

/// `InvocationRequest::parse`, `binding`, `TimerInfo`, `HttpRequestData` and its accessors.
///
/// Invariants: nothing panics; an envelope is read only from a JSON object; `binding` returns
/// the binding's value, or the object/array a JSON string binding holds, and `MissingBinding`
/// exactly when `Data` lacks it; query parameter names come out lower-case; the action is
/// lower-case and is the `action` route parameter when that is a string; `http_output`'s body
/// is the value as JSON text.
pub fn envelope(input: &[u8]) {
    let Ok(request) = InvocationRequest::parse(input) else {
        return;
    };
    // serde_json checks the values of fields it ignores for syntax only (no UTF-8 or surrogate
    // checks), so `IgnoredAny` is the reference here, not `Value`.
    if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(input) {
        panic!("an envelope read from what is not JSON: {err}");
    }
    let first = input
        .iter()
        .find(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
    assert_eq!(
        first,
        Some(&b'{'),
        "an envelope read from a JSON non-object"
    );

    // The three binding names tagfence uses, and two more (`binding` takes a `&'static str`).
    for name in ["timer", "req", "event", "myTimer", ""] {
        let binding = request.binding(name);
        let raw = request.data.get(name);
        let binding = match (binding, raw) {
            (Err(InvocationError::MissingBinding(missing)), None) => {
                assert_eq!(missing, name);
                continue;
            }
            (Ok(binding), Some(raw)) => {
                assert_eq!(binding, unwrapped(raw), "binding({name:?})");
                check_events(&request, name, &binding);
                binding
            }
            (binding, raw) => panic!("binding({name:?}) gave {binding:?} for {raw:?}"),
        };
        let _ = serde_json::from_value::<envelope::TimerInfo>(binding.clone());
        if let Ok(http) = serde_json::from_value::<HttpRequestData>(binding.clone()) {
            check_http(&http);
        }
        let _ = tagfence::server::events::vault_written(&binding);
        // The body is the binding as JSON text. (Not compared by reading it back: serde_json's
        // `raw_value` feature, on in tagfence's dependency graph, makes an object whose first key
        // is "$serde_json::private::RawValue" special, and writing a map sorts its keys.)
        let output = envelope::http_output(200, &binding);
        let body = output["body"]
            .as_str()
            .expect("http_output body is a string");
        assert_eq!(body, serde_json::to_string(&binding).unwrap());
        if let Err(err) = serde_json::from_str::<serde::de::IgnoredAny>(body) {
            panic!("http_output body is not JSON: {err}");
        }
    }
}

/// What `binding` documents: an object or array inside at most `MAX_JSON_TEXT_LAYERS` layers of
/// JSON text (each layer a string holding JSON), else the value as sent.
fn unwrapped(raw: &Value) -> Value {
    let mut current = raw.clone();
    for _ in 0..envelope::MAX_JSON_TEXT_LAYERS {
        let Value::String(text) = &current else {
            break;
        };
        match serde_json::from_str::<Value>(text) {
            Ok(inner @ (Value::Object(_) | Value::Array(_) | Value::String(_))) => current = inner,
            _ => return raw.clone(),
        }
    }
    match current {
        Value::Object(_) | Value::Array(_) => current,
        _ => raw.clone(),
    }
}

/// `events` agrees with `binding`: one event is the binding when it is an object; a batch is
/// the binding's items (each unwrapped likewise, each an object), 1 to
/// `MAX_EVENTS_PER_INVOCATION` of them; anything else is refused, naming the binding.
fn check_events(request: &InvocationRequest, name: &'static str, binding: &Value) {
    match (request.events(name), binding) {
        (Ok(Events::One(event)), Value::Object(_)) => assert_eq!(&event, binding),
        (Ok(Events::Batch(events)), Value::Array(items)) => {
            assert!((1..=envelope::MAX_EVENTS_PER_INVOCATION).contains(&items.len()));
            assert_eq!(events.len(), items.len());
            for (event, item) in events.iter().zip(items) {
                assert!(event.is_object());
                assert_eq!(event, &unwrapped(item));
            }
        }
        (Err(InvocationError::BadBinding { binding: named, .. }), _) => assert_eq!(named, name),
        (events, _) => panic!("events({name:?}) gave {events:?} for the binding {binding:?}"),
    }
}

fn check_http(http: &HttpRequestData) {
    let params = http.query_params();
    for key in params.keys() {
        assert_eq!(
            *key,
            key.to_ascii_lowercase(),
            "query parameter names are lower-case"
        );
    }
    let action = http.action();
    assert_eq!(
        action,
        action.to_ascii_lowercase(),
        "the action is lower-case"
    );
    if let Some(Value::String(route)) = http.params.as_ref().and_then(|p| p.get("action")) {
        assert_eq!(
            action,
            route.to_ascii_lowercase(),
            "the route's action wins"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Event Grid events
// ---------------------------------------------------------------------------------------------

const WRITE_SUCCESS: &str = "Microsoft.Resources.ResourceWriteSuccess";

/// `tagfence::server::events::vault_written` on any JSON value, directly and as the host hands it over
/// (in an envelope, as an object or serialised as a string).
///
/// Invariants: nothing panics; an error only for a value with no string event type (the Event
/// Grid `eventType` is read first, then the CloudEvents `type`); a vault only for a
/// `ResourceWriteSuccess` whose `operationName` (when a string) is the write of a supported kind's resource (of the kind its id names), and
/// then exactly the vault the resource id names (`data.resourceUri`, else `subject`), whose
/// id round-trips through its `Display`; the same answer however the host wraps the event.
pub fn event_grid(input: &[u8]) {
    let Ok(event) = serde_json::from_slice::<Value>(input) else {
        return;
    };
    let result = tagfence::server::events::vault_written(&event);

    let event_type = event
        .get("eventType")
        .or_else(|| event.get("type"))
        .and_then(Value::as_str);
    match (&result, event_type) {
        (Err(_), None) => {}
        (Err(err), Some(ty)) => panic!("refused an event of type {ty:?}: {err}"),
        (Ok(_), None) => panic!("read an event with no event type"),
        (Ok(None), Some(_)) => {}
        (Ok(Some(vault)), Some(ty)) => {
            assert_eq!(ty, WRITE_SUCCESS);
            let data = event.get("data");
            if let Some(op) = data
                .and_then(|d| d.get("operationName"))
                .and_then(Value::as_str)
            {
                // The write of the resource's own kind.
                assert!(op.eq_ignore_ascii_case(&format!("{}/write", vault.kind.resource_type())));
            }
            let resource = data
                .and_then(|d| d.get("resourceUri"))
                .or_else(|| event.get("subject"))
                .and_then(Value::as_str)
                .expect("a vault from an event without a resource id");
            assert_eq!(resource.parse::<ResourceId>().as_ref(), Ok(vault));
            check_vault_id(vault);
        }
    }
    if let Ok(vault) = event
        .get("subject")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .parse::<ResourceId>()
    {
        check_vault_id(&vault);
    }

    // The same event as the host sends it: in the envelope, as an object or as a JSON string.
    // (The binding is not compared with the event itself: through JSON text a float may come
    // back 1 ULP off, as serde_json parses floats fast, not exactly, without its
    // `float_roundtrip` feature. The event's strings are what matter.)
    let container =
        matches!(event, Value::Object(_) | Value::Array(_)) && !has_raw_value_key(&event);
    for (wrapped, as_string) in [
        (event.clone(), false),
        (Value::String(event.to_string()), true),
        (
            Value::String(Value::String(event.to_string()).to_string()),
            true,
        ),
    ] {
        let body = serde_json::json!({"Data": {"event": wrapped}, "Metadata": {}});
        let request = InvocationRequest::parse(&serde_json::to_vec(&body).unwrap())
            .expect("an envelope serde_json wrote");
        let binding = request.binding("event").expect("the event binding");
        if container {
            assert_eq!(binding.is_object(), event.is_object());
            assert_eq!(
                tagfence::server::events::vault_written(&binding),
                result,
                "the event sent as a JSON string: {as_string}"
            );
        }
    }
    // A batch of the event twice, as an array and as JSON text of one: two events, each read
    // as the event alone is.
    if event.is_object() && !has_raw_value_key(&event) {
        let batch = Value::Array(vec![event.clone(), Value::String(event.to_string())]);
        for wrapped in [batch.clone(), Value::String(batch.to_string())] {
            let body = serde_json::json!({"Data": {"event": wrapped}, "Metadata": {}});
            let request = InvocationRequest::parse(&serde_json::to_vec(&body).unwrap())
                .expect("an envelope serde_json wrote");
            match request.events("event") {
                Ok(Events::Batch(events)) => {
                    assert_eq!(events.len(), 2);
                    for one in &events {
                        assert_eq!(tagfence::server::events::vault_written(one), result);
                    }
                }
                other => panic!("a batch of two events read as {other:?}"),
            }
        }
    }
}

/// Whether an object in `value` has serde_json's `raw_value` token as a key: written out with
/// its keys sorted, such an object can read back as something else (see `envelope`).
fn has_raw_value_key(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k == "$serde_json::private::RawValue" || has_raw_value_key(v)),
        Value::Array(items) => items.iter().any(has_raw_value_key),
        _ => false,
    }
}

fn check_vault_id(vault: &ResourceId) {
    let text = vault.to_string();
    assert_eq!(text.parse::<ResourceId>().as_ref(), Ok(vault), "{text}");
    assert!((3..=24).contains(&vault.name.len()));
    assert!(vault
        .name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    assert!(!vault.subscription.is_empty() && !vault.resource_group.is_empty());
}

// ---------------------------------------------------------------------------------------------
// CIDR and static rules
// ---------------------------------------------------------------------------------------------

/// `cidr::parse_rule`, `parse_v4`, `parse_v6`, `check_public`, `desired::parse_static_rule`, and
/// the set operations (`collapse`, `drop_reserved`, `address_count`) on the rules of the lines.
///
/// Invariants: nothing panics; an accepted rule is canonical (no host bits), is what std/ipnet
/// read from the same text, and its `to_string()` parses back to itself; `HostBits` names the
/// truncated prefix; `Ipv6` only for text `parse_v6` reads; a bare address reads exactly as std
/// `Ipv4Addr` reads it (both leading-zero strict) and an IPv6 address exactly as std `Ipv6Addr`
/// (documented); `check_public` refuses exactly the rules that overlap a reserved range, naming
/// one they overlap; `parse_static_rule` is `parse_rule` then `check_public`; `collapse` keeps
/// the address set, is idempotent and as small as ipnet's aggregate; `drop_reserved` removes
/// exactly the reserved addresses.
pub fn cidr(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    check_rule(text);
    let mut rules = Vec::new();
    for line in text.lines().take(64) {
        if line != text {
            check_rule(line);
        }
        if let Ok(rule) = cidr::parse_rule(line) {
            rules.push(rule);
        }
    }
    check_sets(&rules);
}

fn overlaps_reserved(rule: &Ipv4Net) -> bool {
    cidr::RESERVED
        .iter()
        .any(|r| r.net.contains(&rule.network()) || rule.contains(&r.net.network()))
}

fn check_rule(text: &str) {
    let trimmed = text.trim();
    let bytes = trimmed.as_bytes();

    // The low-level parsers against std.
    let v4 = cidr::parse_v4(bytes);
    match cidr::parse_v4_at(bytes) {
        Some((addr, len, used)) => {
            assert!(used <= bytes.len() && len <= 32);
            assert_eq!(v4, (used == bytes.len()).then_some((addr, len)));
        }
        None => assert_eq!(v4, None),
    }
    if !trimmed.contains('/') {
        let std = trimmed.parse::<Ipv4Addr>().ok().map(u32::from);
        assert_eq!(v4.map(|(a, _)| a), std, "parse_v4 vs std on {trimmed:?}");
        if let Some((_, len)) = v4 {
            assert_eq!(len, 32);
        }
        let std = trimmed.parse::<Ipv6Addr>().ok().map(u128::from);
        let ours = cidr::parse_v6(bytes);
        assert_eq!(ours.map(|(a, _)| a), std, "parse_v6 vs std on {trimmed:?}");
    } else if let Some((addr, len)) = v4 {
        let ipnet = trimmed.parse::<Ipv4Net>().ok();
        assert_eq!(
            ipnet.map(|n| (u32::from(n.addr()), n.prefix_len())),
            Some((addr, len)),
            "parse_v4 vs ipnet on {trimmed:?}"
        );
    }
    if let Some((addr, len)) = cidr::parse_v6(bytes) {
        let net = Ipv6Net::new(addr.into(), len).expect("parse_v6 checks the length");
        if let Some((head, _)) = trimmed.split_once('/') {
            assert_eq!(head.parse::<Ipv6Addr>().ok(), Some(net.addr()));
        }
    }

    // parse_rule.
    let rule = cidr::parse_rule(text);
    match &rule {
        Ok(net) => {
            let (addr, len) = v4.expect("parse_rule accepted what parse_v4 refuses");
            assert_eq!((u32::from(net.network()), net.prefix_len()), (addr, len));
            assert_eq!(net.trunc(), *net, "host bits in an accepted rule");
            assert_eq!(cidr::parse_rule(&net.to_string()).as_ref(), Ok(net));
        }
        Err(RuleError::HostBits { given, network }) => {
            assert_eq!(given, trimmed);
            let (addr, len) = v4.expect("HostBits for what parse_v4 refuses");
            assert_eq!(*network, cidr::net(addr, len));
            assert_ne!(u32::from(network.network()), addr);
            assert_eq!(cidr::parse_rule(&network.to_string()).as_ref(), Ok(network));
        }
        Err(RuleError::Ipv6(given)) => {
            assert_eq!(given, trimmed);
            assert!(v4.is_none() && cidr::parse_v6(bytes).is_some());
        }
        Err(RuleError::Invalid(given)) => {
            assert_eq!(given, trimmed);
            assert!(v4.is_none() && cidr::parse_v6(bytes).is_none());
        }
        Err(other) => panic!("parse_rule gave {other:?}"),
    }

    // check_public and parse_static_rule.
    let public = rule.clone().and_then(|net| cidr::check_public(net, text));
    if let Ok(net) = &rule {
        match &public {
            Ok(same) => {
                assert_eq!(same, net);
                assert!(!overlaps_reserved(net), "{net} overlaps a reserved range");
                assert_eq!(cidr::reserved_overlap(net), None);
            }
            Err(RuleError::Reserved { given, reserved }) => {
                assert_eq!(given, trimmed);
                let (start, end) = cidr::range(net);
                let (r_start, r_end) = cidr::range(&reserved.net);
                assert!(start < r_end && r_start < end, "{net} vs {}", reserved.net);
            }
            Err(other) => panic!("check_public gave {other:?}"),
        }
    }
    let stat = desired::parse_static_rule(text);
    assert_eq!(
        stat, public,
        "parse_static_rule is parse_rule + check_public"
    );
    if let Ok(net) = &stat {
        assert_eq!(net.trunc(), *net);
        assert!(!overlaps_reserved(net));
        assert_eq!(
            desired::parse_static_rule(&net.to_string()).as_ref(),
            Ok(net)
        );
    }
}

fn check_sets(rules: &[Ipv4Net]) {
    let count = cidr::address_count(rules);
    let collapsed = cidr::collapse(rules);
    assert_eq!(cidr::address_count(&collapsed), count);
    assert_eq!(
        cidr::collapse(&collapsed),
        collapsed,
        "collapse is idempotent"
    );
    assert_eq!(collapsed.len(), Ipv4Net::aggregate(&rules.to_vec()).len());
    for pair in collapsed.windows(2) {
        assert!(
            cidr::range(&pair[0]).1 <= cidr::range(&pair[1]).0,
            "{pair:?}"
        );
    }
    let mut public = Vec::new();
    let touched = cidr::drop_reserved(rules, &mut public);
    assert_eq!(
        touched,
        rules.iter().filter(|r| overlaps_reserved(r)).count()
    );
    assert!(public.iter().all(|n| !overlaps_reserved(n)));
    // What was dropped is exactly the reserved part of the input.
    let mut reserved_in = Vec::new();
    for rule in &collapsed {
        for r in &cidr::RESERVED {
            if rule.contains(&r.net) {
                reserved_in.push(r.net);
            } else if r.net.contains(rule) {
                reserved_in.push(*rule);
            }
        }
    }
    assert_eq!(
        cidr::address_count(&public) + cidr::address_count(&reserved_in),
        count
    );
}
