//! ARM-shaped error responses.
//!
//! ARM wraps every error as `{"error":{"code","message"}}` (`CloudError` in
//! Azure/azure-rest-api-specs). Clients branch on the status and the code, so every refusal the
//! emulator makes goes through this one type, including injected `Status` faults and the 404 for
//! unknown paths.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// An ARM error: status, code and message, plus the optional headers some errors carry.
#[derive(Clone, Debug)]
pub(crate) struct ArmError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// `Retry-After` in seconds (429 and injected faults).
    pub retry_after: Option<u64>,
    /// `WWW-Authenticate` challenge (401).
    pub www_authenticate: Option<String>,
    /// `error.details`: further `{code, message}` pairs (Resource Graph's 429); left out of the
    /// body when empty.
    pub details: Vec<(String, String)>,
}

impl ArmError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ArmError {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
            www_authenticate: None,
            details: Vec::new(),
        }
    }

    /// 400 `BadRequest`, the code Key Vault uses for refused property values.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ArmError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 400 `InvalidRequestContent`: the body is not the JSON the operation needs.
    pub fn invalid_content(detail: impl std::fmt::Display) -> Self {
        ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{detail}'."),
        )
    }

    /// 401 with the bearer challenge ARM sends alongside authentication failures.
    pub fn unauthorized(code: &str, message: String) -> Self {
        let challenge = format!(
            "Bearer authorization_uri=\"https://login.microsoftonline.com/common\", error=\"invalid_token\", error_description=\"{}\"",
            message.replace('"', "'")
        );
        ArmError {
            www_authenticate: Some(challenge),
            ..ArmError::new(StatusCode::UNAUTHORIZED, code, message)
        }
    }

    pub fn with_retry_after(mut self, seconds: Option<u64>) -> Self {
        self.retry_after = seconds;
        self
    }

    /// Adds an entry to `error.details`.
    pub fn with_detail(mut self, code: impl Into<String>, message: impl Into<String>) -> Self {
        self.details.push((code.into(), message.into()));
        self
    }
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if !self.details.is_empty() {
            let details: Vec<Value> = self
                .details
                .iter()
                .map(|(code, message)| json!({"code": code, "message": message}))
                .collect();
            body["error"]["details"] = Value::Array(details);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self
            .www_authenticate
            .and_then(|text| HeaderValue::try_from(text).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}
