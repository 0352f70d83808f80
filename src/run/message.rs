//! The notification texts of a run: one message per run worth telling a person about.

use super::policy;
use super::report::{vault_line, RunReport};
use crate::reconcile::{ErrorKind, Outcome};

/// Lines of vault detail in one message at most (a chat message is not a report).
const MAX_VAULT_LINES: usize = 20;

/// The message for a finished run, or `None` when it is not worth one (a dry run, or nothing
/// changed and nothing failed).
pub fn run_message(report: &RunReport) -> Option<String> {
    if report.dry_run {
        return None;
    }
    let notable: Vec<_> = report
        .vaults
        .iter()
        .filter(|v| matches!(v.outcome, Outcome::Applied) || v.outcome.is_failure())
        .collect();
    if notable.is_empty() {
        return None;
    }
    // A refusal is not a failure: the vault is known to be as it was, and a person must act.
    let failed = notable
        .iter()
        .any(|v| matches!(v.outcome, Outcome::Failed(_)));
    let refused = notable
        .iter()
        .any(|v| matches!(v.outcome, Outcome::Refused(_)));
    let headline = match (failed, refused) {
        (true, _) => "tagfence: a run failed",
        (false, true) => "tagfence: a vault was refused, nothing written to it",
        (false, false) => "tagfence: vault firewalls changed",
    };
    let mut text = format!("{headline} (run {}, {})\n", report.run_id, report.trigger);
    if let Some(kind) = report.error_kind() {
        text.push_str(&advice(kind));
        text.push('\n');
    }
    for vault in notable.iter().take(MAX_VAULT_LINES) {
        text.push_str("- ");
        text.push_str(&vault_line(vault));
        text.push('\n');
    }
    if notable.len() > MAX_VAULT_LINES {
        text.push_str(&format!(
            "- … and {} more\n",
            notable.len() - MAX_VAULT_LINES
        ));
    }
    text.push_str(&report.summary());
    Some(text)
}

/// The message for a run that failed before reconciling any vault.
pub fn error_message(trigger: &str, error: &str) -> String {
    format!("tagfence: a run failed ({trigger}): {error}")
}

/// What the reader of a message can do about the run's worst error, by the one policy.
fn advice(kind: ErrorKind) -> String {
    if policy::disposition(kind).retry_helps {
        format!("({kind}: the next run may clear it by itself; act if it persists)")
    } else {
        format!("({kind}: rerunning changes nothing until a person deals with the reason below)")
    }
}
