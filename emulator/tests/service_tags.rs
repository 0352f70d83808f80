//! Service Tags: the Discovery API (paged and not), the download page and the download file.

mod support;

use std::collections::HashSet;

use serde_json::Value;
use support::*;
use tagfence_emulator::{Config, Route};

fn tags_config(page_size: Option<usize>) -> Config {
    Config {
        service_tags: Some(fixture_bytes()),
        service_tags_page_size: page_size,
        ..config()
    }
}

fn discovery_url(base: &str) -> String {
    format!("{base}/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/serviceTags?api-version=2025-05-01")
}

#[tokio::test]
async fn discovery_api_pages_concatenate_to_every_tag_of_the_real_fixture() {
    let emulator = start(tags_config(Some(1000))).await;
    let token = emulator.issue_token(ARM);
    let mut url = Some(discovery_url(&emulator.base_url()));
    let mut tags: Vec<Value> = Vec::new();
    let mut pages = 0;
    while let Some(next) = url.take() {
        let response = client()
            .get(&next)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{next}");
        let page: Value = response.json().await.unwrap();
        assert_eq!(page["name"], "public");
        assert_eq!(
            page["id"],
            format!("/subscriptions/{SUB}/providers/Microsoft.Network/serviceTags/public")
        );
        assert_eq!(page["type"], "Microsoft.Network/serviceTags");
        assert_eq!(page["changeNumber"], "365");
        assert_eq!(page["cloud"], "Public");
        let values = page["values"].as_array().unwrap();
        assert!(values.len() <= 1000);
        tags.extend(values.iter().cloned());
        url = page
            .get("nextLink")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(link) = &url {
            assert!(
                link.starts_with(&emulator.base_url()),
                "nextLink must be absolute: {link}"
            );
            assert!(link.contains("$skipToken="), "{link}");
        }
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(tags.len(), 2967);
    let names: HashSet<&str> = tags
        .iter()
        .map(|tag| tag["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2967);

    let devops = tags
        .iter()
        .find(|tag| tag["name"] == "AzureDevOps")
        .unwrap();
    let properties = devops["properties"].as_object().unwrap();
    let mut keys: Vec<&str> = properties.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "addressPrefixes",
            "changeNumber",
            "region",
            "state",
            "systemService"
        ]
    );
    assert_eq!(properties["changeNumber"], "7");
    assert_eq!(properties["state"], "GA");
    assert_eq!(properties["systemService"], "AzureDevOps");
    assert_eq!(properties["addressPrefixes"].as_array().unwrap().len(), 26);
    assert!(emulator
        .requests()
        .iter()
        .all(|r| r.route == Route::ServiceTagsApi && r.status == 200));
    emulator.shutdown().await;
}

#[tokio::test]
async fn discovery_api_without_a_page_size_answers_in_one_page() {
    let emulator = start(tags_config(None)).await;
    let token = emulator.issue_token(ARM);
    let response = client()
        .get(discovery_url(&emulator.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(header(&response, "x-ms-ratelimit-remaining-subscription-reads").is_some());
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["values"].as_array().unwrap().len(), 2967);
    assert!(page.get("nextLink").is_none());
    emulator.shutdown().await;
}

#[tokio::test]
async fn discovery_api_checks_token_and_api_version_and_needs_a_document() {
    let emulator = start(config()).await;
    let url = discovery_url(&emulator.base_url());
    let (status, code, _) = arm_error(client().get(&url).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "AuthenticationFailed"));
    let token = emulator.issue_token(ARM);
    let old = url.replace("2025-05-01", "2019-02-01");
    let (status, code, message) =
        arm_error(client().get(&old).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "NoRegisteredProviderFound"));
    assert!(
        message.contains("for type 'locations/serviceTags'")
            && message.contains("'2019-04-01, 2019-06-01, ")
            && message.contains("2026-03-01'"),
        "{message}"
    );
    let nowhere = url
        .replace("/westeurope/", "/nowhere/")
        .replace("2025-05-01", "2026-03-01");
    let (status, code, message) = arm_error(
        client()
            .get(&nowhere)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "NoRegisteredProviderFound"));
    assert!(message.contains("location 'nowhere'"), "{message}");
    let response = client()
        .get(url.replace("2025-05-01", "2023-09-01"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "no document is configured");
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_download_page_links_both_files_and_the_file_is_the_document() {
    let emulator = start(tags_config(None)).await;
    let page_response = client()
        .get(emulator.download_page_url())
        .send()
        .await
        .unwrap();
    assert_eq!(page_response.status(), 200);
    assert!(header(&page_response, "content-type")
        .unwrap()
        .starts_with("text/html"));
    let page = page_response.text().await.unwrap();
    let urls = emulator.download_file_urls();
    assert_eq!(
        urls,
        [
            format!("{}/download/7/1/d/71d86715-5596-4529-9b13-da13a5de5b63/ServiceTags_Public_20250728.json", emulator.base_url()),
            format!("{}/download/7/1/d/71d86715-5596-4529-9b13-da13a5de5b63/ServiceTags_Public_20250804.json", emulator.base_url()),
        ]
    );
    let older = page.find(&urls[0]).expect("older link on the page");
    let newer = page.find(&urls[1]).expect("newer link on the page");
    assert!(older < newer, "the older file is listed first");

    let confirmation = client()
        .get(format!(
            "{}/download/confirmation.aspx?id=56519",
            emulator.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmation.status(), 200);
    let government = client()
        .get(format!(
            "{}/download/details.aspx?id=57063",
            emulator.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(government.status(), 404);

    let expected = fixture_json();
    for url in &urls {
        let response = client().get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(
            response.bytes().await.unwrap().as_ref(),
            expected.as_slice()
        );
    }
    let unknown = urls[1].replace("20250804", "20250811");
    assert_eq!(client().get(unknown).send().await.unwrap().status(), 404);

    let routes: Vec<(Route, u16)> = emulator
        .requests()
        .iter()
        .map(|r| (r.route, r.status))
        .collect();
    assert_eq!(
        routes,
        [
            (Route::DownloadPage, 200),
            (Route::DownloadPage, 200),
            (Route::DownloadPage, 404),
            (Route::DownloadFile, 200),
            (Route::DownloadFile, 200),
            (Route::DownloadFile, 404),
        ]
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_broken_document_stops_the_emulator_from_starting() {
    let error = tagfence_emulator::Emulator::start(
        Config {
            service_tags: Some(b"{\"values\": 1}".to_vec()),
            ..Config::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
}
