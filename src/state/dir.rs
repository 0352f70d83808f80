//! The directory backend (`--state-dir`, `TAGFENCE_STATE_DIR`), for the CLI.
//!
//! Documents are files under the directory, written to a temporary file of their own (unique
//! per write, so concurrent writers never share one) and renamed, so a crash never leaves half a
//! document; a failed write removes its temporary file. The lock is a file created exclusively
//! holding a token unique to its holder; a lock file not renewed (touched) for the lock's TTL
//! ([`LOCK_TTL`] by default) is taken to belong to a process that died, and is taken over.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use super::store::{Hold, Lock, RenewError, Renewal, StateError, Store, LOCK_TTL};

/// State in a directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
    lock_ttl: Duration,
}

/// The shortest lock TTL: the renewal runs every third of it.
const MIN_LOCK_TTL: Duration = Duration::from_millis(30);

/// A number unique within this process, for temporary names and lock tokens.
fn next_unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl DirStore {
    /// State under `root` (created when first written), with locks of [`LOCK_TTL`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirStore {
            root: root.into(),
            lock_ttl: LOCK_TTL,
        }
    }

    /// The same store with locks that lapse `ttl` after their last renewal (at least 30 ms);
    /// for tests. Every instance sharing a directory must use the same TTL, since the one
    /// taking a lock over judges its age by its own.
    #[must_use]
    pub fn with_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl.max(MIN_LOCK_TTL);
        self
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn io(&self, operation: &'static str, key: &str, err: std::io::Error) -> StateError {
        StateError::Io {
            operation,
            key: key.to_owned(),
            store: self.describe(),
            detail: err.to_string(),
        }
    }
}

/// A temporary file beside `path`, named for this write alone (`<name>.tmp-<pid>-<n>`), and
/// removed when dropped unless it was moved into place.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// Writes `bytes` to a new temporary file beside `path` and flushes them to disk.
    fn write(path: &Path, bytes: &[u8]) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp-{}-{}", std::process::id(), next_unique()));
        let tmp = TempFile {
            path: path.with_file_name(name),
        };
        // `create_new`: a name left by a crashed process of the same pid is never shared.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp.path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        Ok(tmp)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // On success it was renamed away (NotFound) or is no longer needed; on failure this
        // is what keeps a full disk from collecting one temporary file per run.
        if let Err(err) = fs::remove_file(&self.path) {
            if err.kind() != ErrorKind::NotFound {
                tracing::warn!(file = %self.path.display(), error = %err, "removing a temporary state file failed");
            }
        }
    }
}

/// Replaces the document at `path` whole.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = TempFile::write(path, bytes)?;
    fs::rename(&tmp.path, path)
}

/// Writes the document at `path` unless one exists, atomically: the hard link fails with
/// `AlreadyExists` when another writer got there first, so exactly one writer reports writing.
fn create_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let tmp = TempFile::write(path, bytes)?;
    match fs::hard_link(&tmp.path, path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(err) => {
            // A file system without hard links (some network and FUSE ones): check, then
            // rename. Two writers racing here may both replace the document, with the same
            // bytes (a document is archived under its own change number).
            tracing::debug!(file = %path.display(), error = %err, "hard link refused; creating by rename");
            if path.exists() {
                return Ok(false);
            }
            fs::rename(&tmp.path, path)?;
            Ok(true)
        }
    }
}

/// What a lock holder writes into its lock file: unique to this holder (pid, a per-process
/// counter and the time), so that it can tell its own file from one that replaced it.
fn lock_token() -> Vec<u8> {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "pid {pid}\ntoken {pid}-{}-{nanos}\n",
        next_unique(),
        pid = std::process::id()
    )
    .into_bytes()
}

/// Whether the lock file at `path` is still the one holding `token`.
fn holds_token(path: &Path, token: &[u8]) -> std::io::Result<bool> {
    match fs::read(path) {
        Ok(bytes) => Ok(bytes == token),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

fn touch(path: &Path) -> std::io::Result<()> {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|file| file.set_modified(SystemTime::now()))
}

/// Renews the lock file when it is still this holder's; never touches another holder's.
fn renew_file(path: &Path, token: &[u8]) -> Result<(), RenewError> {
    match holds_token(path, token) {
        Ok(true) => touch(path).map_err(|e| RenewError::Failed(format!("touching it: {e}"))),
        Ok(false) => Err(RenewError::Lost(
            "the lock file was removed or taken over by another instance".to_owned(),
        )),
        Err(err) => Err(RenewError::Failed(format!("reading it: {err}"))),
    }
}

struct FileLock {
    path: PathBuf,
    token: Vec<u8>,
    hold: Arc<Hold>,
    renewal: Renewal,
}

impl FileLock {
    /// Holds the lock at `path` (created holding `token` at `acquired`), touching it every
    /// third of `ttl` while it is still this holder's.
    fn hold(path: PathBuf, token: Vec<u8>, ttl: Duration, acquired: Instant) -> Self {
        let hold = Hold::new(path.display().to_string(), ttl, acquired);
        let (renewed, mine) = (path.clone(), token.clone());
        let renewal = Renewal::start(hold.clone(), move || {
            std::future::ready(renew_file(&renewed, &mine))
        });
        FileLock {
            path,
            token,
            hold,
            renewal,
        }
    }
}

#[async_trait]
impl Lock for FileLock {
    async fn confirm(&self) -> Result<(), StateError> {
        self.hold.check()?;
        let started = Instant::now();
        match renew_file(&self.path, &self.token) {
            Ok(()) => {
                self.hold.renewed(started);
                Ok(())
            }
            Err(RenewError::Lost(detail)) => Err(self.hold.lose(detail)),
            // Cannot show the file is still ours: do not write.
            Err(RenewError::Failed(detail)) => Err(self
                .hold
                .lost(format!("the lock file cannot be checked: {detail}"))),
        }
    }

    async fn release(mut self: Box<Self>) {
        self.renewal.stop();
        match holds_token(&self.path, &self.token) {
            Ok(true) => {
                if let Err(err) = fs::remove_file(&self.path) {
                    tracing::warn!(lock = %self.path.display(), error = %err, "releasing the lock failed; it lapses after its TTL");
                }
            }
            // Taken over: it is another instance's lock now.
            Ok(false) => {
                tracing::warn!(lock = %self.path.display(), "the lock was taken over by another instance; left to it");
            }
            Err(err) => {
                tracing::warn!(lock = %self.path.display(), error = %err, "releasing the lock failed; it lapses after its TTL");
            }
        }
    }
}

/// The pause after the first failed try to take a lock; doubled after each, up to
/// [`MAX_LOCK_PAUSE`].
const FIRST_LOCK_PAUSE: Duration = Duration::from_millis(50);
const MAX_LOCK_PAUSE: Duration = Duration::from_millis(500);
/// Tries right after a takeover (or a release seen) that need no pause; bounded, so that no
/// sequence of events makes the loop spin.
const IMMEDIATE_RETRIES: u32 = 3;

impl DirStore {
    /// Takes the lock file at `key`, waiting up to `wait` for another holder, taking over a
    /// lock not renewed for the TTL. Every try after the first follows a pause, and the
    /// wait ends in [`StateError::Locked`], or [`StateError::LockUnusable`] when what is in
    /// the way is not a lock another instance holds (a directory, a stale file that cannot be
    /// removed).
    async fn take(&self, key: &str, wait: Duration) -> Result<FileLock, StateError> {
        let path = self.path(key);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| self.io("locking", key, e))?;
        }
        let deadline = Instant::now() + wait;
        let mut pause = FIRST_LOCK_PAUSE;
        let mut taking = Taking::default();
        loop {
            let trouble = match self.try_take(&path, key, &mut taking)? {
                Attempt::Taken(lock) => return Ok(lock),
                Attempt::Again => continue,
                Attempt::Wait { trouble } => trouble,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(match trouble {
                    Some(detail) => StateError::LockUnusable {
                        lock: path.display().to_string(),
                        detail,
                    },
                    None => StateError::Locked {
                        vault: key.to_owned(),
                        seconds: wait.as_secs(),
                    },
                });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_LOCK_PAUSE);
        }
    }

    /// One attempt at creating the lock file; when another one is in the way, what to do about
    /// it ([`Self::lock_in_the_way`]).
    fn try_take(&self, path: &Path, key: &str, taking: &mut Taking) -> Result<Attempt, StateError> {
        let started = Instant::now();
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(mut file) => {
                let token = lock_token();
                if let Err(err) = file.write_all(&token).and_then(|()| file.sync_all()) {
                    // A lock without its token could never be confirmed; give it up.
                    drop(file);
                    let _ = fs::remove_file(path);
                    return Err(self.io("locking", key, err));
                }
                Ok(Attempt::Taken(FileLock::hold(
                    path.to_path_buf(),
                    token,
                    self.lock_ttl,
                    started,
                )))
            }
            Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                self.lock_in_the_way(path, taking)
            }
            Err(err) => Err(self.io("locking", key, err)),
        }
    }

    /// A lock file is in the way: wait for a live holder, take over a stale one (not renewed
    /// for longer than the TTL), refuse what is no lock tagfence made.
    fn lock_in_the_way(&self, path: &Path, taking: &mut Taking) -> Result<Attempt, StateError> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            // Released in between: try again at once.
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(taking.again()),
            Err(err) => {
                return Ok(Attempt::Wait {
                    trouble: Some(format!("reading its age failed: {err}")),
                })
            }
        };
        if meta.is_dir() {
            return Err(StateError::LockUnusable {
                lock: path.display().to_string(),
                detail: "it is a directory, not a lock file tagfence made, and cannot be taken over; remove it".to_owned(),
            });
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        if age <= self.lock_ttl {
            if !taking.waiting_said {
                // Say why the run pauses: after a crash the next run waits out the dead
                // holder's TTL before taking its lock over.
                tracing::info!(lock = %path.display(), age_s = age.as_secs(), ttl_s = self.lock_ttl.as_secs(), "waiting for a vault lock another tagfence run holds (a lock its holder stops renewing is taken over once it is older than the TTL)");
                taking.waiting_said = true;
            }
            return Ok(Attempt::Wait { trouble: None });
        }
        if !taking.warned {
            tracing::warn!(lock = %path.display(), age_s = age.as_secs(), "taking over a stale lock");
            taking.warned = true;
        }
        match fs::remove_file(path) {
            Ok(()) => Ok(taking.again()),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(Attempt::Wait { trouble: None }),
            Err(err) => Ok(Attempt::Wait {
                trouble: Some(format!(
                    "it was not renewed for {} s (TTL {} s), but removing it failed: {err}; remove it",
                    age.as_secs(),
                    self.lock_ttl.as_secs()
                )),
            }),
        }
    }
}

#[async_trait]
impl Store for DirStore {
    fn describe(&self) -> String {
        format!("the state directory {}", self.root.display())
    }

    async fn exists(&self) -> Result<bool, StateError> {
        Ok(self.root.is_dir())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        match fs::read(self.path(key)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(self.io("reading", key, err)),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StateError> {
        write_atomically(&self.path(key), &bytes).map_err(|e| self.io("writing", key, e))
    }

    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<bool, StateError> {
        create_atomically(&self.path(key), &bytes).map_err(|e| self.io("writing", key, e))
    }

    async fn lock(&self, key: &str, wait: Duration) -> Result<Box<dyn Lock>, StateError> {
        Ok(Box::new(self.take(key, wait).await?))
    }
}

/// What taking a lock has done so far, across attempts.
#[derive(Debug, Default)]
struct Taking {
    /// Attempts made at once, without a pause (the lock went away in between).
    immediate: u32,
    /// Whether taking over a stale lock was logged.
    warned: bool,
    /// Whether waiting for a live holder was logged.
    waiting_said: bool,
}

impl Taking {
    /// Try again at once, a few times; then wait like any other attempt.
    fn again(&mut self) -> Attempt {
        if self.immediate < IMMEDIATE_RETRIES {
            self.immediate += 1;
            Attempt::Again
        } else {
            Attempt::Wait { trouble: None }
        }
    }
}

/// What one attempt at taking a lock came to.
enum Attempt {
    Taken(FileLock),
    /// Try again at once.
    Again,
    /// Wait before trying again; `trouble` says why the lock in the way cannot be taken over
    /// (reported if the wait runs out).
    Wait {
        trouble: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tagfence-dirstore-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn reads_what_it_writes_and_creates_only_once() {
        let store = DirStore::new(temp_dir("rw"));
        assert_eq!(store.get("a/b.json").await.unwrap(), None);
        store.put("a/b.json", b"1".to_vec()).await.unwrap();
        store.put("a/b.json", b"2".to_vec()).await.unwrap();
        assert_eq!(store.get("a/b.json").await.unwrap().unwrap(), b"2");
        assert!(store.put_if_absent("s/1.gz", b"x".to_vec()).await.unwrap());
        assert!(!store.put_if_absent("s/1.gz", b"y".to_vec()).await.unwrap());
        assert_eq!(store.get("s/1.gz").await.unwrap().unwrap(), b"x");
    }

    #[tokio::test]
    async fn a_held_lock_makes_others_wait_then_fail() {
        let store = DirStore::new(temp_dir("lock"));
        let held = store.lock("locks/v", Duration::from_secs(1)).await.unwrap();
        let started = Instant::now();
        let err = store
            .lock("locks/v", Duration::from_millis(300))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, StateError::Locked { .. }));
        assert!(started.elapsed() >= Duration::from_millis(300));
        held.release().await;
        store
            .lock("locks/v", Duration::from_millis(300))
            .await
            .unwrap()
            .release()
            .await;
    }

    fn temp_files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let Ok(entries) = fs::read_dir(dir) else {
            return found;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(temp_files(&path));
            } else if path.to_string_lossy().contains(".tmp-") {
                found.push(path);
            }
        }
        found
    }

    /// Makes the lock file at `path` look `age` old.
    fn age(path: &Path, age: Duration) {
        fs::OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
    }

    fn modified(path: &Path) -> SystemTime {
        fs::metadata(path).unwrap().modified().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_of_one_key_never_collide() {
        let root = temp_dir("concurrent");
        let store = Arc::new(DirStore::new(&root));
        let mut tasks = Vec::new();
        for i in 0..20u8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let put = store.put("vaults/a.json", vec![i]).await;
                let created = store.put_if_absent("snapshots/1.json.gz", vec![i]).await;
                (put, created)
            }));
        }
        let mut created = 0;
        for task in tasks {
            let (put, create) = task.await.unwrap();
            put.unwrap();
            created += usize::from(create.unwrap());
        }
        assert_eq!(created, 1);
        assert_eq!(temp_files(&root), Vec::<PathBuf>::new());
        assert_eq!(
            store
                .get("snapshots/1.json.gz")
                .await
                .unwrap()
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn a_failed_write_leaves_no_temporary_file() {
        let root = temp_dir("failed-write");
        let store = DirStore::new(&root);
        // A directory where the document should be: the rename fails (as root too, unlike a
        // read-only parent).
        fs::create_dir_all(root.join("vaults/a.json")).unwrap();
        let err = store
            .put("vaults/a.json", b"{}".to_vec())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("writing vaults/a.json in the state directory"),
            "{err}"
        );
        // And a parent that is a file: the temporary file cannot even be made.
        fs::write(root.join("sources"), b"").unwrap();
        assert!(store
            .put("sources/public.json", b"{}".to_vec())
            .await
            .is_err());
        // An existing directory counts as present for a create-if-absent.
        assert!(!store
            .put_if_absent("vaults/a.json", b"{}".to_vec())
            .await
            .unwrap());
        assert_eq!(temp_files(&root), Vec::<PathBuf>::new());
    }

    #[tokio::test]
    async fn a_directory_at_the_lock_path_fails_at_once_with_its_path() {
        let root = temp_dir("lock-dir");
        let store = DirStore::new(&root).with_lock_ttl(Duration::from_secs(1));
        fs::create_dir_all(root.join("locks/s/rg/kv")).unwrap();
        let started = Instant::now();
        let err = store
            .lock("locks/s/rg/kv", Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        let message = err.to_string();
        assert!(matches!(err, StateError::LockUnusable { .. }), "{message}");
        assert!(
            message.contains(&root.join("locks/s/rg/kv").display().to_string())
                && message.contains("is a directory")
                && message.ends_with("remove it"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_stale_lock_that_cannot_be_removed_ends_the_wait_with_why() {
        let root = temp_dir("lock-stuck");
        let store = DirStore::new(&root).with_lock_ttl(Duration::from_secs(1));
        let locks = root.join("locks");
        fs::create_dir_all(&locks).unwrap();
        fs::write(locks.join("kv"), b"pid 1\n").unwrap();
        age(&locks.join("kv"), Duration::from_secs(3600));
        // A read-only folder keeps the file, except from root, who ignores permissions.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&locks, fs::Permissions::from_mode(0o555)).unwrap();
        let writable = fs::write(locks.join("probe"), b"").is_ok();
        let started = Instant::now();
        let result = store.lock("locks/kv", Duration::from_millis(600)).await;
        fs::set_permissions(&locks, fs::Permissions::from_mode(0o755)).unwrap();
        if writable {
            eprintln!("running as root: the stale lock could be removed, nothing to check");
            result.unwrap().release().await;
            return;
        }
        let err = result.err().unwrap();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(600) && elapsed < Duration::from_secs(2),
            "{elapsed:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("removing it failed") && message.contains("locks/kv"),
            "{message}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_renewed_lock_is_confirmed_after_its_ttl_and_not_taken_over() {
        let root = temp_dir("lock-renewed");
        let ttl = Duration::from_millis(600);
        let store = DirStore::new(&root).with_lock_ttl(ttl);
        let held = store.lock("locks/kv", Duration::ZERO).await.unwrap();
        tokio::time::sleep(ttl * 2).await;
        held.confirm().await.unwrap();
        let other = DirStore::new(&root).with_lock_ttl(ttl);
        assert!(matches!(
            other.lock("locks/kv", Duration::from_millis(200)).await,
            Err(StateError::Locked { .. })
        ));
        held.release().await;
        assert!(!root.join("locks/kv").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_holder_whose_lock_was_taken_over_cannot_confirm_nor_release_it() {
        let root = temp_dir("lock-taken");
        let ttl = Duration::from_secs(1);
        let store = DirStore::new(&root).with_lock_ttl(ttl);
        let first = store.lock("locks/kv", Duration::ZERO).await.unwrap();
        first.confirm().await.unwrap();
        // As if the first holder had been stopped for longer than the TTL.
        age(&root.join("locks/kv"), Duration::from_secs(5));
        let second = store.lock("locks/kv", Duration::ZERO).await.unwrap();
        let err = first.confirm().await.unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StateError::LockLost { .. }), "{message}");
        assert!(
            message.starts_with(&format!(
                "the lock {} was lost (the lock file was removed or taken over",
                root.join("locks/kv").display()
            )) && message.ends_with(')'),
            "{message}"
        );
        // Releasing the lost lock leaves the new holder's file alone.
        first.release().await;
        assert!(root.join("locks/kv").exists());
        second.confirm().await.unwrap();
        second.release().await;
        assert!(!root.join("locks/kv").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_renewal_never_touches_another_holders_lock_file() {
        let root = temp_dir("lock-foreign");
        let ttl = Duration::from_millis(300);
        let store = DirStore::new(&root).with_lock_ttl(ttl);
        let held = store.lock("locks/kv", Duration::ZERO).await.unwrap();
        // Another holder's file in its place (after a takeover), last touched an hour ago.
        let path = root.join("locks/kv");
        fs::write(&path, b"pid 1\ntoken 1-0-0\n").unwrap();
        age(&path, Duration::from_secs(3600));
        let before = modified(&path);
        tokio::time::sleep(ttl * 2).await;
        assert_eq!(
            modified(&path),
            before,
            "the renewal touched a foreign lock"
        );
        assert!(matches!(
            held.confirm().await,
            Err(StateError::LockLost { .. })
        ));
        assert_eq!(modified(&path), before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lock_not_renewed_for_most_of_its_ttl_is_not_confirmed() {
        let root = temp_dir("lock-unrenewed");
        let ttl = Duration::from_millis(400);
        let store = DirStore::new(&root).with_lock_ttl(ttl);
        let mut held = store.take("locks/kv", Duration::ZERO).await.unwrap();
        held.confirm().await.unwrap();
        // As if the process had been stopped: no renewal runs, the monotonic clock goes on.
        held.renewal.stop();
        tokio::time::sleep(ttl).await;
        let message = held.confirm().await.unwrap_err().to_string();
        assert!(
            message.contains("was lost (last renewed") && message.contains("may be relied on"),
            "{message}"
        );
        // The file is still this holder's, so it is released.
        Box::new(held).release().await;
        assert!(!root.join("locks/kv").exists());
    }
}
