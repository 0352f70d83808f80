//! The runner's grants: `grant`, `revoke` and `sweep` (see `grants` for the requests and
//! reports). Each is a run of its own with no Service Tags document: the vault is locked,
//! its grant change recorded, and only grants' rules planned, gated, written once and
//! verified (`reconcile`, with `RunContext::tags` `None`).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tracing::{info, warn};

use super::error::RunError;
use super::grants::{
    GrantReport, GrantRequest, Requester, RevokeRequest, RevokeTarget, SweepReport,
};
use super::report::{grant_line, vault_record};
use super::request::RunRequest;
use super::runner::Runner;
use crate::azure::ResourceId;
use crate::config::{TargetSource, VaultTarget};
use crate::core::grant::{self, GrantRefusal};
use crate::reconcile::{GrantChange, GrantWhich, NewGrant, RunContext, VaultReport};
use crate::state::{self, GrantRecord, RunRecord, State};

/// Resource records the sweep reads at once.
const SWEEP_READS_AT_ONCE: usize = 16;

impl Runner {
    /// Records a grant and writes its rule (lock, read, gate, one PATCH, verify). A second
    /// grant for an address the vault already grants extends that grant.
    ///
    /// # Errors
    /// No state ([`RunError::GrantsNeedState`]), the vault not managed, the requester not
    /// allowed ([`RunError::GrantDenied`]), the address, TTL or reason refused
    /// ([`RunError::GrantRefused`]), or no sign-in. A vault that refused or failed the grant
    /// is in the report ([`GrantReport::succeeded`]).
    pub async fn grant(&self, request: &GrantRequest) -> Result<GrantReport, RunError> {
        let state = self.state().ok_or(RunError::GrantsNeedState)?.clone();
        let target = self.grant_target(&request.vault).await?;
        authorise(&target, &request.requester)?;
        let refused = |refusal: GrantRefusal| RunError::GrantRefused {
            vault: target.id.to_string(),
            address: request.address.to_string(),
            refusal,
        };
        let rule = grant::grant_rule(request.address).map_err(refused)?;
        // A grant that names no TTL gets the default, or the vault's maximum if shorter.
        let ttl = request
            .ttl
            .unwrap_or(grant::DEFAULT_TTL.min(target.grants.max_ttl));
        grant::check_ttl(ttl, target.grants.max_ttl).map_err(refused)?;
        if let Some(reason) = &request.reason {
            grant::check_reason(reason).map_err(refused)?;
        }
        let now = self.now();
        let expires_at = now
            + chrono::Duration::from_std(ttl).expect("a TTL of at most a day is a chrono duration");
        let change = GrantChange::Grant(NewGrant {
            id: new_grant_id(&target.id, rule.addr()),
            address: rule.addr(),
            expires_at: state::stored_time(expires_at),
            requested_by: request.requester.describe(),
            reason: request.reason.clone().filter(|r| !r.trim().is_empty()),
            max_live: target.grants.max_live,
        });
        let vault = self
            .grant_run(&state, &target, &change, request.trigger, now)
            .await?;
        Ok(self.grant_report("grant", vault))
    }

    /// Ends a grant and removes its rule when tagfence placed it and no other live grant or
    /// selected tag wants it. A revoke of a grant that ended already, or of none, changes
    /// nothing and says so.
    ///
    /// # Errors
    /// No state, the vault not managed or not found from the grant id, the requester not
    /// allowed, an IPv6 address, or no sign-in.
    pub async fn revoke(&self, request: &RevokeRequest) -> Result<GrantReport, RunError> {
        let state = self.state().ok_or(RunError::GrantsNeedState)?.clone();
        let vault = match (&request.vault, &request.target) {
            (Some(vault), _) => vault.clone(),
            (None, RevokeTarget::Id(id)) => match find_grant_vault(&state, id).await? {
                Some(vault) => vault,
                None => {
                    return Ok(GrantReport {
                        run_id: state::new_run_id(self.now()),
                        action: "revoke",
                        grant: None,
                        note: Some(format!("no grant {id} is recorded (never granted, or ended and removed already); nothing to revoke")),
                        vault: None,
                    })
                }
            },
            (None, RevokeTarget::Address(_)) => {
                return Err(RunError::UnknownVault(
                    "(none given: a revoke by address names the vault)".to_owned(),
                ))
            }
        };
        let target = match self.grant_target(&vault).await {
            Ok(target) => target,
            // A vault no longer managed may still hold a grant to end.
            Err(RunError::UnknownVault(_) | RunError::NotManaged { .. }) => {
                match vault.parse::<ResourceId>() {
                    Ok(id) => self.sweep_target(id),
                    Err(_) => return Err(RunError::UnknownVault(vault)),
                }
            }
            Err(other) => return Err(other),
        };
        authorise(&target, &request.requester)?;
        let which = match &request.target {
            RevokeTarget::Id(id) => GrantWhich::Id(id.trim().to_owned()),
            RevokeTarget::Address(address) => {
                GrantWhich::Address(ipv4_of(*address).ok_or_else(|| RunError::GrantRefused {
                    vault: target.id.to_string(),
                    address: address.to_string(),
                    refusal: GrantRefusal::Ipv6(*address),
                })?)
            }
        };
        let change = GrantChange::Revoke {
            which,
            by: request.requester.describe(),
        };
        let now = self.now();
        let vault = self
            .grant_run(&state, &target, &change, request.trigger, now)
            .await?;
        Ok(self.grant_report("revoke", vault))
    }

    /// Removes the rules of every grant that ended, on every vault the grants index lists; a
    /// vault whose grants are all live is not read. Every regular run removes them too; this
    /// is what guarantees it within [`grant::SWEEP_EVERY`] of the end when nothing else runs.
    ///
    /// # Errors
    /// No state, the grants index unreadable, or no sign-in. Vaults whose removal failed are
    /// in the report ([`SweepReport::failed`]), for the next sweep.
    pub async fn sweep(&self, trigger: &'static str) -> Result<SweepReport, RunError> {
        let started = Instant::now();
        let state = self.state().ok_or(RunError::GrantsNeedState)?.clone();
        let now = self.now();
        let run_id = state::new_run_id(now);
        let index = state.read_grants_index().await?;
        // The index lists every vault a grant was recorded for; the listed vaults are read too,
        // so that a lost or deleted index hides no grant of theirs (their sweep re-enters them).
        let mut candidates: Vec<ResourceId> = Vec::new();
        for vault in index.vaults.keys() {
            match vault.parse::<ResourceId>() {
                Ok(id) => candidates.push(id),
                Err(err) => {
                    warn!(vault = %vault, error = %err, "the grants index names something that is no vault id; skipped")
                }
            }
        }
        for target in &self.config().targets {
            if !candidates.iter().any(|id| id.same_as(&target.id)) {
                candidates.push(target.id.clone());
            }
        }
        let listed_only = |id: &ResourceId| {
            !index
                .vaults
                .keys()
                .any(|k| k.eq_ignore_ascii_case(&id.to_string()))
        };
        // Records are read a few at a time: a fleet listed whole costs one read per vault.
        let checks = candidates.into_iter().map(|id| {
            let target = self.sweep_target(id);
            let in_index = !listed_only(&target.id);
            let state = &state;
            async move {
                let max_ttl = target.grants.max_ttl;
                // Only a vault with a grant ended (or, in the index, with none left, to clear
                // its entry) is locked.
                let due = match state.read_vault(&target.id).await {
                    Ok(Some(record)) if record.grants.is_empty() => in_index,
                    Ok(Some(record)) => record
                        .grants
                        .iter()
                        .any(|g| !g.is_live_within(now, max_ttl)),
                    Ok(None) => in_index,
                    Err(err) => {
                        warn!(vault = %target.id, error = %err, "reading a vault's record for the sweep failed; it is tried anyway");
                        true
                    }
                };
                due.then_some(target)
            }
        });
        let targets: Vec<VaultTarget> = futures::stream::iter(checks)
            .buffered(SWEEP_READS_AT_ONCE)
            .filter_map(|target| async move { target })
            .collect()
            .await;
        if !targets.is_empty() {
            self.sign_in().await?;
        }
        let change = GrantChange::Sweep;
        let vaults = self
            .reconciler()
            .reconcile_all(
                &targets,
                self.grants_context(&state, &change, &run_id, trigger, now),
                self.config().concurrency,
            )
            .await;
        let failed: Vec<GrantRecord> = vaults
            .iter()
            .flat_map(|v| v.grants.iter().filter(|g| !g.is_live(now)).cloned())
            .collect();
        let report = SweepReport {
            run_id: run_id.clone(),
            indexed: index.vaults.len(),
            vaults,
            failed,
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        info!(
            indexed = report.indexed,
            reconciled = report.vaults.len(),
            not_removed = report.failed.len(),
            elapsed_ms = report.elapsed_ms,
            "sweep done"
        );
        if !report.vaults.is_empty() {
            self.record_grant_run(&state, trigger, now, &run_id, &report.vaults)
                .await;
        }
        if !report.failed.is_empty() {
            let lines: Vec<String> = report.failed.iter().map(grant_line).collect();
            self.notify(format!(
                "tagfence: {} ended grant(s) still on their vault; the next sweep tries again: {}",
                report.failed.len(),
                lines.join("; ")
            ))
            .await;
        }
        Ok(report)
    }

    /// Every grant recorded (live, and ended but not yet removed), vault by vault.
    ///
    /// # Errors
    /// No state, or the state cannot be read.
    pub async fn grants(&self) -> Result<Vec<GrantRecord>, RunError> {
        let state = self.state().ok_or(RunError::GrantsNeedState)?;
        Ok(state.list_grants().await?)
    }

    /// One grant or revoke run on one vault: its reconcile, its run record, and a notification
    /// when its rule could not be placed or removed.
    async fn grant_run(
        &self,
        state: &State,
        target: &VaultTarget,
        change: &GrantChange,
        trigger: &'static str,
        now: DateTime<Utc>,
    ) -> Result<VaultReport, RunError> {
        let run_id = state::new_run_id(now);
        self.sign_in().await?;
        let report = self
            .reconciler()
            .reconcile_vault(
                target,
                self.grants_context(state, change, &run_id, trigger, now),
            )
            .await;
        self.record_grant_run(state, trigger, now, &run_id, std::slice::from_ref(&report))
            .await;
        if report.outcome.is_failure() {
            let what = match change {
                GrantChange::Grant(_) => "placing a grant",
                GrantChange::Revoke { .. } => "removing a revoked grant",
                GrantChange::Sweep => "removing ended grants",
            };
            self.notify(format!(
                "tagfence: {what} on {} failed ({trigger}): {}",
                target.id,
                report.outcome.detail().unwrap_or_default()
            ))
            .await;
        }
        Ok(report)
    }

    fn grants_context<'a>(
        &self,
        state: &'a State,
        change: &'a GrantChange,
        run_id: &'a str,
        trigger: &'a str,
        now: DateTime<Utc>,
    ) -> RunContext<'a> {
        RunContext {
            tags: None,
            grant: Some(change),
            state: Some(state),
            dry_run: false,
            run_id,
            trigger,
            now,
            lock_wait: self.lock_wait(),
            allow_older: false,
            index: None,
            index_trusted_after_write: self.config().index_trusted_after_write,
        }
    }

    fn grant_report(&self, action: &'static str, vault: VaultReport) -> GrantReport {
        GrantReport {
            run_id: vault
                .grant
                .as_ref()
                .map(|g| g.run_id.clone())
                .unwrap_or_default(),
            action,
            grant: vault.grant.clone(),
            note: vault.grant_note.clone(),
            vault: Some(vault),
        }
    }

    /// The target a grant or revoke names: a managed vault (listed, or discovered by its tag).
    async fn grant_target(&self, vault: &str) -> Result<VaultTarget, RunError> {
        let request = RunRequest {
            only: Some(vec![vault.to_owned()]),
            ..RunRequest::default()
        };
        let mut found = self.resolve_targets(&request).await?;
        if let Some((id, reason)) = found.invalid.pop() {
            return Err(RunError::NotManaged {
                vault: id.to_string(),
                reason,
            });
        }
        let mut target = found
            .targets
            .pop()
            .ok_or_else(|| RunError::UnknownVault(vault.to_owned()))?;
        // A grant concerns the firewall's rules only: the discovery tag is not checked again.
        target.source = TargetSource::Listed;
        Ok(target)
    }

    /// The target the sweep reconciles a vault with: its configured one, else the defaults (a
    /// vault no longer managed still has its ended grants removed).
    fn sweep_target(&self, id: ResourceId) -> VaultTarget {
        let mut target = match self.config().find_target(&id.to_string()) {
            Some(target) => target.clone(),
            None => self
                .config()
                .discovered_target(id.clone(), "default")
                .unwrap_or_else(|_| VaultTarget {
                    id,
                    selection: Default::default(),
                    limits: Default::default(),
                    prune: false,
                    safety: Default::default(),
                    source: TargetSource::Listed,
                    grants: Default::default(),
                }),
        };
        target.source = TargetSource::Listed;
        target
    }

    /// Writes a run record naming every grant and revoke of the run.
    async fn record_grant_run(
        &self,
        state: &State,
        trigger: &str,
        started: DateTime<Utc>,
        run_id: &str,
        vaults: &[VaultReport],
    ) {
        let record = RunRecord {
            format_version: state::STATE_FORMAT_VERSION,
            run_id: run_id.to_owned(),
            trigger: trigger.to_owned(),
            started_at: state::stored_time(started),
            finished_at: state::stored_time(self.now()),
            elapsed_ms: vaults.iter().map(|v| v.elapsed_ms).max().unwrap_or(0),
            dry_run: false,
            cloud: None,
            change_number: None,
            origin: None,
            tag_change_numbers: Default::default(),
            vaults: vaults.iter().map(vault_record).collect(),
            warnings: Vec::new(),
            error: None,
            grants: vaults
                .iter()
                .flat_map(|v| {
                    v.grant
                        .iter()
                        .map(grant_line)
                        .chain(v.grant_note.clone())
                        .collect::<Vec<_>>()
                })
                .collect(),
        };
        match state.write_run(&record).await {
            Ok(key) => info!(record = %key, "run recorded"),
            Err(err) => warn!(error = %err, "recording the run failed"),
        }
    }
}

/// Whether the requester may grant (or revoke) on the vault: the command line always (its
/// authority is its ARM role); an HTTP principal only when the vault's policy lists its object
/// id or application id.
fn authorise(target: &VaultTarget, requester: &Requester) -> Result<(), RunError> {
    if matches!(requester, Requester::Cli { .. }) {
        return Ok(());
    }
    let ids = requester.ids();
    if ids.iter().any(|id| target.grants.principals.contains(id)) {
        return Ok(());
    }
    let reason = if target.grants.principals.is_empty() {
        "no principal may grant on this vault over HTTP (list object ids or application ids in TAGFENCE_GRANT_PRINCIPALS, or the vault's grant_principals)".to_owned()
    } else {
        format!(
            "neither its object id nor its application id is among the vault's {} grant principal(s) (TAGFENCE_GRANT_PRINCIPALS, or the vault's grant_principals)",
            target.grants.principals.len()
        )
    };
    Err(RunError::GrantDenied {
        vault: target.id.to_string(),
        requester: requester.describe(),
        reason,
    })
}

fn ipv4_of(address: IpAddr) -> Option<Ipv4Addr> {
    match address {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

/// A new grant id: `g-` and 16 hex digits, unique in practice (a per-process random key over
/// the vault, the address, the time and a counter). Ids are names, not secrets: who may revoke
/// is decided by the requester, never by knowing an id.
fn new_grant_id(vault: &ResourceId, address: Ipv4Addr) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write(vault.key().as_bytes());
    hasher.write(&address.octets());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("g-{:016x}", hasher.finish())
}

/// The vault the grants index files grant `id` under.
async fn find_grant_vault(state: &State, id: &str) -> Result<Option<String>, RunError> {
    let index = state.read_grants_index().await?;
    Ok(index
        .vaults
        .iter()
        .find(|(_, ids)| ids.iter().any(|g| g.eq_ignore_ascii_case(id.trim())))
        .map(|(vault, _)| vault.clone()))
}
