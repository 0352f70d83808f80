//! The HTTP server: the accept loop, the wrapper that logs and faults requests, and the control
//! routes. The state it serves from is [`crate::state`].
//!
//! `axum::serve` cannot close a connection without answering, which is exactly what a
//! [`FaultKind::Drop`] fault must do, so the emulator runs its own hyper 1 accept loop. Every
//! connection is served by [`handle`], which classifies the request, applies the first matching
//! fault (FIFO), authenticates, hands the request to the axum [`Router`], adds ARM's common
//! headers, applies the after-effects of a [`FaultKind::EditAfter`], [`FaultKind::Reshape`] or
//! [`FaultKind::DropAfter`] fault and records the outcome. A [`FaultKind::Hold`] fault parks the
//! request at its gate ([`crate::holds`]) where a `Delay` would sleep. Returning `Err` from the service makes hyper close the
//! connection without writing a status line. Control routes (`/_emulator/…`) bypass all of that.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use serde_json::Value;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::arm::{self, MAX_BODY_BYTES};
use crate::error::ArmError;
use crate::holds::Released;
use crate::identity::{self, Flavour, Principal};
use crate::model::{Fault, FaultKind, RequestRecord, Route};
use crate::paths::Kind;
use crate::query::Query;
use crate::routes::{classify, Classified, RequestContext, Target};
use crate::service_tags::{self, PUBLIC_DOWNLOAD_ID};
use crate::state::{arm_operation, edit_ip_rules, set_ip_rules, update_vault, Shared};
use crate::tls::TLS_HANDSHAKE;

/// How long shutdown waits for in-flight requests before dropping their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The error that makes hyper close a connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct DropConnection;

/// The axum router: explicit control routes; everything else goes to [`dispatch`].
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/_emulator/requests",
            get(list_requests).delete(delete_requests),
        )
        .route("/_emulator/faults", post(post_fault).delete(delete_faults))
        .route("/_emulator/vaults", get(list_vaults))
        .route("/_emulator/resources", get(list_resources))
        .route("/_emulator/vaults/{name}", put(put_vault))
        .route("/_emulator/vaults/{name}/ip-rules", put(put_ip_rules))
        .route("/_emulator/holds", get(list_holds))
        .route("/_emulator/holds/{name}", get(get_hold))
        .route("/_emulator/holds/{name}/release", post(release_hold))
        .fallback(dispatch)
        .with_state(shared)
}

/// Runs the accept loop until `shutdown` fires (or its sender is dropped), then drains
/// connections for up to [`SHUTDOWN_GRACE`]. With `tls`, a connection whose first byte opens a
/// TLS handshake is served over TLS and any other as plain http, on the same port.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    router: Router,
    tls: Option<TlsAcceptor>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut builder = http1::Builder::new();
    builder.keep_alive(true).timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Typically EMFILE; back off instead of spinning.
                        warn!(%error, "failed to accept a connection");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                if let Err(error) = stream.set_nodelay(true) {
                    debug!(%error, "could not disable nagle on an accepted connection");
                }
                let connection = Connection {
                    shared: Arc::clone(&shared),
                    router: router.clone(),
                    builder: builder.clone(),
                    watcher: graceful.watcher(),
                };
                tokio::spawn(connection.serve(stream, peer, tls.clone()));
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    // Held requests would otherwise keep their connections open for the whole grace period.
    shared.holds.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("connections still open after the shutdown grace period; dropping them");
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    shared: Arc<Shared>,
    router: Router,
    builder: http1::Builder,
    watcher: Watcher,
}

impl Connection {
    /// Serves the connection, over TLS when `tls` is set and the client opens with a handshake.
    async fn serve(self, stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>) {
        let secure = match &tls {
            None => false,
            Some(_) => {
                let mut first = [0u8; 1];
                match stream.peek(&mut first).await {
                    Ok(1) => first[0] == TLS_HANDSHAKE,
                    // Closed before sending anything.
                    _ => return,
                }
            }
        };
        match tls.filter(|_| secure) {
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(stream) => self.serve_io(TokioIo::new(stream), peer, true).await,
                Err(error) => debug!(%peer, %error, "TLS handshake failed"),
            },
            None => self.serve_io(TokioIo::new(stream), peer, false).await,
        }
    }

    async fn serve_io<I>(self, io: I, peer: SocketAddr, secure: bool)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Connection {
            shared,
            router,
            builder,
            watcher,
        } = self;
        let service = hyper::service::service_fn(move |request| {
            handle(Arc::clone(&shared), router.clone(), request, secure)
        });
        if let Err(error) = watcher.watch(builder.serve_connection(io, service)).await {
            debug!(%peer, %error, "connection ended with an error");
        }
    }
}

async fn call(router: Router, request: Request) -> Response {
    // A `Router`'s error type is `Infallible`.
    match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// A request being handled. If hyper drops the handling future before it completes (it does when
/// the client closes the connection first, e.g. after timing out during a `Delay` fault), the
/// request was never handled; it is then recorded as abandoned (status 0).
struct InFlight<'a> {
    shared: &'a Shared,
    record: Option<RequestRecord>,
}

impl InFlight<'_> {
    fn record(&mut self) -> &mut RequestRecord {
        self.record
            .as_mut()
            .expect("the record is only taken when the request is finished")
    }

    /// The record of the finished request; nothing is recorded on drop any more.
    fn finish(mut self) -> RequestRecord {
        self.record
            .take()
            .expect("the record is only taken when the request is finished")
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.status = 0;
            record.abandoned = true;
            info!(method = %record.method, path = %record.path, route = ?record.route, fault = record.fault.as_deref(), "the client went away before the answer; the request was not handled");
            self.shared.record(record);
        }
    }
}

/// Whether the request passes its route's credential checks, and the ARM authentication
/// result for ARM routes.
fn access(
    shared: &Shared,
    classified: &Classified,
    headers: &HeaderMap,
) -> (bool, Option<Result<Principal, ArmError>>) {
    match classified.route {
        route if route.is_arm() => {
            let auth = shared.arm_auth(headers);
            let permitted = match &classified.target {
                Target::Resource(path) => !shared.store().is_forbidden(path),
                _ => true,
            };
            (auth.is_ok() && permitted, Some(auth))
        }
        Route::TokenAppService => (
            identity::app_service_header_ok(headers, &shared.settings.identity_header),
            None,
        ),
        Route::TokenImds => (identity::imds_header_ok(headers), None),
        _ => (true, None),
    }
}

/// The per-request wrapper around the router: faults, authentication, common headers, logging.
///
/// The steps run in a fixed order because each fault kind acts at one point of it: a `Delay` or
/// `Hold` before authentication, a `Drop` or `Status` instead of the handler, a `Reshape` on the
/// handler's answer, and an `EditAfter` or `DropAfter` once the answer is final.
async fn handle(
    shared: Arc<Shared>,
    router: Router,
    request: hyper::Request<Incoming>,
    secure: bool,
) -> Result<Response, DropConnection> {
    let request = request.map(Body::new);
    let classified = classify(request.method(), request.uri().path());
    if classified.route == Route::Control {
        return Ok(call(router, request).await);
    }
    let mut in_flight = InFlight {
        shared: &shared,
        record: Some(arrival_record(&shared, &request, &classified, secure)),
    };
    let fault = shared.take_fault(classified.route, in_flight.record().vault.as_deref());
    in_flight.record().fault = fault.as_ref().map(FaultKind::describe);
    // A gate closed by shutdown returns here; `in_flight` then records the request as abandoned.
    wait_before_handling(&shared, fault.as_ref(), in_flight.record()).await?;
    let (authorized, arm_auth) = access(&shared, &classified, request.headers());
    let correlation = request
        .headers()
        .get(CORRELATION_REQUEST_ID)
        .cloned()
        .filter(|_| classified.route.is_arm());
    in_flight.record().authorized = authorized;

    let context = RequestContext {
        classified: classified.clone(),
        arm_auth,
        secure,
    };
    let Some(mut response) = answer(router, request, fault.as_ref(), context).await else {
        let record = in_flight.finish();
        info!(method = %record.method, path = %record.path, route = ?record.route, "dropped connection (injected fault)");
        shared.record(record);
        return Err(DropConnection);
    };
    if let Some(FaultKind::Reshape { remove, null, set }) = &fault {
        response = reshape_response(response, remove, null, set).await;
    }
    add_common_headers(&shared, &classified, correlation, response.headers_mut());
    let mut record = in_flight.finish();
    record.status = response.status().as_u16();
    finish_handled(&shared, fault, &classified, record)?;
    Ok(response)
}

/// Step 1: what the log will say about the request, filled in as it is handled (its status stays
/// 0 until there is an answer, so a request abandoned midway is recorded as such).
fn arrival_record(
    shared: &Shared,
    request: &Request,
    classified: &Classified,
    secure: bool,
) -> RequestRecord {
    RequestRecord {
        tls: secure,
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().unwrap_or_default().to_owned(),
        status: 0,
        route: classified.route,
        vault: classified.vault_name(),
        at_ms: shared.elapsed_ms(),
        fault: None,
        authorized: false,
        abandoned: false,
    }
}

/// Step 2: a `Delay` sleeps and a `Hold` waits at its gate, both before authentication, so a
/// token that expires meanwhile is refused as it would be after a slow network; then an ARM or
/// Resource Graph request waits out the emulated latency ([`crate::Config::latency`]). `Err`
/// when shutdown closed the gate: the request is then never handled.
async fn wait_before_handling(
    shared: &Shared,
    fault: Option<&FaultKind>,
    record: &RequestRecord,
) -> Result<(), DropConnection> {
    let latency = shared.settings.latency;
    if record.route.is_arm() && !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(FaultKind::Delay { ms }) => tokio::time::sleep(Duration::from_millis(*ms)).await,
        Some(FaultKind::Hold { name }) => {
            info!(method = %record.method, path = %record.path, gate = %name, "holding the request until its gate is released (injected fault)");
            if shared.holds.hold(name).await == Released::Closed {
                return Err(DropConnection);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Step 3: the answer — an injected `Status` error, or the router's answer with the request's
/// context attached. `None` for a `Drop` fault: the connection is closed without one.
async fn answer(
    router: Router,
    mut request: Request,
    fault: Option<&FaultKind>,
    context: RequestContext,
) -> Option<Response> {
    match fault {
        Some(FaultKind::Drop) => {
            // Read the body first: closing with unread bytes makes the kernel send a reset, and the
            // client should see a clean end of stream after it has sent its whole request.
            if let Err(error) = request.into_body().collect().await {
                debug!(%error, "reading the body of a dropped request failed");
            }
            None
        }
        Some(FaultKind::Status {
            status,
            code,
            message,
            retry_after,
        }) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(
                ArmError::new(status, code.clone(), message.clone())
                    .with_retry_after(*retry_after)
                    .into_response(),
            )
        }
        Some(
            FaultKind::Delay { .. }
            | FaultKind::DropAfter
            | FaultKind::EditAfter { .. }
            | FaultKind::Reshape { .. }
            | FaultKind::Hold { .. },
        )
        | None => {
            request.extensions_mut().insert(context);
            Some(call(router, request).await)
        }
    }
}

/// Step 4, once the answer is final: an `EditAfter` edits the vault (so the client's next read,
/// not this answer, shows the edit) and a `DropAfter` loses the answer; then the request is
/// logged and recorded.
fn finish_handled(
    shared: &Shared,
    fault: Option<FaultKind>,
    classified: &Classified,
    record: RequestRecord,
) -> Result<(), DropConnection> {
    match fault {
        Some(FaultKind::EditAfter { add, remove }) => {
            if let Target::Resource(path) = &classified.target {
                edit_ip_rules(shared, &path.id(), &add, &remove);
            }
        }
        Some(FaultKind::DropAfter) => {
            info!(method = %record.method, path = %record.path, status = record.status, route = ?record.route, "handled, then dropped the connection (injected fault)");
            shared.record(record);
            return Err(DropConnection);
        }
        _ => {}
    }
    info!(
        method = %record.method,
        path = %record.path,
        status = record.status,
        route = ?record.route,
        fault = record.fault.as_deref(),
        "handled request"
    );
    shared.record(record);
    Ok(())
}

/// The response with its body reshaped by a [`FaultKind::Reshape`] fault; status and headers kept
/// (but `Content-Length`, which hyper recomputes).
async fn reshape_response(
    response: Response,
    remove: &[String],
    null: &[String],
    set: &[(String, Value)],
) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            warn!(%error, "could not read the answer to reshape; sending an empty body");
            Bytes::new()
        }
    };
    let Some(reshaped) = crate::reshape::reshape(&bytes, remove, null, set) else {
        debug!("the answer is not JSON; left as it was");
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    if !reshaped.is_empty() && !parts.headers.contains_key(header::CONTENT_TYPE) {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    info!(
        status = parts.status.as_u16(),
        "reshaped the answer's body (injected fault)"
    );
    Response::from_parts(parts, Body::from(reshaped))
}

/// ARM's correlation header: the caller's value is echoed, else ARM makes one.
const CORRELATION_REQUEST_ID: &str = "x-ms-correlation-request-id";

/// `x-ms-request-id` on everything; on ARM routes ARM's correlation headers
/// (`x-ms-correlation-request-id`, echoed when the caller sent one, and `x-ms-routing-request-id`,
/// `REGION:yyyyMMddTHHmmssZ:guid`: Microsoft Learn, "Azure Resource Manager: request and
/// response headers" / the REST API guidelines), and its rate-limit headers on
/// subscription-scoped ones.
fn add_common_headers(
    shared: &Shared,
    classified: &Classified,
    correlation: Option<HeaderValue>,
    headers: &mut HeaderMap,
) {
    let request_id = crate::ids::random_guid();
    if let Ok(id) = HeaderValue::try_from(&request_id) {
        headers.insert("x-ms-request-id", id);
    }
    if classified.route.is_arm() {
        let correlation =
            correlation.or_else(|| HeaderValue::try_from(crate::ids::random_guid()).ok());
        if let Some(correlation) = correlation {
            headers.insert(CORRELATION_REQUEST_ID, correlation);
        }
        let now = crate::clock::rfc3339_utc(crate::clock::now_epoch_ms());
        let compact: String = now[..19]
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        if let Ok(routing) = HeaderValue::try_from(format!("WESTEUROPE:{compact}Z:{request_id}")) {
            headers.insert("x-ms-routing-request-id", routing);
        }
    }
    let (Some(subscription), Some(operation)) =
        (classified.subscription(), arm_operation(classified.route))
    else {
        return;
    };
    // The handler sets what is left after spending; an answer that spent nothing (refused
    // before, or injected) says what is left now.
    let name = operation.remaining_header();
    if !headers.contains_key(name) {
        let remaining = shared.peek_arm(operation, &subscription);
        headers.insert(name, HeaderValue::from(remaining));
    }
}

/// 404 for paths the emulator does not serve.
pub(crate) fn not_found(method: &str, path: &str) -> Response {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("The emulator does not serve '{method} {path}'."),
    )
    .into_response()
}

/// The fallback handler: routes classified (non-control) requests to their handlers.
async fn dispatch(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let Some(context) = request.extensions().get::<RequestContext>().cloned() else {
        // Only unknown `/_emulator/…` paths get here without a context.
        return not_found(request.method().as_str(), request.uri().path());
    };
    let (parts, body) = request.into_parts();
    let query = Query::parse(parts.uri.query().unwrap_or_default());
    let path = parts.uri.path();
    match context.classified.route {
        Route::VaultGet
        | Route::VaultPatch
        | Route::VaultPut
        | Route::VaultDelete
        | Route::StorageAccountGet
        | Route::StorageAccountPatch
        | Route::RegistryGet
        | Route::RegistryPatch
        | Route::ResourceGraph => {
            let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
                Ok(body) => body,
                Err(error) => return ArmError::invalid_content(error).into_response(),
            };
            if context.classified.route == Route::ResourceGraph {
                arm::resource_graph(&shared, &context, &query, &body)
            } else {
                arm::resource(&shared, &context, &query, &body)
            }
        }
        Route::VaultList | Route::ResourceList => arm::list(&shared, &context, path, &query),
        Route::RegistryOperation => arm::registry_operation(&shared, &context, &query),
        Route::ServiceTagsApi | Route::ServiceTagDetails => {
            arm::service_tags(&shared, &context, path, &query)
        }
        Route::TokenAppService | Route::TokenImds => {
            let flavour = if context.classified.route == Route::TokenImds {
                Flavour::Imds
            } else {
                Flavour::AppService
            };
            identity::token_response(
                flavour,
                &parts.headers,
                &query,
                &shared.settings.identity_header,
                |resource, principal| shared.issue_token(resource, principal),
            )
        }
        Route::DownloadPage => download_page(&shared, &query, context.secure),
        Route::DownloadFile => download_file(&shared, path),
        Route::Control | Route::Other => not_found(parts.method.as_str(), path),
    }
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn download_page(shared: &Shared, query: &Query, secure: bool) -> Response {
    if shared.service_tags.is_some() && query.get("id") == Some(PUBLIC_DOWNLOAD_ID) {
        html(
            StatusCode::OK,
            service_tags::download_page(shared.base_url_for(secure)),
        )
    } else {
        html(StatusCode::NOT_FOUND, service_tags::not_found_page())
    }
}

fn download_file(shared: &Shared, path: &str) -> Response {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    match &shared.service_tags {
        Some(document) if service_tags::is_known_download_path(&decoded) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            document.json(),
        )
            .into_response(),
        _ => html(StatusCode::NOT_FOUND, service_tags::not_found_page()),
    }
}

// ---------------------------------------------------------------------------------------------
// Control routes.

async fn list_requests(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.requests()).into_response()
}

async fn delete_requests(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.clear_requests();
    StatusCode::NO_CONTENT
}

async fn post_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(fault) if fault.kind.check().is_err() => {
            let problem = fault.kind.check().err().unwrap_or_default();
            ArmError::invalid_content(problem).into_response()
        }
        Ok(fault) => {
            shared.add_fault(fault);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => ArmError::invalid_content(error).into_response(),
    }
}

async fn delete_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.clear_faults();
    StatusCode::NO_CONTENT
}

/// `GET /_emulator/vaults`: every stored Key Vault vault.
async fn list_vaults(State(shared): State<Arc<Shared>>) -> Response {
    let vaults: Vec<Value> = shared
        .store()
        .of_kind(Kind::Vault)
        .map(|(_, vault)| vault.clone())
        .collect();
    axum::Json(vaults).into_response()
}

/// `GET /_emulator/resources`: every stored resource of every kind, in seed order.
async fn list_resources(State(shared): State<Arc<Shared>>) -> Response {
    let resources: Vec<Value> = shared
        .store()
        .iter()
        .map(|(_, resource)| resource.clone())
        .collect();
    axum::Json(resources).into_response()
}

/// `PUT /_emulator/vaults/{name}`: replaces the stored resource (of any kind, by name or id)
/// with the body, verbatim.
async fn put_vault(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let vault: Value = match serde_json::from_slice(&body) {
        Ok(vault) => vault,
        Err(error) => return ArmError::invalid_content(error).into_response(),
    };
    if update_vault(&shared, &name, |stored| *stored = vault) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found(Method::PUT.as_str(), &format!("/_emulator/vaults/{name}"))
    }
}

/// `GET /_emulator/holds`: `{"gate": held, …}` for the gates holding requests now.
async fn list_holds(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.holds.all_held()).into_response()
}

/// `GET /_emulator/holds/{name}?wait_ms=N`: `{"held": n}`, after waiting up to `N` ms (default 0)
/// for a request to be held at the gate.
async fn get_hold(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let query = Query::parse(request.uri().query().unwrap_or_default());
    let wait_ms = match query.get("wait_ms").map(str::parse::<u64>) {
        None => 0,
        Some(Ok(ms)) => ms,
        Some(Err(error)) => return ArmError::invalid_content(error).into_response(),
    };
    let held = if wait_ms == 0 {
        shared.holds.held(&name)
    } else {
        shared
            .holds
            .wait_held(&name, Duration::from_millis(wait_ms))
            .await
    };
    axum::Json(serde_json::json!({ "held": held })).into_response()
}

/// `POST /_emulator/holds/{name}/release`: `{"released": n}`.
async fn release_hold(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let released = shared.holds.release(&name);
    axum::Json(serde_json::json!({ "released": released })).into_response()
}

async fn put_ip_rules(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let rules: Vec<String> = match serde_json::from_slice(&body) {
        Ok(rules) => rules,
        Err(error) => return ArmError::invalid_content(error).into_response(),
    };
    if set_ip_rules(&shared, &name, rules) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found(
            Method::PUT.as_str(),
            &format!("/_emulator/vaults/{name}/ip-rules"),
        )
    }
}
