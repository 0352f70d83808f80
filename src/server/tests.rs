//! Every route and every error kind through `app()`, in process (`tower::ServiceExt::oneshot`),
//! over an engine that answers what each test needs: no socket, no Azure.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::{to_bytes, Body};
use axum::http::Request;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::schedule::Schedule;
use super::*;
use crate::azure::auth::IdentityEnv;
use crate::azure::pipeline::{AzureError, WaitLimit};
use crate::azure::VaultId;
use crate::core::gate::GateRefusal;
use crate::core::service_tags::Cloud;
use crate::reconcile::{AzureStep, Outcome, ReconcileError, VaultReport};
use crate::run::SourceSummary;
use crate::run::{RunError, RunReport, RunRequest};

const VAULT: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-prod";

/// An engine whose run ends as `outcome` says, and which records the requests it got.
struct Fake {
    ends: Ends,
    managed: bool,
    requests: Mutex<Vec<RunRequest>>,
}

enum Ends {
    /// One vault with this outcome.
    Vault(Outcome),
    /// The run fails as a whole.
    Run(fn() -> RunError),
}

impl Fake {
    fn new(ends: Ends) -> Arc<Fake> {
        Arc::new(Fake {
            ends,
            managed: true,
            requests: Mutex::new(Vec::new()),
        })
    }
}

fn report(outcome: Outcome) -> RunReport {
    RunReport {
        run_id: "run-1".to_owned(),
        trigger: "http",
        source: SourceSummary {
            cloud: Cloud::Public,
            change_number: 400,
            origin: "test".to_owned(),
            bytes: 0,
            elapsed_ms: 0,
        },
        dry_run: false,
        vaults: vec![VaultReport::new(VAULT.parse().unwrap(), outcome)],
        warnings: Vec::new(),
        elapsed_ms: 1,
    }
}

#[async_trait]
impl Engine for Fake {
    async fn run(&self, request: &RunRequest) -> Result<RunReport, RunError> {
        self.requests.lock().unwrap().push(request.clone());
        match &self.ends {
            Ends::Vault(outcome) => Ok(report(outcome.clone())),
            Ends::Run(error) => Err(error()),
        }
    }

    fn check(&self, request: &RunRequest) -> Result<(), RunError> {
        match request.only.as_deref() {
            Some([name]) if name == "kv-unknown" => Err(RunError::UnknownVault(name.clone())),
            _ => Ok(()),
        }
    }

    fn may_manage(&self, _vault: &VaultId) -> bool {
        self.managed
    }

    async fn last_runs(&self) -> Value {
        json!({"vaults": []})
    }
}

fn app_over(engine: Arc<dyn Engine>) -> Router {
    app(AppState::with_engine(
        Err("not needed here".to_owned()),
        Schedule::parse("0 0 6 * * Wed"),
        engine,
    ))
}

async fn post(app: Router, path: &str, body: Value) -> (u16, Value) {
    send(
        app,
        Request::post(path)
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

async fn send(app: Router, request: Request<Body>) -> (u16, Value) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
    (status, body)
}

/// `POST /api/sync` with `query`; the HTTP status and body the function's `res` output carries.
async fn sync(app: Router, query: Value) -> (u16, Value) {
    http(app, "POST", "sync", query).await
}

async fn http(app: Router, method: &str, action: &str, query: Value) -> (u16, Value) {
    let (status, body) = post(
        app,
        "/function-http",
        json!({"Data": {"req": {"Method": method, "Query": query, "Params": {"action": action}}}, "Metadata": {}}),
    )
    .await;
    assert_eq!(
        status, 200,
        "the HTTP function's invocation itself succeeds: {body}"
    );
    let res = &body["Outputs"]["res"];
    let inner = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    (res["statusCode"].as_u64().unwrap() as u16, inner)
}

fn api(status: u16) -> AzureError {
    AzureError::Api {
        operation: "reading vault kv-prod".to_owned(),
        status,
        code: "Code".to_owned(),
        message: "message".to_owned(),
    }
}

fn failed(error: ReconcileError) -> Outcome {
    Outcome::from_error(error)
}

#[tokio::test]
async fn every_error_kind_of_a_sync_has_its_own_status() {
    let throttled = AzureError::Throttled {
        operation: "writing the firewall of vault kv-prod".to_owned(),
        status: 429,
        reason: "Too Many Requests".to_owned(),
        wait: std::time::Duration::from_secs(3600),
        limit: WaitLimit::Cap(std::time::Duration::from_secs(60)),
    };
    let cases: Vec<(Outcome, u16, &str, bool)> = vec![
        (Outcome::Applied, 200, "", false),
        (Outcome::InSync, 200, "", false),
        (
            failed(ReconcileError::Gate(GateRefusal::NoFirewall)),
            409,
            "refused",
            false,
        ),
        (failed(ReconcileError::RecordChanged), 409, "conflict", true),
        (
            failed(ReconcileError::Azure {
                step: AzureStep::Write,
                error: throttled,
            }),
            503,
            "throttled",
            true,
        ),
        (
            failed(ReconcileError::Azure {
                step: AzureStep::Observe,
                error: api(500),
            }),
            502,
            "unavailable",
            true,
        ),
        (
            failed(ReconcileError::Azure {
                step: AzureStep::Observe,
                error: api(403),
            }),
            424,
            "rejected",
            false,
        ),
    ];
    for (outcome, want, kind, retry) in cases {
        let name = format!("{outcome:?}");
        let (status, body) = sync(app_over(Fake::new(Ends::Vault(outcome))), json!({})).await;
        assert_eq!(status, want, "{name}: {body}");
        if want != 200 {
            assert_eq!(body["kind"], kind, "{name}: {body}");
            assert_eq!(body["retry"], retry, "{name}: {body}");
            assert_eq!(body["vaults"][0]["outcome"]["kind"], kind, "{name}: {body}");
        }
    }
}

#[tokio::test]
async fn a_failed_run_answers_by_the_kind_of_its_error() {
    type Case = (fn() -> RunError, u16, &'static str);
    let cases: Vec<Case> = vec![
        (|| RunError::NoVaults, 500, "not_configured"),
        (
            || RunError::NotManaged {
                vault: "kv".to_owned(),
                reason: "untagged".to_owned(),
            },
            400,
            "bad_request",
        ),
        (
            || RunError::Discovery("Resource Graph failed".to_owned()),
            502,
            "unavailable",
        ),
        (
            || RunError::Older {
                origin: "file".to_owned(),
                cloud: Cloud::Public,
                found: 1,
                applied: 2,
            },
            409,
            "refused",
        ),
    ];
    for (error, want, kind) in cases {
        let (status, body) = sync(app_over(Fake::new(Ends::Run(error))), json!({})).await;
        assert_eq!(status, want, "{body}");
        assert_eq!(body["kind"], kind, "{body}");
        assert_eq!(body["error"], error().to_string());
    }
}

#[tokio::test]
async fn sync_parameters_are_checked_before_any_run() {
    let fake = Fake::new(Ends::Vault(Outcome::Applied));
    let (status, body) = sync(app_over(fake.clone()), json!({"dryRun": "maybe"})).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = sync(app_over(fake.clone()), json!({"vault": "kv-unknown"})).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    assert!(fake.requests.lock().unwrap().is_empty(), "nothing ran");
    let (status, _) = sync(
        app_over(fake.clone()),
        json!({"dryRun": "true", "vault": "kv-prod, kv-b,KV-PROD,kv-prod"}),
    )
    .await;
    assert_eq!(status, 200);
    {
        let requests = fake.requests.lock().unwrap();
        assert!(requests[0].dry_run);
        // Each vault once, however often it is named.
        assert_eq!(
            requests[0].only.as_deref(),
            Some(&["kv-prod".to_owned(), "kv-b".to_owned()][..])
        );
        assert_eq!(requests[0].trigger, "http");
    }
    // A bare `?dryRun` (empty, as the host passes it) or a value that is no text is a dry run,
    // never a write; only false or 0 write.
    let (status, _) = sync(app_over(fake.clone()), json!({"dryRun": null})).await;
    assert_eq!(status, 400, "null is neither true nor false");
    for query in [json!({"dryRun": ""}), json!({"dryRun": [1]})] {
        sync(app_over(fake.clone()), query.clone()).await;
        let last = fake.requests.lock().unwrap().last().cloned().unwrap();
        assert!(last.dry_run, "{query}");
    }
    for query in [
        json!({"dryRun": "false"}),
        json!({"dryRun": "0"}),
        json!({}),
    ] {
        sync(app_over(fake.clone()), query.clone()).await;
        let last = fake.requests.lock().unwrap().last().cloned().unwrap();
        assert!(!last.dry_run, "{query}");
    }
}

#[tokio::test]
async fn wrong_methods_and_actions_are_named() {
    let fake = Fake::new(Ends::Vault(Outcome::Applied));
    let (status, body) = http(app_over(fake.clone()), "GET", "sync", json!({})).await;
    assert_eq!(status, 405, "{body}");
    let (status, body) = http(app_over(fake.clone()), "POST", "status", json!({})).await;
    assert_eq!(status, 405, "{body}");
    let (status, body) = http(app_over(fake.clone()), "POST", "purge", json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(app_over(fake), "GET", "status", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["service"], "tagfence");
    assert_eq!(body["state"], json!({"vaults": []}));
    assert_eq!(body["configuration"]["error"], "not needed here");
}

#[tokio::test]
async fn an_engine_that_cannot_be_built_fails_every_invocation_and_status_says_why() {
    let state = AppState::new(
        Err("TAGFENCE_VAULTS: not an ARM id".to_owned()),
        IdentityEnv::default(),
        Schedule::parse("0 0 6 * * Wed"),
    );
    let (status, body) = sync(app(state.clone()), json!({})).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (500, Some("not_configured")),
        "{body}"
    );
    assert_eq!(body["error"], "TAGFENCE_VAULTS: not an ARM id");
    let (status, body) = post(
        app(state.clone()),
        "/function-timer",
        json!({"Data": {"timer": {}}, "Metadata": {}}),
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (500, Some("not_configured")),
        "{body}"
    );
    let (status, body) = http(app(state), "GET", "status", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["state"]["kind"], "not_configured", "{body}");
}

#[tokio::test]
async fn the_timer_fails_its_invocation_when_a_vault_failed() {
    let timer = json!({"Data": {"timer": {"IsPastDue": false}}, "Metadata": {}});
    let (status, body) = post(
        app_over(Fake::new(Ends::Vault(Outcome::Applied))),
        "/function-timer",
        timer.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["ReturnValue"]["vaults"][0]["outcome"]["status"],
        "applied"
    );
    let refused = failed(ReconcileError::Gate(GateRefusal::NoFirewall));
    let (status, body) = post(
        app_over(Fake::new(Ends::Vault(refused))),
        "/function-timer",
        timer.clone(),
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (500, Some("refused")),
        "{body}"
    );
    let (status, body) = post(
        app_over(Fake::new(Ends::Run(|| RunError::NoVaults))),
        "/function-timer",
        timer,
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (500, Some("not_configured")),
        "{body}"
    );
}

#[tokio::test]
async fn event_grid_reconciles_managed_vault_writes_and_ignores_the_rest() {
    let write = |resource: &str| {
        json!({"eventType": "Microsoft.Resources.ResourceWriteSuccess", "subject": resource,
            "data": {"operationName": "Microsoft.KeyVault/vaults/write", "resourceUri": resource}})
    };
    let invocation = |event: Value| json!({"Data": {"event": event}, "Metadata": {}});
    let fake = Fake::new(Ends::Vault(Outcome::Applied));
    let (status, body) = post(
        app_over(fake.clone()),
        "/function-eventgrid",
        invocation(write(VAULT)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.requests.lock().unwrap()[0].trigger, "eventgrid");
    // The same vault twice in a batch: reconciled once.
    let (status, body) = post(
        app_over(fake.clone()),
        "/function-eventgrid",
        invocation(json!([write(VAULT), write(VAULT)])),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.requests.lock().unwrap().len(), 2);
    assert_eq!(body["ReturnValue"]["events"][1]["same_vault_as_event"], 1);
    // Not a vault write: ignored, nothing run.
    let other = json!({"eventType": "Microsoft.Resources.ResourceDeleteSuccess", "subject": VAULT});
    let (status, body) = post(
        app_over(fake.clone()),
        "/function-eventgrid",
        invocation(other),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.requests.lock().unwrap().len(), 2);
    // A vault tagfence does not manage: ignored.
    let unmanaged = Arc::new(Fake {
        managed: false,
        ..Arc::into_inner(Fake::new(Ends::Vault(Outcome::Applied))).unwrap()
    });
    let (status, body) = post(
        app_over(unmanaged.clone()),
        "/function-eventgrid",
        invocation(write(VAULT)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(unmanaged.requests.lock().unwrap().is_empty());
    // Not an event at all: 400, nothing run.
    let (status, body) = post(
        app_over(fake.clone()),
        "/function-eventgrid",
        invocation(json!({"data": {}})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // A failed vault fails the invocation, with its kind.
    let failing = Fake::new(Ends::Vault(failed(ReconcileError::Azure {
        step: AzureStep::Observe,
        error: api(403),
    })));
    let (status, body) = post(
        app_over(failing),
        "/function-eventgrid",
        invocation(write(VAULT)),
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (500, Some("rejected")),
        "{body}"
    );
}

#[tokio::test]
async fn bodies_that_are_no_invocation_are_refused_with_a_json_error() {
    let fake = Fake::new(Ends::Vault(Outcome::Applied));
    let (status, body) = send(
        app_over(fake.clone()),
        Request::get("/").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!((status, body), (200, json!("tagfence ready")));
    let (status, body) = post(app_over(fake.clone()), "/function-nope", json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = send(
        app_over(fake.clone()),
        Request::post("/function-timer")
            .body(Body::from("[]"))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a JSON object"),
        "{body}"
    );
    let (status, body) = post(
        app_over(fake.clone()),
        "/function-timer",
        json!({"Data": {}, "Metadata": {}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let big = vec![b'x'; MAX_INVOCATION_BYTES + 1];
    let (status, body) = send(
        app_over(fake.clone()),
        Request::post("/function-timer")
            .body(Body::from(big))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(fake.requests.lock().unwrap().is_empty(), "nothing ran");
}
