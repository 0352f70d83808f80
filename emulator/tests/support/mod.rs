//! Shared helpers for the emulator's integration tests.

#![allow(dead_code)]

use std::io::Read;
use std::time::Duration;

use serde_json::{json, Value};
use tagfence_emulator::{Config, Emulator, Seed};

pub const SUB: &str = "00000000-0000-0000-0000-000000000001";
pub const ARM: &str = "https://management.azure.com/";
pub const API: &str = "2025-05-01";
pub const FIXTURE_365: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/ServiceTags_Public.changeNumber-365.json.gz"
);

/// The bundled sample seed plus `kv-locked`, which the caller may not touch.
pub fn seed() -> Seed {
    let mut seed = Seed::from_json(include_bytes!("../../samples/vaults.json")).unwrap();
    let locked = format!("/subscriptions/{SUB}/resourceGroups/rg-secrets/providers/Microsoft.KeyVault/vaults/kv-locked");
    seed.vaults.push(json!({
        "id": locked, "name": "kv-locked", "type": "Microsoft.KeyVault/vaults", "location": "westeurope", "tags": {},
        "properties": {"tenantId": "t", "sku": {"family": "A", "name": "standard"}}
    }));
    seed.forbidden.push(locked);
    seed
}

pub fn config() -> Config {
    Config {
        seed: seed(),
        ..Config::default()
    }
}

pub async fn start(config: Config) -> Emulator {
    Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub fn vault_url(emulator: &Emulator, name: &str) -> String {
    format!(
        "{}/subscriptions/{SUB}/resourceGroups/rg-secrets/providers/Microsoft.KeyVault/vaults/{name}?api-version={API}",
        emulator.base_url()
    )
}

/// `PATCH` the vault `name` with `body`, authenticated with `token`.
pub async fn patch_vault(
    emulator: &Emulator,
    name: &str,
    token: &str,
    body: &serde_json::Value,
) -> reqwest::Response {
    client()
        .patch(vault_url(emulator, name))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

pub fn fixture_bytes() -> Vec<u8> {
    std::fs::read(FIXTURE_365).unwrap()
}

pub fn fixture_json() -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(fixture_bytes().as_slice())
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Status, ARM error code and message of an error response.
pub async fn arm_error(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap().to_owned(),
        body["error"]["message"].as_str().unwrap().to_owned(),
    )
}

pub fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

/// `url?k=v&…` with form-encoded values (reqwest is built without its `query` feature).
pub fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{url}?{query}")
}

/// The Resource Graph query URL.
pub fn graph_url(emulator: &Emulator) -> String {
    format!(
        "{}/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01",
        emulator.base_url()
    )
}

/// Posts a Resource Graph query with `token`.
pub async fn graph_query(emulator: &Emulator, token: &str, query: &str) -> reqwest::Response {
    client()
        .post(graph_url(emulator))
        .bearer_auth(token)
        .json(&json!({"subscriptions": [SUB], "query": query}))
        .send()
        .await
        .unwrap()
}

/// `GET` the vault `name` with `token`.
pub async fn get_vault(emulator: &Emulator, name: &str, token: &str) -> reqwest::Response {
    client()
        .get(vault_url(emulator, name))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}
