//! `tagfence serve`: the Azure Functions custom handler.
//!
//! The Functions host starts this process with `FUNCTIONS_CUSTOMHANDLER_PORT`, polls `GET /`
//! until it answers, then forwards each trigger as `POST /{function name}` with a JSON body
//! (Microsoft Learn, "Azure Functions custom handlers"). Five functions:
//! - `function-timer`: every Wednesday (the schedule is the host's; see [`schedule`]), reconcile
//!   every configured vault;
//! - `function-http` ([`on_demand`]): `POST /api/sync[?vault=…][&dryRun=true]` on demand,
//!   `GET /api/status` (with the grants recorded);
//! - `function-eventgrid` ([`events`]): a `Microsoft.Resources.ResourceWriteSuccess` for a
//!   managed vault reconciles that vault, which heals a firewall someone edited by hand. One
//!   event or a batch of up to [`invocation::MAX_EVENTS_PER_INVOCATION`], as objects or JSON
//!   text;
//! - `function-grant` ([`grants`]): just-in-time grants, `POST /api/grant` and
//!   `DELETE /api/grant/<id>` (or `?vault=…&ip=…`). `authLevel` `anonymous`: the caller is the
//!   principal App Service authentication (Microsoft Entra ID) forwards, believed only when
//!   `WEBSITE_AUTH_ENABLED` says that authentication is on; otherwise 401;
//! - `function-sweep` ([`sweep`]): every five minutes, remove the rules of grants that ended.
//!
//! Handlers are thin: the common prologue ([`handle`]: a span with the invocation id, the
//! trigger's binding read from the body), a call to the [`Engine`], and the answer. What an
//! error means for the answer is decided once, by `run::policy`. The trigger never changes what
//! a reconcile decides. Logs are JSON lines on stdout carrying the invocation id; the host logs
//! every stderr line as an error (Azure/azure-functions-host, `WorkerProcess.cs`).

mod answer;
mod engine;
pub mod events;
pub mod grants;
pub mod invocation;
pub mod on_demand;
pub mod schedule;
pub mod sweep;
mod timer;

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::reconcile::ErrorKind;

pub use engine::{
    app_service_auth_enabled, AppState, Engine, NotConfigured, APP_SERVICE_AUTH_VARIABLE,
};

/// Invocation bodies larger than this are refused (413): the host's bodies are a few KB.
pub const MAX_INVOCATION_BYTES: usize = 1 << 20;

/// The router: `GET /` for readiness and one route per function.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(ready))
        .route("/function-timer", post(timer::timer))
        .route("/function-http", post(on_demand::http_trigger))
        .route("/function-eventgrid", post(events::event_grid))
        .route("/function-grant", post(grants::grant_trigger))
        .route("/function-sweep", post(sweep::sweep))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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
        if let Err(error) = warm.engine().await {
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

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(answer::error_body(
            ErrorKind::BadRequest,
            "the host invokes functions with POST; GET / is the readiness probe",
        )),
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(answer::error_body(
            ErrorKind::BadRequest,
            "no such function; expected POST /function-timer, /function-http, /function-eventgrid, /function-grant or /function-sweep",
        )),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
