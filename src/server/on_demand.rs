//! `function-http`: `POST /api/sync[?vault=…][&dryRun=true]` runs on demand, `GET /api/status`
//! shows the configuration, the schedule and each vault's last run.
//!
//! The HTTP function answers through its `res` output, and the invocation itself succeeds
//! whatever the HTTP status: a 400 to the caller is not a failure of the function. The status
//! of a failed sync comes from `run::policy` (409 refused or another writer, 424 Azure refused
//! the request, 502 Azure failed, 503 throttled, 400 bad request, 500 not configured).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};
use tracing::info;

use super::answer::{
    binding, error_answer, error_body, failure_message, handle, http_answer, report_logs, Answer,
};
use super::engine::AppState;
use super::invocation::HttpRequestData;
use crate::reconcile::ErrorKind;
use crate::run::{policy, RunRequest};

pub(super) async fn http_trigger(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(
        "function-http",
        &headers,
        body,
        binding("req", "HTTP"),
        |req: HttpRequestData| async move {
            let method = req.method.to_ascii_uppercase();
            let action = req.action();
            info!(%method, %action, "http request");
            Ok(match (action.as_str(), method.as_str()) {
                ("status", "GET") => http_answer(
                    200,
                    status_document(&state).await,
                    vec!["status".to_owned()],
                ),
                ("sync", "POST") => sync(&state, &req).await.unwrap_or_else(|a| *a),
                ("status" | "sync", _) => http_answer(
                    405,
                    error_body(
                        ErrorKind::BadRequest,
                        &format!(
                            "use {} /api/{action}",
                            if action == "sync" { "POST" } else { "GET" }
                        ),
                    ),
                    vec![],
                ),
                _ => http_answer(
                    404,
                    error_body(
                        ErrorKind::BadRequest,
                        &format!(
                            "unknown action '{action}'; expected POST /api/sync or GET /api/status"
                        ),
                    ),
                    vec![],
                ),
            })
        },
    )
    .await
}

/// The sync's parameters: `dryRun` (true/false/1/0) and `vault` (names or ids, comma
/// separated).
fn sync_request(req: &HttpRequestData) -> Result<RunRequest, Box<Response>> {
    let params = req.query_params();
    // A bare `?dryRun` (an empty value, as the host passes it, or a value that is no text) is a
    // dry run, as a bare `--dry-run` is: when in doubt, nothing is written.
    let dry_run = match params.get("dryrun").map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) if v == "true" || v == "1" || v.is_empty() => true,
        Some(v) if v == "false" || v == "0" => false,
        Some(v) => {
            return Err(error_answer(
                ErrorKind::BadRequest,
                &format!("dryRun must be true or false, not '{v}'"),
            ))
        }
    };
    let only: Option<Vec<String>> = params
        .get("vault")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .fold(Vec::<String>::new(), |mut names, name| {
                    // Each vault once, however often it is named.
                    if !names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
                        names.push(name);
                    }
                    names
                })
        })
        .filter(|v: &Vec<String>| !v.is_empty());
    Ok(RunRequest {
        only,
        dry_run,
        trigger: "http",
        ..RunRequest::default()
    })
}

async fn sync(state: &AppState, req: &HttpRequestData) -> Answer {
    let request = sync_request(req)?;
    let engine = state
        .engine()
        .await
        .map_err(|err| error_answer(ErrorKind::NotConfigured, &err.0))?;
    // The vault names are checked before anything is fetched.
    engine
        .check(&request)
        .map_err(|err| error_answer(err.kind(), &err.to_string()))?;
    let report = engine
        .run(&request)
        .await
        .map_err(|err| error_answer(err.kind(), &err.to_string()))?;
    let status = report
        .error_kind()
        .map_or(200, |kind| policy::disposition(kind).http_status);
    let mut body = report.to_json();
    if let Some(kind) = report.error_kind() {
        // The one shape of an error, beside the report that details it per vault.
        body["error"] = json!(failure_message(&report));
        body["kind"] = json!(kind.as_str());
        body["retry"] = json!(policy::disposition(kind).retry_helps);
    }
    Ok(http_answer(status, body, report_logs(&report)))
}

/// `GET /api/status`: a configuration or state problem is shown, not hidden behind a failed
/// status call.
async fn status_document(state: &AppState) -> Value {
    let schedule = match &state.schedule() {
        Ok(schedule) => json!({
            "expression": schedule.expression,
            "description": schedule.describe(),
            "next_run_utc": schedule.next_after(chrono::Utc::now()).map(|t| t.to_rfc3339()),
        }),
        Err(error) => json!({"error": error}),
    };
    let configuration = match &state.config() {
        Err(problems) => json!({"error": problems.to_string(), "problems": problems.0}),
        Ok(config) => json!({
            "cloud": config.cloud,
            "arm_endpoint": config.endpoints.arm.as_str(),
            "source": config.source.to_string(),
            "credential": format!("{:?}", config.credential),
            "vaults": config.targets.iter().map(|t| json!({
                "vault": t.id.to_string(),
                "tags": t.selection.tags,
                "static_rules": t.selection.static_rules.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "max_rules": t.limits.max_rules,
                "fit": t.limits.fit,
                "prune": t.prune,
            })).collect::<Vec<_>>(),
        }),
    };
    let last_runs = match state.engine().await {
        Err(error) => json!({"error": error.0, "kind": ErrorKind::NotConfigured.as_str()}),
        Ok(engine) => engine.last_runs().await,
    };
    json!({
        "service": "tagfence",
        "version": env!("CARGO_PKG_VERSION"),
        "schedule": schedule,
        "configuration": configuration,
        "state": last_runs,
    })
}
