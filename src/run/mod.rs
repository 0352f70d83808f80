//! One run: fetch the Service Tags once, check them against what was applied before, reconcile
//! every (or some) configured vault, record what happened. Shared by `tagfence apply` and the
//! Functions triggers of `tagfence serve`; the trigger only says which vaults and whether to
//! write, never why.
//!
//! # Expected flow
//! 1. fetch and validate the document (the source module);
//! 2. with state: refuse a document older than the last one applied (unless allowed), archive
//!    it, note which selected tags changed since the last run, and load the previous versions of
//!    those still inside the grace window;
//! 3. reconcile the vaults (the reconcile module);
//! 4. with state: remember the document and tag versions applied, and write the run record.
//!
//! A run that fails before step 3 has written nothing to any vault.
//!
//! # Parts
//! - [`Runner`] (`runner`): the sequence above, once per run;
//! - `targets`: which vaults (listed, discovered, onboarded from a write event);
//! - `prepare` and `history`: what the state says about the document (the I/O, and the pure
//!   tag history and grace window);
//! - [`RunReport`] (`report`), [`StatusReport`] (`status`) and the notification texts
//!   (`message`);
//! - [`policy`]: what an error means for the caller (HTTP status, exit code, retry);
//! - `grants`: just-in-time grants as the edges ask for them ([`GrantRequest`],
//!   [`RevokeRequest`]) and as they are reported ([`GrantReport`], [`SweepReport`]).

mod error;
mod granting;
mod grants;
mod history;
mod message;
pub mod policy;
mod prepare;
mod report;
mod request;
mod runner;
mod status;
mod targets;

pub use error::RunError;
pub use grants::{GrantReport, GrantRequest, Requester, RevokeRequest, RevokeTarget, SweepReport};
pub use message::{error_message, run_message};
pub use report::{grant_json, grant_line, vault_json, vault_line, RunReport, SourceSummary};
pub use request::RunRequest;
pub use runner::{Clock, Runner};
pub use status::StatusReport;
pub use targets::Targets;
