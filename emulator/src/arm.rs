//! Handlers for the ARM routes: Key Vault vaults, storage accounts, container registries, the
//! Service Tags Discovery API and Resource Graph.
//!
//! Each handler checks what ARM checks, in the order ARM's front door does: the bearer token
//! (401), the `api-version` (400), the subscription's bucket for the kind of request — read,
//! write or delete — (429; reads only with `Config::read_throttle`), RBAC (403), and only then
//! the resource (404) and the body (400). Resource Graph spends its own quota (429) in that
//! place instead. A refused request changes nothing. (Whether ARM checks the api-version before
//! the bucket is UNVERIFIED.)

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::acl::RulePolicy;
use crate::api_versions;
use crate::clock;
use crate::error::ArmError;
use crate::identity::Principal;
use crate::locations;
use crate::model::Route;
use crate::operations::Poll;
use crate::paths::{Kind, ResourcePath};
use crate::policy::{OperationOutcome, RegistryUpdates};
use crate::query::Query;
use crate::resource_graph;
use crate::routes::{RequestContext, Target};
use crate::state::{arm_operation, Shared};
use crate::store::{Lookup, ResourceStore};
use crate::throttle::{Operation, QuotaLeft};
use crate::vaults::{apply_create, apply_patch, apply_put};
use crate::writes::Stamp;
use crate::{registries, storage};

/// Key Vault management api-versions the emulator accepts, oldest first ([`api_versions::KEY_VAULT`]).
pub const KEY_VAULT_API_VERSIONS: &[&str] = api_versions::KEY_VAULT;

/// `Microsoft.Storage/storageAccounts` api-versions the emulator accepts, oldest first
/// ([`api_versions::STORAGE`]).
pub const STORAGE_API_VERSIONS: &[&str] = api_versions::STORAGE;

/// `Microsoft.ContainerRegistry/registries` api-versions the emulator accepts, oldest first
/// ([`api_versions::CONTAINER_REGISTRY`]).
pub const CONTAINER_REGISTRY_API_VERSIONS: &[&str] = api_versions::CONTAINER_REGISTRY;

/// The api-versions ARM routes `kind`'s requests for.
fn api_versions_of(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Vault => KEY_VAULT_API_VERSIONS,
        Kind::StorageAccount => STORAGE_API_VERSIONS,
        Kind::Registry => CONTAINER_REGISTRY_API_VERSIONS,
    }
}

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

/// `GET|PATCH|PUT|DELETE …/providers/Microsoft.KeyVault/vaults/{name}`, and `GET|PATCH` of
/// `…/providers/Microsoft.Storage/storageAccounts/{name}` and
/// `…/providers/Microsoft.ContainerRegistry/registries/{name}`.
pub(crate) fn resource(
    shared: &Shared,
    context: &RequestContext,
    query: &Query,
    body: &[u8],
) -> Response {
    let Target::Resource(path) = &context.classified.target else {
        return routing_bug("it names no resource").into_response();
    };
    let route = context.classified.route;
    let principal = match authenticated(context) {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    let location = shared.store().location_hint(path);
    if let Err(error) = check_api_version(
        query,
        api_versions_of(path.kind).iter().copied(),
        Registration::Provider {
            type_name: path.kind.collection(),
            location: &location,
        },
    ) {
        return error.into_response();
    }
    let spent = match spend(shared, route, &path.subscription, &principal) {
        Ok(spent) => spent,
        Err(error) => return error.into_response(),
    };
    let api_version = query.get("api-version").unwrap_or_default();
    let response = resource_operation(
        shared,
        route,
        path,
        &principal,
        body,
        api_version,
        context.secure,
    )
    .unwrap_or_else(IntoResponse::into_response);
    with_remaining(response, spent)
}

/// Spends the ARM token a request on `route` costs (read, write or delete) from
/// `subscription`'s bucket: what is left then, or 429 `SubscriptionRequestsThrottled` when the
/// bucket is empty (reads only when they are throttled).
fn spend(
    shared: &Shared,
    route: Route,
    subscription: &str,
    principal: &Principal,
) -> Result<Option<(Operation, u32)>, ArmError> {
    let Some(operation) = arm_operation(route) else {
        return Ok(None);
    };
    match shared.take_arm(operation, subscription) {
        Ok(remaining) => Ok(Some((operation, remaining))),
        Err(retry_after) => Err(throttled(operation, subscription, principal, retry_after)),
    }
}

/// The response with the header saying what is left of the bucket it spent; the answers that
/// spent nothing get theirs (what is left now) with ARM's common headers.
fn with_remaining(mut response: Response, spent: Option<(Operation, u32)>) -> Response {
    if let Some((operation, remaining)) = spent {
        response
            .headers_mut()
            .insert(operation.remaining_header(), HeaderValue::from(remaining));
    }
    response
}

fn resource_operation(
    shared: &Shared,
    route: Route,
    path: &ResourcePath,
    principal: &Principal,
    body: &[u8],
    api_version: &str,
    secure: bool,
) -> Result<Response, ArmError> {
    let action = match route {
        Route::VaultGet | Route::StorageAccountGet | Route::RegistryGet => "read",
        Route::VaultDelete => "delete",
        _ => "write",
    };
    let mut store = shared.store();
    if store.is_forbidden(path) {
        return Err(forbidden(
            principal,
            &format!("{}/{action}", path.kind.type_name()),
            &path.id(),
        ));
    }
    let stamp = || Stamp {
        by: principal.client_id.clone(),
        by_type: "ManagedIdentity",
        at: clock::rfc3339_utc(clock::now_epoch_ms()),
    };
    let policy = shared.settings.rules;
    let index = match (store.lookup(path), route) {
        (Lookup::Found(index), _) => index,
        (Lookup::NoResource, Route::VaultPut) => {
            let body = parse_json(body)?;
            let created = create_vault(&mut store, path, &body, policy, &stamp())?;
            return Ok(json_response(StatusCode::CREATED, created.to_string()));
        }
        // ARM answers a DELETE of a resource that is not there with 204.
        (Lookup::NoResource, Route::VaultDelete) => {
            return Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Lookup::NoResource, _) => {
            return Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!(
                    "The Resource '{}/{}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                    path.kind.type_name(),
                    path.name,
                    path.resource_group
                ),
            ))
        }
        (Lookup::NoGroup, _) => {
            return Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                format!("Resource group '{}' could not be found.", path.resource_group),
            ))
        }
    };
    let current = store.get(index).cloned().unwrap_or(Value::Null);
    let updated = match route {
        Route::VaultPatch => apply_patch(&current, &parse_json(body)?, policy, &stamp())?,
        Route::VaultPut => apply_put(&current, path, &parse_json(body)?, policy, &stamp())?,
        Route::StorageAccountPatch => storage::apply_patch(&current, &parse_json(body)?, &stamp())?,
        Route::RegistryPatch => {
            let body = parse_json(body)?;
            // Validated now, as ACR refuses a bad body at once; applied now or when the
            // long-running operation succeeds.
            let updated = registries::apply_patch(&current, &body, &stamp())?;
            if let Some(updates) = shared.registry_updates() {
                drop(store);
                return Ok(registry_update_started(
                    shared,
                    path,
                    body,
                    &current,
                    &updates,
                    api_version,
                    secure,
                ));
            }
            updated
        }
        Route::VaultDelete => {
            store.delete(index);
            return Ok(StatusCode::OK.into_response());
        }
        _ => return Ok(json_response(StatusCode::OK, current.to_string())),
    };
    store.replace(index, updated.clone());
    Ok(json_response(StatusCode::OK, updated.to_string()))
}

/// A PUT where no vault is: the name must be free everywhere (vault names are DNS names), a
/// soft-deleted vault of that name is only recovered (`properties.createMode: recover`), and
/// the body must make a vault. Key Vault's wording for the two conflicts is UNVERIFIED (taken
/// from answers quoted in public issues).
fn create_vault(
    store: &mut ResourceStore,
    path: &ResourcePath,
    body: &Value,
    policy: RulePolicy,
    stamp: &Stamp,
) -> Result<Value, ArmError> {
    if store.name_taken_elsewhere(path) {
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "VaultAlreadyExists",
            format!("The vault name '{}' is already in use. Vault names are globally unique so it is possible that the name is already taken. If you are sure that the vault name was not taken then it is possible that a vault with the same name was recently deleted but not purged after being placed in a recoverable state. If the vault is in a recoverable state then the vault will need to be purged before reusing the name.", path.name),
        ));
    }
    let recover = body
        .pointer("/properties/createMode")
        .and_then(Value::as_str)
        .is_some_and(|mode| mode.eq_ignore_ascii_case("recover"));
    let vault = match (store.deleted_named(path), recover) {
        (Some(_), false) => {
            return Err(ArmError::new(
                StatusCode::CONFLICT,
                "ConflictError",
                "Exist soft deleted vault with the same name.",
            ))
        }
        (Some(deleted), true) => {
            let mut vault = store.take_deleted(deleted).unwrap_or(Value::Null);
            if let Some(root) = vault.as_object_mut() {
                stamp.apply_to(root);
            }
            vault
        }
        (None, true) => {
            return Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!(
                    "The deleted vault '{}' to recover was not found.",
                    path.name
                ),
            ))
        }
        (None, false) => apply_create(path, body, policy, stamp)?,
    };
    store.insert(path, vault.clone());
    Ok(vault)
}

/// `GET /subscriptions/{sub}[/resourceGroups/{rg}]/providers/Microsoft.KeyVault/vaults` and
/// `GET /subscriptions/{sub}[/resourceGroups/{rg}]/resources`: the vaults (for the generic list,
/// the resources of every kind) the caller may read, sorted by id, `$top` to a page with an
/// absolute `nextLink` (`$skipToken`), as `VaultListResult` / `ResourceListResult`
/// (keyvault.json, resources.json).
pub(crate) fn list(
    shared: &Shared,
    context: &RequestContext,
    path: &str,
    query: &Query,
) -> Response {
    list_page(shared, context, path, query).unwrap_or_else(IntoResponse::into_response)
}

fn list_page(
    shared: &Shared,
    context: &RequestContext,
    path: &str,
    query: &Query,
) -> Result<Response, ArmError> {
    let Target::Collection {
        subscription,
        resource_group,
    } = &context.classified.target
    else {
        return Err(routing_bug("it names no subscription"));
    };
    let principal = authenticated(context)?;
    let generic = context.classified.route == Route::ResourceList;
    check_list_api_version(query, generic)?;
    let spent = spend(shared, context.classified.route, subscription, &principal)?;
    let filter = match query.get("$filter") {
        Some(text) if generic => ResourceFilter::parse(text)?,
        _ => ResourceFilter::default(),
    };
    let top = page_size(query.get("$top"))?;
    let offset = skip_token(query.get("$skipToken"))?;
    let store = shared.store();
    if let Some(group) = resource_group {
        if !store.group_exists(&ResourcePath::group(subscription, group)) {
            return Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                format!("Resource group '{group}' could not be found."),
            ));
        }
    }
    let mut rows: Vec<Value> = store
        .in_scope(subscription, resource_group.as_deref())
        .filter(|(path, _)| generic || path.kind == Kind::Vault)
        .filter(|(path, _)| !store.is_forbidden(path))
        .filter(|(path, resource)| filter.matches(path.kind, resource))
        .map(|(path, resource)| {
            if generic {
                generic_resource(path.kind, resource)
            } else {
                resource.clone()
            }
        })
        .collect();
    rows.sort_by_key(|row| {
        row.get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase()
    });
    let total = rows.len();
    let page: Vec<Value> = rows.into_iter().skip(offset).take(top).collect();
    let end = offset.saturating_add(page.len());
    let mut body = serde_json::json!({ "value": page });
    if end < total {
        let base = shared.base_url_for(context.secure);
        body["nextLink"] = Value::String(next_link(base, path, query, end));
    }
    Ok(with_remaining(
        json_response(StatusCode::OK, body.to_string()),
        spent,
    ))
}

/// The api-version of a list: ARM's own for the generic `resources` list, Key Vault's for the
/// vault list.
fn check_list_api_version(query: &Query, generic: bool) -> Result<(), ArmError> {
    if generic {
        check_api_version(
            query,
            api_versions::RESOURCES.iter().copied(),
            Registration::Arm,
        )
    } else {
        check_api_version(
            query,
            KEY_VAULT_API_VERSIONS.iter().copied(),
            Registration::Provider {
                type_name: "vaults",
                location: "westus",
            },
        )
    }
}

/// A resource as ARM's generic `resources` list shows it (`GenericResourceExpanded` without the
/// expanded fields; `sku` and `kind` when the resource has them at the top level).
fn generic_resource(kind: Kind, stored: &Value) -> Value {
    let mut resource = serde_json::Map::new();
    for key in ["id", "name", "type", "sku", "kind", "location", "tags"] {
        if let Some(value) = stored.get(key) {
            resource.insert(key.to_owned(), value.clone());
        }
    }
    resource
        .entry("type")
        .or_insert_with(|| Value::String(kind.type_name().to_owned()));
    Value::Object(resource)
}

/// The `$filter`s of ARM's `resources` list the emulator understands: `resourceType eq '…'`,
/// `name eq '…'`, `tagName eq '…'` (optionally `and tagValue eq '…'`), joined by `and`; values
/// compared without case. Others are refused rather than ignored.
#[derive(Default)]
struct ResourceFilter {
    clauses: Vec<(String, String)>,
}

impl ResourceFilter {
    fn parse(text: &str) -> Result<ResourceFilter, ArmError> {
        let mut clauses = Vec::new();
        for clause in split_and(text) {
            let mut words = clause.trim().splitn(3, ' ');
            let (Some(field), Some(op), Some(value)) = (words.next(), words.next(), words.next())
            else {
                return Err(unsupported_filter(text));
            };
            let value = value.trim();
            let field = field.to_ascii_lowercase();
            let known = ["resourcetype", "name", "tagname", "tagvalue"].contains(&field.as_str());
            let quoted = value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'');
            if !known || !op.eq_ignore_ascii_case("eq") || !quoted {
                return Err(unsupported_filter(text));
            }
            clauses.push((field, value[1..value.len() - 1].replace("''", "'")));
        }
        Ok(ResourceFilter { clauses })
    }

    fn matches(&self, kind: Kind, resource: &Value) -> bool {
        let text = |key: &str| {
            resource
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let tag_name = self.clauses.iter().find(|(field, _)| field == "tagname");
        self.clauses
            .iter()
            .all(|(field, wanted)| match field.as_str() {
                "resourcetype" => wanted.eq_ignore_ascii_case(kind.type_name()),
                "name" => text("name").eq_ignore_ascii_case(wanted),
                "tagname" => tag_value(resource, wanted).is_some(),
                "tagvalue" => tag_name.is_some_and(|(_, name)| {
                    tag_value(resource, name)
                        .is_some_and(|value| value.eq_ignore_ascii_case(wanted))
                }),
                _ => false,
            })
    }
}

/// The value of the tag `name` (compared without case), if the resource has it.
fn tag_value<'a>(resource: &'a Value, name: &str) -> Option<&'a str> {
    resource
        .get("tags")?
        .as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .and_then(|(_, value)| value.as_str())
}

/// `a and b and c`, split on ` and ` outside quotes.
fn split_and(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if !quoted && rest.len() >= 5 && rest[..5].eq_ignore_ascii_case(" and ") {
            parts.push(String::new());
            rest = &rest[5..];
            continue;
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    parts
}

fn unsupported_filter(text: &str) -> ArmError {
    ArmError::new(
        StatusCode::BAD_REQUEST,
        "InvalidFilterInQueryString",
        format!("The $filter '{text}' is not supported by the emulator (tagfence-emulator understands resourceType, name, tagName and tagValue eq 'value', joined by and)."),
    )
}

/// `$top`: 1 to 1000 rows a page (the default and the ceiling of ARM's lists are UNVERIFIED;
/// the emulator uses 1000 for both).
fn page_size(top: Option<&str>) -> Result<usize, ArmError> {
    match top {
        None | Some("") => Ok(1000),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|top| (1..=1000).contains(top))
            .ok_or_else(|| {
                ArmError::bad_request(format!(
                    "The $top '{text}' is invalid: it must be between 1 and 1000."
                ))
            }),
    }
}

fn skip_token(token: Option<&str>) -> Result<usize, ArmError> {
    match token {
        None => Ok(0),
        Some(token) => token
            .parse::<usize>()
            .map_err(|_| ArmError::bad_request(format!("The $skipToken '{token}' is invalid."))),
    }
}

/// The absolute link to the page starting at `offset`: the request's path and query, with
/// `$skipToken` replaced.
fn next_link(base: &str, path: &str, query: &Query, offset: usize) -> String {
    // `$` stays as it is in names (`$skipToken`, `$top`), as in ARM's own links.
    let encode = |text: &str| -> String {
        form_urlencoded::byte_serialize(text.as_bytes())
            .collect::<String>()
            .replace("%24", "$")
    };
    let mut pairs: Vec<String> = query
        .pairs()
        .filter(|(key, _)| !key.eq_ignore_ascii_case("$skipToken"))
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect();
    pairs.push(format!("$skipToken={offset}"));
    format!("{base}{path}?{}", pairs.join("&"))
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
/// Resource Manager throttles requests"). The read refusal has the shape of a captured ARM
/// answer (public logs also quote it with a longer ending: which one ARM sends today is
/// UNVERIFIED); the write one's is the emulator's long-standing reading of ARM's, and the delete
/// one reuses it (UNVERIFIED).
fn throttled(
    operation: Operation,
    subscription: &str,
    principal: &Principal,
    retry_after: u64,
) -> ArmError {
    let word = operation.word();
    let actor = &principal.object_id;
    let message = match operation {
        Operation::Read => format!(
            "Number of '{word}' requests for subscription '{subscription}' actor '{actor}' exceeded. Please try again after '{retry_after}' seconds."
        ),
        Operation::Write | Operation::Delete => format!(
            "Number of '{word}' requests for subscription '{subscription}' actor '{actor}' exceeded. Please try again after '{retry_after}' seconds after the additional tokens are available. Refer to https://aka.ms/arm-throttling"
        ),
    };
    ArmError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "SubscriptionRequestsThrottled",
        message,
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
    let principal = authenticated(context)?;
    let details = context.classified.route == Route::ServiceTagDetails;
    let type_name = if details {
        "locations/serviceTagDetails"
    } else {
        "locations/serviceTags"
    };
    let registration = Registration::Provider {
        type_name,
        location,
    };
    if details {
        check_api_version(
            query,
            api_versions::network_service_tag_details(),
            registration,
        )?;
    } else {
        check_api_version(
            query,
            api_versions::NETWORK_SERVICE_TAGS.iter().copied(),
            registration,
        )?;
    }
    known_location(location, type_name, query)?;
    let spent = spend(shared, context.classified.route, subscription, &principal)?;
    let document = shared.service_tags.as_ref().ok_or_else(|| {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "No Service Tags document is configured in the emulator.",
        )
    })?;
    let offset = skip_token(query.get("$skipToken"))?;
    let base_url = shared.base_url_for(context.secure);
    let link = |next| next_link(base_url, path, query, next);
    let page_size = shared.settings.service_tags_page_size;
    let body = if details {
        let no_prefixes = query
            .get("noAddressPrefixes")
            .is_some_and(|value| value.eq_ignore_ascii_case("true"));
        document.details_page(offset, page_size, query.get("tagName"), no_prefixes, link)
    } else {
        document.api_page(subscription, offset, page_size, link)
    };
    Ok(with_remaining(json_response(StatusCode::OK, body), spent))
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

/// `POST /providers/Microsoft.ResourceGraph/resources`. Every answer carries what is left of the
/// caller's quota (`x-ms-user-quota-remaining`, `x-ms-user-quota-resets-after`: Microsoft Learn,
/// "Guidance for throttled requests in Azure Resource Graph": "In every query response").
pub(crate) fn resource_graph(
    shared: &Shared,
    context: &RequestContext,
    query: &Query,
    body: &[u8],
) -> Response {
    let mut quota = shared.peek_graph(None);
    let result = graph_query(shared, context, query, body, &mut quota);
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    let headers = response.headers_mut();
    headers.insert(
        "x-ms-user-quota-remaining",
        HeaderValue::from(quota.remaining),
    );
    if let Ok(value) = HeaderValue::try_from(quota.resets_after_text()) {
        headers.insert("x-ms-user-quota-resets-after", value);
    }
    response
}

/// A Resource Graph query: authentication, api-version, the caller's quota (`quota` is set to
/// what is left, spent or not), then the query over the resources the index shows.
fn graph_query(
    shared: &Shared,
    context: &RequestContext,
    query: &Query,
    body: &[u8],
    quota: &mut QuotaLeft,
) -> Result<Response, ArmError> {
    let principal = authenticated(context)?;
    *quota = shared.peek_graph(Some(&principal.object_id));
    check_api_version(
        query,
        api_versions::RESOURCE_GRAPH.iter().copied(),
        Registration::Arm,
    )?;
    match shared.take_graph(&principal.object_id) {
        Ok(left) => *quota = left,
        Err(left) => {
            *quota = left;
            return Err(graph_throttled(left));
        }
    }
    let mut request = resource_graph::parse_request(&parse_json(body)?).map_err(|detail| {
        ArmError::bad_request(format!(
            "Query is invalid. Please refer to the documentation for the Azure Resource Graph service and fix the error before retrying. (tagfence-emulator: {detail})"
        ))
    })?;
    let store = shared.store();
    request
        .resolve_management_groups(|group| store.subscriptions_under(group))
        .map_err(ArmError::bad_request)?;
    let result = match store.indexed() {
        None => resource_graph::run(
            &request,
            store.iter().filter(|(path, _)| !store.is_forbidden(path)),
        ),
        Some(indexed) => resource_graph::run(
            &request,
            indexed
                .iter()
                .map(|(path, vault)| (path, vault))
                .filter(|(path, _)| !store.is_forbidden(path)),
        ),
    };
    Ok(json_response(StatusCode::OK, result.to_string()))
}

/// Resource Graph's 429: code `RateLimiting`, the support line as the message and the
/// explanation in `details`, as captured in Azure/azure-cli-extensions#3325; `Retry-After` is
/// the time until the window resets (whether Resource Graph sends one is UNVERIFIED; its
/// quota headers say the same).
fn graph_throttled(left: QuotaLeft) -> ArmError {
    ArmError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RateLimiting",
        format!(
            "Please provide below info when asking for support: timestamp = {}, correlationId = {}.",
            clock::rfc3339_utc(clock::now_epoch_ms()),
            crate::ids::random_guid()
        ),
    )
    .with_detail(
        "RateLimiting",
        "Client application has been throttled and should not attempt to repeat the request until an amount of time has elapsed. Please see https://aka.ms/resourcegraph-throttling for help.",
    )
    .with_retry_after(Some(left.retry_after_secs()))
}

/// A registry PATCH that runs as a long-running operation: 201 with the registry as stored
/// (`provisioningState: Updating`), `Azure-AsyncOperation` naming the operation (on the
/// emulator's own address, or [`RegistryUpdates::foreign_base`]) and `Retry-After` when set.
fn registry_update_started(
    shared: &Shared,
    path: &ResourcePath,
    body: Value,
    current: &Value,
    updates: &RegistryUpdates,
    api_version: &str,
    secure: bool,
) -> Response {
    let id = shared.operations().start(path, body, updates);
    let location = current
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or("westeurope")
        .to_ascii_lowercase()
        .replace(' ', "");
    let base = updates
        .foreign_base
        .as_deref()
        .map_or_else(|| shared.base_url_for(secure), |b| b.trim_end_matches('/'));
    let url = format!(
        "{base}/subscriptions/{}/providers/Microsoft.ContainerRegistry/locations/{location}/operationResults/{id}?api-version={api_version}",
        path.subscription
    );
    let mut answer = current.clone();
    if let Some(properties) = answer.get_mut("properties").and_then(Value::as_object_mut) {
        properties.insert("provisioningState".to_owned(), json!("Updating"));
    }
    let mut response = json_response(StatusCode::CREATED, answer.to_string());
    if let Ok(value) = HeaderValue::from_str(&url) {
        response.headers_mut().insert("azure-asyncoperation", value);
    }
    if let Some(seconds) = updates.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// `GET …/providers/Microsoft.ContainerRegistry/locations/{loc}/operationResults/{id}`: the
/// status of a registry PATCH's long-running operation (`InProgress`, then its outcome). The
/// registry's firewall changes at the GET that finds the operation `Succeeded`.
pub(crate) fn registry_operation(
    shared: &Shared,
    context: &RequestContext,
    query: &Query,
) -> Response {
    operation_status(shared, context, query).unwrap_or_else(IntoResponse::into_response)
}

fn operation_status(
    shared: &Shared,
    context: &RequestContext,
    query: &Query,
) -> Result<Response, ArmError> {
    let Target::Operation {
        subscription,
        location,
        id,
    } = &context.classified.target
    else {
        return Err(routing_bug("it names no operation"));
    };
    let principal = authenticated(context)?;
    check_api_version(
        query,
        CONTAINER_REGISTRY_API_VERSIONS.iter().copied(),
        Registration::Provider {
            type_name: "locations/operationResults",
            location,
        },
    )?;
    let spent = spend(shared, context.classified.route, subscription, &principal)?;
    let poll = shared.operations().poll(id);
    let status_body = |outcome: &OperationOutcome| match outcome {
        OperationOutcome::Succeeded => json!({"id": id, "name": id, "status": "Succeeded"}),
        OperationOutcome::Canceled => json!({"id": id, "name": id, "status": "Canceled"}),
        OperationOutcome::Failed { code, message } => json!({
            "id": id, "name": id, "status": "Failed",
            "error": {"code": code, "message": message}
        }),
    };
    let (body, retry_after) = match poll {
        Poll::Unknown => {
            return Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "OperationNotFound",
                format!("The operation '{id}' was not found."),
            ))
        }
        Poll::InProgress => (
            json!({"id": id, "name": id, "status": "InProgress"}),
            shared.registry_updates().and_then(|u| u.retry_after),
        ),
        Poll::Finishing {
            path,
            body,
            outcome,
        } => {
            let reached = match outcome {
                OperationOutcome::Succeeded => {
                    match finish_registry_update(shared, &path, &body, &principal) {
                        Ok(()) => OperationOutcome::Succeeded,
                        Err(error) => OperationOutcome::Failed {
                            code: error.code,
                            message: error.message,
                        },
                    }
                }
                other => other,
            };
            shared.operations().finish(id, reached.clone());
            (status_body(&reached), None)
        }
        Poll::Finished(outcome) => (status_body(&outcome), None),
    };
    let mut response = json_response(StatusCode::OK, body.to_string());
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    Ok(with_remaining(response, spent))
}

/// Applies a succeeded operation's PATCH body to the registry as it is now.
fn finish_registry_update(
    shared: &Shared,
    path: &ResourcePath,
    body: &Value,
    principal: &Principal,
) -> Result<(), ArmError> {
    let mut store = shared.store();
    let Lookup::Found(index) = store.lookup(path) else {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("The registry '{}' is gone.", path.name),
        ));
    };
    let current = store.get(index).cloned().unwrap_or(Value::Null);
    let stamp = Stamp {
        by: principal.client_id.clone(),
        by_type: "ManagedIdentity",
        at: clock::rfc3339_utc(clock::now_epoch_ms()),
    };
    let updated = registries::apply_patch(&current, body, &stamp)?;
    store.replace(index, updated);
    Ok(())
}
