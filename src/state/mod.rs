//! What tagfence remembers between runs, and where.
//!
//! Without memory tagfence cannot tell a rule it added (and must remove when Microsoft retires
//! the range) from a rule a person added (which it must never touch), cannot refuse a Service
//! Tags document older than the one it already applied, and cannot show what happened last
//! Wednesday. So it keeps, in a small key/value store:
//!
//! | key | what |
//! |---|---|
//! | `vaults/{subscription}/{group}/{vault}.json` | [`VaultState`]: the rules tagfence last applied and verified, and the last run's outcome |
//! | `sources/{cloud}.json` | [`SourceState`]: the newest document applied, and when each selected tag last changed |
//! | `snapshots/{cloud}/{change number}.json.gz` | every Service Tags document used, as received (gzip) |
//! | `runs/{date}/{run id}.json` | [`RunRecord`]: one per run (run ids sort by time) |
//! | `locks/{subscription}/{group}/{vault}` | the per-vault lock (a blob lease, or a lock file) |
//!
//! Two backends implement the tiny [`Store`] interface: Azure Blob storage ([`blob`], the
//! Function App's own storage account, reached with its managed identity) and a directory
//! ([`dir`], for the CLI). Everything typed lives here, once.

pub mod blob;
pub mod dir;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use ipnet::Ipv4Net;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::azure::VaultId;
use crate::core::desired::DesiredRules;
use crate::core::service_tags::Cloud;

/// Version of every state document; bumped on an incompatible change.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// How long a vault lock may be held before another instance may take it over, unless renewed.
/// Blob leases allow 15–60 s; the holder renews it while it works.
pub const LOCK_TTL: Duration = Duration::from_secs(60);

/// Why the state could not be read or written. Every message names the key.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{operation} {key} in {store}: {detail}")]
    Io {
        operation: &'static str,
        key: String,
        store: String,
        detail: String,
    },
    #[error("{key} in {store} is not a valid state document ({detail}); repair or delete it (without it the next run keeps every rule it cannot attribute)")]
    Corrupt {
        key: String,
        store: String,
        detail: String,
    },
    #[error("vault {vault} is locked by another tagfence instance; waited {seconds} s")]
    Locked { vault: String, seconds: u64 },
}

/// Keeps a held lock alive: runs a renewal every third of [`LOCK_TTL`] until stopped or
/// dropped, so that a long reconcile is not mistaken for a dead one.
pub(crate) struct Renewal {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Renewal {
    pub(crate) fn start<F, Fut>(mut renew: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(LOCK_TTL / 3) => renew().await,
                }
            }
        });
        Renewal { stop: Some(stop) }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A held lock. Dropping it without [`Lock::release`] leaves it to expire.
#[async_trait]
pub trait Lock: Send + Sync {
    async fn release(self: Box<Self>);
}

/// The storage interface both backends implement: whole-document reads and writes, a
/// create-if-absent write, and a lock.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Where the state lives, for messages.
    fn describe(&self) -> String;
    /// The document at `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Writes (replaces) the document at `key`.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StateError>;
    /// Writes the document at `key` unless one exists; returns whether it wrote.
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<bool, StateError>;
    /// Takes the lock named `key`, waiting up to `wait` for another holder.
    async fn lock(&self, key: &str, wait: Duration) -> Result<Box<dyn Lock>, StateError>;
}

/// The rules tagfence applied to a vault and verified, with what they were computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedState {
    /// The desired rules as computed, written and verified (their `rules` are tagfence's own).
    pub desired: DesiredRules,
    pub cloud: Cloud,
    /// The document's change number.
    pub change_number: u64,
    /// What the desired rules were computed from (settings and tag change numbers); equal
    /// inputs give equal rules, which the next run reuses instead of re-planning.
    pub inputs: String,
    /// Unmanaged rules kept at the time (a summarized fit depends on the room they left).
    pub kept: usize,
    /// When the rules were written, or last found in place.
    pub applied_at: String,
    pub run_id: String,
}

/// The last run's outcome for a vault, for `tagfence status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    pub run_id: String,
    pub at: String,
    pub trigger: String,
    /// `in_sync`, `applied`, `would_apply`, `refused` or `failed`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    pub change_number: u64,
    pub added: usize,
    pub removed: usize,
}

/// Everything remembered about one vault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaultState {
    pub format_version: u32,
    pub vault: String,
    #[serde(default)]
    pub applied: Option<AppliedState>,
    #[serde(default)]
    pub last_run: Option<LastRun>,
    /// Rules a write is adding whose outcome is not yet known: recorded before the `PATCH`,
    /// cleared once the write is verified. A crash between the two leaves them here, so the
    /// next run still knows tagfence added them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Ipv4Net>,
}

impl VaultState {
    pub fn new(vault: &VaultId) -> Self {
        VaultState {
            format_version: STATE_FORMAT_VERSION,
            vault: vault.to_string(),
            applied: None,
            last_run: None,
            pending: Vec::new(),
        }
    }

    /// The rules tagfence owns on the vault (the last applied set and any pending write), or
    /// `None` when it knows of none (first run, lost state).
    pub fn owned_rules(&self) -> Option<Vec<Ipv4Net>> {
        if self.applied.is_none() && self.pending.is_empty() {
            return None;
        }
        let mut owned: Vec<Ipv4Net> = self
            .applied
            .iter()
            .flat_map(|a| a.desired.rules.iter().copied())
            .chain(self.pending.iter().copied())
            .collect();
        owned.sort_unstable();
        owned.dedup();
        Some(owned)
    }
}

/// Where the previous version of a tag can be found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousVersion {
    /// The tag's own change number then.
    pub change_number: u64,
    /// The document (its change number) that holds that version, in the snapshot archive.
    pub document: u64,
}

/// When a tag last changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagHistory {
    pub change_number: u64,
    /// When this change number was first seen.
    pub since: String,
    /// The newest document seen holding this version (archived, for the grace window).
    pub seen_in: u64,
    /// The version it replaced, if seen.
    #[serde(default)]
    pub previous: Option<PreviousVersion>,
}

/// What is remembered about a cloud's Service Tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    pub format_version: u32,
    pub cloud: Cloud,
    /// The newest document applied.
    pub change_number: u64,
    pub applied_at: String,
    /// The selected tags, by name.
    #[serde(default)]
    pub tags: BTreeMap<String, TagHistory>,
}

/// One vault in a run record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaultRecord {
    pub vault: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    pub wrote: bool,
    /// Whether the desired rules were reused from the last apply (inputs unchanged).
    pub reused_plan: bool,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
    pub unmanaged: Vec<String>,
    pub extra_addresses: u64,
    /// Ranges kept from the previous version of a tag inside the grace window.
    #[serde(default)]
    pub grace_tags: Vec<String>,
    pub elapsed_ms: u64,
    pub warnings: Vec<String>,
}

/// One run, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub format_version: u32,
    pub run_id: String,
    /// `timer`, `http`, `eventgrid` or `cli`.
    pub trigger: String,
    pub started_at: String,
    pub finished_at: String,
    pub elapsed_ms: u64,
    pub dry_run: bool,
    pub cloud: Option<Cloud>,
    pub change_number: Option<u64>,
    pub origin: Option<String>,
    /// Per selected tag: its change number in the document used.
    #[serde(default)]
    pub tag_change_numbers: BTreeMap<String, u64>,
    pub vaults: Vec<VaultRecord>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// An RFC 3339 timestamp, as every state document writes them.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a timestamp written by [`timestamp`].
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn vault_key(prefix: &str, vault: &VaultId) -> String {
    // Lower-cased: ARM ids are case-insensitive, the store's keys are not.
    format!(
        "{prefix}/{}/{}/{}",
        vault.subscription.to_ascii_lowercase(),
        vault.resource_group.to_ascii_lowercase(),
        vault.name.to_ascii_lowercase()
    )
}

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

    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        let Some(bytes) = self.store.get(key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                key: key.to_owned(),
                store: self.store.describe(),
                detail: e.to_string(),
            })
    }

    async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StateError> {
        let mut bytes = serde_json::to_vec_pretty(value).expect("state documents serialise");
        bytes.push(b'\n');
        self.store.put(key, bytes).await
    }

    pub async fn read_vault(&self, vault: &VaultId) -> Result<Option<VaultState>, StateError> {
        self.get_json(&format!("{}.json", vault_key("vaults", vault)))
            .await
    }

    pub async fn write_vault(&self, vault: &VaultId, state: &VaultState) -> Result<(), StateError> {
        self.put_json(&format!("{}.json", vault_key("vaults", vault)), state)
            .await
    }

    pub async fn read_source(&self, cloud: Cloud) -> Result<Option<SourceState>, StateError> {
        self.get_json(&format!("sources/{}.json", cloud_key(cloud)))
            .await
    }

    pub async fn write_source(&self, state: &SourceState) -> Result<(), StateError> {
        self.put_json(&format!("sources/{}.json", cloud_key(state.cloud)), state)
            .await
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
    pub async fn lock_vault(
        &self,
        vault: &VaultId,
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
        let id: VaultId =
            "/subscriptions/S1/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/KV-Prod"
                .parse()
                .unwrap();
        assert_eq!(vault_key("vaults", &id), "vaults/s1/rg/kv-prod");
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

    #[test]
    fn snapshots_are_stored_compressed() {
        let gz = gzip(b"{\"x\":1}");
        assert!(gz.starts_with(&[0x1f, 0x8b]));
        assert_eq!(gunzip(&gz).unwrap(), b"{\"x\":1}");
    }
}
