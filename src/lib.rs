//! tagfence keeps Azure Key Vault firewalls in step with Azure Service Tags.
//!
//! Key Vault's firewall takes only literal IPv4 rules, and Azure DevOps is not a trusted
//! Microsoft service, so a vault closed to all networks needs the Azure DevOps and pipeline-agent
//! ranges as rules — ranges Microsoft republishes every week. tagfence computes those rules from
//! the current Service Tags, fits them into Key Vault's limit, and plans the change against a
//! vault's live rules without ever dropping a rule a person added.
//!
//! # Layout
//!
//! `ARCHITECTURE.md`, at the repository root, lists the layers (from the pure `core` up to
//! `cli`), follows one run through them and says where each invariant lives.

pub mod azure;
pub mod cli;
pub mod config;
pub mod core;
pub mod notify;
pub mod reconcile;
pub mod run;
pub mod server;
pub mod source;
pub mod state;
