//! The small typed ARM client: GET and PATCH of a firewalled resource (any kind, see
//! [`super::kinds`]), the Service Tag Discovery API and Resource Graph.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::{Method, Pipeline, RawResponse, Request};
use serde_json::{json, Value};
use url::Url;

use super::budget::{
    Budget, BudgetLimits, GraphQuota, GRAPH_QUOTA_REMAINING_HEADER,
    GRAPH_QUOTA_RESETS_AFTER_HEADER, REMAINING_READS_HEADER, REMAINING_WRITES_HEADER,
};
use super::kinds;
use super::pipeline::{self, AzureError, HttpOptions};
use super::ResourceId;
use crate::core::gate::GatedWrite;
use crate::core::live::LiveAcl;
use crate::core::service_tags::ServiceTags;

/// Service Tag Discovery API version known to work: the one Microsoft's REST reference,
/// "Service Tags - List", shows.
pub const SERVICE_TAGS_API_VERSION: &str = "2023-09-01";

/// The header of a long-running operation's status URL.
const ASYNC_OPERATION_HEADER: &str = "azure-asyncoperation";

/// How often a long-running operation is asked about when it does not say (`Retry-After`).
const OPERATION_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Discovery API pages followed at most, in case a service keeps returning `nextLink`.
const MAX_SERVICE_TAG_PAGES: usize = 100;

/// Resource Graph API version: the latest stable in the spec (Azure/azure-rest-api-specs:
/// specification/resourcegraph/resource-manager/Microsoft.ResourceGraph/stable/2024-04-01).
pub const RESOURCE_GRAPH_API_VERSION: &str = "2024-04-01";

/// Rows per Resource Graph page (its maximum; UNVERIFIED, so a smaller page is followed too).
const RESOURCE_GRAPH_PAGE: u32 = 1000;

/// Resource Graph pages followed at most: a million rows.
const MAX_RESOURCE_GRAPH_PAGES: usize = 1000;

/// ARM requests in flight at most, over all subscriptions. Each subscription has its own lane of
/// vaults, so a fleet over many subscriptions would otherwise open a connection per vault at
/// once; an App Service or Functions instance is pre-allocated 128 SNAT ports for outbound
/// connections (Microsoft Learn, "Troubleshooting intermittent outbound connection errors in
/// Azure App Service"), and this stays well inside them. Measured in BENCHMARKS.md.
pub const MAX_IN_FLIGHT: usize = 64;

/// Where a Resource Graph query looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphScope {
    Subscriptions(Vec<String>),
    ManagementGroups(Vec<String>),
}

/// A vault as read.
#[derive(Debug, Clone)]
pub struct Resource {
    pub id: ResourceId,
    /// Its firewall, normalised.
    pub acl: LiveAcl,
    /// The document ARM returned, kept for logs and records.
    pub raw: Value,
}

impl Resource {
    /// The value of the vault's tag `name` (ARM tag names are case-insensitive).
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.raw
            .get("tags")
            .and_then(Value::as_object)?
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| value.as_str())
    }
}

/// One write taken from ARM's write budget ([`ArmClient::reserve_write`]), spent by
/// [`ArmClient::patch_network_acls`]. Dropped unused (the vault turned out to need no write),
/// the write stays spent: the budget errs on the slow side.
#[derive(Debug)]
#[must_use = "a reserved write is spent whether or not it is used"]
pub struct WriteSlot {
    subscription: String,
    waited: std::time::Duration,
}

impl WriteSlot {
    /// How long taking it waited for the budget.
    pub fn waited(&self) -> std::time::Duration {
        self.waited
    }
}

/// The ARM client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ArmClient {
    pipeline: Pipeline,
    /// The same pipeline without retries, for firewall writes: a write that failed is never
    /// sent again blind. The reconciler reads the vault again, passes the gate again and only
    /// then writes again, so that a person's edit made while ARM had tagfence wait (a
    /// `Retry-After` of up to a minute) is planned around rather than overwritten.
    write_pipeline: Pipeline,
    endpoint: Url,
    options: HttpOptions,
    /// Shared by every clone: one write budget and one read budget per subscription for the
    /// whole process, and the caller's Resource Graph quota.
    writes: Arc<Budget>,
    reads: Arc<Budget>,
    graph_quota: Arc<GraphQuota>,
    /// ARM requests in flight, shared by every clone ([`MAX_IN_FLIGHT`]). Taken after any
    /// budget wait, so a request waiting for its subscription's budget never holds up another
    /// subscription's.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// The credential and scope of the pipelines, to check that a token can be had at all.
    credential: Arc<dyn TokenCredential>,
    scope: String,
}

impl ArmClient {
    /// A client for the ARM `endpoint`, authenticating with `credential` for `scope`.
    ///
    /// # Errors
    /// When the endpoint is neither https nor a loopback http URL.
    pub fn new(
        endpoint: Url,
        credential: Arc<dyn TokenCredential>,
        scope: String,
        options: HttpOptions,
    ) -> Result<Self, super::EndpointError> {
        super::check_endpoint(&endpoint)?;
        let once = HttpOptions {
            max_retries: 0,
            ..options.clone()
        };
        // One bearer policy for both: a token renewed after a 401 on one is the other's too.
        let bearer = pipeline::bearer_policy(credential.clone(), scope.clone());
        Ok(ArmClient {
            write_pipeline: pipeline::pipeline_with(bearer.clone(), &once),
            pipeline: pipeline::pipeline_with(bearer, &options),
            credential,
            scope,
            endpoint,
            options,
            writes: Arc::new(Budget::with_limits(BudgetLimits::ARM_WRITES)),
            reads: Arc::new(Budget::with_limits(BudgetLimits::ARM_READS)),
            graph_quota: Arc::new(GraphQuota::default()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// Gets a token for ARM once, so that a credential that cannot give one (no `az login`, no
    /// managed identity) is reported once for the run rather than once per vault.
    ///
    /// # Errors
    /// [`AzureError::Token`], on one line.
    pub async fn check_token(&self) -> Result<(), AzureError> {
        let deadline = self.options.call_timeout;
        let scopes = [self.scope.as_str()];
        let got = tokio::time::timeout(deadline, self.credential.get_token(&scopes, None));
        match got.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(AzureError::Token {
                operation: "signing in to Azure Resource Manager".to_owned(),
                detail: pipeline::error_chain(&err),
            }),
            Err(_) => Err(AzureError::Timeout {
                operation: "signing in to Azure Resource Manager".to_owned(),
                seconds: deadline.as_secs(),
            }),
        }
    }

    /// The same client with its own write budget of `limits` (ARM's by default).
    #[must_use]
    pub fn with_write_budget(mut self, limits: BudgetLimits) -> Self {
        self.writes = Arc::new(Budget::with_limits(limits));
        self
    }

    /// The same client with at most `requests` ARM requests in flight ([`MAX_IN_FLIGHT`] by
    /// default; benchmarks vary it).
    #[must_use]
    pub fn with_max_in_flight(mut self, requests: usize) -> Self {
        self.in_flight = Arc::new(tokio::sync::Semaphore::new(requests.max(1)));
        self
    }

    /// The same client with its own read budget of `limits` (ARM's by default).
    #[must_use]
    pub fn with_read_budget(mut self, limits: BudgetLimits) -> Self {
        self.reads = Arc::new(Budget::with_limits(limits));
        self
    }

    /// How many times the reconciler may send one firewall write (the first and its retries),
    /// and how long it waits before the `attempt`-th retry (1-based): the HTTP retry settings,
    /// at least a second after a throttled answer.
    pub fn write_attempts(&self) -> u32 {
        self.options.max_retries + 1
    }

    /// See [`ArmClient::write_attempts`].
    pub fn write_retry_delay(&self, attempt: u32, throttled: bool) -> std::time::Duration {
        let delay = self
            .options
            .initial_retry_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(6));
        if throttled {
            delay.max(std::time::Duration::from_secs(1))
        } else {
            delay
        }
    }

    /// The ARM base URL.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    fn url(&self, path: &str, api_version: &str) -> Url {
        let mut url = self.endpoint.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url.set_query(Some(&format!("api-version={api_version}")));
        url
    }

    /// `GET` a firewalled resource (with its kind's api-version).
    ///
    /// # Errors
    /// [`AzureError`] from the call, or [`AzureError::Decode`] when the firewall cannot be read.
    pub async fn get_resource(&self, id: &ResourceId) -> Result<Resource, AzureError> {
        let operation = format!("reading {} {}", id.kind.noun(), id.name);
        let url = self.url(&id.to_string(), kinds::api_version(id.kind));
        let response = self.read(&id.subscription, url, &operation).await?;
        vault_from(id, response.body(), &operation)
    }

    /// Sends `request` through `pipeline` once a place among the requests in flight is free.
    async fn send(
        &self,
        pipeline: &Pipeline,
        request: &mut Request,
        operation: &str,
    ) -> Result<RawResponse, AzureError> {
        let _place = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        pipeline::send(pipeline, request, operation, &self.options).await
    }

    /// One ARM `GET` in `subscription`, paced by its read budget (a token taken before it is
    /// sent, the budget lowered to what ARM says is left).
    async fn read(
        &self,
        subscription: &str,
        url: Url,
        operation: &str,
    ) -> Result<RawResponse, AzureError> {
        note_wait(self.reads.acquire(subscription).await, "read");
        let mut request = Request::new(url, Method::Get);
        let response = self.send(&self.pipeline, &mut request, operation).await?;
        if let Some(remaining) = header_number(&response, REMAINING_READS_HEADER) {
            self.reads.observe_remaining(subscription, remaining);
        }
        Ok(response)
    }

    /// Takes one write from ARM's write budget for the vault's subscription, waiting while the
    /// budget is spent. A `PATCH` needs the slot this returns: the reconciler takes it *before*
    /// its last read of the vault, so that any wait for the budget (up to minutes across a
    /// thousand vaults) falls before that read, not between it and the write.
    pub async fn reserve_write(&self, id: &ResourceId) -> WriteSlot {
        let waited = self.writes.acquire(&id.subscription).await;
        note_wait(waited, "write");
        WriteSlot {
            subscription: id.subscription.to_ascii_lowercase(),
            waited,
        }
    }

    /// `PATCH` a vault's `networkAcls` with a write that passed the safety gate (the only way
    /// to make a [`GatedWrite`] is `core::gate::check`) and a write reserved by
    /// [`ArmClient::reserve_write`]; returns the vault as ARM answered. This is the client's only
    /// write of a firewall.
    ///
    /// # Errors
    /// [`AzureError`] from the call.
    pub async fn patch_network_acls(
        &self,
        id: &ResourceId,
        write: &GatedWrite,
        slot: WriteSlot,
    ) -> Result<Resource, AzureError> {
        debug_assert_eq!(slot.subscription, id.subscription.to_ascii_lowercase());
        let operation = format!("writing the firewall of {} {}", id.kind.noun(), id.name);
        debug_assert_eq!(write.kind(), id.kind);
        let mut request = Request::new(
            self.url(&id.to_string(), kinds::api_version(id.kind)),
            Method::Patch,
        );
        request.insert_header("content-type", "application/json");
        request.set_body(serde_json::to_vec(&write.body()).expect("a JSON value serialises"));
        let response = self
            .send(&self.write_pipeline, &mut request, &operation)
            .await?;
        if let Some(remaining) = header_number(&response, REMAINING_WRITES_HEADER) {
            self.writes.observe_remaining(&id.subscription, remaining);
        }
        // A registry's update is a long-running operation: `201 Created` with an
        // `Azure-AsyncOperation` URL to follow (Registries_Update in the Container Registry REST
        // spec). The firewall is what it is once the operation ends; the answer's body shows it
        // while still `Updating`.
        let accepted = matches!(u16::from(response.status()), 201 | 202);
        let first_wait = header_number(&response, "retry-after").map_or(OPERATION_POLL, |s| {
            std::time::Duration::from_secs(u64::from(s))
        });
        if let Some(status_url) =
            header_text(&response, ASYNC_OPERATION_HEADER).filter(|_| accepted)
        {
            let status_url = status_url.to_owned();
            self.await_operation(id, &status_url, first_wait, &operation)
                .await?;
            return self.get_resource(id).await;
        }
        vault_from(id, response.body(), &operation)
    }

    /// Follows a long-running operation's status URL until it ends, for at most the call
    /// timeout (`--http-call-timeout-secs`, 120 s by default: following the update is part of the
    /// write; the Container Registry documents that a rule takes "a few minutes" to take effect,
    /// but its update ends in seconds in Microsoft's examples, UNVERIFIED at scale), every `Retry-After` seconds ([`OPERATION_POLL`] when not given;
    /// between 0.1 s and 10 s), the first after `first_wait` (the write's own `Retry-After`).
    /// The URL must be on the ARM endpoint: the bearer token is never sent anywhere else.
    async fn await_operation(
        &self,
        id: &ResourceId,
        status_url: &str,
        first_wait: std::time::Duration,
        operation: &str,
    ) -> Result<(), AzureError> {
        let decode = |detail: String| AzureError::Decode {
            operation: operation.to_owned(),
            detail,
        };
        let url = Url::parse(status_url)
            .map_err(|err| decode(format!("its {ASYNC_OPERATION_HEADER} is no URL: {err}")))?;
        let same_origin = url.scheme() == self.endpoint.scheme()
            && url.host_str() == self.endpoint.host_str()
            && url.port_or_known_default() == self.endpoint.port_or_known_default();
        if !same_origin {
            return Err(decode(format!(
                "its {ASYNC_OPERATION_HEADER} URL is not on the ARM endpoint ({}); not followed",
                url.origin().ascii_serialization()
            )));
        }
        let started = std::time::Instant::now();
        let bounds = (
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(10),
        );
        let mut wait = first_wait.clamp(bounds.0, bounds.1);
        loop {
            // Never past the deadline: the last question is asked at it.
            let left = self.options.call_timeout.saturating_sub(started.elapsed());
            tokio::time::sleep(wait.min(left)).await;
            let response = self
                .read(
                    &id.subscription,
                    url.clone(),
                    &format!("{operation}: following the update"),
                )
                .await?;
            let status: Value = serde_json::from_slice(response.body())
                .map_err(|err| decode(format!("the operation's status is not JSON: {err}")))?;
            match status.get("status").and_then(Value::as_str) {
                Some(done) if done.eq_ignore_ascii_case("Succeeded") => return Ok(()),
                Some(ended)
                    if ["Failed", "Canceled"]
                        .iter()
                        .any(|e| ended.eq_ignore_ascii_case(e)) =>
                {
                    let error = status.get("error");
                    return Err(AzureError::Api {
                        operation: operation.to_owned(),
                        status: u16::from(response.status()),
                        code: error
                            .and_then(|e| e.get("code"))
                            .and_then(Value::as_str)
                            .unwrap_or(ended)
                            .to_owned(),
                        message: error
                            .and_then(|e| e.get("message"))
                            .and_then(Value::as_str)
                            .map_or_else(|| format!("the update ended {ended}"), str::to_owned),
                    });
                }
                _ => {}
            }
            if started.elapsed() >= self.options.call_timeout {
                return Err(AzureError::Unfinished {
                    operation: operation.to_owned(),
                    seconds: self.options.call_timeout.as_secs(),
                });
            }
            wait = header_number(&response, "retry-after")
                .map_or(OPERATION_POLL, |s| {
                    std::time::Duration::from_secs(u64::from(s))
                })
                .clamp(bounds.0, bounds.1);
        }
    }

    /// The Service Tag Discovery API for `subscription` (`location` only picks the API
    /// instance; the answer covers the whole cloud), every page followed and validated.
    ///
    /// # Errors
    /// [`AzureError`] from a call or a page that is not a valid Service Tags document.
    pub async fn service_tags(
        &self,
        subscription: &str,
        location: &str,
    ) -> Result<(ServiceTags, usize), AzureError> {
        let operation =
            format!("listing service tags (subscription {subscription}, location {location})");
        let path = format!("/subscriptions/{subscription}/providers/Microsoft.Network/locations/{location}/serviceTags");
        let mut url = self.url(&path, SERVICE_TAGS_API_VERSION);
        let mut document: Option<ServiceTags> = None;
        let mut bytes = 0;
        for _ in 0..MAX_SERVICE_TAG_PAGES {
            let response = self.read(subscription, url.clone(), &operation).await?;
            bytes += response.body().len();
            let page = ServiceTags::parse(response.body()).map_err(|err| AzureError::Decode {
                operation: operation.clone(),
                detail: pipeline::error_chain(&err),
            })?;
            let next = page.next_link.clone();
            match document.as_mut() {
                None => document = Some(page),
                Some(doc) => doc.append_page(page).map_err(|err| AzureError::Decode {
                    operation: operation.clone(),
                    detail: err.to_string(),
                })?,
            }
            let Some(next) = next else {
                return Ok((document.expect("set above"), bytes));
            };
            url = self.next_link(&next, &operation)?;
        }
        Err(AzureError::Decode {
            operation,
            detail: format!("more than {MAX_SERVICE_TAG_PAGES} pages"),
        })
    }

    /// Runs a Resource Graph query in `scope` and returns every row, all pages followed
    /// (`$skipToken`). The query must `project id` (Resource Graph pages stably only then).
    ///
    /// # Errors
    /// [`AzureError`] from a call, or [`AzureError::Decode`] for an answer without `data`.
    pub async fn resource_graph(
        &self,
        scope: &GraphScope,
        query: &str,
    ) -> Result<Vec<Value>, AzureError> {
        let operation = match scope {
            GraphScope::Subscriptions(ids) => format!(
                "querying Resource Graph in subscriptions {}",
                ids.join(", ")
            ),
            GraphScope::ManagementGroups(names) => format!(
                "querying Resource Graph in management groups {}",
                names.join(", ")
            ),
        };
        let url = self.url(
            "/providers/Microsoft.ResourceGraph/resources",
            RESOURCE_GRAPH_API_VERSION,
        );
        let mut rows = Vec::new();
        let mut skip_token: Option<String> = None;
        let mut tokens_seen = std::collections::HashSet::new();
        for _ in 0..MAX_RESOURCE_GRAPH_PAGES {
            let mut body = json!({
                "query": query,
                "options": {"$top": RESOURCE_GRAPH_PAGE, "resultFormat": "objectArray"},
            });
            match scope {
                GraphScope::Subscriptions(ids) => body["subscriptions"] = json!(ids),
                GraphScope::ManagementGroups(names) => body["managementGroups"] = json!(names),
            }
            if let Some(token) = &skip_token {
                body["options"]["$skipToken"] = json!(token);
            }
            let mut request = Request::new(url.clone(), Method::Post);
            request.insert_header("content-type", "application/json");
            request.set_body(serde_json::to_vec(&body).expect("a JSON value serialises"));
            let waited = self.graph_quota.wait().await;
            if !waited.is_zero() {
                tracing::info!(
                    waited_ms = waited.as_millis() as u64,
                    "waited for the Resource Graph quota to reset"
                );
            }
            let response = self.send(&self.pipeline, &mut request, &operation).await?;
            self.graph_quota.observe(
                header_text(&response, GRAPH_QUOTA_REMAINING_HEADER),
                header_text(&response, GRAPH_QUOTA_RESETS_AFTER_HEADER),
            );
            let page: Value =
                serde_json::from_slice(response.body()).map_err(|err| AzureError::Decode {
                    operation: operation.clone(),
                    detail: format!("the answer is not JSON: {err}"),
                })?;
            let Some(data) = page.get("data").and_then(Value::as_array) else {
                return Err(AzureError::Decode {
                    operation,
                    detail: "the answer has no data array".to_owned(),
                });
            };
            rows.extend(data.iter().cloned());
            skip_token = page
                .get("$skipToken")
                .and_then(Value::as_str)
                .filter(|token| !token.is_empty())
                .map(str::to_owned);
            match &skip_token {
                None => return Ok(rows),
                // A service repeating a token would be followed for a thousand pages.
                Some(token) if !tokens_seen.insert(token.clone()) => {
                    return Err(AzureError::Decode {
                        operation,
                        detail: "the answer repeats an earlier page's $skipToken".to_owned(),
                    })
                }
                Some(_) => {}
            }
        }
        Err(AzureError::Decode {
            operation,
            detail: format!("more than {MAX_RESOURCE_GRAPH_PAGES} pages"),
        })
    }

    /// A `nextLink`, accepted only on the ARM endpoint's own scheme, host and port: a token
    /// must never follow a link elsewhere.
    fn next_link(&self, link: &str, operation: &str) -> Result<Url, AzureError> {
        let url = Url::parse(link)
            .or_else(|_| self.endpoint.join(link))
            .map_err(|_| AzureError::Decode {
                operation: operation.to_owned(),
                detail: format!("nextLink '{link}' is not a URL"),
            })?;
        let same_origin = url.scheme() == self.endpoint.scheme()
            && url.host_str().map(str::to_ascii_lowercase)
                == self.endpoint.host_str().map(str::to_ascii_lowercase)
            && url.port_or_known_default() == self.endpoint.port_or_known_default();
        if !same_origin {
            return Err(AzureError::Decode {
                operation: operation.to_owned(),
                detail: format!(
                    "nextLink '{link}' leaves the ARM endpoint {}",
                    self.endpoint
                ),
            });
        }
        Ok(url)
    }
}

/// Logs a wait for one of ARM's budgets long enough to explain a slow run.
fn note_wait(waited: std::time::Duration, budget: &'static str) {
    if waited >= std::time::Duration::from_millis(100) {
        tracing::debug!(
            waited_ms = waited.as_millis() as u64,
            budget,
            "waited for ARM's budget"
        );
    }
}

fn header_text<'a>(response: &'a RawResponse, name: &'static str) -> Option<&'a str> {
    response
        .headers()
        .get_optional_str(&azure_core::http::headers::HeaderName::from_static(name))
}

fn header_number(response: &RawResponse, name: &'static str) -> Option<u32> {
    header_text(response, name).and_then(|v| v.trim().parse::<u32>().ok())
}

fn vault_from(id: &ResourceId, body: &[u8], operation: &str) -> Result<Resource, AzureError> {
    let decode = |detail: String| AzureError::Decode {
        operation: operation.to_owned(),
        detail,
    };
    let raw = crate::core::live::parse_document(body)
        .map_err(|err| decode(pipeline::error_chain(&err)))?;
    // An answer about another vault (a proxy or cache mixing answers up) must not be planned
    // from: its firewall would be written to this one.
    let answered = raw.get("id").and_then(Value::as_str);
    let same = answered
        .and_then(|text| text.parse::<ResourceId>().ok())
        .is_some_and(|answered| answered.same_as(id));
    if !same {
        return Err(decode(format!(
            "the answer is not {} {id} (its id is {}); nothing is planned from it",
            id.kind.noun(),
            answered.map_or_else(|| "missing".to_owned(), |a| format!("'{a}'"))
        )));
    }
    let acl = LiveAcl::read(id.kind, &raw).map_err(|err| decode(err.to_string()))?;
    Ok(Resource {
        id: id.clone(),
        acl,
        raw,
    })
}
