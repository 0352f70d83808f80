//! Discovery by vault tag (Resource Graph on the emulator), profiles, and onboarding through the
//! Event Grid hook: the real binary, the library where a step must be isolated.

mod support;

use serde_json::{json, Value};
use support::host::{vault_write_event, HostDouble};
use support::*;
use tagfence::config::{Config, SelectionSettings, Settings};
use tagfence::reconcile::{Outcome, Reconciler, RunContext};
use tagfence::run::{RunRequest, Runner};
use tagfence_emulator::{Emulator, Route};

const OTHER_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000002";
const AGENT: &str = "52.174.77.1/32";
const DEFAULT_STATIC: &str = "52.1.2.3/32";

fn tagged(name: &str, tag: Option<&str>) -> Value {
    let mut vault = vault(name, &[]);
    if let Some(value) = tag {
        vault["tags"] = json!({"tagfence": value, "env": "prod"});
    }
    vault
}

fn in_subscription(mut vault: Value, subscription: &str) -> Value {
    let id = vault["id"]
        .as_str()
        .unwrap()
        .replace(SUBSCRIPTION, subscription);
    vault["id"] = json!(id);
    vault
}

fn outcome_of<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["vaults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the report: {report:#}"))
}

fn rules(emulator: &Emulator, name: &str) -> Vec<String> {
    rules_of(emulator, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_vaults_are_found_and_their_tag_says_what_to_allow() {
    let emulator = start(emulator_config(vec![
        tagged("kv-listed", Some("hosted-agents:uk")),
        tagged("kv-uk", Some("hosted-agents:uk")),
        tagged("kv-ado", Some("AzureDevOps, 52.174.77.1")),
        tagged("kv-default", Some("default")),
        tagged("kv-bad", Some("hosted-agents:mars")),
        tagged("kv-plain", None),
        in_subscription(tagged("kv-elsewhere", Some("default")), OTHER_SUBSCRIPTION),
    ]))
    .await;
    let listed = vault_id("kv-listed");
    let output = tagfence(
        &emulator,
        &[
            "apply",
            "--output",
            "json",
            "--vault",
            &listed,
            "--tag",
            "AzureDevOps",
            "--static-rule",
            "52.1.2.3",
            "--discover-subscription",
            SUBSCRIPTION,
        ],
        &[],
    )
    .await;
    // kv-bad is refused, so the run fails; everything else is done.
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["vaults"].as_array().unwrap().len(), 5, "{report:#}");

    // Listed wins over the tag: the defaults apply.
    assert_eq!(
        outcome_of(&report, "kv-listed")["outcome"]["status"],
        "applied"
    );
    let mut ado_and_default: Vec<&str> = AZURE_DEVOPS.to_vec();
    ado_and_default.push(DEFAULT_STATIC);
    assert_eq!(rules(&emulator, "kv-listed"), sorted(&ado_and_default));
    assert_eq!(rules(&emulator, "kv-default"), sorted(&ado_and_default));

    // A profile: every UK region, plus AzureDevOps, plus the defaults' static rule.
    let uk = outcome_of(&report, "kv-uk");
    assert_eq!(uk["outcome"]["status"], "applied");
    assert_eq!(
        uk["plan"]["selection"],
        json!(["AzureCloud.uksouth", "AzureCloud.ukwest", "AzureDevOps"])
    );
    let uk_rules = rules(&emulator, "kv-uk");
    assert!(uk_rules.contains(&DEFAULT_STATIC.to_owned()));
    assert!(uk_rules.len() > 200, "{}", uk_rules.len());

    // Tags and a static rule in the value.
    let mut ado_and_agent = ado_and_default.clone();
    ado_and_agent.push(AGENT);
    assert_eq!(rules(&emulator, "kv-ado"), sorted(&ado_and_agent));

    // An invalid value is refused, naming the tag, the value and the problem; nothing written.
    let bad = outcome_of(&report, "kv-bad");
    assert_eq!(bad["outcome"]["status"], "refused");
    assert_eq!(bad["outcome"]["kind"], "refused");
    // The reason is text in the type too (`ReconcileError::InvalidTarget`), and what the
    // operator reads to fix the tag.
    assert_eq!(
        bad["outcome"]["reason"],
        "its tag tagfence='hosted-agents:mars': vault kv-bad: unknown geography 'mars' in profile 'hosted-agents:mars'; known: united-states, europe, united-kingdom, canada, brazil, australia, asia-pacific, india, france"
    );
    assert!(rules(&emulator, "kv-bad").is_empty());

    // Untagged, or outside the discovery scope: untouched and not even read.
    for name in ["kv-plain", "kv-elsewhere"] {
        assert!(rules(&emulator, name).is_empty());
        assert!(
            emulator
                .requests()
                .iter()
                .all(|r| r.vault.as_deref() != Some(name)),
            "{name} was read"
        );
    }
    emulator.shutdown().await;
}

fn library_args(emulator: &Emulator) -> Settings {
    Settings {
        selection: SelectionSettings {
            tags: vec!["AzureDevOps".into()],
            static_rules: Vec::new(),
        },
        source: Some("download".into()),
        arm_endpoint: Some(emulator.base_url()),
        download_page_url: Some(emulator.download_page_url()),
        concurrency: Some(4),
        http_timeout_secs: Some(5),
        http_max_retries: Some(2),
        http_retry_delay_ms: Some(50),
        http_call_timeout_secs: Some(30),
        discover_subscriptions: vec![SUBSCRIPTION.to_owned()],
        ..Settings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_of_resource_graph_is_followed() {
    // 1,001 tagged vaults: two pages of at most 1,000 rows.
    let vaults: Vec<Value> = (0..1001)
        .map(|i| tagged(&format!("kv-{i:04}"), Some("default")))
        .collect();
    let emulator = start(emulator_config(vaults)).await;
    let config = Config::from_settings(&library_args(&emulator)).unwrap();
    let runner = Runner::with_credential(config, credential(&emulator), "test".into()).unwrap();
    let found = runner
        .resolve_targets(&RunRequest::default())
        .await
        .unwrap();
    assert_eq!(found.targets.len(), 1001);
    assert!(found.invalid.is_empty());
    let graph_calls = emulator
        .requests()
        .iter()
        .filter(|r| r.route == Route::ResourceGraph)
        .count();
    assert_eq!(graph_calls, 2);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_whose_tag_changed_since_discovery_is_skipped_not_written() {
    let emulator = start(emulator_config(vec![tagged(
        "kv-a",
        Some("hosted-agents:uk"),
    )]))
    .await;
    let config = Config::from_settings(&library_args(&emulator)).unwrap();
    let arm = tagfence::azure::arm::ArmClient::new(
        emulator.base_url().parse().unwrap(),
        credential(&emulator),
        "https://management.azure.com/.default".into(),
        config.http.clone(),
    )
    .unwrap();
    let tags =
        tagfence::core::service_tags::ServiceTags::parse(&std::fs::read(fixture(365)).unwrap())
            .unwrap();
    let run = RunContext {
        tags: Some(&tags),
        grant: None,
        state: None,
        dry_run: false,
        run_id: "test",
        trigger: "cli",
        now: chrono::Utc::now(),
        lock_wait: std::time::Duration::from_secs(5),
        allow_older: false,
        index: None,
        index_trusted_after_write: tagfence::reconcile::INDEX_TRUSTED_AFTER_WRITE,
    };
    let reconciler = Reconciler::new(arm);

    // The index said "AzureDevOps"; the vault now says "hosted-agents:uk".
    let stale = config
        .discovered_target(vault_id("kv-a").parse().unwrap(), "AzureDevOps")
        .unwrap();
    let report = reconciler.reconcile_vault(&stale, run).await;
    // A skip carries its reason as text only: the message is the one way to tell a changed tag
    // from a removed one.
    assert_eq!(
        report.outcome,
        Outcome::Skipped {
            reason: "its tag tagfence changed from 'AzureDevOps' to 'hosted-agents:uk' since the discovery index was built; the next run applies the new value".into()
        }
    );
    assert!(!report.wrote);

    // The tag is gone: left alone.
    set_tags(&emulator, "kv-a", json!({})).await;
    let current = config
        .discovered_target(vault_id("kv-a").parse().unwrap(), "hosted-agents:uk")
        .unwrap();
    let report = reconciler.reconcile_vault(&current, run).await;
    assert_eq!(
        report.outcome,
        Outcome::Skipped {
            reason: "it no longer carries the tag 'tagfence' (the discovery index lags behind); tagfence leaves it alone from now on".into()
        }
    );
    assert!(rules_of(&emulator, "kv-a").is_empty());
    emulator.shutdown().await;
}

/// Sets a vault's tags through ARM, as a person in the portal would.
async fn set_tags(emulator: &Emulator, name: &str, tags: Value) {
    set_tags_in(emulator, SUBSCRIPTION, name, tags).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_grid_hook_onboards_a_vault_the_moment_it_is_tagged() {
    let emulator = start(emulator_config(vec![
        tagged("kv-new", None),
        in_subscription(tagged("kv-elsewhere", Some("default")), OTHER_SUBSCRIPTION),
    ]))
    .await;
    let mut settings = emulator_env(&emulator);
    settings.retain(|(k, _)| k != "TAGFENCE_LOG");
    settings.push(("TAGFENCE_TAGS".into(), "AzureDevOps".into()));
    settings.push((
        "TAGFENCE_DISCOVER_SUBSCRIPTIONS".into(),
        SUBSCRIPTION.into(),
    ));
    let mut host = HostDouble::start(&settings).await;

    // Not tagged yet: acknowledged and ignored.
    let event = host
        .invoke_event(&vault_write_event(&vault_id("kv-new")), false)
        .await;
    assert!(event.succeeded(), "{}", event.body);
    assert_eq!(
        event.body["Logs"][0],
        "ignored a write to kv-new: it is neither listed nor tagged 'tagfence'"
    );
    assert!(rules_of(&emulator, "kv-new").is_empty());

    // Tagged: the very next event reconciles it, without waiting for Resource Graph.
    set_tags(&emulator, "kv-new", json!({"tagfence": "azure-devops"})).await;
    let event = host
        .invoke_event(&vault_write_event(&vault_id("kv-new")), false)
        .await;
    assert!(event.succeeded(), "{}", event.body);
    assert_eq!(event.body["ReturnValue"]["outcome"]["status"], "applied");
    assert_eq!(rules_of(&emulator, "kv-new"), sorted(&AZURE_DEVOPS));
    // An event costs ARM reads of the one vault, never a Resource Graph query of them all.
    assert!(emulator
        .requests()
        .iter()
        .all(|r| r.route != Route::ResourceGraph));

    // A tagged vault outside the discovery scopes stays alone.
    let elsewhere = vault_id("kv-elsewhere").replace(SUBSCRIPTION, OTHER_SUBSCRIPTION);
    let event = host
        .invoke_event(&vault_write_event(&elsewhere), false)
        .await;
    assert!(event.succeeded(), "{}", event.body);
    assert_eq!(
        event.body["Logs"][0],
        "ignored a write to kv-elsewhere: it is neither listed nor in a discovery scope"
    );
    assert!(rules_of(&emulator, "kv-elsewhere").is_empty());
    host.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_expands_profiles_from_the_command_line() {
    let emulator = start(emulator_config(vec![])).await;
    let fixture = fixture(365).display().to_string();
    let output = tagfence(
        &emulator,
        &[
            "plan",
            "--service-tags",
            &fixture,
            "--tag",
            "hosted-agents:europe",
            "--fit",
            "summarize",
            "--output",
            "json",
        ],
        &[],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let plan: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        plan["selection"],
        json!([
            "AzureCloud.westeurope",
            "AzureCloud.northeurope",
            "AzureCloud.centralfrance",
            "AzureCloud.southfrance",
            "AzureDevOps"
        ])
    );
    assert!(plan["desired"]["count"].as_u64().unwrap() <= 1000);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_groups_scope_discovery_and_onboarding() {
    let mut config = emulator_config(vec![
        in_subscription(tagged("kv-platform", Some("default")), OTHER_SUBSCRIPTION),
        in_subscription(tagged("kv-later", None), OTHER_SUBSCRIPTION),
        tagged("kv-home", Some("default")),
    ]);
    config
        .seed
        .management_groups
        .insert("mg-platform".into(), vec![OTHER_SUBSCRIPTION.into()]);
    let emulator = start(config).await;
    let args = Settings {
        discover_subscriptions: Vec::new(),
        discover_management_groups: vec!["mg-platform".into()],
        ..library_args(&emulator)
    };
    let runner = Runner::with_credential(
        Config::from_settings(&args).unwrap(),
        credential(&emulator),
        "test".into(),
    )
    .unwrap();

    // Only the group's subscription is searched.
    let report = runner.run(&RunRequest::default()).await.unwrap();
    let names: Vec<&str> = report
        .vaults
        .iter()
        .map(|v| v.vault.name.as_str())
        .collect();
    assert_eq!(names, ["kv-platform"]);
    assert_eq!(report.vaults[0].outcome, Outcome::Applied);
    assert!(rules_of(&emulator, "kv-home").is_empty());

    // A vault tagged a moment ago under the group is onboarded by id: the group membership
    // comes from Resource Graph, the tag from ARM.
    set_tags_in(
        &emulator,
        OTHER_SUBSCRIPTION,
        "kv-later",
        json!({"tagfence": "default"}),
    )
    .await;
    let later = vault_id("kv-later").replace(SUBSCRIPTION, OTHER_SUBSCRIPTION);
    let report = runner
        .run(&RunRequest {
            only: Some(vec![later]),
            trigger: "eventgrid",
            ..RunRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(report.vaults[0].outcome, Outcome::Applied);
    assert_eq!(rules_of(&emulator, "kv-later"), sorted(&AZURE_DEVOPS));

    // A vault outside the group is not managed.
    let err = runner
        .run(&RunRequest {
            only: Some(vec![vault_id("kv-home")]),
            ..RunRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is not managed: it is neither listed nor in a discovery scope",
            vault_id("kv-home")
        )
    );
    emulator.shutdown().await;
}

async fn set_tags_in(emulator: &Emulator, subscription: &str, name: &str, tags: Value) {
    let token = emulator.issue_token("https://management.azure.com/");
    let id = vault_id(name).replace(SUBSCRIPTION, subscription);
    let response = reqwest::Client::new()
        .patch(format!(
            "{}{id}?api-version=2023-07-01",
            emulator.base_url()
        ))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(json!({ "tags": tags }).to_string())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}
