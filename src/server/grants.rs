//! `function-grant`: just-in-time grants over HTTP. A pipeline job asks for its agent's public
//! IPv4 address on a vault's firewall for a while, and takes it off again:
//! - `POST /api/grant` with `{"resource" (or "vault"), "ip"?, "ttl"?, "reason"?}` records a grant and writes its
//!   `a.b.c.d/32` rule through the engine's usual path (lock, read, gate, one write, verify);
//! - `DELETE /api/grant/<id>[?vault=…]` revokes a grant by its id, and
//!   `DELETE /api/grant?vault=…[&ip=…]` the grant for an address on a vault. Revoking a grant
//!   that is unknown or already ended is a 200 whose report says so: a cleanup step may run
//!   twice.
//!
//! # Authentication
//!
//! The function's `authLevel` is `anonymous`: a function key says nothing about who calls, so
//! it must never suffice to open a firewall. The caller is authenticated by App Service
//! authentication (Microsoft Entra ID) in front of the Functions host, which forwards the
//! principal it validated in `X-MS-CLIENT-PRINCIPAL` (base64 of
//! `{"auth_typ", "claims": [{"typ", "val"}], "name_typ", "role_typ"}`),
//! `X-MS-CLIENT-PRINCIPAL-ID`, `-NAME` and `-IDP` (Microsoft Learn, "Work with user identities
//! in Azure App Service authentication",
//! <https://learn.microsoft.com/en-us/azure/app-service/configure-authentication-user-identities>:
//! "External requests aren't allowed to set these headers, so they're present only if set by
//! App Service"). That promise holds only while App Service authentication runs, so this
//! route believes the headers only when the platform says it does (`WEBSITE_AUTH_ENABLED`, see
//! [`super::engine::APP_SERVICE_AUTH_VARIABLE`], read once into the [`AppState`]). It answers
//! 401, naming the reason, when authentication is off, when the principal header is missing,
//! sent twice, or does not decode to claims, when the identity provider is not Microsoft Entra
//! ID (`aad`), and when the principal has neither an object id (`oid`, or
//! `http://schemas.microsoft.com/identity/claims/objectidentifier`) nor an application id
//! (`appid`, or `azp`). The ids become [`Requester::Principal`]; whether that principal may
//! grant on the vault is the engine's decision (403, `forbidden`).
//!
//! # The address
//!
//! The body's `ip` when given. Otherwise the caller's address as the platform reports it: the
//! LAST entry of `X-Forwarded-For`, without its port. What was found about that header:
//! - the App Service front end adds `X-Forwarded-For` with the client's address as `ip:port`
//!   (pbojinov/request-ip#29, "azure web app adds port to x-forwarded-for",
//!   <https://github.com/pbojinov/request-ip/issues/29>: `'x-forwarded-for':
//!   '187.65.xxx.xxx:61598'`), an IPv6 peer as `[v6]:port`
//!   (<https://github.com/geoffrich/svelte-adapter-azure-swa/pull/71>);
//! - a client may send its own `X-Forwarded-For`, and the front end keeps it and appends
//!   (bitwarden/server#215, <https://github.com/bitwarden/server/issues/215>, tested on Azure:
//!   "that appears to also be what Azure does"; sergiodxa/remix-utils#496,
//!   <https://github.com/sergiodxa/remix-utils/pull/496>, headers as received:
//!   `'client-ip': '172.16.0.10:49828'`, `'x-forwarded-for': '10.0.0.5, 192.168.1.20,
//!   172.16.0.10:49828'`). So every entry but the last may be forged; the last is the address
//!   that connected to the front end;
//! - the front end also sets `Client-IP` (`ip:port`), overwriting any a client sent
//!   ("Headers on Azure App Service" in Azure/app-service-linux-docs,
//!   <https://github.com/Azure/app-service-linux-docs/blob/master/Things_You_Should_Know/headers.md>),
//!   and `X-Client-IP` without the port (DFE-Digital/apply-for-teacher-training#2026). It names
//!   the same peer as the last `X-Forwarded-For` entry; only the latter is read here.
//!
//! The address that connected is a proxy's when there is one in front of the app (Front Door,
//! Application Gateway, a corporate egress proxy), and an agent behind NAT is seen by its NAT
//! address: the default is only a default, and the engine refuses private and IPv6 addresses
//! whichever way they came. No `ip` and no usable header: 400, naming both ways to give one.
//!
//! # Input
//!
//! A body over [`MAX_GRANT_BODY_BYTES`], not JSON, with an unknown field, a `ttl` that is not a
//! duration ([`crate::core::grant::parse_duration`]) or an `ip` that is not an address: 400,
//! naming what was wrong and what is allowed. Another method than POST or DELETE: 405. Every
//! request ends in one JSON log line (`grant request`) with the requester, vault, address,
//! expiry and status; the engine logs the details of its run.

use std::net::{IpAddr, Ipv4Addr};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tracing::{info, warn};

use super::answer::{binding, error_answer, error_body, handle, http_answer, ok, Answer};
use super::engine::AppState;
use super::invocation::{http_output, HttpRequestData, InvocationResponse};
use crate::config::is_guid;
use crate::core::grant::{duration_text, parse_duration, DEFAULT_TTL};
use crate::reconcile::ErrorKind;
use crate::run::{
    policy, vault_line, GrantReport, GrantRequest, Requester, RevokeRequest, RevokeTarget,
};
use crate::state;

/// The largest grant request body accepted, in bytes: a request is a few hundred.
pub const MAX_GRANT_BODY_BYTES: usize = 4096;

/// The claim types that carry the caller's object id (the short form, and the long form App
/// Service's default claim mapping gives it).
pub const OBJECT_ID_CLAIMS: [&str; 2] = [
    "http://schemas.microsoft.com/identity/claims/objectidentifier",
    "oid",
];

/// The claim types that carry the client application's id (v1 tokens `appid`, v2 `azp`).
pub const APP_ID_CLAIMS: [&str; 2] = ["appid", "azp"];

/// The principal headers App Service authentication forwards.
const PRINCIPAL: &str = "X-MS-CLIENT-PRINCIPAL";
const PRINCIPAL_IDP: &str = "X-MS-CLIENT-PRINCIPAL-IDP";
const PRINCIPAL_NAME: &str = "X-MS-CLIENT-PRINCIPAL-NAME";
const PRINCIPAL_ID: &str = "X-MS-CLIENT-PRINCIPAL-ID";
const FORWARDED_FOR: &str = "X-Forwarded-For";

/// The longest principal name kept (for people; never used to authorise).
const MAX_NAME_CHARS: usize = 128;

/// The longest grant id accepted in a path.
const MAX_ID_CHARS: usize = 128;

pub(super) async fn grant_trigger(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(
        "function-grant",
        &headers,
        body,
        binding("req", "HTTP"),
        |req: HttpRequestData| async move {
            let method = req.method.to_ascii_uppercase();
            let mut log = RequestLog::new(&method);
            let answer = match authenticate(state.app_service_auth(), &req) {
                Err(reason) => unauthenticated(&reason),
                Ok(requester) => {
                    log.requester = Some(requester.describe());
                    log.principal_id = req
                        .header_values(PRINCIPAL_ID)
                        .first()
                        .map(|id| printable(id, 64));
                    let answer = match method.as_str() {
                        "POST" => grant(&state, &req, requester, &mut log).await,
                        "DELETE" => revoke(&state, &req, requester, &mut log).await,
                        _ => Err(method_not_allowed(&method)),
                    };
                    answer.unwrap_or_else(|answer| *answer)
                }
            };
            if let Some(noted) = answer.extensions().get::<Noted>() {
                log.status = noted.status;
                if log.error.is_none() {
                    log.error.clone_from(&noted.error);
                }
            }
            log.emit();
            Ok(answer)
        },
    )
    .await
}

/// What the one log line of a request says.
struct RequestLog {
    method: String,
    requester: Option<String>,
    principal_id: Option<String>,
    vault: Option<String>,
    address: Option<String>,
    grant_id: Option<String>,
    expires_at: Option<String>,
    outcome: Option<String>,
    error: Option<String>,
    status: u16,
}

impl RequestLog {
    fn new(method: &str) -> Self {
        RequestLog {
            method: printable(method, 16),
            requester: None,
            principal_id: None,
            vault: None,
            address: None,
            grant_id: None,
            expires_at: None,
            outcome: None,
            error: None,
            status: 200,
        }
    }

    fn report(&mut self, report: &GrantReport) {
        if let Some(grant) = &report.grant {
            self.grant_id = Some(grant.id.clone());
            self.vault = Some(grant.vault.clone());
            self.address = Some(grant.address.to_string());
            self.expires_at = Some(state::timestamp(grant.expires_at));
        }
        self.outcome = Some(match &report.vault {
            Some(vault) => vault.outcome.status().to_owned(),
            None => report
                .note
                .clone()
                .unwrap_or_else(|| "no vault run".to_owned()),
        });
    }

    fn emit(&self) {
        fn dash(value: &Option<String>) -> &str {
            value.as_deref().unwrap_or("-")
        }
        if self.status < 400 {
            info!(
                method = %self.method,
                requester = dash(&self.requester),
                principal_id = dash(&self.principal_id),
                vault = dash(&self.vault),
                address = dash(&self.address),
                expires_at = dash(&self.expires_at),
                grant_id = dash(&self.grant_id),
                outcome = dash(&self.outcome),
                status = self.status,
                "grant request"
            );
        } else {
            warn!(
                method = %self.method,
                requester = dash(&self.requester),
                principal_id = dash(&self.principal_id),
                vault = dash(&self.vault),
                address = dash(&self.address),
                expires_at = dash(&self.expires_at),
                grant_id = dash(&self.grant_id),
                outcome = dash(&self.outcome),
                error = dash(&self.error),
                status = self.status,
                "grant request refused or failed"
            );
        }
    }
}

/// The status of an answer's `res` output and its error, kept on the invocation's answer for
/// the request's log line.
#[derive(Clone)]
struct Noted {
    status: u16,
    error: Option<String>,
}

fn noted(mut answer: Response, status: u16, error: Option<&str>) -> Response {
    answer.extensions_mut().insert(Noted {
        status,
        error: error.map(str::to_owned),
    });
    answer
}

/// 405 for any method but POST and DELETE (the function's `methods` already keep the others
/// out; this is for a host configured otherwise).
fn method_not_allowed(method: &str) -> Box<Response> {
    let message = format!(
        "{} is not allowed here; use POST /api/grant to grant, DELETE /api/grant/<id> or DELETE /api/grant?vault=<vault>&ip=<address> to revoke",
        printable(method, 16)
    );
    Box::new(noted(
        http_answer(405, error_body(ErrorKind::BadRequest, &message), vec![]),
        405,
        Some(&message),
    ))
}

/// The answer to an error of `kind`: the status the policy gives it, the one shape of an
/// error.
fn refused(kind: ErrorKind, message: &str) -> Box<Response> {
    let status = policy::disposition(kind).http_status;
    Box::new(noted(*error_answer(kind, message), status, Some(message)))
}

/// A 400 naming what was wrong.
fn bad_request(message: &str) -> Box<Response> {
    refused(ErrorKind::BadRequest, message)
}

/// 401 with the reason. Authentication is decided here, before the engine and its error
/// policy, so the body has the one shape of an error with its own kind, `unauthenticated`.
fn unauthenticated(reason: &str) -> Response {
    let body = json!({"error": reason, "kind": "unauthenticated", "retry": false});
    let mut res = http_output(401, &body);
    res["headers"]["WWW-Authenticate"] = json!("Bearer");
    let mut outputs = Map::new();
    outputs.insert("res".to_owned(), res);
    noted(
        ok(InvocationResponse {
            outputs,
            logs: vec![format!("unauthenticated: {reason}")],
            return_value: Value::Null,
        }),
        401,
        Some(reason),
    )
}

/// The principal App Service authentication forwarded, or why there is none to believe.
fn authenticate(app_service_auth: bool, req: &HttpRequestData) -> Result<Requester, String> {
    if !app_service_auth {
        return Err(format!(
            "App Service authentication is not enabled on this app ({} is not True), so the {PRINCIPAL} headers could have been sent by anyone; grants are refused until Microsoft Entra ID authentication is configured in front of tagfence",
            super::engine::APP_SERVICE_AUTH_VARIABLE
        ));
    }
    let principal = match req.header_values(PRINCIPAL).as_slice() {
        [] => {
            return Err(format!(
                "no {PRINCIPAL} header: App Service authentication did not authenticate this request; call with a Microsoft Entra ID access token for this app (Authorization: Bearer …)"
            ))
        }
        [one] => one.clone(),
        many => {
            return Err(format!(
                "{PRINCIPAL} was sent {} times; App Service authentication sends it once",
                many.len()
            ))
        }
    };
    match req.header_values(PRINCIPAL_IDP).as_slice() {
        [idp] if idp.trim().eq_ignore_ascii_case("aad") => {}
        [] => {
            return Err(format!(
                "no {PRINCIPAL_IDP} header; grants take principals Microsoft Entra ID ('aad') authenticated"
            ))
        }
        [idp] => {
            return Err(format!(
                "the caller was authenticated by identity provider '{}' ({PRINCIPAL_IDP}); grants take principals Microsoft Entra ID ('aad') authenticated",
                printable(idp, 40)
            ))
        }
        many => {
            return Err(format!(
                "{PRINCIPAL_IDP} was sent {} times; App Service authentication sends it once",
                many.len()
            ))
        }
    }
    let claims = decode_principal(&principal)?;
    if let Some(auth_type) = claims.auth_typ.as_deref().filter(|t| !t.trim().is_empty()) {
        if !auth_type.trim().eq_ignore_ascii_case("aad") {
            return Err(format!(
                "the principal's auth_typ is '{}'; grants take principals Microsoft Entra ID ('aad') authenticated",
                printable(auth_type, 40)
            ));
        }
    }
    let object_id = claim_id(&claims, &OBJECT_ID_CLAIMS, "object id")?;
    let app_id = claim_id(&claims, &APP_ID_CLAIMS, "application id")?;
    if object_id.is_none() && app_id.is_none() {
        return Err(
            "the principal has no object id (oid) and no application id (appid or azp) claim; a grant is asked for by an Entra ID user or service principal, named by those ids"
                .to_owned(),
        );
    }
    let name = req
        .header_values(PRINCIPAL_NAME)
        .into_iter()
        .next()
        .map(|name| printable(&name, MAX_NAME_CHARS))
        .filter(|name| !name.is_empty());
    Ok(Requester::Principal {
        object_id,
        app_id,
        name,
    })
}

/// The decoded `X-MS-CLIENT-PRINCIPAL`: only the claims (and who issued them) matter here.
#[derive(Debug, Deserialize)]
struct ClientPrincipal {
    #[serde(default)]
    auth_typ: Option<String>,
    claims: Vec<Claim>,
}

#[derive(Debug, Deserialize)]
struct Claim {
    typ: String,
    val: String,
}

fn decode_principal(header: &str) -> Result<ClientPrincipal, String> {
    let not_claims = |detail: String| {
        format!("{PRINCIPAL} does not decode to a principal (base64 of a JSON object with a claims array of {{typ, val}}): {detail}")
    };
    let bytes = decode_base64(header).ok_or_else(|| not_claims("not base64".to_owned()))?;
    serde_json::from_slice(&bytes).map_err(|e| not_claims(e.to_string()))
}

/// The one id the claims of `types` hold (lower case), `None` when there is none; an error
/// when they hold different ones, or one that is not a GUID (Entra ID's ids all are).
fn claim_id(
    principal: &ClientPrincipal,
    types: &[&str],
    what: &str,
) -> Result<Option<String>, String> {
    let mut ids: Vec<String> = principal
        .claims
        .iter()
        .filter(|claim| types.iter().any(|t| claim.typ.eq_ignore_ascii_case(t)))
        .map(|claim| claim.val.trim().to_ascii_lowercase())
        .collect();
    ids.sort();
    ids.dedup();
    match ids.as_slice() {
        [] => Ok(None),
        [id] if is_guid(id) => Ok(Some(id.clone())),
        [id] => Err(format!(
            "the principal's {what} '{}' is not a GUID",
            printable(id, 40)
        )),
        _ => Err(format!(
            "the principal carries {} different {what}s ({}); refusing to pick one",
            ids.len(),
            types.join(", ")
        )),
    }
}

/// `text` without control characters, at most `max` characters: fit for a log line or record.
fn printable(text: &str, max: usize) -> String {
    text.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

/// Base64, standard or URL-safe alphabet, padding optional (azure_core's decoders, which take
/// either padding). `None` for anything else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    azure_core::base64::decode(text)
        .or_else(|_| azure_core::base64::decode_url_safe(text))
        .ok()
}

/// The caller's address as the App Service front end saw it: the last entry of
/// `X-Forwarded-For` (every header line, in order), without its port. `None` when there is no
/// such header or its last entry is not an address.
pub fn forwarded_address(req: &HttpRequestData) -> Option<IpAddr> {
    let joined = req.header_values(FORWARDED_FOR).join(",");
    let last = joined.rsplit(',').next()?.trim();
    address_and_port(last)
}

/// `a.b.c.d`, `a.b.c.d:port`, `v6`, `[v6]` or `[v6]:port`, as the address.
fn address_and_port(entry: &str) -> Option<IpAddr> {
    let is_port = |port: &str| !port.is_empty() && port.parse::<u16>().is_ok();
    if let Some(rest) = entry.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return address.parse().ok();
    }
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Some(address);
    }
    let (host, port) = entry.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The body of `POST /api/grant`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    /// The resource (any kind); `vault`, its name before there were kinds, is taken too.
    #[serde(alias = "resource")]
    vault: String,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// What a grant request body looks like, for the errors.
fn body_shape() -> String {
    format!(
        r#"expected a JSON object {{"resource": "<ARM id of a vault, storage account or registry, or the name of a listed one>", "ip": "<public IPv4 address a.b.c.d; default: the caller's>", "ttl": "<duration such as 30m, 2h or 1h30m; default {}>", "reason": "<one line of text>"}} with only "resource" (or its older name "vault") required"#,
        duration_text(DEFAULT_TTL)
    )
}

fn read_grant_body(req: &HttpRequestData) -> Result<GrantBody, Box<Response>> {
    let text = req.body.as_deref().unwrap_or_default();
    if text.len() > MAX_GRANT_BODY_BYTES {
        return Err(bad_request(&format!(
            "the request body is {} bytes; at most {MAX_GRANT_BODY_BYTES} are accepted; {}",
            text.len(),
            body_shape()
        )));
    }
    if text.trim().is_empty() {
        return Err(bad_request(&format!(
            "the request has no body; {}",
            body_shape()
        )));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        bad_request(&format!(
            "the request body is not JSON ({e}); {}",
            body_shape()
        ))
    })?;
    if !value.is_object() {
        return Err(bad_request(&format!(
            "the request body is not a JSON object; {}",
            body_shape()
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| bad_request(&format!("the request body: {e}; {}", body_shape())))
}

/// An address given as a parameter (`what` names it).
fn parse_address(what: &str, text: &str) -> Result<IpAddr, Box<Response>> {
    text.trim().parse::<IpAddr>().map_err(|_| {
        bad_request(&format!(
            "{what} '{}' is not an IP address; give the public IPv4 address to allow as a.b.c.d (no prefix length, no port)",
            printable(text, 64)
        ))
    })
}

/// The address to `action` (grant, revoke): `given` (`what` names where it was given), else
/// the caller's ([`forwarded_address`]).
fn address(
    req: &HttpRequestData,
    action: &str,
    given: Option<&str>,
    what: &str,
) -> Result<IpAddr, Box<Response>> {
    if let Some(text) = given.filter(|t| !t.trim().is_empty()) {
        return parse_address(what, text);
    }
    forwarded_address(req).ok_or_else(|| {
        bad_request(&format!(
            "no address to {action}: give it as {what} (the agent's public IPv4 address), or call from that address so that the platform's {FORWARDED_FOR} names it (the request has no usable {FORWARDED_FOR})"
        ))
    })
}

async fn grant(
    state: &AppState,
    req: &HttpRequestData,
    requester: Requester,
    log: &mut RequestLog,
) -> Answer {
    let body = read_grant_body(req)?;
    let vault = body.vault.trim().to_owned();
    if vault.is_empty() {
        return Err(bad_request(&format!(
            "\"vault\" is empty; {}",
            body_shape()
        )));
    }
    log.vault = Some(vault.clone());
    let ttl = match body.ttl.as_deref() {
        None => None,
        Some(text) => Some(parse_duration(text).map_err(|e| bad_request(&format!("ttl: {e}")))?),
    };
    let address = address(req, "grant", body.ip.as_deref(), "\"ip\" in the body")?;
    log.address = Some(address.to_string());
    let request = GrantRequest {
        vault,
        address,
        ttl,
        reason: body.reason,
        requester,
        trigger: "http",
    };
    let engine = state
        .engine()
        .await
        .map_err(|err| refused(ErrorKind::NotConfigured, &err.0))?;
    match engine.grant(&request).await {
        Ok(report) => Ok(report_answer(&report, log)),
        Err(err) => Err(refused(err.kind(), &err.to_string())),
    }
}

async fn revoke(
    state: &AppState,
    req: &HttpRequestData,
    requester: Requester,
    log: &mut RequestLog,
) -> Answer {
    let params = req.query_params();
    let vault = params
        .get("resource")
        .or_else(|| params.get("vault"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    log.vault.clone_from(&vault);
    let id = req.route_param("id").or_else(|| id_from_url(&req.url));
    let ip = params.get("ip").map(String::as_str);
    let target = match id {
        Some(id) => {
            if ip.is_some_and(|ip| !ip.trim().is_empty()) {
                return Err(bad_request(
                    "name the grant by its id (DELETE /api/grant/<id>) or by its address (DELETE /api/grant?vault=<vault>&ip=<address>), not both",
                ));
            }
            check_id(&id)?;
            log.grant_id = Some(id.clone());
            RevokeTarget::Id(id)
        }
        None => {
            if vault.is_none() {
                return Err(bad_request(
                    "name the grant to revoke: DELETE /api/grant/<id>[?vault=<vault>], or DELETE /api/grant?vault=<vault>&ip=<address> (ip defaults to the caller's address)",
                ));
            }
            let address = address(req, "revoke", ip, "the ip parameter")?;
            log.address = Some(address.to_string());
            RevokeTarget::Address(address)
        }
    };
    let request = RevokeRequest {
        vault,
        target,
        requester,
        trigger: "http",
    };
    let engine = state
        .engine()
        .await
        .map_err(|err| refused(ErrorKind::NotConfigured, &err.0))?;
    match engine.revoke(&request).await {
        Ok(report) => Ok(report_answer(&report, log)),
        Err(err) => Err(refused(err.kind(), &err.to_string())),
    }
}

/// The grant id of `…/grant/<id>`, when the host sent no route parameters.
fn id_from_url(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [.., grant, id] if grant.eq_ignore_ascii_case("grant") => Some((*id).to_owned()),
        _ => None,
    }
}

fn check_id(id: &str) -> Result<(), Box<Response>> {
    let fine = id.chars().count() <= MAX_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if fine {
        Ok(())
    } else {
        Err(bad_request(&format!(
            "'{}' is not a grant id; an id is up to {MAX_ID_CHARS} letters, digits and - _ . : (as POST /api/grant answered it)",
            printable(id, MAX_ID_CHARS)
        )))
    }
}

/// A grant's or revoke's report: 200 when the rule is as asked (placed, or removed), else the
/// status of the vault's error kind, with the one shape of an error beside the report (as a
/// sync with a failed vault answers).
fn report_answer(report: &GrantReport, log: &mut RequestLog) -> Response {
    log.report(report);
    let mut body = report.to_json();
    let logs: Vec<String> = report.to_text().lines().map(str::to_owned).collect();
    let failed = report
        .vault
        .as_ref()
        .filter(|_| !report.succeeded())
        .and_then(|vault| vault.outcome.error_kind().map(|kind| (vault, kind)));
    let (status, error) = match failed {
        None => (200, None),
        Some((vault, kind)) => {
            let disposition = policy::disposition(kind);
            let error = vault_line(vault);
            body["error"] = json!(error);
            body["kind"] = json!(kind.as_str());
            body["retry"] = json!(disposition.retry_helps);
            (disposition.http_status, Some(error))
        }
    };
    noted(http_answer(status, body, logs), status, error.as_deref())
}

/// Base64 as App Service writes `X-MS-CLIENT-PRINCIPAL` (standard alphabet, padded): for the
/// tests that play the platform.
#[cfg(test)]
pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    azure_core::base64::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(principal: &Value) -> String {
        encode_base64(principal.to_string().as_bytes())
    }

    fn request(headers: Value) -> HttpRequestData {
        serde_json::from_value(json!({"Method": "POST", "Headers": headers})).unwrap()
    }

    #[test]
    fn base64_decodes_both_alphabets_with_or_without_padding() {
        for (text, bytes) in [
            ("Zg==", &b"f"[..]),
            ("Zg", b"f"),
            ("Zm8=", b"fo"),
            ("Zm9v", b"foo"),
            ("+/8=", &[0xfb, 0xff]),
            ("-_8", &[0xfb, 0xff]),
        ] {
            assert_eq!(decode_base64(text).as_deref(), Some(bytes), "{text}");
        }
        for bad in ["", "Z", "Zm9v!", "Zm 9v", "Zg==="] {
            assert_eq!(decode_base64(bad), None, "{bad:?}");
        }
        let principal = json!({"auth_typ": "aad", "claims": [{"typ": "oid", "val": "x"}]});
        let decoded = decode_base64(&encode(&principal)).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&decoded).unwrap(),
            principal
        );
    }

    #[test]
    fn the_last_forwarded_entry_is_the_callers_address() {
        for (forwarded, want) in [
            (json!(["20.1.2.3"]), Some("20.1.2.3")),
            (json!(["20.1.2.3:51234"]), Some("20.1.2.3")),
            (json!("203.0.113.9, 20.1.2.3:51234"), Some("20.1.2.3")),
            (json!(["203.0.113.9", "20.1.2.3:443"]), Some("20.1.2.3")),
            (json!(["[2001:db8::1]:51234"]), Some("2001:db8::1")),
            (json!(["[2001:db8::1]"]), Some("2001:db8::1")),
            (json!(["2001:db8::1"]), Some("2001:db8::1")),
            (json!(["20.1.2.3, "]), None),
            (json!(["20.1.2.3, not-an-address"]), None),
            (json!(["20.1.2.3:port"]), None),
            (json!(["[2001:db8::1]x"]), None),
            (json!([]), None),
        ] {
            let req = request(json!({"X-Forwarded-For": forwarded}));
            assert_eq!(
                forwarded_address(&req).map(|a| a.to_string()).as_deref(),
                want,
                "{forwarded}"
            );
        }
        assert_eq!(forwarded_address(&request(json!({}))), None);
    }

    const OID: &str = "11111111-2222-3333-4444-555555555555";
    const APP: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    fn principal_headers(claims: Value) -> Value {
        json!({
            "X-MS-CLIENT-PRINCIPAL": encode(&json!({"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"})),
            "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
            "X-MS-CLIENT-PRINCIPAL-NAME": "pipeline\u{7}-sp",
        })
    }

    #[test]
    fn the_principal_is_believed_only_as_app_service_forwards_it() {
        let claims = json!([
            {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": OID.to_uppercase()},
            {"typ": "appid", "val": APP},
            {"typ": "azp", "val": APP},
        ]);
        let req = request(principal_headers(claims.clone()));
        assert_eq!(
            authenticate(true, &req).unwrap(),
            Requester::Principal {
                object_id: Some(OID.to_owned()),
                app_id: Some(APP.to_owned()),
                name: Some("pipeline-sp".to_owned()),
            }
        );
        assert!(authenticate(false, &req)
            .unwrap_err()
            .contains("WEBSITE_AUTH_ENABLED"));
        // Different ids of one kind, an id that is no GUID, neither id, another provider.
        for (claims, error) in [
            (
                json!([{"typ": "oid", "val": OID}, {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": APP}]),
                "2 different object ids",
            ),
            (json!([{"typ": "azp", "val": "pipeline"}]), "is not a GUID"),
            (json!([{"typ": "name", "val": "someone"}]), "no object id"),
        ] {
            let err = authenticate(true, &request(principal_headers(claims))).unwrap_err();
            assert!(err.contains(error), "{err}");
        }
        let mut github = principal_headers(claims);
        github["X-MS-CLIENT-PRINCIPAL-IDP"] = json!("github");
        let err = authenticate(true, &request(github.clone())).unwrap_err();
        assert!(err.contains("identity provider 'github'"), "{err}");
        github["X-MS-CLIENT-PRINCIPAL-IDP"] = json!(["aad", "aad"]);
        assert!(authenticate(true, &request(github)).is_err());
    }
}
