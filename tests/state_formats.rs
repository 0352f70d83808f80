//! Golden state fixtures: state directories that earlier tagfence builds really wrote
//! (tests/fixtures/state/<commit>/, made by tests/fixtures/state/produce.sh) are read through the
//! state module's public API, carry the values they were written with, and read the same after
//! this build writes them back.
//!
//! - `7310dc5`: vault format 1 (every desired rule counted as tagfence's own);
//! - `5227c2b`: vault format 2 (ownership recorded; origins by position in the tags).
//!
//! Both wrote source and run documents of format 1, which this build writes back byte for byte.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::Ipv4Net;
use serde_json::{json, Value};
use support::{Scratch, RESOURCE_GROUP, SUBSCRIPTION};
use tagfence::azure::ResourceId;
use tagfence::core::service_tags::Cloud;
use tagfence::state::dir::DirStore;
use tagfence::state::{
    parse_timestamp, timestamp, RecordedOutcome, RecordedTag, RuleOrigin, State, StateError,
    VaultState, STATE_FORMAT_VERSION, VAULT_STATE_FORMAT,
};

const VAULTS: [&str; 4] = ["kv-prod", "kv-build", "kv-legacy", "kv-gone"];

/// One fixture: the commit that wrote it, its vault format, and its four runs in the order
/// they ran (363, 364, a dry run of 365, 365).
struct Fixture {
    commit: &'static str,
    vault_format: u32,
    runs: [&'static str; 4],
}

const FORMAT_1: Fixture = Fixture {
    commit: "7310dc5",
    vault_format: 1,
    runs: [
        "20261207T122356Z-3389e104",
        "20261207T122357Z-00e42409",
        "20261207T122357Z-13e4ae98",
        "20261207T122357Z-2601ffe2",
    ],
};

const FORMAT_2: Fixture = Fixture {
    commit: "5227c2b",
    vault_format: 2,
    runs: [
        "20261207T122507Z-2cd01a53",
        "20261207T122508Z-16490341",
        "20261207T122508Z-3b0b6d02",
        "20261207T122508Z-2da0e51a",
    ],
};

impl Fixture {
    fn dir(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/state/{}", self.commit))
    }

    /// The fixture's state, read in place (nothing is written to it).
    fn state(&self) -> State {
        State::new(Arc::new(DirStore::new(self.dir())))
    }

    /// A copy of the fixture's state in `scratch`, to write to.
    fn copy(&self, scratch: &Scratch) -> (State, PathBuf) {
        let root = scratch.join(self.commit);
        copy_tree(&self.dir(), &root);
        (State::new(Arc::new(DirStore::new(&root))), root)
    }

    fn raw(&self, relative: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir().join(relative)).unwrap()).unwrap()
    }

    fn last_run(&self) -> &'static str {
        self.runs[3]
    }

    /// When the last run started: every record it wrote carries this instant.
    fn last_run_at(&self) -> &'static str {
        if self.vault_format == 1 {
            "2026-12-07T12:23:57.621Z"
        } else {
            "2026-12-07T12:25:08.907Z"
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn vault_id(name: &str) -> ResourceId {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.KeyVault/vaults/{name}")
        .parse()
        .unwrap()
}

fn vault_file(name: &str) -> String {
    format!("vaults/{SUBSCRIPTION}/{RESOURCE_GROUP}/{name}.json")
}

fn run_file(run_id: &str) -> String {
    format!("runs/2026-12-07/{run_id}.json")
}

fn net(text: &str) -> Ipv4Net {
    text.parse().unwrap()
}

fn tag(name: &str, change_number: u64, ipv4_prefixes: usize) -> RecordedTag {
    RecordedTag {
        name: name.to_owned(),
        change_number,
        ipv4_prefixes,
        region: String::new(),
    }
}

fn by_tag(name: &str) -> RuleOrigin {
    RuleOrigin::Tag(name.to_owned())
}

async fn vault(state: &State, name: &str) -> VaultState {
    state
        .read_vault(&vault_id(name))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .unwrap_or_else(|| panic!("{name}: no record"))
}

/// Every rule of the raw (format 1 or 2) record, with the origin its position named.
fn raw_origins(raw: &Value) -> Vec<(Ipv4Net, RuleOrigin, u64)> {
    let desired = &raw["applied"]["desired"];
    let tags = desired["tags"].as_array().unwrap();
    desired["rules"]
        .as_array()
        .unwrap()
        .iter()
        .zip(desired["info"].as_array().unwrap())
        .map(|(rule, info)| {
            let origin = match &info["origin"] {
                Value::String(s) if s == "static" => RuleOrigin::Static,
                other => {
                    let index = other["tag"].as_u64().unwrap() as usize;
                    by_tag(tags[index]["name"].as_str().unwrap())
                }
            };
            (
                net(rule.as_str().unwrap()),
                origin,
                info["extra_addresses"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn applied_vaults_carry_their_rules_with_origins_by_tag_name(fixture: &Fixture) {
    let state = fixture.state();
    let at = parse_timestamp(fixture.last_run_at()).unwrap();

    // kv-prod: AzureDevOps and Storage.SwedenCentral, one static rule, the grace window.
    let prod = vault(&state, "kv-prod").await;
    assert_eq!(prod.format_version, VAULT_STATE_FORMAT);
    assert_eq!(prod.vault, vault_id("kv-prod").to_string());
    let applied = prod.applied.as_ref().expect("kv-prod was applied");
    assert_eq!(applied.cloud, Cloud::Public);
    assert_eq!(applied.change_number, 365);
    assert_eq!(applied.applied_at, at);
    assert_eq!(timestamp(applied.applied_at), fixture.last_run_at());
    assert_eq!(applied.run_id, fixture.last_run());
    assert_eq!(applied.kept, 1);
    let rules = &applied.desired;
    assert_eq!(rules.len(), 37);
    assert_eq!(
        rules.tags(),
        [
            tag("AzureDevOps", 7, 24),
            tag("Storage.SwedenCentral", 10, 12)
        ]
    );
    assert_eq!(rules.grace(), [tag("Storage.SwedenCentral", 9, 11)]);
    assert_eq!(rules.static_rules(), [net("52.1.2.3/32")]);
    assert_eq!(rules.dropped().ipv6, 3);
    assert_eq!(rules.dropped().private, 0);
    assert_eq!(rules.extra_addresses(), 0);
    assert_eq!(
        rules.get(&net("20.37.158.0/23")).unwrap().origin,
        by_tag("AzureDevOps")
    );
    // The range Storage.SwedenCentral gained in change 10 (the run's one addition).
    assert_eq!(
        rules.get(&net("135.130.110.0/23")).unwrap().origin,
        by_tag("Storage.SwedenCentral")
    );
    assert_eq!(
        rules.get(&net("52.1.2.3/32")).unwrap().origin,
        RuleOrigin::Static
    );
    // Every rule, against what the document's positions said.
    let raw = fixture.raw(&vault_file("kv-prod"));
    let read: Vec<(Ipv4Net, RuleOrigin, u64)> = rules
        .rules()
        .iter()
        .map(|r| (r.rule, r.origin.clone(), r.extra_addresses))
        .collect();
    assert_eq!(read, raw_origins(&raw));

    let last = prod.last_run.as_ref().unwrap();
    assert_eq!(last.outcome, RecordedOutcome::Applied);
    assert_eq!(last.at, at);
    assert_eq!(last.run_id, fixture.last_run());
    assert_eq!(last.trigger, "cli");
    assert_eq!((last.change_number, last.added, last.removed), (365, 1, 0));
    assert_eq!(last.detail, None);

    // The core's desired rules come back with each origin at its tag's position.
    let desired = rules.to_desired();
    assert_eq!(desired.rules.len(), 37);
    assert_eq!(desired.tags[1].name, "Storage.SwedenCentral");
    let i = desired
        .rules
        .binary_search(&net("135.130.110.0/23"))
        .unwrap();
    assert_eq!(
        desired.info[i].origin,
        tagfence::core::desired::Origin::Tag(1)
    );
    assert_eq!(desired.grace[0].change_number, 9);

    // kv-build: a summarized fit of AzureDevOps and ServiceBus.TaiwanNorth into 12 rules.
    let build = vault(&state, "kv-build").await;
    let applied = build.applied.as_ref().expect("kv-build was applied");
    let rules = &applied.desired;
    assert_eq!(rules.len(), 12);
    assert_eq!(rules.extra_addresses(), 17_067_512);
    let wide = rules.get(&net("20.0.0.0/8")).unwrap();
    assert_eq!(
        (wide.origin.clone(), wide.extra_addresses),
        (by_tag("AzureDevOps"), 16_773_184)
    );
    assert_eq!(
        rules.get(&net("51.53.0.0/17")).unwrap().origin,
        by_tag("ServiceBus.TaiwanNorth")
    );
    let raw = fixture.raw(&vault_file("kv-build"));
    let read: Vec<(Ipv4Net, RuleOrigin, u64)> = rules
        .rules()
        .iter()
        .map(|r| (r.rule, r.origin.clone(), r.extra_addresses))
        .collect();
    assert_eq!(read, raw_origins(&raw));
    let last = build.last_run.as_ref().unwrap();
    if fixture.vault_format == 1 {
        // 7310dc5 had no tag shrink guard: applied from 364 on, in sync at 365.
        assert_eq!(rules.tags()[1], tag("ServiceBus.TaiwanNorth", 3, 3));
        assert_eq!(rules.grace(), [tag("ServiceBus.TaiwanNorth", 2, 7)]);
        assert_eq!(applied.change_number, 365);
        assert_eq!(last.outcome, RecordedOutcome::InSync);
    } else {
        // Refused since the tag shrank from 7 to 3 prefixes: the last apply stays 363's.
        assert_eq!(rules.tags()[1], tag("ServiceBus.TaiwanNorth", 2, 7));
        assert!(rules.grace().is_empty());
        assert_eq!(applied.change_number, 363);
        assert_eq!(applied.run_id, fixture.runs[0]);
        assert_eq!(last.outcome, RecordedOutcome::Refused);
        assert!(
            last.detail.as_deref().unwrap().starts_with(
                "service tag ServiceBus.TaiwanNorth shrank from 7 IPv4 prefixes in change 363"
            ),
            "{last:?}"
        );
    }
}

async fn refused_and_failed_vaults_keep_their_outcome_and_no_rules(fixture: &Fixture) {
    let state = fixture.state();
    let legacy = vault(&state, "kv-legacy").await;
    assert!(legacy.applied.is_none());
    assert!(!legacy.ownership_known());
    let last = legacy.last_run.unwrap();
    assert_eq!(last.outcome, RecordedOutcome::Refused);
    assert_eq!(
        last.detail.as_deref(),
        Some("the selection needs 37 rules but only 3 of the vault's 3 are free; select fewer tags or use --fit summarize")
    );
    assert_eq!(timestamp(last.at), fixture.last_run_at());

    let gone = vault(&state, "kv-gone").await;
    assert!(gone.applied.is_none());
    assert!(gone.owned.is_empty());
    let last = gone.last_run.unwrap();
    assert_eq!(last.outcome, RecordedOutcome::Failed);
    assert!(
        last.detail
            .as_deref()
            .unwrap()
            .starts_with("reading vault kv-gone: ResourceNotFound"),
        "{last:?}"
    );
}

async fn the_source_record_keeps_each_tag_s_history(fixture: &Fixture) {
    let source = fixture
        .state()
        .read_source(Cloud::Public)
        .await
        .unwrap()
        .unwrap();
    let raw = fixture.raw("sources/public.json");
    assert_eq!(source.format_version, STATE_FORMAT_VERSION);
    assert_eq!(source.cloud, Cloud::Public);
    assert_eq!(source.change_number, 365);
    assert_eq!(timestamp(source.applied_at), fixture.last_run_at());
    assert_eq!(
        source.tags.keys().collect::<Vec<_>>(),
        [
            "AzureDevOps",
            "ServiceBus.TaiwanNorth",
            "Storage.SwedenCentral"
        ]
    );
    for (name, history) in &source.tags {
        let expected = &raw["tags"][name];
        assert_eq!(timestamp(history.since), expected["since"], "{name}");
        assert_eq!(history.change_number, expected["change_number"], "{name}");
        assert_eq!(history.seen_in, 365, "{name}");
    }
    assert!(source.tags["AzureDevOps"].previous.is_none());
    let taiwan = source.tags["ServiceBus.TaiwanNorth"].previous.as_ref();
    assert_eq!(
        taiwan.map(|p| (p.change_number, p.document)),
        Some((2, 363))
    );
    let sweden = &source.tags["Storage.SwedenCentral"];
    assert_eq!(sweden.change_number, 10);
    assert_eq!(timestamp(sweden.since), fixture.last_run_at());
    assert_eq!(
        sweden
            .previous
            .as_ref()
            .map(|p| (p.change_number, p.document)),
        Some((9, 364))
    );
}

async fn run_records_keep_every_vault_s_outcome(fixture: &Fixture) {
    use RecordedOutcome::*;
    let state = fixture.state();
    let build = |format_1: RecordedOutcome, format_2: RecordedOutcome| {
        if fixture.vault_format == 1 {
            format_1
        } else {
            format_2
        }
    };
    let expected = [
        (363, false, [Applied, Applied, Refused, Failed]),
        (
            364,
            false,
            [InSync, build(InSync, Refused), Refused, Failed],
        ),
        (
            365,
            true,
            [WouldApply, build(InSync, Refused), Refused, Failed],
        ),
        (
            365,
            false,
            [Applied, build(InSync, Refused), Refused, Failed],
        ),
    ];
    for (run_id, (change_number, dry_run, outcomes)) in fixture.runs.iter().zip(expected) {
        let record = state.read_run(run_id).await.unwrap().unwrap();
        let raw = fixture.raw(&run_file(run_id));
        assert_eq!(record.format_version, STATE_FORMAT_VERSION);
        assert_eq!(&record.run_id, run_id);
        assert_eq!(record.trigger, "cli");
        assert_eq!(record.cloud, Some(Cloud::Public));
        assert_eq!(record.change_number, Some(change_number));
        assert_eq!(record.dry_run, dry_run);
        assert_eq!(timestamp(record.started_at), raw["started_at"]);
        assert_eq!(timestamp(record.finished_at), raw["finished_at"]);
        assert!(record.finished_at > record.started_at);
        assert_eq!(record.tag_change_numbers.get("AzureDevOps"), Some(&7));
        let read: Vec<(String, RecordedOutcome)> = record
            .vaults
            .iter()
            .map(|v| (v.vault.clone(), v.outcome))
            .collect();
        let wanted: Vec<(String, RecordedOutcome)> = VAULTS
            .iter()
            .map(|v| vault_id(v).to_string())
            .zip(outcomes)
            .collect();
        assert_eq!(read, wanted, "{run_id}");
    }
    // The run that applied kv-prod from 365 added Storage.SwedenCentral's new range, and kept
    // the previous version's ranges in the grace window.
    let last = state.read_run(fixture.last_run()).await.unwrap().unwrap();
    let prod = &last.vaults[0];
    assert!(prod.wrote);
    assert_eq!(prod.added, ["135.130.110.0/23"]);
    assert_eq!(prod.unchanged, 36);
    assert_eq!(prod.grace_tags, ["Storage.SwedenCentral (change 9)"]);
}

async fn written_back_every_document_reads_the_same(fixture: &Fixture) {
    let scratch = Scratch::new();
    let (state, root) = fixture.copy(&scratch);
    for name in VAULTS {
        let before = vault(&state, name).await;
        state.write_vault(&vault_id(name), &before).await.unwrap();
        let written: Value =
            serde_json::from_slice(&std::fs::read(root.join(vault_file(name))).unwrap()).unwrap();
        assert_eq!(written["format_version"], VAULT_STATE_FORMAT);
        let after = vault(&state, name).await;
        // Only the note that the record came from format 1 goes: the record is current now.
        let expected = VaultState {
            migrated_from: None,
            ..before
        };
        assert_eq!(after, expected, "{name}");
    }
    // The current shape: one object per rule, the origin by tag name.
    let written: Value =
        serde_json::from_slice(&std::fs::read(root.join(vault_file("kv-prod"))).unwrap()).unwrap();
    let rules = written["applied"]["desired"]["rules"].as_array().unwrap();
    assert!(written["applied"]["desired"].get("info").is_none());
    assert!(rules.contains(
        &json!({"rule": "135.130.110.0/23", "origin": {"tag": "Storage.SwedenCentral"}, "extra_addresses": 0})
    ));
    assert!(
        rules.contains(&json!({"rule": "52.1.2.3/32", "origin": "static", "extra_addresses": 0}))
    );

    // The source and run documents did not change format: written back byte for byte.
    let source = state.read_source(Cloud::Public).await.unwrap().unwrap();
    assert!(state.write_source(&source).await.unwrap());
    assert_eq!(
        std::fs::read_to_string(root.join("sources/public.json")).unwrap(),
        std::fs::read_to_string(fixture.dir().join("sources/public.json")).unwrap()
    );
    assert_eq!(
        state.read_source(Cloud::Public).await.unwrap(),
        Some(source)
    );
    for run_id in fixture.runs {
        let record = state.read_run(run_id).await.unwrap().unwrap();
        let key = state.write_run(&record).await.unwrap();
        assert_eq!(key, run_file(run_id));
        assert_eq!(
            std::fs::read_to_string(root.join(&key)).unwrap(),
            std::fs::read_to_string(fixture.dir().join(&key)).unwrap(),
            "{run_id}"
        );
        assert_eq!(state.read_run(run_id).await.unwrap(), Some(record));
    }
}

#[tokio::test]
async fn format_1_applied_vaults_carry_their_rules_with_origins_by_tag_name() {
    applied_vaults_carry_their_rules_with_origins_by_tag_name(&FORMAT_1).await;
}

#[tokio::test]
async fn format_2_applied_vaults_carry_their_rules_with_origins_by_tag_name() {
    applied_vaults_carry_their_rules_with_origins_by_tag_name(&FORMAT_2).await;
}

#[tokio::test]
async fn a_format_1_record_claims_no_rule_and_says_so() {
    let state = FORMAT_1.state();
    for name in VAULTS {
        let record = vault(&state, name).await;
        assert_eq!(record.migrated_from, Some(1), "{name}");
        assert!(record.owned.is_empty(), "{name}");
        assert!(record.pending.is_empty(), "{name}");
        assert!(!record.ownership_known(), "{name}");
        assert!(record.owned_rules().is_empty(), "{name}");
        assert_eq!(record.seen_default_action, None);
    }
}

#[tokio::test]
async fn a_format_2_record_keeps_the_rules_tagfence_owns() {
    let state = FORMAT_2.state();
    let prod = vault(&state, "kv-prod").await;
    let raw = FORMAT_2.raw(&vault_file("kv-prod"));
    let owned: Vec<Ipv4Net> = serde_json::from_value(raw["owned"].clone()).unwrap();
    assert_eq!(owned.len(), 34);
    assert_eq!(prod.owned, owned);
    assert_eq!(prod.migrated_from, None);
    assert!(prod.ownership_known());
    assert!(prod.pending.is_empty() && prod.pending_removal.is_empty());
    assert_eq!(prod.seen_default_action.as_deref(), Some("Deny"));
    assert_eq!(prod.seen_bypass.as_deref(), Some("AzureServices"));
    // The three desired rules that were on the vault before tagfence wanted them stay the
    // person's.
    let applied = prod.applied.unwrap();
    let persons: Vec<Ipv4Net> = applied
        .desired
        .rules()
        .iter()
        .map(|r| r.rule)
        .filter(|r| !prod.owned.contains(r))
        .collect();
    assert_eq!(
        persons,
        [
            net("20.37.158.0/23"),
            net("20.37.194.0/24"),
            net("40.74.28.0/23")
        ]
    );
    let build = vault(&state, "kv-build").await;
    assert_eq!(build.owned.len(), 12);
    assert!(build.ownership_known());
}

#[tokio::test]
async fn format_1_refused_and_failed_vaults_keep_their_outcome_and_no_rules() {
    refused_and_failed_vaults_keep_their_outcome_and_no_rules(&FORMAT_1).await;
}

#[tokio::test]
async fn format_2_refused_and_failed_vaults_keep_their_outcome_and_no_rules() {
    refused_and_failed_vaults_keep_their_outcome_and_no_rules(&FORMAT_2).await;
}

#[tokio::test]
async fn source_records_of_7310dc5_and_5227c2b_keep_each_tag_s_history() {
    the_source_record_keeps_each_tag_s_history(&FORMAT_1).await;
    the_source_record_keeps_each_tag_s_history(&FORMAT_2).await;
}

#[tokio::test]
async fn run_records_of_7310dc5_and_5227c2b_keep_every_vault_s_outcome() {
    run_records_keep_every_vault_s_outcome(&FORMAT_1).await;
    run_records_keep_every_vault_s_outcome(&FORMAT_2).await;
}

#[tokio::test]
async fn format_1_documents_written_back_read_the_same() {
    written_back_every_document_reads_the_same(&FORMAT_1).await;
}

#[tokio::test]
async fn format_2_documents_written_back_read_the_same() {
    written_back_every_document_reads_the_same(&FORMAT_2).await;
}

#[tokio::test]
async fn a_record_of_a_newer_format_or_a_broken_one_is_refused_not_misread() {
    let scratch = Scratch::new();
    let (state, root) = FORMAT_2.copy(&scratch);
    let path = root.join(vault_file("kv-prod"));
    let raw = FORMAT_2.raw(&vault_file("kv-prod"));
    let id = vault_id("kv-prod");
    let put = |doc: &Value| std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();

    let mut newer = raw.clone();
    newer["format_version"] = json!(VAULT_STATE_FORMAT + 1);
    put(&newer);
    let err = state.read_vault(&id).await.unwrap_err();
    assert!(
        matches!(err, StateError::NewerFormat { found, known, .. } if found == u64::from(VAULT_STATE_FORMAT) + 1 && known == VAULT_STATE_FORMAT),
        "{err}"
    );

    // An origin past the recorded tags: corrupt, never a guess.
    let mut past = raw.clone();
    past["applied"]["desired"]["info"][0]["origin"] = json!({"tag": 2});
    put(&past);
    let err = state.read_vault(&id).await.unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("the applied rule 20.33.171.0/24 comes from tag 2, but 2 tags are recorded"),
        "{err}"
    );

    // A format-2 record labelled as the current format does not parse as one.
    let mut mislabelled = raw.clone();
    mislabelled["format_version"] = json!(VAULT_STATE_FORMAT);
    put(&mislabelled);
    assert!(matches!(
        state.read_vault(&id).await.unwrap_err(),
        StateError::Corrupt { .. }
    ));

    // A current record whose origin names a tag it does not record.
    put(&raw);
    let current = vault(&state, "kv-prod").await;
    state.write_vault(&id, &current).await.unwrap();
    let mut unknown: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    unknown["applied"]["desired"]["rules"][0]["origin"] = json!({"tag": "AzureFrontDoor.Backend"});
    put(&unknown);
    let err = state.read_vault(&id).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("'AzureFrontDoor.Backend', which is not among the recorded tags"),
        "{err}"
    );

    // No format at all, one never written, or one that is no whole number: refused as
    // corrupt, and said so (not "it has no format_version" for a "4").
    for version in [
        Value::Null,
        json!(0),
        json!("4"),
        json!(4.5),
        json!(1e30),
        json!(-1),
    ] {
        let mut odd = raw.clone();
        odd["format_version"] = version.clone();
        put(&odd);
        let err = state.read_vault(&id).await.unwrap_err();
        assert!(
            matches!(err, StateError::Corrupt { .. }),
            "{version}: {err}"
        );
        if !version.is_null() {
            assert!(
                err.to_string()
                    .contains(&format!("format_version {version}")),
                "{err}"
            );
        }
    }
    let mut absent = raw.clone();
    absent.as_object_mut().unwrap().remove("format_version");
    put(&absent);
    let err = state.read_vault(&id).await.unwrap_err();
    assert!(
        err.to_string().contains("it has no format_version"),
        "{err}"
    );
}

#[tokio::test]
async fn a_sources_document_that_is_no_object_or_of_no_format_is_refused_not_overwritten() {
    let scratch = Scratch::new();
    let (state, root) = FORMAT_2.copy(&scratch);
    let path = root.join("sources/public.json");
    let raw = std::fs::read(&path).expect("the fixture holds a sources document");
    for odd in [json!([]), json!({"format_version": 0}), json!("text")] {
        std::fs::write(&path, serde_json::to_vec(&odd).unwrap()).unwrap();
        let err = state.read_source(Cloud::Public).await.unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{odd}: {err}");
    }
    std::fs::write(&path, raw).unwrap();
    assert!(state.read_source(Cloud::Public).await.unwrap().is_some());
}
