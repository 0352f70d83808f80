//! State, end to end, through both backends with the real binary as a pipeline or the
//! Functions app runs it: a directory (`TAGFENCE_STATE_DIR`, the CLI) and Blob storage on
//! Azurite over HTTPS with managed-identity tokens from the emulator (`TAGFENCE_STATE_URL`, the
//! production code path). Every scenario runs on both; each test has its own emulator, its own
//! Azurite and its own documents.
//!
//! The documents are small synthetic ones (one selected tag whose ranges change between
//! change numbers), so each scenario says exactly which range moved.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use support::azurite::Azurite;
use support::*;
use tagfence::config::{Config, SelectionSettings, Settings};
use tagfence::reconcile::{ErrorKind, Outcome, ReconcileError, StateStep};
use tagfence::run::{RunRequest, Runner};
use tagfence::state::blob::BlobStore;
use tagfence::state::dir::DirStore;
use tagfence::state::{Lock, State, StateError, Store};
use tagfence_emulator::{Emulator, Fault, FaultKind, Route};

const TAG: &str = "AzureDevOps";
const VAULT: &str = "kv-prod";
/// A rule a person put on the vault before tagfence came.
const MANUAL: &str = "52.174.10.20/32";
/// A rule a person adds between two runs.
const PERSON: &str = "52.174.99.1/32";

/// The tag's ranges in its first version (tag change 1, document 100).
const V1: [&str; 6] = [
    "20.37.158.0/23",
    "20.37.194.0/24",
    "20.39.13.0/26",
    "20.41.6.0/23",
    "20.41.194.0/24",
    "20.42.5.0/24",
];
/// Retired in the second version (tag change 2, document 101)…
const RETIRED: &str = "20.42.5.0/24";
/// …which adds this one.
const NEW: &str = "20.42.134.0/23";

fn v2() -> Vec<&'static str> {
    let mut v2: Vec<&str> = V1.iter().copied().filter(|r| *r != RETIRED).collect();
    v2.push(NEW);
    v2
}

fn with(rules: &[&str], more: &[&str]) -> Vec<String> {
    let all: Vec<&str> = rules.iter().chain(more).copied().collect();
    sorted(&all)
}

enum Backend {
    Dir(PathBuf),
    Blob { azurite: Azurite, container: String },
}

struct Scenario {
    emulator: Emulator,
    backend: Backend,
    /// Documents and state directories live here.
    work: PathBuf,
    generation: AtomicUsize,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Scenario {
    async fn new(blob: bool) -> Scenario {
        let emulator = start(emulator_config(vec![vault(VAULT, &[MANUAL])])).await;
        let work = std::env::temp_dir().join(format!(
            "tagfence-state-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let backend = if blob {
            Backend::Blob {
                azurite: tokio::task::spawn_blocking(Azurite::start).await.unwrap(),
                container: "tagfence".to_owned(),
            }
        } else {
            Backend::Dir(work.join("state-0"))
        };
        Scenario {
            emulator,
            backend,
            work,
            generation: AtomicUsize::new(0),
        }
    }

    /// Where the binary finds the state.
    fn state_env(&self) -> Vec<(String, String)> {
        match &self.backend {
            Backend::Dir(dir) => vec![("TAGFENCE_STATE_DIR".into(), dir.display().to_string())],
            Backend::Blob { azurite, container } => vec![
                (
                    "TAGFENCE_STATE_URL".into(),
                    azurite.container_url(container),
                ),
                (
                    "TAGFENCE_STATE_CA_FILE".into(),
                    azurite.ca_file.display().to_string(),
                ),
            ],
        }
    }

    /// The same state, opened by the test to look inside.
    fn state(&self) -> State {
        match &self.backend {
            Backend::Dir(dir) => State::new(Arc::new(DirStore::new(dir))),
            Backend::Blob { azurite, container } => {
                let ca = std::fs::read(&azurite.ca_file).unwrap();
                let store = BlobStore::new(
                    azurite.container_url(container).parse().unwrap(),
                    scoped_credential(&self.emulator),
                    &Default::default(),
                    Some(&ca),
                )
                .unwrap();
                State::new(Arc::new(store))
            }
        }
    }

    /// Loses the whole state: a new directory, or a new container.
    fn lose_state(&mut self) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        match &mut self.backend {
            Backend::Dir(dir) => *dir = self.work.join(format!("state-{generation}")),
            Backend::Blob { container, .. } => *container = format!("tagfence-{generation}"),
        }
    }

    /// A Public-cloud document with the selected tag at `tag_change` holding `prefixes`, and
    /// an unselected tag beside it.
    fn document(&self, change_number: u64, tag_change: u64, prefixes: &[&str]) -> PathBuf {
        let doc = json!({
            "changeNumber": change_number,
            "cloud": "Public",
            "values": [
                {"name": TAG, "id": TAG, "properties": {
                    "changeNumber": tag_change, "region": "", "systemService": "AzureDevOps",
                    "addressPrefixes": prefixes}},
                {"name": "AzureCloud.westeurope", "id": "AzureCloud.westeurope", "properties": {
                    "changeNumber": 160, "region": "westeurope", "systemService": "",
                    "addressPrefixes": ["4.175.0.0/16"]}}
            ]
        });
        let path = self
            .work
            .join(format!("ServiceTags_Public_{change_number}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        path
    }

    fn v1(&self) -> PathBuf {
        self.document(100, 1, &V1)
    }

    fn v2(&self) -> PathBuf {
        self.document(101, 2, &v2())
    }

    /// `tagfence <command> …` with the state and the vault; the exit code, JSON and stderr.
    async fn tagfence(&self, command: &str, doc: &Path, extra: &[&str]) -> (i32, Value, String) {
        let id = vault_id(VAULT);
        let doc = doc.display().to_string();
        let mut args = vec![
            command,
            "--output",
            "json",
            "--source",
            &doc,
            "--vault",
            &id,
            "--tag",
            TAG,
            "--min-service-tags",
            "1",
        ];
        args.extend_from_slice(extra);
        let env = self.state_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let output = tagfence(&self.emulator, &args, &env).await;
        let json = serde_json::from_str(&stdout(&output)).unwrap_or(Value::Null);
        (output.status.code().unwrap_or(-1), json, stderr(&output))
    }

    /// A successful `apply`; its report.
    async fn apply(&self, doc: &Path, extra: &[&str]) -> Value {
        let (code, report, stderr) = self.tagfence("apply", doc, extra).await;
        assert_eq!(code, 0, "apply failed: {report:#}\n{stderr}");
        report
    }

    async fn status(&self) -> Value {
        let (code, status, stderr) = self.tagfence("status", &self.v1(), &[]).await;
        assert_eq!(code, 0, "status failed: {stderr}");
        status
    }

    fn rules(&self) -> Vec<String> {
        rules_of(&self.emulator, VAULT)
    }

    fn patches(&self) -> usize {
        self.emulator
            .requests()
            .iter()
            .filter(|r| r.route == Route::VaultPatch)
            .count()
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn vault_report(report: &Value) -> &Value {
    &report["vaults"][0]
}

fn outcome(report: &Value) -> &str {
    vault_report(report)["outcome"]["status"].as_str().unwrap()
}

fn plan(report: &Value) -> &Value {
    &vault_report(report)["plan"]
}

async fn a_retired_range_is_removed_and_rules_people_added_survive(blob: bool) {
    let s = Scenario::new(blob).await;
    let first = s.apply(&s.v1(), &[]).await;
    assert_eq!(outcome(&first), "applied");
    assert_eq!(vault_report(&first)["ownership_known"], false);
    assert_eq!(s.rules(), with(&V1, &[MANUAL]));

    // A person adds a rule between the runs.
    let mut edited = s.rules();
    edited.push(PERSON.to_owned());
    s.emulator.set_ip_rules(VAULT, edited);

    let second = s.apply(&s.v2(), &[]).await;
    assert_eq!(outcome(&second), "applied", "{second:#}");
    assert_eq!(vault_report(&second)["ownership_known"], true);
    assert_eq!(strings(&plan(&second)["remove"]), [RETIRED]);
    assert_eq!(strings(&plan(&second)["add"]), [NEW]);
    assert_eq!(
        strings(&plan(&second)["unmanaged"]),
        sorted(&[MANUAL, PERSON])
    );
    assert_eq!(s.rules(), with(&v2(), &[MANUAL, PERSON]));
}

async fn an_older_document_is_refused_and_the_vault_left_untouched(blob: bool) {
    let s = Scenario::new(blob).await;
    s.apply(&s.v2(), &[]).await;
    let before = s.rules();
    s.emulator.clear_requests();

    let (code, report, stderr) = s.tagfence("apply", &s.v1(), &[]).await;
    assert_eq!(code, 2, "{report}");
    // The binary's message is all there is to read here: the change numbers and the way out.
    assert!(
        stderr.contains("change number 100, older than 101, the last one applied to the Public cloud; refusing to go back"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--allow-older (TAGFENCE_ALLOW_OLDER)"),
        "{stderr}"
    );
    assert_eq!(s.rules(), before);
    assert!(
        s.emulator.requests().iter().all(|r| r.vault.is_none()),
        "the vault was not even read"
    );

    // Allowed on purpose, it goes back; the newest document applied stays 101.
    let back = s.apply(&s.v1(), &["--allow-older"]).await;
    assert_eq!(outcome(&back), "applied", "{back:#}");
    assert_eq!(s.rules(), with(&V1, &[MANUAL]));
    assert_eq!(s.status().await["source"]["change_number"], 101);
}

async fn the_grace_window_keeps_a_retired_range_for_its_days_then_drops_it(blob: bool) {
    let s = Scenario::new(blob).await;
    let grace = ["--grace-days", "3"];
    s.apply(&s.v1(), &grace).await;

    // The tag changed: its retired range stays for three days.
    let changed = s.apply(&s.v2(), &grace).await;
    assert_eq!(outcome(&changed), "applied", "{changed:#}");
    assert_eq!(strings(&plan(&changed)["add"]), [NEW]);
    assert_eq!(strings(&plan(&changed)["remove"]), Vec::<String>::new());
    assert_eq!(plan(&changed)["grace"], json!({ TAG: 1 }));
    assert_eq!(s.rules(), with(&V1, &[NEW, MANUAL]));

    // Nothing moved since: the desired rules are reused, not recomputed, and nothing is written.
    s.emulator.clear_requests();
    let again = s.apply(&s.v2(), &grace).await;
    assert_eq!(outcome(&again), "in_sync");
    assert_eq!(plan(&again)["reused"], true);
    assert_eq!(s.patches(), 0);

    // Four days later (the change's first sighting moved back), the range goes.
    let state = s.state();
    let mut source = state
        .read_source(tagfence::core::service_tags::Cloud::Public)
        .await
        .unwrap()
        .expect("the source state is recorded");
    let history = source.tags.get_mut(TAG).expect("the tag's history");
    assert_eq!(history.change_number, 2);
    assert_eq!(history.previous.as_ref().unwrap().change_number, 1);
    history.since = chrono::Utc::now() - chrono::Duration::days(4);
    state.write_source(&source).await.unwrap();

    let after = s.apply(&s.v2(), &grace).await;
    assert_eq!(outcome(&after), "applied", "{after:#}");
    assert_eq!(strings(&plan(&after)["remove"]), [RETIRED]);
    assert!(plan(&after).get("grace").is_none(), "{after:#}");
    assert_eq!(s.rules(), with(&v2(), &[MANUAL]));
}

async fn run_records_are_written_and_read_back(blob: bool) {
    let s = Scenario::new(blob).await;
    let applied = s.apply(&s.v1(), &[]).await;
    let dry = s.apply(&s.v2(), &["--dry-run"]).await;
    let (code, _, _) = s.tagfence("apply", &s.document(99, 1, &V1), &[]).await;
    assert_eq!(code, 2, "an older document fails the run");

    let state = s.state();
    let run_id = applied["run_id"].as_str().unwrap();
    let record = state.read_run(run_id).await.unwrap().expect("recorded");
    assert_eq!(record.trigger, "cli");
    assert_eq!(record.change_number, Some(100));
    assert!(!record.dry_run);
    assert_eq!(record.tag_change_numbers.get(TAG), Some(&1));
    let vault = &record.vaults[0];
    assert_eq!((vault.outcome.as_str(), vault.wrote), ("applied", true));
    // In address order, as plans list them.
    assert_eq!(vault.added, V1);
    assert_eq!(vault.unmanaged, [MANUAL]);

    let dry_record = state
        .read_run(dry["run_id"].as_str().unwrap())
        .await
        .unwrap()
        .expect("dry runs are recorded too");
    assert!(dry_record.dry_run);
    assert_eq!(dry_record.vaults[0].outcome.as_str(), "would_apply");

    // `tagfence status`: the latest real run per vault (the dry run and the refused run did not
    // touch the vault, so they do not replace it).
    let status = s.status().await;
    let last = &status["vaults"][0]["last_run"];
    assert_eq!(last["run_id"], run_id);
    assert_eq!(last["status"], "applied");
    assert_eq!(last["added"], 6);
    assert_eq!(status["vaults"][0]["applied"]["rules"], 6);
    assert_eq!(status["source"]["change_number"], 100);
    assert_eq!(status["source"]["tags"][TAG]["change_number"], 1);
}

async fn status_refuses_a_state_location_that_does_not_exist_and_never_creates_it(blob: bool) {
    let mut s = Scenario::new(blob).await;
    s.apply(&s.v1(), &[]).await;
    // A mistyped location (a new directory or container that nothing wrote).
    s.lose_state();
    let state = s.state();
    assert!(!state.exists().await.unwrap());
    let (code, _, stderr) = s.tagfence("status", &s.v1(), &[]).await;
    assert_eq!(code, 2, "{stderr}");
    // The directory is refused with the settings, the container when status opens it.
    assert!(
        stderr.contains("does not exist") || stderr.contains("no such directory"),
        "{stderr}"
    );
    // Reading (status, or a run's first reads) never creates it.
    assert_eq!(
        state
            .read_source(tagfence::core::service_tags::Cloud::Public)
            .await
            .unwrap(),
        None
    );
    assert!(!state.exists().await.unwrap(), "reading created the store");
    // The next apply does.
    s.apply(&s.v1(), &[]).await;
    assert!(state.exists().await.unwrap());
    assert_eq!(s.status().await["source"]["change_number"], 100);
}

async fn two_concurrent_reconciles_of_one_vault_make_one_write(blob: bool) {
    let s = Scenario::new(blob).await;
    // A slow write keeps the first reconcile inside its lock while the second starts.
    s.emulator.add_fault(Fault {
        route: Some(Route::VaultPatch),
        vault: None,
        kind: FaultKind::Delay { ms: 1500 },
        count: 2,
    });
    let doc = s.v1();
    let (a, b) = tokio::join!(s.apply(&doc, &[]), s.apply(&doc, &[]));
    let outcomes: BTreeSet<&str> = [outcome(&a), outcome(&b)].into_iter().collect();
    assert_eq!(outcomes, BTreeSet::from(["applied", "in_sync"]));
    assert_eq!(s.patches(), 1);
    assert_eq!(s.rules(), with(&V1, &[MANUAL]));
}

async fn losing_the_state_falls_back_to_removing_nothing(blob: bool) {
    let mut s = Scenario::new(blob).await;
    s.apply(&s.v1(), &[]).await;
    s.lose_state();

    let second = s.apply(&s.v2(), &[]).await;
    assert_eq!(outcome(&second), "applied", "{second:#}");
    assert_eq!(vault_report(&second)["ownership_known"], false);
    assert_eq!(strings(&plan(&second)["remove"]), Vec::<String>::new());
    assert_eq!(
        strings(&plan(&second)["unmanaged"]),
        sorted(&[RETIRED, MANUAL])
    );
    assert_eq!(s.rules(), with(&v2(), &[RETIRED, MANUAL]));

    // From then on the set is known again: the next run is in sync, and the range tagfence can
    // no longer attribute stays (only --prune removes it).
    let third = s.apply(&s.v2(), &[]).await;
    assert_eq!(outcome(&third), "in_sync");
    assert_eq!(vault_report(&third)["ownership_known"], true);
    assert_eq!(
        strings(&plan(&third)["unmanaged"]),
        sorted(&[RETIRED, MANUAL])
    );
}

/// Each scenario on both backends.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod dir {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(false).await;
                }
            )*
        }
        mod blob {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(true).await;
                }
            )*
        }
    };
}

on_both_backends!(
    a_retired_range_is_removed_and_rules_people_added_survive,
    an_older_document_is_refused_and_the_vault_left_untouched,
    the_grace_window_keeps_a_retired_range_for_its_days_then_drops_it,
    run_records_are_written_and_read_back,
    status_refuses_a_state_location_that_does_not_exist_and_never_creates_it,
    two_concurrent_reconciles_of_one_vault_make_one_write,
    losing_the_state_falls_back_to_removing_nothing,
);

/// A directory store whose writes of vault documents fail from the `fail_from`-th on (1-based),
/// to stand for a crash or a storage outage at a chosen point.
#[derive(Debug)]
struct FailingStore {
    inner: DirStore,
    vault_writes: AtomicUsize,
    fail_from: usize,
}

#[async_trait]
impl Store for FailingStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StateError> {
        if key.starts_with("vaults/")
            && self.vault_writes.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_from
        {
            return Err(StateError::Io {
                operation: "writing",
                key: key.to_owned(),
                store: self.describe(),
                detail: "injected failure".to_owned(),
            });
        }
        self.inner.put(key, bytes).await
    }
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<bool, StateError> {
        self.inner.put_if_absent(key, bytes).await
    }
    async fn lock(
        &self,
        key: &str,
        wait: std::time::Duration,
    ) -> Result<Box<dyn Lock>, StateError> {
        self.inner.lock(key, wait).await
    }
}

fn library_runner(s: &Scenario, doc: &Path, store: Arc<dyn Store>) -> Runner {
    let args = Settings {
        vaults: vec![vault_id(VAULT)],
        selection: SelectionSettings {
            tags: vec![TAG.to_owned()],
            static_rules: Vec::new(),
        },
        source: Some(doc.display().to_string()),
        min_service_tags: Some(1),
        arm_endpoint: Some(s.emulator.base_url()),
        concurrency: Some(1),
        http_timeout_secs: Some(5),
        http_max_retries: Some(1),
        http_retry_delay_ms: Some(50),
        http_call_timeout_secs: Some(30),
        ..Settings::default()
    };
    let config = Config::from_settings(&args).expect("valid configuration");
    Runner::with_credential(config, credential(&s.emulator), "test token".into())
        .expect("runner builds")
        .with_state(State::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_record_after_a_write_is_healed_by_the_next_run() {
    let s = Scenario::new(false).await;
    let Backend::Dir(dir) = &s.backend else {
        unreachable!()
    };
    // The write-ahead record (1st vault write) lands; the record after the PATCH (2nd) fails,
    // as if the process had died between the two.
    let crashing = Arc::new(FailingStore {
        inner: DirStore::new(dir),
        vault_writes: AtomicUsize::new(0),
        fail_from: 2,
    });
    let report = library_runner(&s, &s.v1(), crashing)
        .run(&RunRequest::default())
        .await
        .unwrap();
    assert_eq!(report.vaults[0].outcome, Outcome::Applied);
    assert!(
        report.vaults[0]
            .warnings
            .iter()
            .any(|w| w.contains("recording the outcome in the state failed (writing vaults/")),
        "{:?}",
        report.vaults[0].warnings
    );
    let remembered = s
        .state()
        .read_vault(&vault_id(VAULT).parse().unwrap())
        .await
        .unwrap()
        .expect("the pending record was written before the PATCH");
    assert!(remembered.applied.is_none());
    assert_eq!(remembered.pending.len(), V1.len());

    // The next run knows those rules are tagfence's: the retired one is removed.
    let healthy = Arc::new(DirStore::new(dir));
    let report = library_runner(&s, &s.v2(), healthy)
        .run(&RunRequest::default())
        .await
        .unwrap();
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::Applied,
        "{}",
        report.to_text()
    );
    assert_eq!(
        report.vaults[0].plan.as_ref().unwrap().remove,
        [RETIRED.parse().unwrap()]
    );
    assert_eq!(s.rules(), with(&v2(), &[MANUAL]));
    let remembered = s
        .state()
        .read_vault(&vault_id(VAULT).parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(remembered.pending.is_empty());
    assert_eq!(remembered.applied.unwrap().desired.len(), v2().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_ahead_record_stops_before_the_vault_is_written() {
    let s = Scenario::new(false).await;
    let Backend::Dir(dir) = &s.backend else {
        unreachable!()
    };
    let broken = Arc::new(FailingStore {
        inner: DirStore::new(dir),
        vault_writes: AtomicUsize::new(0),
        fail_from: 1,
    });
    let report = library_runner(&s, &s.v1(), broken)
        .run(&RunRequest::default())
        .await
        .unwrap();
    match &report.vaults[0].outcome {
        Outcome::Failed(
            error @ ReconcileError::State {
                step: StateStep::RecordIntent,
                ..
            },
        ) => assert_eq!(error.kind(), ErrorKind::Unavailable),
        other => panic!("{other:?}"),
    }
    assert!(!report.vaults[0].wrote);
    assert_eq!(s.patches(), 0);
    assert_eq!(s.rules(), [MANUAL]);
}

/// The state store itself (issue 11): bounded lock waits, lost locks, writes that never
/// collide, newer formats refused, records that never move back.
mod store {
    use std::time::{Duration, Instant};

    use azure_core::http::{ClientOptions, Transport};
    use azure_storage_blob::models::BlobClientBreakLeaseOptions;
    use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
    use tagfence::core::service_tags::Cloud;
    use tagfence::state::{SourceState, STATE_FORMAT_VERSION, VAULT_STATE_FORMAT};

    use super::*;

    fn temp_state(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tagfence-store-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn temp_files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(temp_files(&path));
            } else if path.to_string_lossy().contains(".tmp-") {
                found.push(path);
            }
        }
        found
    }

    fn source(change_number: u64) -> SourceState {
        SourceState {
            format_version: STATE_FORMAT_VERSION,
            cloud: Cloud::Public,
            change_number,
            applied_at: tagfence::state::parse_timestamp("2025-06-02T10:00:00.000Z").unwrap(),
            tags: Default::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_archives_of_one_document_write_it_once_and_leave_no_temporary_files() {
        let dir = temp_state("archive");
        let store = Arc::new(DirStore::new(&dir));
        let state = State::new(store.clone());
        let document = br#"{"changeNumber":366,"cloud":"Public","values":[]}"#;
        let archives: Vec<_> = (0..20)
            .map(|_| {
                let state = state.clone();
                tokio::spawn(
                    async move { state.archive_snapshot(Cloud::Public, 366, document).await },
                )
            })
            .collect();
        let puts: Vec<_> = (0..20u8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.put("runs/same.json", vec![i]).await })
            })
            .collect();
        let mut wrote = 0;
        for archive in archives {
            wrote += usize::from(archive.await.unwrap().expect("every archive succeeds"));
        }
        for put in puts {
            put.await.unwrap().expect("every write succeeds");
        }
        assert_eq!(wrote, 1, "exactly one archive writes the document");
        let kept = state
            .read_snapshot(Cloud::Public, 366)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tagfence::state::gunzip(&kept).unwrap(), document);
        assert_eq!(temp_files(&dir), Vec::<PathBuf>::new());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_failed_write_leaves_no_temporary_file() {
        let dir = temp_state("failed");
        let store = DirStore::new(&dir);
        // A directory where the record goes: each write fails after its temporary file was
        // written (root ignores permissions, so a read-only folder would not do).
        let key = "vaults/s/rg/kv.json";
        std::fs::create_dir_all(dir.join(key)).unwrap();
        for _ in 0..3 {
            let err = store.put(key, b"{}".to_vec()).await.unwrap_err();
            assert!(
                matches!(
                    &err,
                    StateError::Io { operation: "writing", key: failed, store: named, .. }
                        if failed == key && *named == store.describe()
                ),
                "{err:?}"
            );
        }
        assert_eq!(temp_files(&dir), Vec::<PathBuf>::new());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_state_document_of_a_newer_format_is_refused_and_left_alone() {
        let dir = temp_state("newer");
        let state = State::new(Arc::new(DirStore::new(&dir)));
        let id: tagfence::azure::ResourceId = vault_id(VAULT).parse().unwrap();
        let vault_file = dir.join(format!(
            "vaults/{}/{}/{}.json",
            SUBSCRIPTION, RESOURCE_GROUP, VAULT
        ));
        std::fs::create_dir_all(vault_file.parent().unwrap()).unwrap();
        let newer = json!({"format_version": 99, "vault": vault_id(VAULT), "shape": "unknown"});
        std::fs::write(&vault_file, newer.to_string()).unwrap();
        let err = state.read_vault(&id).await.unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, StateError::NewerFormat { found: 99, .. }),
            "{message}"
        );
        // What the operator reads: which document, which formats, and the two ways out.
        assert_eq!(
            message,
            format!(
                "vaults/{SUBSCRIPTION}/{RESOURCE_GROUP}/{VAULT}.json in the state directory {} was written by a newer tagfence (format 99; this one reads up to {VAULT_STATE_FORMAT}): upgrade tagfence, or move the state aside",
                dir.display()
            )
        );
        // The current format and older ones are read.
        let current = json!({"format_version": VAULT_STATE_FORMAT, "vault": vault_id(VAULT)});
        std::fs::write(&vault_file, current.to_string()).unwrap();
        assert!(state.read_vault(&id).await.unwrap().is_some());

        // A source record: refused on reading, and never overwritten by this version.
        let source_file = dir.join("sources/public.json");
        let newer = json!({"format_version": 2, "cloud": "Public", "change_number": 400});
        std::fs::create_dir_all(source_file.parent().unwrap()).unwrap();
        std::fs::write(&source_file, newer.to_string()).unwrap();
        let err = state.read_source(Cloud::Public).await.unwrap_err();
        assert!(
            matches!(
                &err,
                StateError::NewerFormat { key, found: 2, known: 1, .. } if key == "sources/public.json"
            ),
            "{err:?}"
        );
        assert!(matches!(
            state.write_source(&source(401)).await,
            Err(StateError::NewerFormat { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(&source_file).unwrap(),
            newer.to_string()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_source_record_never_moves_back_to_an_older_document() {
        let dir = temp_state("source-back");
        let state = State::new(Arc::new(DirStore::new(&dir)));
        assert!(state.write_source(&source(368)).await.unwrap());
        // A run of document 367 that finishes after the run of 368.
        assert!(!state.write_source(&source(367)).await.unwrap());
        let kept = state.read_source(Cloud::Public).await.unwrap().unwrap();
        assert_eq!(kept.change_number, 368);
        // The same document again, or a newer one, is written.
        assert!(state.write_source(&source(368)).await.unwrap());
        assert!(state.write_source(&source(369)).await.unwrap());
        assert_eq!(
            state
                .read_source(Cloud::Public)
                .await
                .unwrap()
                .unwrap()
                .change_number,
            369
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A directory at one vault's lock path (left by a person or a broken sync): that vault
    /// fails at once with an error naming the path, the other is reconciled, and the log stays
    /// short (it used to spin, logging a takeover ~100k times a second).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_directory_at_a_lock_path_fails_that_vault_alone_quickly_and_quietly() {
        let emulator = start(emulator_config(vec![
            vault(VAULT, &[MANUAL]),
            vault("kv-other", &[]),
        ]))
        .await;
        let work = temp_state("lock-dir");
        let state_dir = work.join("state");
        let lock = state_dir.join(format!("locks/{SUBSCRIPTION}/{RESOURCE_GROUP}/{VAULT}"));
        std::fs::create_dir_all(&lock).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let doc = work.join("ServiceTags_Public_100.json");
        let document = json!({
            "changeNumber": 100, "cloud": "Public",
            "values": [{"name": TAG, "id": TAG, "properties": {
                "changeNumber": 1, "region": "", "systemService": "AzureDevOps",
                "addressPrefixes": V1}}]
        });
        std::fs::write(&doc, document.to_string()).unwrap();
        let (locked, other) = (vault_id(VAULT), vault_id("kv-other"));
        let doc = doc.display().to_string();
        let state_env = state_dir.display().to_string();
        let started = Instant::now();
        let output = tagfence(
            &emulator,
            &[
                "apply",
                "--output",
                "json",
                "--source",
                &doc,
                "--vault",
                &locked,
                "--vault",
                &other,
                "--tag",
                TAG,
                "--min-service-tags",
                "1",
            ],
            &[("TAGFENCE_STATE_DIR", &state_env)],
        )
        .await;
        let elapsed = started.elapsed();
        let (out, err) = (stdout(&output), stderr(&output));
        let report: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        eprintln!(
            "apply with a directory at a lock path: {} ms, exit {:?}, {} lines and {} bytes of stderr",
            elapsed.as_millis(),
            output.status.code(),
            err.lines().count(),
            err.len()
        );
        let vaults = report["vaults"]
            .as_array()
            .unwrap_or_else(|| panic!("{out}\n{err}"));
        let by_name = |name: &str| {
            vaults
                .iter()
                .find(|v| v["vault"].as_str().unwrap_or_default().ends_with(name))
                .unwrap_or_else(|| panic!("{name} not in {report:#}"))
        };
        let failed = &by_name(&format!("/{VAULT}"))["outcome"];
        assert_eq!(failed["status"], "failed", "{report:#}");
        // A lock no wait clears: a person must remove what is in its place (not another
        // writer, and not an outage a retry outlasts).
        assert_eq!(failed["kind"], "not_configured", "{report:#}");
        // What the operator reads: the path, what is wrong with it and what to do.
        assert_eq!(
            failed["error"],
            format!(
                "taking the vault's lock: the lock {} cannot be taken: it is a directory, not a lock file tagfence made, and cannot be taken over; remove it; nothing written",
                lock.display()
            ),
            "{report:#}"
        );
        assert_eq!(
            by_name("/kv-other")["outcome"]["status"],
            "applied",
            "{report:#}"
        );
        assert_eq!(rules_of(&emulator, VAULT), [MANUAL]);
        assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
        assert!(
            err.matches("stale lock").count() <= 1 && err.len() < 256 * 1024,
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&work);
    }

    /// A client of the test's container that can break a lease, as an operator (or the
    /// lease's lapse while its holder was stopped) would.
    fn raw_container(s: &Scenario) -> BlobContainerClient {
        let Backend::Blob { azurite, container } = &s.backend else {
            unreachable!()
        };
        let ca = std::fs::read(&azurite.ca_file).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let options = BlobContainerClientOptions {
            client_options: ClientOptions {
                transport: Some(Transport::new(Arc::new(client))),
                ..ClientOptions::default()
            },
            ..BlobContainerClientOptions::default()
        };
        BlobContainerClient::new(
            azurite.container_url(container).parse().unwrap(),
            Some(scoped_credential(&s.emulator)),
            Some(options),
        )
        .unwrap()
    }

    fn blob_store(s: &Scenario) -> BlobStore {
        let Backend::Blob { azurite, container } = &s.backend else {
            unreachable!()
        };
        let ca = std::fs::read(&azurite.ca_file).unwrap();
        BlobStore::new(
            azurite.container_url(container).parse().unwrap(),
            scoped_credential(&s.emulator),
            &Default::default(),
            Some(&ca),
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_taken_over_by_another_holder_is_not_confirmed() {
        let s = Scenario::new(true).await;
        // 1 s is below what Blob storage accepts: clamped to 15 s (a lease of 1 s is refused).
        let store = blob_store(&s).with_lock_ttl(Duration::from_secs(1));
        let key = "locks/s/rg/kv";
        let first = store.lock(key, Duration::ZERO).await.unwrap();
        first.confirm().await.unwrap();

        // Another instance waits for the whole of its wait, not longer, then gives up.
        let started = Instant::now();
        let err = store.lock(key, Duration::from_secs(1)).await.err().unwrap();
        let waited = started.elapsed();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(4),
            "{waited:?}"
        );

        // The first holder's lease is broken and another instance takes the lock.
        raw_container(&s)
            .blob_client(key)
            .break_lease(Some(BlobClientBreakLeaseOptions {
                break_period: Some(0),
                ..Default::default()
            }))
            .await
            .unwrap();
        let second = store.lock(key, Duration::from_secs(5)).await.unwrap();
        let err = first.confirm().await.unwrap_err();
        match &err {
            StateError::LockLost { lock, detail } => {
                assert_eq!(*lock, format!("{key} in {}", store.describe()));
                // How it was lost is text only (Blob storage's answer to the renewal).
                assert!(
                    detail.starts_with("renewing the lease was refused"),
                    "{detail}"
                );
            }
            other => panic!("expected the lock lost, got {other:?}"),
        }
        // Once lost, always lost; and releasing it leaves the new holder's lease alone.
        assert!(first.confirm().await.is_err());
        first.release().await;
        second.confirm().await.unwrap();
        assert!(matches!(
            store.lock(key, Duration::ZERO).await,
            Err(StateError::Locked { .. })
        ));
        second.release().await;
        store
            .lock(key, Duration::ZERO)
            .await
            .unwrap()
            .release()
            .await;
    }
}
