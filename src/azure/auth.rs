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
//! token per scope and refresh it five minutes before it expires.

use std::fmt;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_identity::{
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential,
};

/// Which credential to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
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

/// Builds the credential `kind` means here.
///
/// # Errors
/// When `azure_identity` refuses the configuration (e.g. workload identity without its
/// variables), with its reason.
pub fn credential(
    kind: CredentialKind,
    env: &IdentityEnv,
) -> Result<(Arc<dyn TokenCredential>, Chosen), String> {
    let chosen = choose(kind, env);
    let built: azure_core::Result<Arc<dyn TokenCredential>> = match &chosen {
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
    };
    built
        .map(|credential| (credential, chosen.clone()))
        .map_err(|err| {
            format!(
                "setting up the {chosen} credential: {}",
                super::http::error_chain(&err)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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
