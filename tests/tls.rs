//! tagfence over https to the emulator with its CA given by `--ca-file` (TAGFENCE_CA_FILE)
//! alone, not through `SSL_CERT_FILE` (which replaces the system roots): the production TLS
//! path, with a private CA added to the roots rather than instead of them.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_ca_given_with_ca_file_is_trusted_and_nothing_else_is_needed() {
    let emulator = start(emulator_config(vec![vault("kv-a", &[])])).await;
    assert!(
        emulator.https_url().is_some(),
        "the tests' emulator serves https"
    );
    let id = vault_id("kv-a");
    let run = |ca: Option<String>| {
        let emulator = &emulator;
        let id = id.clone();
        async move {
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tagfence"));
            command.env_clear();
            if let Some(path) = std::env::var_os("PATH") {
                command.env("PATH", path);
            }
            for (key, value) in emulator_env(emulator) {
                if key != "SSL_CERT_FILE" {
                    command.env(key, value);
                }
            }
            if let Some(ca) = ca {
                command.env("TAGFENCE_CA_FILE", ca);
            }
            command
                .args(["apply", "--vault", &id, "--tag", "AzureDevOps", "--dry-run"])
                .output()
                .await
                .expect("tagfence runs")
        }
    };
    // Without the CA the emulator's certificate is not trusted: the call fails.
    let untrusted = run(None).await;
    assert_eq!(untrusted.status.code(), Some(2), "{}", stderr(&untrusted));
    assert!(
        stderr(&untrusted).contains("certificate") || stderr(&untrusted).contains("https"),
        "{}",
        stderr(&untrusted)
    );
    // With it, the dry run reads the vault and plans.
    let trusted = run(Some(test_ca_file().display().to_string())).await;
    assert_eq!(trusted.status.code(), Some(0), "{}", stderr(&trusted));
    assert!(stdout(&trusted).contains("kv-a"), "{}", stdout(&trusted));
    emulator.shutdown().await;
}
