//! Notifications: one webhook message when a run changed a vault or failed.
//!
//! The body is `{"text": "…"}`, which Slack incoming webhooks and Microsoft Teams webhook
//! workflows ("Post to a channel when a webhook request is received") accept. A notification is
//! never part of the run's outcome: when the webhook cannot be reached the run is logged as it
//! was and the failure is a warning. The URL carries a secret, so only its host is ever logged.

use azure_core::http::{Method, Pipeline, Request};
use serde_json::json;
use url::Url;

use crate::azure::http::{self, HttpOptions};
use crate::reconcile::Outcome;
use crate::run::{vault_line, RunReport};

/// Lines of vault detail in one message at most (a chat message is not a report).
const MAX_VAULT_LINES: usize = 20;

/// Posts run messages to a webhook.
#[derive(Debug, Clone)]
pub struct Notifier {
    url: Url,
    pipeline: Pipeline,
    options: HttpOptions,
}

impl Notifier {
    /// A notifier for `url` (https, or http to a loopback host for tests).
    ///
    /// # Errors
    /// When the URL is neither.
    pub fn new(url: Url, options: &HttpOptions) -> Result<Self, crate::azure::EndpointError> {
        crate::azure::check_endpoint(&url)?;
        Ok(Notifier {
            url,
            pipeline: http::pipeline(None, options),
            options: options.clone(),
        })
    }

    /// The webhook's host, for logs.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or("?")
    }

    /// Posts `text`.
    ///
    /// # Errors
    /// A message naming the host and what went wrong.
    pub async fn send(&self, text: &str) -> Result<(), String> {
        let mut request = Request::new(self.url.clone(), Method::Post);
        request.insert_header("content-type", "application/json");
        request.set_body(
            serde_json::to_vec(&json!({ "text": text })).expect("a JSON value serialises"),
        );
        let operation = format!("notifying {}", self.host());
        http::send(&self.pipeline, &mut request, &operation, &self.options)
            .await
            .map(|_| ())
            .map_err(|err| err.to_string())
    }
}

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
    let headline = if report.failures() > 0 {
        "tagfence: a run failed"
    } else {
        "tagfence: vault firewalls changed"
    };
    let mut text = format!("{headline} (run {}, {})\n", report.run_id, report.trigger);
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
