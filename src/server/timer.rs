//! `function-timer`: every Wednesday (the schedule is the host's), reconcile every configured
//! vault. A run with a refused or failed vault fails the invocation, so that the host records
//! it.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use tracing::info;

use super::answer::{binding, failed, failure_message, handle, ok, report_logs};
use super::engine::AppState;
use super::invocation::{InvocationResponse, TimerInfo};
use crate::reconcile::ErrorKind;
use crate::run::RunRequest;

pub(crate) async fn timer(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(
        "function-timer",
        &headers,
        body,
        binding("timer", "timer"),
        |timer: TimerInfo| async move {
            info!(is_past_due = timer.is_past_due, "timer fired");
            let engine = state
                .engine()
                .await
                .map_err(|err| Box::new(failed(ErrorKind::NotConfigured, err.0, None)))?;
            let request = RunRequest {
                trigger: "timer",
                ..RunRequest::default()
            };
            let report = engine
                .run(&request)
                .await
                .map_err(|err| Box::new(failed(err.kind(), err.to_string(), None)))?;
            if let Some(kind) = report.error_kind() {
                return Ok(failed(
                    kind,
                    failure_message(&report),
                    Some(report.to_json()),
                ));
            }
            info!(summary = %report.summary(), "timer run done");
            Ok(ok(InvocationResponse {
                logs: report_logs(&report),
                return_value: report.to_json(),
                ..Default::default()
            }))
        },
    )
    .await
}
