//! The identity endpoint against the real client tagfence uses (azure_identity 1.0).
//!
//! This is its own test binary because azure_identity reads `IDENTITY_ENDPOINT` and
//! `IDENTITY_HEADER` from the process environment; no other test here touches them.

mod support;

use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use azure_identity::ManagedIdentityCredential;
use support::*;
use tagfence_emulator::Route;

#[tokio::test]
async fn azure_identity_gets_a_token_from_the_app_service_endpoint_that_arm_accepts() {
    let emulator = start(config()).await;
    std::env::set_var("IDENTITY_ENDPOINT", emulator.identity_endpoint());
    std::env::set_var("IDENTITY_HEADER", emulator.identity_header());

    let credential = ManagedIdentityCredential::new(None).unwrap();
    let token = credential
        .get_token(&["https://management.azure.com/.default"], None)
        .await
        .unwrap();
    let lifetime = SystemTime::from(token.expires_on)
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(
        lifetime > Duration::from_secs(3500) && lifetime <= Duration::from_secs(3600),
        "{lifetime:?}"
    );

    let response = client()
        .get(vault_url(&emulator, "kv-prod"))
        .bearer_auth(token.token.secret())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let routes: Vec<(Route, u16)> = emulator
        .requests()
        .iter()
        .map(|r| (r.route, r.status))
        .collect();
    assert_eq!(
        routes,
        [(Route::TokenAppService, 200), (Route::VaultGet, 200)]
    );
    emulator.shutdown().await;
}
