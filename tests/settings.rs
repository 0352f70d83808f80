//! Every setting tagfence reads is deployed and documented.
//!
//! The settings are the `env` names of the command line's arguments (every subcommand, walked
//! through clap), the few variables read directly (listed here), and every `TAGFENCE_*` string
//! literal in `src/` (so that a setting read outside clap cannot be forgotten). Each must be an app
//! setting of the Function App in `infra/`, appear in `docs/configuration.md`, and, for
//! `TAGFENCE_*`, be listed in `local.settings.json.example`. Platform-provided variables are not
//! app settings and are left out; command-line-only ones are documented but not deployed.
//!
//! Only code → infra/docs is asserted: infra and docs may already name settings the code does not
//! read yet.
//!
//! Also: a setting read from the environment is recorded as that variable, not as its flag;
//! and every setting given a bad value is refused as docs/configuration.md says ("When a setting
//! is refused"), one line naming it as given, by the command line (as a variable, a flag and a
//! key of the file) and by `serve`, which stays up and fails every invocation with it.

#[path = "support/rust_source.rs"]
mod rust_source;
mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;
use futures::StreamExt;
use serde_json::json;
use support::host::HostDouble;
use tagfence::config::{Key, Origin};

/// Read with `std::env` or `EnvFilter::try_from_env`, not through clap.
const READ_DIRECTLY: &[&str] = &[
    // the user-assigned identity azure_identity authenticates as
    "AZURE_CLIENT_ID",
    // the Functions host's blob endpoint; the state container's default is derived from it
    "AzureWebJobsStorage__blobServiceUri",
];

/// Set by the platform (Functions host, App Service, a workload-identity environment), never by
/// an app setting.
const PLATFORM: &[&str] = &[
    "FUNCTIONS_CUSTOMHANDLER_PORT",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TENANT_ID",
];

/// Documented, but not app settings of the Function App (and the infra must not set them).
const NOT_DEPLOYED: &[(&str, &str)] = &[
    (
        "TAGFENCE_DRY_RUN",
        "an `apply` flag; `serve` takes dry runs per HTTP request",
    ),
    (
        "TAGFENCE_STATE_DIR",
        "the directory state backend, for the CLI; in Azure the state is in Blob storage",
    ),
    (
        "AzureWebJobsStorage__accountName",
        "the host's other form of identity-based storage; the infra gives AzureWebJobsStorage__blobServiceUri",
    ),
];

/// `TAGFENCE_*` settings `local.settings.json.example` (the Functions host's settings) leaves out.
const NOT_LOCAL_SETTINGS: &[&str] = &["TAGFENCE_DRY_RUN"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn files_with_extension(dir: &Path, extension: &str, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_with_extension(&path, extension, out);
        } else if path.extension().is_some_and(|e| e == extension) {
            out.push(path);
        }
    }
}

/// The `env` names of every argument of `command` and its subcommands.
fn clap_env_names(command: &clap::Command, out: &mut BTreeSet<String>) {
    for arg in command.get_arguments() {
        if let Some(env) = arg.get_env() {
            out.insert(env.to_string_lossy().into_owned());
        }
    }
    for subcommand in command.get_subcommands() {
        clap_env_names(subcommand, out);
    }
}

/// Every `TAGFENCE_[A-Z0-9_]+` in `text`.
fn tagfence_names(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find("TAGFENCE_") {
        let start = from + offset;
        let mut end = start + "TAGFENCE_".len();
        while end < bytes.len()
            && (bytes[end].is_ascii_uppercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        let before = start.checked_sub(1).map(|b| bytes[b]);
        let standalone = !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        if standalone && end > start + "TAGFENCE_".len() {
            names.push(text[start..end].to_owned());
        }
        from = end;
    }
    names
}

/// Whether `word` occurs in `text` with no identifier character on either side.
fn contains_word(text: &str, word: &str) -> bool {
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = text.as_bytes();
    text.match_indices(word).any(|(at, _)| {
        let before = at.checked_sub(1).map(|b| bytes[b]);
        let after = bytes.get(at + word.len()).copied();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// The settings the code reads, each with where it was found.
fn code_settings() -> Vec<(String, String)> {
    let mut clap_names = BTreeSet::new();
    clap_env_names(&tagfence::cli::Cli::command(), &mut clap_names);
    assert!(
        clap_names.contains("TAGFENCE_VAULTS")
            && clap_names.contains("TAGFENCE_RESOURCES")
            && clap_names.contains("TAGFENCE_KINDS")
            && clap_names.contains("TAGFENCE_SCHEDULE"),
        "walking the command line found too little: {clap_names:?}"
    );

    let mut settings: Vec<(String, String)> = Vec::new();
    let mut add = |name: String, origin: String| {
        if !PLATFORM.contains(&name.as_str()) && !settings.iter().any(|(n, _)| *n == name) {
            settings.push((name, origin));
        }
    };
    for name in clap_names {
        add(name, "a command-line argument's env".to_owned());
    }
    for name in READ_DIRECTLY {
        add(
            (*name).to_owned(),
            "read directly (tests/settings.rs)".to_owned(),
        );
    }
    let mut sources = Vec::new();
    files_with_extension(&root().join("src"), "rs", &mut sources);
    assert!(!sources.is_empty(), "no Rust sources under src/");
    for path in sources {
        let relative = path
            .strip_prefix(root())
            .unwrap_or(&path)
            .display()
            .to_string();
        for literal in rust_source::string_literals(&read(&path)) {
            for name in tagfence_names(&literal) {
                add(name, format!("a string literal in {relative}"));
            }
        }
    }
    settings.sort();
    settings
}

/// The keys of the Function App's app settings: the `Microsoft.Web/sites/config` resource named
/// `appsettings` in some `infra/**/*.bicep`.
fn infra_app_settings() -> BTreeSet<String> {
    let mut templates = Vec::new();
    files_with_extension(&root().join("infra"), "bicep", &mut templates);
    for path in templates {
        let text = read(&path);
        let mut from = 0;
        while let Some(offset) = text[from..].find("'Microsoft.Web/sites/config@") {
            let at = from + offset;
            from = at + 1;
            let Some(open) = text[at..].find('{').map(|o| at + o) else {
                continue;
            };
            let block = balanced_block(&text, open);
            if !block.contains("name: 'appsettings'") {
                continue;
            }
            let keys: BTreeSet<String> = block
                .lines()
                .filter_map(|line| {
                    let line = line.trim_start();
                    let (key, _) = line.split_once(':')?;
                    let ok = !key.is_empty()
                        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    ok.then(|| key.to_owned())
                })
                .collect();
            assert!(
                keys.contains("AzureWebJobsStorage__credential"),
                "the app settings in {} look wrong: {keys:?}",
                path.display()
            );
            return keys;
        }
    }
    panic!("no Microsoft.Web/sites/config resource named 'appsettings' in infra/**/*.bicep");
}

/// The text from the `{` at `open` to its matching `}` (comments skipped).
fn balanced_block(text: &str, open: usize) -> &str {
    let mut depth = 0usize;
    let mut in_comment = false;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'\n' => in_comment = false,
            b'/' if !in_comment && bytes.get(i + 1) == Some(&b'/') => in_comment = true,
            b'{' if !in_comment => depth += 1,
            b'}' if !in_comment => {
                depth -= 1;
                if depth == 0 {
                    return &text[open..=i];
                }
            }
            _ => {}
        }
    }
    &text[open..]
}

fn local_settings() -> BTreeSet<String> {
    let path = root().join("local.settings.json.example");
    let json: serde_json::Value = serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    json["Values"]
        .as_object()
        .unwrap_or_else(|| panic!("{} has no Values object", path.display()))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn every_setting_the_code_reads_is_deployed_documented_and_in_the_local_settings() {
    let settings = code_settings();
    let infra = infra_app_settings();
    let docs = read(&root().join("docs/configuration.md"));
    let local = local_settings();

    let mut problems = Vec::new();
    for (name, origin) in &settings {
        let not_deployed = NOT_DEPLOYED.iter().find(|(n, _)| n == name);
        match not_deployed {
            None if !infra.contains(name) => problems.push(format!(
                "{name} ({origin}) is not an app setting of the Function App in infra/ (the 'appsettings' config resource)"
            )),
            Some((_, why)) if infra.contains(name) => problems.push(format!(
                "{name} ({origin}) is set in infra/, but it is not an app setting: {why}"
            )),
            _ => {}
        }
        if !contains_word(&docs, name) {
            problems.push(format!("{name} ({origin}) is not in docs/configuration.md"));
        }
        if name.starts_with("TAGFENCE_")
            && !NOT_LOCAL_SETTINGS.contains(&name.as_str())
            && !local.contains(name)
        {
            problems.push(format!(
                "{name} ({origin}) is not in local.settings.json.example"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "settings out of step ({} checked):\n  {}",
        settings.len(),
        problems.join("\n  ")
    );
}

#[test]
fn the_scan_finds_the_settings_read_outside_clap() {
    let names: Vec<String> = code_settings().into_iter().map(|(n, _)| n).collect();
    for expected in ["TAGFENCE_LOG", "AZURE_CLIENT_ID", "TAGFENCE_SCHEDULE"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    for platform in PLATFORM {
        assert!(
            !names.iter().any(|n| n == platform),
            "{platform} is platform-provided"
        );
    }
}

#[test]
fn string_literals_skip_comments_and_char_literals() {
    let source = r###"
        // "TAGFENCE_IN_A_COMMENT"
        /* "TAGFENCE_IN_A /* nested */ BLOCK" */
        let quote = '"'; let escaped = '\''; let lifetime: &'static str = "TAGFENCE_A";
        let raw = r#"TAGFENCE_B "quoted""#; let bytes = b"TAGFENCE_C"; let raw_bytes = br"TAGFENCE_D";
        let escapes = "a \" TAGFENCE_E \\"; let prefix = "TAGFENCE_"; let other = "XTAGFENCE_F";
        let wide = 'é'; let s = "TAGFENCE_G";
    "###;
    let names: Vec<String> = rust_source::string_literals(source)
        .iter()
        .flat_map(|l| tagfence_names(l))
        .collect();
    assert_eq!(
        names,
        [
            "TAGFENCE_A",
            "TAGFENCE_B",
            "TAGFENCE_C",
            "TAGFENCE_D",
            "TAGFENCE_E",
            "TAGFENCE_G"
        ]
    );
    assert!(contains_word("`TAGFENCE_FIT` |", "TAGFENCE_FIT"));
    assert!(!contains_word("TAGFENCE_FITS", "TAGFENCE_FIT"));
}

#[test]
fn a_setting_records_whether_the_environment_or_a_flag_gave_it() {
    // The only test of this binary that parses a command line, so the variable reaches no other.
    std::env::set_var("TAGFENCE_MAX_RULES", "5");
    let parsed = tagfence::cli::Invocation::try_from_args(["tagfence", "apply", "--tag", "X"]);
    std::env::remove_var("TAGFENCE_MAX_RULES");
    let origins = parsed.expect("a valid command line").origins();
    assert_eq!(
        origins.get(Key::MaxRules),
        Some(&Origin::Env("TAGFENCE_MAX_RULES".to_owned()))
    );
    assert_eq!(
        origins.get(Key::Tags),
        Some(&Origin::Flag("--tag".to_owned()))
    );
    assert_eq!(origins.get(Key::Concurrency), None);
}

/// A vault every refusal below is given with, with a tag: otherwise valid settings.
const VAULT: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-prod";

/// The prefix of each configuration problem the command line prints.
const PREFIX: &str = "tagfence: error: reading the configuration: ";

/// One row of docs/configuration.md's "When a setting is refused": what is given (a variable
/// `NAME=value` or a flag `--flag value`) and the line tagfence says.
#[derive(Debug, Clone)]
struct Refusal {
    /// The variable, or the flag.
    name: String,
    value: String,
    is_flag: bool,
    says: String,
}

impl Refusal {
    /// The setting the row gives.
    fn key(&self) -> Key {
        *Key::ALL
            .iter()
            .find(|k| {
                if self.is_flag {
                    k.flag() == self.name
                } else {
                    k.env() == self.name
                }
            })
            .unwrap_or_else(|| panic!("{} is no setting's", self.name))
    }
}

fn refusals() -> Vec<Refusal> {
    let docs = read(&root().join("docs/configuration.md"));
    let section = docs
        .split("## When a setting is refused")
        .nth(1)
        .expect("docs/configuration.md has a section \"When a setting is refused\"");
    let section = section.split("\n## ").next().unwrap_or(section);
    let rows: Vec<Refusal> = section
        .lines()
        .filter_map(|line| {
            let cells = line.strip_prefix("| `")?.strip_suffix("` |")?;
            let (given, says) = cells.split_once("` | `")?;
            let (name, value, is_flag) = match given.split_once(' ') {
                Some((flag, value)) if flag.starts_with("--") => (flag, value, true),
                _ => {
                    let (name, value) = given.split_once('=')?;
                    (name, value, false)
                }
            };
            Some(Refusal {
                name: name.to_owned(),
                value: value.to_owned(),
                is_flag,
                says: says.to_owned(),
            })
        })
        .collect();
    assert!(rows.len() > 20, "too few rows read: {rows:?}");
    rows
}

/// The baseline environment with `refusal`'s variable (none for a flag) in place of its own.
fn environment(refusal: &Refusal, as_variable: bool) -> Vec<(String, String)> {
    let mut env = vec![
        ("TAGFENCE_VAULTS".to_owned(), VAULT.to_owned()),
        ("TAGFENCE_TAGS".to_owned(), "AzureDevOps".to_owned()),
    ];
    env.retain(|(name, _)| *name != refusal.key().env());
    if as_variable {
        env.push((refusal.name.clone(), refusal.value.clone()));
    }
    env
}

/// Runs `tagfence apply` with `args` and only `env` (and PATH), from the repository root.
fn apply(env: &[(String, String)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tagfence"));
    command
        .arg("apply")
        .args(args)
        .current_dir(root())
        .env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command.output().expect("tagfence runs")
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_setting_has_a_documented_refusal() {
    let given: BTreeSet<&str> = Key::ALL.iter().map(|k| k.env()).collect();
    let rows = refusals();
    let documented: BTreeSet<String> = rows
        .iter()
        .filter(|r| !r.is_flag)
        .map(|r| r.name.clone())
        .collect();
    let missing: Vec<&&str> = given
        .iter()
        .filter(|name| !documented.contains(**name))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md shows no refusal of {missing:?}"
    );
}

#[test]
fn each_refusal_is_one_line_naming_the_setting_as_given_by_variable_flag_or_file() {
    let scratch = std::env::temp_dir().join(format!("tagfence-settings-{}", std::process::id()));
    fs::create_dir_all(&scratch).unwrap();
    for refusal in refusals() {
        let key = refusal.key();
        // As the documentation gives it.
        let args: Vec<&str> = if refusal.is_flag {
            vec![refusal.name.as_str(), refusal.value.as_str()]
        } else {
            Vec::new()
        };
        let output = apply(&environment(&refusal, !refusal.is_flag), &args);
        assert_eq!(output.status.code(), Some(2), "{refusal:?}");
        assert_eq!(
            stderr_lines(&output),
            [format!("{PREFIX}{}", refusal.says)],
            "{refusal:?}"
        );
        assert!(output.stdout.is_empty(), "{refusal:?}");
        // As a flag: named as the flag.
        let switch = format!("{}={}", key.flag(), refusal.value);
        let args = if key.is_switch() {
            vec![switch.as_str()]
        } else {
            vec![key.flag(), refusal.value.as_str()]
        };
        let output = apply(&environment(&refusal, false), &args);
        let lines = stderr_lines(&output);
        assert_eq!(output.status.code(), Some(2), "{refusal:?}");
        assert_eq!(lines.len(), 1, "{refusal:?}: {lines:?}");
        let flag = format!("{PREFIX}{}", key.flag());
        assert!(lines[0].starts_with(&flag), "{refusal:?}: {lines:?}");
        // As a key of the file, where the file has it: named by the file, the table and the key.
        if key.in_file() {
            let path = scratch.join(format!("{}.toml", key.name()));
            let value = json!([refusal.value]);
            let setting = if key.is_list() {
                format!("{} = {value}", key.name())
            } else {
                format!("{} = {}", key.name(), json!(refusal.value))
            };
            let text = match key {
                Key::Vaults | Key::Resources => {
                    format!("{setting}\n[defaults]\ntags = [\"AzureDevOps\"]\n")
                }
                Key::Tags => format!("vaults = [\"{VAULT}\"]\n[defaults]\n{setting}\n"),
                _ => format!(
                    "vaults = [\"{VAULT}\"]\n[defaults]\ntags = [\"AzureDevOps\"]\n{setting}\n"
                ),
            };
            fs::write(&path, text).unwrap();
            let output = apply(&[], &["--config", path.to_str().unwrap()]);
            let lines = stderr_lines(&output);
            let table = if matches!(key, Key::Vaults | Key::Resources) {
                ""
            } else {
                "[defaults] "
            };
            let named = format!("{PREFIX}{}: {table}{}", path.display(), key.name());
            assert_eq!(output.status.code(), Some(2), "{refusal:?}");
            assert!(
                lines.len() == 1 && lines[0].starts_with(&named),
                "{refusal:?}: {lines:?}"
            );
        }
    }
    fs::remove_dir_all(&scratch).unwrap();
}

/// `serve` with one bad setting: it starts, answers every invocation with the problem (kind
/// `not_configured`), lists it in `GET /api/status`, logs it once, and is still up after.
async fn serve_with(refusal: Refusal) {
    let mut host = HostDouble::start(&environment(&refusal, true)).await;
    let timer = host.invoke_timer(false).await;
    assert_eq!(timer.status, 500, "{refusal:?}: {}", timer.body);
    assert_eq!(timer.body["kind"], "not_configured", "{refusal:?}");
    assert_eq!(timer.body["error"], refusal.says.as_str(), "{refusal:?}");
    let (status, body) = host.invoke_http("POST", "sync", &[]).await.http_response();
    assert_eq!(status, 500, "{refusal:?}: {body}");
    assert_eq!(body["kind"], "not_configured", "{refusal:?}");
    let (status, body) = host.invoke_http("GET", "status", &[]).await.http_response();
    assert_eq!(status, 200, "{refusal:?}: {body}");
    assert_eq!(
        body["configuration"]["problems"],
        json!([refusal.says]),
        "{refusal:?}"
    );
    let logged: Vec<String> = host
        .stdout_lines()
        .into_iter()
        .filter(|line| line.contains("invalid configuration"))
        .collect();
    assert_eq!(logged.len(), 1, "{refusal:?}: {logged:?}");
    let line: serde_json::Value = serde_json::from_str(&logged[0]).unwrap();
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["fields"]["count"], 1, "{line}");
    assert!(host.alive(), "{refusal:?}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stays_up_with_each_bad_setting_and_every_invocation_says_why() {
    let rows: Vec<Refusal> = refusals().into_iter().filter(|r| !r.is_flag).collect();
    futures::stream::iter(rows)
        .map(serve_with)
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
}
