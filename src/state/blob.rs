//! The Azure Blob storage backend: a container (default `tagfence`) in the Function App's own
//! storage account, reached with the same managed identity (role Storage Blob Data Owner), never
//! with account keys. Built on `azure_storage_blob` 1.x.
//!
//! The per-vault lock is a lease on a small lock blob: 60 s, renewed every 20 s while the vault
//! is reconciled, released at the end; if the process dies, the lease lapses within a minute and
//! the next run takes over (Key Vault has no ETags: the `Vault` model in
//! Azure/azure-rest-api-specs' `keyvault.json` has no `etag` and its operations take no `If-Match`,
//! so tagfence must be the single writer of a vault). Before writing a vault the holder renews the
//! lease once more ([`Lock::confirm`]): Blob storage answers 409 to a lease id that is no longer
//! the blob's, so a holder that lost its lease (paused past its TTL, then taken over) finds out and
//! writes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RequestContent, StatusCode, Transport};
use azure_storage_blob::models::{
    BlobClientAcquireLeaseResultHeaders, BlockBlobClientUploadOptions,
};
use azure_storage_blob::{BlobClient, BlobContainerClient, BlobContainerClientOptions};
use futures::StreamExt;
use tokio::sync::OnceCell;
use url::Url;

use super::store::{Hold, Lock, RenewError, Renewal, StateError, Store, LOCK_TTL};

/// The lease durations Blob storage accepts (besides infinite, which tagfence never takes).
const MIN_LEASE: Duration = Duration::from_secs(15);
const MAX_LEASE: Duration = Duration::from_secs(60);
/// The pause between tries to take a lease another instance holds.
const LEASE_PAUSE: Duration = Duration::from_millis(500);
use crate::azure::pipeline::{error_chain, HttpOptions};

/// The container tagfence keeps its state in, by default.
pub const DEFAULT_CONTAINER: &str = "tagfence";

/// State in a blob container.
#[derive(Clone)]
pub struct BlobStore {
    container: Arc<BlobContainerClient>,
    url: Url,
    created: Arc<OnceCell<()>>,
    lock_ttl: Duration,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

/// Why the blob backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BlobSetupError {
    #[error("the state URL {0} must use https (storage tokens are never sent in clear)")]
    NotHttps(String),
    #[error("reading the extra CA certificate {path}: {detail}")]
    Ca { path: String, detail: String },
    #[error("setting up the blob client for {url}: {detail}")]
    Client { url: String, detail: String },
}

fn status_of(err: &azure_core::Error) -> Option<u16> {
    err.http_status().map(u16::from)
}

impl BlobStore {
    /// A store for the container at `container_url`, authenticating with `credential`.
    /// `extra_ca` (PEM) is trusted in addition to the system roots — for a storage emulator
    /// with a test CA, or a TLS-inspecting proxy.
    ///
    /// # Errors
    /// [`BlobSetupError`] naming what is wrong.
    pub fn new(
        container_url: Url,
        credential: Arc<dyn TokenCredential>,
        http: &HttpOptions,
        extra_ca: Option<&[u8]>,
    ) -> Result<Self, BlobSetupError> {
        if container_url.scheme() != "https" {
            return Err(BlobSetupError::NotHttps(container_url.to_string()));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(http.attempt_timeout.min(Duration::from_secs(10)))
            .timeout(http.attempt_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // The storage client's partitioned downloads need the raw bytes.
            .gzip(false);
        if let Some(pem) = extra_ca {
            let certificate =
                reqwest::Certificate::from_pem(pem).map_err(|e| BlobSetupError::Ca {
                    path: "(given)".to_owned(),
                    detail: e.to_string(),
                })?;
            builder = builder.add_root_certificate(certificate);
        }
        let client = builder.build().map_err(|e| BlobSetupError::Client {
            url: container_url.to_string(),
            detail: e.to_string(),
        })?;
        let options = BlobContainerClientOptions {
            client_options: ClientOptions {
                transport: Some(Transport::new(Arc::new(client))),
                ..ClientOptions::default()
            },
            ..BlobContainerClientOptions::default()
        };
        let container =
            BlobContainerClient::new(container_url.clone(), Some(credential), Some(options))
                .map_err(|e| BlobSetupError::Client {
                    url: container_url.to_string(),
                    detail: error_chain(&e),
                })?;
        Ok(BlobStore {
            container: Arc::new(container),
            url: container_url,
            created: Arc::new(OnceCell::new()),
            lock_ttl: LOCK_TTL,
        })
    }

    /// The same store with leases of `ttl`, clamped to what Blob storage accepts (15 to 60 s,
    /// whole seconds); for tests. The lease is renewed every third of it.
    #[must_use]
    pub fn with_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = Duration::from_secs(ttl.clamp(MIN_LEASE, MAX_LEASE).as_secs());
        self
    }

    fn io(&self, operation: &'static str, key: &str, err: &azure_core::Error) -> StateError {
        StateError::Io {
            operation,
            key: key.to_owned(),
            store: self.describe(),
            detail: error_chain(err),
        }
    }

    /// Creates the container on first use (Storage Blob Data Owner may; it may also exist).
    async fn ensure_container(&self) -> Result<(), StateError> {
        self.created
            .get_or_try_init(|| async {
                match self.container.create(None).await {
                    Ok(_) => Ok(()),
                    Err(err) if status_of(&err) == Some(409) => Ok(()),
                    Err(err) => Err(self.io("creating the container for", "", &err)),
                }
            })
            .await
            .map(|_| ())
    }

    async fn upload(
        &self,
        key: &str,
        bytes: Vec<u8>,
        only_if_absent: bool,
    ) -> Result<bool, StateError> {
        self.ensure_container().await?;
        let mut options = BlockBlobClientUploadOptions {
            blob_content_type: Some(
                if key.ends_with(".gz") {
                    "application/gzip"
                } else {
                    "application/json"
                }
                .to_owned(),
            ),
            ..Default::default()
        };
        if only_if_absent {
            options = options.if_not_exists();
        }
        let content: RequestContent<azure_core::Bytes, azure_core::http::NoFormat> =
            RequestContent::from(bytes);
        match self
            .container
            .blob_client(key)
            .upload(content, Some(options))
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if only_if_absent && matches!(status_of(&err), Some(409 | 412)) => Ok(false),
            Err(err) => Err(self.io("writing", key, &err)),
        }
    }
}

struct Lease {
    store: BlobStore,
    key: String,
    lease_id: String,
    hold: Arc<Hold>,
    renewal: Renewal,
}

/// Renews the lease `id` on `blob`. 409 (the blob has another lease, or none) and 412 mean the
/// lease is no longer this holder's; 404 that the lock blob is gone.
async fn renew_lease(blob: &BlobClient, id: String) -> Result<(), RenewError> {
    match blob.renew_lease(id, None).await {
        Ok(_) => Ok(()),
        Err(err) if matches!(status_of(&err), Some(404 | 409 | 412)) => Err(RenewError::Lost(
            format!("renewing the lease was refused: {}", error_chain(&err)),
        )),
        Err(err) => Err(RenewError::Failed(error_chain(&err))),
    }
}

#[async_trait]
impl Lock for Lease {
    async fn confirm(&self) -> Result<(), StateError> {
        if let Some(lost) = self.hold.is_lost() {
            return Err(self.hold.lost(lost));
        }
        let started = Instant::now();
        let blob = self.store.container.blob_client(&self.key);
        match renew_lease(&blob, self.lease_id.clone()).await {
            Ok(()) => {
                self.hold.renewed(started);
                Ok(())
            }
            Err(RenewError::Lost(detail)) => Err(self.hold.lose(detail)),
            // Storage did not answer: the lease cannot have gone to another holder before its
            // TTL, so the last renewal still vouches for it if recent enough.
            Err(RenewError::Failed(detail)) => {
                tracing::warn!(lock = %self.key, error = %detail, "renewing the lock before writing failed; relying on the last renewal");
                self.hold.check()
            }
        }
    }

    async fn release(mut self: Box<Self>) {
        self.renewal.stop();
        if let Err(err) = self
            .store
            .container
            .blob_client(&self.key)
            .release_lease(self.lease_id.clone(), None)
            .await
        {
            // It lapses within a minute anyway.
            tracing::warn!(lock = %self.key, error = %error_chain(&err), "releasing the lock failed");
        }
    }
}

#[async_trait]
impl Store for BlobStore {
    fn describe(&self) -> String {
        format!("the state container {}", self.url)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        // A read never creates the container: a missing blob and a missing container both
        // read as nothing (the writes create the container).
        let result = match self.container.blob_client(key).download(None).await {
            Ok(result) => result,
            Err(err) if status_of(&err) == Some(404) => return Ok(None),
            Err(err) => return Err(self.io("reading", key, &err)),
        };
        let mut body = result.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.io("reading", key, &e))?;
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(bytes))
    }

    async fn exists(&self) -> Result<bool, StateError> {
        self.container
            .exists()
            .await
            .map_err(|err| self.io("checking", "the container", &err))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StateError> {
        self.upload(key, bytes, false).await.map(|_| ())
    }

    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<bool, StateError> {
        self.upload(key, bytes, true).await
    }

    async fn lock(&self, key: &str, wait: Duration) -> Result<Box<dyn Lock>, StateError> {
        // The lease needs a blob to lease.
        self.upload(key, Vec::new(), true).await?;
        let blob = self.container.blob_client(key);
        let deadline = Instant::now() + wait;
        let (lease_id, acquired) = loop {
            let started = Instant::now();
            match blob
                .acquire_lease(self.lock_ttl.as_secs() as i32, None)
                .await
            {
                Ok(response) => match response.lease_id() {
                    Ok(Some(id)) => break (id, started),
                    _ => {
                        return Err(StateError::Io {
                            operation: "locking",
                            key: key.to_owned(),
                            store: self.describe(),
                            detail: "the lease response has no x-ms-lease-id".to_owned(),
                        })
                    }
                },
                // 409 LeaseAlreadyPresent: another instance works on this vault. Every other
                // answer ends the wait: no other is cleared by waiting.
                Err(err) if err.http_status() == Some(StatusCode::Conflict) => {}
                Err(err) => return Err(self.io("locking", key, &err)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StateError::Locked {
                    vault: key.to_owned(),
                    seconds: wait.as_secs(),
                });
            }
            tokio::time::sleep(LEASE_PAUSE.min(deadline - now)).await;
        };
        // Keep the lease while the vault is being reconciled.
        let hold = Hold::new(
            format!("{key} in {}", self.describe()),
            self.lock_ttl,
            acquired,
        );
        let renew_blob = Arc::new(self.container.blob_client(key));
        let renew_id = lease_id.clone();
        let renewal = Renewal::start(hold.clone(), move || {
            let blob = renew_blob.clone();
            let id = renew_id.clone();
            async move { renew_lease(&blob, id).await }
        });
        Ok(Box::new(Lease {
            store: self.clone(),
            key: key.to_owned(),
            lease_id,
            hold,
            renewal,
        }))
    }
}
