//! Why a vault's reconcile did not end in sync or applied, as a typed value that travels inside
//! the [`Outcome`](super::Outcome) to the edge. Each message is one line that names what was
//! being done and what became of the vault; none exposes a `source()`, so nothing prints a
//! cause twice. [`ReconcileError::kind`] sorts them for the one error policy
//! (`run::policy`), which turns a kind into an HTTP status, an exit code and a retry hint.

use std::fmt;

use crate::azure::pipeline::{error_chain, AzureError};
use crate::core::gate::{GateRefusal, Mismatch};
use crate::core::grant::GrantRefusal;
use crate::core::plan::PlanError;
use crate::state::StateError;

/// What a failure means for whoever started the run: every error of a reconcile or a run is
/// exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A plan guard, the safety gate or the state refused the write: nothing written, and
    /// rerunning changes nothing until a person deals with the reason.
    Refused,
    /// Another actor holds or moved the vault (its lock, its record, its firewall): nothing
    /// written, or a write that someone changed after it; a later run sorts it out.
    Conflict,
    /// Azure (or the state store) throttled the call and asked for a wait: try again later.
    Throttled,
    /// A dependency (ARM, Blob storage, the Service Tags source) failed, timed out or answered
    /// something it never documents: a retry may help.
    Unavailable,
    /// A dependency refused the request itself (no permission, no such resource, a request it
    /// rejects): a retry does not help until the role, the id or the setting is fixed.
    Rejected,
    /// The request named something unknown or malformed (a vault that is not managed, a bad
    /// parameter).
    BadRequest,
    /// The caller is authenticated but not allowed to ask this (a grant by a principal the
    /// vault's grant policy does not list).
    Forbidden,
    /// tagfence is not configured to run (settings, credential, state location).
    NotConfigured,
    /// tagfence broke one of its own invariants.
    Bug,
}

impl ErrorKind {
    /// The kind of a failed Azure call: throttled, refused outright (a 4xx that no retry
    /// changes), or unavailable.
    pub fn of_azure(err: &AzureError) -> ErrorKind {
        match err {
            AzureError::Throttled { .. } => ErrorKind::Throttled,
            AzureError::Api { status: 429, .. } => ErrorKind::Throttled,
            // ARM's 409: another operation on the resource is in progress.
            AzureError::Api { status: 409, .. } => ErrorKind::Conflict,
            AzureError::Decode { .. } => ErrorKind::Unavailable,
            // An update of the resource still in progress: as ARM's 409 says of one.
            AzureError::Unfinished { .. } => ErrorKind::Conflict,
            _ if err.is_transient() => ErrorKind::Unavailable,
            _ => ErrorKind::Rejected,
        }
    }

    /// The kind of a failed state call: a lock another instance holds is a conflict, a document
    /// written by a newer tagfence is refused; the rest is the store failing.
    pub fn of_state(err: &StateError) -> ErrorKind {
        match err {
            StateError::Locked { .. } | StateError::LockLost { .. } => ErrorKind::Conflict,
            StateError::NewerFormat { .. } | StateError::Corrupt { .. } => ErrorKind::Refused,
            // Something at the lock's place no wait clears: a person must remove it.
            StateError::LockUnusable { .. } => ErrorKind::NotConfigured,
            StateError::Io { .. } => ErrorKind::Unavailable,
        }
    }

    /// The kind of a failed sign-in: a credential that answers with a refusal (no `az login`,
    /// no identity assigned, a wrong client id) is a setting to fix; one that does not answer
    /// in time may come back.
    pub fn of_sign_in(err: &AzureError) -> ErrorKind {
        match err {
            AzureError::Token { .. } => ErrorKind::NotConfigured,
            other => ErrorKind::of_azure(other),
        }
    }

    /// The name logs, reports and JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Rejected => "rejected",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotConfigured => "not_configured",
            ErrorKind::Bug => "bug",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which call to Azure failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureStep {
    /// The first read of the vault.
    Observe,
    /// The read just before the write.
    ReadAgain,
    /// The `PATCH`.
    Write,
    /// The read after the write.
    Verify,
}

/// Which call to the state store failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateStep {
    /// Taking the vault's lock.
    TakeLock,
    /// Reading the vault's record.
    ReadRecord,
    /// Recording the rules about to be added, before the write.
    RecordIntent,
    /// Reading the record again just before the write.
    ReadRecordAgain,
    /// Confirming the lock just before the write.
    ConfirmLock,
    /// Entering the vault in the grants index before its first grant is recorded.
    IndexGrant,
}

/// Why one vault's reconcile did not end in sync or applied.
#[derive(Debug, Clone, PartialEq)]
pub enum ReconcileError {
    /// No plan could be made, or the plan's guards refused it.
    Plan(PlanError),
    /// The safety gate refused the write.
    Gate(GateRefusal),
    /// The vault's record says a newer Service Tags document was applied to it.
    OlderThanApplied { applied: u64, this: u64 },
    /// A discovered vault whose tag value cannot be used.
    InvalidTarget { reason: String },
    /// A call to Azure failed.
    Azure { step: AzureStep, error: AzureError },
    /// A call to the state store failed.
    State { step: StateStep, error: StateError },
    /// Another tagfence run wrote the vault's record while this one planned.
    RecordChanged,
    /// The firewall changed under every re-read.
    KeptMoving { attempts: u32 },
    /// The read after the write shows something else than what was written.
    VerifyMismatch(Mismatch),
    /// A grant refused under the vault's lock (too many live grants, no room).
    Grant(GrantRefusal),
}

impl ReconcileError {
    /// What the failure means for the caller.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReconcileError::Plan(_)
            | ReconcileError::Gate(_)
            | ReconcileError::OlderThanApplied { .. }
            | ReconcileError::InvalidTarget { .. } => ErrorKind::Refused,
            ReconcileError::Azure { error, .. } => ErrorKind::of_azure(error),
            ReconcileError::State { error, .. } => ErrorKind::of_state(error),
            ReconcileError::RecordChanged
            | ReconcileError::KeptMoving { .. }
            | ReconcileError::VerifyMismatch(_) => ErrorKind::Conflict,
            ReconcileError::Grant(refusal) => match refusal {
                GrantRefusal::TooMany { .. } | GrantRefusal::NoRoom { .. } => ErrorKind::Refused,
                _ => ErrorKind::BadRequest,
            },
        }
    }

    /// Whether this is a refusal (nothing written, and the vault known to be as it was) rather
    /// than a failure.
    pub fn is_refusal(&self) -> bool {
        self.kind() == ErrorKind::Refused
    }
}

impl fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The whole chain: a fit that fails says why (`fitting the selection into 10
            // rules: …`).
            ReconcileError::Plan(err) => f.write_str(&error_chain(err)),
            ReconcileError::Gate(refusal) => write!(f, "{refusal}"),
            ReconcileError::OlderThanApplied { applied, this } => write!(
                f,
                "the vault's state says change {applied} of the Service Tags was applied, newer than this run's change {this}; a vault is never moved back (rerun with --allow-older to do so)"
            ),
            ReconcileError::InvalidTarget { reason } => f.write_str(reason),
            ReconcileError::Azure { step, error } => {
                let error = error_chain(error);
                match step {
                    AzureStep::Observe => write!(f, "{error}; nothing written"),
                    AzureStep::ReadAgain => write!(
                        f,
                        "reading the vault again before writing: {error}; nothing written"
                    ),
                    AzureStep::Write => f.write_str(&error),
                    AzureStep::Verify => write!(
                        f,
                        "the write was accepted but could not be verified: {error}"
                    ),
                }
            }
            ReconcileError::State { step, error } => match step {
                StateStep::TakeLock => write!(f, "taking the vault's lock: {error}; nothing written"),
                StateStep::ReadRecord => {
                    write!(f, "reading the vault's state: {error}; nothing written")
                }
                StateStep::RecordIntent => write!(
                    f,
                    "recording the rules about to be added in the state: {error}; nothing written"
                ),
                StateStep::ReadRecordAgain => write!(
                    f,
                    "reading the vault's state again before writing: {error}; nothing written"
                ),
                StateStep::ConfirmLock => write!(f, "{error}; nothing written"),
                StateStep::IndexGrant => write!(
                    f,
                    "entering the vault in the grants index: {error}; nothing written"
                ),
            },
            ReconcileError::RecordChanged => f.write_str("the vault's state record was changed by another tagfence run while this one planned (it took the lock over); nothing written, the next run starts from that record"),
            ReconcileError::KeptMoving { attempts } => write!(
                f,
                "the vault's firewall changed {attempts} times while tagfence planned; nothing written, the next run tries again"
            ),
            ReconcileError::VerifyMismatch(mismatch) => write!(
                f,
                "verifying the write: {mismatch} (changed by someone else meanwhile?); the next run reconciles it"
            ),
            ReconcileError::Grant(refusal) => write!(f, "{refusal}; nothing written"),
        }
    }
}

impl std::error::Error for ReconcileError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> AzureError {
        AzureError::Api {
            operation: "reading vault kv".to_owned(),
            status,
            code: "Code".to_owned(),
            message: "message".to_owned(),
        }
    }

    #[test]
    fn azure_failures_are_sorted_by_whether_a_retry_can_help() {
        assert_eq!(ErrorKind::of_azure(&api(403)), ErrorKind::Rejected);
        assert_eq!(ErrorKind::of_azure(&api(404)), ErrorKind::Rejected);
        assert_eq!(ErrorKind::of_azure(&api(429)), ErrorKind::Throttled);
        assert_eq!(ErrorKind::of_azure(&api(500)), ErrorKind::Unavailable);
        assert_eq!(ErrorKind::of_azure(&api(408)), ErrorKind::Unavailable);
        assert_eq!(ErrorKind::of_azure(&api(409)), ErrorKind::Conflict);
        let transport = AzureError::Transport {
            operation: "reading vault kv".to_owned(),
            detail: "connection refused".to_owned(),
        };
        assert_eq!(ErrorKind::of_azure(&transport), ErrorKind::Unavailable);
    }

    #[test]
    fn a_lock_held_elsewhere_is_a_conflict_and_a_newer_record_a_refusal() {
        let locked = StateError::Locked {
            vault: "kv".to_owned(),
            seconds: 60,
        };
        assert_eq!(ErrorKind::of_state(&locked), ErrorKind::Conflict);
        let newer = StateError::NewerFormat {
            key: "vaults/kv.json".to_owned(),
            store: "dir".to_owned(),
            found: 9,
            known: 2,
        };
        assert_eq!(ErrorKind::of_state(&newer), ErrorKind::Refused);
    }

    #[test]
    fn messages_are_one_line_and_name_the_step() {
        let err = ReconcileError::Azure {
            step: AzureStep::ReadAgain,
            error: api(503),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("reading the vault again before writing: "),
            "{text}"
        );
        assert!(!text.contains('\n'));
        assert!(std::error::Error::source(&err).is_none());
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(ReconcileError::KeptMoving { attempts: 3 }
            .to_string()
            .contains("changed 3 times"));
    }
}
