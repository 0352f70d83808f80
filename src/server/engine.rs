//! What the handler needs from a run ([`Engine`]), and the state every handler shares
//! ([`AppState`]): the configuration as read, the schedule, and the engine built once.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::schedule::Schedule;
use crate::azure::auth::IdentityEnv;
use crate::azure::VaultId;
use crate::config::{Config, ConfigErrors};
use crate::run::{RunError, RunReport, RunRequest, Runner};

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
    fn may_manage(&self, vault: &VaultId) -> bool;
    /// Each vault's last run, as `GET /api/status` shows it.
    async fn last_runs(&self) -> Value;
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

    fn may_manage(&self, vault: &VaultId) -> bool {
        self.manages(vault) || self.discovers()
    }

    async fn last_runs(&self) -> Value {
        if self.state().is_none() {
            return json!({"error": "no state configured: set AzureWebJobsStorage__blobServiceUri or TAGFENCE_STATE_URL"});
        }
        match self.status().await {
            Ok(status) => status.to_json(),
            Err(err) => json!({"error": err.to_string(), "kind": err.kind().as_str()}),
        }
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

type BuildEngine = Box<dyn Fn() -> Result<Arc<dyn Engine>, String> + Send + Sync>;

/// The handler's shared state. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
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
    /// [`Runner`] with the credential `identity` selects.
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
        Self::with_builder(config, schedule, build)
    }

    /// State over a given engine (to embed the handler, or to test it without Azure).
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
        }
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
