//! The Azure Functions custom-handler envelopes (azure-interfaces.md §1.1–§1.7).
//!
//! The host POSTs `{"Data": {<binding name>: …}, "Metadata": {…}}` (PascalCase keys, chunked,
//! no Content-Length) and reads back `{"Outputs": {…}, "Logs": […], "ReturnValue": …}`. Any
//! non-2xx answer fails the invocation and discards `Logs` and `Outputs` (§1.4), so a failed run
//! still answers with a JSON body, for the stdout log and for humans reading it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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

/// Why an envelope could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("the invocation body is not a JSON object with Data and Metadata: {0}")]
    NotJson(String),
    #[error("the invocation has no Data.{0} (the function's trigger binding)")]
    MissingBinding(&'static str),
    #[error("Data.{binding} is not what a {kind} trigger sends: {detail}")]
    BadBinding {
        binding: &'static str,
        kind: &'static str,
        detail: String,
    },
}

impl InvocationRequest {
    /// Reads an envelope.
    ///
    /// # Errors
    /// [`EnvelopeError::NotJson`].
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        // serde's derived Deserialize also reads a struct from an array (`[]`, `[{Data}, {}]`):
        // only an object is an envelope.
        let start = body
            .iter()
            .position(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
        if let Some(start) = start.filter(|&i| body[i] != b'{') {
            return Err(EnvelopeError::NotJson(format!(
                "expected a JSON object at byte {start}"
            )));
        }
        serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))
    }

    /// The value of trigger binding `name`. The host may send an object, or (for a binding it
    /// types as string) the same object serialised as a JSON string (§1.7, unverified); both
    /// are accepted.
    ///
    /// # Errors
    /// [`EnvelopeError::MissingBinding`].
    pub fn binding(&self, name: &'static str) -> Result<Value, EnvelopeError> {
        let value = self
            .data
            .get(name)
            .ok_or(EnvelopeError::MissingBinding(name))?;
        if let Value::String(text) = value {
            if let Ok(parsed @ (Value::Object(_) | Value::Array(_))) =
                serde_json::from_str::<Value>(text)
            {
                return Ok(parsed);
            }
        }
        Ok(value.clone())
    }
}

/// The timer trigger's value (§1.2): only `IsPastDue` matters here.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TimerInfo {
    #[serde(rename = "IsPastDue", alias = "isPastDue", default)]
    pub is_past_due: bool,
    #[serde(rename = "ScheduleStatus", alias = "scheduleStatus", default)]
    pub schedule_status: Option<Value>,
}

/// The HTTP trigger's request as the host wraps it (§1.6 A).
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
        // As captured from host 4.24.4.4 (azure-interfaces.md §1.2).
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
    fn rejects_what_is_not_an_envelope() {
        assert!(matches!(
            InvocationRequest::parse(b"not json"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(
            InvocationRequest::parse(b"[1]"),
            Err(EnvelopeError::NotJson(_))
        ));
        // Found by fuzzing (fuzz/regressions/envelope): serde reads a struct from an array too.
        for (body, at) in [(&b" []"[..], 1), (br#"[{"timer": {}}, {}]"#, 0)] {
            assert_eq!(
                InvocationRequest::parse(body).unwrap_err(),
                EnvelopeError::NotJson(format!("expected a JSON object at byte {at}"))
            );
        }
    }
}
