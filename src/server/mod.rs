//! `tagfence serve`: the Azure Functions custom handler.
//!
//! The Functions host starts this process with `FUNCTIONS_CUSTOMHANDLER_PORT`, polls `GET /`
//! until it answers, then forwards each trigger as `POST /{function name}` with a JSON envelope
//! (Microsoft Learn, "Azure Functions custom handlers"). Three functions:
//! - `function-timer`: every Wednesday (the schedule is the host's; see [`schedule`]), reconcile
//!   every configured vault;
//! - `function-http`: `POST /api/sync[?vault=…][&dryRun=true]` on demand, `GET /api/status`;
//! - `function-eventgrid`: a `Microsoft.Resources.ResourceWriteSuccess` for a managed vault
//!   reconciles that vault, which heals a firewall someone edited by hand. One event or a batch
//!   of up to [`envelope::MAX_EVENTS_PER_INVOCATION`], as objects or JSON text.
//!
//! Handlers are thin: decode the envelope, call the [`Runner`], encode the outcome. The trigger
//! never changes what a reconcile decides. Logs are JSON lines on stdout carrying the
//! invocation id; the host logs every stderr line as an error (Azure/azure-functions-host,
//! `WorkerProcess.cs`).

pub mod envelope;
pub mod schedule;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tracing::{error, info, warn, Instrument};

use crate::azure::auth::IdentityEnv;
use crate::azure::VaultId;
use crate::config::Config;
use crate::reconcile::Outcome;
use crate::run::{self, RunError, RunReport, RunRequest, Runner};
use envelope::{
    http_output, EnvelopeError, Events, HttpRequestData, InvocationRequest, InvocationResponse,
    TimerInfo,
};
use schedule::Schedule;

/// Invocation bodies larger than this are refused (413): the host's envelopes are a few KB.
pub const MAX_INVOCATION_BYTES: usize = 1 << 20;

/// The handler's shared state. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Result<Config, String>,
    identity: IdentityEnv,
    schedule: Result<Schedule, String>,
    /// Built on first use (or by the warm-up task right after the port is bound), so that the
    /// readiness probe is answered before TLS roots and HTTP clients are set up.
    runner: OnceCell<Result<Arc<Runner>, String>>,
}

impl AppState {
    /// State for a configuration (or the reason there is none) and a schedule.
    pub fn new(
        config: Result<Config, String>,
        identity: IdentityEnv,
        schedule: Result<Schedule, String>,
    ) -> Self {
        AppState {
            inner: Arc::new(Inner {
                config,
                identity,
                schedule,
                runner: OnceCell::new(),
            }),
        }
    }

    async fn runner(&self) -> Result<Arc<Runner>, String> {
        self.inner
            .runner
            .get_or_init(|| async {
                let config = self.inner.config.clone()?;
                Runner::new(config, &self.inner.identity)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .await
            .clone()
    }
}

/// The router: `GET /` for readiness and one route per function.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(ready))
        .route("/function-timer", post(timer))
        .route("/function-http", post(http_trigger))
        .route("/function-eventgrid", post(event_grid))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_INVOCATION_BYTES))
        .with_state(state)
}

/// Serves until `shutdown` completes, then lets running invocations finish.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let warm = state.clone();
    tokio::spawn(async move {
        if let Err(error) = warm.runner().await {
            error!(%error, "tagfence is not configured; every invocation will fail until the app settings are fixed");
        }
    });
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGTERM (how the host stops workers) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    info!("shutting down: finishing running invocations");
}

async fn ready() -> &'static str {
    "tagfence ready"
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "no such function; expected POST /function-timer, /function-http or /function-eventgrid"}))).into_response()
}

fn invocation_id(headers: &HeaderMap) -> String {
    headers
        .get("x-azure-functions-invocationid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

/// A 4xx for an envelope the host would never send: not logged as an error, since the process
/// itself is fine.
fn bad_envelope(err: &EnvelopeError) -> Response {
    warn!(error = %err, "refusing a malformed invocation");
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": err.to_string()})),
    )
        .into_response()
}

/// The envelope, or the 4xx answer for a body that cannot be one (too large, unreadable, not
/// JSON), always with a JSON body.
fn read_envelope(body: Result<Bytes, BytesRejection>) -> Result<InvocationRequest, Box<Response>> {
    let body = body.map_err(|rejection| {
        warn!(error = %rejection.body_text(), "refusing an unreadable invocation body");
        let message = format!("reading the invocation body: {}", rejection.body_text());
        // The rest of the body was not read, so this connection cannot carry another request:
        // say so, or a client reusing it would see it closed under its next request.
        let close = [(axum::http::header::CONNECTION, "close")];
        Box::new((rejection.status(), close, Json(json!({ "error": message }))).into_response())
    })?;
    InvocationRequest::parse(&body).map_err(|err| Box::new(bad_envelope(&err)))
}

fn failed(status: StatusCode, message: String, report: Option<Value>) -> Response {
    error!(error = %message, "invocation failed");
    let mut body = json!({"error": message});
    if let Some(report) = report {
        body["report"] = report;
    }
    (status, Json(body)).into_response()
}

fn ok(response: InvocationResponse) -> Response {
    (StatusCode::OK, Json(response)).into_response()
}

/// The input binding `binding` of the invocation body, read as a `T`, or the 4xx answer for a
/// body that is no envelope or lacks that binding; `kind` names the trigger in the error.
fn read_binding<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    binding: &'static str,
    kind: &'static str,
) -> Result<T, Box<Response>> {
    let request = read_envelope(body)?;
    request
        .binding(binding)
        .and_then(|value| {
            serde_json::from_value(value).map_err(|e| EnvelopeError::BadBinding {
                binding,
                kind,
                detail: e.to_string(),
            })
        })
        .map_err(|err| Box::new(bad_envelope(&err)))
}

fn report_logs(report: &RunReport) -> Vec<String> {
    let mut logs: Vec<String> = report.vaults.iter().map(run::vault_line).collect();
    logs.push(report.summary());
    logs
}

async fn timer(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = tracing::info_span!("invocation", function = "function-timer", invocation_id = %invocation_id(&headers));
    async move {
        let timer: TimerInfo = match read_binding(body, "timer", "timer") {
            Ok(timer) => timer,
            Err(response) => return *response,
        };
        info!(is_past_due = timer.is_past_due, "timer fired");
        let runner = match state.runner().await {
            Ok(runner) => runner,
            Err(message) => return failed(StatusCode::INTERNAL_SERVER_ERROR, message, None),
        };
        let request = RunRequest {
            trigger: "timer",
            ..RunRequest::default()
        };
        match runner.run(&request).await {
            Err(err) => failed(StatusCode::INTERNAL_SERVER_ERROR, err.to_string(), None),
            Ok(report) if report.failures() > 0 => failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                report.summary(),
                Some(report.to_json()),
            ),
            Ok(report) => {
                info!(summary = %report.summary(), "timer run done");
                ok(InvocationResponse {
                    logs: report_logs(&report),
                    return_value: report.to_json(),
                    ..Default::default()
                })
            }
        }
    }
    .instrument(span)
    .await
}

/// The HTTP function answers through its `res` output, and the invocation itself succeeds
/// whatever the HTTP status: a 400 to the caller is not a failure of the function.
fn http_answer(status: u16, body: Value, logs: Vec<String>) -> Response {
    let mut outputs = serde_json::Map::new();
    outputs.insert("res".to_owned(), http_output(status, &body));
    ok(InvocationResponse {
        outputs,
        logs,
        return_value: Value::Null,
    })
}

async fn http_trigger(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = tracing::info_span!("invocation", function = "function-http", invocation_id = %invocation_id(&headers));
    async move {
        let req: HttpRequestData = match read_binding(body, "req", "HTTP") {
            Ok(req) => req,
            Err(response) => return *response,
        };
        let method = req.method.to_ascii_uppercase();
        let action = req.action();
        info!(%method, %action, "http request");
        match (action.as_str(), method.as_str()) {
            ("status", "GET") => http_answer(200, status_document(&state).await, vec!["status".to_owned()]),
            ("sync", "POST") => sync(&state, &req).await,
            ("status" | "sync", _) => http_answer(405, json!({"error": format!("use {} /api/{action}", if action == "sync" { "POST" } else { "GET" })}), vec![]),
            _ => http_answer(404, json!({"error": format!("unknown action '{action}'; expected POST /api/sync or GET /api/status")}), vec![]),
        }
    }
    .instrument(span)
    .await
}

async fn sync(state: &AppState, req: &HttpRequestData) -> Response {
    let params = req.query_params();
    let dry_run = match params.get("dryrun").map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) if v == "true" || v == "1" => true,
        Some(v) if v == "false" || v == "0" || v.is_empty() => false,
        Some(v) => {
            return http_answer(
                400,
                json!({"error": format!("dryRun must be true or false, not '{v}'")}),
                vec![],
            )
        }
    };
    let only: Option<Vec<String>> = params
        .get("vault")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|v: &Vec<String>| !v.is_empty());
    let runner = match state.runner().await {
        Ok(runner) => runner,
        Err(message) => return http_answer(500, json!({"error": message}), vec![]),
    };
    let request = RunRequest {
        only,
        dry_run,
        trigger: "http",
    };
    // Check the vault names before fetching anything (discovered vaults are only known once
    // Resource Graph answers, inside the run).
    if !runner.discovers() {
        if let Err(err) = runner.targets(&request) {
            let status = if matches!(err, RunError::NoVaults) {
                500
            } else {
                400
            };
            return http_answer(status, json!({"error": err.to_string()}), vec![]);
        }
    }
    match runner.run(&request).await {
        Err(err @ (RunError::UnknownVault(_) | RunError::NotManaged { .. })) => {
            http_answer(400, json!({"error": err.to_string()}), vec![])
        }
        Err(err) => http_answer(502, json!({"error": err.to_string()}), vec![]),
        Ok(report) => {
            let failed = report
                .vaults
                .iter()
                .any(|v| matches!(v.outcome, Outcome::Failed { .. }));
            let refused = report
                .vaults
                .iter()
                .any(|v| matches!(v.outcome, Outcome::Refused { .. }));
            // A vault ARM failed on is an upstream failure; a refused plan conflicts with the
            // guards and needs a person.
            let status = if failed {
                502
            } else if refused {
                409
            } else {
                200
            };
            http_answer(status, report.to_json(), report_logs(&report))
        }
    }
}

async fn status_document(state: &AppState) -> Value {
    let schedule = match &state.inner.schedule {
        Ok(schedule) => json!({
            "expression": schedule.expression,
            "description": schedule.describe(),
            "next_run_utc": schedule.next_after(chrono::Utc::now()).map(|t| t.to_rfc3339()),
        }),
        Err(error) => json!({"error": error}),
    };
    let configuration = match &state.inner.config {
        Err(error) => json!({"error": error}),
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
    // The latest run per vault, from the state; a configuration or state problem is shown,
    // not hidden behind a failed status call.
    let last_runs = match state.runner().await {
        Err(error) => json!({"error": error}),
        Ok(runner) if runner.state().is_none() => {
            json!({"error": "no state configured: set AzureWebJobsStorage__blobServiceUri or TAGFENCE_STATE_URL"})
        }
        Ok(runner) => match runner.status().await {
            Ok(status) => status.to_json(),
            Err(err) => json!({"error": err.to_string()}),
        },
    };
    json!({
        "service": "tagfence",
        "version": env!("CARGO_PKG_VERSION"),
        "schedule": schedule,
        "configuration": configuration,
        "state": last_runs,
    })
}

/// What a Key Vault write event is about, if it is one: the vault written, `None` for other
/// events, an error naming what is missing for something that is not an event at all.
pub fn vault_written(event: &Value) -> Result<Option<VaultId>, String> {
    // Event Grid schema: eventType/subject/data; CloudEvents 1.0: type/subject/data.
    let event_type = event
        .get("eventType")
        .or_else(|| event.get("type"))
        .and_then(Value::as_str)
        .ok_or("the event has neither eventType (Event Grid schema) nor type (CloudEvents)")?;
    if event_type != "Microsoft.Resources.ResourceWriteSuccess" {
        return Ok(None);
    }
    let data = event.get("data").cloned().unwrap_or(Value::Null);
    if let Some(operation) = data.get("operationName").and_then(Value::as_str) {
        if !operation.eq_ignore_ascii_case("Microsoft.KeyVault/vaults/write") {
            return Ok(None);
        }
    }
    let resource = data
        .get("resourceUri")
        .or_else(|| event.get("subject"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(resource.parse::<VaultId>().ok())
}

/// What became of one Event Grid event.
enum Handled {
    /// Nothing to do: not a key vault write, or a vault tagfence does not manage.
    Ignored { log: String, value: Value },
    /// The vault was reconciled without failure.
    Reconciled(RunReport),
    /// The vault's run failed; with its report when it got that far.
    Failed {
        message: String,
        report: Option<RunReport>,
    },
}

impl Handled {
    fn logs(&self) -> Vec<String> {
        match self {
            Handled::Ignored { log, .. } => vec![log.clone()],
            Handled::Reconciled(report) => report_logs(report),
            Handled::Failed { message, report } => match report {
                Some(report) => report_logs(report),
                None => vec![format!("failed: {message}")],
            },
        }
    }

    /// The event's result in an answer: `{"ignored": …}`, or the vault's report.
    fn value(&self) -> Value {
        match self {
            Handled::Ignored { value, .. } => value.clone(),
            Handled::Reconciled(report) => first_vault(report),
            Handled::Failed { message, report } => json!({
                "error": message,
                "vault": report.as_ref().map(first_vault),
            }),
        }
    }
}

fn first_vault(report: &RunReport) -> Value {
    report
        .vaults
        .first()
        .map(run::vault_json)
        .unwrap_or(Value::Null)
}

/// Handles one event: `vault` is what [`vault_written`] made of it. `Err` is the answer for a
/// handler that cannot run at all (no configuration).
async fn handle_event(
    state: &AppState,
    event_type: &str,
    vault: Option<VaultId>,
) -> Result<Handled, String> {
    let Some(vault) = vault else {
        info!(%event_type, "event is not a key vault write; ignored");
        return Ok(Handled::Ignored {
            log: format!("ignored {event_type}: not a key vault write"),
            value: json!({"ignored": event_type}),
        });
    };
    let runner = state.runner().await?;
    let ignore = |reason: &str| {
        info!(vault = %vault, reason, "write to a vault tagfence does not manage; ignored");
        Handled::Ignored {
            log: format!("ignored a write to {}: {reason}", vault.name),
            value: json!({"ignored": vault.to_string()}),
        }
    };
    // With discovery, a vault tagged a moment ago is onboarded now (read through ARM).
    if !runner.manages(&vault) && !runner.discovers() {
        return Ok(ignore("not a managed vault"));
    }
    info!(vault = %vault.name, "a vault tagfence may manage was written; reconciling it");
    let started = Instant::now();
    let result = runner
        .run(&RunRequest {
            only: Some(vec![vault.to_string()]),
            dry_run: false,
            trigger: "eventgrid",
        })
        .await;
    Ok(match result {
        Err(RunError::NotManaged { reason, .. }) => ignore(&reason),
        Err(err) => Handled::Failed {
            message: err.to_string(),
            report: None,
        },
        Ok(report) if report.failures() > 0 => Handled::Failed {
            message: report.summary(),
            report: Some(report),
        },
        Ok(report) => {
            info!(
                vault = %vault.name,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "event handled"
            );
            Handled::Reconciled(report)
        }
    })
}

/// The Event Grid function. The host sends one event or a batch, as an object, an array, or
/// either as JSON text ([`InvocationRequest::events`]). Every event is checked before any is
/// handled, so a malformed one refuses the invocation (400) without half of it done. Then each
/// is handled in turn, a vault written to by several events of a batch once; every event's
/// result is in the answer. Any failure fails the invocation (500): Event Grid redelivers the
/// whole batch, and reconciling a vault again is harmless.
async fn event_grid(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = tracing::info_span!("invocation", function = "function-eventgrid", invocation_id = %invocation_id(&headers));
    async move {
        let events = match read_envelope(body).and_then(|request| {
            request
                .events("event")
                .map_err(|err| Box::new(bad_envelope(&err)))
        }) {
            Ok(events) => events,
            Err(response) => return *response,
        };
        let (events, batch) = match events {
            Events::One(event) => (vec![event], false),
            Events::Batch(events) => (events, true),
        };
        let count = events.len();
        let mut read = Vec::with_capacity(count);
        for (i, event) in events.iter().enumerate() {
            match vault_written(event) {
                Ok(vault) => read.push((event_type(event), vault)),
                Err(detail) => {
                    return bad_envelope(&EnvelopeError::BadBinding {
                        binding: "event",
                        kind: "Event Grid",
                        detail: if batch {
                            format!("event {} of the batch of {count}: {detail}", i + 1)
                        } else {
                            detail
                        },
                    })
                }
            }
        }
        if batch {
            info!(events = count, "a batch of events");
        }
        // Handled in turn; a vault written to by several events is reconciled for the first.
        let mut handled: Vec<Result<Handled, usize>> = Vec::with_capacity(count);
        let mut first_for: HashMap<String, usize> = HashMap::new();
        for (i, (event_type, vault)) in read.into_iter().enumerate() {
            if let Some(vault) = &vault {
                let key = vault.to_string().to_ascii_lowercase();
                if let Some(&first) = first_for.get(&key) {
                    handled.push(Err(first));
                    continue;
                }
                first_for.insert(key, i);
            }
            match handle_event(&state, &event_type, vault).await {
                Ok(result) => handled.push(Ok(result)),
                Err(message) => return failed(StatusCode::INTERNAL_SERVER_ERROR, message, None),
            }
        }
        if !batch {
            return match handled.pop() {
                Some(Ok(Handled::Failed { message, report })) => failed(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    message,
                    report.as_ref().map(RunReport::to_json),
                ),
                Some(Ok(result)) => ok(InvocationResponse {
                    logs: result.logs(),
                    return_value: result.value(),
                    ..Default::default()
                }),
                _ => unreachable!("one event, handled"),
            };
        }
        batch_answer(&events, &handled)
    }
    .instrument(span)
    .await
}

/// An event's type (Event Grid schema or CloudEvents), `?` when it has none.
fn event_type(event: &Value) -> String {
    event
        .get("eventType")
        .or_else(|| event.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned()
}

/// The answer to a batch: each event's result in `ReturnValue.events` (in the order sent) and
/// its lines in `Logs`; a 500 naming the failed events when any failed.
fn batch_answer(events: &[Value], handled: &[Result<Handled, usize>]) -> Response {
    let count = events.len();
    let mut logs = Vec::new();
    let mut results = Vec::with_capacity(count);
    let mut failures = Vec::new();
    for (i, (event, result)) in events.iter().zip(handled).enumerate() {
        let n = i + 1;
        let mut value = json!({
            "event": n,
            "id": event.get("id"),
            "type": event_type(event),
        });
        match result {
            Ok(result) => {
                for line in result.logs() {
                    logs.push(format!("event {n}/{count}: {line}"));
                }
                if let Handled::Failed { message, .. } = result {
                    failures.push(format!("event {n}: {message}"));
                }
                value["result"] = result.value();
            }
            Err(first) => {
                logs.push(format!(
                    "event {n}/{count}: the same vault as event {}; handled once",
                    first + 1
                ));
                value["same_vault_as_event"] = json!(first + 1);
            }
        }
        results.push(value);
    }
    let summary = format!("{count} events: {} failed", failures.len());
    logs.push(summary.clone());
    if failures.is_empty() {
        return ok(InvocationResponse {
            logs,
            return_value: json!({"events": results}),
            ..Default::default()
        });
    }
    let message = format!("{summary}: {}", failures.join("; "));
    error!(error = %message, "invocation failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": message, "events": results})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_key_vault_writes_in_both_schemas() {
        let id = "/subscriptions/s/resourcegroups/rg/providers/Microsoft.KeyVault/vaults/kv-prod";
        let event_grid = json!({"topic": "/subscriptions/s", "subject": id, "eventType": "Microsoft.Resources.ResourceWriteSuccess",
            "data": {"operationName": "Microsoft.KeyVault/vaults/write", "resourceUri": id}, "dataVersion": "2", "metadataVersion": "1"});
        assert_eq!(vault_written(&event_grid).unwrap().unwrap().name, "kv-prod");
        let cloud_event = json!({"specversion": "1.0", "type": "Microsoft.Resources.ResourceWriteSuccess", "source": "/subscriptions/s", "subject": id, "id": "1", "data": {"operationName": "Microsoft.KeyVault/vaults/write"}});
        assert_eq!(
            vault_written(&cloud_event).unwrap().unwrap().name,
            "kv-prod"
        );
        let storage = json!({"eventType": "Microsoft.Resources.ResourceWriteSuccess", "data": {"operationName": "Microsoft.Storage/storageAccounts/write", "resourceUri": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st"}});
        assert_eq!(vault_written(&storage).unwrap(), None);
        let other =
            json!({"eventType": "Microsoft.Resources.ResourceDeleteSuccess", "subject": id});
        assert_eq!(vault_written(&other).unwrap(), None);
        assert!(vault_written(&json!({"data": {}})).is_err());
    }
}
