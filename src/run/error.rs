//! Why a run could not start or fetch its input, and what that means for the caller. Per-vault
//! failures are not run errors; they are outcomes in the report.

use crate::azure::pipeline::{self, AzureError};
use crate::core::grant::GrantRefusal;
use crate::core::service_tags::Cloud;
use crate::reconcile::ErrorKind;
use crate::source::SourceError;
use crate::state::StateError;

/// Why a run could not start or fetch its input. Per-vault failures are not errors; they are
/// outcomes in the report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Credential(String),
    #[error("{}", pipeline::error_chain(.0))]
    SignIn(AzureError),
    #[error("the ARM endpoint: {0}")]
    Endpoint(crate::azure::EndpointError),
    #[error("fetching service tags: {0}")]
    Source(SourceError),
    /// Listed vaults select tags the document does not hold: reported once, before any vault
    /// is read.
    #[error("the configured selection names tags that change {change_number} of the Service Tags does not hold: {}; nothing read or written", .problems.join("; "))]
    UnknownTags {
        change_number: u64,
        problems: Vec<String>,
    },
    #[error("no resources configured (give --resource / TAGFENCE_RESOURCES or --vault / TAGFENCE_VAULTS, a configuration file, or --discover-subscription / --discover-management-group)")]
    NoVaults,
    #[error("unknown resource '{0}': not one of the managed resources (listed or discovered)")]
    UnknownVault(String),
    #[error("{vault} is not managed: {reason}")]
    NotManaged { vault: String, reason: String },
    #[error("discovering resources: {0}")]
    Discovery(String),
    #[error("setting up the state in {spec}: {detail}")]
    StateSetup { spec: String, detail: String },
    #[error("reading or writing the state: {0}")]
    State(StateError),
    /// A grant refused before anything was written (its address, TTL, reason, or the vault's
    /// room and grant count).
    #[error("granting {address} on {vault}: {refusal}; nothing written")]
    GrantRefused {
        vault: String,
        address: String,
        refusal: crate::core::grant::GrantRefusal,
    },
    /// The caller may not grant on the vault.
    #[error("{requester} may not grant on {vault}: {reason}")]
    GrantDenied {
        vault: String,
        requester: String,
        reason: String,
    },
    /// Grants need the state (the grant is recorded before its rule is written).
    #[error("grants need the state (--state-dir, or TAGFENCE_STATE_URL / AzureWebJobsStorage__blobServiceUri): a grant is recorded before its rule is written, so that its removal is guaranteed")]
    GrantsNeedState,
    #[error("the service tags from {origin} have change number {found}, older than {applied}, the last one applied to the {cloud} cloud; refusing to go back (a stale mirror or cache?). Rerun with --allow-older (TAGFENCE_ALLOW_OLDER) if this is intended")]
    Older {
        origin: String,
        cloud: Cloud,
        found: u64,
        applied: u64,
    },
}

// The causes are part of the messages above and not exposed as sources, so that an edge that
// prints a chain prints each cause once.
impl From<crate::azure::EndpointError> for RunError {
    fn from(err: crate::azure::EndpointError) -> Self {
        RunError::Endpoint(err)
    }
}

impl From<SourceError> for RunError {
    fn from(err: SourceError) -> Self {
        RunError::Source(err)
    }
}

impl From<StateError> for RunError {
    fn from(err: StateError) -> Self {
        RunError::State(err)
    }
}

impl RunError {
    /// What the failure means for the caller (see `run::policy`).
    pub fn kind(&self) -> ErrorKind {
        match self {
            RunError::Credential(_)
            | RunError::UnknownTags { .. }
            | RunError::Endpoint(_)
            | RunError::NoVaults
            | RunError::StateSetup { .. } => ErrorKind::NotConfigured,
            RunError::Source(err) => match err {
                SourceError::Azure(err) => ErrorKind::of_azure(err),
                // A path given that cannot be read: the setting is wrong.
                SourceError::File { .. } => ErrorKind::NotConfigured,
                // Microsoft's download page changed shape.
                SourceError::NoLink { .. } => ErrorKind::Unavailable,
                // A document that fails validation is refused; nothing is written from it.
                SourceError::Invalid { .. }
                | SourceError::WrongCloud { .. }
                | SourceError::TooSmall { .. } => ErrorKind::Refused,
            },
            RunError::UnknownVault(_) | RunError::NotManaged { .. } => ErrorKind::BadRequest,
            RunError::Discovery(_) => ErrorKind::Unavailable,
            RunError::SignIn(err) => ErrorKind::of_sign_in(err),
            RunError::State(err) => ErrorKind::of_state(err),
            RunError::Older { .. } => ErrorKind::Refused,
            RunError::GrantRefused { refusal, .. } => match refusal {
                GrantRefusal::TooMany { .. } | GrantRefusal::NoRoom { .. } => ErrorKind::Refused,
                _ => ErrorKind::BadRequest,
            },
            RunError::GrantDenied { .. } => ErrorKind::Forbidden,
            RunError::GrantsNeedState => ErrorKind::NotConfigured,
        }
    }
}
