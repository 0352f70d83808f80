//! Where the state lives: a directory, a blob container named by URL, or the Function App's own
//! storage; or nowhere.

use std::path::PathBuf;

use url::Url;

use super::endpoints::given;
use super::error::ConfigError;
use super::settings::{Settings, DEFAULT_STATE_CONTAINER};
use crate::core::service_tags::Cloud;

/// Where tagfence keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSpec {
    /// A directory (CLI).
    Dir(PathBuf),
    /// A blob container, reached with the run's credential.
    Blob {
        container_url: Url,
        /// Extra trusted CA (PEM file).
        ca_file: Option<PathBuf>,
    },
}

impl std::fmt::Display for StateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateSpec::Dir(dir) => write!(f, "the directory {}", dir.display()),
            StateSpec::Blob { container_url, .. } => {
                write!(f, "the blob container {container_url}")
            }
        }
    }
}

/// A blob endpoint the settings name, before it is checked.
struct BlobEndpoint {
    /// The setting that gave it, for errors.
    setting: &'static str,
    endpoint: String,
    /// The Functions settings name the blob *service*: any path in them is part of the endpoint
    /// (an emulator's account), never a container.
    service_only: bool,
}

/// Where the state lives: `--state-dir`, else `--state-url`, else the Function App's own
/// storage (identity-based `AzureWebJobsStorage__*` settings), else nowhere.
pub(super) fn state_spec(
    settings: &Settings,
    cloud: Cloud,
) -> Result<Option<StateSpec>, ConfigError> {
    let dir = settings
        .state_dir
        .as_ref()
        .filter(|d| !d.as_os_str().is_empty());
    if let (Some(_), Some(_)) = (dir, given(&settings.state_url)) {
        return Err(ConfigError::Setting {
            setting: "--state-dir (TAGFENCE_STATE_DIR)",
            reason: "give either a state directory or a state URL (TAGFENCE_STATE_URL), not both"
                .to_owned(),
        });
    }
    if let Some(dir) = dir {
        return Ok(Some(StateSpec::Dir(dir.clone())));
    }
    let Some(blob) = blob_endpoint(settings, cloud) else {
        return Ok(None);
    };
    let container_url = container_url(&blob, settings.state_container.as_deref())?;
    let ca_file = settings
        .state_ca_file
        .clone()
        .filter(|p| !p.as_os_str().is_empty());
    Ok(Some(StateSpec::Blob {
        container_url,
        ca_file,
    }))
}

/// The blob endpoint the settings name, in order of precedence.
fn blob_endpoint(settings: &Settings, cloud: Cloud) -> Option<BlobEndpoint> {
    if let Some(url) = given(&settings.state_url) {
        return Some(BlobEndpoint {
            setting: "--state-url (TAGFENCE_STATE_URL)",
            endpoint: url.to_owned(),
            service_only: false,
        });
    }
    if let Some(url) = given(&settings.webjobs_blob_service_uri) {
        return Some(BlobEndpoint {
            setting: "AzureWebJobsStorage__blobServiceUri",
            endpoint: url.to_owned(),
            service_only: true,
        });
    }
    given(&settings.webjobs_account_name).map(|account| BlobEndpoint {
        setting: "AzureWebJobsStorage__accountName",
        endpoint: format!("https://{account}.{}", blob_suffix(cloud)),
        service_only: true,
    })
}

/// The blob endpoint suffix of each cloud, for `AzureWebJobsStorage__accountName`.
fn blob_suffix(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Public => "blob.core.windows.net",
        Cloud::AzureGovernment => "blob.core.usgovcloudapi.net",
        Cloud::AzureChina => "blob.core.chinacloudapi.cn",
    }
}

/// The container's URL: `https://<account>.blob.core.windows.net[/<container>]`, or for a
/// path-style endpoint (an emulator: `https://127.0.0.1:10000/<account>/<container>`) one that
/// ends with the container. `configured` names the container when the URL does not.
fn container_url(blob: &BlobEndpoint, configured: Option<&str>) -> Result<Url, ConfigError> {
    let endpoint = &blob.endpoint;
    let bad = |reason: String| ConfigError::Setting {
        setting: blob.setting,
        reason,
    };
    let mut url =
        Url::parse(endpoint).map_err(|e| bad(format!("'{endpoint}' is not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(bad(format!(
            "'{endpoint}' must use https: storage tokens are never sent in clear"
        )));
    }
    if url.query().is_some() {
        return Err(bad(
            "the URL must not carry a query (no SAS tokens: tagfence uses its identity)".to_owned(),
        ));
    }
    let named: Vec<String> = url
        .path_segments()
        .map(|segments| {
            segments
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let configured = match configured.map(str::trim) {
        None | Some("") => DEFAULT_STATE_CONTAINER.to_owned(),
        Some(name) => name.to_owned(),
    };
    let (prefix, container) = match named.split_last() {
        Some((last, rest)) if !blob.service_only => (rest.to_vec(), last.clone()),
        _ => (named.clone(), configured),
    };
    if !valid_container_name(&container) {
        return Err(bad(format!("'{container}' is not a valid container name (3-63 lowercase letters, digits and single hyphens)")));
    }
    let path: String = prefix
        .iter()
        .chain(std::iter::once(&container))
        .map(|segment| format!("/{segment}"))
        .collect();
    url.set_path(&path);
    Ok(url)
}

fn valid_container_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_the_storage_rules() {
        for good in ["abc", "tagfence", "tf-state-1"] {
            assert!(valid_container_name(good), "{good}");
        }
        for bad in ["ab", "Bad_Name", "-a-b", "a-b-", "a--b", &"a".repeat(64)] {
            assert!(!valid_container_name(bad), "{bad}");
        }
    }
}
