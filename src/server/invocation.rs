//! The Azure Functions custom-handler invocation bodies (Microsoft Learn, "Azure Functions custom
//! handlers", and `DefaultHttpWorkerService.cs` in Azure/azure-functions-host).
//!
//! The host POSTs `{"Data": {<binding name>: …}, "Metadata": {…}}` (PascalCase keys, chunked,
//! no Content-Length) and reads back `{"Outputs": {…}, "Logs": […], "ReturnValue": …}`. Any
//! non-2xx answer fails the invocation and discards `Logs` and `Outputs` (the host's
//! `EnsureSuccessStatusCode`), so a failed run still answers with a JSON body, for the stdout log
//! and for humans reading it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How many layers of JSON text around a binding's value are unwrapped. The host sends a value
/// it cannot make a `JObject` of as `JsonConvert.SerializeObject(value)` (azure-functions-host,
/// `ScriptInvocationContextExtensions.GetHttpScriptInvocationContextValue`), so a value that
/// was already a JSON string arrives as a string of a string; three layers leave room for one
/// more hop (an extension or a proxy) and no more.
pub const MAX_JSON_TEXT_LAYERS: usize = 3;

/// The most Event Grid events one invocation handles. A subscription delivers at most
/// `maxEventsPerBatch` events at once (1 by default, up to 5,000): each event about a vault is
/// a reconcile of that vault, and a hundred of them already take minutes of the function's
/// ten-minute timeout. A larger batch is refused whole, with this number in the error, and Event
/// Grid redelivers it until it dead-letters: set `maxEventsPerBatch` to at most this.
pub const MAX_EVENTS_PER_INVOCATION: usize = 100;

/// What the host sends for every invocation.
#[derive(Debug, Clone, Deserialize)]
pub struct InvocationRequest {
    #[serde(rename = "Data", alias = "data", default)]
    pub data: Map<String, Value>,
    #[serde(rename = "Metadata", alias = "metadata", default)]
    pub metadata: Map<String, Value>,
}

/// What the handler answers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InvocationResponse {
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    #[serde(rename = "ReturnValue")]
    pub return_value: Value,
}

/// Why an invocation body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvocationError {
    #[error("the invocation body is not a JSON object with Data and Metadata: {0}")]
    NotJson(String),
    #[error("the invocation has no Data.{0} (the function's trigger binding)")]
    MissingBinding(&'static str),
    #[error("Data.{binding} is not what the {kind} trigger sends: {detail}")]
    BadBinding {
        binding: &'static str,
        kind: &'static str,
        detail: String,
    },
}

impl InvocationRequest {
    /// Reads an invocation body.
    ///
    /// # Errors
    /// [`InvocationError::NotJson`].
    pub fn parse(body: &[u8]) -> Result<Self, InvocationError> {
        // serde's derived Deserialize also reads a struct from an array (`[]`, `[{Data}, {}]`):
        // only an object is an invocation body.
        let start = body
            .iter()
            .position(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
        if let Some(start) = start.filter(|&i| body[i] != b'{') {
            return Err(InvocationError::NotJson(format!(
                "expected a JSON object at byte {start}"
            )));
        }
        serde_json::from_slice(body).map_err(|e| InvocationError::NotJson(e.to_string()))
    }

    /// The value of trigger binding `name`. The host may send an object, or the same value
    /// serialised as a JSON string, or a JSON string of that string (which one is not documented):
    /// an object or array inside at most [`MAX_JSON_TEXT_LAYERS`] layers of JSON text is taken out
    /// of them; any other value is returned as sent.
    ///
    /// # Errors
    /// [`InvocationError::MissingBinding`].
    pub fn binding(&self, name: &'static str) -> Result<Value, InvocationError> {
        let value = self
            .data
            .get(name)
            .ok_or(InvocationError::MissingBinding(name))?;
        Ok(unwrap_json_text(value).unwrap_or_else(|| value.clone()))
    }

    /// The events of Event Grid trigger binding `name`: one event (an object), or a batch (an
    /// array of 1 to [`MAX_EVENTS_PER_INVOCATION`] events), either inside up to
    /// [`MAX_JSON_TEXT_LAYERS`] layers of JSON text, and each event of a batch likewise. Whether
    /// an object is an event is for the caller to judge.
    ///
    /// # Errors
    /// [`InvocationError::MissingBinding`]; [`InvocationError::BadBinding`] naming what was sent
    /// and what is accepted.
    pub fn events(&self, name: &'static str) -> Result<Events, InvocationError> {
        let bad = |detail: String| InvocationError::BadBinding {
            binding: name,
            kind: "Event Grid",
            detail,
        };
        let value = self
            .data
            .get(name)
            .ok_or(InvocationError::MissingBinding(name))?;
        match unwrap_json_text(value) {
            Some(Value::Object(event)) => Ok(Events::One(Value::Object(event))),
            Some(Value::Array(items)) => {
                // Event Grid never delivers an empty batch: whatever sent one is not it.
                if items.is_empty() {
                    return Err(bad(format!("got an empty array; {EXPECTED_EVENTS}")));
                }
                if items.len() > MAX_EVENTS_PER_INVOCATION {
                    return Err(bad(format!(
                        "a batch of {} events; at most {MAX_EVENTS_PER_INVOCATION} are handled in one invocation (set maxEventsPerBatch of the event subscription to {MAX_EVENTS_PER_INVOCATION} or less)",
                        items.len()
                    )));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| match unwrap_json_text(item) {
                        Some(event @ Value::Object(_)) => Ok(event),
                        _ => Err(bad(format!(
                            "event {} of the batch of {} is {}; {EXPECTED_EVENTS}",
                            i + 1,
                            items.len(),
                            describe(item)
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Events::Batch)
            }
            _ => Err(bad(format!("got {}; {EXPECTED_EVENTS}", describe(value)))),
        }
    }
}

/// What [`InvocationRequest::events`] accepts, for its errors.
const EXPECTED_EVENTS: &str = "expected an event (a JSON object) or a batch of events (a JSON array of objects), either possibly as JSON text (a string of JSON, or a string of such a string)";

/// The events of one Event Grid invocation, as sent: one event, or a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Events {
    One(Value),
    Batch(Vec<Value>),
}

/// The object or array inside at most [`MAX_JSON_TEXT_LAYERS`] layers of JSON text (the value
/// itself when it is one), or `None`.
fn unwrap_json_text(value: &Value) -> Option<Value> {
    let mut current = value.clone();
    for _ in 0..MAX_JSON_TEXT_LAYERS {
        let Value::String(text) = &current else {
            break;
        };
        match serde_json::from_str::<Value>(text) {
            Ok(inner @ (Value::Object(_) | Value::Array(_) | Value::String(_))) => current = inner,
            _ => return None,
        }
    }
    matches!(current, Value::Object(_) | Value::Array(_)).then_some(current)
}

/// What a value that is not an event is, in a few words.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::Object(_) => "an object".to_owned(),
        Value::Array(items) if items.is_empty() => "an empty array".to_owned(),
        Value::Array(items) => format!("an array of {} items", items.len()),
        Value::String(_) => {
            // Unwrap the layers of JSON text down to what is inside them.
            let mut layers = 0;
            let mut current = value.clone();
            let inner = loop {
                let Value::String(text) = &current else {
                    break describe(&current);
                };
                match serde_json::from_str::<Value>(text) {
                    Ok(inner) => {
                        layers += 1;
                        current = inner;
                    }
                    Err(_) => break "a string that is not JSON".to_owned(),
                }
            };
            match layers {
                0 => inner,
                1 => format!("JSON text of {inner}"),
                _ if layers <= MAX_JSON_TEXT_LAYERS => {
                    format!("{inner} inside {layers} layers of JSON text")
                }
                _ => format!(
                    "{inner} inside {layers} layers of JSON text (at most {MAX_JSON_TEXT_LAYERS} are read)"
                ),
            }
        }
    }
}

/// The timer trigger's value (Microsoft Learn, "Timer trigger for Azure Functions"): only
/// `IsPastDue` matters here.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TimerInfo {
    #[serde(rename = "IsPastDue", alias = "isPastDue", default)]
    pub is_past_due: bool,
    #[serde(rename = "ScheduleStatus", alias = "scheduleStatus", default)]
    pub schedule_status: Option<Value>,
}

/// The HTTP trigger's request as the host wraps it by default (`GetRequestAsJObject` in
/// Azure/azure-functions-host).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HttpRequestData {
    #[serde(rename = "Url", alias = "url", default)]
    pub url: String,
    #[serde(rename = "Method", alias = "method", default)]
    pub method: String,
    /// An object of `name: "v1,v2"`; some documentation shows it as a JSON string, also
    /// accepted.
    #[serde(rename = "Query", alias = "query", default)]
    pub query: Value,
    #[serde(rename = "Params", alias = "params", default)]
    pub params: Option<Map<String, Value>>,
    /// An object of `name: ["v1", "v2"]` (the host serialises ASP.NET Core's header dictionary:
    /// one array item per header line) or `name: "v"`; also accepted as a JSON string of
    /// that. Read with [`HttpRequestData::header_values`].
    #[serde(rename = "Headers", alias = "headers", default)]
    pub headers: Value,
    #[serde(rename = "Body", alias = "body", default)]
    pub body: Option<String>,
}

impl HttpRequestData {
    /// Query parameters by name (case-insensitive names; repeated keys joined with commas,
    /// as the host does).
    pub fn query_params(&self) -> BTreeMap<String, String> {
        let object = match &self.query {
            Value::Object(map) => map.clone(),
            Value::String(text) => {
                serde_json::from_str::<Map<String, Value>>(text).unwrap_or_default()
            }
            _ => Map::new(),
        };
        let mut params: BTreeMap<String, String> = object
            .into_iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s,
                    Value::Array(items) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                (k.to_ascii_lowercase(), value)
            })
            .collect();
        // Also read the query string of the URL, in case Query is empty.
        if let Ok(url) = url::Url::parse(&self.url) {
            for (k, v) in url.query_pairs() {
                params
                    .entry(k.to_ascii_lowercase())
                    .or_insert_with(|| v.into_owned());
            }
        }
        params
    }

    /// The values of header `name` (names in any case, as the host and the frameworks before it
    /// may change it), in the order sent: one per header line, whether the host sent a string
    /// or an array of strings. Items that are not strings are left out.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let parsed;
        let object = match &self.headers {
            Value::Object(map) => map,
            Value::String(text) => {
                parsed = serde_json::from_str::<Map<String, Value>>(text).unwrap_or_default();
                &parsed
            }
            _ => return Vec::new(),
        };
        object
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .flat_map(|(_, value)| match value {
                Value::String(text) => vec![text.clone()],
                Value::Array(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// The route parameter `name` (`grant/{id?}`: `id`) when it is a string that is not empty.
    pub fn route_param(&self, name: &str) -> Option<String> {
        match self.params.as_ref()?.get(name)? {
            Value::String(value) if !value.trim().is_empty() => Some(value.trim().to_owned()),
            _ => None,
        }
    }

    /// The action: the route parameter `action`, else the last path segment of the URL.
    pub fn action(&self) -> String {
        if let Some(Value::String(action)) = self.params.as_ref().and_then(|p| p.get("action")) {
            return action.to_ascii_lowercase();
        }
        url::Url::parse(&self.url)
            .ok()
            .and_then(|u| {
                u.path_segments()
                    .and_then(|mut s| s.next_back().map(str::to_owned))
            })
            .unwrap_or_default()
            .to_ascii_lowercase()
    }
}

/// An HTTP response for the `res` output binding.
pub fn http_output(status: u16, body: &Value) -> Value {
    serde_json::json!({
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        // A string body is passed through as is; the JSON is already text.
        "body": serde_json::to_string(body).expect("a JSON value serialises"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_captured_timer_payload() {
        // As captured from host 4.24.4.4 by DFE-Digital/service-security-posture-hardening
        // (`data_ingester_axum_entrypoint/src/azure_request_response.rs`).
        let body = br#"{ "Data": { "timer": { "Schedule": { "AdjustForDST": true }, "ScheduleStatus": null, "IsPastDue": false } },
          "Metadata": { "sys": { "MethodName": "azure", "UtcNow": "2023-09-07T11:40:45.004275Z", "RandGuid": "35e6e68c-5583-436c-a277-5aec2b416ba8" } } }"#;
        let request = InvocationRequest::parse(body).unwrap();
        let timer: TimerInfo = serde_json::from_value(request.binding("timer").unwrap()).unwrap();
        assert!(!timer.is_past_due);
        assert!(request.binding("req").is_err());
    }

    #[test]
    fn accepts_a_binding_sent_as_a_json_string() {
        let body = br#"{"Data": {"event": "{\"eventType\": \"X\"}"}, "Metadata": {}}"#;
        let event = InvocationRequest::parse(body)
            .unwrap()
            .binding("event")
            .unwrap();
        assert_eq!(event["eventType"], "X");
    }

    fn events(data: Value) -> Result<Events, InvocationError> {
        let body =
            serde_json::to_vec(&serde_json::json!({"Data": {"event": data}, "Metadata": {}}))
                .unwrap();
        InvocationRequest::parse(&body).unwrap().events("event")
    }

    #[test]
    fn events_come_as_objects_arrays_and_json_text_up_to_three_layers() {
        let event = serde_json::json!({"eventType": "X", "id": "1"});
        let once = Value::String(event.to_string());
        let twice = Value::String(once.to_string());
        let thrice = Value::String(twice.to_string());
        for form in [event.clone(), once.clone(), twice.clone(), thrice.clone()] {
            assert_eq!(events(form).unwrap(), Events::One(event.clone()));
        }
        let other = serde_json::json!({"eventType": "Y", "id": "2"});
        let batch = serde_json::json!([event, other]);
        let expected = Events::Batch(vec![event.clone(), other.clone()]);
        assert_eq!(events(batch.clone()).unwrap(), expected);
        assert_eq!(events(Value::String(batch.to_string())).unwrap(), expected);
        // Each event of a batch may be JSON text too (a `string[]` binding).
        let strings = serde_json::json!([once, Value::String(other.to_string())]);
        assert_eq!(
            events(Value::String(strings.to_string())).unwrap(),
            expected
        );
        // The binding reader unwraps the same layers.
        let body = serde_json::to_vec(&serde_json::json!({"Data": {"timer": thrice}})).unwrap();
        let timer = InvocationRequest::parse(&body)
            .unwrap()
            .binding("timer")
            .unwrap();
        assert_eq!(timer, event);
    }

    #[test]
    fn anything_else_is_refused_naming_what_it_is() {
        let event = serde_json::json!({"eventType": "X"});
        let four = (0..4).fold(event.clone(), |v, _| Value::String(v.to_string()));
        let detail = |data: Value| match events(data).unwrap_err() {
            InvocationError::BadBinding {
                detail,
                binding: "event",
                kind: "Event Grid",
            } => detail,
            other => panic!("{other:?}"),
        };
        for (data, start) in [
            (
                serde_json::json!(42),
                "got a number (42); expected an event (a JSON object) or a batch",
            ),
            (Value::Null, "got null; "),
            (serde_json::json!([]), "got an empty array; "),
            (serde_json::json!("[]"), "got an empty array; "),
            (
                serde_json::json!("hello"),
                "got a string that is not JSON; ",
            ),
            (
                serde_json::json!("\"hello\""),
                "got JSON text of a string that is not JSON; ",
            ),
            (
                serde_json::json!("[1]"),
                "event 1 of the batch of 1 is a number (1); ",
            ),
            (
                serde_json::json!([event, [event]]),
                "event 2 of the batch of 2 is an array of 1 items; ",
            ),
            (
                four,
                "got an object inside 4 layers of JSON text (at most 3 are read); ",
            ),
        ] {
            let detail = detail(data.clone());
            assert!(detail.starts_with(start), "{data}: {detail}");
        }
        let many = Value::Array(vec![event; MAX_EVENTS_PER_INVOCATION + 1]);
        assert_eq!(
            detail(many),
            "a batch of 101 events; at most 100 are handled in one invocation (set maxEventsPerBatch of the event subscription to 100 or less)"
        );
        assert_eq!(
            InvocationRequest::parse(br#"{"Data": {}}"#)
                .unwrap()
                .events("event"),
            Err(InvocationError::MissingBinding("event"))
        );
    }

    #[test]
    fn reads_the_http_request_in_both_query_forms() {
        let data: HttpRequestData = serde_json::from_value(serde_json::json!({
            "Url": "http://localhost:7071/api/sync?dryRun=true", "Method": "POST",
            "Query": {"vault": "kv-a,kv-b"}, "Headers": {"Content-Type": ["application/json"]}, "Params": {"action": "sync"}
        }))
        .unwrap();
        let q = data.query_params();
        assert_eq!(
            (q["vault"].as_str(), q["dryrun"].as_str()),
            ("kv-a,kv-b", "true")
        );
        assert_eq!(data.action(), "sync");
        let as_string: HttpRequestData = serde_json::from_value(
            serde_json::json!({"Url": "https://app/api/Status", "Method": "GET", "Query": "{}"}),
        )
        .unwrap();
        assert_eq!(as_string.action(), "status");
        assert!(as_string.query_params().is_empty());
    }

    #[test]
    fn headers_are_read_in_any_case_as_strings_or_arrays() {
        let data: HttpRequestData = serde_json::from_value(serde_json::json!({
            "Url": "https://app/api/grant/g-1", "Method": "DELETE", "Params": {"id": "g-1"},
            "Headers": {"x-forwarded-for": ["203.0.113.9", "20.1.2.3:51234"], "X-MS-CLIENT-PRINCIPAL-IDP": "aad", "Odd": [1]}
        }))
        .unwrap();
        assert_eq!(
            data.header_values("X-Forwarded-For"),
            ["203.0.113.9", "20.1.2.3:51234"]
        );
        assert_eq!(data.header_values("x-ms-client-principal-idp"), ["aad"]);
        assert!(data.header_values("odd").is_empty());
        assert!(data.header_values("absent").is_empty());
        assert_eq!(data.route_param("id").as_deref(), Some("g-1"));
        assert_eq!(data.route_param("other"), None);
        let as_text: HttpRequestData = serde_json::from_value(
            serde_json::json!({"Headers": "{\"Client-IP\": [\"20.1.2.3:1\"]}"}),
        )
        .unwrap();
        assert_eq!(as_text.header_values("client-ip"), ["20.1.2.3:1"]);
        // No headers at all, or a shape the host never sends: none.
        let none: HttpRequestData = serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(none.header_values("x-forwarded-for").is_empty());
    }

    #[test]
    fn rejects_what_is_not_an_invocation_body() {
        assert!(matches!(
            InvocationRequest::parse(b"not json"),
            Err(InvocationError::NotJson(_))
        ));
        assert!(matches!(
            InvocationRequest::parse(b"[1]"),
            Err(InvocationError::NotJson(_))
        ));
        // Found by fuzzing (fuzz/regressions/envelope, the fuzz target of this module): serde reads a struct from an array too.
        for (body, at) in [(&b" []"[..], 1), (br#"[{"timer": {}}, {}]"#, 0)] {
            assert_eq!(
                InvocationRequest::parse(body).unwrap_err(),
                InvocationError::NotJson(format!("expected a JSON object at byte {at}"))
            );
        }
    }
}
