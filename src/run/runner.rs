//! The runner: one per process, shared by every trigger. A run fetches the Service Tags once,
//! prepares them against the state, reconciles the targets, and records and reports what
//! happened (see the module documentation of `run` for the flow).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::error::RunError;
use super::message::{error_message, run_message};
use super::prepare::{prepare, Prepared};
use super::report::{RunReport, SourceSummary};
use super::request::RunRequest;
use super::status::{self, StatusReport};
use super::targets::{Resolver, Targets};
use crate::azure::arm::ArmClient;
use crate::azure::auth::{self, IdentityEnv};
use crate::azure::index::{self, FirewallIndex};
use crate::azure::ResourceId;
use crate::config::{Config, Observe, StateSpec, TargetSource, VaultTarget};
use crate::core::desired;
use crate::core::kind::Kind;
use crate::core::service_tags::ServiceTags;
use crate::notify::Notifier;
use crate::reconcile::{Outcome, ReconcileError, Reconciler, RunContext, VaultReport};
use crate::source::{Fetched, Fetcher};
use crate::state::blob::BlobStore;
use crate::state::dir::DirStore;
use crate::state::{self, RunRecord, SourceState, State};

/// Runs reconciles with one configuration; built once per process.
pub struct Runner {
    config: Config,
    arm: ArmClient,
    reconciler: Reconciler,
    state: Option<State>,
    notifier: Option<Notifier>,
    /// The credential in use, for logs.
    pub credential: String,
    /// What time it is (the system clock, but in tests).
    clock: Clock,
}

/// Where a runner reads the time: grants expire by it, and runs record it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

impl Runner {
    /// Builds the credential and the ARM client.
    ///
    /// # Errors
    /// [`RunError::Credential`] or [`RunError::Endpoint`].
    pub fn new(config: Config, identity: &IdentityEnv) -> Result<Runner, RunError> {
        let (credential, chosen) =
            auth::credential(config.credential, identity).map_err(RunError::Credential)?;
        Self::with_credential(config, credential, chosen.to_string())
    }

    /// Builds the ARM client on a given credential (`description` is for logs).
    ///
    /// # Errors
    /// [`RunError::Endpoint`].
    pub fn with_credential(
        config: Config,
        credential: Arc<dyn TokenCredential>,
        description: String,
    ) -> Result<Runner, RunError> {
        let arm = ArmClient::new(
            config.endpoints.arm.clone(),
            credential.clone(),
            config.endpoints.arm_scope.clone(),
            config.http.clone(),
        )?
        .with_write_budget(config.write_budget)
        .with_read_budget(config.read_budget)
        .with_max_in_flight(config.max_in_flight);
        let state = match &config.state {
            None => None,
            Some(spec) => Some(open_state(spec, credential, &config)?),
        };
        let notifier = config
            .notify_url
            .clone()
            .map(|url| Notifier::new(url, &config.http))
            .transpose()?;
        info!(credential = %description, arm = %config.endpoints.arm, vaults = config.targets.len(), source = %config.source, state = %config.state.as_ref().map_or_else(|| "none".to_owned(), ToString::to_string), notify = notifier.as_ref().map_or("none", Notifier::host), "configured");
        Ok(Runner {
            reconciler: Reconciler::new(arm.clone()),
            arm,
            state,
            notifier,
            credential: description,
            config,
            clock: Arc::new(Utc::now),
        })
    }

    /// Reads the time from `clock` instead of the system clock (tests of grant expiry move it
    /// instead of waiting).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The time now, by the runner's clock.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    pub(super) fn reconciler(&self) -> &Reconciler {
        &self.reconciler
    }

    /// Signs in once before a run's vaults: a credential that cannot fails every vault alike.
    pub(super) async fn sign_in(&self) -> Result<(), RunError> {
        self.arm.check_token().await.map_err(RunError::SignIn)
    }

    /// Sends `message` to the notification webhook, when one is configured.
    pub(super) async fn notify(&self, message: String) {
        if let Some(notifier) = &self.notifier {
            match notifier.send(&message).await {
                Ok(()) => info!(host = notifier.host(), "notified"),
                Err(error) => warn!(%error, "the notification failed; the run is as reported"),
            }
        }
    }

    /// Uses `state` instead of the configured one (to embed tagfence, or to test it over a
    /// store with injected faults).
    #[must_use]
    pub fn with_state(mut self, state: State) -> Self {
        self.state = Some(state);
        self
    }

    /// The state, when configured.
    pub fn state(&self) -> Option<&State> {
        self.state.as_ref()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Fetches the Service Tags once and reconciles the requested vaults; records the run
    /// when state is configured (also when it fails).
    ///
    /// # Errors
    /// When nothing can be reconciled at all (no vaults, unknown vault, no valid Service
    /// Tags, an older document, unusable state). Resource failures are in the report.
    pub async fn run(&self, request: &RunRequest) -> Result<RunReport, RunError> {
        let started = Instant::now();
        let now = self.now();
        let run_id = state::new_run_id(now);
        let span = tracing::info_span!("run", run_id = %run_id, trigger = request.trigger);
        let result = tracing::Instrument::instrument(
            self.run_recorded(request, now, &run_id, started),
            span,
        )
        .await;
        // A write event about a vault tagfence does not manage is no run worth a record.
        let not_ours = matches!(result, Err(RunError::NotManaged { .. }));
        if let (Some(state), false) = (&self.state, not_ours) {
            let record = match &result {
                Ok(report) => report.record(now),
                Err(err) => RunRecord {
                    format_version: state::STATE_FORMAT_VERSION,
                    run_id: run_id.clone(),
                    trigger: request.trigger.to_owned(),
                    started_at: state::stored_time(now),
                    finished_at: state::stored_time(Utc::now()),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                    dry_run: request.dry_run,
                    cloud: Some(self.config.cloud),
                    change_number: None,
                    origin: None,
                    tag_change_numbers: BTreeMap::new(),
                    vaults: Vec::new(),
                    warnings: Vec::new(),
                    error: Some(err.to_string()),
                    grants: Vec::new(),
                },
            };
            match state.write_run(&record).await {
                Ok(key) => info!(record = %key, "run recorded"),
                Err(err) => warn!(error = %err, "recording the run failed"),
            }
        }
        if let Some(notifier) = &self.notifier {
            let message = match &result {
                Ok(report) => run_message(report),
                Err(RunError::NotManaged { .. }) => None,
                Err(err) => Some(error_message(request.trigger, &err.to_string())),
            };
            if let Some(message) = message {
                match notifier.send(&message).await {
                    Ok(()) => info!(host = notifier.host(), "notified"),
                    Err(error) => warn!(%error, "the notification failed; the run is as reported"),
                }
            }
        }
        result
    }

    async fn run_recorded(
        &self,
        request: &RunRequest,
        now: DateTime<Utc>,
        run_id: &str,
        started: Instant,
    ) -> Result<RunReport, RunError> {
        let Targets {
            targets,
            invalid,
            indexed,
        } = self.resolve_targets(request).await?;
        let fetched = self.fetch().await?;
        check_selections(&fetched.tags, &targets)?;
        let prepared = match &self.state {
            Some(state) => prepare(&self.config, state, &fetched, targets, request, now).await?,
            None => Prepared {
                targets,
                next_source: None,
                warnings: vec!["no state configured (--state-dir or TAGFENCE_STATE_URL): tagfence cannot tell the rules it added from others, so it removes none".to_owned()],
            },
        };
        for warning in &prepared.warnings {
            warn!(%warning);
        }
        if !prepared.targets.is_empty() {
            // A credential that cannot sign in fails every vault alike: said once.
            self.arm.check_token().await.map_err(RunError::SignIn)?;
        }
        let index = self
            .observe_in_index(request, &prepared.targets, indexed)
            .await;
        let mut vaults = self
            .reconciler
            .reconcile_all(
                &prepared.targets,
                RunContext {
                    tags: Some(&fetched.tags),
                    grant: None,
                    state: self.state.as_ref(),
                    dry_run: request.dry_run,
                    run_id,
                    trigger: request.trigger,
                    now,
                    lock_wait: self.lock_wait(),
                    allow_older: self.config.allow_older,
                    index: index.as_ref(),
                    index_trusted_after_write: self.config.index_trusted_after_write,
                },
                self.config.concurrency,
            )
            .await;
        // Tagged vaults whose tag value is invalid: refused, nothing read or written.
        for (vault, reason) in invalid {
            warn!(vault = %vault.name, %reason, "discovered vault refused");
            vaults.push(VaultReport::new(
                vault,
                Outcome::from_error(ReconcileError::InvalidTarget { reason }),
            ));
        }
        let mut warnings = prepared.warnings;
        if vaults.is_empty() {
            warnings.push(
                "no vaults to reconcile: none listed, and discovery found no tagged vault"
                    .to_owned(),
            );
        }
        if let Some(next) = prepared.next_source {
            self.record_source(next, &vaults, &mut warnings).await;
        }
        Ok(RunReport {
            run_id: run_id.to_owned(),
            trigger: request.trigger,
            source: SourceSummary {
                cloud: fetched.tags.cloud,
                change_number: fetched.tags.change_number,
                origin: fetched.origin,
                bytes: fetched.bytes,
                elapsed_ms: fetched.elapsed_ms,
            },
            dry_run: request.dry_run,
            vaults,
            warnings,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// The targets' firewalls as Resource Graph indexes them, when the run observes through it
    /// (`--observe graph`, not the Event Grid hook): what discovery's query already returned
    /// (`known`), and one query per group of subscriptions of the targets it lacks. A query that
    /// fails costs the run nothing but its speed: those vaults are then read through ARM.
    async fn observe_in_index(
        &self,
        request: &RunRequest,
        targets: &[VaultTarget],
        mut known: FirewallIndex,
    ) -> Option<FirewallIndex> {
        if self.config.observe != Observe::Graph || request.read_through_arm || targets.is_empty() {
            return None;
        }
        let mut subscriptions: Vec<String> = targets
            .iter()
            .filter(|t| known.get(&t.id).is_none())
            .map(|t| t.id.subscription.to_ascii_lowercase())
            .collect();
        if subscriptions.is_empty() {
            return Some(known);
        }
        subscriptions.sort_unstable();
        subscriptions.dedup();
        let mut kinds: Vec<Kind> = targets.iter().map(|t| t.id.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        // Bounded like one call: an index that pages on and on must not hold the run.
        let deadline = self.config.http.call_timeout;
        let query = index::firewalls(&self.arm, &subscriptions, &kinds);
        match tokio::time::timeout(deadline, query).await {
            Ok(Ok(found)) => {
                known.extend(found);
                Some(known)
            }
            Ok(Err(error)) => {
                warn!(%error, "reading the firewalls from Resource Graph failed; reading the vaults discovery did not index through ARM");
                Some(known)
            }
            Err(_) => {
                warn!(
                    seconds = deadline.as_secs(),
                    "reading the firewalls from Resource Graph took too long; reading the vaults discovery did not index through ARM"
                );
                Some(known)
            }
        }
    }

    /// Fetches and validates the Service Tags document.
    async fn fetch(&self) -> Result<Fetched, RunError> {
        let fetcher = Fetcher {
            cloud: self.config.cloud,
            min_tags: self.config.min_service_tags,
            arm: Some(&self.arm),
            http: self.config.http.clone(),
        };
        let fetched = fetcher.fetch_service_tags(&self.config.source).await?;
        info!(change_number = fetched.tags.change_number, tags = fetched.tags.len(), origin = %fetched.origin, elapsed_ms = fetched.elapsed_ms, "fetched service tags");
        Ok(fetched)
    }

    /// Remembers the document and tag versions applied, once some vault holds them (applied or
    /// in sync), so that a run where every vault failed does not start the grace window.
    async fn record_source(
        &self,
        next: SourceState,
        vaults: &[VaultReport],
        warnings: &mut Vec<String>,
    ) {
        let applied_somewhere = vaults
            .iter()
            .any(|v| matches!(v.outcome, Outcome::Applied | Outcome::InSync));
        let (Some(state), true) = (&self.state, applied_somewhere) else {
            return;
        };
        if let Err(err) = state.write_source(&next).await {
            let warning = format!("recording the document applied failed ({err}); the next run may treat tag changes as new");
            warn!(%warning);
            warnings.push(warning);
        }
    }

    fn resolver(&self) -> Resolver<'_> {
        Resolver {
            config: &self.config,
            arm: &self.arm,
        }
    }

    /// The listed targets a request names, without discovery (to check a request before any
    /// call is made).
    ///
    /// # Errors
    /// [`RunError::NoVaults`] or [`RunError::UnknownVault`].
    pub fn targets(&self, request: &RunRequest) -> Result<Vec<VaultTarget>, RunError> {
        self.resolver().targets(request)
    }

    /// Whether `vault` is one of the listed vaults.
    pub fn manages(&self, vault: &ResourceId) -> bool {
        self.resolver().manages(vault)
    }

    /// Whether vaults are also discovered by their tag.
    pub fn discovers(&self) -> bool {
        self.resolver().discovers()
    }

    /// The targets of a run: listed, discovered, or onboarded from a write event.
    ///
    /// # Errors
    /// As [`Resolver::resolve`].
    pub async fn resolve_targets(&self, request: &RunRequest) -> Result<Targets, RunError> {
        self.resolver().resolve(request).await
    }

    /// What is remembered of the configured (and discovered) vaults and the document last
    /// applied.
    ///
    /// # Errors
    /// As [`status::status`]; [`RunError::Discovery`] when discovered vaults cannot be listed.
    pub async fn status(&self) -> Result<StatusReport, RunError> {
        let ids: Vec<ResourceId> = if self.discovers() {
            let found = self.resolve_targets(&RunRequest::default()).await?;
            found
                .targets
                .into_iter()
                .map(|t| t.id)
                .chain(found.invalid.into_iter().map(|(id, _)| id))
                .collect()
        } else {
            self.config.targets.iter().map(|t| t.id.clone()).collect()
        };
        status::status(self.state.as_ref(), self.config.cloud, ids).await
    }

    /// How long to wait for another instance's lock on a vault: long enough for its
    /// reconcile (four calls: read, read again, write, verify) to finish.
    pub(super) fn lock_wait(&self) -> Duration {
        self.config.http.call_timeout * 4 + Duration::from_secs(30)
    }
}

/// Opens the configured state store.
fn open_state(
    spec: &StateSpec,
    credential: Arc<dyn TokenCredential>,
    config: &Config,
) -> Result<State, RunError> {
    let setup = |detail: String| RunError::StateSetup {
        spec: spec.to_string(),
        detail,
    };
    match spec {
        StateSpec::Dir(dir) => Ok(State::new(Arc::new(DirStore::new(dir)))),
        StateSpec::Blob {
            container_url,
            ca_file,
        } => {
            let ca = ca_file
                .as_ref()
                .map(|path| {
                    std::fs::read(path)
                        .map_err(|e| setup(format!("reading the CA file {}: {e}", path.display())))
                })
                .transpose()?;
            let store = BlobStore::new(
                container_url.clone(),
                credential,
                &config.http,
                ca.as_deref(),
            )
            .map_err(|e| setup(e.to_string()))?;
            Ok(State::new(Arc::new(store)))
        }
    }
}

/// Refuses the run when a listed vault selects a tag the document does not hold, naming each
/// unknown tag once with the vaults that select it. Discovered vaults are left to their own
/// plans: one vault's tag value must not stop the others.
fn check_selections(doc: &ServiceTags, targets: &[VaultTarget]) -> Result<(), RunError> {
    let mut problems: Vec<(String, Vec<String>)> = Vec::new();
    for target in targets {
        if !matches!(target.source, TargetSource::Listed) {
            continue;
        }
        for unknown in desired::unknown_tags(doc, &target.selection, &target.limits) {
            let text = unknown.to_string();
            match problems.iter_mut().find(|(known, _)| *known == text) {
                Some((_, vaults)) => vaults.push(target.id.name.clone()),
                None => problems.push((text, vec![target.id.name.clone()])),
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(RunError::UnknownTags {
        change_number: doc.change_number,
        problems: problems
            .into_iter()
            .map(|(text, vaults)| format!("{text} (selected by {})", vaults.join(", ")))
            .collect(),
    })
}
