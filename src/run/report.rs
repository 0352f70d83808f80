//! The report of a run for people (text), machines (JSON) and the run record.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::policy;
use crate::core::render::{self, PLAN_FORMAT_VERSION};
use crate::core::service_tags::Cloud;
use crate::reconcile::{ErrorKind, Outcome, VaultReport};
use crate::state::{self, GrantRecord, RunRecord, VaultRecord};

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

impl RunReport {
    /// The run record for the state.
    pub fn record(&self, started_at: DateTime<Utc>) -> RunRecord {
        let mut tag_change_numbers = BTreeMap::new();
        for plan in self.vaults.iter().filter_map(|v| v.plan.as_ref()) {
            for tag in &plan.desired.tags {
                tag_change_numbers.insert(tag.name.clone(), tag.change_number);
            }
        }
        RunRecord {
            format_version: state::STATE_FORMAT_VERSION,
            run_id: self.run_id.clone(),
            trigger: self.trigger.to_owned(),
            started_at: state::stored_time(started_at),
            finished_at: state::stored_time(Utc::now()),
            elapsed_ms: self.elapsed_ms,
            dry_run: self.dry_run,
            cloud: Some(self.source.cloud),
            change_number: Some(self.source.change_number),
            origin: Some(self.source.origin.clone()),
            tag_change_numbers,
            vaults: self.vaults.iter().map(vault_record).collect(),
            warnings: self.warnings.clone(),
            error: None,
            grants: Vec::new(),
        }
    }

    /// Vaults refused or failed.
    pub fn failures(&self) -> usize {
        self.vaults
            .iter()
            .filter(|v| v.outcome.is_failure())
            .count()
    }

    /// What the run's refused and failed vaults mean for the caller, taken together (the
    /// worst of their kinds, [`policy::worst`]); `None` when none was.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.vaults
            .iter()
            .filter_map(|v| v.outcome.error_kind())
            .reduce(policy::worst)
    }

    fn count(&self, pick: fn(&Outcome) -> bool) -> usize {
        self.vaults.iter().filter(|v| pick(&v.outcome)).count()
    }

    /// One line: how many vaults ended how.
    /// What the summary counts: `vaults` while every one is a vault (as runs said before there
    /// were kinds), else `resources`.
    fn noun(&self) -> &'static str {
        let vaults = self
            .vaults
            .iter()
            .all(|v| v.vault.kind == crate::core::kind::Kind::KeyVault);
        match (vaults, self.vaults.len() == 1) {
            (true, true) => "vault",
            (true, false) => "vaults",
            (false, true) => "resource",
            (false, false) => "resources",
        }
    }

    pub fn summary(&self) -> String {
        let skipped = self.count(|o| matches!(o, Outcome::Skipped { .. }));
        // A dry run writes nothing, so it says what would change; a run that writes says what
        // it applied.
        let changed = if self.dry_run {
            format!(
                "{} would change (dry run)",
                self.count(|o| matches!(o, Outcome::WouldApply))
            )
        } else {
            format!("{} applied", self.count(|o| matches!(o, Outcome::Applied)))
        };
        format!(
            "{} {}: {changed}, {} in sync, {} refused, {} failed{}; Service Tags {} change {} in {} ms",
            self.vaults.len(),
            self.noun(),
            self.count(|o| matches!(o, Outcome::InSync)),
            self.count(|o| matches!(o, Outcome::Refused(_))),
            self.count(|o| matches!(o, Outcome::Failed(_))),
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
            let name = vault.vault.display_name();
            let status = match &vault.outcome {
                Outcome::InSync => "in sync. No changes.".to_owned(),
                Outcome::Applied => "applied and verified.".to_owned(),
                Outcome::WouldApply => "would change (dry run; nothing written).".to_owned(),
                // Most reasons end by saying nothing was written; the others get it said here.
                Outcome::Refused(reason) => {
                    let reason = reason.to_string();
                    if reason.contains("nothing written") {
                        format!("refused: {reason}")
                    } else {
                        format!("refused, nothing written: {reason}")
                    }
                }
                Outcome::Skipped { reason } => format!("skipped, nothing written: {reason}"),
                Outcome::Failed(error) => format!("failed: {error}"),
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
        report.vault.display_name(),
        report.outcome.status()
    )
}

/// One vault's report for machines.
pub fn vault_json(report: &VaultReport) -> Value {
    json!({
        "vault": report.vault.to_string(),
        "kind": report.vault.kind.name(),
        "name": report.vault.name,
        "outcome": report.outcome,
        "wrote": report.wrote,
        "ownership_known": report.ownership_known,
        "observed": report.observed.as_str(),
        "elapsed_ms": report.elapsed_ms,
        "warnings": report.warnings,
        "plan": report.plan.as_ref().map(render::plan_json),
        "grants": report.grants.iter().map(grant_json).collect::<Vec<_>>(),
    })
}

/// One vault of a run record: its outcome and the plan's changes.
pub(super) fn vault_record(v: &VaultReport) -> VaultRecord {
    let strings = |nets: &[ipnet::Ipv4Net]| nets.iter().map(ToString::to_string).collect();
    let plan = v.plan.as_ref();
    VaultRecord {
        vault: v.vault.to_string(),
        kind: Some(v.vault.kind.name().to_owned()),
        outcome: v.outcome.recorded(),
        detail: v.outcome.detail(),
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
}

/// A grant as JSON (status, API answers, run records).
pub fn grant_json(grant: &GrantRecord) -> Value {
    json!({
        "id": grant.id,
        "vault": grant.vault,
        "address": grant.address.to_string(),
        "rule": format!("{}/32", grant.address),
        "granted_at": state::timestamp(grant.granted_at),
        "expires_at": state::timestamp(grant.expires_at),
        "requested_by": grant.requested_by,
        "reason": grant.reason,
        "run_id": grant.run_id,
        "revoked_at": grant.revoked_at.map(state::timestamp),
        "revoked_by": grant.revoked_by,
        "placed": grant.placed,
        "removal_error": grant.removal_error,
    })
}

/// A grant as one line: id, address, vault, expiry, who.
pub fn grant_line(grant: &GrantRecord) -> String {
    let mut line = format!(
        "grant {} {} on {}: expires {}, asked by {}",
        grant.id,
        grant.address,
        grant.vault,
        state::timestamp(grant.expires_at),
        grant.requested_by
    );
    if let Some(at) = grant.revoked_at {
        let _ = write!(line, "; revoked {}", state::timestamp(at));
    }
    if let Some(error) = &grant.removal_error {
        let _ = write!(line, "; removal failed: {error}");
    }
    line
}
