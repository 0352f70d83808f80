//! The configured Service Tags document, served three ways (Microsoft's REST reference "Service
//! Tags - List", and the Microsoft Download Center page id 56519 and its file).
//!
//! tagfence can read Service Tags from the ARM Discovery API or from the weekly public download
//! file, which it finds by scraping the download page. All three are served from one document in
//! download-file format: the file route returns it byte for byte, the page links to it under two
//! dates (older first, so clients must pick the newest), and the API route converts it to the API
//! shape (string `changeNumber`s, no `regionId`/`platform`/`networkFeatures`, `state: "GA"`,
//! optional paging with an absolute `nextLink`). The conversion is done once at start-up.

use std::io::Read;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Download page id of the Public cloud file.
pub const PUBLIC_DOWNLOAD_ID: &str = "56519";
/// Path of the download page (with the Public cloud id), relative to the emulator's base URL.
pub const DOWNLOAD_PAGE_PATH: &str = "/download/details.aspx?id=56519";
/// Directory the download links point into (the lower-case form newer links use).
pub const DOWNLOAD_DIRECTORY: &str = "/download/7/1/d/71d86715-5596-4529-9b13-da13a5de5b63";
/// File names the download page links to, older first; both serve the configured document.
pub const DOWNLOAD_FILE_NAMES: [&str; 2] = [
    "ServiceTags_Public_20250728.json",
    "ServiceTags_Public_20250804.json",
];

/// Why a Service Tags document could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ServiceTagsError {
    /// The bytes start like gzip but do not decompress.
    #[error("decompressing the service tags document")]
    Gzip(#[source] std::io::Error),
    /// The JSON is not a Service Tags download file.
    #[error("parsing the service tags document")]
    Json(#[source] serde_json::Error),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DownloadFile {
    change_number: Value,
    #[serde(default)]
    cloud: Option<String>,
    values: Vec<DownloadTag>,
}

#[derive(Deserialize)]
struct DownloadTag {
    name: String,
    id: String,
    properties: DownloadTagProperties,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DownloadTagProperties {
    change_number: Value,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    system_service: Option<String>,
    #[serde(default)]
    address_prefixes: Option<Vec<String>>,
}

#[derive(Serialize)]
struct ApiTag<'a> {
    name: &'a str,
    id: &'a str,
    properties: ApiTagProperties<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiTagProperties<'a> {
    change_number: String,
    region: &'a str,
    state: &'static str,
    system_service: &'a str,
    address_prefixes: &'a [String],
}

/// A loaded document: the published bytes and the tags pre-rendered in API format.
pub(crate) struct ServiceTagsDocument {
    json: Bytes,
    change_number: String,
    cloud: String,
    api_tags: Vec<String>,
}

impl ServiceTagsDocument {
    /// Loads a download-format document from JSON or gzip bytes.
    pub fn parse(bytes: &[u8]) -> Result<ServiceTagsDocument, ServiceTagsError> {
        let json = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .map_err(ServiceTagsError::Gzip)?;
            out
        } else {
            bytes.to_vec()
        };
        let text = json.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&json);
        let file: DownloadFile = serde_json::from_slice(text).map_err(ServiceTagsError::Json)?;
        let api_tags = file
            .values
            .iter()
            .map(|tag| {
                let properties = &tag.properties;
                let api = ApiTag {
                    name: &tag.name,
                    id: &tag.id,
                    properties: ApiTagProperties {
                        change_number: number_text(&properties.change_number),
                        region: properties.region.as_deref().unwrap_or_default(),
                        state: "GA",
                        system_service: properties.system_service.as_deref().unwrap_or_default(),
                        address_prefixes: properties
                            .address_prefixes
                            .as_deref()
                            .unwrap_or_default(),
                    },
                };
                serde_json::to_string(&api).map_err(ServiceTagsError::Json)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ServiceTagsDocument {
            change_number: number_text(&file.change_number),
            cloud: file.cloud.unwrap_or_else(|| "Public".to_owned()),
            json: Bytes::from(json),
            api_tags,
        })
    }

    /// The document as published (uncompressed).
    pub fn json(&self) -> Bytes {
        self.json.clone()
    }

    /// How many tags the document holds.
    pub fn tag_count(&self) -> usize {
        self.api_tags.len()
    }

    /// One page of the Discovery API response starting at tag `offset`. `next_link` builds the
    /// absolute URL of the page starting at the given offset.
    pub fn api_page(
        &self,
        subscription: &str,
        offset: usize,
        page_size: Option<usize>,
        next_link: impl FnOnce(usize) -> String,
    ) -> String {
        let start = offset.min(self.api_tags.len());
        let end = match page_size.filter(|size| *size > 0) {
            Some(size) => start.saturating_add(size).min(self.api_tags.len()),
            None => self.api_tags.len(),
        };
        let page = &self.api_tags[start..end];
        let id =
            format!("/subscriptions/{subscription}/providers/Microsoft.Network/serviceTags/public");
        let mut body = String::with_capacity(page.iter().map(String::len).sum::<usize>() + 512);
        body.push_str("{\"name\":\"public\",\"id\":");
        body.push_str(&json_string(&id));
        body.push_str(",\"type\":\"Microsoft.Network/serviceTags\",\"changeNumber\":");
        body.push_str(&json_string(&self.change_number));
        body.push_str(",\"cloud\":");
        body.push_str(&json_string(&self.cloud));
        body.push_str(",\"values\":[");
        body.push_str(&page.join(","));
        body.push(']');
        if end < self.api_tags.len() {
            body.push_str(",\"nextLink\":");
            body.push_str(&json_string(&next_link(end)));
        }
        body.push('}');
        body
    }
}

impl ServiceTagsDocument {
    /// One page of `serviceTagDetails` (`ServiceTagInformation_List`, Network 2022-01-01 and
    /// later): `{"value": [{name, id, serviceTagChangeNumber, properties}], "nextLink"?}`;
    /// `tag_name` keeps only that tag (compared without case), `no_prefixes` drops each tag's
    /// `addressPrefixes`.
    pub fn details_page(
        &self,
        offset: usize,
        page_size: Option<usize>,
        tag_name: Option<&str>,
        no_prefixes: bool,
        next_link: impl FnOnce(usize) -> String,
    ) -> String {
        let selected: Vec<&String> = self
            .api_tags
            .iter()
            .filter(|tag| tag_name.is_none_or(|wanted| api_tag_named(tag, wanted)))
            .collect();
        let start = offset.min(selected.len());
        let end = match page_size.filter(|size| *size > 0) {
            Some(size) => start.saturating_add(size).min(selected.len()),
            None => selected.len(),
        };
        let values: Vec<Value> = selected[start..end]
            .iter()
            .filter_map(|text| serde_json::from_str::<Value>(text).ok())
            .map(|mut tag| {
                if let Some(object) = tag.as_object_mut() {
                    object.insert(
                        "serviceTagChangeNumber".to_owned(),
                        Value::String(self.change_number.clone()),
                    );
                }
                if no_prefixes {
                    if let Some(properties) =
                        tag.get_mut("properties").and_then(Value::as_object_mut)
                    {
                        properties.remove("addressPrefixes");
                    }
                }
                tag
            })
            .collect();
        let mut body = serde_json::json!({ "value": values });
        if end < selected.len() {
            body["nextLink"] = Value::String(next_link(end));
        }
        body.to_string()
    }
}

/// Whether a pre-rendered API tag has this name (without case).
fn api_tag_named(tag: &str, wanted: &str) -> bool {
    serde_json::from_str::<Value>(tag)
        .ok()
        .and_then(|tag| tag.get("name").and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|name| name.eq_ignore_ascii_case(wanted))
}

/// Change numbers are integers in the file and strings in the API.
fn number_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn json_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// Whether the last path segment names a dated Public Service Tags file.
pub(crate) fn is_download_file_name(name: &str) -> bool {
    name.len() > ".json".len() && name.to_ascii_lowercase().ends_with(".json")
}

/// Whether a (decoded) path is one of the files the download page links to.
pub(crate) fn is_known_download_path(path: &str) -> bool {
    DOWNLOAD_FILE_NAMES
        .iter()
        .any(|name| path.eq_ignore_ascii_case(&format!("{DOWNLOAD_DIRECTORY}/{name}")))
}

/// Absolute URLs of the download files, older first.
pub(crate) fn download_file_urls(base_url: &str) -> Vec<String> {
    DOWNLOAD_FILE_NAMES
        .iter()
        .map(|name| format!("{base_url}{DOWNLOAD_DIRECTORY}/{name}"))
        .collect()
}

/// The download page, shaped loosely like the real one: the file links appear in anchors and in a
/// script blob, so scrapers with different regexes all find them.
pub(crate) fn download_page(base_url: &str) -> String {
    let urls = download_file_urls(base_url);
    let anchors: String = urls
        .iter()
        .zip(DOWNLOAD_FILE_NAMES)
        .map(|(url, name)| {
            format!(
                "        <li><a href=\"{url}\" class=\"mscom-link download-button dlcdetail\" data-bi-cN=\"{name}\">{name}</a></li>\n"
            )
        })
        .collect();
    let script_urls: Vec<String> = urls.iter().map(|url| json_string(url)).collect();
    format!(
        r#"<!DOCTYPE html>
<html lang="en-us">
<head>
    <meta charset="utf-8">
    <title>Download Azure IP Ranges and Service Tags – Public Cloud from Official Microsoft Download Center</title>
</head>
<body>
    <h1>Azure IP Ranges and Service Tags – Public Cloud</h1>
    <p>This file contains the IP address ranges for Public Azure as a whole, each Azure region within
    Public, and ranges for several Azure Services (Service Tags) such as Storage, SQL and AzureTrafficManager
    in Public. This file is updated weekly. New ranges appearing in the file will not be used in Azure for
    at least one week. Please download the new json file every week and perform the necessary changes at
    your site to correctly identify services running in Azure.</p>
    <div class="download-details">
      <ul>
{anchors}      </ul>
    </div>
    <script>window.__DLCDetails__ = {{"dlcDetailsView":{{"downloadFile":[{files}]}}}};</script>
</body>
</html>
"#,
        files = script_urls
            .iter()
            .map(|url| format!("{{\"url\":{url}}}"))
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// The page shown for an unknown download id.
pub(crate) fn not_found_page() -> String {
    "<!DOCTYPE html>\n<html lang=\"en-us\"><head><title>Page not found</title></head><body><h1>We're sorry, this download is no longer available.</h1></body></html>\n".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"{"changeNumber": 12, "cloud": "Public", "values": [
        {"name": "A", "id": "A", "properties": {"changeNumber": 3, "region": "", "regionId": 0, "platform": "Azure", "systemService": "SvcA", "addressPrefixes": ["1.1.1.0/24"], "networkFeatures": null}},
        {"name": "B.westeurope", "id": "B.westeurope", "properties": {"changeNumber": 4, "region": "westeurope", "regionId": 18, "platform": "Azure", "systemService": "", "addressPrefixes": ["2.2.2.0/24", "2a01::/64"], "networkFeatures": ["API"]}},
        {"name": "C", "id": "C", "properties": {"changeNumber": 5, "region": "", "regionId": 0, "platform": "Azure", "systemService": "", "addressPrefixes": [], "networkFeatures": []}}
    ]}"#;

    #[test]
    fn the_api_format_has_string_change_numbers_and_no_file_only_fields() {
        let document = ServiceTagsDocument::parse(SMALL.as_bytes()).unwrap();
        let page: Value =
            serde_json::from_str(&document.api_page("sub", 0, None, |_| unreachable!())).unwrap();
        assert_eq!(page["name"], "public");
        assert_eq!(
            page["id"],
            "/subscriptions/sub/providers/Microsoft.Network/serviceTags/public"
        );
        assert_eq!(page["type"], "Microsoft.Network/serviceTags");
        assert_eq!(page["changeNumber"], "12");
        assert_eq!(page["cloud"], "Public");
        assert!(page.get("nextLink").is_none());
        assert_eq!(
            page["values"][1],
            serde_json::json!({"name": "B.westeurope", "id": "B.westeurope", "properties": {
                "changeNumber": "4", "region": "westeurope", "state": "GA", "systemService": "",
                "addressPrefixes": ["2.2.2.0/24", "2a01::/64"]}})
        );
    }

    #[test]
    fn pages_carry_a_next_link_except_the_last() {
        let document = ServiceTagsDocument::parse(SMALL.as_bytes()).unwrap();
        let first: Value = serde_json::from_str(
            &document.api_page("s", 0, Some(2), |next| format!("next={next}")),
        )
        .unwrap();
        assert_eq!(first["values"].as_array().unwrap().len(), 2);
        assert_eq!(first["nextLink"], "next=2");
        let last: Value =
            serde_json::from_str(&document.api_page("s", 2, Some(2), |_| unreachable!())).unwrap();
        assert_eq!(last["values"].as_array().unwrap().len(), 1);
        assert!(last.get("nextLink").is_none());
        let beyond: Value =
            serde_json::from_str(&document.api_page("s", 10, Some(2), |_| unreachable!())).unwrap();
        assert_eq!(beyond["values"], serde_json::json!([]));
    }

    #[test]
    fn gzip_and_a_byte_order_mark_are_accepted_and_kept_in_the_file() {
        use std::io::Write;
        let with_bom = [b"\xef\xbb\xbf".as_slice(), SMALL.as_bytes()].concat();
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&with_bom).unwrap();
        let document = ServiceTagsDocument::parse(&encoder.finish().unwrap()).unwrap();
        assert_eq!(document.tag_count(), 3);
        assert_eq!(document.json().as_ref(), with_bom.as_slice());
    }

    #[test]
    fn broken_documents_are_refused() {
        assert!(matches!(
            ServiceTagsDocument::parse(b"{}"),
            Err(ServiceTagsError::Json(_))
        ));
        assert!(matches!(
            ServiceTagsDocument::parse(&[0x1f, 0x8b, 0, 0]),
            Err(ServiceTagsError::Gzip(_))
        ));
    }

    #[test]
    fn the_page_links_both_files_older_first() {
        let page = download_page("http://127.0.0.1:9");
        let older = page.find("ServiceTags_Public_20250728.json").unwrap();
        let newer = page.find("ServiceTags_Public_20250804.json").unwrap();
        assert!(older < newer);
        assert!(page.contains("http://127.0.0.1:9/download/7/1/d/71d86715-5596-4529-9b13-da13a5de5b63/ServiceTags_Public_20250804.json"));
    }

    #[test]
    fn known_download_paths_match_in_any_case() {
        assert!(is_known_download_path(
            "/download/7/1/D/71D86715-5596-4529-9B13-DA13A5DE5B63/ServiceTags_Public_20250728.json"
        ));
        assert!(!is_known_download_path(
            "/download/7/1/d/71d86715-5596-4529-9b13-da13a5de5b63/ServiceTags_Public_20990101.json"
        ));
    }
}
