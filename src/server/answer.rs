//! The prologue and the answers every function shares: a span per invocation, the trigger's
//! input read from the body (or the 4xx for a body the host would never send), and the one
//! shape of an error in every answer.

use std::future::Future;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tracing::{error, warn, Instrument};

use super::invocation::{http_output, InvocationError, InvocationRequest, InvocationResponse};
use crate::reconcile::ErrorKind;
use crate::run::{self, policy, RunReport};

/// An answer, or the answer that ends a handler early (`?` in [`handle`]'s work).
pub(crate) type Answer = Result<Response, Box<Response>>;

/// The common prologue of every function: a span carrying the function and the invocation id
/// (every log line of the invocation has them), and the trigger's input `read` from the body
/// (or the 4xx answer for a body that is not an invocation of this trigger).
pub(crate) async fn handle<T, R, F, Fut>(
    function: &'static str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    read: R,
    work: F,
) -> Response
where
    R: FnOnce(&InvocationRequest) -> Result<T, InvocationError>,
    F: FnOnce(T) -> Fut,
    Fut: Future<Output = Answer>,
{
    let invocation_id = headers
        .get("x-azure-functions-invocationid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let span = tracing::info_span!("invocation", function, invocation_id = %invocation_id);
    async move {
        let input = read_invocation(body)
            .and_then(|request| read(&request).map_err(|err| Box::new(bad_invocation(&err))));
        match input {
            Ok(input) => work(input).await.unwrap_or_else(|answer| *answer),
            Err(answer) => *answer,
        }
    }
    .instrument(span)
    .await
}

/// Reads the input binding `name` of an invocation as a `T`; `kind` names the trigger in the
/// error.
pub(crate) fn binding<T: serde::de::DeserializeOwned>(
    name: &'static str,
    kind: &'static str,
) -> impl FnOnce(&InvocationRequest) -> Result<T, InvocationError> {
    move |request| {
        request.binding(name).and_then(|value| {
            serde_json::from_value(value).map_err(|e| InvocationError::BadBinding {
                binding: name,
                kind,
                detail: e.to_string(),
            })
        })
    }
}

/// A 4xx for a body the host would never send: not logged as an error, since the process
/// itself is fine.
pub(crate) fn bad_invocation(err: &InvocationError) -> Response {
    warn!(error = %err, "refusing a malformed invocation");
    (
        StatusCode::BAD_REQUEST,
        Json(error_body(ErrorKind::BadRequest, &err.to_string())),
    )
        .into_response()
}

/// The invocation, or the 4xx answer for a body that cannot be one (too large, unreadable, not
/// JSON), always with a JSON body.
fn read_invocation(
    body: Result<Bytes, BytesRejection>,
) -> Result<InvocationRequest, Box<Response>> {
    let body = body.map_err(|rejection| {
        warn!(error = %rejection.body_text(), "refusing an unreadable invocation body");
        let message = format!("reading the invocation body: {}", rejection.body_text());
        // The rest of the body was not read, so this connection cannot carry another request:
        // say so, or a client reusing it would see it closed under its next request.
        let close = [(axum::http::header::CONNECTION, "close")];
        Box::new(
            (
                rejection.status(),
                close,
                Json(error_body(ErrorKind::BadRequest, &message)),
            )
                .into_response(),
        )
    })?;
    InvocationRequest::parse(&body).map_err(|err| Box::new(bad_invocation(&err)))
}

/// A failed invocation (timer, Event Grid): the host records it as failed and retries as the
/// trigger does. The body names the error and its kind, for the stdout log and for people.
pub(crate) fn failed(kind: ErrorKind, message: String, report: Option<Value>) -> Response {
    error!(error = %message, kind = %kind, "invocation failed");
    let mut body = error_body(kind, &message);
    if let Some(report) = report {
        body["report"] = report;
    }
    (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
}

/// `{"error", "kind", "retry"}`: the one shape of an error in every answer.
pub(crate) fn error_body(kind: ErrorKind, message: &str) -> Value {
    json!({
        "error": message,
        "kind": kind.as_str(),
        "retry": policy::disposition(kind).retry_helps,
    })
}

pub(crate) fn ok(response: InvocationResponse) -> Response {
    (StatusCode::OK, Json(response)).into_response()
}

/// An HTTP function's answer: the HTTP output `res` with `status` and `body`, in a successful
/// invocation (a 4xx to the caller is not a failure of the function).
pub(crate) fn http_answer(status: u16, body: Value, logs: Vec<String>) -> Response {
    let mut outputs = serde_json::Map::new();
    outputs.insert("res".to_owned(), http_output(status, &body));
    ok(InvocationResponse {
        outputs,
        logs,
        return_value: Value::Null,
    })
}

/// An HTTP function's answer to an error of `kind`: the status the policy gives it, the one
/// shape of an error.
pub(crate) fn error_answer(kind: ErrorKind, message: &str) -> Box<Response> {
    let status = policy::disposition(kind).http_status;
    Box::new(http_answer(
        status,
        error_body(kind, message),
        vec![format!("{kind}: {message}")],
    ))
}

/// The error of a run with refused or failed vaults: its summary and each such vault's line
/// (with its reason), so that the invocation's one error log names what went wrong where —
/// the host discards a failed invocation's `Logs`.
pub(crate) fn failure_message(report: &RunReport) -> String {
    let vaults: Vec<String> = report
        .vaults
        .iter()
        .filter(|v| v.outcome.is_failure())
        .map(run::vault_line)
        .collect();
    format!("{}: {}", report.summary(), vaults.join("; "))
}

pub(crate) fn report_logs(report: &RunReport) -> Vec<String> {
    let mut logs: Vec<String> = report.vaults.iter().map(run::vault_line).collect();
    logs.push(report.summary());
    logs
}
