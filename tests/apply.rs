//! `tagfence apply` against the emulator: through the library (with request-level assertions)
//! and through the real binary with the managed-identity credential, as in production.

mod support;

use std::time::Instant;

use support::*;
use tagfence::azure::pipeline::AzureError;
use tagfence::config::{Config, Observe, SelectionSettings, Settings};
use tagfence::core::desired::DesireError;
use tagfence::core::plan::PlanError;
use tagfence::core::service_tags::Cloud;
use tagfence::reconcile::{AzureStep, ErrorKind, Observed, Outcome, ReconcileError};
use tagfence::run::{RunError, RunRequest, Runner};
use tagfence::source::SourceError;
use tagfence_emulator::{Fault, FaultKind, Route};

const MANUAL_RULE: &str = "52.174.10.20/32";

/// Run arguments for the library tests: the emulator's endpoints, fast retries.
fn run_args(emulator: &tagfence_emulator::Emulator, vaults: &[&str], tags: &[&str]) -> Settings {
    Settings {
        vaults: vaults.iter().map(|v| vault_id(v)).collect(),
        selection: SelectionSettings {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            static_rules: Vec::new(),
        },
        source: Some("download".into()),
        arm_endpoint: Some(emulator.base_url()),
        download_page_url: Some(format!(
            "{}/download/details.aspx?id=56519",
            emulator.base_url()
        )),
        concurrency: Some(4),
        http_timeout_secs: Some(5),
        http_max_retries: Some(3),
        http_retry_delay_ms: Some(50),
        http_call_timeout_secs: Some(30),
        ..Settings::default()
    }
}

fn runner(emulator: &tagfence_emulator::Emulator, args: &Settings) -> Runner {
    let config = Config::from_settings(args).expect("valid configuration");
    Runner::with_credential(config, credential(emulator), "test token".into())
        .expect("runner builds")
}

fn graph_queries(emulator: &tagfence_emulator::Emulator) -> usize {
    emulator
        .requests()
        .iter()
        .filter(|r| r.route == Route::ResourceGraph)
        .count()
}

fn vault_routes(emulator: &tagfence_emulator::Emulator, name: &str) -> Vec<Route> {
    emulator
        .requests()
        .into_iter()
        .filter(|r| r.vault.as_deref() == Some(name))
        .map(|r| r.route)
        .collect()
}

/// Protocol note: a run first reads every firewall in one Resource Graph query (the default
/// `observe = graph`); a changed vault then costs GET, GET, PATCH (the PATCH's answer verifies
/// the write), and without state a vault the index shows in sync is not read through ARM at all.
/// The second run is repeated with `--observe arm`: one GET per vault in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_writes_the_plan_once_keeps_the_rest_and_a_second_run_writes_nothing() {
    let emulator = start(emulator_config(vec![
        vault("kv-prod", &["20.37.158.0/23", MANUAL_RULE]),
        vault("kv-build", &[]),
    ]))
    .await;
    let before = emulator.vault("kv-prod").unwrap();
    let args = run_args(&emulator, &["kv-prod", "kv-build"], &["AzureDevOps"]);
    let runner = runner(&emulator, &args);

    let report = runner.run(&RunRequest::default()).await.unwrap();
    assert_eq!(report.failures(), 0, "{}", report.to_text());
    assert!(report.vaults.iter().all(|v| v.outcome == Outcome::Applied));

    // The final rules are the plan: AzureDevOps plus the manual rule, which survives.
    let mut expected: Vec<&str> = AZURE_DEVOPS.to_vec();
    expected.push(MANUAL_RULE);
    assert_eq!(rules_of(&emulator, "kv-prod"), sorted(&expected));
    assert_eq!(rules_of(&emulator, "kv-build"), sorted(&AZURE_DEVOPS));
    // defaultAction, bypass and the vnet rule are as they were.
    let after = emulator.vault("kv-prod").unwrap();
    for field in ["defaultAction", "bypass", "virtualNetworkRules"] {
        assert_eq!(
            after["properties"]["networkAcls"][field], before["properties"]["networkAcls"][field],
            "{field}"
        );
    }
    // One Resource Graph query for the run; per changed vault: read, read again just before
    // writing, one PATCH, whose answer shows the firewall sent (no read to verify).
    assert_eq!(graph_queries(&emulator), 1);
    let changed = [Route::VaultGet, Route::VaultGet, Route::VaultPatch];
    assert_eq!(vault_routes(&emulator, "kv-prod"), changed);
    assert_eq!(vault_routes(&emulator, "kv-build"), changed);
    assert!(report.vaults.iter().all(|v| v.observed == Observed::Arm));

    // Second run: the one query shows every vault in sync; no vault read, no write.
    emulator.clear_requests();
    let report = runner.run(&RunRequest::default()).await.unwrap();
    assert!(
        report.vaults.iter().all(|v| v.outcome == Outcome::InSync),
        "{}",
        report.to_text()
    );
    assert!(report
        .vaults
        .iter()
        .all(|v| v.observed == Observed::ResourceGraph && !v.wrote));
    assert_eq!(graph_queries(&emulator), 1);
    assert!(vault_routes(&emulator, "kv-prod").is_empty());
    assert!(vault_routes(&emulator, "kv-build").is_empty());
    assert!(report
        .to_text()
        .contains("== kv-prod: in sync. No changes."));

    // The same through ARM (`--observe arm`): one GET per vault, no query, no write.
    emulator.clear_requests();
    let arm = Settings {
        observe: Some(Observe::Arm),
        ..args.clone()
    };
    let report = self::runner(&emulator, &arm)
        .run(&RunRequest::default())
        .await
        .unwrap();
    assert!(
        report.vaults.iter().all(|v| v.outcome == Outcome::InSync),
        "{}",
        report.to_text()
    );
    assert!(report.vaults.iter().all(|v| v.observed == Observed::Arm));
    assert_eq!(graph_queries(&emulator), 0);
    assert_eq!(vault_routes(&emulator, "kv-prod"), [Route::VaultGet]);
    assert_eq!(vault_routes(&emulator, "kv-build"), [Route::VaultGet]);
    assert!(report
        .to_text()
        .contains("== kv-prod: in sync. No changes."));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reads_but_writes_nothing() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[MANUAL_RULE])])).await;
    let runner = runner(
        &emulator,
        &run_args(&emulator, &["kv-prod"], &["AzureDevOps"]),
    );
    let report = runner
        .run(&RunRequest {
            dry_run: true,
            ..RunRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(report.vaults[0].outcome, Outcome::WouldApply);
    assert_eq!(report.vaults[0].plan.as_ref().unwrap().add.len(), 24);
    assert_eq!(vault_routes(&emulator, "kv-prod"), [Route::VaultGet]);
    assert_eq!(rules_of(&emulator, "kv-prod"), [MANUAL_RULE]);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_write_is_retried_no_sooner_than_retry_after() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[])])).await;
    emulator.add_fault(Fault {
        route: Some(Route::VaultPatch),
        vault: None,
        kind: FaultKind::Status {
            status: 429,
            code: "SubscriptionRequestsThrottled".into(),
            message: "Number of 'write' requests for subscription exceeded. Please try again after '1' seconds.".into(),
            retry_after: Some(1),
        },
        count: 1,
    });
    let runner = runner(
        &emulator,
        &run_args(&emulator, &["kv-prod"], &["AzureDevOps"]),
    );
    let report = runner.run(&RunRequest::default()).await.unwrap();
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::Applied,
        "{}",
        report.to_text()
    );
    let patches: Vec<_> = emulator
        .requests()
        .into_iter()
        .filter(|r| r.route == Route::VaultPatch)
        .collect();
    assert_eq!(patches.len(), 2);
    assert_eq!((patches[0].status, patches[1].status), (429, 200));
    let waited = patches[1].at_ms - patches[0].at_ms;
    assert!(
        waited >= 1000,
        "retried after {waited} ms, before the Retry-After of 1 s"
    );
    assert_eq!(rules_of(&emulator, "kv-prod"), sorted(&AZURE_DEVOPS));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_server_errors_fail_that_vault_only_and_leave_it_unchanged() {
    let emulator = start(emulator_config(vec![
        vault("kv-prod", &[MANUAL_RULE]),
        vault("kv-build", &[]),
    ]))
    .await;
    emulator.add_fault(Fault {
        route: Some(Route::VaultPatch),
        vault: Some("kv-prod".into()),
        kind: FaultKind::Status {
            status: 503,
            code: "ServiceUnavailable".into(),
            message: "The service is temporarily unavailable.".into(),
            retry_after: None,
        },
        count: 100,
    });
    let runner = runner(
        &emulator,
        &run_args(&emulator, &["kv-prod", "kv-build"], &["AzureDevOps"]),
    );
    let report = runner.run(&RunRequest::default()).await.unwrap();
    let Outcome::Failed(error) = &report.vaults[0].outcome else {
        panic!("kv-prod should fail: {}", report.to_text());
    };
    assert!(
        matches!(
            error,
            ReconcileError::Azure {
                step: AzureStep::Write,
                error: AzureError::Api { status: 503, .. }
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    // What the operator reads: the step, the vault and ARM's own answer, on one line.
    assert_eq!(
        error.to_string(),
        "writing the firewall of vault kv-prod: ServiceUnavailable: The service is temporarily unavailable. (HTTP 503)"
    );
    assert_eq!(rules_of(&emulator, "kv-prod"), [MANUAL_RULE]);
    // 1 attempt + 3 retries, then it gives up.
    assert_eq!(
        vault_routes(&emulator, "kv-prod")
            .iter()
            .filter(|r| **r == Route::VaultPatch)
            .count(),
        4
    );
    // The other vault is not held back.
    assert_eq!(report.vaults[1].outcome, Outcome::Applied);
    assert_eq!(report.failures(), 1);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_limit_exact_fit_is_refused_before_any_write() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[MANUAL_RULE])])).await;
    let us = [
        "AzureCloud.eastus",
        "AzureCloud.eastus2",
        "AzureCloud.centralus",
        "AzureCloud.northcentralus",
        "AzureCloud.southcentralus",
        "AzureCloud.westcentralus",
        "AzureCloud.westus",
        "AzureCloud.westus2",
        "AzureCloud.westus3",
    ];
    let runner = runner(&emulator, &run_args(&emulator, &["kv-prod"], &us));
    let report = runner.run(&RunRequest::default()).await.unwrap();
    let Outcome::Refused(reason) = &report.vaults[0].outcome else {
        panic!("should be refused: {}", report.to_text());
    };
    assert!(
        matches!(
            reason,
            ReconcileError::Plan(PlanError::Desire(DesireError::DoesNotFit { .. }))
        ),
        "{reason:?}"
    );
    assert_eq!(reason.kind(), ErrorKind::Refused);
    // No plan could be made at all (the rules do not fit), so none is shown; a plan refused
    // by its guards is (tests/safety.rs, a_tag_that_lost_more_than_half_refuses_its_vaults).
    assert!(report.vaults[0].plan.is_none());
    // What the operator reads: the counts, and the two ways out.
    assert_eq!(
        reason.to_string(),
        "the selection needs 2,691 rules but only 999 of the firewall's 1,000 are free (1 are held by rules tagfence keeps); select fewer tags or use --fit summarize"
    );
    assert_eq!(vault_routes(&emulator, "kv-prod"), [Route::VaultGet]);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_forbidden_vault_fails_alone() {
    let mut config = emulator_config(vec![vault("kv-prod", &[]), vault("kv-locked", &[])]);
    config.seed.forbidden = vec![vault_id("kv-locked")];
    let emulator = start(config).await;
    let runner = runner(
        &emulator,
        &run_args(
            &emulator,
            &["kv-gone", "kv-locked", "kv-prod"],
            &["AzureDevOps"],
        ),
    );
    let report = runner.run(&RunRequest::default()).await.unwrap();
    // Each fails on its first read, with ARM's answer; neither is retried into success.
    let failed_read = |index: usize| match &report.vaults[index].outcome {
        Outcome::Failed(
            error @ ReconcileError::Azure {
                step: AzureStep::Observe,
                error: AzureError::Api { .. },
            },
        ) => error.clone(),
        other => panic!("vault {index} should fail on its first read: {other:?}"),
    };
    let gone = failed_read(0);
    assert!(
        matches!(
            &gone,
            ReconcileError::Azure {
                error: AzureError::Api { operation, status: 404, code, message },
                ..
            } if operation == "reading vault kv-gone"
                && code == "ResourceNotFound"
                && message == "The Resource 'Microsoft.KeyVault/vaults/kv-gone' under resource group 'rg-secrets' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
        "{gone:?}"
    );
    assert_eq!(gone.kind(), ErrorKind::Rejected);
    let locked = failed_read(1);
    assert!(
        matches!(
            &locked,
            ReconcileError::Azure {
                error: AzureError::Api { operation, status: 403, code, .. },
                ..
            } if operation == "reading vault kv-locked" && code == "AuthorizationFailed"
        ),
        "{locked:?}"
    );
    assert_eq!(locked.kind(), ErrorKind::Rejected);
    assert_eq!(report.vaults[2].outcome, Outcome::Applied);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_discovery_api_source_follows_every_page() {
    let mut config = emulator_config(vec![vault("kv-prod", &[])]);
    config.service_tags_page_size = Some(500);
    let emulator = start(config).await;
    let mut args = run_args(&emulator, &["kv-prod"], &["AzureDevOps"]);
    args.source = Some("api".into());
    args.subscription_id = Some(SUBSCRIPTION.into());
    args.location = Some("westeurope".into());
    let report = runner(&emulator, &args)
        .run(&RunRequest::default())
        .await
        .unwrap();
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::Applied,
        "{}",
        report.to_text()
    );
    assert_eq!(report.source.change_number, 365);
    let pages = emulator
        .requests()
        .into_iter()
        .filter(|r| r.route == Route::ServiceTagsApi)
        .count();
    assert_eq!(pages, 2967usize.div_ceil(500));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_for_another_cloud_or_too_small_is_refused_before_any_vault_is_read() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[])])).await;
    let mut args = run_args(&emulator, &["kv-prod"], &["AzureDevOps"]);
    args.cloud = Some(tagfence::core::service_tags::Cloud::AzureGovernment);
    let err = runner(&emulator, &args)
        .run(&RunRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RunError::Source(SourceError::WrongCloud {
                found: Cloud::Public,
                expected: Cloud::AzureGovernment,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Refused);

    let small = std::env::temp_dir().join(format!("tagfence-small-{}.json", std::process::id()));
    std::fs::write(&small, r#"{"changeNumber": 1, "cloud": "Public", "values": [{"name": "AzureDevOps", "properties": {"changeNumber": 1, "addressPrefixes": ["20.37.158.0/23"]}}]}"#).unwrap();
    let mut args = run_args(&emulator, &["kv-prod"], &["AzureDevOps"]);
    args.source = Some(small.display().to_string());
    let err = runner(&emulator, &args)
        .run(&RunRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RunError::Source(SourceError::TooSmall {
                tags: 1,
                minimum: 1000,
                cloud: Cloud::Public,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Refused);
    assert!(vault_routes(&emulator, "kv-prod").is_empty());
    std::fs::remove_file(small).unwrap();
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_uses_the_managed_identity_once_per_run() {
    let mut disabled = vault("kv-legacy", &[]);
    disabled["properties"]["publicNetworkAccess"] = "Disabled".into();
    let emulator = start(emulator_config(vec![
        vault("kv-prod", &[MANUAL_RULE]),
        vault("kv-build", &[]),
        disabled,
    ]))
    .await;
    let vaults = [
        vault_id("kv-prod"),
        vault_id("kv-build"),
        vault_id("kv-legacy"),
    ]
    .join(",");
    let env = [
        ("TAGFENCE_VAULTS", vaults.as_str()),
        ("TAGFENCE_TAGS", "AzureDevOps"),
        ("TAGFENCE_STATIC_RULES", "52.1.2.3"),
    ];

    let started = Instant::now();
    let output = tagfence(&emulator, &["apply"], &env).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    assert!(text.contains("== kv-prod: applied and verified."), "{text}");
    assert!(
        text.contains(
            "warning: publicNetworkAccess is Disabled: the vault's IP rules have no effect"
        ),
        "{text}"
    );
    assert!(
        text.contains("Plan: 25 to add, 0 to remove, 0 unchanged, 1 unmanaged kept."),
        "{text}"
    );
    let tokens = emulator
        .requests()
        .into_iter()
        .filter(|r| r.route == Route::TokenAppService)
        .count();
    assert_eq!(tokens, 1, "one token for the whole run");
    assert!(emulator
        .requests()
        .iter()
        .filter(|r| r.route != Route::TokenAppService
            && r.route != Route::DownloadPage
            && r.route != Route::DownloadFile)
        .all(|r| r.authorized));
    let mut expected: Vec<&str> = AZURE_DEVOPS.to_vec();
    expected.push("52.1.2.3/32");
    assert_eq!(rules_of(&emulator, "kv-build"), sorted(&expected));
    eprintln!("first run: {:?}", started.elapsed());

    // Second run: "No changes" for every vault, exit 0, no PATCH.
    emulator.clear_requests();
    let output = tagfence(&emulator, &["apply", "--output", "json"], &env).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for vault in report["vaults"].as_array().unwrap() {
        assert_eq!(vault["outcome"]["status"], "in_sync", "{vault}");
        assert_eq!(vault["wrote"], false);
        // Without state, Resource Graph's index vouches for a vault in sync: no ARM read.
        assert_eq!(vault["observed"], "resource_graph", "{vault}");
    }
    assert!(emulator
        .requests()
        .iter()
        .all(|r| r.route != Route::VaultPatch));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_a_private_static_rule_before_any_request() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[])])).await;
    let id = vault_id("kv-prod");
    let output = tagfence(
        &emulator,
        &[
            "apply",
            "--vault",
            &id,
            "--tag",
            "AzureDevOps",
            "--static-rule",
            "10.1.2.3",
        ],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output).lines().last().unwrap(),
        "tagfence: error: reading the configuration: --static-rule 10.1.2.3: overlaps the reserved range 10.0.0.0/8 (private network, RFC 1918), which Key Vault and Storage refuse; expected a public address"
    );
    assert!(emulator.requests().is_empty());
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_2_when_a_vault_fails() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[])])).await;
    let output = tagfence(
        &emulator,
        &[
            "apply",
            "--vault",
            &vault_id("kv-missing"),
            "--vault",
            &vault_id("kv-prod"),
            "--tag",
            "AzureDevOps",
        ],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let text = stdout(&output);
    assert!(
        text.contains("== kv-missing: failed: reading vault kv-missing: ResourceNotFound"),
        "{text}"
    );
    assert!(text.contains("== kv-prod: applied and verified."), "{text}");
    assert!(
        text.contains("2 vaults: 1 applied, 0 in sync, 0 refused, 1 failed"),
        "{text}"
    );
    emulator.shutdown().await;
}

/// Protocol note: observed through ARM (`--observe arm`), so that each run's reconcile starts
/// with a GET whatever moment its Resource Graph query would have seen; the write is verified by
/// the PATCH's answer (no GET after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_runs_on_one_vault_are_serialised_and_write_once() {
    let emulator = start(emulator_config(vec![vault("kv-prod", &[])])).await;
    // Slow down the first read so that the two runs overlap.
    emulator.add_fault(Fault {
        route: Some(Route::VaultGet),
        vault: Some("kv-prod".into()),
        kind: FaultKind::Delay { ms: 300 },
        count: 1,
    });
    let args = Settings {
        observe: Some(Observe::Arm),
        ..run_args(&emulator, &["kv-prod"], &["AzureDevOps"])
    };
    let runner = std::sync::Arc::new(runner(&emulator, &args));
    let request = RunRequest::default();
    let (first, second) = tokio::join!(runner.run(&request), runner.run(&request));
    let outcomes = [
        first.unwrap().vaults[0].outcome.clone(),
        second.unwrap().vaults[0].outcome.clone(),
    ];
    assert!(
        outcomes.contains(&Outcome::Applied) && outcomes.contains(&Outcome::InSync),
        "{outcomes:?}"
    );
    // The second reconcile started only after the first had written and verified: its one
    // read comes after the PATCH.
    assert_eq!(
        vault_routes(&emulator, "kv-prod"),
        [
            Route::VaultGet,
            Route::VaultGet,
            Route::VaultPatch,
            Route::VaultGet
        ]
    );
    emulator.shutdown().await;
}
