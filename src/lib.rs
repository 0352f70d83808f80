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
//! - [`core`]: the pure pipeline (parse → select → normalise → collapse → fit → plan → render).
//! - [`cli`]: the `tagfence` command line: arguments, file reading, output and exit codes.

pub mod cli;
pub mod core;
