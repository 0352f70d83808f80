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
//! | `locks/{subscription}/{group}/{vault}` | the per-vault lock (a blob lease, or a lock file) |
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
//! | source, run | 1 | the first, unchanged since |
//!
//! Reading never guesses: a document of a newer format than this build knows is refused
//! ([`StateError::NewerFormat`]) before it is parsed, one that does not parse as its own format
//! is [`StateError::Corrupt`], and the vault formats before the current one are read as they
//! were written and brought to the current one (`legacy.rs` says how; docs/operations.md tells
//! operators); the next write of the vault writes the current format. The source and run
//! documents of format 1 are read and written back byte for byte. tests/state_formats.rs reads
//! state that earlier builds really wrote (tests/fixtures/state/).

pub mod blob;
pub mod dir;
mod documents;
mod legacy;

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use documents::{
    AppliedRule, AppliedRules, AppliedState, DroppedPrefixes, LastRun, PreviousVersion,
    RecordedOutcome, RecordedTag, RuleOrigin, RunRecord, SourceState, TagHistory, VaultRecord,
    VaultState,
};

use crate::azure::VaultId;
use crate::core::service_tags::Cloud;

/// Version of the source and run documents; bumped on an incompatible change.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// Version of the vault documents ([`VaultState`]): 3 since the applied rules are recorded in
/// the state's own shape, with origins by tag name. Formats 1 and 2 are read and upgraded (see
/// the module's docs).
pub const VAULT_STATE_FORMAT: u32 = 3;

/// How long a vault lock may be held before another instance may take it over, unless renewed.
/// Blob leases allow 15–60 s; the holder renews it every third of this while it works. The
/// default of both stores; tests shorten it (`DirStore::with_lock_ttl`, `BlobStore::with_lock_ttl`).
pub const LOCK_TTL: Duration = Duration::from_secs(60);

/// Why the state could not be read or written. Every message names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
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
    /// Something at the lock's place that no wait will clear (a directory, a stale lock that
    /// cannot be removed).
    #[error("the lock {lock} cannot be taken: {detail}")]
    LockUnusable { lock: String, detail: String },
    /// The holder can no longer show that the lock is its own: another instance may be working
    /// on the vault, so this one must not write (the reconciler adds "; nothing written").
    #[error("the lock {lock} was lost ({detail})")]
    LockLost { lock: String, detail: String },
    /// Written by a newer tagfence, in a format this one does not know: rewriting it in the
    /// old format would lose what the newer one recorded.
    #[error("{key} in {store} was written by a newer tagfence (format {found}; this one reads up to {known}): upgrade tagfence, or move the state aside")]
    NewerFormat {
        key: String,
        store: String,
        found: u64,
        known: u32,
    },
}

/// What a lock holder knows about its hold, shared with the task renewing it: when the lock
/// was last acquired or renewed (on the monotonic clock, which keeps running while the process
/// is stopped, so a `SIGSTOP`ped holder finds its hold expired when it resumes), and whether a
/// renewal found it gone.
pub(crate) struct Hold {
    ttl: Duration,
    /// Where the lock is, for messages.
    lock: String,
    inner: std::sync::Mutex<HoldState>,
}

struct HoldState {
    renewed: Instant,
    lost: Option<String>,
}

/// Why a renewal failed.
pub(crate) enum RenewError {
    /// The lock belongs to another holder now (or is gone): stop renewing, never write again.
    Lost(String),
    /// The renewal could not be done this time (an outage); the hold ages until one succeeds.
    Failed(String),
}

impl Hold {
    /// A hold of `lock` acquired at `acquired` (taken before the acquiring request was sent).
    pub(crate) fn new(lock: String, ttl: Duration, acquired: Instant) -> Arc<Self> {
        Arc::new(Hold {
            ttl,
            lock,
            inner: std::sync::Mutex::new(HoldState {
                renewed: acquired,
                lost: None,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HoldState> {
        // A panic while holding this tiny lock leaves consistent data.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a renewal that was started at `at`.
    pub(crate) fn renewed(&self, at: Instant) {
        let mut state = self.state();
        state.renewed = state.renewed.max(at);
    }

    /// Records that the lock was lost; returns the error that says so.
    pub(crate) fn lose(&self, detail: String) -> StateError {
        let mut state = self.state();
        state.lost.get_or_insert(detail.clone());
        self.lost(detail)
    }

    pub(crate) fn lost(&self, detail: String) -> StateError {
        StateError::LockLost {
            lock: self.lock.clone(),
            detail,
        }
    }

    /// How long after its last renewal the lock still counts as held. Another instance may take
    /// it over after the whole TTL; the quarter kept back covers the time from this check to the
    /// write, a renewal in flight and clocks that disagree a little (a file's age is judged by
    /// wall clock).
    pub(crate) fn safe_for(&self) -> Duration {
        self.ttl - self.ttl / 4
    }

    /// Fails when a renewal found the lock lost, or when it was last renewed longer ago than
    /// [`Hold::safe_for`].
    pub(crate) fn check(&self) -> Result<(), StateError> {
        let state = self.state();
        if let Some(lost) = &state.lost {
            return Err(self.lost(lost.clone()));
        }
        let age = state.renewed.elapsed();
        if age > self.safe_for() {
            return Err(self.lost(format!(
                "last renewed {:.1} s ago, more than the {:.1} s it may be relied on (TTL {:.1} s); another instance may have taken it over",
                age.as_secs_f64(),
                self.safe_for().as_secs_f64(),
                self.ttl.as_secs_f64()
            )));
        }
        Ok(())
    }

    /// Whether a renewal found the lock lost.
    pub(crate) fn is_lost(&self) -> Option<String> {
        self.state().lost.clone()
    }
}

/// Keeps a held lock alive: runs a renewal every third of its TTL until stopped, dropped, or
/// the lock is found lost, so that a long reconcile is not mistaken for a dead one; records
/// each outcome in the [`Hold`], for [`Lock::confirm`].
pub(crate) struct Renewal {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Renewal {
    pub(crate) fn start<F, Fut>(hold: Arc<Hold>, mut renew: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), RenewError>> + Send + 'static,
    {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let every = hold.ttl / 3;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(every) => {
                        let started = Instant::now();
                        match renew().await {
                            Ok(()) => hold.renewed(started),
                            Err(RenewError::Failed(detail)) => {
                                tracing::warn!(lock = %hold.lock, error = %detail, "renewing a vault lock failed; trying again later");
                            }
                            Err(RenewError::Lost(detail)) => {
                                tracing::warn!(lock = %hold.lock, error = %detail, "a vault lock was lost; this instance writes nothing more to the vault");
                                hold.lose(detail);
                                break;
                            }
                        }
                    }
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
    /// Fails unless this holder can show it still holds the lock: no renewal found it lost,
    /// it was acquired or renewed recently enough ([`LOCK_TTL`] less a margin) and the store
    /// still shows it as this holder's (the lock file holds this holder's token; the blob
    /// lease renews now). Called just before writing a vault; a failure is
    /// [`StateError::LockLost`] and the vault must not be written.
    async fn confirm(&self) -> Result<(), StateError>;
    /// Stops renewing and gives the lock up, unless it now belongs to another holder.
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

/// An RFC 3339 timestamp, as every state document writes them: UTC, to the millisecond.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a timestamp written by [`timestamp`] (or any RFC 3339 timestamp).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `at` as a state document keeps it: cut to the millisecond. A record built with it equals the
/// record read back after writing it (the reconcile compares the two).
pub fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(3)
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
    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Option<u64>)>, StateError> {
        #[derive(Deserialize)]
        struct Versioned {
            format_version: Option<u64>,
        }
        let Some(bytes) = self.store.get(key).await? else {
            return Ok(None);
        };
        let known = Self::known_format(key);
        let found = serde_json::from_slice::<Versioned>(&bytes)
            .ok()
            .and_then(|v| v.format_version);
        if let Some(found) = found.filter(|found| *found > u64::from(known)) {
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
    pub async fn read_vault(&self, vault: &VaultId) -> Result<Option<VaultState>, StateError> {
        let key = format!("{}.json", vault_key("vaults", vault));
        let Some((bytes, found)) = self.get_versioned(&key).await? else {
            return Ok(None);
        };
        let read = match found {
            Some(found) if found == u64::from(VAULT_STATE_FORMAT) => {
                serde_json::from_slice(&bytes).map_err(|e| e.to_string())
            }
            Some(found @ (1 | 2)) => legacy::upgrade_vault(&bytes, found as u32),
            Some(other) => Err(format!(
                "format_version {other} was never written by tagfence"
            )),
            None => Err("it has no format_version".to_owned()),
        };
        read.map(Some).map_err(|detail| self.corrupt(&key, detail))
    }

    pub async fn write_vault(&self, vault: &VaultId, state: &VaultState) -> Result<(), StateError> {
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
