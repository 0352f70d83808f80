//! One run: fetch the Service Tags once, check them against what was applied before, reconcile
//! every (or some) configured vault, record what happened. Shared by `tagfence apply` and the
//! Functions triggers of `tagfence serve`; the trigger only says which vaults and whether to
//! write, never why.
//!
//! # Expected flow
//! 1. fetch and validate the document (the source module);
//! 2. with state: refuse a document older than the last one applied (unless allowed), archive
//!    it, note which selected tags changed since the last run, and load the previous versions of
//!    those still inside the grace window;
//! 3. reconcile the vaults (the reconcile module);
//! 4. with state: remember the document and tag versions applied, and write the run record.
//!
//! A run that fails before step 3 has written nothing to any vault.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::azure::arm::{ArmClient, GraphScope};
use crate::azure::auth::{self, IdentityEnv};
use crate::azure::VaultId;
use crate::config::{Config, Discovery, StateSpec, VaultTarget};
use crate::core::desired::GraceTag;
use crate::core::render::{self, PLAN_FORMAT_VERSION};
use crate::core::service_tags::{Cloud, ServiceTags};
use crate::notify::{self, Notifier};
use crate::reconcile::{Outcome, Reconciler, RunContext, VaultReport};
use crate::source::{Fetched, Fetcher, SourceError};
use crate::state::blob::BlobStore;
use crate::state::dir::DirStore;
use crate::state::{
    self, PreviousVersion, RunRecord, SourceState, State, StateError, TagHistory, VaultRecord,
    VaultState,
};

/// Why a run could not start or fetch its input. Per-vault failures are not errors; they are
/// outcomes in the report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Credential(String),
    #[error("the ARM endpoint: {0}")]
    Endpoint(#[from] crate::azure::EndpointError),
    #[error("fetching service tags: {0}")]
    Source(#[from] SourceError),
    #[error("no vaults configured (give --vault / TAGFENCE_VAULTS or a configuration file)")]
    NoVaults,
    #[error("unknown vault '{0}': not one of the managed vaults (listed or discovered)")]
    UnknownVault(String),
    #[error("vault {vault} is not managed: {reason}")]
    NotManaged { vault: String, reason: String },
    #[error("discovering vaults: {0}")]
    Discovery(String),
    #[error("setting up the state in {spec}: {detail}")]
    StateSetup { spec: String, detail: String },
    #[error("reading or writing the state: {0}")]
    State(#[from] StateError),
    #[error("the service tags from {origin} have change number {found}, older than {applied}, the last one applied to the {cloud} cloud; refusing to go back (a stale mirror or cache?). Rerun with --allow-older (TAGFENCE_ALLOW_OLDER) if this is intended")]
    Older {
        origin: String,
        cloud: Cloud,
        found: u64,
        applied: u64,
    },
}

/// Which vaults to reconcile, whether to write, and why.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Only these vaults (by id or name); `None` for all configured.
    pub only: Option<Vec<String>>,
    pub dry_run: bool,
    /// What started the run (`timer`, `http`, `eventgrid`, `cli`), for the records.
    pub trigger: &'static str,
}

impl Default for RunRequest {
    fn default() -> Self {
        RunRequest {
            only: None,
            dry_run: false,
            trigger: "cli",
        }
    }
}

/// Where the run's Service Tags came from.
#[derive(Debug, Clone, Serialize)]
pub struct SourceSummary {
    pub cloud: Cloud,
    pub change_number: u64,
    pub origin: String,
    pub bytes: usize,
    pub elapsed_ms: u64,
}

/// The report of one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub trigger: &'static str,
    pub source: SourceSummary,
    pub dry_run: bool,
    pub vaults: Vec<VaultReport>,
    /// Things about the whole run a person should know (no state, grace ranges not found, …).
    pub warnings: Vec<String>,
    pub elapsed_ms: u64,
}

/// Runs reconciles with one configuration; built once per process.
pub struct Runner {
    config: Config,
    arm: ArmClient,
    reconciler: Reconciler,
    state: Option<State>,
    notifier: Option<Notifier>,
    /// The credential in use, for logs.
    pub credential: String,
}

/// The vaults of a run.
#[derive(Debug, Clone)]
pub struct Targets {
    pub targets: Vec<VaultTarget>,
    /// Discovered vaults whose tag value is invalid, with the reason: reported as refused.
    pub invalid: Vec<(VaultId, String)>,
}

/// What a run learnt from the state before reconciling.
struct Prepared {
    /// The targets, each with the grace ranges of its tags.
    targets: Vec<VaultTarget>,
    /// The source state to write after the run, when it should be written.
    next_source: Option<SourceState>,
    warnings: Vec<String>,
}

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
        )?;
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
        })
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

    /// The listed targets a request names, without discovery (to check a request before any
    /// call is made).
    ///
    /// # Errors
    /// [`RunError::NoVaults`] or [`RunError::UnknownVault`].
    pub fn targets(&self, request: &RunRequest) -> Result<Vec<VaultTarget>, RunError> {
        if self.config.targets.is_empty() {
            return Err(RunError::NoVaults);
        }
        match &request.only {
            None => Ok(self.config.targets.clone()),
            Some(names) => names
                .iter()
                .map(|name| {
                    self.config
                        .find_target(name)
                        .cloned()
                        .ok_or_else(|| RunError::UnknownVault(name.clone()))
                })
                .collect(),
        }
    }

    /// Whether `vault` is one of the listed vaults.
    pub fn manages(&self, vault: &VaultId) -> bool {
        self.config.targets.iter().any(|t| t.id.same_as(vault))
    }

    /// Whether vaults are also discovered by their tag.
    pub fn discovers(&self) -> bool {
        self.config.discovery.is_some()
    }

    /// The targets of a run: the listed vaults and, with discovery, the tagged ones (Resource
    /// Graph); a vault named by id that Resource Graph does not know yet (it lags) is read
    /// through ARM and taken when it carries the tag and lies in a discovery scope.
    ///
    /// # Errors
    /// [`RunError::NoVaults`], [`RunError::UnknownVault`], [`RunError::NotManaged`], or
    /// [`RunError::Discovery`] when Resource Graph or ARM cannot be asked.
    pub async fn resolve_targets(&self, request: &RunRequest) -> Result<Targets, RunError> {
        let Some(discovery) = &self.config.discovery else {
            return Ok(Targets {
                targets: self.targets(request)?,
                invalid: Vec::new(),
            });
        };
        let listed = &self.config.targets;
        let mut all = Targets {
            targets: listed.clone(),
            invalid: Vec::new(),
        };
        let all_listed = request.only.as_ref().is_some_and(|names| {
            names
                .iter()
                .all(|name| self.config.find_target(name).is_some())
        });
        if !all_listed {
            for (id, value) in self.discover(discovery).await? {
                if listed.iter().any(|t| t.id.same_as(&id)) {
                    continue;
                }
                match self.config.discovered_target(id.clone(), &value) {
                    Ok(target) => all.targets.push(target),
                    Err(err) => all.invalid.push((id, err.to_string())),
                }
            }
        }
        let Some(names) = &request.only else {
            return Ok(all);
        };
        let mut chosen = Targets {
            targets: Vec::new(),
            invalid: Vec::new(),
        };
        for name in names {
            let by_id = name.parse::<VaultId>().ok();
            let matches = |id: &VaultId| match &by_id {
                Some(wanted) => id.same_as(wanted),
                None => id.name.eq_ignore_ascii_case(name.trim()),
            };
            if let Some(target) = all.targets.iter().find(|t| matches(&t.id)) {
                chosen.targets.push(target.clone());
            } else if let Some(invalid) = all.invalid.iter().find(|(id, _)| matches(id)) {
                chosen.invalid.push(invalid.clone());
            } else if let Some(id) = by_id {
                match self.onboard(discovery, id).await? {
                    Ok(target) => chosen.targets.push(target),
                    Err(invalid) => chosen.invalid.push(invalid),
                }
            } else {
                return Err(RunError::UnknownVault(name.clone()));
            }
        }
        Ok(chosen)
    }

    /// Every vault carrying the discovery tag in the discovery scopes, with the tag's value.
    async fn discover(&self, discovery: &Discovery) -> Result<Vec<(VaultId, String)>, RunError> {
        let tag = &discovery.tag;
        let query = format!(
            "resources | where type =~ 'microsoft.keyvault/vaults' | where isnotempty(tags['{tag}']) | project id, name, subscriptionId, value = tostring(tags['{tag}'])"
        );
        let mut scopes = Vec::new();
        if !discovery.subscriptions.is_empty() {
            scopes.push(GraphScope::Subscriptions(discovery.subscriptions.clone()));
        }
        if !discovery.management_groups.is_empty() {
            scopes.push(GraphScope::ManagementGroups(
                discovery.management_groups.clone(),
            ));
        }
        let mut found: Vec<(VaultId, String)> = Vec::new();
        for scope in &scopes {
            let rows = self
                .arm
                .resource_graph(scope, &query)
                .await
                .map_err(|err| RunError::Discovery(err.to_string()))?;
            for row in rows {
                let id = row.get("id").and_then(Value::as_str).unwrap_or_default();
                let Ok(vault) = id.parse::<VaultId>() else {
                    warn!(
                        id,
                        "Resource Graph returned a row that is not a vault id; ignored"
                    );
                    continue;
                };
                if found.iter().any(|(known, _)| known.same_as(&vault)) {
                    continue;
                }
                let value = row
                    .get("value")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                found.push((vault, value));
            }
        }
        info!(vaults = found.len(), tag = %tag, "discovered tagged vaults");
        Ok(found)
    }

    /// A vault named by id that discovery has not found (yet): taken when it carries the tag
    /// (read through ARM, never from the lagging index) and lies in a discovery scope.
    /// `Ok(Err(..))` is a vault that is tagged but whose tag value is invalid.
    async fn onboard(
        &self,
        discovery: &Discovery,
        id: VaultId,
    ) -> Result<Result<VaultTarget, (VaultId, String)>, RunError> {
        let not_managed = |reason: String| RunError::NotManaged {
            vault: id.to_string(),
            reason,
        };
        let mut in_scope = discovery
            .subscriptions
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&id.subscription));
        if !in_scope && !discovery.management_groups.is_empty() {
            // Only whether the vault exists under the groups: that part of the index does not
            // lag behind a tag change.
            let query = format!(
                "resources | where id =~ '{}' | project id",
                id.to_string().replace('\'', "")
            );
            let scope = GraphScope::ManagementGroups(discovery.management_groups.clone());
            in_scope = !self
                .arm
                .resource_graph(&scope, &query)
                .await
                .map_err(|err| RunError::Discovery(err.to_string()))?
                .is_empty();
        }
        if !in_scope {
            return Err(not_managed(
                "it is neither listed nor in a discovery scope".to_owned(),
            ));
        }
        let vault = self
            .arm
            .get_vault(&id)
            .await
            .map_err(|err| RunError::Discovery(err.to_string()))?;
        let Some(value) = vault.tag(&discovery.tag) else {
            return Err(not_managed(format!(
                "it is neither listed nor tagged '{}'",
                discovery.tag
            )));
        };
        info!(vault = %id.name, value, "onboarding a newly tagged vault");
        Ok(self
            .config
            .discovered_target(id.clone(), value)
            .map_err(|err| (id, err.to_string())))
    }

    /// Fetches the Service Tags once and reconciles the requested vaults; records the run
    /// when state is configured (also when it fails).
    ///
    /// # Errors
    /// When nothing can be reconciled at all (no vaults, unknown vault, no valid Service
    /// Tags, an older document, unusable state). Vault failures are in the report.
    pub async fn run(&self, request: &RunRequest) -> Result<RunReport, RunError> {
        let started = Instant::now();
        let now = Utc::now();
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
                    started_at: state::timestamp(now),
                    finished_at: state::timestamp(Utc::now()),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                    dry_run: request.dry_run,
                    cloud: Some(self.config.cloud),
                    change_number: None,
                    origin: None,
                    tag_change_numbers: BTreeMap::new(),
                    vaults: Vec::new(),
                    warnings: Vec::new(),
                    error: Some(err.to_string()),
                },
            };
            match state.write_run(&record).await {
                Ok(key) => info!(record = %key, "run recorded"),
                Err(err) => warn!(error = %err, "recording the run failed"),
            }
        }
        if let Some(notifier) = &self.notifier {
            let message = match &result {
                Ok(report) => notify::run_message(report),
                Err(RunError::NotManaged { .. }) => None,
                Err(err) => Some(notify::error_message(request.trigger, &err.to_string())),
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
        let Targets { targets, invalid } = self.resolve_targets(request).await?;
        let fetcher = Fetcher {
            cloud: self.config.cloud,
            min_tags: self.config.min_service_tags,
            arm: Some(&self.arm),
            http: self.config.http.clone(),
        };
        let fetched = fetcher.fetch_service_tags(&self.config.source).await?;
        info!(change_number = fetched.tags.change_number, tags = fetched.tags.len(), origin = %fetched.origin, elapsed_ms = fetched.elapsed_ms, "fetched service tags");
        let prepared = match &self.state {
            Some(state) => self.prepare(state, &fetched, targets, request, now).await?,
            None => Prepared {
                targets,
                next_source: None,
                warnings: vec!["no state configured (--state-dir or TAGFENCE_STATE_URL): tagfence cannot tell the rules it added from others, so it removes none".to_owned()],
            },
        };
        for warning in &prepared.warnings {
            warn!(%warning);
        }
        let mut vaults = self
            .reconciler
            .reconcile_all(
                &prepared.targets,
                RunContext {
                    tags: &fetched.tags,
                    state: self.state.as_ref(),
                    dry_run: request.dry_run,
                    run_id,
                    trigger: request.trigger,
                    now,
                    lock_wait: self.lock_wait(),
                },
                self.config.concurrency,
            )
            .await;
        // Tagged vaults whose tag value is invalid: refused, nothing read or written.
        for (vault, reason) in invalid {
            warn!(vault = %vault.name, %reason, "discovered vault refused");
            vaults.push(VaultReport {
                vault,
                outcome: Outcome::Refused { reason },
                plan: None,
                warnings: Vec::new(),
                wrote: false,
                ownership_known: false,
                elapsed_ms: 0,
            });
        }
        let mut warnings = prepared.warnings;
        if vaults.is_empty() {
            warnings.push(
                "no vaults to reconcile: none listed, and discovery found no tagged vault"
                    .to_owned(),
            );
        }
        let applied_somewhere = vaults
            .iter()
            .any(|v| matches!(v.outcome, Outcome::Applied | Outcome::InSync));
        if let (Some(state), Some(next), true) =
            (&self.state, prepared.next_source, applied_somewhere)
        {
            if let Err(err) = state.write_source(&next).await {
                let warning = format!("recording the document applied failed ({err}); the next run may treat tag changes as new");
                warn!(%warning);
                warnings.push(warning);
            }
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

    /// How long to wait for another instance's lock on a vault: long enough for its
    /// reconcile (three calls) to finish.
    fn lock_wait(&self) -> Duration {
        self.config.http.call_timeout * 3 + Duration::from_secs(30)
    }

    /// Freshness, archive, tag history and grace ranges: everything the state says about the
    /// document before any vault is touched.
    async fn prepare(
        &self,
        state: &State,
        fetched: &Fetched,
        targets: Vec<VaultTarget>,
        request: &RunRequest,
        now: DateTime<Utc>,
    ) -> Result<Prepared, RunError> {
        let doc = &fetched.tags;
        let last = state.read_source(doc.cloud).await?;
        let mut warnings = Vec::new();
        let older = last
            .as_ref()
            .is_some_and(|last| doc.change_number < last.change_number);
        if let (true, Some(last)) = (older, &last) {
            if !self.config.allow_older {
                return Err(RunError::Older {
                    origin: fetched.origin.clone(),
                    cloud: doc.cloud,
                    found: doc.change_number,
                    applied: last.change_number,
                });
            }
            warnings.push(format!(
                "using change number {}, older than {} applied before (--allow-older); the grace window is off for this run",
                doc.change_number, last.change_number
            ));
        }

        // Archive before use, so that the grace window can find this version later.
        if !request.dry_run {
            let raw = if fetched.raw.is_empty() {
                doc.to_download_json()
            } else {
                fetched.raw.clone()
            };
            if state
                .archive_snapshot(doc.cloud, doc.change_number, &raw)
                .await?
            {
                info!(
                    change_number = doc.change_number,
                    "archived the service tags"
                );
            }
        }

        let selected = selected_names(doc, &targets);
        let history = next_history(last.as_ref(), doc, &selected, now);
        for (name, tag) in &history {
            let moved = last
                .as_ref()
                .and_then(|l| l.tags.get(name))
                .is_some_and(|before| before.change_number != tag.change_number);
            if moved {
                info!(tag = %name, change_number = tag.change_number, "selected tag changed since the last run");
            }
        }
        let grace = if self.config.grace_days == 0 || older {
            Vec::new()
        } else {
            self.grace_tags(state, &history, &selected, now, &mut warnings)
                .await
        };
        let targets = targets
            .into_iter()
            .map(|mut target| {
                target.selection.grace = grace
                    .iter()
                    .filter(|g| {
                        target.selection.tags.iter().any(|t| {
                            doc.find(t.trim())
                                .is_some_and(|tag| tag.name.eq_ignore_ascii_case(&g.tag))
                        })
                    })
                    .cloned()
                    .collect();
                target
            })
            .collect();
        let next_source = (!request.dry_run && !older).then(|| SourceState {
            format_version: state::STATE_FORMAT_VERSION,
            cloud: doc.cloud,
            change_number: doc.change_number,
            applied_at: state::timestamp(now),
            tags: history,
        });
        Ok(Prepared {
            targets,
            next_source,
            warnings,
        })
    }

    /// The previous versions of the selected tags that changed less than the grace window
    /// ago, read from the archived documents that hold them.
    async fn grace_tags(
        &self,
        state: &State,
        history: &BTreeMap<String, TagHistory>,
        selected: &BTreeSet<String>,
        now: DateTime<Utc>,
        warnings: &mut Vec<String>,
    ) -> Vec<GraceTag> {
        let window = chrono::Duration::days(i64::from(self.config.grace_days));
        let mut wanted: BTreeMap<u64, Vec<(&String, &PreviousVersion)>> = BTreeMap::new();
        for (name, tag) in history.iter().filter(|(name, _)| selected.contains(*name)) {
            let (Some(previous), Some(since)) = (&tag.previous, state::parse_timestamp(&tag.since))
            else {
                continue;
            };
            if now - since < window {
                wanted
                    .entry(previous.document)
                    .or_default()
                    .push((name, previous));
            }
        }
        let mut grace = Vec::new();
        let cloud = self.config.cloud;
        for (document, tags) in wanted {
            let names: Vec<String> = tags.iter().map(|(name, _)| (*name).clone()).collect();
            let missing = |why: String| {
                format!(
                    "grace window: the previous version of {} is not available ({why}); its retired ranges are not kept",
                    names.join(", ")
                )
            };
            let bytes = match state.read_snapshot(cloud, document).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    warnings.push(missing(format!(
                        "document {document} is not in the archive"
                    )));
                    continue;
                }
                Err(err) => {
                    warnings.push(missing(err.to_string()));
                    continue;
                }
            };
            let old = match ServiceTags::parse_only(&bytes, &names) {
                Ok(old) => old,
                Err(err) => {
                    warnings.push(missing(format!("archived document {document}: {err}")));
                    continue;
                }
            };
            for (name, previous) in tags {
                match old.find(name) {
                    Some(tag) if tag.change_number == previous.change_number => {
                        info!(tag = %name, previous_change_number = previous.change_number, prefixes = tag.ipv4.len(), "keeping the previous ranges in the grace window");
                        grace.push(GraceTag {
                            tag: tag.name.to_owned(),
                            change_number: tag.change_number,
                            prefixes: tag.ipv4.to_vec(),
                        });
                    }
                    _ => warnings.push(format!(
                        "grace window: archived document {document} does not hold version {} of {name}; its retired ranges are not kept",
                        previous.change_number
                    )),
                }
            }
        }
        grace
    }

    /// What is remembered of the configured vaults and the document last applied.
    ///
    /// # Errors
    /// [`RunError::StateSetup`] when no state is configured; [`RunError::State`] when it
    /// cannot be read; [`RunError::Discovery`] when discovered vaults cannot be listed.
    pub async fn status(&self) -> Result<StatusReport, RunError> {
        let Some(state) = &self.state else {
            return Err(RunError::StateSetup {
                spec: "this configuration".to_owned(),
                detail: "no state configured: give --state-dir (TAGFENCE_STATE_DIR) or --state-url (TAGFENCE_STATE_URL)".to_owned(),
            });
        };
        let source = state.read_source(self.config.cloud).await?;
        let ids: Vec<VaultId> = if self.discovers() {
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
        let mut vaults = Vec::with_capacity(ids.len());
        for id in ids {
            let remembered = state.read_vault(&id).await?;
            vaults.push((id, remembered));
        }
        Ok(StatusReport {
            state: state.describe(),
            source,
            vaults,
        })
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

/// The selected tag names of all targets, as the document spells them (unknown names are left
/// to the per-vault plan to report).
fn selected_names(doc: &ServiceTags, targets: &[VaultTarget]) -> BTreeSet<String> {
    targets
        .iter()
        .flat_map(|t| t.selection.tags.iter())
        .filter_map(|name| doc.find(name.trim()).map(|tag| tag.name.to_owned()))
        .collect()
}

/// The tag history after seeing `doc`: a selected tag whose change number moved starts a new
/// entry that points at the version it replaced; entries of tags not selected now are kept
/// (another run may select them).
fn next_history(
    last: Option<&SourceState>,
    doc: &ServiceTags,
    selected: &BTreeSet<String>,
    now: DateTime<Utc>,
) -> BTreeMap<String, TagHistory> {
    let mut history = last.map(|l| l.tags.clone()).unwrap_or_default();
    for name in selected {
        let Some(tag) = doc.find(name) else { continue };
        let entry = match history.get(name) {
            Some(seen) if seen.change_number == tag.change_number => TagHistory {
                seen_in: doc.change_number.max(seen.seen_in),
                ..seen.clone()
            },
            Some(seen) => TagHistory {
                change_number: tag.change_number,
                since: state::timestamp(now),
                seen_in: doc.change_number,
                previous: Some(PreviousVersion {
                    change_number: seen.change_number,
                    document: seen.seen_in,
                }),
            },
            None => TagHistory {
                change_number: tag.change_number,
                since: state::timestamp(now),
                seen_in: doc.change_number,
                previous: None,
            },
        };
        history.insert(name.clone(), entry);
    }
    history
}

/// What `tagfence status` shows.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// Where the state lives.
    pub state: String,
    pub source: Option<SourceState>,
    pub vaults: Vec<(VaultId, Option<VaultState>)>,
}

impl StatusReport {
    /// For people: the document applied, then one block per vault.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "State: {}", self.state);
        match &self.source {
            None => {
                let _ = writeln!(out, "Service Tags: none applied yet");
            }
            Some(source) => {
                let _ = writeln!(
                    out,
                    "Service Tags: {} change number {} applied {}",
                    source.cloud, source.change_number, source.applied_at
                );
                for (name, tag) in &source.tags {
                    let previous = tag
                        .previous
                        .as_ref()
                        .map(|p| format!(", replaced change {}", p.change_number))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  {name}: change {} since {}{previous}",
                        tag.change_number, tag.since
                    );
                }
            }
        }
        for (vault, remembered) in &self.vaults {
            out.push('\n');
            let _ = writeln!(out, "== {}", vault.name);
            let Some(remembered) = remembered else {
                let _ = writeln!(out, "   never reconciled with this state");
                continue;
            };
            match &remembered.last_run {
                None => {
                    let _ = writeln!(out, "   last run: none recorded");
                }
                Some(run) => {
                    let detail = run
                        .detail
                        .as_ref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "   last run: {} at {} ({}, change number {}, +{} -{}){detail}",
                        run.status, run.at, run.trigger, run.change_number, run.added, run.removed
                    );
                }
            }
            match &remembered.applied {
                None => {
                    let _ = writeln!(out, "   last-applied set: none recorded (no rule on the vault is removed until one is)");
                }
                Some(applied) => {
                    let _ = writeln!(
                        out,
                        "   last-applied set: {} rules from change number {}, last confirmed on the vault at {}",
                        applied.desired.rules.len(),
                        applied.change_number,
                        applied.applied_at
                    );
                }
            }
            if !remembered.pending.is_empty() {
                let _ = writeln!(
                    out,
                    "   pending: {} rules from a write whose outcome was not recorded; the next run settles them",
                    remembered.pending.len()
                );
            }
        }
        out
    }

    /// For machines.
    pub fn to_json(&self) -> Value {
        json!({
            "format_version": PLAN_FORMAT_VERSION,
            "state": self.state,
            "source": self.source,
            "vaults": self.vaults.iter().map(|(vault, remembered)| json!({
                "vault": vault.to_string(),
                "name": vault.name,
                "last_run": remembered.as_ref().and_then(|r| r.last_run.as_ref()),
                "applied": remembered.as_ref().and_then(|r| r.applied.as_ref()).map(|a| json!({
                    "rules": a.desired.rules.len(),
                    "change_number": a.change_number,
                    "applied_at": a.applied_at,
                    "run_id": a.run_id,
                    "extra_addresses": a.desired.extra_addresses,
                })),
                "pending": remembered.as_ref().map_or(0, |r| r.pending.len()),
            })).collect::<Vec<_>>(),
        })
    }
}

impl RunReport {
    /// The run record for the state.
    pub fn record(&self, started_at: DateTime<Utc>) -> RunRecord {
        let mut tag_change_numbers = BTreeMap::new();
        for plan in self.vaults.iter().filter_map(|v| v.plan.as_ref()) {
            for tag in &plan.desired.tags {
                tag_change_numbers.insert(tag.name.clone(), tag.change_number);
            }
        }
        let strings = |nets: &[ipnet::Ipv4Net]| nets.iter().map(ToString::to_string).collect();
        RunRecord {
            format_version: state::STATE_FORMAT_VERSION,
            run_id: self.run_id.clone(),
            trigger: self.trigger.to_owned(),
            started_at: state::timestamp(started_at),
            finished_at: state::timestamp(Utc::now()),
            elapsed_ms: self.elapsed_ms,
            dry_run: self.dry_run,
            cloud: Some(self.source.cloud),
            change_number: Some(self.source.change_number),
            origin: Some(self.source.origin.clone()),
            tag_change_numbers,
            vaults: self
                .vaults
                .iter()
                .map(|v| {
                    let plan = v.plan.as_ref();
                    VaultRecord {
                        vault: v.vault.to_string(),
                        status: v.outcome.status().to_owned(),
                        detail: v.outcome.detail().map(str::to_owned),
                        wrote: v.wrote,
                        reused_plan: plan.is_some_and(|p| p.reused),
                        added: plan.map_or_else(Vec::new, |p| strings(&p.add)),
                        removed: plan.map_or_else(Vec::new, |p| strings(&p.remove)),
                        unchanged: plan.map_or(0, |p| p.unchanged),
                        unmanaged: plan.map_or_else(Vec::new, |p| strings(&p.unmanaged)),
                        extra_addresses: plan.map_or(0, |p| p.desired.extra_addresses),
                        grace_tags: plan.map_or_else(Vec::new, |p| {
                            p.desired
                                .grace
                                .iter()
                                .map(|g| format!("{} (change {})", g.name, g.change_number))
                                .collect()
                        }),
                        elapsed_ms: v.elapsed_ms,
                        warnings: v.warnings.clone(),
                    }
                })
                .collect(),
            warnings: self.warnings.clone(),
            error: None,
        }
    }

    /// Vaults refused or failed.
    pub fn failures(&self) -> usize {
        self.vaults
            .iter()
            .filter(|v| v.outcome.is_failure())
            .count()
    }

    fn count(&self, pick: fn(&Outcome) -> bool) -> usize {
        self.vaults.iter().filter(|v| pick(&v.outcome)).count()
    }

    /// One line: how many vaults ended how.
    pub fn summary(&self) -> String {
        let skipped = self.count(|o| matches!(o, Outcome::Skipped { .. }));
        format!(
            "{} {}: {} applied, {} would change (dry run), {} in sync, {} refused, {} failed{}; Service Tags {} change {} in {} ms",
            self.vaults.len(),
            if self.vaults.len() == 1 { "vault" } else { "vaults" },
            self.count(|o| matches!(o, Outcome::Applied)),
            self.count(|o| matches!(o, Outcome::WouldApply)),
            self.count(|o| matches!(o, Outcome::InSync)),
            self.count(|o| matches!(o, Outcome::Refused { .. })),
            self.count(|o| matches!(o, Outcome::Failed { .. })),
            if skipped > 0 {
                format!(", {skipped} skipped")
            } else {
                String::new()
            },
            self.source.cloud,
            self.source.change_number,
            self.elapsed_ms
        )
    }

    /// The report for people: each vault's plan when it changes, its outcome, one summary line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Service Tags {} change number {} from {}",
            self.source.cloud, self.source.change_number, self.source.origin
        );
        for vault in &self.vaults {
            out.push('\n');
            let name = &vault.vault.name;
            let status = match &vault.outcome {
                Outcome::InSync => "in sync. No changes.".to_owned(),
                Outcome::Applied => "applied and verified.".to_owned(),
                Outcome::WouldApply => "would change (dry run; nothing written).".to_owned(),
                Outcome::Refused { reason } => format!("refused, nothing written: {reason}"),
                Outcome::Skipped { reason } => format!("skipped, nothing written: {reason}"),
                Outcome::Failed { error } => format!("failed: {error}"),
            };
            let _ = writeln!(out, "== {name}: {status}");
            for warning in &vault.warnings {
                let _ = writeln!(out, "   warning: {warning}");
            }
            if let Some(plan) = vault.plan.as_ref().filter(|p| p.has_changes()) {
                out.push('\n');
                out.push_str(&render::plan_text(plan));
            }
        }
        out.push('\n');
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// The report for machines.
    pub fn to_json(&self) -> Value {
        json!({
            "format_version": PLAN_FORMAT_VERSION,
            "run_id": self.run_id,
            "trigger": self.trigger,
            "source": self.source,
            "dry_run": self.dry_run,
            "warnings": self.warnings,
            "elapsed_ms": self.elapsed_ms,
            "failures": self.failures(),
            "vaults": self.vaults.iter().map(vault_json).collect::<Vec<_>>(),
        })
    }
}

/// One vault in one line: `kv-prod: applied (+24 -0 =0 unmanaged 1)`, with the reason or error
/// of a vault that was refused, skipped or failed.
pub fn vault_line(report: &VaultReport) -> String {
    let changes = report.plan.as_ref().map_or(String::new(), |p| {
        format!(
            " (+{} -{} ={} unmanaged {})",
            p.add.len(),
            p.remove.len(),
            p.unchanged,
            p.unmanaged.len()
        )
    });
    let detail = report
        .outcome
        .detail()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    format!(
        "{}: {}{changes}{detail}",
        report.vault.name,
        report.outcome.status()
    )
}

/// One vault's report for machines.
pub fn vault_json(report: &VaultReport) -> Value {
    json!({
        "vault": report.vault.to_string(),
        "name": report.vault.name,
        "outcome": report.outcome,
        "wrote": report.wrote,
        "ownership_known": report.ownership_known,
        "elapsed_ms": report.elapsed_ms,
        "warnings": report.warnings,
        "plan": report.plan.as_ref().map(render::plan_json),
    })
}
