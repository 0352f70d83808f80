//! The only place that sequences a vault's reconcile: observe → plan → guard → act → verify.
//!
//! # Expected flow, per vault
//! 0. **lock**: take the vault's lock in the state store (a blob lease), so that no other
//!    instance or trigger works on it meanwhile; read what tagfence remembers of it.
//! 1. **observe**: `GET` the vault; its IP rules are normalised like the desired ones.
//! 2. **plan**: desired rules × live rules × last-applied rules (the core's `plan_vault`, which
//!    also runs the guards: empty allow-list, too many removals, over the limit).
//! 3. **act**: when the plan has changes and this is not a dry run, record the rules about to be
//!    added as pending, `GET` again (if the firewall moved meanwhile, plan again from it, at most
//!    three times), then one `PATCH` carrying the whole `networkAcls` (everything as read, the IP
//!    rules replaced).
//! 4. **verify**: `GET` again; the vault's IP rules must be exactly the ones written.
//! 5. **record**: the verified rules become the vault's last-applied set, with the outcome.
//!
//! # Guarantees
//! - A vault in sync costs one `GET` and no write; a changed one `GET` + `GET` + `PATCH` + `GET`.
//! - Nothing is written when the plan is refused or any step before the write fails, so a
//!   failed reconcile leaves the vault as it was; a write that ARM accepted leaves it at the new
//!   intended state. There is no third state: the write is a single PATCH.
//! - Vaults are independent: one failing never stops the others.
//! - Two reconciles of the same vault never overlap: a lock per vault within the process, and
//!   the state store's lock across instances.
//! - Without a last-applied set (first run, lost state) nothing is removed; the set is recorded
//!   from then on. A crash after the `PATCH` but before the record is healed by the next run:
//!   the rules it added were recorded as pending first, and it finds the vault in sync.
//!
//! # Assumptions
//! Key Vault has no ETags (azure-interfaces.md §2.3), so a write cannot be made conditional. A
//! person editing the firewall while tagfence plans is caught by the re-read before the `PATCH`
//! (and planned around); an edit landing after the `PATCH` is caught by the verify step
//! (reported as a failure, kept as unmanaged by the next run). An edit landing inside the one
//! round trip between the re-read and the `PATCH` is overwritten: that window cannot be closed
//! without ETags. Safe to cancel at any `.await`: the only effect on the vault is the PATCH, which is
//! atomic, and the state is only ever written whole.

use std::collections::HashMap;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use ipnet::Ipv4Net;
use serde::Serialize;
use tracing::{info, warn, Instrument};

use crate::azure::arm::{ArmClient, NetworkAclsUpdate};
use crate::azure::http::error_chain;
use crate::azure::VaultId;
use crate::config::{TargetSource, VaultTarget};
use crate::core::live::LiveAcl;
use crate::core::plan::{self, Plan, PlanError, PlanInput, Recorded};
use crate::core::service_tags::ServiceTags;
use crate::state::{self, AppliedState, LastRun, State, VaultState};

/// One vault's reconcile, boxed, with its index in the targets.
type BoxedReconcile<'a> = Pin<Box<dyn Future<Output = (usize, VaultReport)> + Send + 'a>>;

/// What happened to one vault.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Outcome {
    /// The vault already matched; nothing written.
    InSync,
    /// The plan was written and verified.
    Applied,
    /// Dry run: the plan has changes, nothing written.
    WouldApply,
    /// The plan was refused by a guard or could not be made; nothing written.
    Refused { reason: String },
    /// A discovered vault whose tag changed or went since it was discovered (the index lags);
    /// nothing written, the next run uses what the tag says then.
    Skipped { reason: String },
    /// A call failed; the vault is as it was, or (after a successful write that could not be
    /// verified) at the new intended state.
    Failed { error: String },
}

impl Outcome {
    /// Whether the run should count this vault as failed.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Refused { .. } | Outcome::Failed { .. })
    }

    /// The outcome's name, as records and logs spell it.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::InSync => "in_sync",
            Outcome::Applied => "applied",
            Outcome::WouldApply => "would_apply",
            Outcome::Refused { .. } => "refused",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Failed { .. } => "failed",
        }
    }

    /// The reason or error, if any.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Outcome::Refused { reason } | Outcome::Skipped { reason } => Some(reason),
            Outcome::Failed { error } => Some(error),
            _ => None,
        }
    }
}

/// What one run's reconciles share.
#[derive(Debug, Clone, Copy)]
pub struct RunContext<'a> {
    pub tags: &'a ServiceTags,
    /// Where the last-applied sets live; `None` runs without memory (nothing is ever removed).
    pub state: Option<&'a State>,
    pub dry_run: bool,
    pub run_id: &'a str,
    /// `timer`, `http`, `eventgrid` or `cli`.
    pub trigger: &'a str,
    pub now: DateTime<Utc>,
    /// How long to wait for another instance's lock on a vault.
    pub lock_wait: Duration,
}

/// The report of one vault's reconcile.
#[derive(Debug, Clone)]
pub struct VaultReport {
    pub vault: VaultId,
    pub outcome: Outcome,
    /// The plan, when one was made.
    pub plan: Option<Plan>,
    /// Things a person should know (public access disabled, default action Allow, …).
    pub warnings: Vec<String>,
    /// Whether a PATCH was sent.
    pub wrote: bool,
    /// Whether the rules tagfence added before were known (from the state).
    pub ownership_known: bool,
    pub elapsed_ms: u64,
}

impl VaultReport {
    /// A report of `outcome` for a vault nothing was planned or written for (yet).
    pub fn new(vault: VaultId, outcome: Outcome) -> Self {
        VaultReport {
            vault,
            outcome,
            plan: None,
            warnings: Vec::new(),
            wrote: false,
            ownership_known: false,
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

    fn lock_for(&self, vault: &VaultId) -> Arc<tokio::sync::Mutex<()>> {
        // The map only ever grows by the configured vaults, so it needs no eviction.
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(vault.key()).or_default().clone()
    }

    /// Reconciles every target, at most `concurrency` at a time; reports in target order.
    pub async fn reconcile_all(
        &self,
        targets: &[VaultTarget],
        run: RunContext<'_>,
        concurrency: usize,
    ) -> Vec<VaultReport> {
        // Boxed so that the future of this function is `Send` without higher-ranked closure
        // types leaking into it (axum handlers need `Send` futures).
        let reconciles: Vec<BoxedReconcile<'_>> = targets
            .iter()
            .enumerate()
            .map(|(index, target)| {
                Box::pin(async move { (index, self.reconcile_vault(target, run).await) })
                    as BoxedReconcile<'_>
            })
            .collect();
        let mut reports: Vec<(usize, VaultReport)> = stream::iter(reconciles)
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
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
                Outcome::Refused { reason } => warn!(%reason, "plan refused; nothing written"),
                Outcome::Skipped { reason } => info!(%reason, "skipped; nothing written"),
                Outcome::Failed { error } => {
                    warn!(%error, wrote = report.wrote, "reconcile failed")
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
            return self.steps(target, run, None, report).await;
        };
        // A dry run writes nothing, so it needs no lock; it still reads the state to plan
        // exactly as a real run would.
        let held = if run.dry_run {
            None
        } else {
            match state.lock_vault(&target.id, run.lock_wait).await {
                Ok(held) => Some(held),
                Err(err) => {
                    return Outcome::Failed {
                        error: format!("taking the vault's lock: {err}; nothing written"),
                    }
                }
            }
        };
        let outcome = match state.read_vault(&target.id).await {
            Err(err) => Outcome::Failed {
                error: format!("reading the vault's state: {err}; nothing written"),
            },
            Ok(remembered) => {
                let mut remembered = remembered.unwrap_or_else(|| VaultState::new(&target.id));
                let outcome = self.steps(target, run, Some(&mut remembered), report).await;
                if !run.dry_run {
                    record(&mut remembered, target, run, &outcome, report);
                    if let Err(err) = state.write_vault(&target.id, &remembered).await {
                        let warning = format!("recording the outcome in the state failed ({err}); the next run verifies the vault and records it");
                        warn!(%warning);
                        report.warnings.push(warning);
                    }
                }
                outcome
            }
        };
        if let Some(held) = held {
            held.release().await;
        }
        outcome
    }

    async fn steps(
        &self,
        target: &VaultTarget,
        run: RunContext<'_>,
        mut remembered: Option<&mut VaultState>,
        report: &mut VaultReport,
    ) -> Outcome {
        let last_applied = remembered.as_ref().and_then(|r| r.owned_rules());
        report.ownership_known = last_applied.is_some();
        if run.state.is_some() && last_applied.is_none() {
            info!("no record of the rules tagfence added to this vault (first run or lost state): removing nothing, recording from now on");
        }

        // Observe.
        let mut vault = match self.arm.get_vault(&target.id).await {
            Ok(vault) => vault,
            Err(err) => {
                return Outcome::Failed {
                    error: err.to_string(),
                }
            }
        };
        // A discovered vault is managed only while its tag says so: Resource Graph lags
        // behind a tag change, ARM does not.
        if let TargetSource::Discovered { tag, value } = &target.source {
            match vault.tag(tag) {
                None => {
                    return Outcome::Skipped {
                        reason: format!("it no longer carries the tag '{tag}' (the discovery index lags behind); tagfence leaves it alone from now on"),
                    }
                }
                Some(now) if now != value => {
                    return Outcome::Skipped {
                        reason: format!("its tag {tag} changed from '{value}' to '{now}' since the discovery index was built; the next run applies the new value"),
                    }
                }
                Some(_) => {}
            }
        }
        let live = &vault.acl;
        if live.public_access_disabled() {
            report.warnings.push(
                "publicNetworkAccess is Disabled: the vault's IP rules have no effect".to_owned(),
            );
        }
        if live
            .default_action
            .as_deref()
            .is_none_or(|a| a.eq_ignore_ascii_case("allow"))
        {
            report
                .warnings
                .push("defaultAction is Allow: the vault accepts every network, so its IP rules have no effect until it is Deny".to_owned());
        }
        for warning in &report.warnings {
            warn!(%warning);
        }

        // Plan, guard, and re-read just before writing: Key Vault has no ETags, so a firewall
        // edited while tagfence planned (and recorded its intent) would be overwritten by the
        // PATCH. Reading again narrows that window to one round trip; if the firewall moved,
        // plan again from what is there now.
        let mut attempt = 1;
        let mut slot = None;
        let (intended, slot) = loop {
            let recorded = remembered
                .as_ref()
                .and_then(|r| r.applied.as_ref())
                .map(|a| Recorded {
                    desired: &a.desired,
                    inputs: &a.inputs,
                    kept: a.kept,
                });
            let planned = plan::plan_vault(PlanInput {
                tags: run.tags,
                selection: &target.selection,
                limits: &target.limits,
                live: &vault.acl.ip_rules,
                last_applied: last_applied.as_deref(),
                prune: target.prune,
                recorded,
            });
            let mut plan = match planned {
                Ok(plan) => plan,
                Err(PlanError::Desire(err)) => {
                    return Outcome::Refused {
                        reason: err.to_string(),
                    }
                }
                Err(PlanError::Refused(refusal)) => {
                    return Outcome::Refused {
                        reason: refusal.to_string(),
                    }
                }
            };
            plan.vault = Some(target.id.name.clone());
            let changes = plan.has_changes();
            let intended = plan.rules_after(&vault.acl.ip_rules);
            let adding = plan.add.clone();
            report.plan = Some(plan);
            if !changes {
                return Outcome::InSync;
            }
            if run.dry_run {
                return Outcome::WouldApply;
            }

            // First note what is about to be added, so that a crash after the PATCH cannot make
            // tagfence forget it added those rules.
            if let (Some(state), Some(remembered)) = (run.state, remembered.as_deref_mut()) {
                let mut pending = remembered.pending.clone();
                pending.extend(adding);
                pending.sort_unstable();
                pending.dedup();
                if pending != remembered.pending {
                    let mut intent = remembered.clone();
                    intent.pending = pending;
                    if let Err(err) = state.write_vault(&target.id, &intent).await {
                        return Outcome::Failed {
                            error: format!("recording the rules about to be added in the state: {err}; nothing written"),
                        };
                    }
                    *remembered = intent;
                }
            }

            // The write budget is waited for before the re-read, not between it and the PATCH.
            if slot.is_none() {
                slot = Some(self.arm.reserve_write(&target.id).await);
            }
            let fresh = match self.arm.get_vault(&target.id).await {
                Ok(fresh) => fresh,
                Err(err) => {
                    return Outcome::Failed {
                        error: format!(
                            "reading the vault again before writing: {}; nothing written",
                            error_chain(&err)
                        ),
                    }
                }
            };
            if same_firewall(&fresh.acl, &vault.acl) {
                break (intended, slot.take().expect("reserved above"));
            }
            if attempt == MAX_PLAN_ATTEMPTS {
                return Outcome::Failed {
                    error: format!("the vault's firewall changed {MAX_PLAN_ATTEMPTS} times while tagfence planned; nothing written, the next run tries again"),
                };
            }
            info!(
                attempt,
                "the vault's firewall changed while planning; planning again"
            );
            attempt += 1;
            vault = fresh;
        };

        // Act: one PATCH with the whole networkAcls as last read, the IP rules replaced.
        let update = NetworkAclsUpdate::keeping(&vault.acl, intended.clone());
        report.wrote = true;
        if let Err(err) = self.arm.patch_network_acls(&target.id, &update, slot).await {
            return Outcome::Failed {
                error: err.to_string(),
            };
        }

        // Verify with a fresh read.
        match self.arm.get_vault(&target.id).await {
            Err(err) => Outcome::Failed {
                error: format!(
                    "the write was accepted but could not be verified: {}",
                    error_chain(&err)
                ),
            },
            Ok(after) => {
                let want: HashSet<&Ipv4Net> = intended.iter().collect();
                let got: HashSet<&Ipv4Net> = after.acl.ip_rules.iter().collect();
                if want == got {
                    Outcome::Applied
                } else {
                    let (missing, missing_rules) = listed(want.difference(&got));
                    let (unexpected, unexpected_rules) = listed(got.difference(&want));
                    Outcome::Failed {
                        error: format!(
                            "verifying the write: the vault now holds {} rules, {missing} written rules missing{missing_rules} and {unexpected} not written by this run{unexpected_rules} (changed by someone else meanwhile?); the next run reconciles it",
                            after.acl.ip_rules.len()
                        ),
                    }
                }
            }
        }
    }
}

/// How many rules a set holds, and the first few of them in address order (` [a, b, …]`), so
/// that a person can tell which rules moved; nothing when it is empty.
fn listed<'a>(rules: impl Iterator<Item = &'a &'a Ipv4Net>) -> (usize, String) {
    const SHOWN: usize = 5;
    let mut rules: Vec<&Ipv4Net> = rules.copied().collect();
    rules.sort_unstable();
    let mut names: Vec<String> = rules.iter().take(SHOWN).map(ToString::to_string).collect();
    if rules.len() > SHOWN {
        names.push("…".to_owned());
    }
    let shown = if names.is_empty() {
        String::new()
    } else {
        format!(" [{}]", names.join(", "))
    };
    (rules.len(), shown)
}

/// How often a vault is planned again when its firewall keeps changing under tagfence.
const MAX_PLAN_ATTEMPTS: u32 = 3;

/// Whether two reads show the same firewall (rules compared as sets: order is not meaning).
fn same_firewall(a: &LiveAcl, b: &LiveAcl) -> bool {
    let rules = |acl: &LiveAcl| acl.ip_rules.iter().copied().collect::<HashSet<Ipv4Net>>();
    a.default_action == b.default_action
        && a.bypass == b.bypass
        && a.public_network_access == b.public_network_access
        && a.virtual_network_rules == b.virtual_network_rules
        && rules(a) == rules(b)
}

/// Updates what is remembered of a vault after its reconcile: the last run always; the
/// last-applied set when the vault is known to hold the desired rules.
fn record(
    remembered: &mut VaultState,
    target: &VaultTarget,
    run: RunContext<'_>,
    outcome: &Outcome,
    report: &VaultReport,
) {
    let at = state::timestamp(run.now);
    let plan = report.plan.as_ref();
    if let (Outcome::Applied | Outcome::InSync, Some(plan)) = (outcome, plan) {
        remembered.applied = Some(AppliedState {
            desired: plan.desired.clone(),
            cloud: plan.source.cloud,
            change_number: plan.source.change_number,
            inputs: plan.inputs.clone().unwrap_or_default(),
            kept: if plan.prune { 0 } else { plan.unmanaged.len() },
            applied_at: at.clone(),
            run_id: run.run_id.to_owned(),
        });
        remembered.pending.clear();
    }
    remembered.vault = target.id.to_string();
    remembered.format_version = state::STATE_FORMAT_VERSION;
    remembered.last_run = Some(LastRun {
        run_id: run.run_id.to_owned(),
        at,
        trigger: run.trigger.to_owned(),
        status: outcome.status().to_owned(),
        detail: outcome.detail().map(str::to_owned),
        change_number: run.tags.change_number,
        added: plan.filter(|_| report.wrote).map_or(0, |p| p.add.len()),
        removed: plan.filter(|_| report.wrote).map_or(0, |p| p.remove.len()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verify_failure_names_the_first_rules_that_moved() {
        let rules: Vec<Ipv4Net> = (1..=7)
            .rev()
            .map(|i| format!("52.174.99.{i}/32").parse().unwrap())
            .collect();
        let some: HashSet<&Ipv4Net> = rules.iter().collect();
        assert_eq!(
            listed(some.iter()),
            (
                7,
                " [52.174.99.1/32, 52.174.99.2/32, 52.174.99.3/32, 52.174.99.4/32, 52.174.99.5/32, …]"
                    .to_owned()
            )
        );
        let none: HashSet<&Ipv4Net> = HashSet::new();
        assert_eq!(listed(none.iter()), (0, String::new()));
    }
}
