//! The directory backend (`--state-dir`, `TAGFENCE_STATE_DIR`), for the CLI.
//!
//! Documents are files under the directory, written to a temporary file and renamed, so a crash
//! never leaves half a document. The lock is a file created exclusively; a lock file older than
//! [`super::LOCK_TTL`] is taken to belong to a process that died, and is taken over.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use super::{Lock, Renewal, StateError, Store, LOCK_TTL};

/// State in a directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// State under `root` (created when first written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirStore { root: root.into() }
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

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

struct FileLock {
    path: PathBuf,
    renewal: Renewal,
}

impl FileLock {
    /// Holds the lock at `path`, touching it every third of [`LOCK_TTL`].
    fn hold(path: PathBuf) -> Self {
        let touched = path.clone();
        let renewal = Renewal::start(move || {
            let touch = fs::OpenOptions::new()
                .append(true)
                .open(&touched)
                .and_then(|file| file.set_modified(SystemTime::now()));
            if let Err(err) = touch {
                tracing::warn!(lock = %touched.display(), error = %err, "renewing a vault lock failed");
            }
            std::future::ready(())
        });
        FileLock { path, renewal }
    }
}

#[async_trait]
impl Lock for FileLock {
    async fn release(mut self: Box<Self>) {
        self.renewal.stop();
        let _ = fs::remove_file(&self.path);
    }
}

#[async_trait]
impl Store for DirStore {
    fn describe(&self) -> String {
        format!("the state directory {}", self.root.display())
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
        let path = self.path(key);
        if path.exists() {
            return Ok(false);
        }
        write_atomically(&path, &bytes).map_err(|e| self.io("writing", key, e))?;
        Ok(true)
    }

    async fn lock(&self, key: &str, wait: Duration) -> Result<Box<dyn Lock>, StateError> {
        let path = self.path(key);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| self.io("locking", key, e))?;
        }
        let started = Instant::now();
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    let _ = writeln!(file, "pid {}", std::process::id());
                    return Ok(Box::new(FileLock::hold(path)));
                }
                Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .map(|modified| {
                            SystemTime::now()
                                .duration_since(modified)
                                .unwrap_or_default()
                                > LOCK_TTL
                        })
                        .unwrap_or(false);
                    if stale {
                        tracing::warn!(lock = %path.display(), "taking over a stale lock");
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if started.elapsed() >= wait {
                        return Err(StateError::Locked {
                            vault: key.to_owned(),
                            seconds: wait.as_secs(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(self.io("locking", key, err)),
            }
        }
    }
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
}
