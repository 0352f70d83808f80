//! `function-sweep`: every five minutes (`0 */5 * * * *`, in `function-sweep/function.json`),
//! remove the rules of the just-in-time grants that ended (expired or revoked) from every vault
//! holding grants. It answers as the timer does: a sweep that fails, or that leaves grants whose
//! rules are not removed yet, fails the invocation (500 with the error body and the report), so
//! that the host records it; the next sweep tries those grants again.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use tracing::info;

use super::answer::{binding, failed, handle, ok};
use super::engine::AppState;
use super::invocation::{InvocationResponse, TimerInfo};
use crate::reconcile::ErrorKind;
use crate::run::{grant_line, policy, vault_line, SweepReport};

/// The trigger a sweep's run is recorded with.
pub const SWEEP_TRIGGER: &str = "sweep";

pub(crate) async fn sweep(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(
        "function-sweep",
        &headers,
        body,
        binding("timer", "timer"),
        |timer: TimerInfo| async move {
            info!(is_past_due = timer.is_past_due, "sweep timer fired");
            let engine = state
                .engine()
                .await
                .map_err(|err| Box::new(failed(ErrorKind::NotConfigured, err.0, None)))?;
            let report = engine
                .sweep(SWEEP_TRIGGER)
                .await
                .map_err(|err| Box::new(failed(err.kind(), err.to_string(), None)))?;
            if let Some((kind, message)) = sweep_failure(&report) {
                return Ok(failed(kind, message, Some(report.to_json())));
            }
            info!(
                indexed = report.indexed,
                reconciled = report.vaults.len(),
                elapsed_ms = report.elapsed_ms,
                "sweep done"
            );
            Ok(ok(InvocationResponse {
                logs: report.to_text().lines().map(str::to_owned).collect(),
                return_value: report.to_json(),
                ..Default::default()
            }))
        },
    )
    .await
}

/// Why a sweep fails its invocation: a vault refused or failed, or grants whose rules are not
/// removed yet. The kind is the worst of the vaults' (`policy::worst`), else `unavailable`: the
/// removal is retried by the next sweep.
fn sweep_failure(report: &SweepReport) -> Option<(ErrorKind, String)> {
    let failed_vaults: Vec<_> = report
        .vaults
        .iter()
        .filter(|v| v.outcome.is_failure())
        .collect();
    if failed_vaults.is_empty() && report.failed.is_empty() {
        return None;
    }
    let kind = failed_vaults
        .iter()
        .filter_map(|v| v.outcome.error_kind())
        .reduce(policy::worst)
        .unwrap_or(ErrorKind::Unavailable);
    let mut parts: Vec<String> = failed_vaults.iter().map(|v| vault_line(v)).collect();
    parts.extend(report.failed.iter().map(grant_line));
    Some((
        kind,
        format!(
            "sweep: {} grant(s) whose rule is not removed yet, {} of {} vault(s) not done (the next sweep retries): {}",
            report.failed.len(),
            failed_vaults.len(),
            report.vaults.len(),
            parts.join("; ")
        ),
    ))
}
