//! Managed-identity token endpoints.

mod support;

use serde_json::Value;
use support::*;
use tagfence_emulator::{Config, Route};

#[tokio::test]
async fn app_service_tokens_need_the_identity_header_and_have_a_string_expires_on() {
    let emulator = start(Config {
        identity_header: "secret-header".into(),
        ..config()
    })
    .await;
    assert_eq!(
        emulator.identity_endpoint(),
        format!("{}/msi/token", emulator.base_url())
    );
    assert_eq!(emulator.identity_header(), "secret-header");
    let endpoint = emulator.identity_endpoint();
    let query = [
        ("api-version", "2019-08-01"),
        ("resource", "https://management.azure.com"),
    ];

    let missing = client()
        .get(with_query(&endpoint, &query))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    let wrong = client()
        .get(with_query(&endpoint, &query))
        .header("X-IDENTITY-HEADER", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let response = client()
        .get(with_query(&endpoint, &query))
        .header("X-IDENTITY-HEADER", "secret-header")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let expires_on: u64 = body["expires_on"]
        .as_str()
        .expect("expires_on is a string")
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 3590..=now + 3610).contains(&expires_on),
        "{expires_on} vs {now}"
    );
    assert_eq!(body["resource"], "https://management.azure.com");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        body["client_id"],
        tagfence_emulator::SYSTEM_ASSIGNED_CLIENT_ID
    );

    // The token works on ARM routes.
    let vault = client()
        .get(vault_url(&emulator, "kv-prod"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(vault.status(), 200);

    let records = emulator.requests();
    let token_records: Vec<(Route, u16, bool)> = records
        .iter()
        .filter(|r| r.route == Route::TokenAppService)
        .map(|r| (r.route, r.status, r.authorized))
        .collect();
    assert_eq!(
        token_records,
        [
            (Route::TokenAppService, 401, false),
            (Route::TokenAppService, 401, false),
            (Route::TokenAppService, 200, true)
        ]
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn app_service_tokens_echo_a_requested_client_id_and_refuse_two_selectors() {
    let emulator = start(config()).await;
    let header = emulator.identity_header();
    let endpoint = emulator.identity_endpoint();
    let response = client()
        .get(with_query(
            &endpoint,
            &[
                ("api-version", "2019-08-01"),
                ("resource", "https://management.azure.com/"),
                ("client_id", "11111111-2222-3333-4444-555555555555"),
            ],
        ))
        .header("X-IDENTITY-HEADER", &header)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["client_id"], "11111111-2222-3333-4444-555555555555");

    let response = client()
        .get(with_query(
            &endpoint,
            &[
                ("api-version", "2019-08-01"),
                ("resource", "https://management.azure.com/"),
                ("client_id", "a"),
                ("mi_res_id", "b"),
            ],
        ))
        .header("X-IDENTITY-HEADER", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = client()
        .get(with_query(&endpoint, &[("api-version", "2019-08-01")]))
        .header("X-IDENTITY-HEADER", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "resource is required");
    let response = client()
        .get(with_query(
            &endpoint,
            &[("resource", "https://management.azure.com/")],
        ))
        .header("X-IDENTITY-HEADER", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "api-version is required");
    emulator.shutdown().await;
}

#[tokio::test]
async fn imds_tokens_need_metadata_true_and_carry_expires_in() {
    let emulator = start(config()).await;
    let endpoint = format!("{}/metadata/identity/oauth2/token", emulator.base_url());
    let query = [("api-version", "2018-02-01"), ("resource", "https://management.azure.com/"), ("msi_res_id", "/subscriptions/s/resourceGroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-tagfence")];
    assert_eq!(
        client()
            .get(with_query(&endpoint, &query))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        client()
            .get(with_query(&endpoint, &query))
            .header("Metadata", "false")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    let response = client()
        .get(with_query(&endpoint, &query))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    for field in [
        "access_token",
        "client_id",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
    ] {
        assert!(
            body[field].is_string(),
            "{field} should be a string in {body}"
        );
    }
    assert_eq!(body["expires_in"], "3600");
    assert_ne!(
        body["client_id"],
        tagfence_emulator::SYSTEM_ASSIGNED_CLIENT_ID
    );
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        client()
            .get(vault_url(&emulator, "kv-prod"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_short_token_lifetime_expires_tokens_by_itself() {
    let emulator = start(Config {
        token_lifetime: std::time::Duration::from_millis(0),
        ..config()
    })
    .await;
    let token = emulator.issue_token(ARM);
    let (status, code, _) = arm_error(
        client()
            .get(vault_url(&emulator, "kv-prod"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "ExpiredAuthenticationToken"));
    emulator.shutdown().await;
}
