//! ARM's read, write and delete buckets, Resource Graph's quota, the emulated latency, and
//! counting all of it from the request log.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use tagfence_emulator::{Config, GraphQuota, Route, Throttle, SYSTEM_ASSIGNED_OBJECT_ID};

const READS: &str = "x-ms-ratelimit-remaining-subscription-reads";
const WRITES: &str = "x-ms-ratelimit-remaining-subscription-writes";
const DELETES: &str = "x-ms-ratelimit-remaining-subscription-deletes";
const QUOTA_REMAINING: &str = "x-ms-user-quota-remaining";
const QUOTA_RESETS: &str = "x-ms-user-quota-resets-after";

fn list_url(emulator: &tagfence_emulator::Emulator, subscription: &str) -> String {
    format!(
        "{}/subscriptions/{subscription}/providers/Microsoft.KeyVault/vaults?api-version={API}",
        emulator.base_url()
    )
}

async fn get(url: &str, token: &str) -> reqwest::Response {
    client().get(url).bearer_auth(token).send().await.unwrap()
}

#[tokio::test]
async fn reads_are_counted_and_never_refused_by_default() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = get_vault(&emulator, "kv-prod", &token).await;
        assert_eq!(response.status(), 200);
        remaining.push(header(&response, READS).unwrap().parse::<u32>().unwrap());
    }
    // ARM's documented read bucket: 250 (refilled at 25 a second meanwhile, so the later
    // values depend on timing).
    assert_eq!(remaining[0], 249);
    assert!(remaining.iter().all(|left| *left <= 249), "{remaining:?}");
    // Resource Graph does not spend it, nor report it.
    let graph = graph_query(&emulator, &token, "resources | project name").await;
    assert_eq!(graph.status(), 200);
    assert!(header(&graph, READS).is_none());
    let response = get(&list_url(&emulator, SUB), &token).await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, READS).is_some());
    emulator.shutdown().await;
}

#[tokio::test]
async fn throttled_reads_are_refused_in_arms_words_and_recover() {
    let emulator = start(Config {
        read_throttle: Some(Throttle {
            capacity: 2,
            refill_per_sec: 2.0,
        }),
        ..config()
    })
    .await;
    let token = emulator.issue_token(ARM);
    let first = get_vault(&emulator, "kv-prod", &token).await;
    assert_eq!(
        (first.status().as_u16(), header(&first, READS).as_deref()),
        (200, Some("1"))
    );
    let second = get(&list_url(&emulator, SUB), &token).await;
    assert_eq!(
        (second.status().as_u16(), header(&second, READS).as_deref()),
        (200, Some("0"))
    );

    let refused = get_vault(&emulator, "kv-build", &token).await;
    assert_eq!(header(&refused, "retry-after").as_deref(), Some("1"));
    assert_eq!(header(&refused, READS).as_deref(), Some("0"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {
            "code": "SubscriptionRequestsThrottled",
            "message": format!("Number of 'read' requests for subscription '{SUB}' actor '{SYSTEM_ASSIGNED_OBJECT_ID}' exceeded. Please try again after '1' seconds.")
        }})
    );

    // Writes, Resource Graph and other subscriptions have budgets of their own.
    let patch = json!({"tags": {"tagfence": "AzureDevOps"}});
    assert_eq!(
        patch_vault(&emulator, "kv-build", &token, &patch)
            .await
            .status(),
        200
    );
    let graph = graph_query(&emulator, &token, "resources | project name").await;
    assert_eq!(graph.status(), 200);
    let elsewhere = get(
        &list_url(&emulator, "00000000-0000-0000-0000-000000000009"),
        &token,
    )
    .await;
    assert_eq!(elsewhere.status(), 200);

    // 2 tokens a second: one is back after 500 ms.
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(get_vault(&emulator, "kv-build", &token).await.status(), 200);
    emulator.shutdown().await;
}

#[tokio::test]
async fn deletes_spend_a_bucket_of_their_own() {
    let emulator = start(Config {
        throttle: Some(Throttle {
            capacity: 1,
            refill_per_sec: 0.0,
        }),
        ..config()
    })
    .await;
    let token = emulator.issue_token(ARM);
    let patch = json!({"tags": {}});
    let written = patch_vault(&emulator, "kv-build", &token, &patch).await;
    assert_eq!(header(&written, WRITES).as_deref(), Some("0"));
    assert_eq!(
        patch_vault(&emulator, "kv-build", &token, &patch)
            .await
            .status(),
        429
    );
    let delete = |name: &'static str| {
        client()
            .delete(vault_url(&emulator, name))
            .bearer_auth(&token)
            .send()
    };
    let deleted = delete("kv-build").await.unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(header(&deleted, DELETES).as_deref(), Some("0"));
    assert!(header(&deleted, WRITES).is_none());
    let (status, code, message) = arm_error(delete("kv-prod").await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (429, "SubscriptionRequestsThrottled")
    );
    assert!(
        message.starts_with(&format!(
            "Number of 'delete' requests for subscription '{SUB}'"
        )),
        "{message}"
    );
    assert!(emulator.vault("kv-prod").is_some());
    emulator.shutdown().await;
}

/// A token for a user-assigned identity (another principal) from the IMDS endpoint.
async fn other_principals_token(emulator: &tagfence_emulator::Emulator) -> String {
    let endpoint = format!("{}/metadata/identity/oauth2/token", emulator.base_url());
    let query = [
        ("api-version", "2018-02-01"),
        ("resource", ARM),
        ("object_id", "00000000-0000-0000-0000-00000000bbbb"),
    ];
    let body: Value = client()
        .get(with_query(&endpoint, &query))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn resource_graph_has_a_quota_per_principal_and_says_what_is_left() {
    let emulator = start(Config {
        graph_quota: Some(GraphQuota {
            queries: 2,
            window: Duration::from_millis(600),
        }),
        ..config()
    })
    .await;
    let token = emulator.issue_token(ARM);
    let query = "resources | project name";
    let quota = |response: &reqwest::Response| {
        (
            response.status().as_u16(),
            header(response, QUOTA_REMAINING).unwrap(),
            header(response, QUOTA_RESETS).unwrap(),
        )
    };
    let first = graph_query(&emulator, &token, query).await;
    assert_eq!(quota(&first), (200, "1".into(), "00:00:01".into()));
    let second = graph_query(&emulator, &token, query).await;
    assert_eq!(quota(&second), (200, "0".into(), "00:00:01".into()));
    let refused = graph_query(&emulator, &token, query).await;
    assert_eq!(quota(&refused), (429, "0".into(), "00:00:01".into()));
    assert_eq!(header(&refused, "retry-after").as_deref(), Some("1"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RateLimiting");
    assert_eq!(body["error"]["details"][0]["code"], "RateLimiting");
    assert!(body["error"]["details"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("Client application has been throttled"));

    // Another principal has a window of its own; an unauthenticated query spends nothing.
    let other = other_principals_token(&emulator).await;
    let theirs = graph_query(&emulator, &other, query).await;
    assert_eq!(quota(&theirs).0, 200);
    assert_eq!(quota(&theirs).1, "1");
    let anonymous = client()
        .post(graph_url(&emulator))
        .json(&json!({"query": query}))
        .send()
        .await
        .unwrap();
    assert_eq!(quota(&anonymous), (401, "2".into(), "00:00:01".into()));

    // The window resets 600 ms after its first query.
    tokio::time::sleep(Duration::from_millis(650)).await;
    let again = graph_query(&emulator, &token, query).await;
    assert_eq!(quota(&again), (200, "1".into(), "00:00:01".into()));
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_default_quota_is_15_queries_in_5_seconds_and_can_be_lifted() {
    let emulator = start(config()).await;
    let token = emulator.issue_token(ARM);
    let first = graph_query(&emulator, &token, "resources | count").await;
    assert_eq!(header(&first, QUOTA_REMAINING).as_deref(), Some("14"));
    assert_eq!(header(&first, QUOTA_RESETS).as_deref(), Some("00:00:05"));
    emulator.shutdown().await;

    let emulator = start(Config {
        graph_quota: None,
        ..config()
    })
    .await;
    let token = emulator.issue_token(ARM);
    for _ in 0..20 {
        let response = graph_query(&emulator, &token, "resources | count").await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, QUOTA_REMAINING).as_deref(), Some("14"));
        assert_eq!(header(&response, QUOTA_RESETS).as_deref(), Some("00:00:05"));
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn latency_delays_arm_and_graph_answers_but_not_tokens() {
    let latency = Duration::from_millis(300);
    let emulator = start(Config {
        latency,
        ..config()
    })
    .await;
    let token = emulator.issue_token(ARM);
    let timed = |started: Instant| started.elapsed();

    let started = Instant::now();
    assert_eq!(get_vault(&emulator, "kv-prod", &token).await.status(), 200);
    assert!(timed(started) >= latency);
    let started = Instant::now();
    assert_eq!(
        graph_query(&emulator, &token, "resources | count")
            .await
            .status(),
        200
    );
    assert!(timed(started) >= latency);

    let started = Instant::now();
    let issued = client()
        .get(emulator.identity_endpoint() + "?api-version=2019-08-01&resource=" + ARM)
        .header("X-IDENTITY-HEADER", emulator.identity_header())
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), 200);
    assert!(timed(started) < latency, "{:?}", timed(started));
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_request_log_counts_reads_writes_queries_and_each_kind_of_429() {
    let emulator = start(Config {
        throttle: Some(Throttle {
            capacity: 1,
            refill_per_sec: 0.0,
        }),
        read_throttle: Some(Throttle {
            capacity: 1,
            refill_per_sec: 0.0,
        }),
        graph_quota: Some(GraphQuota {
            queries: 1,
            window: Duration::from_secs(60),
        }),
        ..config()
    })
    .await;
    let token = emulator.issue_token(ARM);
    for _ in 0..2 {
        get_vault(&emulator, "kv-prod", &token).await;
        patch_vault(&emulator, "kv-prod", &token, &json!({"tags": {}})).await;
        graph_query(&emulator, &token, "resources | count").await;
    }
    let log = emulator.requests();
    let count = |wanted: fn(Route) -> bool, status: Option<u16>| {
        log.iter()
            .filter(|r| wanted(r.route) && status.is_none_or(|s| r.status == s))
            .count()
    };
    let graph = |route| route == Route::ResourceGraph;
    assert_eq!(count(Route::is_arm_read, None), 2);
    assert_eq!(count(Route::is_arm_write, None), 2);
    assert_eq!(count(graph, None), 2);
    assert_eq!(count(Route::is_arm_read, Some(429)), 1);
    assert_eq!(count(Route::is_arm_write, Some(429)), 1);
    assert_eq!(count(graph, Some(429)), 1);
    assert!(log
        .iter()
        .filter(|r| r.route == Route::VaultPatch)
        .all(|r| r.method == "PATCH"));
    emulator.shutdown().await;
}
