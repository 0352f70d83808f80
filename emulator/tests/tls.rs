//! https on loopback: the certificate the emulator makes verifies against the CA it hands out,
//! plain http keeps working on the same port, and links in answers keep the caller's scheme.

mod support;

use serde_json::Value;
use support::{config, start, SUB};
use tagfence_emulator::{Config, TlsIdentity};

fn tls_config() -> Config {
    Config {
        tls: Some(TlsIdentity::generate().unwrap()),
        service_tags: Some(support::fixture_bytes()),
        service_tags_page_size: Some(1000),
        ..config()
    }
}

fn trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

#[tokio::test]
async fn https_and_http_share_the_port_and_links_keep_the_scheme() {
    let emulator = start(tls_config()).await;
    let https = emulator.https_url().unwrap();
    let http = emulator.base_url();
    assert_eq!(https.strip_prefix("https://"), http.strip_prefix("http://"));
    let client = trusting(&emulator.ca_pem().unwrap());
    let token = emulator.issue_token(support::ARM);
    let path = format!("/subscriptions/{SUB}/resourceGroups/rg-secrets/providers/Microsoft.KeyVault/vaults/kv-prod?api-version={}", support::API);
    for base in [&https, &http] {
        let vault: Value = client
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(vault["name"], "kv-prod", "{base}");
    }
    let records = emulator.requests();
    assert_eq!(
        records.iter().map(|r| r.tls).collect::<Vec<_>>(),
        [true, false]
    );

    let tags_path = format!("/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/serviceTags?api-version=2025-05-01");
    for base in [&https, &http] {
        let page: Value = client
            .get(format!("{base}{tags_path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let next = page["nextLink"].as_str().unwrap();
        assert!(next.starts_with(&format!("{base}/")), "{next}");
    }
    let page = client
        .get(format!("{https}/download/details.aspx?id=56519"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("{https}/download/")), "{page}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused_and_the_server_keeps_serving() {
    let emulator = start(tls_config()).await;
    let https = emulator.https_url().unwrap();
    let stranger = trusting(TlsIdentity::generate().unwrap().ca_pem().unwrap());
    let error = stranger
        .get(format!("{https}/download/details.aspx?id=56519"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect() || error.is_request(), "{error:?}");
    let trusted = trusting(&emulator.ca_pem().unwrap());
    let status = trusted
        .get(format!("{https}/download/details.aspx?id=56519"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    emulator.shutdown().await;
}

#[tokio::test]
async fn without_tls_there_is_no_https() {
    let emulator = start(config()).await;
    assert!(emulator.https_url().is_none());
    assert!(emulator.ca_pem().is_none());
    emulator.shutdown().await;
}
