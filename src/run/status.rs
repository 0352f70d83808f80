//! What `tagfence status` and `GET /api/status` show: the document last applied and what is
//! remembered of each vault.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::error::RunError;
use crate::azure::ResourceId;
use crate::core::render::PLAN_FORMAT_VERSION;
use crate::core::service_tags::Cloud;
use crate::state::{self, GrantRecord, SourceState, State, VaultState};

/// What `tagfence status` shows.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// Where the state lives.
    pub state: String,
    pub source: Option<SourceState>,
    pub vaults: Vec<(ResourceId, Option<VaultState>)>,
    /// Every grant recorded: live ones, and ended ones whose rule is not removed yet.
    pub grants: Vec<GrantRecord>,
}

impl StatusReport {
    /// For people: the document applied, then one block per vault.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "State: {}", self.state);
        source_text(&mut out, self.source.as_ref());
        for (vault, remembered) in &self.vaults {
            out.push('\n');
            let _ = writeln!(out, "== {}", vault.display_name());
            match remembered {
                None => {
                    let _ = writeln!(out, "   never reconciled with this state");
                }
                Some(remembered) => vault_text(&mut out, remembered, vault.kind.noun()),
            }
        }
        if !self.grants.is_empty() {
            let _ = writeln!(out, "\nGrants:");
            for grant in &self.grants {
                let _ = writeln!(out, "   {}", super::report::grant_line(grant));
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
                "kind": vault.kind.name(),
                "name": vault.name,
                "last_run": remembered.as_ref().and_then(|r| r.last_run.as_ref()),
                "applied": remembered.as_ref().and_then(|r| r.applied.as_ref()).map(|a| json!({
                    "rules": a.desired.len(),
                    "change_number": a.change_number,
                    "applied_at": state::timestamp(a.applied_at),
                    "run_id": a.run_id,
                    "extra_addresses": a.desired.extra_addresses(),
                })),
                "pending": remembered.as_ref().map_or(0, |r| r.pending.len()),
            })).collect::<Vec<_>>(),
            "grants": self.grants.iter().map(super::report::grant_json).collect::<Vec<_>>(),
        })
    }
}

/// What is remembered of the configured vaults (`ids`: listed, and discovered when discovery is
/// on) and of the document last applied to `cloud`.
///
/// # Errors
/// [`RunError::StateSetup`] when no state is configured; [`RunError::State`] when it cannot be
/// read.
pub async fn status(
    state: Option<&State>,
    cloud: Cloud,
    ids: Vec<ResourceId>,
) -> Result<StatusReport, RunError> {
    let Some(state) = state else {
        return Err(RunError::StateSetup {
                spec: "this configuration".to_owned(),
                detail: "no state configured: give --state-dir (TAGFENCE_STATE_DIR) or --state-url (TAGFENCE_STATE_URL)".to_owned(),
            });
    };
    // A mistyped location is said, not shown as a state with nothing in it.
    if !state.exists().await? {
        return Err(RunError::StateSetup {
            spec: state.describe(),
            detail: "it does not exist; status only reads the state (tagfence apply creates it on its first run)".to_owned(),
        });
    }
    let source = state.read_source(cloud).await?;
    let mut vaults = Vec::with_capacity(ids.len());
    for id in ids {
        let remembered = state.read_vault(&id).await?;
        vaults.push((id, remembered));
    }
    let mut grants = state.list_grants().await?;
    // A grant whose vault the index lost is still shown, from the vault's record.
    for (_, remembered) in &vaults {
        for grant in remembered.iter().flat_map(|r| &r.grants) {
            if !grants.iter().any(|g| g.id == grant.id) {
                grants.push(grant.clone());
            }
        }
    }
    Ok(StatusReport {
        state: state.describe(),
        source,
        vaults,
        grants,
    })
}

// Writing to a String cannot fail: the results of `writeln!` below are ignored.

/// The document last applied, and each selected tag's version.
fn source_text(out: &mut String, source: Option<&SourceState>) {
    match source {
        None => {
            let _ = writeln!(out, "Service Tags: none applied yet");
        }
        Some(source) => {
            let _ = writeln!(
                out,
                "Service Tags: {} change number {} applied {}",
                source.cloud,
                source.change_number,
                state::timestamp(source.applied_at)
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
                    tag.change_number,
                    state::timestamp(tag.since)
                );
            }
        }
    }
}

/// What is remembered of one vault: its last run, its last-applied set, pending rules.
fn vault_text(out: &mut String, remembered: &VaultState, noun: &str) {
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
                run.outcome,
                state::timestamp(run.at),
                run.trigger,
                run.change_number,
                run.added,
                run.removed
            );
        }
    }
    match &remembered.applied {
        None => {
            let _ = writeln!(
                out,
                "   last-applied set: none recorded (no rule on the {noun} is removed until one is)"
            );
        }
        Some(applied) => {
            let _ = writeln!(
                out,
                "   last-applied set: {} rules from change number {}, last confirmed on the {noun} at {}",
                applied.desired.len(),
                applied.change_number,
                state::timestamp(applied.applied_at)
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
