//! The storage interface both backends implement ([`Store`], [`Lock`]), its error
//! ([`StateError`]), and the hold on a vault lock that both backends renew ([`Hold`],
//! [`Renewal`]).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

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
    /// Whether the store itself (the directory, the container) exists. Reading never creates
    /// it, so that `tagfence status` pointed at a mistyped location says so instead of showing
    /// an empty state; writing creates it.
    async fn exists(&self) -> Result<bool, StateError> {
        Ok(true)
    }
    /// Writes (replaces) the document at `key`.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StateError>;
    /// Writes the document at `key` unless one exists; returns whether it wrote.
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<bool, StateError>;
    /// Takes the lock named `key`, waiting up to `wait` for another holder.
    async fn lock(&self, key: &str, wait: Duration) -> Result<Box<dyn Lock>, StateError>;
}
