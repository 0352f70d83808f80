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
//! - [`azure`]: the Azure shell: credentials, the ARM client, endpoints.
//! - [`source`]: where the Service Tags come from (Discovery API, download page, file, URL).
//! - [`config`]: flags, environment and TOML file → a validated run configuration.
//! - [`state`]: what is remembered between runs (last-applied rules, snapshots, run records), in
//!   Blob storage or a directory.
//! - [`reconcile`]: observe → plan → guard → act → verify → record, per vault.
//! - [`run`]: one run over the configured vaults, and its report.
//! - [`server`]: the Azure Functions custom handler (`tagfence serve`).
//! - [`cli`]: the `tagfence` command line: arguments, file reading, output and exit codes.

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
