//! The Azure Blob storage backend: a container (default `tagfence`) in the Function App's own
//! storage account, reached with the same managed identity (role Storage Blob Data Owner), never
//! with account keys. Built on `azure_storage_blob` 1.x.
//!
//! The per-vault lock is a lease on a small lock blob: 60 s, renewed every 20 s while the vault
//! is reconciled, released at the end; if the process dies, the lease lapses within a minute and
//! the next run takes over (azure-interfaces.md §2.3: Key Vault has no ETags, so tagfence must be
//! the single writer of a vault).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RequestContent, StatusCode, Transport};
use azure_storage_blob::models::{
    BlobClientAcquireLeaseResultHeaders, BlockBlobClientUploadOptions,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use futures::StreamExt;
use tokio::sync::OnceCell;
use url::Url;

use super::{Lock, Renewal, StateError, Store, LOCK_TTL};
use crate::azure::http::{error_chain, HttpOptions};

/// The container tagfence keeps its state in, by default.
pub const DEFAULT_CONTAINER: &str = "tagfence";

/// State in a blob container.
#[derive(Clone)]
pub struct BlobStore {
    container: Arc<BlobContainerClient>,
    url: Url,
    created: Arc<OnceCell<()>>,
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
        })
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
    renewal: Renewal,
}

#[async_trait]
impl Lock for Lease {
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
        self.ensure_container().await?;
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
        let started = Instant::now();
        let lease_id = loop {
            match blob.acquire_lease(LOCK_TTL.as_secs() as i32, None).await {
                Ok(response) => match response.lease_id() {
                    Ok(Some(id)) => break id,
                    _ => {
                        return Err(StateError::Io {
                            operation: "locking",
                            key: key.to_owned(),
                            store: self.describe(),
                            detail: "the lease response has no x-ms-lease-id".to_owned(),
                        })
                    }
                },
                // 409 LeaseAlreadyPresent: another instance works on this vault.
                Err(err) if err.http_status() == Some(StatusCode::Conflict) => {
                    if started.elapsed() >= wait {
                        return Err(StateError::Locked {
                            vault: key.to_owned(),
                            seconds: wait.as_secs(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err) => return Err(self.io("locking", key, &err)),
            }
        };
        // Keep the lease while the vault is being reconciled.
        let renew_blob = Arc::new(self.container.blob_client(key));
        let renew_id = lease_id.clone();
        let renewal = Renewal::start(move || {
            let blob = renew_blob.clone();
            let id = renew_id.clone();
            async move {
                if let Err(err) = blob.renew_lease(id, None).await {
                    tracing::warn!(error = %error_chain(&err), "renewing a vault lock failed");
                }
            }
        });
        Ok(Box::new(Lease {
            store: self.clone(),
            key: key.to_owned(),
            lease_id,
            renewal,
        }))
    }
}
