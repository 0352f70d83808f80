//! The HTTP pipeline of every ARM call and of the Service Tags download, and its error type.
//! Blob storage and webhooks share its options (`HttpOptions`), its reading of `Retry-After`
//! and `error_chain`.
//!
//! Built on `azure_core`'s `Pipeline`, whose retry policy retries 408, 429 and 5xx responses and
//! transport failures with exponential back-off and honours `Retry-After` (and
//! `x-ms-retry-after-ms`) on 429 and 503. On top of it:
//! - every attempt has a timeout (the reqwest client's), and every call a total deadline;
//! - the bearer token policy refuses plain HTTP, except to a loopback host, so that tests and
//!   the demo can use the local emulator while no token ever leaves the machine unencrypted;
//! - a 401 makes it ask the credential for a new token (not the cached one, see
//!   the auth module's `Renewable`) and send the request once more: a token refused before its
//!   `expires_on` (server-side expiry, revocation, clock skew) would otherwise stay cached and
//!   be refused again on every call;
//! - a 429 or 503 whose `Retry-After` asks for more than [`MAX_RETRY_AFTER`], or for more than
//!   the call has left before its deadline, fails the call at once ([`AzureError::Throttled`]):
//!   waiting would only end in "no answer within 120 s" although Azure answered at once;
//! - ARM error bodies (`{"error":{"code","message"}}`) become `code: message`.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::{TokenCredential, TokenRequestOptions};
use azure_core::http::headers::AUTHORIZATION;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{
    ClientMethodOptions, ClientOptions, Context, ExponentialRetryOptions, Pipeline,
    PipelineSendOptions, RawResponse, Request, RetryOptions, StatusCode, Transport,
};
use azure_core::time::OffsetDateTime;
use serde::Deserialize;
use tokio::time::Instant;

use super::is_loopback;

/// Put in a token request's context (`TokenRequestOptions::method_options.context`) when the
/// service refused the token last handed out: the renewable credential of the
/// auth module then hands out a new one rather than the cached one. Holds a fingerprint of the refused token, never the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedToken(u64);

impl RefusedToken {
    /// The marker for a token (`Bearer` prefix or not).
    pub fn of(token: &str) -> Self {
        RefusedToken(fingerprint(token.strip_prefix("Bearer ").unwrap_or(token)))
    }
}

fn fingerprint(token: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    token.hash(&mut hasher);
    hasher.finish()
}

/// How hard to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Timeout of one attempt (connect, send, receive the whole response).
    pub attempt_timeout: Duration,
    /// Retries after the first attempt, for 408/429/5xx and transport failures.
    pub max_retries: u32,
    /// First back-off delay; it doubles with each retry (plus up to 255 ms of jitter), unless
    /// the server's `Retry-After` asks for longer.
    pub initial_retry_delay: Duration,
    /// Deadline for a whole call, retries included.
    pub call_timeout: Duration,
    /// PEM certificates trusted besides the system roots (`--ca-file`), by the pipelines and
    /// the webhook's client.
    pub extra_ca: Option<Vec<u8>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            attempt_timeout: Duration::from_secs(30),
            max_retries: 4,
            initial_retry_delay: Duration::from_millis(800),
            call_timeout: Duration::from_secs(120),
            extra_ca: None,
        }
    }
}

/// The longest `Retry-After` a call waits for. A throttled call that is asked to wait longer
/// fails at once: Azure's own waits are seconds, and an answer asking for an hour (or naming a
/// date years away) is better reported now than waited out until the call's deadline.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What a wait asked by a throttling answer was measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitLimit {
    /// [`MAX_RETRY_AFTER`].
    Cap(Duration),
    /// What was left of the call's deadline (`total`).
    Deadline { left: Duration, total: Duration },
}

impl fmt::Display for WaitLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitLimit::Cap(cap) => write!(f, "the {} tagfence waits at most", seconds(*cap)),
            WaitLimit::Deadline { left, total } => write!(
                f,
                "the {} left of the call's {} deadline",
                seconds(*left),
                seconds(*total)
            ),
        }
    }
}

/// A duration for a message: whole seconds, or tenths below ten seconds.
pub fn seconds(duration: Duration) -> String {
    if duration < Duration::from_secs(10) && duration.subsec_millis() != 0 {
        format!("{:.1} s", duration.as_secs_f64())
    } else {
        format!("{} s", duration.as_secs())
    }
}

/// A failed Azure call. Messages start with what was being done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AzureError {
    /// The service answered with an error status.
    #[error("{operation}: {code}: {message} (HTTP {status})")]
    Api {
        operation: String,
        status: u16,
        code: String,
        message: String,
    },
    /// No usable answer: connection refused or dropped, attempt timed out, retries exhausted.
    #[error("{operation}: {detail}")]
    Transport { operation: String, detail: String },
    /// The whole call, retries included, took longer than its deadline.
    #[error("{operation}: no answer within {seconds} s")]
    Timeout { operation: String, seconds: u64 },
    /// No token could be obtained.
    #[error("{operation}: getting a token: {detail}")]
    Token { operation: String, detail: String },
    /// A write ARM accepted as a long-running operation (a registry's update) had not finished
    /// when tagfence stopped following it: it may still land, so it is not sent again now; the
    /// next run reads the resource and reconciles it.
    #[error("{operation}: the update was accepted but had not finished after {seconds} s; it may still land, so it is not sent again now (the next run reads the resource and reconciles it)")]
    Unfinished { operation: String, seconds: u64 },
    /// The answer was not what the API defines.
    #[error("{operation}: unexpected response: {detail}")]
    Decode { operation: String, detail: String },
    /// Azure throttled the call (429 or 503) and asked for a wait longer than the call may
    /// spend; the request was refused, so it was not carried out.
    #[error("{operation}: Azure throttled the request ({status} {reason}) and asked to wait {}, more than {limit}; the request was not carried out, try again later", seconds(*.wait))]
    Throttled {
        operation: String,
        status: u16,
        reason: String,
        wait: Duration,
        limit: WaitLimit,
    },
}

impl AzureError {
    /// Whether trying again later may succeed (throttling, server errors, transport trouble),
    /// as opposed to a request that is wrong or not allowed.
    pub fn is_transient(&self) -> bool {
        match self {
            AzureError::Api { status, .. } => matches!(status, 408 | 429 | 500..=599),
            // Later, not within this call: see `Throttled`.
            AzureError::Transport { .. }
            | AzureError::Timeout { .. }
            | AzureError::Token { .. }
            | AzureError::Throttled { .. }
            | AzureError::Unfinished { .. } => true,
            AzureError::Decode { .. } => false,
        }
    }

    /// The HTTP status of an API error or a throttled call.
    pub fn status(&self) -> Option<u16> {
        match self {
            AzureError::Api { status, .. } | AzureError::Throttled { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The wait a throttling answer asks for, read as `azure_core`'s retry policy reads it (1.x,
/// `get_retry_after` with the headers `azure_core::http::Pipeline` configures), so that what is
/// refused here is exactly what the retry policy would otherwise wait for: the first of
/// `x-ms-retry-after-ms`, `retry-after-ms` (integer milliseconds) and `Retry-After` (integer
/// seconds, or an HTTP date, RFC 7231) that is present *and* reads; a header that does not read
/// is skipped. A negative wait or a date in the past is no wait. `header` looks a header up by
/// its lower-case name.
pub fn requested_wait<'h>(
    header: impl Fn(&'static str) -> Option<&'h str>,
    now: OffsetDateTime,
) -> Option<Duration> {
    let millis = |ms: i64| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    for (name, standard) in [
        ("x-ms-retry-after-ms", false),
        ("retry-after-ms", false),
        ("retry-after", true),
    ] {
        let Some(value) = header(name) else {
            continue;
        };
        let wait = if standard {
            value
                .parse::<i64>()
                .ok()
                .map(|secs| Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
                .or_else(|| {
                    azure_core::time::parse_rfc7231(value).ok().map(|at| {
                        let ms = (at - now).whole_milliseconds().max(0);
                        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
                    })
                })
        } else {
            value.parse::<i64>().ok().map(millis)
        };
        if wait.is_some() {
            return wait;
        }
    }
    None
}

/// When the call that sends a request must be over; put in the request's context by [`send`].
#[derive(Debug, Clone, Copy)]
struct CallDeadline {
    at: Instant,
    total: Duration,
}

/// Why a try was cut short: the wait its throttling answer asked for is not worth waiting.
#[derive(Debug, thiserror::Error)]
#[error("throttled ({status}) with a wait of {}, more than {limit}", seconds(*.wait))]
struct ThrottledTry {
    status: StatusCode,
    wait: Duration,
    limit: WaitLimit,
}

/// Ends a call at once when a 429 or 503 asks for a wait longer than [`MAX_RETRY_AFTER`] or
/// than the call has left. A per-try policy, so it sees each answer before the retry policy,
/// which would otherwise sleep for whatever the answer asks (the call's deadline cuts that
/// sleep short only to report a timeout). Its error is not a transport error, so the retry
/// policy passes it on without another try.
#[derive(Debug)]
struct FailFastThrottling;

#[async_trait]
impl Policy for FailFastThrottling {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let response = next[0].send(ctx, request, &next[1..]).await?;
        let status = response.status();
        // The statuses whose Retry-After the retry policy honours.
        if !matches!(
            status,
            StatusCode::TooManyRequests | StatusCode::ServiceUnavailable
        ) {
            return Ok(response);
        }
        let headers = response.headers();
        let Some(wait) = requested_wait(
            |name| headers.get_optional_str(&name.into()),
            OffsetDateTime::now_utc(),
        ) else {
            return Ok(response);
        };
        let limit = match ctx.value::<CallDeadline>() {
            Some(deadline) => {
                let left = deadline.at.saturating_duration_since(Instant::now());
                if left < MAX_RETRY_AFTER {
                    WaitLimit::Deadline {
                        left,
                        total: deadline.total,
                    }
                } else {
                    WaitLimit::Cap(MAX_RETRY_AFTER)
                }
            }
            None => WaitLimit::Cap(MAX_RETRY_AFTER),
        };
        let allowed = match limit {
            WaitLimit::Cap(cap) => cap,
            WaitLimit::Deadline { left, .. } => left,
        };
        if wait <= allowed {
            return Ok(response);
        }
        tracing::debug!(
            status = u16::from(status),
            wait_ms = wait.as_millis() as u64,
            "throttled with a wait longer than allowed; not retrying"
        );
        Err(azure_core::Error::new(
            azure_core::error::ErrorKind::Other,
            ThrottledTry {
                status,
                wait,
                limit,
            },
        ))
    }
}

/// The [`ThrottledTry`] somewhere in an error's chain (the retry policy wraps it).
fn throttled_try<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e ThrottledTry> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(throttled) = err.downcast_ref::<ThrottledTry>() {
            return Some(throttled);
        }
        current = err.source();
    }
    None
}

/// Sends a bearer token from a credential: through `azure_core`'s own policy for https, and
/// directly for plain http to a loopback host (the stock policy refuses all plain http).
#[derive(Debug)]
struct BearerPolicy {
    stock: BearerTokenAuthorizationPolicy,
    credential: Arc<dyn TokenCredential>,
    scope: String,
}

#[async_trait]
impl Policy for BearerPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let response = self.send_once(ctx, request, next).await?;
        if response.status() != StatusCode::Unauthorized {
            return Ok(response);
        }
        // The token was refused although the credential still holds it as valid: have the
        // credential start over, then try once more (a second 401 is the answer).
        let Some(sent) = request
            .headers()
            .get_optional_str(&AUTHORIZATION)
            .map(RefusedToken::of)
        else {
            return Ok(response);
        };
        tracing::info!(url = %request.url().path(), "the service refused the token (401); getting a new one and trying once more");
        let options = TokenRequestOptions {
            method_options: ClientMethodOptions {
                context: Context::new().with_value(sent),
            },
        };
        self.credential
            .get_token(&[self.scope.as_str()], Some(options))
            .await?;
        request.body_mut().reset().await?;
        self.send_once(ctx, request, next).await
    }
}

impl BearerPolicy {
    async fn send_once(
        &self,
        ctx: &Context<'_>,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if request.url().scheme() == "https" {
            return self.stock.send(ctx, request, next).await;
        }
        if request.url().scheme() != "http" || !is_loopback(request.url()) {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                format!(
                    "refusing to send a token to {}: plain http is allowed only for loopback hosts",
                    request.url().host_str().unwrap_or("?")
                ),
            ));
        }
        // The credential caches tokens per scope (azure_identity's TokenCache), so this does
        // not ask the identity endpoint on every request.
        let token = self
            .credential
            .get_token(&[self.scope.as_str()], None)
            .await?;
        request.insert_header("authorization", format!("Bearer {}", token.token.secret()));
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// Builds a pipeline. With `auth`, every request carries a bearer token for the scope.
pub fn pipeline(
    auth: Option<(Arc<dyn TokenCredential>, String)>,
    options: &HttpOptions,
) -> Pipeline {
    let bearer = auth.map(|(credential, scope)| bearer_policy(credential, scope));
    build_pipeline(bearer, options, true)
}

/// The bearer policy for `credential` and `scope`, to share between pipelines: it caches the
/// token (over https), so pipelines that share it also share a token renewed after a 401,
/// instead of each meeting the refused token once more.
pub fn bearer_policy(credential: Arc<dyn TokenCredential>, scope: String) -> Arc<dyn Policy> {
    Arc::new(BearerPolicy {
        stock: BearerTokenAuthorizationPolicy::new(credential.clone(), [scope.clone()]),
        credential,
        scope,
    })
}

/// A pipeline with a given (shared) bearer policy.
pub fn pipeline_with(bearer: Arc<dyn Policy>, options: &HttpOptions) -> Pipeline {
    build_pipeline(Some(bearer), options, true)
}

/// A pipeline for downloading documents (the Service Tags file): no token, and no transparent
/// decompression. An answer with `Content-Encoding: gzip` is handed over as it came, and the
/// Service Tags parser gunzips it with its size limit (`MAX_DOCUMENT_BYTES`); decompressing here
/// would first hold any amount in memory (a 2 MB answer can expand to gigabytes).
pub fn download_pipeline(options: &HttpOptions) -> Pipeline {
    build_pipeline(None, options, false)
}

/// `builder` trusting the certificates of `--ca-file` besides the system roots. They were
/// checked when the configuration was read (config's `extra_ca`), so nothing is dropped here.
pub fn trusting_extra_ca(
    mut builder: reqwest::ClientBuilder,
    options: &HttpOptions,
) -> reqwest::ClientBuilder {
    if let Some(pem) = &options.extra_ca {
        for certificate in reqwest::Certificate::from_pem_bundle(pem).unwrap_or_default() {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
}

fn build_pipeline(
    bearer: Option<Arc<dyn Policy>>,
    options: &HttpOptions,
    decompress: bool,
) -> Pipeline {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(options.attempt_timeout.min(Duration::from_secs(10)))
        .timeout(options.attempt_timeout)
        // REST guidelines discourage redirects; following them could also carry a token away.
        .redirect(reqwest::redirect::Policy::none());
    if !decompress {
        builder = builder.no_gzip();
    }
    builder = trusting_extra_ca(builder, options);
    let client = builder.build().unwrap_or_else(|_| reqwest::Client::new());
    let client_options = ClientOptions {
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(
                options.initial_retry_delay.as_millis() as i64,
            ),
            max_retries: options.max_retries,
            max_total_elapsed: azure_core::time::Duration::seconds(
                options.call_timeout.as_secs() as i64
            ),
            max_delay: azure_core::time::Duration::seconds(30),
        }),
        transport: Some(Transport::new(Arc::new(client))),
        ..ClientOptions::default()
    };
    // Outermost of the per-try policies: it sees every answer, the bearer policy's second try
    // after a 401 included.
    let mut per_try: Vec<Arc<dyn Policy>> = vec![Arc::new(FailFastThrottling)];
    per_try.extend(bearer);
    Pipeline::new(
        option_env!("CARGO_PKG_NAME"),
        option_env!("CARGO_PKG_VERSION"),
        client_options,
        Vec::new(),
        per_try,
        None,
    )
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

/// Sends `request` and returns the successful response.
///
/// # Errors
/// [`AzureError`] for an error status (with ARM's code and message), a transport failure after
/// the retries, a token failure, the call deadline, or a throttling answer asking for a longer
/// wait than the call may spend ([`AzureError::Throttled`]).
pub async fn send(
    pipeline: &Pipeline,
    request: &mut Request,
    operation: &str,
    options: &HttpOptions,
) -> Result<RawResponse, AzureError> {
    let ctx = Context::new().with_value(CallDeadline {
        at: Instant::now() + options.call_timeout,
        total: options.call_timeout,
    });
    let sent = pipeline.send(
        &ctx,
        request,
        Some(PipelineSendOptions {
            skip_checks: true,
            ..Default::default()
        }),
    );
    let response = match tokio::time::timeout(options.call_timeout, sent).await {
        Err(_) => {
            return Err(AzureError::Timeout {
                operation: operation.to_owned(),
                seconds: options.call_timeout.as_secs(),
            })
        }
        Ok(Err(err)) => {
            if let Some(throttled) = throttled_try(&err) {
                return Err(AzureError::Throttled {
                    operation: operation.to_owned(),
                    status: u16::from(throttled.status),
                    reason: canonical_reason(throttled.status),
                    wait: throttled.wait,
                    limit: throttled.limit,
                });
            }
            let detail = error_chain(&err);
            return Err(match err.kind() {
                azure_core::error::ErrorKind::Credential => AzureError::Token {
                    operation: operation.to_owned(),
                    detail,
                },
                _ => AzureError::Transport {
                    operation: operation.to_owned(),
                    detail,
                },
            });
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let (code, message) = match serde_json::from_slice::<ErrorEnvelope>(response.body()) {
        Ok(ErrorEnvelope { error }) => (
            error.code.unwrap_or_else(|| canonical_reason(status)),
            error.message.unwrap_or_default(),
        ),
        Err(_) => {
            let body = String::from_utf8_lossy(response.body());
            let body: String = body.chars().take(200).collect();
            (canonical_reason(status), body.trim().to_owned())
        }
    };
    Err(AzureError::Api {
        operation: operation.to_owned(),
        status: u16::from(status),
        code,
        message,
    })
}

fn canonical_reason(status: StatusCode) -> String {
    format!("{status:?}")
}

/// The error and its causes on one line.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    // One line: some causes (the developer-tools credential's, listing every tool it tried)
    // span several, and a message is printed once, on one line.
    if text.contains('\n') {
        text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_the_ones_worth_retrying() {
        let api = |status| AzureError::Api {
            operation: "x".into(),
            status,
            code: "C".into(),
            message: "m".into(),
        };
        assert!(api(429).is_transient());
        assert!(api(503).is_transient());
        assert!(!api(400).is_transient());
        assert!(!api(403).is_transient());
        assert!(!api(404).is_transient());
        assert_eq!(api(404).to_string(), "x: C: m (HTTP 404)");
    }

    /// 2026-11-25T06:30:00Z, a Wednesday.
    fn fixed_now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_795_588_200).unwrap()
    }

    #[test]
    fn the_wait_asked_is_read_exactly_as_azure_core_reads_it() {
        use azure_core::http::headers::{
            Headers, RETRY_AFTER, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS,
        };
        // (headers, the wait in ms)
        type Case = (Vec<(&'static str, &'static str)>, Option<u64>);
        let cases: Vec<Case> = vec![
            (vec![], None),
            (vec![("retry-after", "3600")], Some(3_600_000)),
            (vec![("retry-after", "0")], Some(0)),
            (vec![("retry-after", "-5")], Some(0)),
            (vec![("retry-after", " 7")], None),
            (vec![("retry-after", "1.5")], None),
            (vec![("retry-after", "soon")], None),
            (vec![("retry-after", "99999999999999999999")], None),
            // An HTTP date: 10 s after now, in 2037, in the past, and not quite one.
            (
                vec![("retry-after", "Wed, 25 Nov 2026 06:30:10 GMT")],
                Some(10_000),
            ),
            (
                vec![("retry-after", "Fri, 01 May 2037 00:00:00 GMT")],
                Some(329_160_600_000),
            ),
            (
                vec![("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")],
                Some(0),
            ),
            (vec![("retry-after", "2037-05-01T00:00:00Z")], None),
            (vec![("retry-after-ms", "1500")], Some(1500)),
            (
                vec![("x-ms-retry-after-ms", "9223372036854775807")],
                Some(i64::MAX as u64),
            ),
            // Order: x-ms-retry-after-ms, retry-after-ms, Retry-After; one that does not read is
            // skipped.
            (
                vec![("retry-after", "1"), ("retry-after-ms", "250")],
                Some(250),
            ),
            (
                vec![
                    ("retry-after-ms", "250"),
                    ("x-ms-retry-after-ms", "3600000"),
                ],
                Some(3_600_000),
            ),
            (
                vec![("x-ms-retry-after-ms", "later"), ("retry-after", "2")],
                Some(2000),
            ),
            (
                vec![("retry-after-ms", "Fri, 01 May 2037 00:00:00 GMT")],
                None,
            ),
        ];
        for (given, expected) in cases {
            let mut headers = Headers::new();
            for (name, value) in &given {
                headers.insert(*name, *value);
            }
            let ours = requested_wait(|name| headers.get_optional_str(&name.into()), fixed_now());
            assert_eq!(ours.map(|d| d.as_millis() as u64), expected, "{given:?}");
            // azure_core's reading, negative waits counted as none (it waits the longer of the
            // two, its own back-off and the answer's).
            let theirs = azure_core::http::policies::get_retry_after(
                &headers,
                fixed_now,
                &[X_MS_RETRY_AFTER_MS, RETRY_AFTER_MS, RETRY_AFTER],
            )
            .map(|d| d.whole_milliseconds().max(0) as u64);
            assert_eq!(theirs, expected, "azure_core on {given:?}");
        }
    }

    #[test]
    fn waits_are_shown_in_seconds() {
        assert_eq!(seconds(Duration::from_secs(3600)), "3600 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(seconds(Duration::from_millis(12_345)), "12 s");
        assert_eq!(seconds(Duration::ZERO), "0 s");
    }

    /// A server that answers the first `throttled` requests with 429 and `headers`, then 200;
    /// returns its URL and the number of requests it saw.
    async fn throttling_server(
        throttled: usize,
        headers: Vec<(&'static str, String)>,
    ) -> (url::Url, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let app = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            let headers = headers.clone();
            async move {
                use axum::response::IntoResponse;
                if counter.fetch_add(1, Ordering::SeqCst) < throttled {
                    let mut response = (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        r#"{"error":{"code":"SubscriptionRequestsThrottled","message":"Number of 'write' requests for subscription exceeded."}}"#,
                    )
                        .into_response();
                    for (name, value) in headers {
                        response
                            .headers_mut()
                            .insert(name, value.parse().unwrap());
                    }
                    response
                } else {
                    r#"{"ok":true}"#.into_response()
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/vault", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url.parse().unwrap(), seen)
    }

    fn fast(call_timeout: Duration) -> HttpOptions {
        HttpOptions {
            attempt_timeout: Duration::from_secs(5),
            max_retries: 3,
            initial_retry_delay: Duration::from_millis(10),
            call_timeout,
            extra_ca: None,
        }
    }

    async fn patch(url: &url::Url, options: &HttpOptions) -> Result<RawResponse, AzureError> {
        let mut request = Request::new(url.clone(), azure_core::http::Method::Patch);
        request.set_body(b"{}".to_vec());
        send(
            &pipeline(None, options),
            &mut request,
            "writing the firewall of vault kv-01",
            options,
        )
        .await
    }

    #[tokio::test]
    async fn a_wait_longer_than_the_cap_fails_the_call_at_once() {
        let in_2037 = "Fri, 01 May 2037 00:00:00 GMT".to_owned();
        for (header, value, asked) in [
            ("retry-after", "3600".to_owned(), "3600 s".to_owned()),
            (
                "retry-after-ms",
                "86400000".to_owned(),
                "86400 s".to_owned(),
            ),
            ("x-ms-retry-after-ms", "61000".to_owned(), "61 s".to_owned()),
            ("retry-after", in_2037, String::new()),
        ] {
            let (url, seen) = throttling_server(usize::MAX, vec![(header, value.clone())]).await;
            let options = fast(Duration::from_secs(120));
            let started = std::time::Instant::now();
            let err = patch(&url, &options).await.unwrap_err();
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?}",
                started.elapsed()
            );
            assert_eq!(
                seen.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "not retried"
            );
            let text = err.to_string();
            assert!(
                text.starts_with("writing the firewall of vault kv-01: Azure throttled the request (429 TooManyRequests) and asked to wait "),
                "{text}"
            );
            assert!(
                text.ends_with(", more than the 60 s tagfence waits at most; the request was not carried out, try again later"),
                "{text}"
            );
            assert!(
                text.contains(&format!("asked to wait {asked}")),
                "{header}: {value}: {text}"
            );
            assert!(matches!(err, AzureError::Throttled { status: 429, .. }));
            assert_eq!(err.status(), Some(429));
            assert!(err.is_transient());
        }
    }

    #[tokio::test]
    async fn a_wait_longer_than_what_is_left_of_the_call_fails_it_at_once() {
        let (url, seen) =
            throttling_server(usize::MAX, vec![("retry-after", "5".to_owned())]).await;
        let options = fast(Duration::from_secs(3));
        let started = std::time::Instant::now();
        let err = patch(&url, &options).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
        let text = err.to_string();
        // What is left is the deadline less the first try (a few ms).
        assert!(
            text.contains("asked to wait 5 s, more than the 2.")
                || text.contains("asked to wait 5 s, more than the 3.0 s"),
            "{text}"
        );
        assert!(
            text.contains(" s left of the call's 3 s deadline; the request was not carried out"),
            "{text}"
        );
        assert!(matches!(
            err,
            AzureError::Throttled {
                limit: WaitLimit::Deadline { .. },
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_short_wait_is_waited_and_the_call_succeeds() {
        let (url, seen) = throttling_server(2, vec![("retry-after-ms", "200".to_owned())]).await;
        let options = fast(Duration::from_secs(10));
        let started = std::time::Instant::now();
        let response = patch(&url, &options)
            .await
            .expect("retried until it succeeds");
        assert_eq!(response.status(), StatusCode::Ok);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        // Without a wait asked, the retries run out and the last answer is the error.
        let (url, seen) = throttling_server(usize::MAX, Vec::new()).await;
        let err = patch(&url, &options).await.unwrap_err();
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert!(matches!(err, AzureError::Api { status: 429, .. }), "{err}");
    }
}
