//! The emulator's state: the settings every request reads and the stores behind their locks
//! (the resources — vaults, storage accounts, registries —, Resource Graph's index of them, tokens,
//! the request log, the fault queue, the throttle buckets and quota windows, the hold gates), plus
//! the out-of-band edits a test makes to a stored resource.
//!
//! One [`Shared`] value is owned by the [`crate::Emulator`] handle and by every connection. It
//! lives apart from the server so that the ARM handlers, which answer from it, do not import the
//! server that calls them.
//!
//! Every change to a resource goes through [`Shared::store`], whose guard hands the store's
//! journal of changes to the index when it is released. Locks are always taken store first, then
//! index.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde_json::Value;
use tracing::info;

use crate::acl::RulePolicy;
use crate::config::Config;
use crate::error::ArmError;
use crate::firewall;
use crate::graph_index::Index;
use crate::holds::Holds;
use crate::identity::{Issued, Principal, TokenStore};
use crate::model::{Fault, FaultKind, RequestRecord, Route};
use crate::operations::Operations;
use crate::paths::ResourcePath;
use crate::policy::{GraphIndex, RegistryUpdates, Throttle};
use crate::service_tags::ServiceTagsDocument;
use crate::store::ResourceStore;
use crate::throttle::{Buckets, Budgeting, Operation, QuotaLeft, QuotaWindows};

/// `x-ms-ratelimit-remaining-subscription-writes` (and `-deletes`) when throttling is disabled.
const UNTHROTTLED_REMAINING_WRITES: u32 = 199;

/// What Resource Graph answers report when its quota is disabled: as if one query of the
/// documented 15-per-5-seconds window had been spent.
const UNLIMITED_GRAPH_QUOTA: QuotaLeft = QuotaLeft {
    remaining: 14,
    resets_after: Duration::from_secs(5),
};

/// The settings handlers read on every request (the parts of [`Config`] that are not state).
pub(crate) struct Settings {
    pub identity_header: String,
    pub token_lifetime: Duration,
    pub arm_audience: String,
    pub rules: RulePolicy,
    pub service_tags_page_size: Option<usize>,
    /// Added before answering every ARM and Resource Graph request.
    pub latency: Duration,
}

/// ARM's buckets per kind of request, and Resource Graph's windows (`None`: no quota).
struct Budgets {
    reads: Buckets,
    writes: Buckets,
    deletes: Buckets,
    graph: Option<QuotaWindows>,
}

impl Budgets {
    fn new(config: &Config) -> Budgets {
        let writes = |throttle: Option<Throttle>| match throttle {
            Some(limits) => Budgeting::Enforced(limits),
            None => Budgeting::Unlimited {
                reported: UNTHROTTLED_REMAINING_WRITES,
            },
        };
        Budgets {
            reads: Buckets::new(match config.read_throttle {
                Some(limits) => Budgeting::Enforced(limits),
                None => Budgeting::Counted(Throttle::READS),
            }),
            writes: Buckets::new(writes(config.throttle)),
            // Deletes have a bucket of their own with the same limits: ARM documents the same
            // size and rate for both (Throttle::WRITES == Throttle::DELETES).
            deletes: Buckets::new(writes(config.throttle)),
            graph: config.graph_quota.map(QuotaWindows::new),
        }
    }

    fn of(&mut self, operation: Operation) -> &mut Buckets {
        match operation {
            Operation::Read => &mut self.reads,
            Operation::Write => &mut self.writes,
            Operation::Delete => &mut self.deletes,
        }
    }
}

/// State shared by every connection and by the [`crate::Emulator`] handle.
pub(crate) struct Shared {
    pub settings: Settings,
    /// `http://host:port`, no trailing slash.
    pub base_url: String,
    /// `https://host:port` when TLS is configured (the same port).
    pub https_url: Option<String>,
    pub service_tags: Option<ServiceTagsDocument>,
    /// The gates of [`FaultKind::Hold`] faults.
    pub holds: Holds,
    started: Instant,
    store: Mutex<ResourceStore>,
    index: Mutex<Index>,
    tokens: Mutex<TokenStore>,
    log: Mutex<Vec<RequestRecord>>,
    faults: Mutex<VecDeque<Fault>>,
    budgets: Mutex<Budgets>,
    /// How a registry's PATCH finishes (`None`: at once, with 200).
    registry_updates: Mutex<Option<RegistryUpdates>>,
    /// The long-running operations started by registry PATCHes.
    operations: Mutex<Operations>,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical section
/// here leaves the data consistent, so a poisoned lock is still safe to use.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The resource store, locked; when released, the changes made through it reach Resource
/// Graph's index, stamped with the time of release.
pub(crate) struct StoreGuard<'a> {
    store: MutexGuard<'a, ResourceStore>,
    index: &'a Mutex<Index>,
}

impl Deref for StoreGuard<'_> {
    type Target = ResourceStore;

    fn deref(&self) -> &ResourceStore {
        &self.store
    }
}

impl DerefMut for StoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut ResourceStore {
        &mut self.store
    }
}

impl StoreGuard<'_> {
    /// The resources a Resource Graph query sees now, with their paths; `None` when the index
    /// is live (the caller then reads the store itself).
    pub fn indexed(&self) -> Option<Vec<(ResourcePath, Value)>> {
        lock(self.index).visible(Instant::now())
    }
}

impl Drop for StoreGuard<'_> {
    fn drop(&mut self) {
        let changes = self.store.take_changes();
        if changes.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut index = lock(self.index);
        for (path, vault) in changes {
            index.record(&path, vault, now);
        }
    }
}

/// The ARM bucket a request on `route` spends, if any: GETs on subscription-scoped routes read,
/// PATCH and PUT write, DELETE deletes. Resource Graph has its own quota, not ARM's reads.
pub(crate) fn arm_operation(route: Route) -> Option<Operation> {
    if route.is_arm_read() {
        Some(Operation::Read)
    } else if route.is_arm_write() {
        Some(Operation::Write)
    } else if route.is_arm_delete() {
        Some(Operation::Delete)
    } else {
        None
    }
}

impl Shared {
    pub fn new(
        config: Config,
        base_url: String,
        store: ResourceStore,
        service_tags: Option<ServiceTagsDocument>,
    ) -> Shared {
        let https_url = config
            .tls
            .as_ref()
            .map(|_| base_url.replacen("http://", "https://", 1));
        let index = Index::new(config.graph_index, store.iter());
        Shared {
            budgets: Mutex::new(Budgets::new(&config)),
            settings: Settings {
                identity_header: config.identity_header,
                token_lifetime: config.token_lifetime,
                arm_audience: config.arm_audience,
                rules: RulePolicy {
                    slash31: config.slash31,
                    odd_rules: config.odd_rules,
                },
                service_tags_page_size: config.service_tags_page_size.filter(|size| *size > 0),
                latency: config.latency,
            },
            base_url,
            https_url,
            service_tags,
            holds: Holds::new(),
            started: Instant::now(),
            store: Mutex::new(store),
            index: Mutex::new(index),
            tokens: Mutex::new(TokenStore::default()),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            registry_updates: Mutex::new(config.registry_updates),
            operations: Mutex::new(Operations::default()),
        }
    }

    /// How a registry's PATCH finishes now.
    pub fn registry_updates(&self) -> Option<RegistryUpdates> {
        lock(&self.registry_updates).clone()
    }

    /// Switches how registry PATCHes finish from now on (operations started go on as they were).
    pub fn set_registry_updates(&self, updates: Option<RegistryUpdates>) {
        *lock(&self.registry_updates) = updates;
    }

    /// The long-running operations, locked (never while holding the store).
    pub fn operations(&self) -> MutexGuard<'_, Operations> {
        lock(&self.operations)
    }

    /// The base URL a request came in on: links in an answer (`nextLink`, the download page's
    /// file links) keep the caller's scheme.
    pub fn base_url_for(&self, secure: bool) -> &str {
        match (&self.https_url, secure) {
            (Some(https), true) => https,
            _ => &self.base_url,
        }
    }

    pub fn store(&self) -> StoreGuard<'_> {
        StoreGuard {
            store: lock(&self.store),
            index: &self.index,
        }
    }

    /// Switches how Resource Graph's index follows the resources; it starts from the resources
    /// as they are now.
    pub fn set_graph_index(&self, mode: GraphIndex) {
        let store = self.store();
        lock(&self.index).restart(mode, store.iter());
    }

    /// Makes Resource Graph's index catch up with the resources as they are now.
    pub fn refresh_index(&self) {
        let store = self.store();
        let mut index = lock(&self.index);
        let mode = index.mode();
        index.restart(mode, store.iter());
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.log).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.log).clear();
    }

    pub fn add_fault(&self, fault: Fault) {
        if fault.count > 0 {
            lock(&self.faults).push_back(fault);
        }
    }

    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    /// Consumes one count of the first fault matching the request, FIFO.
    pub fn take_fault(&self, route: Route, vault: Option<&str>) -> Option<FaultKind> {
        let mut faults = lock(&self.faults);
        let index = faults
            .iter()
            .position(|fault| fault.matches(route, vault))?;
        let fault = faults.get_mut(index)?;
        fault.count -= 1;
        let kind = fault.kind.clone();
        if fault.count == 0 {
            faults.remove(index);
        }
        Some(kind)
    }

    pub fn record(&self, record: RequestRecord) {
        lock(&self.log).push(record);
    }

    pub fn elapsed_ms(&self) -> u64 {
        crate::clock::duration_ms(self.started.elapsed())
    }

    pub fn issue_token(&self, resource: &str, principal: Principal) -> Issued {
        lock(&self.tokens).issue(resource, principal, self.settings.token_lifetime)
    }

    pub fn expire_tokens(&self) {
        lock(&self.tokens).expire_all();
    }

    pub fn arm_auth(&self, headers: &HeaderMap) -> Result<Principal, ArmError> {
        lock(&self.tokens).authenticate(headers, &self.settings.arm_audience)
    }

    /// Spends a token of `operation`'s bucket for `subscription`: `Ok(remaining)` or
    /// `Err(retry_after_secs)` (never for reads unless they are throttled).
    pub fn take_arm(&self, operation: Operation, subscription: &str) -> Result<u32, u64> {
        lock(&self.budgets)
            .of(operation)
            .take(subscription, Instant::now())
    }

    /// What is left in `operation`'s bucket for `subscription`, without spending.
    pub fn peek_arm(&self, operation: Operation, subscription: &str) -> u32 {
        lock(&self.budgets)
            .of(operation)
            .peek(subscription, Instant::now())
    }

    /// Spends one Resource Graph query of `principal`'s (object id) window: `Ok(left)`, or
    /// `Err(left)` when the window is used up.
    pub fn take_graph(&self, principal: &str) -> Result<QuotaLeft, QuotaLeft> {
        match &mut lock(&self.budgets).graph {
            Some(windows) => windows.take(principal, Instant::now()),
            None => Ok(UNLIMITED_GRAPH_QUOTA),
        }
    }

    /// What is left of `principal`'s Resource Graph window (a fresh window's quota when the
    /// caller is unknown), without spending.
    pub fn peek_graph(&self, principal: Option<&str>) -> QuotaLeft {
        match (&mut lock(&self.budgets).graph, principal) {
            (None, _) => UNLIMITED_GRAPH_QUOTA,
            (Some(windows), Some(principal)) => windows.peek(principal, Instant::now()),
            (Some(windows), None) => windows.full(),
        }
    }
}

/// Out-of-band edit of some ipRules (a [`FaultKind::EditAfter`]) of a resource of any kind, in
/// its own rule list: adds the `add` rules not yet present, then removes the `remove` rules,
/// comparing the kind's stored forms (in a vault a bare IPv4 address is `/32`). Does nothing
/// when the resource does not exist.
pub(crate) fn edit_ip_rules(shared: &Shared, name_or_id: &str, add: &[String], remove: &[String]) {
    let mut store = shared.store();
    let Some(index) = store.find(name_or_id) else {
        return;
    };
    let (Some(kind), Some(mut resource)) = (store.kind(index), store.get(index).cloned()) else {
        return;
    };
    let stored = |rule: &String| firewall::stored_form(kind, rule);
    let mut rules = firewall::rule_values(kind, &resource);
    for rule in add.iter().map(stored) {
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    let remove: Vec<String> = remove.iter().map(stored).collect();
    rules.retain(|rule| !remove.contains(&stored(rule)));
    info!(
        resource = name_or_id,
        ?add,
        ?remove,
        "edited the resource's ip rules out of band (injected fault)"
    );
    firewall::set_rule_values(kind, &mut resource, rules);
    store.replace(index, resource);
}

/// Out-of-band ipRules edit of a resource of any kind, in the kind's entry shape; `false` when
/// the resource does not exist.
pub(crate) fn set_ip_rules(shared: &Shared, name_or_id: &str, rules: Vec<String>) -> bool {
    let mut store = shared.store();
    let Some(index) = store.find(name_or_id) else {
        return false;
    };
    let (Some(kind), Some(mut resource)) = (store.kind(index), store.get(index).cloned()) else {
        return false;
    };
    firewall::set_rule_values(kind, &mut resource, rules);
    store.replace(index, resource);
    true
}

/// Out-of-band edit of a whole stored resource, verbatim (no validation, no normalisation);
/// `false` when the resource does not exist. The resource stays where it is stored even if
/// `edit` changes its `id`. `edit` runs under the store's lock.
pub(crate) fn update_vault(
    shared: &Shared,
    name_or_id: &str,
    edit: impl FnOnce(&mut Value),
) -> bool {
    let mut store = shared.store();
    let Some(index) = store.find(name_or_id) else {
        return false;
    };
    let Some(mut resource) = store.get(index).cloned() else {
        return false;
    };
    edit(&mut resource);
    info!(resource = name_or_id, "edited the resource out of band");
    store.replace(index, resource);
    true
}
