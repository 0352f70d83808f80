//! The emulator's state: the settings every request reads and the stores behind their locks
//! (vaults, tokens, the request log, the fault queue, the throttle buckets, the hold gates), plus
//! the out-of-band edits a test makes to a stored vault.
//!
//! One [`Shared`] value is owned by the [`crate::Emulator`] handle and by every connection. It
//! lives apart from the server so that the ARM handlers, which answer from it, do not import the
//! server that calls them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde_json::Value;
use tracing::info;

use crate::acl::{stored_form, RulePolicy};
use crate::config::Config;
use crate::error::ArmError;
use crate::holds::Holds;
use crate::identity::{Issued, Principal, TokenStore};
use crate::model::{Fault, FaultKind, RequestRecord, Route};
use crate::policy::Throttle;
use crate::service_tags::ServiceTagsDocument;
use crate::throttle::{TokenBucket, READ_BUCKET};
use crate::vaults::{self, VaultStore};

/// `x-ms-ratelimit-remaining-subscription-writes` when throttling is disabled.
const UNTHROTTLED_REMAINING_WRITES: u32 = 199;

/// The settings handlers read on every request (the parts of [`Config`] that are not state).
pub(crate) struct Settings {
    pub identity_header: String,
    pub token_lifetime: Duration,
    pub arm_audience: String,
    pub throttle: Option<Throttle>,
    pub rules: RulePolicy,
    pub service_tags_page_size: Option<usize>,
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
    vaults: Mutex<VaultStore>,
    tokens: Mutex<TokenStore>,
    log: Mutex<Vec<RequestRecord>>,
    faults: Mutex<VecDeque<Fault>>,
    write_buckets: Mutex<HashMap<String, TokenBucket>>,
    read_buckets: Mutex<HashMap<String, TokenBucket>>,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical section
/// here leaves the data consistent, so a poisoned lock is still safe to use.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(
        config: Config,
        base_url: String,
        vaults: VaultStore,
        service_tags: Option<ServiceTagsDocument>,
    ) -> Shared {
        let https_url = config
            .tls
            .as_ref()
            .map(|_| base_url.replacen("http://", "https://", 1));
        Shared {
            settings: Settings {
                identity_header: config.identity_header,
                token_lifetime: config.token_lifetime,
                arm_audience: config.arm_audience,
                throttle: config.throttle,
                rules: RulePolicy {
                    slash31: config.slash31,
                    odd_rules: config.odd_rules,
                },
                service_tags_page_size: config.service_tags_page_size.filter(|size| *size > 0),
            },
            base_url,
            https_url,
            service_tags,
            holds: Holds::new(),
            started: Instant::now(),
            vaults: Mutex::new(vaults),
            tokens: Mutex::new(TokenStore::default()),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            write_buckets: Mutex::new(HashMap::new()),
            read_buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The base URL a request came in on: links in an answer (`nextLink`, the download page's
    /// file links) keep the caller's scheme.
    pub fn base_url_for(&self, secure: bool) -> &str {
        match (&self.https_url, secure) {
            (Some(https), true) => https,
            _ => &self.base_url,
        }
    }

    pub fn vaults(&self) -> MutexGuard<'_, VaultStore> {
        lock(&self.vaults)
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

    /// Takes a write token for `subscription`: `Ok(remaining)` or `Err(retry_after_secs)`.
    pub fn take_write(&self, subscription: &str) -> Result<u32, u64> {
        let Some(limits) = self.settings.throttle else {
            return Ok(UNTHROTTLED_REMAINING_WRITES);
        };
        let now = Instant::now();
        lock(&self.write_buckets)
            .entry(subscription.to_ascii_lowercase())
            .or_insert_with(|| TokenBucket::new(limits, now))
            .take(now)
    }

    pub fn peek_writes(&self, subscription: &str) -> u32 {
        let Some(limits) = self.settings.throttle else {
            return UNTHROTTLED_REMAINING_WRITES;
        };
        let now = Instant::now();
        lock(&self.write_buckets)
            .entry(subscription.to_ascii_lowercase())
            .or_insert_with(|| TokenBucket::new(limits, now))
            .peek(now)
    }

    /// Counts a read for the header; reads are never refused.
    pub fn count_read(&self, subscription: &str) -> u32 {
        let now = Instant::now();
        lock(&self.read_buckets)
            .entry(subscription.to_ascii_lowercase())
            .or_insert_with(|| TokenBucket::new(READ_BUCKET, now))
            .take(now)
            .unwrap_or(0)
    }
}

/// Out-of-band edit of some ipRules (a [`FaultKind::EditAfter`]): adds the `add` rules not yet
/// present, then removes the `remove` rules, comparing stored forms (a bare IPv4 address is
/// `/32`). Does nothing when the vault does not exist.
pub(crate) fn edit_ip_rules(shared: &Shared, name_or_id: &str, add: &[String], remove: &[String]) {
    let mut store = shared.vaults();
    let Some(index) = store.find(name_or_id) else {
        return;
    };
    let Some(mut vault) = store.get(index).cloned() else {
        return;
    };
    let mut rules = vaults::ip_rule_values(&vault);
    for rule in add.iter().map(|rule| stored_form(rule)) {
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    let remove: Vec<String> = remove.iter().map(|rule| stored_form(rule)).collect();
    rules.retain(|rule| !remove.contains(&stored_form(rule)));
    info!(
        vault = name_or_id,
        ?add,
        ?remove,
        "edited the vault's ip rules out of band (injected fault)"
    );
    vaults::set_ip_rule_values(&mut vault, rules);
    store.replace(index, vault);
}

/// Out-of-band ipRules edit; `false` when the vault does not exist.
pub(crate) fn set_ip_rules(shared: &Shared, name_or_id: &str, rules: Vec<String>) -> bool {
    let mut store = shared.vaults();
    let Some(index) = store.find(name_or_id) else {
        return false;
    };
    let Some(mut vault) = store.get(index).cloned() else {
        return false;
    };
    vaults::set_ip_rule_values(&mut vault, rules);
    store.replace(index, vault);
    true
}

/// Out-of-band edit of a whole stored vault, verbatim (no validation, no normalisation); `false`
/// when the vault does not exist. The vault stays where it is stored even if `edit` changes its
/// `id`. `edit` runs under the store's lock.
pub(crate) fn update_vault(
    shared: &Shared,
    name_or_id: &str,
    edit: impl FnOnce(&mut Value),
) -> bool {
    let mut store = shared.vaults();
    let Some(index) = store.find(name_or_id) else {
        return false;
    };
    let Some(mut vault) = store.get(index).cloned() else {
        return false;
    };
    edit(&mut vault);
    info!(vault = name_or_id, "edited the vault out of band");
    store.replace(index, vault);
    true
}
