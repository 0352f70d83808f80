//! The Azure shell: credentials, endpoints, the `azure_core` pipeline and the small typed ARM
//! client. Every ARM call goes through [`arm`], and with the Service Tags download through
//! [`pipeline`]; Blob storage uses `azure_storage_blob`'s own pipeline (over the same TLS
//! settings, `state::blob`), and webhooks are posted by `notify` with the same retry rules.
//!
//! - [`auth`]: choosing and building the `azure_identity` credential.
//! - [`pipeline`]: the `azure_core` pipeline shared by every call (retries honouring
//!   `Retry-After`, a timeout per attempt and per call, a bearer token that is never sent over
//!   plain HTTP except to a loopback emulator), and the error type.
//! - [`arm`]: GET/PATCH of a firewalled resource, the Service Tag Discovery API and Resource Graph.
//! - [`kinds`]: each firewall kind's api-version and its names in Resource Graph and
//!   Event Grid.
//! - [`budget`]: ARM's read and write budgets and Resource Graph's quota, kept on the client side.
//! - [`index`]: the firewalls of many vaults from one Resource Graph query.

pub mod arm;
pub mod auth;
pub mod budget;
pub mod index;
pub mod kinds;
pub mod pipeline;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use url::Url;

use crate::core::kind::Kind;
use crate::core::service_tags::Cloud;

/// Where a cloud's services live, and what its tokens are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEndpoints {
    /// Azure Resource Manager.
    pub arm: Url,
    /// The OAuth scope of ARM tokens (`<resource>/.default`).
    pub arm_scope: String,
    /// The Microsoft Download Center page that links the weekly Service Tags file.
    pub download_page: Url,
}

impl CloudEndpoints {
    /// The production endpoints of `cloud`: its ARM host (as in Azure CLI's cloud definitions,
    /// `az cloud show`) and its Microsoft Download Center page "Azure IP Ranges and Service Tags"
    /// (56519 Public Cloud, 57063 US Government Cloud, 57062 China Cloud).
    pub fn of(cloud: Cloud) -> CloudEndpoints {
        let (arm, download_id) = match cloud {
            Cloud::Public => ("https://management.azure.com/", 56519),
            Cloud::AzureGovernment => ("https://management.usgovcloudapi.net/", 57063),
            Cloud::AzureChina => ("https://management.chinacloudapi.cn/", 57062),
        };
        CloudEndpoints {
            arm: Url::parse(arm).expect("constant URL"),
            arm_scope: format!("{arm}.default"),
            download_page: Url::parse(&format!(
                "https://www.microsoft.com/en-us/download/details.aspx?id={download_id}"
            ))
            .expect("constant URL"),
        }
    }
}

/// Why an endpoint URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("'{0}' is not a URL")]
    Invalid(String),
    #[error("'{0}' uses plain http; only https is allowed, except for a loopback host (a local emulator)")]
    Insecure(String),
    #[error("'{0}' uses the unsupported scheme '{1}'")]
    Scheme(String, String),
}

/// Whether the URL's host is a loopback address (or `localhost`), where plain HTTP to a local
/// emulator is acceptable.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Parses an endpoint URL: https anywhere, http only for loopback hosts.
///
/// # Errors
/// [`EndpointError`] naming the URL.
pub fn parse_endpoint(text: &str) -> Result<Url, EndpointError> {
    let url =
        Url::parse(text.trim()).map_err(|_| EndpointError::Invalid(text.trim().to_owned()))?;
    check_endpoint(&url)?;
    Ok(url)
}

/// Checks an endpoint URL: https anywhere, http only for loopback hosts.
///
/// # Errors
/// [`EndpointError`] naming the URL.
pub fn check_endpoint(url: &Url) -> Result<(), EndpointError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(EndpointError::Insecure(url.to_string())),
        other => Err(EndpointError::Scheme(url.to_string(), other.to_owned())),
    }
}

/// The ARM identity of a firewalled resource:
/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{type}/{name}`, where the
/// provider type is one of the kinds' ([`Kind::resource_type`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    pub kind: Kind,
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

/// Why a resource id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{given}' is not a resource id tagfence can manage (expected /subscriptions/<id>/resourceGroups/<group>/providers/<type>/<name> with <type> one of {}): {reason}", supported_types())]
pub struct ResourceIdError {
    pub given: String,
    pub reason: String,
}

/// The provider types tagfence manages, for messages.
pub fn supported_types() -> String {
    Kind::ALL
        .iter()
        .map(|kind| kind.resource_type())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `name` is a valid resource name of `kind`; `Err` says what is allowed.
///
/// The patterns of the REST specs (Azure/azure-rest-api-specs): Key Vault `vaultName`
/// `^[a-zA-Z0-9-]{3,24}$`; Storage `accountName` 3-24 lower-case letters and digits;
/// Container Registry `registryName` `^[a-zA-Z0-9]*$`, 5-50 characters.
fn check_name(kind: Kind, name: &str) -> Result<(), &'static str> {
    let (lengths, allowed, what): (std::ops::RangeInclusive<usize>, fn(u8) -> bool, _) = match kind
    {
        Kind::KeyVault => (
            3..=24,
            |b: u8| b.is_ascii_alphanumeric() || b == b'-',
            "the vault name must be 3-24 letters, digits or hyphens",
        ),
        Kind::StorageAccount => (
            3..=24,
            |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit(),
            "the storage account name must be 3-24 lower-case letters or digits",
        ),
        Kind::ContainerRegistry => (
            5..=50,
            |b: u8| b.is_ascii_alphanumeric(),
            "the registry name must be 5-50 letters or digits",
        ),
    };
    if lengths.contains(&name.len()) && name.bytes().all(allowed) {
        Ok(())
    } else {
        Err(what)
    }
}

impl FromStr for ResourceId {
    type Err = ResourceIdError;

    /// Resource ids compare case-insensitively in ARM, and events spell them either way
    /// (`resourcegroups`, `microsoft.keyvault`): the fixed segments are matched without case;
    /// the names are kept as given. The kind is the id's provider type.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let given = text.trim();
        let err = |reason: &str| ResourceIdError {
            given: given.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = given.trim_matches('/').split('/').collect();
        let [subscriptions, subscription, groups, group, providers, namespace, kind, name] =
            parts[..]
        else {
            return Err(err("it does not have eight segments"));
        };
        let fixed = [
            (subscriptions, "subscriptions"),
            (groups, "resourceGroups"),
            (providers, "providers"),
        ];
        if !given.starts_with('/')
            || fixed
                .iter()
                .any(|(got, want)| !got.eq_ignore_ascii_case(want))
        {
            return Err(err("the fixed segments do not match"));
        }
        let Some(kind) = Kind::from_resource_type(&format!("{namespace}/{kind}")) else {
            return Err(err(&format!(
                "its type {namespace}/{kind} is not one tagfence manages"
            )));
        };
        if subscription.is_empty() || group.is_empty() {
            return Err(err("the subscription or resource group is empty"));
        }
        check_name(kind, name).map_err(err)?;
        Ok(ResourceId {
            kind,
            subscription: subscription.to_owned(),
            resource_group: group.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/subscriptions/{}/resourceGroups/{}/providers/{}/{}",
            self.subscription,
            self.resource_group,
            self.kind.resource_type(),
            self.name
        )
    }
}

impl ResourceId {
    /// How reports name it: the name, and the kind for any but a Key Vault (which reports named
    /// before there were kinds, and whose lines stay as they were): `kv-prod`,
    /// `stprod (storage account)`.
    pub fn display_name(&self) -> String {
        match self.kind {
            Kind::KeyVault => self.name.clone(),
            kind => format!("{} ({})", self.name, kind.label()),
        }
    }

    /// Whether `other` names the same resource (ARM ids are case-insensitive).
    pub fn same_as(&self, other: &ResourceId) -> bool {
        self.kind == other.kind
            && self.subscription.eq_ignore_ascii_case(&other.subscription)
            && self
                .resource_group
                .eq_ignore_ascii_case(&other.resource_group)
            && self.name.eq_ignore_ascii_case(&other.name)
    }

    /// A lower-cased key for maps and locks.
    pub fn key(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https_unless_loopback() {
        let cases: &[(&str, Result<(), &str>)] = &[
            ("https://management.azure.com/", Ok(())),
            ("http://127.0.0.1:8080/", Ok(())),
            ("http://127.9.9.9/", Ok(())),
            ("http://localhost:1/", Ok(())),
            ("http://[::1]:5/", Ok(())),
            ("http://management.azure.com/", Err("'http://management.azure.com/' uses plain http; only https is allowed, except for a loopback host (a local emulator)")),
            ("http://10.0.0.4/", Err("'http://10.0.0.4/' uses plain http; only https is allowed, except for a loopback host (a local emulator)")),
            ("http://localhost.evil.example/", Err("'http://localhost.evil.example/' uses plain http; only https is allowed, except for a loopback host (a local emulator)")),
            ("ftp://x/", Err("'ftp://x/' uses the unsupported scheme 'ftp'")),
            ("not a url", Err("'not a url' is not a URL")),
        ];
        for (input, expected) in cases {
            let got = parse_endpoint(input).map(|_| ()).map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_owned), "{input}");
        }
    }

    #[test]
    fn vault_ids_parse_in_any_case_and_print_canonically() {
        let id: ResourceId =
            "/subscriptions/s1/resourcegroups/rg-1/providers/microsoft.keyvault/vaults/kv-prod"
                .parse()
                .unwrap();
        assert_eq!(
            id.to_string(),
            "/subscriptions/s1/resourceGroups/rg-1/providers/Microsoft.KeyVault/vaults/kv-prod"
        );
        let upper: ResourceId =
            "/subscriptions/S1/resourceGroups/RG-1/providers/Microsoft.KeyVault/vaults/KV-PROD"
                .parse()
                .unwrap();
        assert!(id.same_as(&upper));
        assert_eq!(id.key(), upper.key());
        for bad in [
            "kv-prod",
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st",
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/k",
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv_prod",
            "/subscriptions//resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-prod",
        ] {
            assert!(bad.parse::<ResourceId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cloud_endpoints() {
        let public = CloudEndpoints::of(Cloud::Public);
        assert_eq!(public.arm_scope, "https://management.azure.com/.default");
        assert_eq!(
            public.download_page.as_str(),
            "https://www.microsoft.com/en-us/download/details.aspx?id=56519"
        );
        assert_eq!(
            CloudEndpoints::of(Cloud::AzureGovernment).arm.as_str(),
            "https://management.usgovcloudapi.net/"
        );
        assert!(CloudEndpoints::of(Cloud::AzureChina)
            .download_page
            .as_str()
            .ends_with("id=57062"));
    }
}
