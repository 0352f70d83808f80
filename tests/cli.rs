//! End-to-end tests of the `tagfence` binary on the real Service Tags files: the plans people
//! and machines read (golden files), exit codes, and error messages.
//!
//! Golden files live in `tests/golden/`. After an intended change of output, regenerate them
//! with `UPDATE_GOLDEN=1 cargo test --test cli` and review the diff.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const US_REGIONS: [&str; 9] = [
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

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn service_tags(change_number: u32) -> String {
    repo(&format!(
        "tests/fixtures/ServiceTags_Public.changeNumber-{change_number}.json.gz"
    ))
    .display()
    .to_string()
}

/// Runs `tagfence` with `args`, from the repository root.
fn tagfence(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tagfence"))
        .args(args)
        .current_dir(repo(""))
        .output()
        .expect("tagfence runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8")
}

/// Compares `actual` with the golden file `name`, or rewrites it under `UPDATE_GOLDEN=1`.
fn golden(name: &str, actual: &str) {
    let path = repo("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}; run with UPDATE_GOLDEN=1",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "output differs from {} at line {}\n--- expected\n{}\n--- got\n{}\n(run with UPDATE_GOLDEN=1 to accept)",
            path.display(),
            first + 1,
            expected.lines().skip(first).take(5).collect::<Vec<_>>().join("\n"),
            actual.lines().skip(first).take(5).collect::<Vec<_>>().join("\n"),
        );
    }
}

const FIXTURE_VAULT: &str = "tests/fixtures/vault-kv-prod.json";
const FIXTURE_LAST_APPLIED: &str = "tests/fixtures/last-applied-kv-prod.json";

fn plan_args<'a>(cn: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["plan", "--service-tags", cn];
    args.extend_from_slice(extra);
    args
}

#[test]
fn azure_devops_gives_its_24_ipv4_prefixes() {
    let st = service_tags(365);
    let out = tagfence(&plan_args(
        &st,
        &["--tag", "AzureDevOps", "--output", "json"],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["desired"]["count"], 24);
    assert_eq!(plan["desired"]["dropped"]["ipv6"], 2);
    assert_eq!(plan["add"].as_array().unwrap().len(), 24);
    assert_eq!(plan["format_version"], 1);
    golden("plan-azuredevops-empty-vault.json", &stdout(&out));
}

#[test]
fn a_plan_against_a_live_vault_adds_removes_and_keeps_manual_rules() {
    let st = service_tags(365);
    let args = plan_args(
        &st,
        &[
            "--tag",
            "AzureDevOps",
            "--static-rule",
            "52.1.2.3",
            "--live",
            FIXTURE_VAULT,
            "--last-applied",
            FIXTURE_LAST_APPLIED,
        ],
    );
    let out = tagfence(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    golden("plan-kv-prod.txt", &stdout(&out));

    let mut json_args = args.clone();
    json_args.extend(["--output", "json"]);
    let out = tagfence(&json_args);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["add"].as_array().unwrap().len(), 5);
    assert_eq!(plan["remove"], serde_json::json!(["13.107.6.0/24"]));
    assert_eq!(plan["unmanaged"], serde_json::json!(["52.174.10.20/32"]));
    assert_eq!(plan["unchanged"], 20);
    golden("plan-kv-prod.json", &stdout(&out));

    // --exit-code: 1 when there are changes.
    json_args.push("--exit-code");
    assert_eq!(tagfence(&json_args).status.code(), Some(1));
}

#[test]
fn a_vault_in_sync_plans_no_changes() {
    let st = service_tags(365);
    let args = plan_args(
        &st,
        &[
            "--tag",
            "AzureDevOps",
            "--static-rule",
            "52.1.2.3",
            "--live",
            "tests/fixtures/vault-kv-insync.json",
            "--exit-code",
        ],
    );
    let out = tagfence(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("\nNo changes. "));
    golden("plan-kv-insync.txt", &stdout(&out));
}

#[test]
fn without_last_applied_nothing_is_removed() {
    let st = service_tags(365);
    let out = tagfence(&plan_args(
        &st,
        &[
            "--tag",
            "AzureDevOps",
            "--live",
            FIXTURE_VAULT,
            "--output",
            "json",
        ],
    ));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["remove"], serde_json::json!([]));
    assert_eq!(
        plan["unmanaged"],
        serde_json::json!(["13.107.6.0/24", "52.174.10.20/32"])
    );
    // …unless asked to prune, and then the removal guard applies to the whole vault.
    let out = tagfence(&plan_args(
        &st,
        &[
            "--tag",
            "AzureDevOps",
            "--live",
            FIXTURE_VAULT,
            "--prune",
            "--output",
            "json",
        ],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["remove"],
        serde_json::json!(["13.107.6.0/24", "52.174.10.20/32"])
    );
}

#[test]
fn the_nine_us_regions_do_not_fit_exactly_and_do_summarized() {
    let st = service_tags(365);
    let mut args = plan_args(&st, &[]);
    for region in US_REGIONS {
        args.extend(["--tag", region]);
    }
    let out = tagfence(&args);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "tagfence: error: planning the firewall change: the selection needs 2,691 rules but only 1,000 of the firewall's 1,000 are free; select fewer tags or use --fit summarize\n"
    );
    assert!(out.stdout.is_empty());

    args.extend([
        "--fit",
        "summarize",
        "--envelope",
        "AzureCloud",
        "--output",
        "json",
    ]);
    let out = tagfence(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["desired"]["count"], 1000);
    let extra = plan["desired"]["extra_addresses"].as_u64().unwrap();
    assert!(
        extra > 0,
        "a summarized fit of 2,691 rules into 1,000 admits extra addresses"
    );

    // A cap on the extra addresses below what the optimum needs is refused.
    let cap = (extra - 1).to_string();
    args.extend(["--max-extra-addresses", &cap]);
    let out = tagfence(&args);
    assert_eq!(out.status.code(), Some(2));
    // The count as people read it (separators), the setting as it was given.
    assert!(stderr(&out).contains(&format!(
        "the fit admits {} extra addresses, more than --max-extra-addresses {cap}",
        tagfence::core::text::thousands(extra)
    )));
}

#[test]
fn a_summarized_plan_shows_what_each_rule_admits() {
    let st = service_tags(365);
    let out = tagfence(&plan_args(
        &st,
        &[
            "--tag",
            "AzureDevOps",
            "--fit",
            "summarize",
            "--max-rules",
            "12",
        ],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    golden("plan-azuredevops-summarized-12.txt", &stdout(&out));
}

#[test]
fn errors_name_what_was_wrong_and_exit_2() {
    let st = service_tags(365);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--tag", "AzureDevop"],
            "tagfence: error: planning the firewall change: unknown service tag 'AzureDevop' (did you mean one of: 'AzureDevOps', 'AzureDevOps.EastUS', 'AzureDevOps.WestUS'?)\n",
        ),
        (
            &["--tag", "AzureDevOps", "--static-rule", "192.168.10.4"],
            "tagfence: error: reading the configuration: --static-rule 192.168.10.4: overlaps the reserved range 192.168.0.0/16 (private network, RFC 1918), which Key Vault and Storage refuse; expected a public address\n",
        ),
        (
            &["--tag", "AzureDevOps", "--static-rule", "52.1.2.3/24"],
            "tagfence: error: reading the configuration: --static-rule 52.1.2.3/24: has host bits set; expected the prefix 52.1.2.0/24\n",
        ),
        (
            &["--tag", "AzureDevOps", "--max-rules", "2000", "--envelope", "AzureCloud"],
            "tagfence: error: reading the configuration: --max-rules 2000: expected a whole number from 1 to 1000 (a firewall's IP rules; each kind's own limit caps it: key vault 1000, storage account 400, container registry 100)\n\
             tagfence: error: reading the configuration: --envelope AzureCloud: only used by a summarized fit, and the fit is exact by default; give --fit summarize too, or leave it out\n",
        ),
        (
            &["--tag", "AzureDevOps", "--live", "tests/fixtures/does-not-exist.json"],
            "tagfence: error: reading the resource from tests/fixtures/does-not-exist.json: No such file or directory (os error 2)\n",
        ),
        (
            &["--tag", "AzureDevOps", "--max-rules", "10"],
            "tagfence: error: planning the firewall change: the selection needs 24 rules but only 10 of the firewall's 10 are free; select fewer tags or use --fit summarize\n",
        ),
        (&[], "tagfence: error: planning the firewall change: nothing selected: give at least one --tag or --static-rule\n"),
    ];
    for (extra, expected) in cases {
        let out = tagfence(&plan_args(&st, extra));
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert_eq!(stderr(&out), *expected, "{extra:?}");
        assert!(out.stdout.is_empty(), "{extra:?}");
    }
}

#[test]
fn a_broken_service_tags_file_is_refused_with_its_position() {
    let dir = std::env::temp_dir().join(format!("tagfence-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let truncated = dir.join("truncated.json");
    std::fs::write(&truncated, "{\n  \"changeNumber\": 365,\n  \"cloud\": \"Public\",\n  \"values\": [\n    {\"name\": \"AzureDevOps\"").unwrap();
    let out = tagfence(&[
        "plan",
        "--service-tags",
        truncated.to_str().unwrap(),
        "--tag",
        "AzureDevOps",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "tagfence: error: reading service tags from {}: invalid JSON in the service tags document at line 5, column 27: unexpected end of input in an object\n",
            truncated.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usage_errors_and_wrong_values_exit_2() {
    let out = tagfence(&["plan", "--tag", "AzureDevOps"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--service-tags <FILE>"),
        "{}",
        stderr(&out)
    );
    // A wrong value is the configuration's problem, named as given, before any file is read.
    let out = tagfence(&["plan", "--service-tags", "x", "--fit", "lossy"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "tagfence: error: reading the configuration: --fit lossy: expected exact or summarize\n"
    );
}

/// A Service Tags document of `tags` tags (AzureDevOps and `AzureCloud.region<n>`), of `cloud`.
fn small_document(dir: &Path, name: &str, cloud: &str, tags: usize) -> String {
    let values: Vec<serde_json::Value> = (0..tags)
        .map(|n| {
            let name = if n == 0 { "AzureDevOps".to_owned() } else { format!("AzureCloud.region{n}") };
            serde_json::json!({"name": name, "id": name, "properties": {"changeNumber": 1, "region": "", "systemService": "", "addressPrefixes": [format!("52.1.{n}.0/24")]}})
        })
        .collect();
    let doc = serde_json::json!({"changeNumber": 9, "cloud": cloud, "values": values});
    let path = dir.join(name);
    std::fs::write(&path, doc.to_string()).unwrap();
    path.display().to_string()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tagfence-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn plan_and_tags_refuse_a_partial_document_or_one_of_another_cloud_as_apply_does() {
    let dir = scratch("documents");
    let one = small_document(&dir, "one.json", "Public", 1);
    let government = small_document(&dir, "gov.json", "AzureGovernment", 3);
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["plan", "--service-tags", &one, "--tag", "AzureDevOps"], format!("tagfence: error: checking the service tags: the service tags from {one} list only 1 tag, fewer than the 1,000 a complete Public document has; refusing a truncated or partial document; give --min-service-tags 1 to read it anyway\n")),
        (vec!["tags", "--service-tags", &one], format!("tagfence: error: checking the service tags: the service tags from {one} list only 1 tag, fewer than the 1,000 a complete Public document has; refusing a truncated or partial document; give --min-service-tags 1 to read it anyway\n")),
        (vec!["plan", "--service-tags", &government, "--tag", "AzureDevOps", "--min-service-tags", "1"], format!("tagfence: error: checking the service tags: the service tags from {government} are for the AzureGovernment cloud, not Public; give --cloud AzureUSGovernment to read it\n")),
        (vec!["tags", "--service-tags", &government, "--min-service-tags", "0"], "tagfence: error: reading the configuration: --min-service-tags 0: expected a whole number of tags, at least 1\n".to_owned()),
    ];
    for (args, expected) in cases {
        let out = tagfence(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr(&out), expected, "{args:?}");
    }
    let out = tagfence(&[
        "tags",
        "--service-tags",
        &government,
        "--cloud",
        "AzureUSGovernment",
        "--min-service-tags",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tagfence(&[
        "plan",
        "--service-tags",
        &one,
        "--tag",
        "AzureDevOps",
        "--min-service-tags",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tags_takes_a_profile_wherever_a_tag_name_goes() {
    let st = service_tags(365);
    let out = tagfence(&[
        "tags",
        "--service-tags",
        &st,
        "--tag",
        "hosted-agents:uk",
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = listing.to_string();
    for tag in ["AzureCloud.uksouth", "AzureCloud.ukwest", "AzureDevOps"] {
        assert!(text.contains(tag), "{tag} missing from {text}");
    }
    let out = tagfence(&["tags", "--service-tags", &st, "--tag", "hosted-agents:mars"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("tagfence: error: reading --tag: unknown geography 'mars'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_last_applied_entry_or_live_document_is_named_as_such() {
    let st = service_tags(365);
    let dir = scratch("inputs");
    let last_applied = dir.join("last-applied.json");
    std::fs::write(&last_applied, r#"["52.1.2.3/32", "abc"]"#).unwrap();
    let live = dir.join("live.json");
    std::fs::write(&live, "[1, 2]").unwrap();
    let (last_applied, live) = (
        last_applied.display().to_string(),
        live.display().to_string(),
    );
    let out = tagfence(&plan_args(
        &st,
        &["--tag", "AzureDevOps", "--last-applied", &last_applied],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!("tagfence: error: reading the last-applied rules from {last_applied}: entry 2 of this file is not a rule tagfence applies: 'abc' is not an IPv4 address or CIDR prefix\n")
    );
    let out = tagfence(&plan_args(
        &st,
        &["--tag", "AzureDevOps", "--last-applied", FIXTURE_VAULT],
    ));
    assert_eq!(
        stderr(&out),
        format!("tagfence: error: reading the last-applied rules from {FIXTURE_VAULT}: the document is an object (a resource document goes to --live); expected a JSON array of CIDR strings, such as [\"52.1.2.3/32\", \"20.37.158.0/23\"]\n")
    );
    let out = tagfence(&plan_args(&st, &["--tag", "AzureDevOps", "--live", &live]));
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert!(
        text.contains("expected one resource object as ARM's GET returns it: {\"name\""),
        "{text}"
    );
    assert!(!text.contains("VaultProperties"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn status_refuses_a_state_directory_that_does_not_exist() {
    let out = tagfence(&["status", "--state-dir", "./typo"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "tagfence: error: reading the configuration: --state-dir ./typo: no such directory; status only reads state (`tagfence apply --state-dir ./typo` creates it on its first run)\n"
    );
    assert!(out.stdout.is_empty());
    // apply's other flags are accepted, so that one command line serves both, and named.
    let out = tagfence(&["status", "--state-dir", "./typo", "--tag", "AzureDevOps"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("tagfence: warning: status does not use --tag; ignored\n"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn each_command_shows_only_its_own_options() {
    let help = |command: &str| stdout(&tagfence(&[command, "--help"]));
    let status = help("status");
    for absent in [
        "--tag",
        "--static-rule",
        "--max-rules",
        "--fit",
        "--prune",
        "--source",
        "--grace-days",
        "--allow-older",
        "--concurrency",
        "--notify-url",
        "--min-service-tags",
    ] {
        assert!(
            !status.contains(absent),
            "status --help shows {absent}:\n{status}"
        );
    }
    for present in [
        "--resource",
        "--vault",
        "--kind",
        "--state-dir",
        "--state-url",
        "--credential",
        "--cloud",
        "--output",
    ] {
        assert!(status.contains(present), "status --help lacks {present}");
    }
    for command in ["plan", "tags"] {
        let text = help(command);
        assert!(
            !text.contains("--vault")
                && !text.contains("--resource")
                && !text.contains("--kind")
                && !text.contains("--state-dir"),
            "{command} --help:\n{text}"
        );
        assert!(
            text.contains("--cloud") && text.contains("--min-service-tags"),
            "{command} --help:\n{text}"
        );
    }
    let apply = help("apply");
    assert!(
        apply.contains("--tag") && apply.contains("--dry-run") && apply.contains("--state-dir")
    );
}

#[test]
fn tags_lists_the_document_and_one_tag() {
    let st = service_tags(363);
    let out = tagfence(&["tags", "--service-tags", &st]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("Service Tags Public, change number 363: 2,967 tags\n"));
    assert_eq!(text.lines().count(), 2967 + 3);
    let devops_row = text
        .lines()
        .find(|l| l.starts_with("AzureDevOps "))
        .unwrap();
    assert!(devops_row.ends_with("   7     24      2"), "{devops_row}");

    let out = tagfence(&["tags", "--service-tags", &st, "--tag", "azuredevops"]);
    golden("tags-azuredevops.txt", &stdout(&out));
    let out = tagfence(&[
        "tags",
        "--service-tags",
        &st,
        "--tag",
        "AzureDevOps",
        "--output",
        "json",
    ]);
    golden("tags-azuredevops.json", &stdout(&out));

    let out = tagfence(&["tags", "--service-tags", &st, "--tag", "NoSuchTag"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "tagfence: error: unknown service tag 'NoSuchTag'\n"
    );
}

#[test]
fn stdin_is_read_with_a_dash() {
    let gz = std::fs::read(service_tags(364)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tagfence"))
        .args([
            "plan",
            "--service-tags",
            "-",
            "--tag",
            "AzureDevOps",
            "--output",
            "json",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&gz).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["source"]["change_number"], 364);
}

/// Writes `document` (a firewalled resource as ARM's GET returns it) to `name` in `dir`.
fn resource_document(dir: &Path, name: &str, document: serde_json::Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, document.to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn plan_live_reads_any_kind_by_its_type_and_caps_the_rules_at_its_limit() {
    let st = service_tags(365);
    let dir = scratch("kinds");
    let storage = resource_document(
        &dir,
        "storage.json",
        serde_json::json!({
            "id": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sta1",
            "name": "sta1",
            "type": "Microsoft.Storage/storageAccounts",
            "location": "West Europe",
            "properties": {"networkAcls": {"defaultAction": "Deny", "bypass": "AzureServices", "virtualNetworkRules": [], "ipRules": [{"value": "52.1.2.3", "action": "Allow"}]}}
        }),
    );
    let registry = resource_document(
        &dir,
        "registry.json",
        serde_json::json!({
            "id": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acr0001",
            "name": "acr0001",
            "type": "Microsoft.ContainerRegistry/registries",
            "sku": {"name": "Premium"},
            "properties": {"networkRuleSet": {"defaultAction": "Deny", "ipRules": [{"action": "Allow", "value": "52.1.2.3"}]}}
        }),
    );
    let web = resource_document(
        &dir,
        "web.json",
        serde_json::json!({"name": "app", "type": "Microsoft.Web/sites", "properties": {}}),
    );
    // The registry's rule is read from its networkRuleSet, and is the static rule's.
    let out = tagfence(&plan_args(
        &st,
        &[
            "--static-rule",
            "52.1.2.3",
            "--live",
            &registry,
            "--output",
            "json",
        ],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["unchanged"], 1, "{plan}");
    assert_eq!(plan["vault"], "acr0001", "{plan}");
    assert_eq!(plan["kind"], "container_registry", "{plan}");
    // A storage account is told of a selected tag of its own region, as apply tells it.
    let out = tagfence(&plan_args(
        &st,
        &["--tag", "ApiManagement.WestEurope", "--live", &storage],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "tagfence: warning: selected tag ApiManagement.WestEurope is in West Europe, the storage account's own region: requests from there reach it from private addresses, which IP rules cannot allow (use a virtual network rule or a private endpoint for them)\n"
    );
    // A selection of a few hundred rules fits a storage account (400) and a vault (1000), not a
    // registry (100), whatever --max-rules says.
    let backup = [
        "--tag",
        "AzureBackup",
        "--max-rules",
        "1000",
        "--output",
        "json",
    ];
    let vault = FIXTURE_VAULT.to_owned();
    for (live, limit) in [(&storage, 400), (&registry, 100), (&vault, 1000)] {
        let mut args = backup.to_vec();
        args.extend(["--live", live.as_str()]);
        let out = tagfence(&plan_args(&st, &args));
        if limit == 100 {
            assert_eq!(out.status.code(), Some(2), "{live}");
            assert!(
                stderr(&out).contains(" of the firewall's 100 are free"),
                "{}",
                stderr(&out)
            );
        } else {
            assert!(out.status.success(), "{live}: {}", stderr(&out));
            let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(plan["max_rules"], limit, "{live}");
        }
    }
    // A type tagfence does not manage is named, with the ones it does.
    let out = tagfence(&plan_args(&st, &["--tag", "AzureDevOps", "--live", &web]));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!("tagfence: error: reading the resource from {web} (expected one resource object as ARM's GET returns it: {{\"name\": …, \"type\": …, \"properties\": {{\"networkAcls\": {{\"defaultAction\": …, \"ipRules\": [{{\"value\": \"52.1.2.3/32\"}}], …}}}}}}, the rule set being properties.networkAcls for a key vault or storage account and properties.networkRuleSet for a container registry): its type is Microsoft.Web/sites, which tagfence does not manage; expected one of Microsoft.KeyVault/vaults, Microsoft.Storage/storageAccounts, Microsoft.ContainerRegistry/registries\n")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn apply_refuses_bad_resources_and_kinds_naming_them_as_given() {
    let out = Command::new(env!("CARGO_BIN_EXE_tagfence"))
        .args([
            "apply",
            "--resource",
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Sql/servers/db",
            "--tag",
            "AzureDevOps",
        ])
        .env("TAGFENCE_KINDS", "key_vault,cosmos")
        .env_remove("TAGFENCE_VAULTS")
        .env_remove("TAGFENCE_RESOURCES")
        .current_dir(repo(""))
        .output()
        .expect("tagfence runs");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "tagfence: error: reading the configuration: --resource /subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Sql/servers/db: not a resource id tagfence manages (its type Microsoft.Sql/servers is not one tagfence manages); expected /subscriptions/<GUID>/resourceGroups/<group>/providers/<type>/<name>, <type> being Microsoft.KeyVault/vaults, Microsoft.Storage/storageAccounts or Microsoft.ContainerRegistry/registries\n\
         tagfence: error: reading the configuration: TAGFENCE_KINDS entry 'cosmos': not a kind tagfence manages; expected key_vault, storage_account or container_registry (any case; - for _)\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn grant_needs_one_resource_by_either_name() {
    let vault = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-a";
    let storage = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sta1";
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tagfence"))
            .args(args)
            .env_remove("TAGFENCE_VAULTS")
            .env_remove("TAGFENCE_RESOURCES")
            .current_dir(repo(""))
            .output()
            .expect("tagfence runs")
    };
    let out = run(&["grant", "--ip", "52.1.2.3"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "tagfence: error: grant needs the resource: give --resource <RESOURCE_ID> (or --vault <RESOURCE_ID>)\n"
    );
    let out = run(&[
        "grant",
        "--ip",
        "52.1.2.3",
        "--resource",
        storage,
        "--vault",
        vault,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "tagfence: error: grant names one resource; got 2 (give exactly one --resource <RESOURCE_ID> or --vault <RESOURCE_ID>)\n"
    );
    let out = run(&["revoke", "--ip", "52.1.2.3"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "tagfence: error: revoke --ip needs the resource: give --resource <RESOURCE_ID> or --vault <RESOURCE_ID> (or revoke --grant <ID>)\n"
    );
}
