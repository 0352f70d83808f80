//! The URLs of a run: the ARM and download-page endpoints, where the Service Tags come from,
//! and the notification webhook. Each must be https (plain http only for a loopback emulator).

use std::path::PathBuf;

use url::Url;

use super::error::ConfigError;
use super::settings::{Settings, DEFAULT_SOURCE};
use crate::azure::{self, CloudEndpoints};
use crate::core::service_tags::Cloud;
use crate::source::SourceSpec;

/// A setting's value when it is given and not blank, trimmed.
pub(super) fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The cloud's endpoints, with the ARM endpoint and download page the settings override.
pub(super) fn endpoints(settings: &Settings, cloud: Cloud) -> Result<CloudEndpoints, ConfigError> {
    let mut endpoints = CloudEndpoints::of(cloud);
    let parse = |setting: &'static str, url: &str| {
        azure::parse_endpoint(url).map_err(|e| ConfigError::Setting {
            setting,
            reason: e.to_string(),
        })
    };
    // Not trimmed: the check names the URL as given.
    let not_blank = |value: &Option<String>| value.clone().filter(|s| !s.trim().is_empty());
    if let Some(url) = not_blank(&settings.arm_endpoint) {
        endpoints.arm = parse("--arm-endpoint (TAGFENCE_ARM_ENDPOINT)", &url)?;
    }
    if let Some(url) = not_blank(&settings.download_page_url) {
        endpoints.download_page = parse("--download-page-url (TAGFENCE_DOWNLOAD_PAGE_URL)", &url)?;
    }
    Ok(endpoints)
}

/// Where the Service Tags come from: `api`, `download`, an https URL, or else a file path.
pub(super) fn source_spec(
    settings: &Settings,
    endpoints: &CloudEndpoints,
) -> Result<SourceSpec, ConfigError> {
    let source = settings.source.as_deref().unwrap_or(DEFAULT_SOURCE).trim();
    let bad = |reason: String| ConfigError::Setting {
        setting: "--source (TAGFENCE_SOURCE)",
        reason,
    };
    match source {
        "api" => api_source(settings),
        "download" => Ok(SourceSpec::Download {
            page: endpoints.download_page.clone(),
        }),
        "" => Err(bad("is empty".to_owned())),
        url if url.contains("://") => {
            let url = Url::parse(url).map_err(|_| bad(format!("'{url}' is not a URL")))?;
            azure::check_endpoint(&url).map_err(|e| bad(e.to_string()))?;
            Ok(SourceSpec::Url(url))
        }
        path => Ok(SourceSpec::File(PathBuf::from(path))),
    }
}

/// The Discovery API source, which needs a subscription and a location.
fn api_source(settings: &Settings) -> Result<SourceSpec, ConfigError> {
    match (given(&settings.subscription_id), given(&settings.location)) {
        (Some(subscription), Some(location)) => Ok(SourceSpec::Api {
            subscription: subscription.to_owned(),
            location: location.to_owned(),
        }),
        _ => Err(ConfigError::Setting {
            setting: "--source api",
            reason: "needs --subscription-id (TAGFENCE_SUBSCRIPTION_ID) and --location (TAGFENCE_LOCATION)".to_owned(),
        }),
    }
}

/// The webhook to post run messages to, if one is given.
pub(super) fn notify_url(settings: &Settings) -> Result<Option<Url>, ConfigError> {
    let Some(url) = given(&settings.notify_url) else {
        return Ok(None);
    };
    let url = azure::parse_endpoint(url).map_err(|e| ConfigError::Setting {
        setting: "--notify-url (TAGFENCE_NOTIFY_URL)",
        // The URL is a secret: name the problem, not the value.
        reason: match e {
            azure::EndpointError::Insecure(_) => {
                "must use https (plain http only for a loopback host)".to_owned()
            }
            azure::EndpointError::Scheme(_, scheme) => format!("must use https, not '{scheme}'"),
            azure::EndpointError::Invalid(_) => "is not a URL".to_owned(),
        },
    })?;
    Ok(Some(url))
}
