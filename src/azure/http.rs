//! The HTTP pipeline every Azure call goes through, and its error type.
//!
//! Built on `azure_core`'s `Pipeline`, whose retry policy retries 408, 429 and 5xx responses and
//! transport failures with exponential back-off and honours `Retry-After` (and
//! `x-ms-retry-after-ms`) on 429 and 503. On top of it:
//! - every attempt has a timeout (the reqwest client's), and every call a total deadline;
//! - the bearer token policy refuses plain HTTP, except to a loopback host, so that tests and
//!   the demo can use the local emulator while no token ever leaves the machine unencrypted;
//! - a 401 makes it ask the credential for a new token (not the cached one, see
//!   [`super::auth::Renewable`]) and send the request once more: a token refused before its
//!   `expires_on` (server-side expiry, revocation, clock skew) would otherwise stay cached and
//!   be refused again on every call;
//! - ARM error bodies (`{"error":{"code","message"}}`) become `code: message`.

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
use serde::Deserialize;

use super::auth::RefusedToken;
use super::is_loopback;

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
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            attempt_timeout: Duration::from_secs(30),
            max_retries: 4,
            initial_retry_delay: Duration::from_millis(800),
            call_timeout: Duration::from_secs(120),
        }
    }
}

/// A failed Azure call. Messages start with what was being done.
#[derive(Debug, thiserror::Error)]
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
    /// The answer was not what the API defines.
    #[error("{operation}: unexpected response: {detail}")]
    Decode { operation: String, detail: String },
}

impl AzureError {
    /// Whether trying again later may succeed (throttling, server errors, transport trouble),
    /// as opposed to a request that is wrong or not allowed.
    pub fn is_transient(&self) -> bool {
        match self {
            AzureError::Api { status, .. } => matches!(status, 408 | 429 | 500..=599),
            AzureError::Transport { .. }
            | AzureError::Timeout { .. }
            | AzureError::Token { .. } => true,
            AzureError::Decode { .. } => false,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            AzureError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
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
    build_pipeline(auth, options, true)
}

/// A pipeline for downloading documents (the Service Tags file): no token, and no transparent
/// decompression. An answer with `Content-Encoding: gzip` is handed over as it came, and the
/// Service Tags parser gunzips it with its size limit (`MAX_DOCUMENT_BYTES`); decompressing here
/// would first hold any amount in memory (a 2 MB answer can expand to gigabytes).
pub fn download_pipeline(options: &HttpOptions) -> Pipeline {
    build_pipeline(None, options, false)
}

fn build_pipeline(
    auth: Option<(Arc<dyn TokenCredential>, String)>,
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
    let per_try: Vec<Arc<dyn Policy>> = match auth {
        Some((credential, scope)) => vec![Arc::new(BearerPolicy {
            stock: BearerTokenAuthorizationPolicy::new(credential.clone(), [scope.clone()]),
            credential,
            scope,
        })],
        None => Vec::new(),
    };
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
/// the retries, a token failure, or the call deadline.
pub async fn send(
    pipeline: &Pipeline,
    request: &mut Request,
    operation: &str,
    options: &HttpOptions,
) -> Result<RawResponse, AzureError> {
    let ctx = Context::new();
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
}
