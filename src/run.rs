//! One run: fetch the Service Tags once, reconcile every (or some) configured vault, report.
//! Shared by `tagfence apply` and the Functions triggers of `tagfence serve`; the trigger only
//! says which vaults and whether to write, never why.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use azure_core::credentials::TokenCredential;
use serde::Serialize;
use serde_json::{json, Value};
use tracing::info;

use crate::azure::arm::ArmClient;
use crate::azure::auth::{self, IdentityEnv};
use crate::azure::VaultId;
use crate::config::{Config, VaultTarget};
use crate::core::render::{self, PLAN_FORMAT_VERSION};
use crate::core::service_tags::Cloud;
use crate::reconcile::{Outcome, Reconciler, VaultReport};
use crate::source::{Fetcher, SourceError};

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
    #[error("unknown vault '{0}': not one of the configured vaults")]
    UnknownVault(String),
}

/// Which vaults to reconcile and whether to write.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Only these vaults (by id or name); `None` for all configured.
    pub only: Option<Vec<String>>,
    pub dry_run: bool,
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
    pub source: SourceSummary,
    pub dry_run: bool,
    pub vaults: Vec<VaultReport>,
    pub elapsed_ms: u64,
}

/// Runs reconciles with one configuration; built once per process.
pub struct Runner {
    config: Config,
    arm: ArmClient,
    reconciler: Reconciler,
    /// The credential in use, for logs.
    pub credential: String,
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
            credential,
            config.endpoints.arm_scope.clone(),
            config.http.clone(),
        )?;
        info!(credential = %description, arm = %config.endpoints.arm, vaults = config.targets.len(), source = %config.source, "configured");
        Ok(Runner {
            reconciler: Reconciler::new(arm.clone()),
            arm,
            credential: description,
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The targets a request names.
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

    /// Whether `vault` is one this runner manages.
    pub fn manages(&self, vault: &VaultId) -> bool {
        self.config.targets.iter().any(|t| t.id.same_as(vault))
    }

    /// Fetches the Service Tags once and reconciles the requested vaults.
    ///
    /// # Errors
    /// When nothing can be reconciled at all (no vaults, unknown vault, no valid Service
    /// Tags). Vault failures are in the report.
    pub async fn run(&self, request: &RunRequest) -> Result<RunReport, RunError> {
        let started = Instant::now();
        let targets = self.targets(request)?;
        let fetcher = Fetcher {
            cloud: self.config.cloud,
            min_tags: self.config.min_service_tags,
            arm: Some(&self.arm),
            http: self.config.http.clone(),
        };
        let fetched = fetcher.fetch_service_tags(&self.config.source).await?;
        info!(change_number = fetched.tags.change_number, tags = fetched.tags.len(), origin = %fetched.origin, elapsed_ms = fetched.elapsed_ms, "fetched service tags");
        // State (the rules tagfence applied last time) is not kept yet: without it nothing is
        // ever removed, which is the safe reading.
        let vaults = self
            .reconciler
            .reconcile_all(
                &targets,
                &fetched.tags,
                &|_| None,
                request.dry_run,
                self.config.concurrency,
            )
            .await;
        Ok(RunReport {
            source: SourceSummary {
                cloud: fetched.tags.cloud,
                change_number: fetched.tags.change_number,
                origin: fetched.origin,
                bytes: fetched.bytes,
                elapsed_ms: fetched.elapsed_ms,
            },
            dry_run: request.dry_run,
            vaults,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }
}

impl RunReport {
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
        format!(
            "{} vaults: {} applied, {} would change (dry run), {} in sync, {} refused, {} failed; Service Tags {} change {} in {} ms",
            self.vaults.len(),
            self.count(|o| matches!(o, Outcome::Applied)),
            self.count(|o| matches!(o, Outcome::WouldApply)),
            self.count(|o| matches!(o, Outcome::InSync)),
            self.count(|o| matches!(o, Outcome::Refused { .. })),
            self.count(|o| matches!(o, Outcome::Failed { .. })),
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
            "source": self.source,
            "dry_run": self.dry_run,
            "elapsed_ms": self.elapsed_ms,
            "failures": self.failures(),
            "vaults": self.vaults.iter().map(vault_json).collect::<Vec<_>>(),
        })
    }
}

/// One vault's report for machines.
pub fn vault_json(report: &VaultReport) -> Value {
    json!({
        "vault": report.vault.to_string(),
        "name": report.vault.name,
        "outcome": report.outcome,
        "wrote": report.wrote,
        "elapsed_ms": report.elapsed_ms,
        "warnings": report.warnings,
        "plan": report.plan.as_ref().map(render::plan_json),
    })
}
