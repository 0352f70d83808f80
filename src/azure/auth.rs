//! Choosing and building the credential, with `azure_identity` 1.x (no hand-written token code).
//!
//! Automatic choice, in order:
//! 1. `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` set (Azure Functions, App Service): the managed
//!    identity through the App Service endpoint;
//! 2. `AZURE_FEDERATED_TOKEN_FILE` set (AKS workload identity, federated pipelines): workload
//!    identity;
//! 3. otherwise the developer tools (`az login`, `azd auth login`).
//!
//! `--credential managed-identity` forces the managed identity, which then uses IMDS on a VM.
//! `AZURE_CLIENT_ID` selects a user-assigned identity by client id. The credentials cache one
//! token per scope and refresh it five minutes before it expires; a token the service refuses
//! anyway (a 401: expired early, revoked, a skewed clock) is dropped by starting the credential
//! over ([`Renewable`]), since `azure_identity` has no way to evict a cached token.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_identity::{
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential,
};

use super::pipeline::{error_chain, RefusedToken};

/// Which credential to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    /// Managed identity in Functions/App Service, else workload identity, else developer tools.
    #[default]
    Auto,
    /// The managed identity (App Service endpoint when present, else IMDS).
    ManagedIdentity,
    /// Workload identity federation (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`).
    WorkloadIdentity,
    /// `az login` or `azd auth login` on a developer machine.
    DeveloperTools,
}

/// The identity-related environment, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityEnv {
    pub identity_endpoint: bool,
    pub identity_header: bool,
    pub federated_token_file: bool,
    pub client_id: Option<String>,
}

impl IdentityEnv {
    /// Reads the variables the credentials look at.
    pub fn from_process() -> Self {
        let set = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        IdentityEnv {
            identity_endpoint: set("IDENTITY_ENDPOINT"),
            identity_header: set("IDENTITY_HEADER"),
            federated_token_file: set("AZURE_FEDERATED_TOKEN_FILE"),
            client_id: std::env::var("AZURE_CLIENT_ID")
                .ok()
                .filter(|v| !v.trim().is_empty()),
        }
    }
}

/// The credential that will be used, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chosen {
    AppServiceManagedIdentity { client_id: Option<String> },
    ImdsManagedIdentity { client_id: Option<String> },
    WorkloadIdentity,
    DeveloperTools,
}

impl fmt::Display for Chosen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let identity = |client_id: &Option<String>| match client_id {
            Some(id) => format!("user-assigned identity {id}"),
            None => "system-assigned identity".to_owned(),
        };
        match self {
            Chosen::AppServiceManagedIdentity { client_id } => {
                write!(
                    f,
                    "managed identity via the App Service endpoint ({})",
                    identity(client_id)
                )
            }
            Chosen::ImdsManagedIdentity { client_id } => {
                write!(f, "managed identity via IMDS ({})", identity(client_id))
            }
            Chosen::WorkloadIdentity => f.write_str("workload identity"),
            Chosen::DeveloperTools => f.write_str("developer tools (az / azd login)"),
        }
    }
}

/// Decides which credential `kind` means in `env`.
pub fn choose(kind: CredentialKind, env: &IdentityEnv) -> Chosen {
    let app_service = env.identity_endpoint && env.identity_header;
    let managed = || {
        let client_id = env.client_id.clone();
        if app_service {
            Chosen::AppServiceManagedIdentity { client_id }
        } else {
            Chosen::ImdsManagedIdentity { client_id }
        }
    };
    match kind {
        CredentialKind::ManagedIdentity => managed(),
        CredentialKind::WorkloadIdentity => Chosen::WorkloadIdentity,
        CredentialKind::DeveloperTools => Chosen::DeveloperTools,
        CredentialKind::Auto if app_service => managed(),
        CredentialKind::Auto if env.federated_token_file => Chosen::WorkloadIdentity,
        CredentialKind::Auto => Chosen::DeveloperTools,
    }
}

/// Builds the credential `kind` means here, able to start over when a token it handed out is
/// refused ([`Renewable`]).
///
/// # Errors
/// When `azure_identity` refuses the configuration (e.g. workload identity without its
/// variables), with its reason.
pub fn credential(
    kind: CredentialKind,
    env: &IdentityEnv,
) -> Result<(Arc<dyn TokenCredential>, Chosen), String> {
    let chosen = choose(kind, env);
    let first = build(&chosen)
        .map_err(|err| format!("setting up the {chosen} credential: {}", error_chain(&err)))?;
    let again = chosen.clone();
    let renewable = Renewable::new(first, move || build(&again));
    Ok((Arc::new(renewable), chosen))
}

/// The `azure_identity` credential for `chosen`, with an empty token cache.
fn build(chosen: &Chosen) -> azure_core::Result<Arc<dyn TokenCredential>> {
    match chosen {
        Chosen::AppServiceManagedIdentity { client_id }
        | Chosen::ImdsManagedIdentity { client_id } => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                ..Default::default()
            }))
            .map(|c| c as Arc<dyn TokenCredential>)
        }
        Chosen::WorkloadIdentity => {
            WorkloadIdentityCredential::new(None).map(|c| c as Arc<dyn TokenCredential>)
        }
        Chosen::DeveloperTools => {
            DeveloperToolsCredential::new(None).map(|c| c as Arc<dyn TokenCredential>)
        }
    }
}

/// The constructor of a fresh credential.
type Build = dyn Fn() -> azure_core::Result<Arc<dyn TokenCredential>> + Send + Sync;

/// A credential that can start over. `azure_identity` caches a token per scope until five
/// minutes before its `expires_on` and offers no way to evict it, so a token the service refuses
/// earlier (server-side expiry, revocation, clock skew) would otherwise be sent again on every
/// request until then — for a long-lived `serve` process, up to the token's whole lifetime
/// (a day for managed-identity tokens). Asked with a [`RefusedToken`] for the token it would
/// hand out, it builds a new credential (an empty cache) and asks that one. Requests that fail
/// together start over once.
pub struct Renewable {
    current: Mutex<Arc<dyn TokenCredential>>,
    build: Box<Build>,
    renewing: tokio::sync::Mutex<()>,
}

impl Renewable {
    pub fn new(
        first: Arc<dyn TokenCredential>,
        build: impl Fn() -> azure_core::Result<Arc<dyn TokenCredential>> + Send + Sync + 'static,
    ) -> Self {
        Renewable {
            current: Mutex::new(first),
            build: Box::new(build),
            renewing: tokio::sync::Mutex::new(()),
        }
    }

    fn current(&self) -> Arc<dyn TokenCredential> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl fmt::Debug for Renewable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renewable")
            .field("current", &self.current())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenCredential for Renewable {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let refused = options
            .as_ref()
            .and_then(|o| o.method_options.context.value::<RefusedToken>())
            .copied();
        let Some(refused) = refused else {
            return self.current().get_token(scopes, options).await;
        };
        // One renewal at a time; whoever comes second finds the new token already there.
        let _renewing = self.renewing.lock().await;
        let token = self.current().get_token(scopes, None).await?;
        if RefusedToken::of(token.token.secret()) != refused {
            return Ok(token);
        }
        let fresh = (self.build)()?;
        *self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh.clone();
        tracing::info!("the service refused the cached token; starting the credential over");
        fresh.get_token(scopes, None).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use azure_core::http::{ClientMethodOptions, Context};

    use super::*;

    /// Hands out `token-<generation>`, the same until it is rebuilt (like a cache).
    #[derive(Debug)]
    struct Counting {
        generation: usize,
    }

    #[async_trait]
    impl TokenCredential for Counting {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            let expires =
                azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1);
            Ok(AccessToken::new(
                format!("token-{}", self.generation),
                expires,
            ))
        }
    }

    fn refused(token: &str) -> Option<TokenRequestOptions<'static>> {
        Some(TokenRequestOptions {
            method_options: ClientMethodOptions {
                context: Context::new().with_value(RefusedToken::of(token)),
            },
        })
    }

    #[tokio::test]
    async fn a_refused_token_starts_the_credential_over_once() {
        let builds = Arc::new(AtomicUsize::new(0));
        let build = {
            let builds = builds.clone();
            move || -> azure_core::Result<Arc<dyn TokenCredential>> {
                let generation = builds.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(Arc::new(Counting { generation }))
            }
        };
        let first = build().unwrap();
        let credential = Renewable::new(first, build);
        let scope = ["https://management.azure.com/.default"];
        let secret = |t: AccessToken| t.token.secret().to_owned();

        // Cached: the same token, no rebuild.
        assert_eq!(
            secret(credential.get_token(&scope, None).await.unwrap()),
            "token-1"
        );
        assert_eq!(
            secret(credential.get_token(&scope, None).await.unwrap()),
            "token-1"
        );
        assert_eq!(builds.load(Ordering::SeqCst), 1);

        // Refused: a new credential, a new token, kept from then on.
        let renewed = credential
            .get_token(&scope, refused("Bearer token-1"))
            .await;
        assert_eq!(secret(renewed.unwrap()), "token-2");
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        assert_eq!(
            secret(credential.get_token(&scope, None).await.unwrap()),
            "token-2"
        );

        // A second request that saw the old token refused finds the new one: no rebuild.
        let again = credential.get_token(&scope, refused("token-1")).await;
        assert_eq!(secret(again.unwrap()), "token-2");
        assert_eq!(builds.load(Ordering::SeqCst), 2);
    }

    fn env(endpoint: bool, header: bool, federated: bool, client_id: Option<&str>) -> IdentityEnv {
        IdentityEnv {
            identity_endpoint: endpoint,
            identity_header: header,
            federated_token_file: federated,
            client_id: client_id.map(str::to_owned),
        }
    }

    #[test]
    fn automatic_choice_follows_the_environment() {
        let cases = [
            (
                env(true, true, false, None),
                Chosen::AppServiceManagedIdentity { client_id: None },
            ),
            (
                env(true, true, true, Some("c1")),
                Chosen::AppServiceManagedIdentity {
                    client_id: Some("c1".into()),
                },
            ),
            (env(true, false, false, None), Chosen::DeveloperTools),
            (
                env(false, false, true, Some("c1")),
                Chosen::WorkloadIdentity,
            ),
            (env(false, false, false, None), Chosen::DeveloperTools),
        ];
        for (env, expected) in cases {
            assert_eq!(choose(CredentialKind::Auto, &env), expected, "{env:?}");
        }
    }

    #[test]
    fn an_explicit_choice_wins() {
        let plain = env(false, false, true, Some("c9"));
        assert_eq!(
            choose(CredentialKind::ManagedIdentity, &plain),
            Chosen::ImdsManagedIdentity {
                client_id: Some("c9".into())
            }
        );
        assert_eq!(
            choose(
                CredentialKind::DeveloperTools,
                &env(true, true, false, None)
            ),
            Chosen::DeveloperTools
        );
        assert_eq!(
            Chosen::ImdsManagedIdentity {
                client_id: Some("c9".into())
            }
            .to_string(),
            "managed identity via IMDS (user-assigned identity c9)"
        );
    }
}
