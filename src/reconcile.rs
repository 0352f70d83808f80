//! The only place that sequences a vault's reconcile: observe → plan → gate → act → verify.
//!
//! # Expected flow, per vault
//! 0. **lock**: take the vault's lock in the state store (a blob lease), so that no other
//!    instance or trigger works on it meanwhile; read what tagfence remembers of it.
//! 1. **observe**: when the run observed the firewalls through Resource Graph and the index
//!    may vouch for this vault, a vault the index shows in sync ends here (nothing read
//!    through ARM, nothing written); otherwise `GET` the vault; its firewall is read whole or
//!    its gaps are named. Every write is planned from an ARM read, never from the index.
//! 2. **plan**: desired rules × live rules × the rules tagfence owns (the core's `plan_vault`,
//!    which also runs the plan's guards: empty allow-list, too many removals, over the limit,
//!    a selected tag emptied or shrunk).
//! 3. **gate**: the body about to be sent passes `core::gate::check` against the read and the
//!    ownership record (whole read, nothing but `ipRules` changed, no person's rule dropped, a
//!    read that agrees with the state, the kind's limits). A dry run stops here.
//! 4. **act**: record the rules about to be added as pending, `GET` again (if the firewall
//!    moved meanwhile, plan and gate again from it, at most three times), pass the gate against
//!    that last read, confirm the lock is still held and the vault's record unchanged, then one
//!    `PATCH` carrying the whole `networkAcls`.
//! 5. **verify**: the whole firewall must be what was written: the `PATCH`'s answer (Key Vault
//!    answers with the vault as stored) or, when it does not show exactly that, a `GET`.
//! 6. **record**: the rules tagfence added become its own, with the outcome; a record never
//!    overwrites one another process wrote meanwhile.
//!
//! # Guarantees
//! - A vault in sync costs one `GET` and no write (none when Resource Graph vouches for it); a
//!   changed one `GET` + `GET` + `PATCH` (+ `GET` when the answer does not verify the write).
//! - Every `PATCH` passes the gate against the last read before it: the ARM client's only
//!   firewall write takes a `GatedWrite`, which only the gate makes.
//! - Nothing is written when the plan or the gate refuses or any step before the write fails,
//!   so a failed reconcile leaves the vault as it was; a write that ARM accepted leaves it at
//!   the new intended state. There is no third state: the write is a single PATCH.
//! - Vaults are independent: one failing never stops the others.
//! - Two reconciles of the same vault never overlap: a lock per vault within the process, and
//!   the state store's lock across instances, confirmed just before the write.
//! - tagfence removes only rules it added itself (or adopted on request). Without state
//!   nothing is removed. A crash after the `PATCH` but before the record is healed by the next
//!   run: the rules it added were recorded as pending first, and it finds the vault in sync.
//!
//! # Assumptions
//! Key Vault has no ETags, so a write cannot be made conditional. A person editing the firewall
//! while tagfence plans is caught by the re-read before the `PATCH` (and planned around); an
//! edit landing after the `PATCH` is caught by the verify step (reported as a failure, kept as
//! unmanaged by the next run). An edit landing inside the one round trip between the re-read
//! and the `PATCH` is overwritten: that window cannot be closed without ETags. Likewise a
//! process paused between its lock check and its `PATCH` can still write once it resumes (no
//! fencing token exists for Key Vault); docs/reliability.md gives the size of both windows.
//! Safe to cancel at any `.await`: the only effect on the vault is the PATCH, which is atomic,
//! and the state is only ever written whole.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use ipnet::Ipv4Net;
use serde::Serialize;
use tracing::{info, warn, Instrument};

use crate::azure::arm::{ArmClient, Resource, WriteSlot};
use crate::azure::index::FirewallIndex;
pub use crate::azure::index::INDEX_TRUSTED_AFTER_WRITE;
use crate::azure::pipeline::AzureError;
use crate::azure::ResourceId;
use crate::config::{TargetSource, VaultTarget};
use crate::core::desired::DesireError;
use crate::core::gate::{self, GateOptions, GateRefusal, GatedWrite, Ownership, Proposal};
use crate::core::live::LiveAcl;
use crate::core::plan::{self, GrantsInput, Plan, PlanError, PlanInput, Recorded, TagGuard};
use crate::core::service_tags::ServiceTags;
use crate::state::{self, AppliedState, GrantRecord, LastRun, Lock, State, VaultState};

mod error;
mod grants;

pub use error::{AzureStep, ErrorKind, ReconcileError, StateStep};
pub use grants::{GrantChange, GrantWhich, NewGrant};

/// One vault's reconcile, boxed, with its index in the targets.
type BoxedReconcile<'a> = Pin<Box<dyn Future<Output = (usize, VaultReport)> + Send + 'a>>;

/// What happened to one vault.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The vault already matched; nothing written.
    InSync,
    /// The plan was written and verified.
    Applied,
    /// Dry run: the plan has changes, nothing written.
    WouldApply,
    /// The plan's guards or the safety gate refused the write, or no plan could be made;
    /// nothing written. Distinct from a failure in reports, records, the status route and
    /// messages: the vault is known to be exactly as it was, and rerunning changes nothing
    /// until the reason is dealt with.
    /// Always carries an error of kind [`ErrorKind::Refused`]; see [`Outcome::from_error`].
    Refused(ReconcileError),
    /// A discovered vault whose tag changed or went since it was discovered (the index lags);
    /// nothing written, the next run uses what the tag says then.
    Skipped { reason: String },
    /// A call failed; the vault is as it was, or (after a successful write that could not be
    /// verified) at the new intended state.
    Failed(ReconcileError),
}

impl Outcome {
    /// Whether the run should count this vault as not done: refused or failed (`apply` exits
    /// 2, the HTTP route answers an error), though each keeps its own status.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Refused(_) | Outcome::Failed(_))
    }

    /// The outcome of a reconcile that stopped on `error`: refused or failed, by its kind.
    pub fn from_error(error: ReconcileError) -> Outcome {
        if error.is_refusal() {
            Outcome::Refused(error)
        } else {
            Outcome::Failed(error)
        }
    }

    /// The error a refused or failed reconcile stopped on.
    pub fn error(&self) -> Option<&ReconcileError> {
        match self {
            Outcome::Refused(error) | Outcome::Failed(error) => Some(error),
            _ => None,
        }
    }

    /// What a refused or failed reconcile means for the caller.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.error().map(ReconcileError::kind)
    }

    /// The outcome's name, as records, reports and logs spell it (the state's spelling, once).
    pub fn status(&self) -> &'static str {
        self.recorded().as_str()
    }

    /// The outcome as the state records it.
    pub fn recorded(&self) -> state::RecordedOutcome {
        match self {
            Outcome::InSync => state::RecordedOutcome::InSync,
            Outcome::Applied => state::RecordedOutcome::Applied,
            Outcome::WouldApply => state::RecordedOutcome::WouldApply,
            Outcome::Refused(_) => state::RecordedOutcome::Refused,
            Outcome::Skipped { .. } => state::RecordedOutcome::Skipped,
            Outcome::Failed(_) => state::RecordedOutcome::Failed,
        }
    }

    /// The reason or error, if any, as one line.
    pub fn detail(&self) -> Option<String> {
        match self {
            Outcome::Skipped { reason } => Some(reason.clone()),
            Outcome::Refused(error) | Outcome::Failed(error) => Some(error.to_string()),
            _ => None,
        }
    }
}

/// Reports and the HTTP route show an outcome as `{"status": …}` with its `reason` (refused,
/// skipped) or `error` (failed), and the error's `kind`.
impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("status", self.status())?;
        match self {
            Outcome::Skipped { reason } => map.serialize_entry("reason", reason)?,
            Outcome::Refused(error) => {
                map.serialize_entry("reason", &error.to_string())?;
                map.serialize_entry("kind", error.kind().as_str())?;
            }
            Outcome::Failed(error) => {
                map.serialize_entry("error", &error.to_string())?;
                map.serialize_entry("kind", error.kind().as_str())?;
            }
            _ => {}
        }
        map.end()
    }
}

/// What one run's reconciles share.
#[derive(Debug, Clone, Copy)]
pub struct RunContext<'a> {
    /// The Service Tags document of the run; `None` for a grant, revoke or sweep, which change
    /// only grants' rules ([`plan::plan_grants`]).
    pub tags: Option<&'a ServiceTags>,
    /// The change to the vault's grants this run makes (a grant, revoke or sweep).
    pub grant: Option<&'a GrantChange>,
    /// Where the last-applied sets live; `None` runs without memory (nothing is ever removed).
    pub state: Option<&'a State>,
    pub dry_run: bool,
    pub run_id: &'a str,
    /// `timer`, `http`, `eventgrid` or `cli`.
    pub trigger: &'a str,
    pub now: DateTime<Utc>,
    /// How long to wait for another instance's lock on a vault.
    pub lock_wait: Duration,
    /// Whether a document older than the one a vault's record says was applied may be used
    /// (`--allow-older`).
    pub allow_older: bool,
    /// The firewalls as Resource Graph indexed them, when the run observes through it: a vault
    /// whose indexed firewall is in sync is not read through ARM.
    pub index: Option<&'a FirewallIndex>,
    /// How long after a write of tagfence's the index is not believed about a vault
    /// ([`INDEX_TRUSTED_AFTER_WRITE`] but in benchmarks).
    pub index_trusted_after_write: Duration,
}

/// Where a vault's firewall was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Observed {
    /// By an ARM read (every vault written, and every one the index could not vouch for).
    #[default]
    Arm,
    /// In Resource Graph's index, which showed it in sync: no ARM read, nothing written.
    ResourceGraph,
}

impl Observed {
    pub fn as_str(self) -> &'static str {
        match self {
            Observed::Arm => "arm",
            Observed::ResourceGraph => "resource_graph",
        }
    }
}

/// The report of one vault's reconcile.
#[derive(Debug, Clone)]
pub struct VaultReport {
    pub vault: ResourceId,
    pub outcome: Outcome,
    /// The plan, when one was made.
    pub plan: Option<Plan>,
    /// Things a person should know (public access disabled, default action Allow, …).
    pub warnings: Vec<String>,
    /// Whether a PATCH was sent.
    pub wrote: bool,
    /// Whether the rules tagfence added before were known (from the state).
    pub ownership_known: bool,
    /// Where its firewall was observed.
    pub observed: Observed,
    /// The grant a grant or revoke run is about, as recorded after it (or as it stood when
    /// nothing was recorded).
    pub grant: Option<GrantRecord>,
    /// Why a revoke changed nothing (no such grant, already ended).
    pub grant_note: Option<String>,
    /// The vault's grants as recorded after the reconcile (with state).
    pub grants: Vec<GrantRecord>,
    pub elapsed_ms: u64,
}

impl VaultReport {
    /// A report of `outcome` for a vault nothing was planned or written for (yet).
    pub fn new(vault: ResourceId, outcome: Outcome) -> Self {
        VaultReport {
            vault,
            outcome,
            plan: None,
            warnings: Vec::new(),
            wrote: false,
            ownership_known: false,
            observed: Observed::Arm,
            grant: None,
            grant_note: None,
            grants: Vec::new(),
            elapsed_ms: 0,
        }
    }
}

/// Runs reconciles; one per process, shared by every trigger.
#[derive(Debug)]
pub struct Reconciler {
    arm: ArmClient,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Reconciler {
    pub fn new(arm: ArmClient) -> Self {
        Reconciler {
            arm,
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn lock_for(&self, vault: &ResourceId) -> Arc<tokio::sync::Mutex<()>> {
        // The map only ever grows by the configured vaults, so it needs no eviction.
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(vault.key()).or_default().clone()
    }

    /// Reconciles every target, at most `concurrency` at a time in each subscription; reports
    /// in target order. ARM's budgets are per subscription, so each subscription has its own
    /// lane: vaults waiting for one subscription's budget never hold up another's.
    pub async fn reconcile_all(
        &self,
        targets: &[VaultTarget],
        run: RunContext<'_>,
        concurrency: usize,
    ) -> Vec<VaultReport> {
        let mut lanes: BTreeMap<String, Vec<(usize, &VaultTarget)>> = BTreeMap::new();
        for (index, target) in targets.iter().enumerate() {
            lanes
                .entry(target.id.subscription.to_ascii_lowercase())
                .or_default()
                .push((index, target));
        }
        // Boxed so that the future of this function is `Send` without higher-ranked closure
        // types leaking into it (axum handlers need `Send` futures).
        let lanes = lanes.into_values().map(|lane| {
            let reconciles: Vec<BoxedReconcile<'_>> = lane
                .into_iter()
                .map(|(index, target)| {
                    Box::pin(async move { (index, self.reconcile_vault(target, run).await) })
                        as BoxedReconcile<'_>
                })
                .collect();
            stream::iter(reconciles).buffer_unordered(concurrency.max(1))
        });
        let mut reports: Vec<(usize, VaultReport)> = stream::select_all(lanes).collect().await;
        reports.sort_by_key(|(index, _)| *index);
        reports.into_iter().map(|(_, report)| report).collect()
    }

    /// Reconciles one vault. Never panics and never returns an error: every failure is an
    /// [`Outcome`].
    pub async fn reconcile_vault(&self, target: &VaultTarget, run: RunContext<'_>) -> VaultReport {
        let span = tracing::info_span!("reconcile", vault = %target.id.name, dry_run = run.dry_run);
        async {
            let started = Instant::now();
            let lock = self.lock_for(&target.id);
            let _guard = lock.lock().await;
            let mut report = VaultReport::new(target.id.clone(), Outcome::InSync);
            report.outcome = self.locked(target, run, &mut report).await;
            report.elapsed_ms = started.elapsed().as_millis() as u64;
            match &report.outcome {
                Outcome::InSync => info!(elapsed_ms = report.elapsed_ms, "vault already in sync"),
                Outcome::Applied => {
                    let plan = report.plan.as_ref().expect("applied plans are kept");
                    info!(
                        added = plan.add.len(),
                        removed = plan.remove.len(),
                        elapsed_ms = report.elapsed_ms,
                        "applied plan"
                    )
                }
                Outcome::WouldApply => {
                    let plan = report.plan.as_ref().expect("planned plans are kept");
                    info!(
                        added = plan.add.len(),
                        removed = plan.remove.len(),
                        "dry run: would apply plan"
                    )
                }
                // At info, as the outcomes above: the report carries them to the person (the
                // CLI's output, the HTTP answer, the invocation's error), where they are said
                // once.
                Outcome::Refused(reason) => {
                    info!(%reason, kind = %reason.kind(), "plan refused; nothing written")
                }
                Outcome::Skipped { reason } => info!(%reason, "skipped; nothing written"),
                Outcome::Failed(error) => {
                    info!(%error, kind = %error.kind(), wrote = report.wrote, "reconcile failed")
                }
            }
            report
        }
        .instrument(span)
        .await
    }

    /// Takes the state lock (when writing), reads the vault's state, reconciles, records.
    async fn locked(
        &self,
        target: &VaultTarget,
        run: RunContext<'_>,
        report: &mut VaultReport,
    ) -> Outcome {
        let Some(state) = run.state else {
            let mut trace = Trace::default();
            return self
                .steps(target, run, None, None, &mut trace, report)
                .await;
        };
        // A dry run writes nothing, so it needs no lock; it still reads the state to plan
        // exactly as a real run would.
        let held = if run.dry_run {
            None
        } else {
            match state.lock_vault(&target.id, run.lock_wait).await {
                Ok(held) => Some(held),
                Err(error) => {
                    return Outcome::from_error(ReconcileError::State {
                        step: StateStep::TakeLock,
                        error,
                    })
                }
            }
        };
        let outcome = match state.read_vault(&target.id).await {
            Err(error) => Outcome::from_error(ReconcileError::State {
                step: StateStep::ReadRecord,
                error,
            }),
            Ok(remembered) => {
                let mut trace = Trace {
                    last_record: remembered.clone(),
                    ..Trace::default()
                };
                let mut remembered = remembered.unwrap_or_else(|| VaultState::new(&target.id));
                match note_grant(state, target, run, &mut remembered, &mut trace, report).await {
                    Err(error) => Outcome::from_error(error),
                    Ok(false) => {
                        // A revoke or sweep with no grant ended: nothing to read or write.
                        report.grants = remembered.grants.clone();
                        index_grants(state, target, run, &remembered, report).await;
                        Outcome::InSync
                    }
                    Ok(true) => {
                        let outcome = self
                            .steps(
                                target,
                                run,
                                Some(&mut remembered),
                                held.as_deref(),
                                &mut trace,
                                report,
                            )
                            .await;
                        if !run.dry_run {
                            let recorded = self
                                .record_outcome(
                                    state, target, run, &outcome, &trace, remembered, report,
                                )
                                .await;
                            if let Some(recorded) = recorded {
                                index_grants(state, target, run, &recorded, report).await;
                            }
                        }
                        outcome
                    }
                }
            }
        };
        if let Some(held) = held {
            held.release().await;
        }
        outcome
    }

    /// Writes what is remembered of the vault after its reconcile, unless another process
    /// wrote the vault's record since this one read it (it took the lock over: its record is
    /// newer, and this run's must not roll it back). Returns the record written.
    #[allow(clippy::too_many_arguments)]
    async fn record_outcome(
        &self,
        state: &State,
        target: &VaultTarget,
        run: RunContext<'_>,
        outcome: &Outcome,
        trace: &Trace,
        mut remembered: VaultState,
        report: &mut VaultReport,
    ) -> Option<VaultState> {
        let (warning, recorded) = match state.read_vault(&target.id).await {
            Ok(now) if now != trace.last_record => (Some("the vault's state record was changed by another tagfence run meanwhile (this run lost its lock); leaving that record as it is".to_owned()), None),
            Ok(_) => {
                record(&mut remembered, target, run, outcome, trace, report);
                match state.write_vault(&target.id, &remembered).await {
                    Ok(()) => (None, Some(remembered)),
                    Err(err) => (Some(format!("recording the outcome in the state failed ({err}); the next run verifies the vault and records it")), None),
                }
            }
            Err(err) => (Some(format!("reading the vault's state again before recording failed ({err}); the next run verifies the vault and records it")), None),
        };
        if let Some(warning) = warning {
            warn!(%warning);
            report.warnings.push(warning);
        }
        recorded
    }

    /// Runs the phases, and turns where they stopped into the vault's outcome.
    async fn steps(
        &self,
        target: &VaultTarget,
        run: RunContext<'_>,
        remembered: Option<&mut VaultState>,
        held: Option<&dyn Lock>,
        trace: &mut Trace,
        report: &mut VaultReport,
    ) -> Outcome {
        report.ownership_known = remembered.as_ref().is_some_and(|r| r.ownership_known());
        if let Some(from) = remembered.as_ref().and_then(|r| r.migrated_from) {
            report.warnings.push(format!("the vault's state was written in format {from}, which did not record which rules tagfence added itself: they are kept as a person's from now on; rerun once with --adopt-existing to let tagfence manage the ones equal to desired rules"));
        } else if run.state.is_some() && !report.ownership_known {
            info!("no record of the rules tagfence added to this vault (first run or lost state): removing nothing, recording from now on");
        }
        match self
            .phases(target, run, remembered, held, trace, report)
            .await
        {
            Ok(outcome) => outcome,
            Err(Halt::WouldApply) => Outcome::WouldApply,
            Err(Halt::Skipped(reason)) => Outcome::Skipped { reason },
            Err(Halt::Error(error)) => Outcome::from_error(error),
        }
    }

    /// observe → plan → gate → record intent → re-read → write → verify. A write that fails is
    /// not sent again blind: the vault is read, planned and gated again first (ARM may have had
    /// tagfence wait a minute, time for a person's edit).
    async fn phases(
        &self,
        target: &VaultTarget,
        run: RunContext<'_>,
        mut remembered: Option<&mut VaultState>,
        held: Option<&dyn Lock>,
        trace: &mut Trace,
        report: &mut VaultReport,
    ) -> Result<Outcome, Halt> {
        never_move_back(remembered.as_deref(), run)?;
        if self.in_sync_in_index(target, run, remembered.as_deref(), report) {
            return Ok(Outcome::InSync);
        }
        let mut write_attempt = 1;
        loop {
            let vault = self.observe(target, report).await?;
            trace.note_read(&vault.acl);
            if let Some(remembered) = remembered.as_deref_mut() {
                settle_pending(remembered, &vault.acl, trace);
            }
            let Some((gated, slot)) = self
                .plan_gate_reread(target, run, remembered.as_deref_mut(), vault, trace, report)
                .await?
            else {
                return Ok(in_sync(trace));
            };
            still_ours(target, run, held, trace).await?;
            match self.write(target, &gated, slot, trace, report).await {
                Ok(answer) => return Ok(self.verify(target, &gated, answer, trace).await?),
                Err(err) => self.before_writing_again(err, &mut write_attempt).await?,
            }
        }
    }

    /// The one `PATCH`, only with a gated body. What it may have changed is noted in `trace`
    /// before it is sent, so that a lost answer is accounted for.
    async fn write(
        &self,
        target: &VaultTarget,
        gated: &GatedWrite,
        slot: WriteSlot,
        trace: &mut Trace,
        report: &mut VaultReport,
    ) -> Result<Resource, AzureError> {
        report.wrote = true;
        if let Some(plan) = &report.plan {
            trace.sent_adds.extend(&plan.add);
            trace.sent_removals.extend(&plan.remove);
        }
        let landed_before = trace.maybe_written;
        trace.maybe_written = true;
        let result = self.arm.patch_network_acls(&target.id, gated, slot).await;
        // When the write may have landed: its answer's time, not the run's start (budget and
        // lock waits come before it), so the index is not believed about it too early.
        trace.written_at = Some(Utc::now());
        if let Err(err) = &result {
            // A 4xx answer (but a timeout's 408) says ARM did not carry the write out;
            // anything else (5xx, a lost answer) may have landed.
            let refused = err
                .status()
                .is_some_and(|s| (400..500).contains(&s) && s != 408);
            if refused {
                trace.maybe_written = landed_before;
            }
        }
        result
    }

    /// After a failed write: waits before the next attempt when one may help, else stops with
    /// the write's error.
    async fn before_writing_again(
        &self,
        err: AzureError,
        write_attempt: &mut u32,
    ) -> Result<(), ReconcileError> {
        let throttled = matches!(err.status(), Some(429));
        // A write still running at ARM (`Unfinished`) is never sent again on top of itself.
        let again = err.is_transient()
            && !matches!(
                err,
                AzureError::Throttled { .. } | AzureError::Unfinished { .. }
            )
            && *write_attempt < self.arm.write_attempts();
        if !again {
            return Err(ReconcileError::Azure {
                step: AzureStep::Write,
                error: err,
            });
        }
        let delay = self.arm.write_retry_delay(*write_attempt, throttled);
        info!(attempt = *write_attempt, delay_ms = delay.as_millis() as u64, error = %err, "the write failed; reading the vault again before trying it again");
        tokio::time::sleep(delay).await;
        *write_attempt += 1;
        Ok(())
    }

    /// Plans and gates from `vault`, records the intent, reads the vault again just before
    /// writing and, if its firewall moved meanwhile, plans and gates again from what is there
    /// now (at most three times). Key Vault has no ETags, so a firewall edited while tagfence
    /// planned would be overwritten by the PATCH; reading again narrows that window to one round
    /// trip. `Ok(None)` when the vault is in sync.
    async fn plan_gate_reread(
        &self,
        target: &VaultTarget,
        run: RunContext<'_>,
        mut remembered: Option<&mut VaultState>,
        mut vault: Resource,
        trace: &mut Trace,
        report: &mut VaultReport,
    ) -> Result<Option<(GatedWrite, WriteSlot)>, Halt> {
        let mut slot = None;
        for attempt in 1..=MAX_PLAN_ATTEMPTS {
            let Some(gated) =
                self.plan_and_gate(target, run, remembered.as_deref(), &vault, trace, report)?
            else {
                return Ok(None);
            };
            if run.dry_run {
                return Err(Halt::WouldApply);
            }
            write_ahead(run, target, remembered.as_deref_mut(), report, trace).await?;

            // The write budget is waited for before the re-read, not between it and the PATCH.
            if slot.is_none() {
                slot = Some(self.arm.reserve_write(&target.id).await);
            }
            let fresh =
                self.arm
                    .get_resource(&target.id)
                    .await
                    .map_err(|error| ReconcileError::Azure {
                        step: AzureStep::ReadAgain,
                        error,
                    })?;
            trace.note_read(&fresh.acl);
            if fresh.acl.same_firewall(&vault.acl) {
                // The gate's input is the last read before the write.
                let gated = self.gate(
                    target,
                    remembered.as_deref(),
                    &fresh,
                    &gated.proposal(),
                    trace,
                )?;
                return Ok(Some((gated, slot.take().expect("reserved above"))));
            }
            if attempt < MAX_PLAN_ATTEMPTS {
                info!(
                    attempt,
                    "the vault's firewall changed while planning; planning again"
                );
            }
            vault = fresh;
        }
        Err(ReconcileError::KeptMoving {
            attempts: MAX_PLAN_ATTEMPTS,
        }
        .into())
    }

    /// Checks the write landed: the whole firewall must be what was sent. Key Vault answers a
    /// `PATCH` with the vault as stored ("Vaults - Update": 200 with the updated vault), so an
    /// answer showing exactly the firewall sent verifies the write without another read; an
    /// answer that does not (or differs) is checked by reading the vault again.
    async fn verify(
        &self,
        target: &VaultTarget,
        gated: &GatedWrite,
        answer: Resource,
        trace: &mut Trace,
    ) -> Result<Outcome, ReconcileError> {
        if gated.verify(&answer.acl).is_err() {
            info!(
                "the write's answer does not show the firewall sent; reading the vault to verify"
            );
            let after =
                self.arm
                    .get_resource(&target.id)
                    .await
                    .map_err(|error| ReconcileError::Azure {
                        step: AzureStep::Verify,
                        error,
                    })?;
            gated
                .verify(&after.acl)
                .map_err(ReconcileError::VerifyMismatch)?;
        }
        trace.settled = Some(gated.rules().to_vec());
        Ok(Outcome::Applied)
    }

    /// Reads the vault; a discovered vault whose tag went or changed is skipped.
    async fn observe(
        &self,
        target: &VaultTarget,
        report: &mut VaultReport,
    ) -> Result<Resource, Halt> {
        let vault =
            self.arm
                .get_resource(&target.id)
                .await
                .map_err(|error| ReconcileError::Azure {
                    step: AzureStep::Observe,
                    error,
                })?;
        // A discovered vault is managed only while its tag says so: Resource Graph lags
        // behind a tag change, ARM does not.
        if let Some(reason) = no_longer_tagged(target, &vault) {
            return Err(Halt::Skipped(reason));
        }
        notice(&vault.acl, report);
        Ok(vault)
    }

    /// Whether Resource Graph's index shows the vault in sync and may be believed for it (see
    /// [`index_may_vouch`]): then the reconcile ends there, with no ARM read and nothing
    /// written. A vault the index shows needing work (or lacks) is observed through ARM, from
    /// which alone a write is ever planned.
    fn in_sync_in_index(
        &self,
        target: &VaultTarget,
        run: RunContext<'_>,
        remembered: Option<&VaultState>,
        report: &mut VaultReport,
    ) -> bool {
        let Some(indexed) = run.index.and_then(|index| index.get(&target.id)) else {
            return false;
        };
        if !index_may_vouch(target, run, remembered) || !indexed.acl.is_whole() {
            return false;
        }
        if no_longer_tagged(target, indexed).is_some() {
            return false;
        }
        match plan_vault(target, run, remembered, &indexed.acl) {
            Ok((plan, Ok(()))) if !plan.has_changes() => {
                region_notice(&indexed.acl, &plan, report);
                report.plan = Some(plan);
                report.observed = Observed::ResourceGraph;
                notice(&indexed.acl, report);
                true
            }
            _ => false,
        }
    }

    /// Plans the vault from `vault` and passes the plan's body through the gate. `Ok(None)`
    /// when the vault is in sync.
    fn plan_and_gate(
        &self,
        target: &VaultTarget,
        run: RunContext<'_>,
        remembered: Option<&VaultState>,
        vault: &Resource,
        trace: &Trace,
        report: &mut VaultReport,
    ) -> Result<Option<GatedWrite>, ReconcileError> {
        // A firewall that cannot hold IP rules at all (a registry below Premium) is refused for
        // that, first: a plan's guard would otherwise refuse it for something no rerun can fix.
        if let Some(reason) = &vault.acl.unsupported {
            return Err(ReconcileError::Gate(GateRefusal::Unsupported {
                kind: vault.acl.kind,
                reason: reason.clone(),
            }));
        }
        let (plan, guarded) =
            plan_vault(target, run, remembered, &vault.acl).inspect_err(|err| {
                if matches!(
                    err,
                    ReconcileError::Plan(PlanError::Desire(DesireError::DoesNotFit { .. }))
                ) {
                    grants_hold_room(target, run, remembered, report);
                }
            })?;
        let changes = plan.has_changes();
        let intended = plan.rules_after(&vault.acl.ip_rules);
        region_notice(&vault.acl, &plan, report);
        // Kept when a guard refuses it too: the report shows the change that was refused.
        report.plan = Some(plan);
        if matches!(guarded, Err(plan::Refusal::OverLimit { .. })) {
            grants_hold_room(target, run, remembered, report);
        }
        guarded.map_err(|refusal| ReconcileError::Plan(PlanError::Refused(refusal)))?;
        // A partial read never counts as in sync: the gate names what it lacks.
        if !changes && vault.acl.is_whole() {
            if report.plan.as_ref().is_some_and(|p| p.grants_only) {
                // A grant run plans no tag rule, so a read that lost them would pass for in sync
                // and the record, settled against it, forget them: it is held to the gate's
                // agreement with the state as every write is.
                gate_with(target, remembered, vault, trace, |ownership, options| {
                    gate::read_agrees_with_state(&vault.acl, ownership, options)
                })?;
            }
            return Ok(None);
        }
        let proposal = gate::propose(&vault.acl, &intended, target.safety.init_firewall);
        self.gate(target, remembered, vault, &proposal, trace)
            .map(Some)
    }

    /// The gate, with the vault's ownership record and settings.
    fn gate(
        &self,
        target: &VaultTarget,
        remembered: Option<&VaultState>,
        vault: &Resource,
        proposal: &Proposal,
        trace: &Trace,
    ) -> Result<GatedWrite, ReconcileError> {
        gate_with(target, remembered, vault, trace, |ownership, options| {
            gate::check(&vault.acl, proposal, ownership, options)
        })
    }
}

/// Runs `check`, a gate's, with the vault's ownership record and settings.
fn gate_with<T>(
    target: &VaultTarget,
    remembered: Option<&VaultState>,
    vault: &Resource,
    trace: &Trace,
    check: impl FnOnce(Ownership<'_>, GateOptions) -> Result<T, gate::GateRefusal>,
) -> Result<T, ReconcileError> {
    let removable = remembered.map(VaultState::owned_rules).unwrap_or_default();
    let confirmed = remembered
        .map(|r| r.confirmed_rules(&vault.acl.ip_rules))
        .unwrap_or_default();
    let ownership = Ownership {
        removable: &removable,
        confirmed: &confirmed,
        // Closed if the state saw it closed, or a read of this reconcile did.
        seen_default_action: if trace.closed_default_action {
            Some("Deny")
        } else {
            remembered.and_then(|r| r.seen_default_action.as_deref())
        },
        seen_bypass: if trace.closed_bypass {
            Some("None")
        } else {
            remembered.and_then(|r| r.seen_bypass.as_deref())
        },
    };
    let options = GateOptions {
        prune: target.prune,
        init_firewall: target.safety.init_firewall,
        accept_missing_rules: target.safety.accept_missing_rules,
        max_rules: target.limits.max_rules,
    };
    check(ownership, options).map_err(ReconcileError::Gate)
}

/// Says what a person should know about the firewall read (once per vault).
fn notice(live: &LiveAcl, report: &mut VaultReport) {
    let mut warnings = Vec::new();
    if live.public_access_disabled() {
        warnings.push(format!(
            "publicNetworkAccess is Disabled: the {}'s IP rules have no effect",
            live.kind.noun()
        ));
    }
    if live
        .default_action
        .as_deref()
        .is_some_and(|a| a.eq_ignore_ascii_case("allow"))
    {
        warnings.push(format!("defaultAction is Allow: the {} accepts every network, so its IP rules have no effect until it is Deny", live.kind.noun()));
    }
    // Named one by one up to a few: a vault of 900 such rules says so in one more line, not
    // 900 (every run, in the log, the report and the run record).
    const NAMED: usize = 5;
    for rule in live.unreadable.iter().take(NAMED) {
        warnings.push(format!(
            "the {} holds IP rule '{}', which tagfence cannot read ({}); it is kept as it is and counts against the limit",
            live.kind.noun(), rule.value, rule.reason
        ));
    }
    if live.unreadable.len() > NAMED {
        warnings.push(format!(
            "the {} holds {} more IP rules tagfence cannot read; they are kept as they are and count against the limit",
            live.kind.noun(),
            live.unreadable.len() - NAMED
        ));
    }
    // A vault read again after a failed write warns once.
    warnings.retain(|w| !report.warnings.contains(w));
    // Logged at info: the report carries them to the person (the CLI's output, the HTTP
    // answer, the run record), so a warn-level log line would only say it twice.
    for warning in &warnings {
        info!(%warning, "vault warning");
    }
    report.warnings.extend(warnings);
}

/// Says when a selected tag is in the resource's own region on a kind whose traffic from there
/// arrives from private addresses (Storage): its rules cannot allow those requests.
fn region_notice(live: &LiveAcl, plan: &Plan, report: &mut VaultReport) {
    let same = plan::same_region_tags(live.kind, live.location.as_deref(), &plan.desired.tags);
    if same.is_empty() {
        return;
    }
    let names: Vec<&str> = same.iter().map(|t| t.name.as_str()).collect();
    let warning = format!(
        "{} in {}, the {}'s own region: requests from there reach it from private addresses, which IP rules cannot allow (use a virtual network rule or a private endpoint for them)",
        if names.len() == 1 { format!("selected tag {} is", names[0]) } else { format!("selected tags {} are", names.join(", ")) },
        live.location.as_deref().unwrap_or_default(),
        live.kind.noun(),
    );
    if !report.warnings.contains(&warning) {
        info!(%warning, "vault warning");
        report.warnings.push(warning);
    }
}

/// Whether Resource Graph may vouch for the vault being in sync. Only where nothing but the
/// firewall's rules is at stake: never for a vault tagfence has no record of yet (its first
/// observation records what it owns, from an ARM read), one with a write whose outcome is
/// unknown (pending rules are settled against an ARM read), one whose record predates format 2,
/// one adopting rules, or one tagfence wrote less than [`INDEX_TRUSTED_AFTER_WRITE`] ago.
fn index_may_vouch(
    target: &VaultTarget,
    run: RunContext<'_>,
    remembered: Option<&VaultState>,
) -> bool {
    if target.safety.adopt_existing {
        return false;
    }
    let Some(remembered) = remembered else {
        // Without state nothing is owned, recorded or removed: in sync is all there is to know.
        return run.state.is_none();
    };
    let written_long_ago = remembered.written_at.is_none_or(|at| {
        run.now
            .signed_duration_since(at)
            .to_std()
            .is_ok_and(|since| since >= run.index_trusted_after_write)
    });
    remembered.applied.is_some()
        && remembered.pending.is_empty()
        && remembered.pending_removal.is_empty()
        && remembered.migrated_from.is_none()
        && written_long_ago
}

/// Why a discovered vault is no longer the discovery's to manage, as `vault` shows it: its tag
/// went, or says something else now.
fn no_longer_tagged(target: &VaultTarget, vault: &Resource) -> Option<String> {
    let TargetSource::Discovered { tag, value } = &target.source else {
        return None;
    };
    match vault.tag(tag) {
        None => Some(format!("it no longer carries the tag '{tag}' (the discovery index lags behind); tagfence leaves it alone from now on")),
        Some(now) if now != value => Some(format!("its tag {tag} changed from '{value}' to '{now}' since the discovery index was built; the next run applies the new value")),
        Some(_) => None,
    }
}

/// Plans the vault from the firewall `acl` (the core's plan, its guards' verdict apart: a plan
/// a guard refuses is still shown).
fn plan_vault(
    target: &VaultTarget,
    run: RunContext<'_>,
    remembered: Option<&VaultState>,
    acl: &LiveAcl,
) -> Result<(Plan, Result<(), plan::Refusal>), ReconcileError> {
    let owned = remembered.map(VaultState::owned_rules);
    let applied = remembered.and_then(|r| r.applied.as_ref());
    let last_desired = applied.map(|a| (a, a.desired.to_desired()));
    let (granted, ended) =
        remembered.map_or_else(Default::default, |r| grant_rules(r, target, run.now));
    let grants = plan::Grants {
        live: &granted,
        ended: &ended,
    };
    let Some(tags) = run.tags else {
        let source = plan::SourceInfo {
            cloud: applied.map_or(crate::core::service_tags::Cloud::Public, |a| a.cloud),
            change_number: applied.map_or(0, |a| a.change_number),
        };
        let mut plan = plan::plan_grants(GrantsInput {
            source,
            recorded: last_desired.as_ref().map(|(_, desired)| desired),
            live: &acl.ip_rules,
            unreadable: acl.unreadable.len(),
            owned: owned.as_deref().unwrap_or_default(),
            grants,
            limits: &target.limits,
        })
        .map_err(ReconcileError::Grant)?;
        plan.vault = Some(target.id.name.clone());
        plan.kind = target.id.kind;
        return Ok((plan, Ok(())));
    };
    let recorded = last_desired.as_ref().map(|(a, desired)| Recorded {
        desired,
        inputs: &a.inputs,
    });
    let input = PlanInput {
        tags,
        selection: &target.selection,
        limits: &target.limits,
        live: &acl.ip_rules,
        unreadable: acl.unreadable.len(),
        owned: owned.as_deref(),
        prune: target.prune,
        adopt: target.safety.adopt_existing,
        recorded,
        tag_guard: TagGuard {
            previous: last_desired
                .as_ref()
                .map(|(a, desired)| (desired.tags.as_slice(), a.change_number)),
            max_shrink: target.safety.max_tag_shrink,
            allowed: &target.safety.allow_tag_shrink,
        },
        grants,
    };
    let mut plan = plan::plan_unguarded(input).map_err(ReconcileError::Plan)?;
    plan.vault = Some(target.id.name.clone());
    plan.kind = target.id.kind;
    let guarded = plan::guard_plan(&plan, input);
    Ok((plan, guarded))
}

/// The rules of the vault's live grants, and of its ended ones that no live grant wants. A
/// grant the vault's policy could never have made counts as ended
/// ([`GrantRecord::is_live_within`]).
fn grant_rules(
    remembered: &VaultState,
    target: &VaultTarget,
    now: DateTime<Utc>,
) -> (Vec<Ipv4Net>, Vec<Ipv4Net>) {
    let max_ttl = target.grants.max_ttl;
    let mut live: Vec<Ipv4Net> = remembered
        .grants
        .iter()
        .filter(|g| g.is_live_within(now, max_ttl))
        .map(GrantRecord::rule)
        .collect();
    live.sort_unstable();
    live.dedup();
    let mut ended: Vec<Ipv4Net> = remembered
        .grants
        .iter()
        .map(GrantRecord::rule)
        .filter(|r| live.binary_search(r).is_err())
        .collect();
    ended.sort_unstable();
    ended.dedup();
    for grant in remembered
        .grants
        .iter()
        .filter(|g| g.is_live(now) && !g.is_live_within(now, max_ttl))
    {
        warn!(grant = %grant.id, address = %grant.address, expires_at = %state::timestamp(grant.expires_at), "a recorded grant outlives the vault's longest grant or is for no public address; its rule is treated as ended");
    }
    (live, ended)
}

/// When a regular run's rules do not fit and live grants hold some of the vault's room: says
/// so, and until when. A grant is placed only where there was room and never displaces the
/// tags' rules, so a tag update that needs its room waits for it to end (at most the vault's
/// longest grant).
fn grants_hold_room(
    target: &VaultTarget,
    run: RunContext<'_>,
    remembered: Option<&VaultState>,
    report: &mut VaultReport,
) {
    let Some(remembered) = remembered.filter(|_| run.tags.is_some()) else {
        return;
    };
    let max_ttl = target.grants.max_ttl;
    let live: Vec<&GrantRecord> = remembered
        .grants
        .iter()
        .filter(|g| g.is_live_within(run.now, max_ttl))
        .collect();
    let Some(last) = live.iter().map(|g| g.expires_at).max() else {
        return;
    };
    report.warnings.push(format!(
        "{} live just-in-time grant(s) hold {} of the firewall's rules until {} at the latest; the rules that need their room are applied by the first run after they end (or revoke them)",
        live.len(),
        live.len(),
        state::timestamp(last)
    ));
}

/// Where the phases of a reconcile stop before its end.
#[derive(Debug)]
enum Halt {
    /// A dry run with changes: stops before recording any intent.
    WouldApply,
    /// A discovered vault no longer tagged as it was.
    Skipped(String),
    Error(ReconcileError),
}

impl From<ReconcileError> for Halt {
    fn from(error: ReconcileError) -> Self {
        Halt::Error(error)
    }
}

/// A vault is never moved to an older Service Tags document than its record says was applied,
/// unless asked (`--allow-older`).
fn never_move_back(
    remembered: Option<&VaultState>,
    run: RunContext<'_>,
) -> Result<(), ReconcileError> {
    // A grants-only run applies no document.
    let Some(tags) = run.tags else {
        return Ok(());
    };
    match remembered.and_then(|r| r.applied.as_ref()) {
        Some(applied) if applied.change_number > tags.change_number && !run.allow_older => {
            Err(ReconcileError::OlderThanApplied {
                applied: applied.change_number,
                this: tags.change_number,
            })
        }
        _ => Ok(()),
    }
}

/// The outcome of a reconcile that found nothing to write: in sync, or, after a write of this
/// reconcile whose answer was lost, applied (the read shows that write landed).
fn in_sync(trace: &mut Trace) -> Outcome {
    if trace.maybe_written {
        trace.settled = trace.last_rules.clone();
        Outcome::Applied
    } else {
        Outcome::InSync
    }
}

/// What a reconcile learnt on its way, for the record.
#[derive(Debug, Default)]
struct Trace {
    /// The vault's state record as last read or written by this reconcile (`None`: none).
    last_record: Option<VaultState>,
    /// The `defaultAction` and `bypass` of the last whole read.
    seen_default_action: Option<String>,
    seen_bypass: Option<String>,
    /// The vault's readable rules as last read whole.
    last_rules: Option<Vec<Ipv4Net>>,
    /// The rules the vault holds after a verified write.
    settled: Option<Vec<Ipv4Net>>,
    /// Whether a write of this reconcile may have reached the vault (sent, and not refused
    /// outright by ARM).
    maybe_written: bool,
    /// When its last write was answered (or failed).
    written_at: Option<DateTime<Utc>>,
    /// The pending rules as they stood before this reconcile recorded its intent (settled
    /// against the first read): restored when no write of this reconcile can have landed.
    pending_before: Option<(Vec<Ipv4Net>, Vec<Ipv4Net>)>,
    /// The rules the writes this reconcile sent added and removed. The intent recorded before a
    /// write is what came before, these, and that write's own plan — never a plan that was
    /// replaced after a re-read (it may name rules a person put there meanwhile).
    sent_adds: Vec<Ipv4Net>,
    sent_removals: Vec<Ipv4Net>,
    /// Whether a whole read of this reconcile showed the firewall closed (`defaultAction`
    /// `Deny`, `bypass` `None`): a later read of the same reconcile showing it open is not
    /// written from, as if the state had seen it closed.
    closed_default_action: bool,
    closed_bypass: bool,
    /// The vault's grants before a grant run recorded a new one: restored when its rule cannot
    /// have reached the vault.
    grants_before: Option<Vec<GrantRecord>>,
}

impl Trace {
    fn note_read(&mut self, acl: &LiveAcl) {
        if acl.is_whole() {
            self.seen_default_action = acl.default_action.clone();
            self.seen_bypass = acl.bypass.clone();
            self.closed_default_action |= acl
                .default_action
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case("deny"));
            self.closed_bypass |= acl
                .bypass
                .as_deref()
                .is_some_and(|b| b.eq_ignore_ascii_case("none"));
            self.last_rules = Some(acl.ip_rules.clone());
        }
    }
}

/// Settles what a whole read says about writes whose outcome was unknown: a pending rule the
/// vault does not hold never landed (or was removed since), and a pending removal of a rule the
/// vault still holds did not land either. Without this, a pending rule that a failed write left
/// would be claimed the day a person adds the same range by hand.
fn settle_pending(remembered: &mut VaultState, acl: &LiveAcl, trace: &mut Trace) {
    if acl.is_whole() {
        let on_vault: HashSet<&Ipv4Net> = acl.ip_rules.iter().collect();
        remembered.pending.retain(|r| on_vault.contains(r));
        remembered.pending_removal.retain(|r| !on_vault.contains(r));
    }
    if trace.pending_before.is_none() {
        trace.pending_before = Some((
            remembered.pending.clone(),
            remembered.pending_removal.clone(),
        ));
    }
}

/// Confirms, just before the PATCH, that this process still holds the vault's lock and that
/// no other process wrote the vault's record since this one read (or wrote) it.
async fn still_ours(
    target: &VaultTarget,
    run: RunContext<'_>,
    held: Option<&dyn Lock>,
    trace: &Trace,
) -> Result<(), ReconcileError> {
    let (Some(state), Some(held)) = (run.state, held) else {
        return Ok(());
    };
    // The record first, the lock last: confirming renews the lock, so it is the check nearest
    // the PATCH (the window a paused process could still write in is one round trip shorter).
    let now = state
        .read_vault(&target.id)
        .await
        .map_err(|error| ReconcileError::State {
            step: StateStep::ReadRecordAgain,
            error,
        })?;
    if now != trace.last_record {
        return Err(ReconcileError::RecordChanged);
    }
    held.confirm().await.map_err(|error| ReconcileError::State {
        step: StateStep::ConfirmLock,
        error,
    })
}

/// Records the rules about to be added (and removed) as pending before the write, so that a
/// crash after the PATCH cannot make tagfence forget it added them, nor take its own removals
/// for a suspicious read.
async fn write_ahead(
    run: RunContext<'_>,
    target: &VaultTarget,
    remembered: Option<&mut VaultState>,
    report: &VaultReport,
    trace: &mut Trace,
) -> Result<(), ReconcileError> {
    let (Some(state), Some(remembered), Some(plan)) = (run.state, remembered, report.plan.as_ref())
    else {
        return Ok(());
    };
    let union = |before: &[Ipv4Net], sent: &[Ipv4Net], planned: &[Ipv4Net]| {
        let mut all: Vec<Ipv4Net> = before.iter().chain(sent).chain(planned).copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    };
    let (before_adds, before_removals) = trace.pending_before.clone().unwrap_or_else(|| {
        (
            remembered.pending.clone(),
            remembered.pending_removal.clone(),
        )
    });
    let pending = union(&before_adds, &trace.sent_adds, &plan.add);
    let pending_removal = union(&before_removals, &trace.sent_removals, &plan.remove);
    if pending == remembered.pending && pending_removal == remembered.pending_removal {
        return Ok(());
    }
    let mut intent = remembered.clone();
    intent.pending = pending;
    intent.pending_removal = pending_removal;
    intent.format_version = state::VAULT_STATE_FORMAT;
    intent.vault = target.id.to_string();
    intent.migrated_from = None;
    state
        .write_vault(&target.id, &intent)
        .await
        .map_err(|error| ReconcileError::State {
            step: StateStep::RecordIntent,
            error,
        })?;
    *remembered = intent;
    trace.last_record = Some(remembered.clone());
    Ok(())
}

/// Makes the run's grant change to the vault's record in memory, under the vault's lock, and
/// enters a new grant in the grants index before anything else can record it (so that the
/// sweep finds every grant whose rule may reach the vault). `Ok(false)` when the vault needs
/// no read or write (a revoke or sweep with no grant ended).
async fn note_grant(
    state: &State,
    target: &VaultTarget,
    run: RunContext<'_>,
    remembered: &mut VaultState,
    trace: &mut Trace,
    report: &mut VaultReport,
) -> Result<bool, ReconcileError> {
    let Some(change) = run.grant else {
        return Ok(true);
    };
    let before = remembered.grants.clone();
    remembered.vault = target.id.to_string();
    let noted = grants::note_change(
        remembered,
        change,
        run.now,
        run.run_id,
        target.grants.max_ttl,
    )
    .map_err(ReconcileError::Grant)?;
    report.grant.clone_from(&noted.grant);
    report.grant_note.clone_from(&noted.note);
    if let (GrantChange::Grant(_), Some(grant)) = (change, &noted.grant) {
        trace.grants_before = Some(before);
        let (vault, id) = (target.id.to_string(), grant.id.clone());
        state
            .update_grants_index(run.lock_wait, move |index| {
                let ids = index.vaults.entry(vault).or_default();
                if ids.contains(&id) {
                    return false;
                }
                ids.push(id);
                true
            })
            .await
            .map_err(|error| ReconcileError::State {
                step: StateStep::IndexGrant,
                error,
            })?;
        info!(grant = %grant.id, address = %grant.address, expires_at = %state::timestamp(grant.expires_at), requested_by = %grant.requested_by, "grant recorded; placing its rule");
    }
    if let (GrantChange::Revoke { by, .. }, Some(grant), None) = (change, &noted.grant, &noted.note)
    {
        info!(grant = %grant.id, address = %grant.address, revoked_by = %by, "grant revoked; removing its rule");
    }
    Ok(noted.needs_work)
}

/// After a grant run, holding the vault's lock: the grants index lists exactly the grants of
/// `recorded` for the vault, and not the vault once it holds none. A failure only leaves the
/// index longer than needed (the next sweep reads the record and tries again).
async fn index_grants(
    state: &State,
    target: &VaultTarget,
    run: RunContext<'_>,
    recorded: &VaultState,
    report: &mut VaultReport,
) {
    if run.grant.is_none() {
        return;
    }
    let vault = target.id.to_string();
    let ids: Vec<String> = recorded.grants.iter().map(|g| g.id.clone()).collect();
    let result = state
        .update_grants_index(run.lock_wait, move |index| {
            let key = index
                .vaults
                .keys()
                .find(|k| k.eq_ignore_ascii_case(&vault))
                .cloned();
            match (key, ids.is_empty()) {
                (None, true) => false,
                (Some(key), true) => index.vaults.remove(&key).is_some(),
                (key, false) => {
                    let entry = index.vaults.entry(key.unwrap_or(vault)).or_default();
                    if *entry == ids {
                        return false;
                    }
                    *entry = ids;
                    true
                }
            }
        })
        .await;
    if let Err(err) = result {
        let warning =
            format!("updating the grants index failed ({err}); the next sweep tries again");
        warn!(%warning);
        report.warnings.push(warning);
    }
}

/// How often a vault is planned again when its firewall keeps changing under tagfence.
const MAX_PLAN_ATTEMPTS: u32 = 3;

/// Updates what is remembered of a vault after its reconcile: the last run always; the rules
/// tagfence owns and the last-applied set when the vault is known to hold the desired rules.
fn record(
    remembered: &mut VaultState,
    target: &VaultTarget,
    run: RunContext<'_>,
    outcome: &Outcome,
    trace: &Trace,
    report: &mut VaultReport,
) {
    let at = state::stored_time(run.now);
    let plan = report.plan.as_ref();
    // The rules on the vault now, when known: the ones written and verified, or (in sync) the
    // ones read.
    let settled = match outcome {
        Outcome::Applied => trace.settled.as_ref(),
        Outcome::InSync => trace.last_rules.as_ref(),
        _ => None,
    };
    if let (Some(plan), Some(settled)) = (plan, settled) {
        claim_settled(remembered, plan, settled, run, trace, report);
    }
    if let (Some(before), None) = (&trace.grants_before, settled) {
        // A grant whose write failed is not recorded as asked. Its rule cannot have reached the
        // vault, or may have: then the grant is kept, ended, so that the sweep removes the rule
        // if it landed and no later write places it.
        let noted = report.grant.clone();
        remembered.grants.clone_from(before);
        if let (true, Some(mut grant)) = (trace.maybe_written, noted) {
            let extended = before
                .iter()
                .any(|g| g.address == grant.address && g.is_live(run.now));
            if !extended {
                grant.revoked_at = Some(state::stored_time(run.now));
                grant.revoked_by = Some("tagfence: the grant's write failed".to_owned());
                remembered.grants.push(grant);
                remembered.grants.sort_by_key(|g| g.address);
            }
        }
    }
    grants::settle(
        remembered,
        settled.map(Vec::as_slice),
        outcome.is_failure().then(|| outcome.detail()).flatten(),
        run.now,
        target.grants.max_ttl,
    );
    report.grants = remembered.grants.clone();
    if let Some(grant) = &report.grant {
        report.grant = Some(
            remembered
                .grants
                .iter()
                .find(|g| g.id == grant.id)
                .cloned()
                .unwrap_or_else(|| grant.clone()),
        );
    }
    if settled.is_none() && !trace.maybe_written {
        // No write of this reconcile reached the vault: its intent is void.
        if let Some((pending, pending_removal)) = &trace.pending_before {
            remembered.pending = pending.clone();
            remembered.pending_removal = pending_removal.clone();
        }
    }
    if trace.maybe_written {
        // Set by the write that made `maybe_written` true.
        remembered.written_at = trace.written_at.map(state::stored_time);
    }
    if let Some(seen) = &trace.seen_default_action {
        remembered.seen_default_action = Some(seen.clone());
    }
    if let Some(seen) = &trace.seen_bypass {
        remembered.seen_bypass = Some(seen.clone());
    }
    remembered.vault = target.id.to_string();
    remembered.format_version = state::VAULT_STATE_FORMAT;
    remembered.migrated_from = None;
    remembered.last_run = Some(LastRun {
        run_id: run.run_id.to_owned(),
        at,
        trigger: run.trigger.to_owned(),
        outcome: outcome.recorded(),
        detail: outcome.detail().or_else(|| {
            (report.observed == Observed::ResourceGraph)
                .then(|| "in sync as Resource Graph indexed it; not read through ARM".to_owned())
        }),
        change_number: run.tags.map_or_else(
            || remembered.applied.as_ref().map_or(0, |a| a.change_number),
            |tags| tags.change_number,
        ),
        added: plan.filter(|_| report.wrote).map_or(0, |p| p.add.len()),
        removed: plan.filter(|_| report.wrote).map_or(0, |p| p.remove.len()),
    });
}

/// The vault is known to hold `settled`, the plan's intended rules: tagfence owns what it owned
/// and what it added (pending, or this write's), plus what it adopted, as far as the vault
/// still holds it; the plan's desired rules become the last applied.
fn claim_settled(
    remembered: &mut VaultState,
    plan: &Plan,
    settled: &[Ipv4Net],
    run: RunContext<'_>,
    trace: &Trace,
    report: &VaultReport,
) {
    let on_vault: HashSet<&Ipv4Net> = settled.iter().collect();
    let added: &[Ipv4Net] = if report.wrote { &plan.add } else { &[] };
    // Pending rules count only as far as a write was sent for them: those of earlier runs
    // (settled against this run's first read) and this run's writes. A plan replaced after
    // a re-read recorded its adds as pending too, and may name a rule a person put there
    // meanwhile.
    let pending: Vec<Ipv4Net> = match &trace.pending_before {
        Some((before, _)) => before.iter().chain(&trace.sent_adds).copied().collect(),
        None => remembered.pending.clone(),
    };
    let mut owned: Vec<Ipv4Net> = remembered
        .owned
        .iter()
        .chain(&pending)
        .chain(added)
        .chain(plan.adopted())
        .filter(|r| on_vault.contains(r))
        .copied()
        .collect();
    owned.sort_unstable();
    owned.dedup();
    remembered.owned = owned;
    remembered.pending.clear();
    remembered.pending_removal.clear();
    if plan.grants_only {
        // Only grants' rules changed: the last applied set stays what the last regular run
        // applied.
        return;
    }
    remembered.applied = Some(AppliedState {
        desired: state::AppliedRules::from_desired(&plan.desired),
        cloud: plan.source.cloud,
        change_number: plan.source.change_number,
        inputs: plan.inputs.clone().unwrap_or_default(),
        kept: plan.total_after() - plan.desired.rules.len(),
        applied_at: state::stored_time(run.now),
        run_id: run.run_id.to_owned(),
    });
}
