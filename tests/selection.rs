//! A selection naming tags the Service Tags do not hold is refused once, for the whole run,
//! before any vault is read — not once per vault after a token and a read each.

mod support;

use support::*;
use tagfence::config::{Config, SelectionSettings, Settings};
use tagfence::reconcile::ErrorKind;
use tagfence::run::{RunError, RunRequest, Runner};

fn settings(emulator: &tagfence_emulator::Emulator, vaults: &[&str], tags: &[&str]) -> Settings {
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
        http_timeout_secs: Some(5),
        http_max_retries: Some(1),
        http_retry_delay_ms: Some(50),
        ..Settings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_tag_is_refused_once_before_any_vault_is_read() {
    let emulator = start(emulator_config(vec![
        vault("kv-a", &[]),
        vault("kv-b", &[]),
    ]))
    .await;
    let config = Config::from_settings(&settings(
        &emulator,
        &["kv-a", "kv-b"],
        &["AzureDevOps", "AzureDevOpz"],
    ))
    .expect("valid configuration");
    let runner = Runner::with_credential(config, credential(&emulator), "test token".into())
        .expect("runner builds");
    let err = runner.run(&RunRequest::default()).await.unwrap_err();
    let RunError::UnknownTags { problems, .. } = &err else {
        panic!("expected unknown tags, got {err:?}");
    };
    assert_eq!(
        problems.len(),
        1,
        "one problem per unknown tag: {problems:?}"
    );
    assert!(
        problems[0].starts_with("unknown service tag 'AzureDevOpz'")
            && problems[0].contains("AzureDevOps")
            && problems[0].ends_with("(selected by kv-a, kv-b)"),
        "{}",
        problems[0]
    );
    assert_eq!(err.kind(), ErrorKind::NotConfigured);
    assert!(!err.to_string().contains('\n'));
    let vault_calls: Vec<_> = emulator
        .requests()
        .into_iter()
        .filter(|r| r.vault.is_some())
        .collect();
    assert!(vault_calls.is_empty(), "no vault read: {vault_calls:?}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_az_the_run_fails_once_on_one_line_before_any_vault_is_read() {
    let emulator = start(emulator_config(vec![
        vault("kv-a", &[]),
        vault("kv-b", &[]),
    ]))
    .await;
    let scratch = Scratch::new();
    let empty = scratch.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let (a, b) = (vault_id("kv-a"), vault_id("kv-b"));
    let output = tagfence(
        &emulator,
        &[
            "apply",
            "--vault",
            &a,
            "--vault",
            &b,
            "--tag",
            "AzureDevOps",
        ],
        &[
            ("TAGFENCE_CREDENTIAL", "developer-tools"),
            // No az, no azd: an empty directory is the whole PATH.
            ("PATH", &empty.display().to_string()),
            ("TAGFENCE_LOG", "warn"),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let errors: Vec<String> = stderr(&output)
        .lines()
        .filter(|l| l.starts_with("tagfence: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(errors.len(), 1, "{}", stderr(&output));
    assert!(
        errors[0].starts_with(
            "tagfence: error: signing in to Azure Resource Manager: getting a token: "
        ),
        "{}",
        errors[0]
    );
    assert!(
        stdout(&output).is_empty(),
        "no per-vault report: {}",
        stdout(&output)
    );
    let vault_calls = emulator
        .requests()
        .into_iter()
        .filter(|r| r.vault.is_some())
        .count();
    assert_eq!(vault_calls, 0);
    emulator.shutdown().await;
}
