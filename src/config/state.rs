//! Where the state lives: a directory, a blob container named by URL, or the Function App's own
//! storage; or nowhere.

use std::path::{Path, PathBuf};

use url::Url;

use super::error::ConfigError;
use super::given::{spelled, Given, Reader};
use super::settings::{Key, DEFAULT_STATE_CONTAINER};
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
struct BlobEndpoint<'a> {
    /// The setting that gave it, for errors.
    given: &'a Given,
    endpoint: String,
    /// The Functions settings name the blob *service*: any path in them is part of the endpoint
    /// (an emulator's account), never a container.
    service_only: bool,
}

/// Where the state lives: `--state-dir`, else `--state-url`, else the Function App's own
/// storage (identity-based `AzureWebJobsStorage__*` settings), else nowhere. With
/// `must_exist` (a command that only reads state), a directory that does not exist is refused
/// rather than taken for an empty state.
pub(super) fn state_spec(
    reader: &mut Reader<'_>,
    cloud: Cloud,
    must_exist: bool,
) -> Option<StateSpec> {
    let container = container_setting(reader);
    let givens = reader.givens;
    let ca_file = givens.get(Key::StateCaFile);
    if let Some(given) = ca_file {
        if !Path::new(given.text().trim()).is_file() {
            reader.invalid(
                given,
                given.text(),
                "no such file; expected a PEM certificate file",
            );
        }
    }
    if let Some(dir) = givens.get(Key::StateDir) {
        if let Some(url) = givens.get(Key::StateUrl) {
            reader.problems.push(ConfigError::Conflict {
                setting: dir.shown_all(),
                reason: format!(
                    "give either a state directory or a state URL, not both ({} is given too)",
                    url.name()
                ),
            });
        }
        if let Some(ca) = ca_file {
            reader.problems.push(ConfigError::Conflict {
                setting: ca.shown_all(),
                reason: format!(
                    "only used for state in Blob storage, and {} keeps it in a directory",
                    dir.shown_all()
                ),
            });
        }
        return state_dir(reader, dir, must_exist).map(StateSpec::Dir);
    }
    let blob = blob_endpoint(reader, cloud)?;
    let account = blob.given.text().trim();
    if blob.given.key == Key::WebjobsAccountName && !valid_account_name(account) {
        let reason = "not a storage account's name; expected 3-24 lowercase letters and digits";
        reader.invalid(blob.given, blob.given.text(), reason);
        return None;
    }
    let container_url = container_url(reader, &blob, container)?;
    let ca_file = ca_file.map(|g| PathBuf::from(g.text().trim()));
    Some(StateSpec::Blob {
        container_url,
        ca_file,
    })
}

/// The state directory: not a file; with `must_exist`, there already.
fn state_dir(reader: &mut Reader<'_>, dir: &Given, must_exist: bool) -> Option<PathBuf> {
    let path = PathBuf::from(dir.text().trim());
    if path.exists() && !path.is_dir() {
        reader.invalid(
            dir,
            dir.text(),
            "not a directory; expected the state directory",
        );
        return None;
    }
    if must_exist && !path.exists() {
        let reason = format!(
            "no such directory; status only reads state (`tagfence apply {} {}` creates it on its first run)",
            Key::StateDir.flag(),
            path.display()
        );
        reader.invalid(dir, dir.text(), reason);
        return None;
    }
    Some(path)
}

/// The state container setting, checked on its own; the default when not given or refused.
fn container_setting(reader: &mut Reader<'_>) -> String {
    let Some(given) = reader.givens.get(Key::StateContainer) else {
        return DEFAULT_STATE_CONTAINER.to_owned();
    };
    let name = given.text().trim();
    if valid_container_name(name) {
        return name.to_owned();
    }
    reader.invalid(given, name, CONTAINER_NAMES);
    DEFAULT_STATE_CONTAINER.to_owned()
}

/// What a container name may be, for the messages.
const CONTAINER_NAMES: &str =
    "expected a container name of 3-63 lowercase letters, digits and single hyphens";

/// The blob endpoint the settings name, in order of precedence.
fn blob_endpoint<'a>(reader: &Reader<'a>, cloud: Cloud) -> Option<BlobEndpoint<'a>> {
    let givens = reader.givens;
    if let Some(given) = givens.get(Key::StateUrl) {
        return Some(BlobEndpoint {
            given,
            endpoint: given.text().trim().to_owned(),
            service_only: false,
        });
    }
    if let Some(given) = givens.get(Key::WebjobsBlobServiceUri) {
        return Some(BlobEndpoint {
            given,
            endpoint: given.text().trim().to_owned(),
            service_only: true,
        });
    }
    givens
        .get(Key::WebjobsAccountName)
        .map(|given| BlobEndpoint {
            given,
            endpoint: format!("https://{}.{}", given.text().trim(), blob_suffix(cloud)),
            service_only: true,
        })
}

/// A storage account's name: 3-24 lowercase letters and digits.
fn valid_account_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
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
fn container_url(
    reader: &mut Reader<'_>,
    blob: &BlobEndpoint<'_>,
    configured: String,
) -> Option<Url> {
    let endpoint = &blob.endpoint;
    let mut bad = |reason: &str| {
        reader.invalid(blob.given, blob.given.text(), reason);
        None
    };
    let Ok(mut url) = Url::parse(endpoint) else {
        return bad("not a URL; expected https://<account>.blob.core.windows.net, optionally followed by /<container>");
    };
    if url.scheme() != "https" {
        return bad("expected an https URL: storage tokens are never sent in clear");
    }
    if url.query().is_some() {
        return bad("must not carry a query (no SAS tokens: tagfence uses its identity); expected https://<account>.blob.core.windows.net[/<container>]");
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
    let (prefix, container) = match named.split_last() {
        Some((last, rest)) if !blob.service_only => (rest.to_vec(), last.clone()),
        _ => (named.clone(), configured),
    };
    if !valid_container_name(&container) {
        return bad(&format!(
            "'{container}' is not a valid container; {CONTAINER_NAMES}"
        ));
    }
    let path: String = prefix
        .iter()
        .chain(std::iter::once(&container))
        .map(|segment| format!("/{segment}"))
        .collect();
    url.set_path(&path);
    Some(url)
}

/// The problem of a command that needs state when none is configured.
pub(super) fn no_state() -> ConfigError {
    ConfigError::Missing {
        setting: "a state location".to_owned(),
        reason: format!(
            "status shows what the state remembers; give {} or {}",
            spelled(None, Key::StateDir, None),
            spelled(None, Key::StateUrl, None)
        ),
    }
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
