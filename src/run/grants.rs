//! Just-in-time grants as the edges ask for them (`tagfence grant`, `revoke`, `sweep`;
//! `POST /api/grant`, `DELETE /api/grant/<id>`, the sweep timer) and as they are reported.
//!
//! A grant, a revoke and a sweep are runs of their own: no Service Tags document is fetched,
//! and only the grants' rules change (`core::plan::plan_grants`); the vault is locked, read,
//! gated, written once and verified exactly as in a regular run.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};

use super::report::{grant_json, grant_line, vault_json};
use crate::reconcile::{Outcome, VaultReport};
use crate::state::GrantRecord;

/// Who asked for a grant or a revoke, as recorded with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// The command line. Its authority is the ARM role of the identity it signs in with; the
    /// label is only what the caller says it is (`--by`, else the pipeline's or the user's
    /// name from the environment).
    Cli { label: String },
    /// An HTTP caller that App Service authentication (Microsoft Entra ID) authenticated: the
    /// ids come from the principal the platform forwards, never from the request body.
    Principal {
        /// The caller's object id (`oid` claim).
        object_id: Option<String>,
        /// The client application's id (`appid` or `azp` claim): the service principal of a
        /// pipeline's service connection.
        app_id: Option<String>,
        /// A name for people (`X-MS-CLIENT-PRINCIPAL-NAME`), never used to authorise.
        name: Option<String>,
    },
}

impl Requester {
    /// How records and logs name the requester: `cli:<label>`, or `entra:<object id>` with the
    /// app id and name when known.
    pub fn describe(&self) -> String {
        match self {
            Requester::Cli { label } => format!("cli:{label}"),
            Requester::Principal {
                object_id,
                app_id,
                name,
            } => {
                let mut text = format!("entra:{}", object_id.as_deref().unwrap_or("?"));
                if let Some(app) = app_id {
                    let _ = write!(text, " app {app}");
                }
                if let Some(name) = name {
                    let _ = write!(text, " ({name})");
                }
                text
            }
        }
    }

    /// The ids a grant policy's principal list may name for this requester (lower case).
    pub fn ids(&self) -> Vec<String> {
        match self {
            Requester::Cli { .. } => Vec::new(),
            Requester::Principal {
                object_id, app_id, ..
            } => object_id
                .iter()
                .chain(app_id)
                .map(|id| id.to_ascii_lowercase())
                .collect(),
        }
    }
}

/// A grant asked for.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    /// The vault, by ARM id or (for a listed vault) name.
    pub vault: String,
    /// The address to allow: IPv4 only (IPv6 is refused with a message).
    pub address: IpAddr,
    /// How long; `None`: [`crate::core::grant::DEFAULT_TTL`].
    pub ttl: Option<Duration>,
    pub reason: Option<String>,
    pub requester: Requester,
    /// `cli` or `http`.
    pub trigger: &'static str,
}

/// Which grant a revoke ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// The grant for this address on the vault.
    Address(IpAddr),
    /// The grant with this id.
    Id(String),
}

/// A revoke asked for.
#[derive(Debug, Clone)]
pub struct RevokeRequest {
    /// The vault; may be left out with [`RevokeTarget::Id`] (the grants index knows it).
    pub vault: Option<String>,
    pub target: RevokeTarget,
    pub requester: Requester,
    /// `cli` or `http`.
    pub trigger: &'static str,
}

/// What a grant or revoke did.
#[derive(Debug, Clone)]
pub struct GrantReport {
    pub run_id: String,
    /// `grant` or `revoke`.
    pub action: &'static str,
    /// The grant as recorded after the run (`None`: a revoke that found no such grant).
    pub grant: Option<GrantRecord>,
    /// Why a revoke changed nothing (no such grant, already ended).
    pub note: Option<String>,
    /// The vault's reconcile (lock, read, plan, gate, write, verify), when one ran.
    pub vault: Option<VaultReport>,
}

impl GrantReport {
    /// Whether the grant's rule is as the request wanted (placed, or removed): the vault's
    /// reconcile ended in sync or applied, or none was needed.
    pub fn succeeded(&self) -> bool {
        self.vault
            .as_ref()
            .is_none_or(|v| matches!(v.outcome, Outcome::InSync | Outcome::Applied))
    }

    pub fn to_json(&self) -> Value {
        json!({
            "run_id": self.run_id,
            "action": self.action,
            "grant": self.grant.as_ref().map(grant_json),
            "note": self.note,
            "vault": self.vault.as_ref().map(vault_json),
        })
    }

    pub fn to_text(&self) -> String {
        let mut text = String::new();
        if let Some(note) = &self.note {
            let _ = writeln!(text, "{note}");
        }
        if let Some(grant) = &self.grant {
            let _ = writeln!(text, "{}", grant_line(grant));
        }
        if let Some(vault) = &self.vault {
            let _ = writeln!(text, "{}", super::report::vault_line(vault));
        }
        text
    }
}

/// What a sweep did: every vault with a grant that ended, reconciled to remove its rule.
#[derive(Debug, Clone)]
pub struct SweepReport {
    pub run_id: String,
    /// Vaults in the grants index.
    pub indexed: usize,
    /// The vaults reconciled (a grant had ended).
    pub vaults: Vec<VaultReport>,
    /// Grants whose rule could not be removed yet (retried at the next sweep).
    pub failed: Vec<GrantRecord>,
    pub elapsed_ms: u64,
}

impl SweepReport {
    pub fn to_json(&self) -> Value {
        json!({
            "run_id": self.run_id,
            "indexed": self.indexed,
            "vaults": self.vaults.iter().map(vault_json).collect::<Vec<_>>(),
            "failed": self.failed.iter().map(grant_json).collect::<Vec<_>>(),
            "elapsed_ms": self.elapsed_ms,
        })
    }

    pub fn to_text(&self) -> String {
        let mut text = format!(
            "sweep: {} vault(s) with grants, {} reconciled, {} grant(s) not yet removed ({} ms)\n",
            self.indexed,
            self.vaults.len(),
            self.failed.len(),
            self.elapsed_ms
        );
        for vault in &self.vaults {
            let _ = writeln!(text, "{}", super::report::vault_line(vault));
        }
        for grant in &self.failed {
            let _ = writeln!(text, "{}", grant_line(grant));
        }
        text
    }
}
