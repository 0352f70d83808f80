//! Managed-identity token endpoints and the tokens they issue (Microsoft Learn, "How to use managed
//! identities for App Service and Azure Functions" and "How to use managed identities for Azure
//! resources on an Azure VM to acquire an access token").
//!
//! Two endpoint flavours exist in Azure: App Service / Functions (`IDENTITY_ENDPOINT`, guarded by
//! `X-IDENTITY-HEADER`) and the VM instance metadata service (IMDS, guarded by `Metadata: true`).
//! Both return string-typed `expires_on`, which some clients (azure_identity 1.0) insist on. Tokens
//! are remembered with their audience, principal and expiry, so ARM routes can refuse unknown,
//! expired or wrong-audience tokens with the codes ARM uses. They are shaped like Entra ID access
//! tokens (an unsigned JWT with `aud`, `iss`, `iat`, `nbf`, `exp`, `oid`, `tid`, `appid`), so
//! that a service that checks the claims but not the signature — Azurite in `--oauth basic` mode —
//! accepts a token issued here for its audience (`https://storage.azure.com`).

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::clock::{dotnet_utc, duration_ms, now_epoch_ms};
use crate::error::ArmError;
use crate::ids;
use crate::query::Query;

/// Client id of the emulated system-assigned identity.
pub const SYSTEM_ASSIGNED_CLIENT_ID: &str = "6a1f4c3e-2b7d-4e59-9c0a-5d8e7f1b2c3d";
/// Object (principal) id of the emulated system-assigned identity.
pub const SYSTEM_ASSIGNED_OBJECT_ID: &str = "0b9e8d7c-6f5a-4b3c-8d2e-1f0a9b8c7d6e";

/// The identity a token was issued to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Principal {
    pub client_id: String,
    pub object_id: String,
}

impl Principal {
    pub fn system_assigned() -> Self {
        Principal {
            client_id: SYSTEM_ASSIGNED_CLIENT_ID.to_owned(),
            object_id: SYSTEM_ASSIGNED_OBJECT_ID.to_owned(),
        }
    }
}

/// How a user-assigned identity was selected in a token request.
enum Selector<'a> {
    Client(&'a str),
    Object(&'a str),
    Resource(&'a str),
}

impl Selector<'_> {
    /// The principal the selector names; ids not given are derived so they are stable.
    fn principal(&self) -> Principal {
        match *self {
            Selector::Client(id) => Principal {
                client_id: id.to_owned(),
                object_id: ids::derived_guid("object-of-client", id),
            },
            Selector::Object(id) => Principal {
                client_id: ids::derived_guid("client-of-object", id),
                object_id: id.to_owned(),
            },
            Selector::Resource(id) => Principal {
                client_id: ids::derived_guid("client-of-resource", id),
                object_id: ids::derived_guid("object-of-resource", id),
            },
        }
    }
}

struct IssuedToken {
    resource: String,
    principal: Principal,
    expires_at_ms: u64,
}

/// A freshly issued token.
pub(crate) struct Issued {
    pub access_token: String,
    pub expires_on_secs: u64,
    pub expires_in_secs: u64,
    pub issued_at_secs: u64,
}

/// The tenant the emulated identities belong to.
pub const TENANT_ID: &str = "00000000-0000-0000-0000-0000000000aa";

/// An access token in the shape Entra ID issues: `header.claims.signature`, base64url. The
/// signature is random (nothing here verifies it); a random `jti` makes every token unique.
fn jwt(resource: &str, principal: &Principal, issued_at: u64, expires: u64) -> String {
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "tagfence-emulator"});
    let claims = json!({
        "aud": resource.trim_end_matches("/.default"),
        "iss": format!("https://sts.windows.net/{TENANT_ID}/"),
        "iat": issued_at,
        "nbf": issued_at.saturating_sub(300),
        "exp": expires,
        "oid": principal.object_id,
        "sub": principal.object_id,
        "tid": TENANT_ID,
        "appid": principal.client_id,
        "idtyp": "app",
        "jti": ids::random_token(),
    });
    format!(
        "{}.{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes()),
        base64url(ids::random_token().as_bytes())
    )
}

/// Base64url without padding (RFC 7515 §2).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Every token the emulator has issued.
#[derive(Default)]
pub(crate) struct TokenStore {
    tokens: HashMap<String, IssuedToken>,
}

impl TokenStore {
    pub fn issue(&mut self, resource: &str, principal: Principal, lifetime: Duration) -> Issued {
        let now_ms = now_epoch_ms();
        let expires_at_ms = now_ms.saturating_add(duration_ms(lifetime));
        let access_token = jwt(resource, &principal, now_ms / 1000, expires_at_ms / 1000);
        self.tokens.insert(
            access_token.clone(),
            IssuedToken {
                resource: resource.to_owned(),
                principal,
                expires_at_ms,
            },
        );
        Issued {
            access_token,
            expires_on_secs: expires_at_ms / 1000,
            expires_in_secs: lifetime.as_secs(),
            issued_at_secs: now_ms / 1000,
        }
    }

    /// Makes every token issued so far expired (one second ago).
    pub fn expire_all(&mut self) {
        let past = now_epoch_ms().saturating_sub(1000);
        for token in self.tokens.values_mut() {
            token.expires_at_ms = token.expires_at_ms.min(past);
        }
    }

    /// Checks an `Authorization` header the way ARM does and returns the caller.
    pub fn authenticate(&self, headers: &HeaderMap, audience: &str) -> Result<Principal, ArmError> {
        let Some(header) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(ArmError::unauthorized(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.".to_owned(),
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("Bearer") && !token.trim().is_empty())
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                ArmError::unauthorized(
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is provided in an invalid format."
                        .to_owned(),
                )
            })?;
        let Some(issued) = self.tokens.get(token) else {
            return Err(ArmError::unauthorized(
                "InvalidAuthenticationToken",
                "The access token is invalid.".to_owned(),
            ));
        };
        let now_ms = now_epoch_ms();
        if issued.expires_at_ms <= now_ms {
            return Err(ArmError::unauthorized(
                "ExpiredAuthenticationToken",
                format!(
                    "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                    dotnet_utc(issued.expires_at_ms),
                    dotnet_utc(now_ms)
                ),
            ));
        }
        if normalise_audience(&issued.resource) != normalise_audience(audience) {
            let wanted = audience.trim_end_matches('/');
            return Err(ArmError::unauthorized(
                "InvalidAuthenticationTokenAudience",
                format!(
                    "The access token has been obtained for wrong audience or resource '{}'. It should exactly match with one of the allowed audiences '{wanted}/','{wanted}'.",
                    issued.resource
                ),
            ));
        }
        Ok(issued.principal.clone())
    }
}

/// Audiences compare without case, trailing slash or a `/.default` scope suffix.
fn normalise_audience(audience: &str) -> String {
    let audience = audience.trim();
    let audience = audience.strip_suffix("/.default").unwrap_or(audience);
    audience.trim_end_matches('/').to_ascii_lowercase()
}

/// Whether an App Service token request carries the right `X-IDENTITY-HEADER`.
pub(crate) fn app_service_header_ok(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get("x-identity-header")
        .is_some_and(|value| value.as_bytes() == expected.as_bytes())
}

/// Whether an IMDS token request carries `Metadata: true`.
pub(crate) fn imds_header_ok(headers: &HeaderMap) -> bool {
    headers
        .get("metadata")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

/// A refused token request: the OAuth-style error body the identity endpoints answer with.
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response()
    }
}

/// A [`Refusal`] with this status, OAuth `error` code and description.
fn identity_error(status: StatusCode, error: &'static str, description: &str) -> Refusal {
    Refusal {
        status,
        error,
        description: description.to_owned(),
    }
}

/// Which identity endpoint is being served.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    AppService,
    Imds,
}

/// Handles a token request on either endpoint; `issue` issues the token.
///
/// The checks run as steps, and the first failure is the answer: the endpoint's guard header,
/// then `api-version` and `resource`, then the identity selector; only then is a token issued.
pub(crate) fn token_response(
    flavour: Flavour,
    headers: &HeaderMap,
    query: &Query,
    identity_header: &str,
    issue: impl FnOnce(&str, Principal) -> Issued,
) -> Response {
    let answer = (|| {
        check_guard_header(flavour, headers, identity_header)?;
        let resource = requested_resource(flavour, query)?;
        let principal = selected_principal(flavour, query)?;
        let client_id = principal.client_id.clone();
        let issued = issue(resource, principal);
        Ok::<_, Refusal>(token_body(flavour, &issued, resource, &client_id))
    })();
    match answer {
        Ok(body) => (StatusCode::OK, axum::Json(body)).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// Step 1: the endpoint's guard header (`X-IDENTITY-HEADER` matching the app's secret for App
/// Service, `Metadata: true` for IMDS), checked before any parameter; each endpoint refuses a
/// missing one with its own status and code.
fn check_guard_header(
    flavour: Flavour,
    headers: &HeaderMap,
    identity_header: &str,
) -> Result<(), Refusal> {
    match flavour {
        Flavour::AppService if !app_service_header_ok(headers, identity_header) => {
            Err(identity_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized_client",
                "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.",
            ))
        }
        Flavour::Imds if !imds_header_ok(headers) => Err(identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        )),
        _ => Ok(()),
    }
}

/// Step 2: a supported `api-version` (each endpoint has its own oldest one) and the `resource`
/// the token is for, which is returned.
fn requested_resource(flavour: Flavour, query: &Query) -> Result<&str, Refusal> {
    let Some(api_version) = query.get("api-version").filter(|v| !v.is_empty()) else {
        return Err(identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        ));
    };
    let minimum = match flavour {
        Flavour::AppService => "2019-08-01",
        Flavour::Imds => "2018-02-01",
    };
    if !is_date_version(api_version) || api_version < minimum {
        return Err(identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("Invalid api-version '{api_version}'; use {minimum} or later"),
        ));
    }
    query
        .get("resource")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            identity_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Required audience parameter 'resource' not specified",
            )
        })
}

/// Step 3: the identity the token is for: the system-assigned one when no selector is given, else
/// the user-assigned one the single, non-empty selector names.
fn selected_principal(flavour: Flavour, query: &Query) -> Result<Principal, Refusal> {
    let selector_names: &[&str] = match flavour {
        // azure_identity 1.0 sends IMDS's `msi_res_id` to the App Service endpoint too, so both
        // spellings of the resource-id selector are accepted there.
        Flavour::AppService => &[
            "client_id",
            "principal_id",
            "object_id",
            "mi_res_id",
            "msi_res_id",
        ],
        Flavour::Imds => &["client_id", "object_id", "msi_res_id"],
    };
    let selectors: Vec<(&str, &str)> = selector_names
        .iter()
        .filter_map(|name| query.get(name).map(|value| (*name, value)))
        .collect();
    match selectors.as_slice() {
        [] => Ok(Principal::system_assigned()),
        [(name, value)] if !value.is_empty() => {
            let selector = match *name {
                "client_id" => Selector::Client(value),
                "principal_id" | "object_id" => Selector::Object(value),
                _ => Selector::Resource(value),
            };
            Ok(selector.principal())
        }
        [(name, _)] => Err(identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("The '{name}' parameter is empty"),
        )),
        _ => Err(identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("Only one of {} may be specified", selector_names.join(", ")),
        )),
    }
}

/// Step 4: the answer body in the endpoint's own shape. Both give `expires_on` as a string (which
/// azure_identity 1.0 insists on); IMDS adds its `expires_in`, `ext_expires_in` and `not_before`.
fn token_body(flavour: Flavour, issued: &Issued, resource: &str, client_id: &str) -> Value {
    match flavour {
        Flavour::AppService => json!({
            "access_token": issued.access_token,
            "expires_on": issued.expires_on_secs.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }),
        Flavour::Imds => json!({
            "access_token": issued.access_token,
            "client_id": client_id,
            "expires_in": issued.expires_in_secs.to_string(),
            "expires_on": issued.expires_on_secs.to_string(),
            "ext_expires_in": issued.expires_in_secs.to_string(),
            "not_before": issued.issued_at_secs.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    }
}

/// `YYYY-MM-DD`, optionally followed by a suffix such as `-preview`.
pub(crate) fn is_date_version(version: &str) -> bool {
    let bytes = version.as_bytes();
    bytes.len() >= 10
        && bytes[..10].iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
        && (bytes.len() == 10 || bytes[10] == b'-')
}

#[cfg(test)]
mod jwt_tests {
    use super::*;

    #[test]
    fn tokens_are_jwts_with_the_requested_audience() {
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        let token = jwt(
            "https://storage.azure.com",
            &Principal::system_assigned(),
            1000,
            4600,
        );
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims = parts[1];
        // Decode the claims back (base64url, no padding).
        let decoded: Vec<u8> = {
            let value = |c: u8| match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'-' => 62,
                _ => 63,
            };
            let bits: Vec<u8> = claims.bytes().map(value).collect();
            let mut out = Vec::new();
            for chunk in bits.chunks(4) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (i, v)| acc | (u32::from(*v) << (18 - 6 * i)));
                for i in 0..chunk.len() - 1 {
                    out.push((n >> (16 - 8 * i)) as u8);
                }
            }
            out
        };
        let claims: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(claims["aud"], "https://storage.azure.com");
        assert_eq!(claims["exp"], 4600);
        assert!(claims["iss"]
            .as_str()
            .unwrap()
            .starts_with("https://sts.windows.net/"));
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::try_from(format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    const ARM: &str = "https://management.azure.com/";

    #[test]
    fn audiences_compare_loosely() {
        assert_eq!(
            normalise_audience("https://management.azure.com/.default"),
            "https://management.azure.com"
        );
        assert_eq!(
            normalise_audience("https://Management.azure.com/"),
            "https://management.azure.com"
        );
    }

    #[test]
    fn a_fresh_token_for_arm_authenticates() {
        let mut store = TokenStore::default();
        let issued = store.issue(
            "https://management.azure.com",
            Principal::system_assigned(),
            Duration::from_secs(60),
        );
        let principal = store
            .authenticate(&bearer(&issued.access_token), ARM)
            .unwrap();
        assert_eq!(principal, Principal::system_assigned());
    }

    #[test]
    fn each_failure_has_its_arm_code() {
        let mut store = TokenStore::default();
        assert_eq!(
            store.authenticate(&HeaderMap::new(), ARM).unwrap_err().code,
            "AuthenticationFailed"
        );
        let mut basic = HeaderMap::new();
        basic.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic abc"),
        );
        assert_eq!(
            store.authenticate(&basic, ARM).unwrap_err().code,
            "AuthenticationFailed"
        );
        assert_eq!(
            store.authenticate(&bearer("nope"), ARM).unwrap_err().code,
            "InvalidAuthenticationToken"
        );

        let vault = store.issue(
            "https://vault.azure.net",
            Principal::system_assigned(),
            Duration::from_secs(60),
        );
        let err = store
            .authenticate(&bearer(&vault.access_token), ARM)
            .unwrap_err();
        assert_eq!(err.code, "InvalidAuthenticationTokenAudience");
        assert!(
            err.message.contains("https://vault.azure.net"),
            "{}",
            err.message
        );

        let arm = store.issue(ARM, Principal::system_assigned(), Duration::from_secs(60));
        store.expire_all();
        let err = store
            .authenticate(&bearer(&arm.access_token), ARM)
            .unwrap_err();
        assert_eq!(err.code, "ExpiredAuthenticationToken");
        assert!(
            err.message
                .starts_with("The access token expiry UTC time '"),
            "{}",
            err.message
        );
        assert!(err.www_authenticate.is_some());
    }

    #[test]
    fn selectors_map_to_stable_principals() {
        let a = Selector::Client("c1").principal();
        assert_eq!(a.client_id, "c1");
        assert_eq!(a, Selector::Client("c1").principal());
        let b = Selector::Object("o1").principal();
        assert_eq!(b.object_id, "o1");
        assert_ne!(
            Selector::Resource("/x").principal(),
            Principal::system_assigned()
        );
    }

    #[test]
    fn date_versions_are_recognised() {
        assert!(is_date_version("2019-08-01"));
        assert!(is_date_version("2021-06-01-preview"));
        assert!(!is_date_version("2019-8-01"));
        assert!(!is_date_version("latest"));
        assert!(!is_date_version("2019-08-01x"));
    }
}
