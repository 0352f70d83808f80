//! What tagfence remembers between runs, and where.
//!
//! Without memory tagfence cannot tell a rule it added (and must remove when Microsoft retires
//! the range) from a rule a person added (which it must never touch), cannot refuse a Service
//! Tags document older than the one it already applied, and cannot show what happened last
//! Wednesday. So it keeps, in a small key/value store:
//!
//! | key | what |
//! |---|---|
//! | `vaults/{subscription}/{group}/{vault}.json` | [`VaultState`]: the rules tagfence last applied and verified ([`AppliedRules`]), the rules it owns, and the last run's outcome |
//! | `sources/{cloud}.json` | [`SourceState`]: the newest document applied, and when each selected tag last changed |
//! | `snapshots/{cloud}/{change number}.json.gz` | every Service Tags document used, as received (gzip) |
//! | `runs/{date}/{run id}.json` | [`RunRecord`]: one per run (run ids sort by time) |
//! | `grants/index.json` | [`GrantsIndex`]: which vaults hold just-in-time grants, for the sweep |
//! | `locks/{subscription}/{group}/{vault}` | the per-vault lock (a blob lease, or a lock file) |
//! | `locks/grants/index` | the lock on the grants index, taken only while holding a vault's lock |
//!
//! Two backends implement the tiny [`Store`] interface: Azure Blob storage ([`blob`], the
//! Function App's own storage account, reached with its managed identity) and a directory
//! ([`dir`], for the CLI). Everything typed lives here, once.
//!
//! # Formats
//!
//! Every document is JSON with a `format_version`, and its shape is defined in this module
//! (`documents.rs`), never by a core type's serde derive: the core crosses at the boundary
//! ([`AppliedRules::from_desired`], [`AppliedRules::to_desired`]). Outcomes are
//! [`RecordedOutcome`]s, written `in_sync`, `applied`, `would_apply`, `refused`, `skipped` or
//! `failed`; timestamps are RFC 3339 in UTC to the millisecond (`2026-12-07T12:25:08.907Z`);
//! clouds are `Public`, `AzureGovernment` or `AzureChina`; rules are `a.b.c.d/len`.
//!
//! | document | format | what changed |
//! |---|---|---|
//! | vault | 1 | the first (up to 7310dc5): every desired rule counted as tagfence's own |
//! | vault | 2 | `owned`, `pending_removal`, `seen_default_action`, `seen_bypass`: only the rules tagfence added itself are its own |
//! | vault | 3 | `applied.desired` in the state's own shape ([`AppliedRules`]): one object per rule with its origin by tag name (`{"tag": "AzureDevOps"}` or `"static"`), not a list of origins by position beside the rules |
//! | vault | 4 | `grants`: the vault's just-in-time grants ([`GrantRecord`]); a format-3 record is read as one without grants |
//! | grants index | 1 | the first: `grants/index.json`, the vaults holding grants ([`GrantsIndex`]) |
//! | source, run | 1 | the first, unchanged since |
//!
//! Reading never guesses: a document of a newer format than this build knows is refused
//! ([`StateError::NewerFormat`]) before it is parsed, one that does not parse as its own format
//! is [`StateError::Corrupt`], and the vault formats before the current one are read as they
//! were written and brought to the current one (`legacy.rs` says how; docs/operations.md tells
//! operators); the next write of the vault writes the current format. The source and run
//! documents of format 1 are read and written back byte for byte. tests/state_formats.rs reads
//! state that earlier builds really wrote (tests/fixtures/state/).
//!
//! # Layout
//!
//! Each module uses only the ones listed before it, never this one; this one puts them
//! together ([`State`]) and re-exports what callers use.
//!
//! - `store`: the [`Store`] and [`Lock`] interface, [`StateError`], and the hold on a lock that
//!   both backends renew.
//! - `format`: the format versions, and how every document writes timestamps and clouds.
//! - `documents`: the documents in their current formats.
//! - `legacy`: the vault formats before the current one, and their upgrade.
//! - [`blob`] and [`dir`]: the two backends.

pub mod blob;
pub mod dir;
mod documents;
mod format;
mod legacy;
mod store;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use documents::{
    AppliedRule, AppliedRules, AppliedState, DroppedPrefixes, GrantRecord, GrantsIndex, LastRun,
    PreviousVersion, RecordedOutcome, RecordedTag, RuleOrigin, RunRecord, SourceState, TagHistory,
    VaultRecord, VaultState,
};
pub use format::{
    parse_timestamp, stored_time, timestamp, STATE_FORMAT_VERSION, VAULT_STATE_FORMAT,
};
pub use store::{Lock, StateError, Store, LOCK_TTL};

use crate::azure::ResourceId;
use crate::core::kind::Kind;
use crate::core::service_tags::Cloud;

/// Where a resource's record (or lock) lives: `{prefix}/{subscription}/{group}/{name}` for a Key
/// Vault (the key records had before there were kinds), `{prefix}/{subscription}/{group}/{kind}/
/// {name}` for any other kind, so that a vault and a storage account of one name in one group
/// never share a record or a lock. The two cannot meet: a vault's key has one segment fewer.
fn vault_key(prefix: &str, vault: &ResourceId) -> String {
    // Lower-cased: ARM ids are case-insensitive, the store's keys are not.
    let group = format!(
        "{prefix}/{}/{}",
        vault.subscription.to_ascii_lowercase(),
        vault.resource_group.to_ascii_lowercase(),
    );
    let name = vault.name.to_ascii_lowercase();
    match vault.kind {
        Kind::KeyVault => format!("{group}/{name}"),
        kind => format!("{group}/{}/{name}", kind.name()),
    }
}

const GRANTS_INDEX_KEY: &str = "grants/index.json";
const GRANTS_INDEX_LOCK: &str = "locks/grants/index";

fn cloud_key(cloud: Cloud) -> String {
    cloud.as_str().to_ascii_lowercase()
}

/// The typed state over a store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct State {
    store: Arc<dyn Store>,
}

impl State {
    pub fn new(store: Arc<dyn Store>) -> Self {
        State { store }
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Whether the store (the directory, the container) exists; reads never create it.
    ///
    /// # Errors
    /// When the store cannot be asked.
    pub async fn exists(&self) -> Result<bool, StateError> {
        self.store.exists().await
    }

    /// The newest format of the document at `key` that this program reads: the vault documents
    /// have their own version, the others share [`STATE_FORMAT_VERSION`].
    fn known_format(key: &str) -> u32 {
        if key.starts_with("vaults/") {
            VAULT_STATE_FORMAT
        } else {
            STATE_FORMAT_VERSION
        }
    }

    /// Reads a state document and the format it says it has, refusing one of a newer format
    /// than [`State::known_format`] (checked before the document is parsed, so a newer shape is
    /// reported as newer, not as corrupt).
    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, StateError> {
        let Some(bytes) = self.store.get(key).await? else {
            return Ok(None);
        };
        let known = Self::known_format(key);
        // Every state document is a JSON object with a whole, positive format_version: anything
        // else is refused as corrupt, never read as an empty or current document (and then
        // overwritten).
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| self.corrupt(key, format!("it is not JSON: {e}")))?;
        let Some(object) = value.as_object() else {
            return Err(self.corrupt(key, "it is not a JSON object".to_owned()));
        };
        let found = match object.get("format_version") {
            None => return Err(self.corrupt(key, "it has no format_version".to_owned())),
            Some(version) => match version.as_u64() {
                Some(0) | None => {
                    return Err(self.corrupt(
                        key,
                        format!("its format_version {version} is not a whole number from 1"),
                    ))
                }
                Some(found) => found,
            },
        };
        if found > u64::from(known) {
            return Err(StateError::NewerFormat {
                key: key.to_owned(),
                store: self.store.describe(),
                found,
                known,
            });
        }
        Ok(Some((bytes, found)))
    }

    fn corrupt(&self, key: &str, detail: String) -> StateError {
        StateError::Corrupt {
            key: key.to_owned(),
            store: self.store.describe(),
            detail,
        }
    }

    /// Reads a state document of the current format ([`State::get_versioned`]).
    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        let Some((bytes, _)) = self.get_versioned(key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| self.corrupt(key, e.to_string()))
    }

    async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StateError> {
        let mut bytes = serde_json::to_vec_pretty(value).expect("state documents serialise");
        bytes.push(b'\n');
        self.store.put(key, bytes).await
    }

    /// The vault's record, brought to the current format: formats 1 and 2 are upgraded as the
    /// module's docs say (a format-1 record keeps no ownership: [`VaultState::migrated_from`]).
    ///
    /// # Errors
    /// [`StateError::NewerFormat`] for a record of a format newer than [`VAULT_STATE_FORMAT`],
    /// [`StateError::Corrupt`] for one that is not a valid record of the format it names (or
    /// names none), and the store's errors.
    pub async fn read_vault(&self, vault: &ResourceId) -> Result<Option<VaultState>, StateError> {
        let key = format!("{}.json", vault_key("vaults", vault));
        let Some((bytes, found)) = self.get_versioned(&key).await? else {
            return Ok(None);
        };
        let read = match found {
            // Format 3 is format 4 without grants.
            found if found == u64::from(VAULT_STATE_FORMAT) || found == 3 => {
                serde_json::from_slice(&bytes).map_err(|e| e.to_string())
            }
            found @ (1 | 2) => legacy::upgrade_vault(&bytes, found as u32),
            other => Err(format!(
                "format_version {other} was never written by tagfence"
            )),
        };
        read.map(Some).map_err(|detail| self.corrupt(&key, detail))
    }

    pub async fn write_vault(
        &self,
        vault: &ResourceId,
        state: &VaultState,
    ) -> Result<(), StateError> {
        self.put_json(&format!("{}.json", vault_key("vaults", vault)), state)
            .await
    }

    pub async fn read_source(&self, cloud: Cloud) -> Result<Option<SourceState>, StateError> {
        self.get_json(&format!("sources/{}.json", cloud_key(cloud)))
            .await
    }

    /// Records the document applied, unless the record already holds a newer one (a run that
    /// started later finished first, or this run's lock was lost to a newer run): the record
    /// never moves back to a lower change number, since the freshness check and the grace
    /// window trust it. Returns whether it wrote.
    ///
    /// The read and the write are not one atomic step: two runs finishing within the same
    /// moment with different documents can still leave the older one (the next run of the
    /// newer document writes it again).
    pub async fn write_source(&self, state: &SourceState) -> Result<bool, StateError> {
        if let Some(current) = self.read_source(state.cloud).await? {
            if current.change_number > state.change_number {
                tracing::info!(
                    cloud = %state.cloud.as_str(),
                    recorded = current.change_number,
                    this_run = state.change_number,
                    "the source record already holds a newer document; left as it is"
                );
                return Ok(false);
            }
        }
        self.put_json(&format!("sources/{}.json", cloud_key(state.cloud)), state)
            .await?;
        Ok(true)
    }

    fn snapshot_key(cloud: Cloud, change_number: u64) -> String {
        format!("snapshots/{}/{change_number}.json.gz", cloud_key(cloud))
    }

    /// Archives a document as received (compressed if it was not); keeps the first copy of each
    /// change number. Returns whether it wrote.
    pub async fn archive_snapshot(
        &self,
        cloud: Cloud,
        change_number: u64,
        raw: &[u8],
    ) -> Result<bool, StateError> {
        let gz = if raw.starts_with(&[0x1f, 0x8b]) {
            raw.to_vec()
        } else {
            gzip(raw)
        };
        self.store
            .put_if_absent(&Self::snapshot_key(cloud, change_number), gz)
            .await
    }

    /// An archived document (gzip bytes), if kept.
    pub async fn read_snapshot(
        &self,
        cloud: Cloud,
        change_number: u64,
    ) -> Result<Option<Vec<u8>>, StateError> {
        self.store
            .get(&Self::snapshot_key(cloud, change_number))
            .await
    }

    fn run_key(run_id: &str) -> String {
        // Run ids start with their UTC date (see `new_run_id`): one folder per day.
        let day = run_id
            .get(..8)
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
        match day {
            Some(day) => format!(
                "runs/{}-{}-{}/{run_id}.json",
                &day[..4],
                &day[4..6],
                &day[6..]
            ),
            None => format!("runs/other/{run_id}.json"),
        }
    }

    /// Records a run; returns its key.
    pub async fn write_run(&self, record: &RunRecord) -> Result<String, StateError> {
        let key = Self::run_key(&record.run_id);
        self.put_json(&key, record).await?;
        Ok(key)
    }

    /// A recorded run, by id.
    pub async fn read_run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        self.get_json(&Self::run_key(run_id)).await
    }

    /// Takes the vault's lock, waiting up to `wait`.
    /// The vaults that hold grants (empty when none ever did).
    ///
    /// # Errors
    /// The store's errors; a corrupt or newer index.
    pub async fn read_grants_index(&self) -> Result<GrantsIndex, StateError> {
        Ok(self
            .get_json::<GrantsIndex>(GRANTS_INDEX_KEY)
            .await?
            .unwrap_or(GrantsIndex {
                format_version: STATE_FORMAT_VERSION,
                vaults: Default::default(),
            }))
    }

    /// Changes the grants index under its own lock: `change` edits it and says whether it
    /// changed (then it is written). Called only while holding the lock of every vault whose
    /// entry `change` edits, so that an entry and the vault's record never disagree for long:
    /// the entry is added before the vault's first grant is recorded, and removed only after
    /// its record was read holding none.
    ///
    /// # Errors
    /// The store's errors; the index lock held elsewhere for longer than `wait`.
    pub async fn update_grants_index(
        &self,
        wait: Duration,
        change: impl FnOnce(&mut GrantsIndex) -> bool + Send,
    ) -> Result<(), StateError> {
        let lock = self.store.lock(GRANTS_INDEX_LOCK, wait).await?;
        let result = async {
            let mut index = self.read_grants_index().await?;
            if change(&mut index) {
                index.format_version = STATE_FORMAT_VERSION;
                lock.confirm().await?;
                self.put_json(GRANTS_INDEX_KEY, &index).await?;
            }
            Ok(())
        }
        .await;
        lock.release().await;
        result
    }

    /// Every grant recorded (live, and ended but not yet removed), vault by vault in the
    /// index's order.
    ///
    /// # Errors
    /// The store's errors; a corrupt or newer index or record.
    pub async fn list_grants(&self) -> Result<Vec<GrantRecord>, StateError> {
        let index = self.read_grants_index().await?;
        let mut grants = Vec::new();
        for vault in index.vaults.keys() {
            let Ok(id) = vault.parse::<ResourceId>() else {
                continue;
            };
            if let Some(record) = self.read_vault(&id).await? {
                grants.extend(record.grants);
            }
        }
        Ok(grants)
    }

    pub async fn lock_vault(
        &self,
        vault: &ResourceId,
        wait: Duration,
    ) -> Result<Box<dyn Lock>, StateError> {
        self.store
            .lock(&vault_key("locks", vault), wait)
            .await
            .map_err(|e| match e {
                StateError::Locked { seconds, .. } => StateError::Locked {
                    vault: vault.to_string(),
                    seconds,
                },
                other => other,
            })
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 8),
        flate2::Compression::default(),
    );
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// Decompresses a snapshot.
///
/// # Errors
/// When it is not gzip.
pub fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

/// A new run id: time-ordered and unique enough for one deployment.
pub fn new_run_id(at: DateTime<Utc>) -> String {
    let nanos = at.timestamp_subsec_nanos();
    format!(
        "{}-{:08x}",
        at.format("%Y%m%dT%H%M%SZ"),
        nanos ^ std::process::id().rotate_left(16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lower_case_and_grouped() {
        let id: ResourceId =
            "/subscriptions/S1/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/KV-Prod"
                .parse()
                .unwrap();
        assert_eq!(vault_key("vaults", &id), "vaults/s1/rg/kv-prod");
        let storage: ResourceId =
            "/subscriptions/S1/resourceGroups/RG/providers/Microsoft.Storage/storageAccounts/kvprod"
                .parse()
                .unwrap();
        assert_eq!(
            vault_key("vaults", &storage),
            "vaults/s1/rg/storage_account/kvprod"
        );
        assert_eq!(
            State::snapshot_key(Cloud::AzureGovernment, 401),
            "snapshots/azuregovernment/401.json.gz"
        );
    }

    #[test]
    fn timestamps_round_trip() {
        let now = Utc::now();
        let text = timestamp(now);
        assert!(text.ends_with('Z'));
        assert_eq!(
            parse_timestamp(&text).unwrap().timestamp_millis(),
            now.timestamp_millis()
        );
        assert!(new_run_id(now).starts_with(&now.format("%Y%m%dT").to_string()));
    }

    fn grants_store() -> (State, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "tagfence-state-grants-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        (State::new(Arc::new(dir::DirStore::new(&dir))), dir)
    }

    fn kv() -> ResourceId {
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-one"
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn a_record_with_grants_round_trips_and_a_format_3_record_reads_without_any() {
        let (state, dir) = grants_store();
        let id = kv();
        let at = stored_time(Utc::now());
        let mut record = VaultState::new(&id);
        record.grants.push(GrantRecord {
            id: "g-0123456789abcdef".to_owned(),
            vault: id.to_string(),
            address: "20.37.158.9".parse().unwrap(),
            granted_at: at,
            expires_at: at + chrono::Duration::minutes(30),
            requested_by: "cli:test".to_owned(),
            reason: Some("release".to_owned()),
            run_id: "run".to_owned(),
            revoked_at: None,
            revoked_by: None,
            placed: true,
            removal_error: None,
        });
        state.write_vault(&id, &record).await.unwrap();
        assert_eq!(state.read_vault(&id).await.unwrap(), Some(record.clone()));
        let key = format!("{}.json", vault_key("vaults", &id));
        let mut raw: serde_json::Value =
            serde_json::from_slice(&state.store.get(&key).await.unwrap().unwrap()).unwrap();
        assert_eq!(raw["format_version"], 4);
        assert_eq!(raw["grants"][0]["address"], "20.37.158.9");
        // Format 3 is the same shape without grants.
        raw["format_version"] = 3.into();
        raw.as_object_mut().unwrap().remove("grants");
        state
            .store
            .put(&key, serde_json::to_vec(&raw).unwrap())
            .await
            .unwrap();
        let read = state.read_vault(&id).await.unwrap().unwrap();
        assert!(read.grants.is_empty());
        // A newer format is refused, never read without what it may hold.
        raw["format_version"] = 5.into();
        state
            .store
            .put(&key, serde_json::to_vec(&raw).unwrap())
            .await
            .unwrap();
        assert!(matches!(
            state.read_vault(&id).await,
            Err(StateError::NewerFormat { found: 5, .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn the_grants_index_is_changed_only_when_the_change_says_so() {
        let (state, dir) = grants_store();
        assert!(state.read_grants_index().await.unwrap().vaults.is_empty());
        let wait = Duration::from_secs(5);
        state
            .update_grants_index(wait, |index| {
                index.vaults.insert("v".to_owned(), vec!["g-1".to_owned()]);
                true
            })
            .await
            .unwrap();
        state.update_grants_index(wait, |_| false).await.unwrap();
        let index = state.read_grants_index().await.unwrap();
        assert_eq!(index.vaults["v"], ["g-1"]);
        assert_eq!(index.format_version, STATE_FORMAT_VERSION);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn snapshots_are_stored_compressed() {
        let gz = gzip(b"{\"x\":1}");
        assert!(gz.starts_with(&[0x1f, 0x8b]));
        assert_eq!(gunzip(&gz).unwrap(), b"{\"x\":1}");
    }
}
