//! The `tagfence-emulator` binary end to end: ready line, env file, serving, clean exit on SIGTERM.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[tokio::test]
async fn the_binary_announces_itself_writes_the_env_file_and_exits_cleanly_on_sigterm() {
    let directory =
        std::env::temp_dir().join(format!("tagfence-emulator-bin-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let env_file = directory.join("emulator.env");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tagfence-emulator"))
        .args([
            "--identity-header",
            "demo-header",
            "--service-tags-page-size",
            "1000",
            "--env-file",
        ])
        .arg(&env_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let base = line
        .trim_end()
        .strip_prefix("tagfence-emulator listening on ")
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let env = std::fs::read_to_string(&env_file).unwrap();
    assert_eq!(
        env,
        format!(
            "TAGFENCE_ARM_ENDPOINT={base}\nIDENTITY_ENDPOINT={base}/msi/token\nIDENTITY_HEADER=demo-header\nTAGFENCE_DOWNLOAD_PAGE_URL={base}/download/details.aspx?id=56519\n"
        )
    );

    let client = reqwest::Client::new();
    let token: Value = client
        .get(format!(
            "{base}/msi/token?api-version=2019-08-01&resource=https://management.azure.com/"
        ))
        .header("X-IDENTITY-HEADER", "demo-header")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    let vault: Value = client
        .get(format!("{base}/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-secrets/providers/Microsoft.KeyVault/vaults/kv-prod?api-version=2025-05-01"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        vault["properties"]["networkAcls"]["ipRules"][3]["value"],
        "52.174.10.20/32"
    );
    let tags: Value = client
        .get(format!("{base}/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.Network/locations/westeurope/serviceTags?api-version=2025-05-01"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["changeNumber"], "365");
    assert!(tags["nextLink"].is_string());

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the emulator did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "only one line goes to stdout, got {rest:?}"
    );
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn the_binary_exits_2_with_a_message_when_the_seed_is_unreadable() {
    let output = Command::new(env!("CARGO_BIN_EXE_tagfence-emulator"))
        .args(["--seed", "/nonexistent/seed.json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: reading seed file '/nonexistent/seed.json'"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_tls_the_binary_announces_https_and_writes_its_ca() {
    let directory =
        std::env::temp_dir().join(format!("tagfence-emulator-tls-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let env_file = directory.join("emulator.env");
    let ca_file = directory.join("ca.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tagfence-emulator"))
        .args(["--tls", "--identity-header", "h", "--ca-file"])
        .arg(&ca_file)
        .arg("--env-file")
        .arg(&env_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim_end()
        .strip_prefix("tagfence-emulator listening on ")
        .unwrap()
        .to_owned();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let http = base.replacen("https://", "http://", 1);
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert_eq!(
        env,
        format!(
            "TAGFENCE_ARM_ENDPOINT={base}\nIDENTITY_ENDPOINT={http}/msi/token\nIDENTITY_HEADER=h\nTAGFENCE_DOWNLOAD_PAGE_URL={base}/download/details.aspx?id=56519\nTAGFENCE_EMULATOR_CA_FILE={}\n",
            ca_file.display()
        )
    );
    let ca = std::fs::read(&ca_file).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let page = client
        .get(format!("{base}/download/details.aspx?id=56519"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&directory).unwrap();
}
