//! Handlers for the ARM routes: Key Vault vaults, the Service Tags Discovery API and Resource Graph.
//!
//! Each handler checks what ARM checks, in the order ARM's front door does: the bearer token
//! (401), the `api-version` (400), the subscription's write budget for PATCH/PUT (429), RBAC (403),
//! and only then the resource (404) and the body (400). A refused request changes nothing.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::api_versions;
use crate::error::ArmError;
use crate::identity::Principal;
use crate::locations;
use crate::model::Route;
use crate::paths::VaultPath;
use crate::query::Query;
use crate::resource_graph;
use crate::routes::{RequestContext, Target};
use crate::state::Shared;
use crate::vaults::{apply_patch, apply_put, Lookup};

/// Key Vault management api-versions the emulator accepts, oldest first ([`api_versions::KEY_VAULT`]).
pub const KEY_VAULT_API_VERSIONS: &[&str] = api_versions::KEY_VAULT;

/// The write-budget header ARM sets on write responses.
pub(crate) const REMAINING_WRITES: &str = "x-ms-ratelimit-remaining-subscription-writes";
/// The read-budget header ARM sets on read responses.
pub(crate) const REMAINING_READS: &str = "x-ms-ratelimit-remaining-subscription-reads";

/// Body size limit for ARM requests.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// 500 for a request that reached a handler it was not classified for (an emulator bug).
fn routing_bug(what: &str) -> ArmError {
    ArmError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        format!("The emulator routed this request wrongly: {what}."),
    )
}

fn authenticated(context: &RequestContext) -> Result<Principal, ArmError> {
    match &context.arm_auth {
        Some(result) => result.clone(),
        // The wrapper authenticates every ARM route before dispatching it.
        None => Err(routing_bug("it was not authenticated")),
    }
}

/// How ARM refuses an api-version nobody registered.
#[derive(Clone, Copy)]
enum Registration<'a> {
    /// ARM's own endpoints (`/resources`) and Resource Graph: 400 `InvalidApiVersionParameter`,
    /// "The api-version '…' is invalid. The supported versions are '…'." with the versions
    /// newest first, comma-separated (the shape of ARM's answer quoted in public issues).
    Arm,
    /// A resource provider's type: 400 `NoRegisteredProviderFound`, naming the location and
    /// the type, the versions oldest first and the locations, as quoted from ARM in
    /// Azure/azure-cli#18483 and #18006 and Azure/azure-rest-api-specs#11929.
    Provider {
        type_name: &'a str,
        location: &'a str,
    },
}

/// Checks `api-version` (without case) against `accepted` (oldest first).
fn check_api_version<'a>(
    query: &Query,
    accepted: impl Iterator<Item = &'a str> + Clone,
    registration: Registration<'_>,
) -> Result<(), ArmError> {
    let version = match query.get("api-version") {
        None | Some("") => {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            ))
        }
        Some(version) => version,
    };
    if accepted
        .clone()
        .any(|known| known.eq_ignore_ascii_case(version))
    {
        return Ok(());
    }
    let known: Vec<&str> = accepted.collect();
    Err(match registration {
        Registration::Arm => {
            let newest_first: Vec<&str> = known.iter().rev().copied().collect();
            ArmError::new(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                format!(
                    "The api-version '{version}' is invalid. The supported versions are '{}'.",
                    newest_first.join(",")
                ),
            )
        }
        Registration::Provider {
            type_name,
            location,
        } => ArmError::new(
            StatusCode::BAD_REQUEST,
            "NoRegisteredProviderFound",
            format!(
                "No registered resource provider found for location '{location}' and API version '{version}' for type '{type_name}'. The supported api-versions are '{}'. The supported locations are '{}'.",
                known.join(", "),
                locations::listed(", ")
            ),
        ),
    })
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

fn parse_json(body: &[u8]) -> Result<Value, ArmError> {
    serde_json::from_slice(body).map_err(ArmError::invalid_content)
}

/// `GET|PATCH|PUT …/providers/Microsoft.KeyVault/vaults/{name}`.
pub(crate) fn vault(
    shared: &Shared,
    context: &RequestContext,
    query: &Query,
    body: &[u8],
) -> Response {
    let Target::Vault(path) = &context.classified.target else {
        return routing_bug("it names no vault").into_response();
    };
    let route = context.classified.route;
    let principal = match authenticated(context) {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    let location = shared.vaults().location_hint(path);
    if let Err(error) = check_api_version(
        query,
        KEY_VAULT_API_VERSIONS.iter().copied(),
        Registration::Provider {
            type_name: "vaults",
            location: &location,
        },
    ) {
        return error.into_response();
    }
    let mut remaining_writes = None;
    if route.is_arm_write() {
        match shared.take_write(&path.subscription) {
            Ok(remaining) => remaining_writes = Some(remaining),
            Err(retry_after) => {
                let mut response = throttled(path, &principal, retry_after).into_response();
                response
                    .headers_mut()
                    .insert(REMAINING_WRITES, HeaderValue::from(0));
                return response;
            }
        }
    }
    let mut response = vault_operation(shared, route, path, &principal, body)
        .unwrap_or_else(IntoResponse::into_response);
    if let Some(remaining) = remaining_writes {
        response
            .headers_mut()
            .insert(REMAINING_WRITES, HeaderValue::from(remaining));
    }
    response
}

fn vault_operation(
    shared: &Shared,
    route: Route,
    path: &VaultPath,
    principal: &Principal,
    body: &[u8],
) -> Result<Response, ArmError> {
    let action = if route == Route::VaultGet {
        "read"
    } else {
        "write"
    };
    let mut vaults = shared.vaults();
    if vaults.is_forbidden(path) {
        return Err(forbidden(
            principal,
            &format!("Microsoft.KeyVault/vaults/{action}"),
            &path.id(),
        ));
    }
    let index = match vaults.lookup(path) {
        Lookup::Found(index) => index,
        Lookup::NoVault => {
            return Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!(
                    "The Resource 'Microsoft.KeyVault/vaults/{}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                    path.name, path.resource_group
                ),
            ))
        }
        Lookup::NoGroup => {
            return Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                format!("Resource group '{}' could not be found.", path.resource_group),
            ))
        }
    };
    let current = vaults.get(index).cloned().unwrap_or(Value::Null);
    let policy = shared.settings.rules;
    let updated = match route {
        Route::VaultPatch => apply_patch(&current, &parse_json(body)?, policy)?,
        Route::VaultPut => apply_put(&current, path, &parse_json(body)?, policy)?,
        _ => return Ok(json_response(StatusCode::OK, current.to_string())),
    };
    vaults.replace(index, updated.clone());
    Ok(json_response(StatusCode::OK, updated.to_string()))
}

/// 403 `AuthorizationFailed` in the wording real ARM responses show (quoted in public error logs,
/// e.g. AKS `SyncLoadBalancerFailed` events).
fn forbidden(principal: &Principal, action: &str, scope: &str) -> ArmError {
    ArmError::new(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        format!(
            "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            principal.client_id, principal.object_id
        ),
    )
}

/// 429 `SubscriptionRequestsThrottled` with `Retry-After` (Microsoft Learn, "Understand how Azure
/// Resource Manager throttles requests").
fn throttled(path: &VaultPath, principal: &Principal, retry_after: u64) -> ArmError {
    ArmError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "SubscriptionRequestsThrottled",
        format!(
            "Number of 'write' requests for subscription '{}' actor '{}' exceeded. Please try again after '{retry_after}' seconds after the additional tokens are available. Refer to https://aka.ms/arm-throttling",
            path.subscription, principal.object_id
        ),
    )
    .with_retry_after(Some(retry_after))
}

/// `GET /subscriptions/{sub}/providers/Microsoft.Network/locations/{loc}/serviceTags`.
pub(crate) fn service_tags(
    shared: &Shared,
    context: &RequestContext,
    path: &str,
    query: &Query,
) -> Response {
    service_tags_page(shared, context, path, query).unwrap_or_else(IntoResponse::into_response)
}

fn service_tags_page(
    shared: &Shared,
    context: &RequestContext,
    path: &str,
    query: &Query,
) -> Result<Response, ArmError> {
    let Target::ServiceTags {
        subscription,
        location,
    } = &context.classified.target
    else {
        return Err(routing_bug("it names no subscription"));
    };
    authenticated(context)?;
    check_api_version(
        query,
        api_versions::NETWORK_SERVICE_TAGS.iter().copied(),
        Registration::Provider {
            type_name: "locations/serviceTags",
            location,
        },
    )?;
    known_location(location, "locations/serviceTags", query)?;
    let document = shared.service_tags.as_ref().ok_or_else(|| {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "No Service Tags document is configured in the emulator.",
        )
    })?;
    let offset = match query.get("$skipToken") {
        None => 0,
        Some(token) => token
            .parse::<usize>()
            .map_err(|_| ArmError::bad_request(format!("The $skipToken '{token}' is invalid.")))?,
    };
    let api_version = query.get("api-version").unwrap_or_default();
    let encoded_version: String = form_urlencoded::byte_serialize(api_version.as_bytes()).collect();
    let base_url = shared.base_url_for(context.secure);
    let body = document.api_page(
        subscription,
        offset,
        shared.settings.service_tags_page_size,
        |next| format!("{base_url}{path}?api-version={encoded_version}&$skipToken={next}"),
    );
    Ok(json_response(StatusCode::OK, body))
}

/// A location in a provider route's path that is no public region: ARM finds no provider
/// registered there, and answers as for an unknown api-version (which one ARM gives for an
/// unknown location is UNVERIFIED; the registration refusal is the one public captures show).
fn known_location(location: &str, type_name: &str, query: &Query) -> Result<(), ArmError> {
    if locations::is_known(location) {
        return Ok(());
    }
    let version = query.get("api-version").unwrap_or_default();
    Err(ArmError::new(
        StatusCode::BAD_REQUEST,
        "NoRegisteredProviderFound",
        format!(
            "No registered resource provider found for location '{location}' and API version '{version}' for type '{type_name}'. The supported api-versions are '{}'. The supported locations are '{}'.",
            api_versions::NETWORK_SERVICE_TAGS.join(", "),
            locations::listed(", ")
        ),
    ))
}

/// `POST /providers/Microsoft.ResourceGraph/resources`.
pub(crate) fn resource_graph(
    shared: &Shared,
    context: &RequestContext,
    query: &Query,
    body: &[u8],
) -> Response {
    let result = (|| {
        authenticated(context)?;
        check_api_version(
            query,
            api_versions::RESOURCE_GRAPH.iter().copied(),
            Registration::Arm,
        )?;
        let mut request = resource_graph::parse_request(&parse_json(body)?).map_err(|detail| {
            ArmError::bad_request(format!(
                "Query is invalid. Please refer to the documentation for the Azure Resource Graph service and fix the error before retrying. (tagfence-emulator: {detail})"
            ))
        })?;
        let vaults = shared.vaults();
        request
            .resolve_management_groups(|group| vaults.subscriptions_under(group))
            .map_err(ArmError::bad_request)?;
        let readable = vaults.iter().filter(|(path, _)| !vaults.is_forbidden(path));
        let result = resource_graph::run(&request, readable);
        Ok::<_, ArmError>(json_response(StatusCode::OK, result.to_string()))
    })();
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    let headers = response.headers_mut();
    headers.insert("x-ms-user-quota-remaining", HeaderValue::from(14));
    headers.insert(
        "x-ms-user-quota-resets-after",
        HeaderValue::from_static("00:00:05"),
    );
    response
}
