//! `function-eventgrid`: a write to a resource tagfence manages (a vault, a storage account, a
//! registry: any kind, `crate::azure::kinds::write_operation`) reconciles that resource. The host
//! sends one event or a batch, as an object, an array, or either as JSON text
//! ([`InvocationRequest::events`]). Every event is checked before any is handled, so a malformed
//! one refuses the invocation (400) without half of it done. Then each is handled in turn, a
//! vault written to by several events of a batch once; every event's result is in the answer.
//! Any failure fails the invocation (500): Event Grid redelivers the whole batch, and
//! reconciling a vault again is harmless.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tracing::{error, info};

use super::answer::{bad_invocation, error_body, failed, failure_message, handle, ok, report_logs};
use super::engine::{AppState, NotConfigured};
use super::invocation::{Events, InvocationError, InvocationRequest, InvocationResponse};
use crate::azure::{kinds, ResourceId};
use crate::reconcile::ErrorKind;
use crate::run::{self, policy, RunError, RunReport, RunRequest};

/// What a write event of a supported kind is about, if it is one: the resource written, `None`
/// for other events (another operation, another resource type), an error naming what is missing
/// for something that is not an event at all.
pub fn vault_written(event: &Value) -> Result<Option<ResourceId>, String> {
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
    let operation_kind = match data.get("operationName").and_then(Value::as_str) {
        Some(operation) => match kinds::kind_of_write(operation) {
            Some(kind) => Some(kind),
            None => return Ok(None),
        },
        None => None,
    };
    let resource = data
        .get("resourceUri")
        .or_else(|| event.get("subject"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    // The write's operation and the resource it names must be of one kind: an event whose
    // operation is a storage write but whose resource is a vault is not taken at its word.
    Ok(resource
        .parse::<ResourceId>()
        .ok()
        .filter(|id| operation_kind.is_none_or(|kind| kind == id.kind)))
}

/// What became of one Event Grid event.
enum Handled {
    /// Nothing to do: not a key vault write, or a vault tagfence does not manage.
    Ignored { log: String, value: Value },
    /// The vault was reconciled without failure.
    Reconciled(RunReport),
    /// The vault's run failed; with its report when it got that far.
    Failed {
        kind: ErrorKind,
        message: String,
        report: Option<RunReport>,
    },
}

impl Handled {
    fn logs(&self) -> Vec<String> {
        match self {
            Handled::Ignored { log, .. } => vec![log.clone()],
            Handled::Reconciled(report) => report_logs(report),
            Handled::Failed {
                message, report, ..
            } => match report {
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
            Handled::Failed {
                kind,
                message,
                report,
            } => {
                let mut value = error_body(*kind, message);
                value["vault"] = report.as_ref().map(first_vault).into();
                value
            }
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

/// Handles one event: `vault` is what [`vault_written`] made of it. `Err` when the handler
/// cannot run at all (no configuration).
async fn handle_event(
    state: &AppState,
    event_type: &str,
    vault: Option<ResourceId>,
) -> Result<Handled, NotConfigured> {
    let Some(vault) = vault else {
        info!(%event_type, "event is not a write of a resource kind tagfence manages; ignored");
        return Ok(Handled::Ignored {
            log: format!(
                "ignored {event_type}: not a write of a vault, storage account or registry"
            ),
            value: json!({"ignored": event_type}),
        });
    };
    let engine = state.engine().await?;
    let ignore = |reason: &str| {
        info!(resource = %vault, reason, "write to a resource tagfence does not manage; ignored");
        Handled::Ignored {
            log: format!("ignored a write to {}: {reason}", vault.name),
            value: json!({"ignored": vault.to_string()}),
        }
    };
    // With discovery, a vault tagged a moment ago is onboarded now (read through ARM).
    if !engine.may_manage(&vault) {
        return Ok(ignore("not a managed resource"));
    }
    info!(kind = %vault.kind, resource = %vault.name, "a resource tagfence may manage was written; reconciling it");
    let started = Instant::now();
    let result = engine
        .run(&RunRequest {
            only: Some(vec![vault.to_string()]),
            dry_run: false,
            trigger: "eventgrid",
            read_through_arm: true,
        })
        .await;
    Ok(match result {
        Err(RunError::NotManaged { reason, .. }) => ignore(&reason),
        Err(err) => Handled::Failed {
            kind: err.kind(),
            message: err.to_string(),
            report: None,
        },
        Ok(report) => match report.error_kind() {
            Some(kind) => Handled::Failed {
                kind,
                message: failure_message(&report),
                report: Some(report),
            },
            None => {
                info!(
                    vault = %vault.name,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "event handled"
                );
                Handled::Reconciled(report)
            }
        },
    })
}

/// The Event Grid function (see the module's documentation).
pub(super) async fn event_grid(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(
        "function-eventgrid",
        &headers,
        body,
        |request: &InvocationRequest| request.events("event"),
        |events: Events| async move {
            let (events, batch) = match events {
                Events::One(event) => (vec![event], false),
                Events::Batch(events) => (events, true),
            };
            let read = read_events(&events, batch)?;
            if batch {
                info!(events = events.len(), "a batch of events");
            }
            let handled = handle_events(&state, read).await?;
            if batch {
                return Ok(batch_answer(&events, &handled));
            }
            Ok(match handled.into_iter().next() {
                Some(Ok(Handled::Failed {
                    kind,
                    message,
                    report,
                })) => failed(kind, message, report.as_ref().map(RunReport::to_json)),
                Some(Ok(result)) => ok(InvocationResponse {
                    logs: result.logs(),
                    return_value: result.value(),
                    ..Default::default()
                }),
                _ => unreachable!("one event, handled"),
            })
        },
    )
    .await
}

/// What each event is about, every event checked before any is handled, so that a malformed
/// one refuses the invocation (400) without half of it done.
fn read_events(
    events: &[Value],
    batch: bool,
) -> Result<Vec<(String, Option<ResourceId>)>, Box<Response>> {
    let count = events.len();
    events
        .iter()
        .enumerate()
        .map(|(i, event)| match vault_written(event) {
            Ok(vault) => Ok((event_type(event), vault)),
            Err(detail) => Err(Box::new(bad_invocation(&InvocationError::BadBinding {
                binding: "event",
                kind: "Event Grid",
                detail: if batch {
                    format!("event {} of the batch of {count}: {detail}", i + 1)
                } else {
                    detail
                },
            }))),
        })
        .collect()
}

/// Handles the events in turn; a vault written to by several events is reconciled for the
/// first (`Err(index of that event)` for the others).
async fn handle_events(
    state: &AppState,
    read: Vec<(String, Option<ResourceId>)>,
) -> Result<Vec<Result<Handled, usize>>, Box<Response>> {
    let mut handled: Vec<Result<Handled, usize>> = Vec::with_capacity(read.len());
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
        match handle_event(state, &event_type, vault).await {
            Ok(result) => handled.push(Ok(result)),
            Err(err) => return Err(Box::new(failed(ErrorKind::NotConfigured, err.0, None))),
        }
    }
    Ok(handled)
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
    let mut worst: Option<ErrorKind> = None;
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
                if let Handled::Failed { message, kind, .. } = result {
                    failures.push(format!("event {n}: {message}"));
                    worst = Some(worst.map_or(*kind, |w| policy::worst(w, *kind)));
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
    let kind = worst.unwrap_or(ErrorKind::Bug);
    error!(error = %message, kind = %kind, "invocation failed");
    let mut body = error_body(kind, &message);
    body["events"] = json!(results);
    (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
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
