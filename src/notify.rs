//! Notifications: posting one webhook message when a run changed a vault or failed. The text is
//! the run's (`run::run_message`); this module only carries it, and knows nothing of runs.
//!
//! The body is `{"text": "…"}`, which Slack incoming webhooks and Microsoft Teams webhook
//! workflows ("Post to a channel when a webhook request is received") accept. A notification is
//! never part of the run's outcome: when the webhook cannot be reached the run is logged as it
//! was and the failure is a warning.
//!
//! The URL carries a secret (Slack's path, a Teams workflow's `sig` query parameter), so it is
//! shown only as scheme and host ([`redacted`]) in every log line and error. That is also why
//! the message is posted with reqwest directly rather than through the `azure_core` pipeline of
//! the Azure calls: its transport logs each request's URL, path included, at debug level, and
//! `TAGFENCE_LOG=debug` would put the secret in the logs. reqwest's own errors carry the URL
//! too; they are shown without it.

use std::fmt;
use std::time::Duration;

use azure_core::time::OffsetDateTime;
use reqwest::StatusCode;
use serde_json::json;
use tokio::time::Instant;
use url::Url;

use crate::azure::pipeline::{
    error_chain, requested_wait, seconds, trusting_extra_ca, HttpOptions, WaitLimit,
    MAX_RETRY_AFTER,
};

/// How much of a failed answer's body an error shows.
const MAX_BODY_CHARS: usize = 200;

/// The longest back-off between two tries (the server's `Retry-After` may ask for more, up to
/// [`MAX_RETRY_AFTER`]), as for the Azure calls.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A webhook URL as it may be shown: scheme, host and port, never the path, query or user
/// information, which may be secret (`https://hooks.slack.com/…`).
pub fn redacted(url: &Url) -> String {
    match url.host_str() {
        Some(_) => format!("{}/…", url.origin().ascii_serialization()),
        None => format!("{}:…", url.scheme()),
    }
}

/// Why a message was not delivered. Every variant names the webhook only by [`redacted`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotifyError {
    /// No answer: the connection failed or an attempt timed out, after the retries.
    #[error("notifying {webhook}: {detail}")]
    Transport { webhook: String, detail: String },
    /// The webhook answered with an error status (after the retries, for one worth retrying).
    #[error("notifying {webhook}: the webhook answered {status} {reason}{detail}")]
    Status {
        webhook: String,
        status: u16,
        reason: String,
        /// `: ` and the start of the answer's body (secret parts of the URL removed), or empty.
        detail: String,
    },
    /// The webhook throttled the message and asked for a longer wait than a call may spend.
    #[error("notifying {webhook}: the webhook throttled the message ({status} {reason}) and asked to wait {}, more than {limit}; the message was not sent", seconds(*.wait))]
    Throttled {
        webhook: String,
        status: u16,
        reason: String,
        wait: Duration,
        limit: WaitLimit,
    },
    /// The whole call, retries included, took longer than its deadline.
    #[error("notifying {webhook}: no answer within {seconds} s")]
    Timeout { webhook: String, seconds: u64 },
}

/// Posts run messages to a webhook.
#[derive(Clone)]
pub struct Notifier {
    url: Url,
    client: reqwest::Client,
    options: HttpOptions,
}

/// Not derived: the URL is a secret.
impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("url", &redacted(&self.url))
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier for `url` (https, or http to a loopback host for tests).
    ///
    /// # Errors
    /// When the URL is neither; the error names the URL only by [`redacted`].
    pub fn new(url: Url, options: &HttpOptions) -> Result<Self, crate::azure::EndpointError> {
        use crate::azure::EndpointError;
        crate::azure::check_endpoint(&url).map_err(|err| match err {
            EndpointError::Invalid(_) => EndpointError::Invalid(redacted(&url)),
            EndpointError::Insecure(_) => EndpointError::Insecure(redacted(&url)),
            EndpointError::Scheme(_, scheme) => EndpointError::Scheme(redacted(&url), scheme),
        })?;
        let builder = reqwest::Client::builder()
            .connect_timeout(options.attempt_timeout.min(Duration::from_secs(10)))
            .timeout(options.attempt_timeout)
            // A redirect could carry the message (and the secret URL's host's trust) elsewhere.
            .redirect(reqwest::redirect::Policy::none());
        // The certificates of `--ca-file`, as for ARM (a TLS-inspecting proxy sits in front of
        // every outbound call alike).
        let client = trusting_extra_ca(builder, options)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Ok(Notifier {
            url,
            client,
            options: options.clone(),
        })
    }

    /// The webhook's host, for logs.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or("?")
    }

    /// Posts `text`, retrying as the Azure calls do (408, 429, 5xx and transport failures, with
    /// exponential back-off, honouring a `Retry-After` up to [`MAX_RETRY_AFTER`]), within the
    /// call deadline.
    ///
    /// # Errors
    /// [`NotifyError`], naming the webhook by scheme and host only.
    pub async fn send(&self, text: &str) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(&json!({ "text": text })).expect("a JSON value serialises");
        let timeout = self.options.call_timeout;
        let deadline = Instant::now() + timeout;
        match tokio::time::timeout(timeout, self.post(body, deadline)).await {
            Ok(result) => result,
            Err(_) => Err(NotifyError::Timeout {
                webhook: redacted(&self.url),
                seconds: timeout.as_secs(),
            }),
        }
    }

    async fn post(&self, body: Vec<u8>, deadline: Instant) -> Result<(), NotifyError> {
        let mut retries = 0u32;
        loop {
            let failure = match self.attempt(&body).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if !failure.retryable || retries >= self.options.max_retries {
                return Err(failure.error);
            }
            let delay = self.wait_before_retry(&failure, retries, deadline)?;
            tracing::debug!(webhook = %redacted(&self.url), retry = retries + 1, delay_ms = delay.as_millis() as u64, error = %failure.error, "the notification failed; trying again");
            tokio::time::sleep(delay).await;
            retries += 1;
        }
    }

    /// One POST: `Ok` on a 2xx, else what failed, whether it may be retried and the wait a
    /// throttling answer asked for.
    async fn attempt(&self, body: &[u8]) -> Result<(), Failure> {
        let webhook = redacted(&self.url);
        let sent = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let status = response.status();
                let asked = matches!(
                    status,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                )
                .then(|| {
                    requested_wait(
                        |name| response.headers().get(name).and_then(|v| v.to_str().ok()),
                        OffsetDateTime::now_utc(),
                    )
                })
                .flatten();
                let detail = body_start(response, &self.url).await;
                Err(Failure {
                    error: NotifyError::Status {
                        webhook,
                        status: status.as_u16(),
                        reason: reason(status),
                        detail,
                    },
                    retryable: retryable_status(status),
                    asked: asked.map(|wait| (status, wait)),
                })
            }
            Err(err) => {
                let retryable = !err.is_builder() && !err.is_redirect();
                // reqwest's errors name the URL: drop it, and anything else that shows it.
                let detail = scrub(&error_chain(&err.without_url()), &self.url);
                Err(Failure {
                    error: NotifyError::Transport { webhook, detail },
                    retryable,
                    asked: None,
                })
            }
        }
    }

    /// How long to wait before the next attempt: the back-off, or the wait a throttling answer
    /// asked for if longer. An error when that wait outlasts the call or the cap: the last
    /// answer (or the throttling) is then the error.
    fn wait_before_retry(
        &self,
        failure: &Failure,
        retries: u32,
        deadline: Instant,
    ) -> Result<Duration, NotifyError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some((status, wait)) = failure.asked {
            let limit = if left < MAX_RETRY_AFTER {
                WaitLimit::Deadline {
                    left,
                    total: self.options.call_timeout,
                }
            } else {
                WaitLimit::Cap(MAX_RETRY_AFTER)
            };
            if wait > left.min(MAX_RETRY_AFTER) {
                return Err(NotifyError::Throttled {
                    webhook: redacted(&self.url),
                    status: status.as_u16(),
                    reason: reason(status),
                    wait,
                    limit,
                });
            }
        }
        let backoff = self
            .options
            .initial_retry_delay
            .saturating_mul(1 << retries.min(16))
            .min(MAX_BACKOFF);
        let delay = backoff.max(failure.asked.map_or(Duration::ZERO, |(_, wait)| wait));
        if delay >= left {
            return Err(failure.error.clone());
        }
        Ok(delay)
    }
}

/// A failed attempt at posting a notification.
struct Failure {
    error: NotifyError,
    retryable: bool,
    /// The status and the wait of a throttling answer.
    asked: Option<(StatusCode, Duration)>,
}

/// The statuses the Azure calls retry too.
fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

fn reason(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("").to_owned()
}

/// `": "` and the start of a failed answer's body on one line, with every secret part of the
/// URL removed (a webhook may echo what it was sent to); empty for an empty body.
async fn body_start(mut response: reqwest::Response, url: &Url) -> String {
    // A few KB at most: an error page may be large, only its start is shown.
    let mut bytes = Vec::new();
    while bytes.len() < 4096 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let text: String = scrub(&text, url)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let text: String = text.chars().take(MAX_BODY_CHARS).collect();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// `text` with every part of `url` that may be secret replaced by `…`: the whole URL, the
/// user information, each path segment and each query value (percent-encoded and decoded).
fn scrub(text: &str, url: &Url) -> String {
    let mut secrets: Vec<String> = vec![url.as_str().to_owned()];
    let mut add = |part: &str| {
        if part.len() >= 4 {
            secrets.push(part.to_owned());
            secrets.push(percent_decoded(part));
        }
    };
    add(url.username());
    add(url.password().unwrap_or_default());
    for segment in url.path_segments().into_iter().flatten() {
        add(segment);
    }
    if let Some(query) = url.query() {
        add(query);
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            add(name);
            add(value);
        }
    }
    for (name, value) in url.query_pairs() {
        add(&name);
        add(&value);
    }
    // Longest first, so that a segment inside the whole URL does not leave the rest behind.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let mut text = text.to_owned();
    for secret in &secrets {
        if !secret.is_empty() {
            text = text.replace(secret.as_str(), "…");
        }
    }
    text
}

fn percent_decoded(part: &str) -> String {
    url::form_urlencoded::parse(format!("x={part}").as_bytes())
        .next()
        .map_or_else(|| part.to_owned(), |(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLACK: &str =
        "https://hooks.slack.com/services/T000/B000/SECRET-TOKEN-123?sig=SECRET-SIG";

    #[test]
    fn a_webhook_is_shown_by_scheme_and_host_only() {
        let url: Url = SLACK.parse().unwrap();
        assert_eq!(redacted(&url), "https://hooks.slack.com/…");
        let url: Url = "http://user:pass@127.0.0.1:8123/hook/x?sig=y"
            .parse()
            .unwrap();
        assert_eq!(redacted(&url), "http://127.0.0.1:8123/…");
        let notifier = Notifier::new(SLACK.parse().unwrap(), &HttpOptions::default()).unwrap();
        let debug = format!("{notifier:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
    }

    #[test]
    fn secret_parts_of_the_url_are_scrubbed_from_text() {
        let url: Url = SLACK.parse().unwrap();
        let text = format!(
            "error sending request for url ({SLACK}): token SECRET-TOKEN-123 sig=SECRET-SIG, path /services/T000/B000/SECRET-TOKEN-123"
        );
        let scrubbed = scrub(&text, &url);
        assert!(!scrubbed.contains("SECRET"), "{scrubbed}");
        assert!(
            scrubbed.starts_with("error sending request for url (…): token …"),
            "{scrubbed}"
        );
        let encoded: Url = "https://example.org/hook?sig=a%2Fb%3Dc".parse().unwrap();
        assert_eq!(scrub("sig a/b=c and a%2Fb%3Dc", &encoded), "sig … and …");
    }

    #[test]
    fn a_refused_url_is_named_without_its_secret() {
        let url: Url = "http://hooks.example.com/services/T000/B000/SECRET"
            .parse()
            .unwrap();
        let err = Notifier::new(url, &HttpOptions::default()).unwrap_err();
        assert!(!err.to_string().contains("SECRET"), "{err}");
        assert!(
            err.to_string().contains("http://hooks.example.com/…"),
            "{err}"
        );
    }

    fn quick() -> HttpOptions {
        HttpOptions {
            attempt_timeout: Duration::from_secs(2),
            max_retries: 2,
            initial_retry_delay: Duration::from_millis(10),
            call_timeout: Duration::from_secs(10),
            extra_ca: None,
        }
    }

    #[tokio::test]
    async fn a_failed_send_names_the_host_and_never_the_secret() {
        // A port nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url: Url =
            format!("http://127.0.0.1:{port}/services/T000/B000/SECRET-TOKEN-123?sig=SECRET-SIG")
                .parse()
                .unwrap();
        let err = Notifier::new(url, &quick())
            .unwrap()
            .send("hi")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("notifying http://127.0.0.1:{port}/…: ")),
            "{text}"
        );
        assert!(!text.contains("SECRET"), "{text}");
        assert!(!format!("{err:?}").contains("SECRET"), "{err:?}");
    }

    #[tokio::test]
    async fn an_error_answer_is_reported_with_its_status_and_a_scrubbed_body() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("no service at {uri}\n(token SECRET-TOKEN-123)"),
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let url: Url = format!("http://{addr}/services/T000/B000/SECRET-TOKEN-123?sig=SECRET-SIG")
            .parse()
            .unwrap();
        let err = Notifier::new(url, &quick())
            .unwrap()
            .send("hi")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("notifying http://{addr}/…: the webhook answered 500 Internal Server Error: no service at /…/…/…/…?… (token …)")
        );
        // 1 try and 2 retries.
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_webhook_asking_for_an_hour_is_not_waited_for() {
        let app = axum::Router::new().fallback(|| async {
            (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "3600")],
                "rate limited",
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let url: Url = format!("http://{addr}/hook/SECRET").parse().unwrap();
        let options = HttpOptions {
            call_timeout: Duration::from_secs(120),
            ..quick()
        };
        let started = std::time::Instant::now();
        let err = Notifier::new(url, &options)
            .unwrap()
            .send("hi")
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            err.to_string(),
            format!("notifying http://{addr}/…: the webhook throttled the message (429 Too Many Requests) and asked to wait 3600 s, more than the 60 s tagfence waits at most; the message was not sent")
        );
    }
}
