//! What the handler needs from a run ([`Engine`]), and the state every handler shares
//! ([`AppState`]): the configuration as read, the schedule, whether App Service authentication
//! is in front of the handler, and the engine built once.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::schedule::Schedule;
use crate::azure::auth::IdentityEnv;
use crate::azure::ResourceId;
use crate::config::{Config, ConfigErrors};
use crate::run::{
    grant_json, GrantReport, GrantRequest, RevokeRequest, RunError, RunReport, RunRequest, Runner,
    SweepReport,
};

/// What the server needs from a run: the one seam between the Functions protocol and the
/// engine, so that every route can be exercised without Azure.
#[async_trait]
pub trait Engine: Send + Sync {
    /// One run, as `request` says.
    async fn run(&self, request: &RunRequest) -> Result<RunReport, RunError>;
    /// Refuses a request naming vaults that are not managed, before anything is fetched.
    /// Discovered vaults are only known once Resource Graph answers, inside the run, so with
    /// discovery every name passes here.
    fn check(&self, request: &RunRequest) -> Result<(), RunError>;
    /// Whether a write to `vault` may concern tagfence: a managed vault, or any vault when
    /// discovery is on (it may have been tagged a moment ago).
    fn may_manage(&self, vault: &ResourceId) -> bool;
    /// Each vault's last run and the grants recorded (`"grants": [grant_json…]`), as
    /// `GET /api/status` shows them.
    async fn last_runs(&self) -> Value;
    /// Records a just-in-time grant and writes its rule. Whether the requester may grant on the
    /// vault is the engine's decision ([`RunError::GrantDenied`]); the server only
    /// authenticates.
    async fn grant(&self, request: &GrantRequest) -> Result<GrantReport, RunError>;
    /// Ends a grant and removes its rule (a grant unknown or already ended is a report with a
    /// note, not an error).
    async fn revoke(&self, request: &RevokeRequest) -> Result<GrantReport, RunError>;
    /// Removes the rules of every grant that ended.
    async fn sweep(&self, trigger: &'static str) -> Result<SweepReport, RunError>;
}

#[async_trait]
impl Engine for Runner {
    async fn run(&self, request: &RunRequest) -> Result<RunReport, RunError> {
        Runner::run(self, request).await
    }

    fn check(&self, request: &RunRequest) -> Result<(), RunError> {
        if self.discovers() {
            return Ok(());
        }
        self.targets(request).map(|_| ())
    }

    fn may_manage(&self, vault: &ResourceId) -> bool {
        self.manages(vault) || self.discovers()
    }

    async fn last_runs(&self) -> Value {
        if self.state().is_none() {
            return json!({"error": "no state configured: set AzureWebJobsStorage__blobServiceUri or TAGFENCE_STATE_URL"});
        }
        let mut last_runs = match self.status().await {
            Ok(status) => status.to_json(),
            Err(err) => json!({"error": err.to_string(), "kind": err.kind().as_str()}),
        };
        last_runs["grants"] = match self.grants().await {
            Ok(grants) => Value::Array(grants.iter().map(grant_json).collect()),
            Err(err) => json!({"error": err.to_string(), "kind": err.kind().as_str()}),
        };
        last_runs
    }

    async fn grant(&self, request: &GrantRequest) -> Result<GrantReport, RunError> {
        Runner::grant(self, request).await
    }

    async fn revoke(&self, request: &RevokeRequest) -> Result<GrantReport, RunError> {
        Runner::revoke(self, request).await
    }

    async fn sweep(&self, trigger: &'static str) -> Result<SweepReport, RunError> {
        Runner::sweep(self, trigger).await
    }
}

/// Why the handler cannot serve an invocation at all.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NotConfigured(pub String);

/// Why there is no configuration: every problem `config` found, each one line naming the
/// setting as the user wrote it. `GET /api/status` lists them; an invocation's error joins them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblems(pub Vec<String>);

impl From<String> for ConfigProblems {
    fn from(problem: String) -> Self {
        ConfigProblems(vec![problem])
    }
}

impl From<ConfigErrors> for ConfigProblems {
    fn from(problems: ConfigErrors) -> Self {
        ConfigProblems(problems.lines())
    }
}

impl std::fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

/// The variable App Service sets when its authentication (Easy Auth) runs in front of the app.
///
/// Microsoft Learn, "Environment variables and app settings in Azure App Service"
/// (<https://learn.microsoft.com/en-us/azure/app-service/reference-app-settings>, section
/// "Authentication & Authorization"): "`WEBSITE_AUTH_ENABLED`: Read-only. Injected into a
/// Windows or Linux app to indicate whether App Service authentication is enabled." A Microsoft
/// answer
/// (<https://learn.microsoft.com/en-us/answers/questions/812066/how-to-rotate-web-app-environment-variables>)
/// adds that it is `True` when the authentication module is loaded.
///
/// Why it matters: "Work with user identities in Azure App Service authentication"
/// (<https://learn.microsoft.com/en-us/azure/app-service/configure-authentication-user-identities>)
/// says external requests are not allowed to set the `X-MS-CLIENT-PRINCIPAL*` headers, so they
/// are present only if App Service set them. That holds only while App Service authentication
/// runs; without it the headers reach the handler as the client sent them, so `function-grant`
/// believes no principal unless this variable says `True`.
pub const APP_SERVICE_AUTH_VARIABLE: &str = "WEBSITE_AUTH_ENABLED";

/// Whether [`APP_SERVICE_AUTH_VARIABLE`] says App Service authentication is on: `True` (any
/// case, spaces around ignored). Anything else, or no variable, is off.
pub fn app_service_auth_enabled(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

type BuildEngine = Box<dyn Fn() -> Result<Arc<dyn Engine>, String> + Send + Sync>;

/// The handler's shared state. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    /// Whether App Service authentication is in front of the handler
    /// ([`APP_SERVICE_AUTH_VARIABLE`]), read once when the state is made.
    app_service_auth: bool,
}

struct Inner {
    config: Result<Config, ConfigProblems>,
    schedule: Result<Schedule, String>,
    build: BuildEngine,
    /// Built on first use (or by the warm-up task right after the port is bound), so that the
    /// readiness probe is answered before TLS roots and HTTP clients are set up.
    engine: OnceCell<Result<Arc<dyn Engine>, NotConfigured>>,
}

impl AppState {
    /// State for a configuration (or the reason there is none) and a schedule; the engine is a
    /// [`Runner`] with the credential `identity` selects. Whether App Service authentication is
    /// on is read here, once, from the process's [`APP_SERVICE_AUTH_VARIABLE`].
    pub fn new(
        config: Result<Config, impl Into<ConfigProblems>>,
        identity: IdentityEnv,
        schedule: Result<Schedule, String>,
    ) -> Self {
        let config = config.map_err(Into::into);
        let for_runner = config.clone();
        let build: BuildEngine = Box::new(move || {
            let config = for_runner
                .clone()
                .map_err(|problems| problems.to_string())?;
            Runner::new(config, &identity)
                .map(|runner| Arc::new(runner) as Arc<dyn Engine>)
                .map_err(|e| e.to_string())
        });
        let app_service_auth =
            app_service_auth_enabled(std::env::var(APP_SERVICE_AUTH_VARIABLE).ok().as_deref());
        Self::with_builder(config, schedule, build).with_app_service_auth(app_service_auth)
    }

    /// State over a given engine (to embed the handler, or to test it without Azure). App
    /// Service authentication is taken to be off (every grant request is refused) until
    /// [`AppState::with_app_service_auth`] says otherwise.
    pub fn with_engine(
        config: Result<Config, impl Into<ConfigProblems>>,
        schedule: Result<Schedule, String>,
        engine: Arc<dyn Engine>,
    ) -> Self {
        let config = config.map_err(Into::into);
        Self::with_builder(config, schedule, Box::new(move || Ok(engine.clone())))
    }

    fn with_builder(
        config: Result<Config, ConfigProblems>,
        schedule: Result<Schedule, String>,
        build: BuildEngine,
    ) -> Self {
        AppState {
            inner: Arc::new(Inner {
                config,
                schedule,
                build,
                engine: OnceCell::new(),
            }),
            app_service_auth: false,
        }
    }

    /// The same state, with App Service authentication on or off (as
    /// [`APP_SERVICE_AUTH_VARIABLE`] would say).
    #[must_use]
    pub fn with_app_service_auth(mut self, on: bool) -> Self {
        self.app_service_auth = on;
        self
    }

    /// Whether App Service authentication is in front of the handler, so that the principal
    /// headers it forwards can be believed.
    pub(crate) fn app_service_auth(&self) -> bool {
        self.app_service_auth
    }

    /// The engine, built on first use.
    pub(crate) async fn engine(&self) -> Result<Arc<dyn Engine>, NotConfigured> {
        self.inner
            .engine
            .get_or_init(|| async { (self.inner.build)().map_err(NotConfigured) })
            .await
            .clone()
    }

    /// The configuration as read, or why there is none.
    pub(crate) fn config(&self) -> &Result<Config, ConfigProblems> {
        &self.inner.config
    }

    /// The schedule of the timer function, or why it is invalid.
    pub(crate) fn schedule(&self) -> &Result<Schedule, String> {
        &self.inner.schedule
    }
}
