//! Every route and every error kind through `app()`, in process (`tower::ServiceExt::oneshot`),
//! over an engine that answers what each test needs: no socket, no Azure.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::{to_bytes, Body};
use axum::http::Request;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::grants;
use super::schedule::Schedule;
use super::*;
use crate::azure::auth::IdentityEnv;
use crate::azure::pipeline::{AzureError, WaitLimit};
use crate::azure::ResourceId;
use crate::core::gate::GateRefusal;
use crate::core::grant::grant_rule;
use crate::core::kind::Kind;
use crate::core::service_tags::Cloud;
use crate::reconcile::{AzureStep, Outcome, ReconcileError, VaultReport};
use crate::run::SourceSummary;
use crate::run::{
    grant_json, GrantReport, GrantRequest, Requester, RevokeRequest, RevokeTarget, RunError,
    RunReport, RunRequest, SweepReport,
};
use crate::state::GrantRecord;

const VAULT: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-prod";

/// An engine whose run ends as `outcome` says, and which records the requests it got.
struct Fake {
    ends: Ends,
    managed: bool,
    requests: Mutex<Vec<RunRequest>>,
    /// How grants and revokes end (a grant of an address that is not public IPv4 is refused
    /// first, by the real `grant_rule`, as the engine does).
    grants_end: GrantsEnd,
    grants: Mutex<Vec<GrantRequest>>,
    revokes: Mutex<Vec<RevokeRequest>>,
    sweeps: Mutex<Vec<&'static str>>,
}

/// How the fake's grants, revokes and sweeps end.
#[derive(Clone, Copy)]
enum GrantsEnd {
    /// Recorded and placed (a revoke: ended and removed; a sweep: nothing left).
    Placed,
    /// The requester may not grant on the vault.
    Denied,
    /// The vault's reconcile failed (a sweep: one grant not removed).
    VaultFailed,
}

enum Ends {
    /// One vault with this outcome.
    Resource(Outcome),
    /// The run fails as a whole.
    Run(fn() -> RunError),
}

impl Fake {
    fn new(ends: Ends) -> Arc<Fake> {
        Arc::new(Fake {
            ends,
            managed: true,
            requests: Mutex::new(Vec::new()),
            grants_end: GrantsEnd::Placed,
            grants: Mutex::new(Vec::new()),
            revokes: Mutex::new(Vec::new()),
            sweeps: Mutex::new(Vec::new()),
        })
    }

    fn granting(grants_end: GrantsEnd) -> Arc<Fake> {
        Arc::new(Fake {
            grants_end,
            ..Arc::into_inner(Fake::new(Ends::Resource(Outcome::Applied))).unwrap()
        })
    }

    fn vault_outcome(&self) -> Outcome {
        match self.grants_end {
            GrantsEnd::VaultFailed => failed(ReconcileError::Azure {
                step: AzureStep::Write,
                error: api(500),
            }),
            _ => Outcome::Applied,
        }
    }
}

fn grant_record(address: &str, revoked: bool) -> GrantRecord {
    let at = chrono::DateTime::parse_from_rfc3339("2026-05-01T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    GrantRecord {
        id: "g-1".to_owned(),
        vault: VAULT.to_owned(),
        address: address.parse().unwrap(),
        granted_at: at,
        expires_at: at + chrono::Duration::minutes(30),
        requested_by: "entra:oid".to_owned(),
        reason: None,
        run_id: "run-1".to_owned(),
        revoked_at: revoked.then_some(at),
        revoked_by: None,
        placed: !revoked,
        removal_error: None,
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
            Ends::Resource(outcome) => Ok(report(outcome.clone())),
            Ends::Run(error) => Err(error()),
        }
    }

    fn check(&self, request: &RunRequest) -> Result<(), RunError> {
        match request.only.as_deref() {
            Some([name]) if name == "kv-unknown" => Err(RunError::UnknownVault(name.clone())),
            _ => Ok(()),
        }
    }

    fn may_manage(&self, _vault: &ResourceId) -> bool {
        self.managed
    }

    async fn last_runs(&self) -> Value {
        json!({"vaults": [], "grants": [grant_json(&grant_record("20.1.2.3", false))]})
    }

    async fn grant(&self, request: &GrantRequest) -> Result<GrantReport, RunError> {
        self.grants.lock().unwrap().push(request.clone());
        if let Err(refusal) = grant_rule(request.address) {
            return Err(RunError::GrantRefused {
                vault: request.vault.clone(),
                address: request.address.to_string(),
                refusal,
            });
        }
        if let GrantsEnd::Denied = self.grants_end {
            return Err(RunError::GrantDenied {
                vault: request.vault.clone(),
                requester: request.requester.describe(),
                reason: "not in the vault's grant principals".to_owned(),
            });
        }
        Ok(GrantReport {
            run_id: "run-2".to_owned(),
            action: "grant",
            grant: Some(grant_record(&request.address.to_string(), false)),
            note: None,
            vault: Some(VaultReport::new(
                VAULT.parse().unwrap(),
                self.vault_outcome(),
            )),
        })
    }

    async fn revoke(&self, request: &RevokeRequest) -> Result<GrantReport, RunError> {
        self.revokes.lock().unwrap().push(request.clone());
        if let GrantsEnd::Denied = self.grants_end {
            return Err(RunError::GrantDenied {
                vault: VAULT.to_owned(),
                requester: request.requester.describe(),
                reason: "not in the vault's grant principals".to_owned(),
            });
        }
        Ok(GrantReport {
            run_id: "run-3".to_owned(),
            action: "revoke",
            grant: None,
            note: Some("no such grant".to_owned()),
            vault: None,
        })
    }

    async fn sweep(&self, trigger: &'static str) -> Result<SweepReport, RunError> {
        self.sweeps.lock().unwrap().push(trigger);
        let failed = match self.grants_end {
            GrantsEnd::VaultFailed => vec![GrantRecord {
                removal_error: Some("writing the firewall failed".to_owned()),
                ..grant_record("20.1.2.3", true)
            }],
            _ => Vec::new(),
        };
        Ok(SweepReport {
            run_id: "run-4".to_owned(),
            indexed: 1,
            vaults: vec![VaultReport::new(
                VAULT.parse().unwrap(),
                self.vault_outcome(),
            )],
            failed,
            elapsed_ms: 1,
        })
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
            failed(ReconcileError::Gate(GateRefusal::NoFirewall {
                kind: Kind::KeyVault,
            })),
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
        let (status, body) = sync(app_over(Fake::new(Ends::Resource(outcome))), json!({})).await;
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
    let fake = Fake::new(Ends::Resource(Outcome::Applied));
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
    let fake = Fake::new(Ends::Resource(Outcome::Applied));
    let (status, body) = http(app_over(fake.clone()), "GET", "sync", json!({})).await;
    assert_eq!(status, 405, "{body}");
    let (status, body) = http(app_over(fake.clone()), "POST", "status", json!({})).await;
    assert_eq!(status, 405, "{body}");
    let (status, body) = http(app_over(fake.clone()), "POST", "purge", json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(app_over(fake), "GET", "status", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["service"], "tagfence");
    assert_eq!(body["state"]["vaults"], json!([]));
    // The grants recorded are listed beside the last runs.
    assert_eq!(body["state"]["grants"][0]["id"], "g-1", "{body}");
    assert_eq!(body["state"]["grants"][0]["rule"], "20.1.2.3/32", "{body}");
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
        app_over(Fake::new(Ends::Resource(Outcome::Applied))),
        "/function-timer",
        timer.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["ReturnValue"]["vaults"][0]["outcome"]["status"],
        "applied"
    );
    let refused = failed(ReconcileError::Gate(GateRefusal::NoFirewall {
        kind: Kind::KeyVault,
    }));
    let (status, body) = post(
        app_over(Fake::new(Ends::Resource(refused))),
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
    let fake = Fake::new(Ends::Resource(Outcome::Applied));
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
        ..Arc::into_inner(Fake::new(Ends::Resource(Outcome::Applied))).unwrap()
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
    let failing = Fake::new(Ends::Resource(failed(ReconcileError::Azure {
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
    let fake = Fake::new(Ends::Resource(Outcome::Applied));
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

const OID: &str = "11111111-2222-3333-4444-555555555555";
const APP_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

/// The router with App Service authentication on, as `WEBSITE_AUTH_ENABLED=True` says.
fn authenticated_app(engine: Arc<dyn Engine>) -> Router {
    app(AppState::with_engine(
        Err("not needed here".to_owned()),
        Schedule::parse("0 0 6 * * Wed"),
        engine,
    )
    .with_app_service_auth(true))
}

/// The headers App Service authentication forwards for a pipeline's service principal, with
/// `claims` in the principal.
fn principal_with(claims: Value) -> Value {
    let principal =
        json!({"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"});
    json!({
        "X-MS-CLIENT-PRINCIPAL": grants::encode_base64(principal.to_string().as_bytes()),
        "X-MS-CLIENT-PRINCIPAL-ID": OID,
        "X-MS-CLIENT-PRINCIPAL-NAME": "release-pipeline",
        "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
    })
}

fn principal() -> Value {
    principal_with(json!([
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": OID},
        {"typ": "appid", "val": APP_ID},
        {"typ": "ver", "val": "1.0"},
    ]))
}

/// One invocation of `function-grant` with the HTTP request `req`: the status and body of its
/// `res` output, and the output's headers.
async fn grant_route(app: Router, req: Value) -> (u16, Value, Value) {
    let (status, body) = post(
        app,
        "/function-grant",
        json!({"Data": {"req": req}, "Metadata": {}}),
    )
    .await;
    assert_eq!(
        status, 200,
        "the HTTP function's invocation itself succeeds: {body}"
    );
    let res = &body["Outputs"]["res"];
    let inner = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    (
        res["statusCode"].as_u64().unwrap() as u16,
        inner,
        res["headers"].clone(),
    )
}

/// `POST /api/grant` with `headers` and the JSON `body`.
async fn post_grant(app: Router, headers: Value, body: Value) -> (u16, Value) {
    let text = match body {
        Value::String(text) => text,
        other => other.to_string(),
    };
    let (status, body, _) = grant_route(
        app,
        json!({"Url": "https://tagfence.azurewebsites.net/api/grant", "Method": "POST",
            "Headers": headers, "Body": text}),
    )
    .await;
    (status, body)
}

fn with_header(mut headers: Value, name: &str, value: Value) -> Value {
    headers[name] = value;
    headers
}

#[tokio::test]
async fn a_grant_is_refused_with_401_unless_app_service_authenticated_an_entra_principal() {
    let fake = Fake::granting(GrantsEnd::Placed);
    let body = json!({"vault": "kv-prod", "ip": "20.1.2.3"});
    // No principal header: App Service authentication let an anonymous request through.
    let (status, res_body, res_headers) = grant_route(
        authenticated_app(fake.clone()),
        json!({"Method": "POST", "Headers": {"Content-Type": ["application/json"]}, "Body": body.to_string()}),
    )
    .await;
    assert_eq!(status, 401, "{res_body}");
    assert_eq!(res_body["kind"], "unauthenticated");
    assert_eq!(res_body["retry"], false);
    assert!(
        res_body["error"]
            .as_str()
            .unwrap()
            .contains("no X-MS-CLIENT-PRINCIPAL header"),
        "{res_body}"
    );
    assert_eq!(res_headers["WWW-Authenticate"], "Bearer");
    // App Service authentication off: anyone can send the headers, so even a well-formed
    // principal is a forgery as far as tagfence can tell.
    let (status, res_body) = post_grant(app_over(fake.clone()), principal(), body.clone()).await;
    assert_eq!(status, 401, "{res_body}");
    assert!(
        res_body["error"]
            .as_str()
            .unwrap()
            .contains("WEBSITE_AUTH_ENABLED"),
        "{res_body}"
    );
    // A principal that does not decode to claims, one of another identity provider, one with
    // neither an object id nor an app id.
    let not_json = grants::encode_base64(b"not json");
    for (headers, reason) in [
        (
            with_header(
                principal(),
                "X-MS-CLIENT-PRINCIPAL",
                json!("%%% not base64"),
            ),
            "does not decode to a principal",
        ),
        (
            with_header(principal(), "X-MS-CLIENT-PRINCIPAL", json!([not_json])),
            "does not decode to a principal",
        ),
        (
            // Two principals (the same header in another case): App Service sends one.
            with_header(principal(), "x-ms-client-principal", json!("e30=")),
            "X-MS-CLIENT-PRINCIPAL was sent 2 times",
        ),
        (
            with_header(principal(), "X-MS-CLIENT-PRINCIPAL-IDP", json!("github")),
            "identity provider 'github'",
        ),
        (
            with_header(principal(), "X-MS-CLIENT-PRINCIPAL-IDP", json!([])),
            "no X-MS-CLIENT-PRINCIPAL-IDP header",
        ),
        (
            principal_with(json!([{"typ": "name", "val": "someone"}])),
            "no object id (oid) and no application id",
        ),
    ] {
        let (status, res_body) =
            post_grant(authenticated_app(fake.clone()), headers, body.clone()).await;
        assert_eq!(status, 401, "{reason}: {res_body}");
        assert!(
            res_body["error"].as_str().unwrap().contains(reason),
            "{reason}: {res_body}"
        );
    }
    assert!(
        fake.grants.lock().unwrap().is_empty(),
        "nothing reached the engine"
    );
}

#[tokio::test]
async fn an_authenticated_principal_reaches_the_engine_with_the_ids_of_its_claims() {
    let fake = Fake::granting(GrantsEnd::Placed);
    // Header names in any case, values as arrays (as the host sends them) or strings; the
    // short claim names (`oid`, `azp`) of a v2 token.
    let headers = json!({
        "x-ms-client-principal": [grants::encode_base64(json!({"auth_typ": "aad", "claims": [
            {"typ": "oid", "val": OID.to_uppercase()}, {"typ": "azp", "val": APP_ID}]}).to_string().as_bytes())],
        "X-Ms-Client-Principal-Idp": ["AAD"],
        "X-MS-CLIENT-PRINCIPAL-NAME": "release-pipeline",
    });
    let (status, body) = post_grant(
        authenticated_app(fake.clone()),
        headers,
        json!({"vault": "kv-prod", "ip": "20.1.2.3", "ttl": "45m", "reason": "release 1.2"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["action"], "grant");
    assert_eq!(body["grant"]["rule"], "20.1.2.3/32", "{body}");
    let request = fake.grants.lock().unwrap()[0].clone();
    assert_eq!(
        request.requester,
        Requester::Principal {
            object_id: Some(OID.to_owned()),
            app_id: Some(APP_ID.to_owned()),
            name: Some("release-pipeline".to_owned()),
        }
    );
    assert_eq!(request.vault, "kv-prod");
    assert_eq!(request.address.to_string(), "20.1.2.3");
    assert_eq!(request.ttl, Some(std::time::Duration::from_secs(45 * 60)));
    assert_eq!(request.reason.as_deref(), Some("release 1.2"));
    assert_eq!(request.trigger, "http");
    // The long claim type and `appid` (a v1 token), and no ttl: the engine's default.
    let (status, body) = post_grant(
        authenticated_app(fake.clone()),
        principal(),
        json!({"vault": "kv-prod", "ip": "20.1.2.4"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let last = fake.grants.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.ttl, None);
    assert_eq!(last.requester.ids(), [OID.to_owned(), APP_ID.to_owned()]);
}

#[tokio::test]
async fn a_principal_the_vault_does_not_list_is_forbidden() {
    let fake = Fake::granting(GrantsEnd::Denied);
    let (status, body) = post_grant(
        authenticated_app(fake.clone()),
        principal(),
        json!({"vault": "kv-prod", "ip": "20.1.2.3"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["kind"], "forbidden");
    assert_eq!(body["retry"], false);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("may not grant on kv-prod: not in the vault's grant principals"),
        "{body}"
    );
    let (status, body, _) = grant_route(
        authenticated_app(fake),
        json!({"Method": "DELETE", "Headers": principal(), "Params": {"id": "g-1"}}),
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
}

#[tokio::test]
async fn grant_requests_are_checked_before_the_engine_and_named_when_wrong() {
    let fake = Fake::granting(GrantsEnd::Placed);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"vault": "kv-prod", "ip": "20.1.2.3", "ttl": "soon"}),
            "ttl: 'soon' is not a duration; write it as a number with a unit: 90s, 30m, 2h or 1h30m",
        ),
        (
            json!({"vault": "kv-prod", "ip": "20.1.2.3/32"}),
            "is not an IP address; give the public IPv4 address to allow as a.b.c.d",
        ),
        (
            json!({"vault": "kv-prod", "ip": "20.1.2.3", "address": "20.1.2.3"}),
            "unknown field `address`, expected one of `resource`, `vault`, `ip`, `ttl`, `reason`",
        ),
        (json!({"ip": "20.1.2.3"}), "missing field `vault`"),
        (
            json!({"resource": "kv-prod", "vault": "kv-prod", "ip": "20.1.2.3"}),
            "duplicate field `vault`",
        ),
        (json!({"vault": " "}), "\"vault\" is empty"),
        (json!({"vault": "kv-prod", "ttl": 30}), "invalid type"),
        (json!("{not json"), "the request body is not JSON"),
        (json!("[]"), "the request body is not a JSON object"),
        (json!(""), "the request has no body"),
        (
            json!({"vault": "kv-prod", "ip": "20.1.2.3", "reason": "x".repeat(grants::MAX_GRANT_BODY_BYTES)}),
            "at most 4096 are accepted",
        ),
    ];
    for (body, error) in cases {
        let (status, answer) =
            post_grant(authenticated_app(fake.clone()), principal(), body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["kind"], "bad_request");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(error), "{body}: {message}");
        if !message.starts_with("ttl:") && !message.contains("IP address") {
            // Errors about the body's shape say what the body should be.
            assert!(
                message.contains(r#"expected a JSON object {"resource""#),
                "{message}"
            );
        }
    }
    assert!(
        fake.grants.lock().unwrap().is_empty(),
        "nothing reached the engine"
    );
    // A private or IPv6 address is the engine's refusal (`core::grant::grant_rule`): 400.
    for (ip, error) in [
        ("10.1.2.3", "10.1.2.3 is not a public address"),
        ("2001:db8::1", "tagfence writes IPv4 firewall rules only"),
    ] {
        let (status, answer) = post_grant(
            authenticated_app(fake.clone()),
            principal(),
            json!({"vault": "kv-prod", "ip": ip}),
        )
        .await;
        assert_eq!(
            (status, answer["kind"].as_str()),
            (400, Some("bad_request")),
            "{ip}: {answer}"
        );
        assert!(
            answer["error"].as_str().unwrap().contains(error),
            "{answer}"
        );
    }
    // Another method than POST or DELETE.
    let (status, answer, _) = grant_route(
        authenticated_app(fake.clone()),
        json!({"Method": "GET", "Headers": principal()}),
    )
    .await;
    assert_eq!(status, 405, "{answer}");
    assert_eq!(fake.grants.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn without_ip_the_address_is_the_last_x_forwarded_for_entry() {
    let fake = Fake::granting(GrantsEnd::Placed);
    let (status, body) = post_grant(
        authenticated_app(fake.clone()),
        principal(),
        json!({"vault": "kv-prod"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.starts_with("no address to grant: give it as \"ip\" in the body")
            && message.contains("X-Forwarded-For"),
        "{message}"
    );
    assert!(fake.grants.lock().unwrap().is_empty());
    // What the client sent comes first; the front end appends the address that connected.
    let headers = with_header(
        principal(),
        "X-Forwarded-For",
        json!(["203.0.113.9, 20.1.2.3:51234"]),
    );
    let (status, body) = post_grant(
        authenticated_app(fake.clone()),
        headers.clone(),
        json!({"vault": "kv-prod"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fake.grants.lock().unwrap()[0].address.to_string(),
        "20.1.2.3"
    );
    // An `ip` in the body wins over the header.
    post_grant(
        authenticated_app(fake.clone()),
        headers,
        json!({"vault": "kv-prod", "ip": "20.9.9.9"}),
    )
    .await;
    assert_eq!(
        fake.grants.lock().unwrap()[1].address.to_string(),
        "20.9.9.9"
    );
}

#[tokio::test]
async fn a_grant_whose_vault_failed_answers_by_its_kind_with_the_report() {
    let fake = Fake::granting(GrantsEnd::VaultFailed);
    let (status, body) = post_grant(
        authenticated_app(fake),
        principal(),
        json!({"vault": "kv-prod", "ip": "20.1.2.3"}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["kind"], "unavailable");
    assert_eq!(body["retry"], true);
    assert_eq!(body["grant"]["id"], "g-1", "{body}");
    assert_eq!(body["vault"]["outcome"]["status"], "failed", "{body}");
}

#[tokio::test]
async fn delete_revokes_by_id_or_by_address() {
    let fake = Fake::granting(GrantsEnd::Placed);
    let delete = |req: Value| {
        let mut req = req;
        req["Method"] = json!("DELETE");
        req["Headers"] = principal();
        grant_route(authenticated_app(fake.clone()), req)
    };
    // By id, from the route parameter: idempotent, a 200 with the engine's note.
    let (status, body, _) =
        delete(json!({"Url": "https://app/api/grant/g-1", "Params": {"id": "g-1"}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["note"], "no such grant");
    // By id from the URL, with the vault.
    let (status, body, _) = delete(json!({"Url": "https://app/api/grant/g-2?vault=kv-prod"})).await;
    assert_eq!(status, 200, "{body}");
    // By address.
    let (status, body, _) = delete(
        json!({"Url": "https://app/api/grant", "Query": {"vault": "kv-prod", "ip": "20.1.2.3"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // By the caller's address: none without an ip parameter or X-Forwarded-For (400), the
    // last X-Forwarded-For entry with one.
    let (status, body, _) = delete(json!({"Url": "https://app/api/grant?vault=kv-prod"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no address to revoke"),
        "{body}"
    );
    let mut req = json!({"Method": "DELETE", "Url": "https://app/api/grant?vault=kv-prod"});
    req["Headers"] = with_header(principal(), "X-Forwarded-For", json!(["20.1.2.5:40000"]));
    let (status, body, _) = grant_route(authenticated_app(fake.clone()), req).await;
    assert_eq!(status, 200, "{body}");
    {
        let revokes = fake.revokes.lock().unwrap();
        let seen: Vec<(Option<&str>, &RevokeTarget)> = revokes
            .iter()
            .map(|r| (r.vault.as_deref(), &r.target))
            .collect();
        assert_eq!(
            seen,
            [
                (None, &RevokeTarget::Id("g-1".to_owned())),
                (Some("kv-prod"), &RevokeTarget::Id("g-2".to_owned())),
                (
                    Some("kv-prod"),
                    &RevokeTarget::Address("20.1.2.3".parse().unwrap())
                ),
                (
                    Some("kv-prod"),
                    &RevokeTarget::Address("20.1.2.5".parse().unwrap())
                ),
            ]
        );
        assert!(revokes.iter().all(|r| r.trigger == "http"));
        assert!(matches!(revokes[0].requester, Requester::Principal { .. }));
    }
    // Nothing to name the grant by, an id and an address at once, an id that is no id.
    for (req, error) in [
        (
            json!({"Url": "https://app/api/grant"}),
            "name the grant to revoke",
        ),
        (
            json!({"Url": "https://app/api/grant/g-1", "Params": {"id": "g-1"}, "Query": {"ip": "20.1.2.3"}}),
            "not both",
        ),
        (
            json!({"Url": "https://app/api/grant/x", "Params": {"id": "../../etc"}}),
            "is not a grant id",
        ),
        (
            json!({"Url": "https://app/api/grant", "Query": {"vault": "kv-prod", "ip": "somewhere"}}),
            "is not an IP address",
        ),
    ] {
        let (status, body, _) = delete(req.clone()).await;
        assert_eq!(status, 400, "{req}: {body}");
        assert!(body["error"].as_str().unwrap().contains(error), "{body}");
    }
    assert_eq!(fake.revokes.lock().unwrap().len(), 4);
    assert!(fake.grants.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_sweep_timer_sweeps_and_fails_its_invocation_while_grants_remain() {
    let timer = json!({"Data": {"timer": {"IsPastDue": false}}, "Metadata": {}});
    let fake = Fake::granting(GrantsEnd::Placed);
    let (status, body) = post(app_over(fake.clone()), "/function-sweep", timer.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(*fake.sweeps.lock().unwrap(), ["sweep"]);
    assert_eq!(body["ReturnValue"]["indexed"], 1, "{body}");
    assert!(fake.requests.lock().unwrap().is_empty(), "no regular run");
    // A grant whose rule could not be removed fails the invocation, so the host records it.
    let failing = Fake::granting(GrantsEnd::VaultFailed);
    let (status, body) = post(app_over(failing), "/function-sweep", timer).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (500, Some("unavailable")),
        "{body}"
    );
    assert_eq!(body["report"]["failed"][0]["id"], "g-1", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("sweep: 1 grant(s) whose rule is not removed yet"),
        "{body}"
    );
}
