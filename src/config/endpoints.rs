//! The URLs of a run: the ARM and download-page endpoints, where the Service Tags come from,
//! and the notification webhook. Each must be https (plain http only for a loopback emulator).

use std::path::PathBuf;

use url::Url;

use super::error::ConfigError;
use super::given::{is_guid, spelled, Reader};
use super::settings::Key;
use crate::azure::{self, CloudEndpoints, EndpointError};
use crate::core::service_tags::Cloud;
use crate::source::SourceSpec;

/// Why an endpoint is refused, without repeating the URL (the setting shows it).
fn endpoint_problem(err: &EndpointError) -> String {
    match err {
        EndpointError::Invalid(_) => "not a URL; expected an https URL".to_owned(),
        EndpointError::Insecure(_) => {
            "uses plain http; expected https (plain http only for a loopback host, a local emulator)"
                .to_owned()
        }
        EndpointError::Scheme(_, scheme) => format!("uses '{scheme}'; expected an https URL"),
    }
}

/// The cloud's endpoints, with the ARM endpoint and download page the settings override.
pub(super) fn endpoints(reader: &mut Reader<'_>, cloud: Cloud) -> CloudEndpoints {
    let mut endpoints = CloudEndpoints::of(cloud);
    if let Some(url) = url(reader, Key::ArmEndpoint) {
        endpoints.arm = url;
    }
    if let Some(url) = url(reader, Key::DownloadPageUrl) {
        endpoints.download_page = url;
    }
    endpoints
}

/// The endpoint `key` gives, when it gives a valid one.
fn url(reader: &mut Reader<'_>, key: Key) -> Option<Url> {
    let given = reader.givens.get(key)?;
    match azure::parse_endpoint(given.text()) {
        Ok(url) => Some(url),
        Err(err) => {
            reader.invalid(given, given.text(), endpoint_problem(&err));
            None
        }
    }
}

/// Where the Service Tags come from: `api`, `download`, an https URL, or else a file path,
/// which must exist.
pub(super) fn source_spec(reader: &mut Reader<'_>, endpoints: &CloudEndpoints) -> SourceSpec {
    let download = SourceSpec::Download {
        page: endpoints.download_page.clone(),
    };
    check_api_settings(reader);
    let Some(given) = reader.givens.get(Key::Source) else {
        return download;
    };
    let source = given.text().trim();
    match source {
        "api" => api_source(reader).unwrap_or(download),
        "download" => download,
        url if url.contains("://") => match azure::parse_endpoint(url) {
            Ok(url) => SourceSpec::Url(url),
            Err(err) => {
                reader.invalid(given, source, endpoint_problem(&err));
                download
            }
        },
        path if !std::path::Path::new(path).is_file() => {
            let what = if std::path::Path::new(path).is_dir() {
                "a directory"
            } else {
                "no such file"
            };
            let reason = format!(
                "{what}; expected api, download, an https URL or the path of a Service Tags file"
            );
            reader.invalid(given, source, reason);
            download
        }
        path => SourceSpec::File(PathBuf::from(path)),
    }
}

/// The subscription and location for the Discovery API, when given: a subscription id and a
/// region's name.
fn check_api_settings(reader: &mut Reader<'_>) {
    let givens = reader.givens;
    if let Some(given) = givens.get(Key::SubscriptionId) {
        if !is_guid(given.text().trim()) {
            let reason =
                "not a subscription id; expected a GUID (00000000-0000-0000-0000-000000000000)";
            reader.invalid(given, given.text(), reason);
        }
    }
    if let Some(given) = givens.get(Key::Location) {
        if !given
            .text()
            .trim()
            .chars()
            .all(|c| c.is_ascii_alphanumeric())
        {
            let reason = "not an Azure region's name; expected one such as westeurope";
            reader.invalid(given, given.text(), reason);
        }
    }
}

/// The Discovery API source, which needs a subscription and a location.
fn api_source(reader: &mut Reader<'_>) -> Option<SourceSpec> {
    let subscription = reader.text(Key::SubscriptionId).map(str::to_owned);
    let location = reader.text(Key::Location).map(str::to_owned);
    match (subscription, location) {
        (Some(subscription), Some(location)) => Some(SourceSpec::Api {
            subscription,
            location,
        }),
        _ => {
            let given = reader.givens.get(Key::Source)?;
            let like = given.origin.as_ref();
            reader.problems.push(ConfigError::Conflict {
                setting: given.shown_all(),
                reason: format!(
                    "the Discovery API needs a subscription and a location; give {} and {} too",
                    spelled(like, Key::SubscriptionId, None),
                    spelled(like, Key::Location, None)
                ),
            });
            None
        }
    }
}

/// The webhook to post run messages to, if one is given. The URL is a secret: the problem is
/// named, not the value.
pub(super) fn notify_url(reader: &mut Reader<'_>) -> Option<Url> {
    url(reader, Key::NotifyUrl)
}
