//! `tagfence-emulator`: a local, stateful HTTP emulator of the Azure endpoints tagfence talks to.
//!
//! tagfence reads Azure Service Tags and rewrites the firewalls of Key Vaults, storage accounts
//! and container registries through Azure Resource Manager with a managed identity. None of that
//! can be exercised offline, so this crate emulates the parts tagfence uses, faithfully where
//! behaviour is documented (Azure/azure-rest-api-specs, Microsoft Learn) and configurably where
//! it is not:
//!
//! - **Key Vault** `GET|PATCH|PUT|DELETE …/providers/Microsoft.KeyVault/vaults/{name}`: stored
//!   vaults, ARM's validation and normalisation of `networkAcls`, 401/403/404/429 in ARM's
//!   wording, and per-subscription token buckets for writes, deletes and (opt-in) reads.
//! - **Storage accounts** `GET|PATCH …/providers/Microsoft.Storage/storageAccounts/{name}` and
//!   **container registries** `GET|PATCH …/providers/Microsoft.ContainerRegistry/registries/{name}`:
//!   the same store, answers, faults and buckets, with each kind's own firewall
//!   (`properties.networkAcls`, `properties.networkRuleSet`) and its documented validation.
//! - **Managed identity**: the App Service endpoint (`/msi/token`) and IMDS
//!   (`/metadata/identity/oauth2/token`), issuing opaque tokens the ARM routes then check.
//! - **Service Tags**: the Discovery API (optionally paged), the public download page and file.
//! - **Resource Graph**: the KQL subset used to discover tagged resources of the three kinds,
//!   over an index that can lag behind the store, with the per-principal query quota.
//! - **Test hooks**: a request log, injectable faults (status, delay, a connection dropped before
//!   or after handling, an out-of-band edit of a resource's ipRules right after a request, an
//!   answer whose JSON body is reshaped, a request held until the test releases it), direct
//!   access to the stored resources, and token expiry — through [`Emulator`] or the
//!   `/_emulator/…` routes.
//!
//! Integration tests start one with [`Emulator::start`] on `127.0.0.1:0` and point tagfence at
//! [`Emulator::base_url`] (plain http) or, with [`Config::tls`], at [`Emulator::https_url`] on
//! the same port (trusting [`Emulator::ca_pem`]); the `tagfence-emulator` binary does the same
//! for the README demo.
//!
//! # Layout
//!
//! ```text
//! config.rs          Config, Seed                                 (public)
//! policy.rs          Throttle, GraphQuota, GraphIndex, Slash31Policy, OddRulePolicy,
//!                    RegistryUpdates, OperationOutcome                (public)
//! model.rs           Route, RequestRecord, Fault, FaultKind       (public)
//! server.rs          accept loop, fault/log wrapper, control routes
//! state.rs           Shared: settings, stores behind locks, out-of-band edits
//! reshape.rs         JSON Pointer edits of a Reshape fault        (pure)
//! holds.rs           the gates of Hold faults
//! operations.rs      long-running operations of registry PATCHes (201, Azure-AsyncOperation)
//! paths.rs           path segments, the kinds and their resource ids (pure)
//! routes.rs          case-insensitive classification of paths into routes
//! arm.rs             resource (vault, storage account, registry), list, Discovery API and
//!                    Resource Graph handlers
//! store.rs           the resource store of every kind, its journal of changes
//! vaults.rs          vault PATCH/PUT semantics                    (pure)
//! storage.rs         storage account PATCH; networkAcls validation (pure)
//! registries.rs      registry PATCH; networkRuleSet and SKU validation (pure)
//! writes.rs          systemData, tags and the merge PATCH every kind shares (pure)
//! firewall.rs        each kind's rule list, out-of-band entries, storage's read shape (pure)
//! acl.rs             vault networkAcls validation and normalisation (pure)
//! ipv4.rs            IPv4 rule values and the private ranges every kind refuses (pure)
//! properties.rs      the other vault properties Key Vault refuses (pure)
//! identity.rs        token endpoints, token store, ARM authentication
//! service_tags.rs    document loading, API conversion, download page
//! resource_graph.rs  KQL subset                                   (pure)
//! graph_index.rs     Resource Graph's index: live, lagging or a snapshot
//! throttle.rs        ARM's token buckets, Resource Graph's quota windows
//! api_versions.rs    the api-versions each ARM route accepts         (pure)
//! locations.rs       public-cloud region names                     (pure)
//! tls.rs             the https certificate (made or given) and rustls' server config
//! ```
//!
//! # Layers
//!
//! A module imports only modules on lines above its own, never on its own line or below, so the
//! imports have no circles and each layer reads knowing only the ones before it:
//!
//! ```text
//! 1 base      clock ids error query paths policy reshape api_versions locations tls ipv4: plain
//!             values (tls: the https certificate), nothing from the crate
//! 2 parts     config model acl properties throttle identity resource_graph graph_index
//!             service_tags holds operations firewall writes: one concern each
//! 3 composed  store (the resources; firewall's read shape), vaults (PATCH/PUT through acl and
//!             properties), storage and registries (PATCH through writes, their rules through
//!             ipv4) and routes (paths into model's Route)
//! 4 state     state: the Shared value owning every store, for the handlers and Emulator
//! 5 handlers  arm: the ARM routes, answering from state
//! 6 top       server (accept loop, fault wrapper, control routes), then lib.rs and main.rs
//! ```

mod acl;
mod api_versions;
mod arm;
mod clock;
mod config;
mod error;
mod firewall;
mod graph_index;
mod holds;
mod identity;
mod ids;
mod ipv4;
mod locations;
mod model;
mod operations;
mod paths;
mod policy;
mod properties;
mod query;
mod registries;
mod reshape;
mod resource_graph;
mod routes;
mod server;
mod service_tags;
mod state;
mod storage;
mod store;
mod throttle;
mod tls;
mod vaults;
mod writes;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use arm::{CONTAINER_REGISTRY_API_VERSIONS, KEY_VAULT_API_VERSIONS, STORAGE_API_VERSIONS};
pub use config::{Config, Seed, SeedError, DEFAULT_ARM_AUDIENCE};
pub use identity::{SYSTEM_ASSIGNED_CLIENT_ID, SYSTEM_ASSIGNED_OBJECT_ID};
pub use model::{Fault, FaultKind, RequestRecord, Route};
pub use policy::{
    GraphIndex, GraphQuota, OddRulePolicy, OperationOutcome, RegistryUpdates, Slash31Policy,
    Throttle,
};
pub use service_tags::{
    ServiceTagsError, DOWNLOAD_DIRECTORY, DOWNLOAD_FILE_NAMES, DOWNLOAD_PAGE_PATH,
    PUBLIC_DOWNLOAD_ID,
};
pub use tls::{TlsError, TlsIdentity};

use identity::Principal;
use service_tags::ServiceTagsDocument;
use state::Shared;
use store::ResourceStore;

/// A running emulator. Dropping it stops the server too, but without waiting; prefer
/// [`Emulator::shutdown`].
///
/// The server runs on its own thread with its own Tokio runtime, not on the caller's: a test on a
/// current-thread runtime may block (for example on `std::process::Command::output()` running
/// tagfence's binary) without starving the emulator. For the same reason the emulator's clock is
/// real time; `tokio::time::pause()` in a test does not affect delays or token expiry.
pub struct Emulator {
    shared: Arc<Shared>,
    ca_pem: Option<String>,
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<()>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("base_url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Validates `config`, binds `listen` (use `127.0.0.1:0` in tests) and starts serving on a
    /// dedicated thread.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when the seed is unusable, `InvalidData` when the Service Tags document
    /// cannot be loaded, the error from binding the listener, or the error from starting the
    /// server thread and its runtime.
    pub async fn start(config: Config, listen: SocketAddr) -> io::Result<Emulator> {
        let store = ResourceStore::from_seed(&config.seed)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let service_tags = config
            .service_tags
            .as_deref()
            .map(ServiceTagsDocument::parse)
            .transpose()
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
        if let Some(document) = &service_tags {
            tracing::debug!(
                tags = document.tag_count(),
                "loaded the service tags document"
            );
        }
        let tls = config
            .tls
            .as_ref()
            .map(TlsIdentity::server_config)
            .transpose()
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?
            .map(tokio_rustls::TlsAcceptor::from);
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let ca_pem = config
            .tls
            .as_ref()
            .and_then(|tls| tls.ca_pem().map(str::to_owned));
        let shared = Arc::new(Shared::new(
            config,
            base_url_for(local_addr),
            store,
            service_tags,
        ));
        let router = server::router(Arc::clone(&shared));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tagfence-emulator-worker")
            .enable_all()
            .build()?;
        let (shutdown, shutdown_rx) = oneshot::channel();
        let (stopped_tx, stopped) = oneshot::channel();
        let server_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("tagfence-emulator".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => server::serve(listener, server_shared, router, tls, shutdown_rx).await,
                        Err(error) => tracing::error!(%error, "could not register the listener with the runtime"),
                    }
                });
                // Dropping the runtime cancels connection tasks still running after the grace period.
                drop(runtime);
                // The handle may be gone already (dropped without `shutdown`); nobody to tell then.
                stopped_tx.send(()).ok();
            })?;
        Ok(Emulator {
            shared,
            ca_pem,
            local_addr,
            shutdown: Some(shutdown),
            stopped: Some(stopped),
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash). Point tagfence's ARM endpoint here.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// `https://127.0.0.1:PORT` (the same port as [`Emulator::base_url`]) when the emulator was
    /// started with [`Config::tls`]; point a client that insists on https here.
    pub fn https_url(&self) -> Option<String> {
        self.shared.https_url.clone()
    }

    /// The PEM of the CA the emulator made for its https certificate
    /// ([`TlsIdentity::generate`]); `None` without TLS or with a certificate the caller gave.
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The App Service identity endpoint, `base_url + "/msi/token"` (tagfence's `IDENTITY_ENDPOINT`).
    pub fn identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.shared.base_url)
    }

    /// The value the identity endpoint requires in `X-IDENTITY-HEADER` (tagfence's `IDENTITY_HEADER`).
    pub fn identity_header(&self) -> String {
        self.shared.settings.identity_header.clone()
    }

    /// The download page URL for the Public cloud, `base_url + "/download/details.aspx?id=56519"`.
    pub fn download_page_url(&self) -> String {
        format!("{}{DOWNLOAD_PAGE_PATH}", self.shared.base_url)
    }

    /// The absolute URLs the download page links to, older first.
    pub fn download_file_urls(&self) -> Vec<String> {
        service_tags::download_file_urls(&self.shared.base_url)
    }

    /// Every non-control request handled so far, in completion order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests()
    }

    /// Switches how registry PATCHes finish from now on: `None` at once with 200 (the default),
    /// `Some` as long-running operations (201 with `Azure-AsyncOperation`; see
    /// [`RegistryUpdates`]). Operations already started go on as they were started.
    pub fn set_registry_updates(&self, updates: Option<RegistryUpdates>) {
        self.shared.set_registry_updates(updates);
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.clear_requests();
    }

    /// Queues a fault (FIFO); a fault with `count == 0` is ignored.
    ///
    /// # Panics
    ///
    /// When the fault is malformed ([`FaultKind::check`]: a [`FaultKind::Reshape`] pointer that
    /// is neither empty nor starts with `/`, or a bad `~` escape) — a bug in the test.
    pub fn add_fault(&self, fault: Fault) {
        if let Err(problem) = fault.kind.check() {
            panic!("add_fault: {problem}");
        }
        self.shared.add_fault(fault);
    }

    /// Releases every request held now at the gate `name` by a [`FaultKind::Hold`] fault; they are
    /// then handled. Returns how many were released (0 when none was held: a release is not
    /// remembered for requests that arrive later).
    pub fn release(&self, name: &str) -> usize {
        self.shared.holds.release(name)
    }

    /// Releases every request held at any gate; returns how many.
    pub fn release_all(&self) -> usize {
        self.shared.holds.release_all()
    }

    /// How many requests are held now at the gate `name`.
    pub fn held(&self, name: &str) -> usize {
        self.shared.holds.held(name)
    }

    /// Waits until at least one request is held at the gate `name`, for at most `timeout`.
    /// Returns `true` when one is (it then waits until [`Emulator::release`]), `false` on timeout.
    /// Needs a Tokio runtime with time enabled (any `#[tokio::test]`).
    pub async fn wait_held(&self, name: &str, timeout: Duration) -> bool {
        self.shared.holds.wait_held(name, timeout).await > 0
    }

    /// Removes every queued fault.
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// The stored resource — a vault, a storage account or a container registry — as ARM GET
    /// would return it, by name or resource id, ignoring case (names are assumed unique across
    /// kinds; the first in seed order wins).
    pub fn vault(&self, name_or_id: &str) -> Option<Value> {
        let store = self.shared.store();
        store
            .find(name_or_id)
            .and_then(|index| store.get(index).cloned())
    }

    /// The resource's `ipRules[].value`s as stored, from its kind's own rule list
    /// (`properties.networkAcls.ipRules` of a vault or storage account,
    /// `properties.networkRuleSet.ipRules` of a registry); empty when the resource or its rules do
    /// not exist.
    pub fn ip_rules(&self, name_or_id: &str) -> Vec<String> {
        let store = self.shared.store();
        store
            .find(name_or_id)
            .and_then(|index| Some((store.kind(index)?, store.get(index)?)))
            .map(|(kind, resource)| firewall::rule_values(kind, resource))
            .unwrap_or_default()
    }

    /// Replaces a resource's ipRules out of band, as a person editing the firewall would, in its
    /// kind's rule list and entry shape: a vault's entries are `{"value"}` stored as ARM would
    /// (a bare IPv4 address gains `/32`); a storage account's `{"value", "action": "Allow"}` and a
    /// registry's `{"action": "Allow", "value"}`, the value as given. Not validated, not logged,
    /// not throttled. Does nothing when the resource does not exist.
    pub fn set_ip_rules(&self, name_or_id: &str, rules: Vec<String>) {
        if !state::set_ip_rules(&self.shared, name_or_id, rules) {
            tracing::warn!(resource = name_or_id, "set_ip_rules: no such resource");
        }
    }

    /// Edits a stored resource of any kind out of band, as a person in the portal (or another
    /// tool) would: `edit` gets the resource as ARM GET returns it and may change anything (the
    /// firewall's default action, bypass, vnet rules, ipRules, `properties` itself). Stored
    /// verbatim: not validated, not normalised, not logged, not throttled. The resource keeps its
    /// place (routing) even if `edit` changes its `id`. `edit` runs under the store's lock and
    /// must not call back into the emulator. Returns `false` (and does not call `edit`) when the
    /// resource does not exist.
    pub fn update_vault(&self, name_or_id: &str, edit: impl FnOnce(&mut Value)) -> bool {
        state::update_vault(&self.shared, name_or_id, edit)
    }

    /// Makes Resource Graph's index catch up with the resources as they are now: under
    /// [`GraphIndex::Manual`] a new snapshot; under [`GraphIndex::Lag`] every change so far
    /// becomes visible at once (later ones lag again); under [`GraphIndex::Live`] nothing to do.
    pub fn refresh_index(&self) {
        self.shared.refresh_index();
    }

    /// Switches how Resource Graph's index follows the resources ([`Config::graph_index`]). The
    /// index starts from the resources as they are now: changes made before the switch are all
    /// visible, and only later ones lag (or wait for [`Emulator::refresh_index`]).
    pub fn set_graph_index(&self, mode: GraphIndex) {
        self.shared.set_graph_index(mode);
    }

    /// Issues a token for `resource` to the system-assigned identity, as the identity endpoints
    /// would, and returns the access token.
    pub fn issue_token(&self, resource: &str) -> String {
        self.shared
            .issue_token(resource, Principal::system_assigned())
            .access_token
    }

    /// Makes every token issued so far expired, to simulate expiry mid-run. Tokens issued later
    /// are fresh.
    pub fn expire_tokens(&self) {
        self.shared.expire_tokens();
    }

    /// Stops accepting connections, lets in-flight requests finish (up to 5 s) and waits for the
    /// server thread to stop.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The server may have stopped on its own already; then there is nobody to tell.
            shutdown.send(()).ok();
        }
        if let Some(stopped) = self.stopped.take() {
            if stopped.await.is_err() {
                tracing::warn!("the emulator's server thread ended without reporting");
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // Nobody may be listening any more; that is fine.
            shutdown.send(()).ok();
        }
    }
}

/// The URL clients should use: an unspecified listen address is reached via loopback.
fn base_url_for(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_use_loopback_for_unspecified_addresses() {
        assert_eq!(
            base_url_for("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            base_url_for("[::]:8080".parse().unwrap()),
            "http://[::1]:8080"
        );
        assert_eq!(
            base_url_for("10.1.2.3:80".parse().unwrap()),
            "http://10.1.2.3:80"
        );
    }
}
