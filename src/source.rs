//! Where the Service Tags come from: the Discovery API, Microsoft's download page, or a given
//! file or URL. Every document is parsed and validated whole (the core parser) before use, and
//! refused when it is for another cloud or implausibly small.

use std::path::PathBuf;
use std::time::Instant;

use azure_core::http::{Method, Pipeline, Request};
use url::Url;

use crate::azure::arm::ArmClient;
use crate::azure::pipeline::{self, AzureError, HttpOptions};
use crate::core::service_tags::{Cloud, ServiceTags};

/// Where to get the Service Tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The Discovery API (`…/locations/{location}/serviceTags`) in `subscription`.
    Api {
        subscription: String,
        location: String,
    },
    /// The newest `ServiceTags_*_YYYYMMDD.json` linked from this download page.
    Download { page: Url },
    /// A file (JSON or gzip).
    File(PathBuf),
    /// A URL of a document (JSON or gzip).
    Url(Url),
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::Api {
                subscription,
                location,
            } => {
                write!(
                    f,
                    "the Discovery API (subscription {subscription}, location {location})"
                )
            }
            SourceSpec::Download { page } => write!(f, "the download page {page}"),
            SourceSpec::File(path) => write!(f, "the file {}", path.display()),
            SourceSpec::Url(url) => write!(f, "{url}"),
        }
    }
}

/// Why no usable document was obtained.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Azure(#[from] AzureError),
    #[error("reading service tags from {path}: {detail}")]
    File { path: String, detail: String },
    #[error("no ServiceTags_*_YYYYMMDD.json link on the download page {page}")]
    NoLink { page: String },
    #[error("the service tags from {origin} are invalid: {detail}")]
    Invalid { origin: String, detail: String },
    #[error("the service tags from {origin} are for the {found} cloud, not {expected}")]
    WrongCloud {
        origin: String,
        found: Cloud,
        expected: Cloud,
    },
    #[error("the service tags from {origin} list only {} {}, fewer than the {} a complete {cloud} document has; refusing a truncated or partial document", crate::core::text::count(*.tags), if *.tags == 1 { "tag" } else { "tags" }, crate::core::text::count(*.minimum))]
    TooSmall {
        origin: String,
        tags: usize,
        minimum: usize,
        cloud: Cloud,
    },
}

/// A validated document and where it came from.
#[derive(Debug)]
pub struct Fetched {
    pub tags: ServiceTags,
    /// The URL, file or API it came from.
    pub origin: String,
    /// Its size as transferred.
    pub bytes: usize,
    /// The document's bytes as received (JSON or gzip; for the API, the first page).
    pub raw: Vec<u8>,
    pub elapsed_ms: u64,
}

/// Fewest tags a complete document of each cloud has. The published Public file had 2,967 tags
/// (changeNumber 363, July 2025), the US Government file 299 (changeNumber 401); the China count
/// is unknown, so its floor is low.
pub fn default_min_tags(cloud: Cloud) -> usize {
    match cloud {
        Cloud::Public => 1000,
        Cloud::AzureGovernment => 100,
        Cloud::AzureChina => 20,
    }
}

/// What the fetch may use.
pub struct Fetcher<'a> {
    /// The cloud the documents must describe.
    pub cloud: Cloud,
    /// Refuse documents with fewer tags.
    pub min_tags: usize,
    /// For the API source.
    pub arm: Option<&'a ArmClient>,
    /// HTTP options for downloads.
    pub http: HttpOptions,
}

impl Fetcher<'_> {
    /// Fetches, parses and validates the Service Tags.
    ///
    /// # Errors
    /// [`SourceError`] naming the source and what was wrong.
    pub async fn fetch_service_tags(&self, spec: &SourceSpec) -> Result<Fetched, SourceError> {
        let started = Instant::now();
        let (tags, origin, bytes, raw) = match spec {
            SourceSpec::Api {
                subscription,
                location,
            } => {
                let arm = self.arm.ok_or_else(|| SourceError::Invalid {
                    origin: spec.to_string(),
                    detail: "no ARM client configured".to_owned(),
                })?;
                let (tags, bytes) = arm.service_tags(subscription, location).await?;
                (tags, spec.to_string(), bytes, Vec::new())
            }
            SourceSpec::File(path) => {
                let raw = std::fs::read(path).map_err(|err| SourceError::File {
                    path: path.display().to_string(),
                    detail: err.to_string(),
                })?;
                let origin = path.display().to_string();
                (parse(&raw, &origin)?, origin, raw.len(), raw)
            }
            SourceSpec::Url(url) => {
                let pipeline = pipeline::download_pipeline(&self.http);
                let raw = download(&pipeline, url, &self.http, DOCUMENT).await?;
                let origin = url.to_string();
                (parse(&raw, &origin)?, origin, raw.len(), raw)
            }
            SourceSpec::Download { page } => {
                let pipeline = pipeline::download_pipeline(&self.http);
                let html = download(&pipeline, page, &self.http, PAGE).await?;
                let link = newest_link(&String::from_utf8_lossy(&html), page).ok_or_else(|| {
                    SourceError::NoLink {
                        page: page.to_string(),
                    }
                })?;
                tracing::debug!(link = %link, "newest service tags link");
                let raw = download(&pipeline, &link, &self.http, DOCUMENT).await?;
                let origin = link.to_string();
                (parse(&raw, &origin)?, origin, raw.len(), raw)
            }
        };
        self.check(&tags, &origin)?;
        Ok(Fetched {
            tags,
            origin,
            bytes,
            raw,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Refuses a document of another cloud or one too small to be complete.
    ///
    /// # Errors
    /// [`SourceError::WrongCloud`] or [`SourceError::TooSmall`].
    pub fn check(&self, tags: &ServiceTags, origin: &str) -> Result<(), SourceError> {
        if tags.cloud != self.cloud {
            return Err(SourceError::WrongCloud {
                origin: origin.to_owned(),
                found: tags.cloud,
                expected: self.cloud,
            });
        }
        if tags.total_tags() < self.min_tags {
            return Err(SourceError::TooSmall {
                origin: origin.to_owned(),
                tags: tags.total_tags(),
                minimum: self.min_tags,
                cloud: self.cloud,
            });
        }
        Ok(())
    }
}

fn parse(raw: &[u8], origin: &str) -> Result<ServiceTags, SourceError> {
    ServiceTags::parse(raw).map_err(|err| SourceError::Invalid {
        origin: origin.to_owned(),
        detail: pipeline::error_chain(&err),
    })
}

/// What is downloaded, for the error messages.
const PAGE: &str = "reading the service tags download page";
const DOCUMENT: &str = "downloading service tags";

/// Downloads with a pipeline that does not decompress ([`pipeline::download_pipeline`]). The document
/// is asked for gzip-compressed, and comes back as sent: the parser gunzips it within its size
/// limit. The page is asked for as it is, since its links are read from the bytes.
async fn download(
    pipeline: &Pipeline,
    url: &Url,
    options: &HttpOptions,
    operation: &str,
) -> Result<Vec<u8>, SourceError> {
    crate::azure::check_endpoint(url).map_err(|err| SourceError::Invalid {
        origin: url.to_string(),
        detail: err.to_string(),
    })?;
    let mut request = Request::new(url.clone(), Method::Get);
    if operation == DOCUMENT {
        request.insert_header("accept-encoding", "gzip");
    }
    let operation = format!("{operation} {url}");
    let response = pipeline::send(pipeline, &mut request, &operation, options).await?;
    Ok(response.body().to_vec())
}

/// The link to the newest `ServiceTags_*_YYYYMMDD.json` on a download page, resolved against
/// the page's URL. The page may list several; the date in the file name decides (the way
/// romanrabodzei/MSFTServiceTags does). The page is split on quotes, whitespace and angle brackets
/// rather than scanned with a regular expression, so hostile HTML cannot make the scan slow.
pub fn newest_link(html: &str, page: &Url) -> Option<Url> {
    html.split(|c: char| matches!(c, '"' | '\'' | '<' | '>') || c.is_whitespace())
        .filter_map(|token| {
            let name = token.rsplit('/').next()?;
            let lower = name.to_ascii_lowercase();
            if !lower.starts_with("servicetags_") || !lower.ends_with(".json") {
                return None;
            }
            let stem = &name[..name.len() - 5];
            let date = stem.rsplit('_').next()?;
            if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let url = page.join(token).ok()?;
            matches!(url.scheme(), "https" | "http").then_some((date.to_owned(), url))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, url)| url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_link_wins_in_any_order_and_case() {
        let page =
            Url::parse("https://www.microsoft.com/en-us/download/details.aspx?id=56519").unwrap();
        let html = r#"<a href="https://download.microsoft.com/download/7/1/D/71D86715/ServiceTags_Public_20250728.json">old</a>
            <a href='https://download.microsoft.com/download/7/1/d/71d86715/servicetags_public_20250804.json'>new</a>
            <a href="https://download.microsoft.com/download/x/ServiceTags_Public_2025080.json">short date</a>
            <script>var x = "/download/x/ServiceTags_Public_20240101.json";</script>"#;
        assert_eq!(
            newest_link(html, &page).unwrap().as_str(),
            "https://download.microsoft.com/download/7/1/d/71d86715/servicetags_public_20250804.json"
        );
        assert_eq!(newest_link("<html>nothing here</html>", &page), None);
        // Relative links resolve against the page.
        assert_eq!(
            newest_link(
                "<a href=\"/files/ServiceTags_AzureGovernment_20260101.json\">",
                &page
            )
            .unwrap()
            .as_str(),
            "https://www.microsoft.com/files/ServiceTags_AzureGovernment_20260101.json"
        );
    }
}
