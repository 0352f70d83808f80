//! The only place that sequences a vault's reconcile: observe → plan → guard → act → verify.
//!
//! # Expected flow, per vault
//! 1. **observe**: `GET` the vault; its IP rules are normalised like the desired ones.
//! 2. **plan**: desired rules × live rules × last-applied rules (the core's `plan_vault`, which
//!    also runs the guards: empty allow-list, too many removals, over the limit).
//! 3. **act**: when the plan has changes and this is not a dry run, one `PATCH` carrying the
//!    whole `networkAcls` (everything as read, the IP rules replaced).
//! 4. **verify**: `GET` again; the vault's IP rules must be exactly the ones written.
//!
//! # Guarantees
//! - A vault in sync costs one `GET` and no write; a changed one `GET` + `PATCH` + `GET`.
//! - Nothing is written when the plan is refused or any step before the write fails, so a
//!   failed reconcile leaves the vault as it was; a write that ARM accepted leaves it at the new
//!   intended state. There is no third state: the write is a single PATCH.
//! - Vaults are independent: one failing never stops the others.
//! - Two reconciles of the same vault never overlap within a process (a lock per vault).
//!
//! # Assumptions
//! Key Vault has no ETags (azure-interfaces.md §2.3): a person editing the firewall between our
//! `GET` and `PATCH` is detected by the verify step (reported as a failure) and healed on the
//! next run. Safe to cancel at any `.await`: the only effect is the PATCH, which is atomic.

use std::collections::HashMap;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::stream::{self, StreamExt};
use ipnet::Ipv4Net;
use serde::Serialize;
use tracing::{info, warn, Instrument};

use crate::azure::arm::{ArmClient, NetworkAclsUpdate};
use crate::azure::http::error_chain;
use crate::azure::VaultId;
use crate::config::VaultTarget;
use crate::core::plan::{self, Plan, PlanError, PlanInput};
use crate::core::service_tags::ServiceTags;

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
    /// A call failed; the vault is as it was, or (after a successful write that could not be
    /// verified) at the new intended state.
    Failed { error: String },
}

impl Outcome {
    /// Whether the run should count this vault as failed.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Refused { .. } | Outcome::Failed { .. })
    }
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
    pub elapsed_ms: u64,
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
        tags: &ServiceTags,
        last_applied: &(dyn Fn(&VaultId) -> Option<Vec<Ipv4Net>> + Sync),
        dry_run: bool,
        concurrency: usize,
    ) -> Vec<VaultReport> {
        // Boxed so that the future of this function is `Send` without higher-ranked closure
        // types leaking into it (axum handlers need `Send` futures).
        let reconciles: Vec<BoxedReconcile<'_>> = targets
            .iter()
            .enumerate()
            .map(|(index, target)| {
                let owned = last_applied(&target.id);
                Box::pin(async move {
                    (
                        index,
                        self.reconcile_vault(target, tags, owned.as_deref(), dry_run)
                            .await,
                    )
                }) as BoxedReconcile<'_>
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
    pub async fn reconcile_vault(
        &self,
        target: &VaultTarget,
        tags: &ServiceTags,
        last_applied: Option<&[Ipv4Net]>,
        dry_run: bool,
    ) -> VaultReport {
        let span = tracing::info_span!("reconcile", vault = %target.id.name, dry_run);
        async {
            let started = Instant::now();
            let lock = self.lock_for(&target.id);
            let _guard = lock.lock().await;
            let mut report = VaultReport {
                vault: target.id.clone(),
                outcome: Outcome::InSync,
                plan: None,
                warnings: Vec::new(),
                wrote: false,
                elapsed_ms: 0,
            };
            report.outcome = self
                .steps(target, tags, last_applied, dry_run, &mut report)
                .await;
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
                Outcome::Failed { error } => {
                    warn!(%error, wrote = report.wrote, "reconcile failed")
                }
            }
            report
        }
        .instrument(span)
        .await
    }

    async fn steps(
        &self,
        target: &VaultTarget,
        tags: &ServiceTags,
        last_applied: Option<&[Ipv4Net]>,
        dry_run: bool,
        report: &mut VaultReport,
    ) -> Outcome {
        // Observe.
        let vault = match self.arm.get_vault(&target.id).await {
            Ok(vault) => vault,
            Err(err) => {
                return Outcome::Failed {
                    error: err.to_string(),
                }
            }
        };
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

        // Plan and guard.
        let planned = plan::plan_vault(PlanInput {
            tags,
            selection: &target.selection,
            limits: &target.limits,
            live: &live.ip_rules,
            last_applied,
            prune: target.prune,
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
        let intended = plan.rules_after(&live.ip_rules);
        report.plan = Some(plan);
        if !changes {
            return Outcome::InSync;
        }
        if dry_run {
            return Outcome::WouldApply;
        }

        // Act: one PATCH with the whole networkAcls.
        let update = NetworkAclsUpdate::keeping(live, intended.clone());
        report.wrote = true;
        if let Err(err) = self.arm.patch_network_acls(&target.id, &update).await {
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
                    let missing = want.difference(&got).count();
                    let unexpected = got.difference(&want).count();
                    Outcome::Failed {
                        error: format!(
                            "verifying the write: the vault now holds {} rules, {missing} written rules missing and {unexpected} not written by this run (changed by someone else meanwhile?); the next run reconciles it",
                            after.acl.ip_rules.len()
                        ),
                    }
                }
            }
        }
    }
}
