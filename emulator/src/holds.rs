//! Named gates for [`crate::FaultKind::Hold`]: a held request waits until the test releases its
//! gate. Waiting uses a `tokio::sync::watch` channel, which works across runtimes, so a test on
//! its own runtime can wait for a request the emulator's runtime holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// One gate: requests that arrived get increasing tickets; `release` lets every ticket issued so
/// far through.
#[derive(Default)]
struct Gate {
    /// Tickets issued so far (the next ticket's number).
    arrived: u64,
    /// Tickets below this are released.
    released: u64,
    /// Tickets whose requests are still waiting (or were released but have not woken yet).
    waiting: BTreeSet<u64>,
}

impl Gate {
    /// Requests waiting that have not been released.
    fn held(&self) -> usize {
        self.waiting.range(self.released..).count()
    }
}

pub(crate) struct Holds {
    gates: Mutex<BTreeMap<String, Gate>>,
    closed: Mutex<bool>,
    /// Bumped on every change, to wake waiters.
    changed: watch::Sender<u64>,
}

/// How a held request's wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Released {
    /// The test released the gate: handle the request.
    Go,
    /// The emulator is shutting down: abandon the request.
    Closed,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes a held request's ticket off its gate when its wait ends, however it ends (released,
/// closed, or the future dropped because the client went away).
struct Ticket<'a> {
    holds: &'a Holds,
    name: &'a str,
    number: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(gate) = lock(&self.holds.gates).get_mut(self.name) {
            gate.waiting.remove(&self.number);
        }
        self.holds.bump();
    }
}

impl Holds {
    pub fn new() -> Holds {
        Holds {
            gates: Mutex::new(BTreeMap::new()),
            closed: Mutex::new(false),
            changed: watch::channel(0).0,
        }
    }

    fn bump(&self) {
        self.changed
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    /// Waits at the gate `name` until it is released (or the emulator closes).
    pub async fn hold(&self, name: &str) -> Released {
        // Subscribed before anything is checked, so no change can be missed.
        let mut changes = self.changed.subscribe();
        let number = {
            let mut gates = lock(&self.gates);
            let gate = gates.entry(name.to_owned()).or_default();
            let number = gate.arrived;
            gate.arrived += 1;
            gate.waiting.insert(number);
            number
        };
        let _ticket = Ticket {
            holds: self,
            name,
            number,
        };
        self.bump();
        loop {
            if *lock(&self.closed) {
                return Released::Closed;
            }
            if lock(&self.gates)
                .get(name)
                .is_some_and(|gate| gate.released > number)
            {
                return Released::Go;
            }
            if changes.changed().await.is_err() {
                // The sender lives as long as `self`; unreachable in practice.
                return Released::Closed;
            }
        }
    }

    /// Releases every request held at `name` now; returns how many.
    pub fn release(&self, name: &str) -> usize {
        let released = {
            let mut gates = lock(&self.gates);
            let gate = gates.entry(name.to_owned()).or_default();
            let held = gate.held();
            gate.released = gate.arrived;
            held
        };
        self.bump();
        released
    }

    /// Releases every gate; returns how many requests that let go.
    pub fn release_all(&self) -> usize {
        let released = {
            let mut gates = lock(&self.gates);
            gates
                .values_mut()
                .map(|gate| {
                    let held = gate.held();
                    gate.released = gate.arrived;
                    held
                })
                .sum()
        };
        self.bump();
        released
    }

    /// How many requests are held at `name` now (arrived, not released, client still there).
    pub fn held(&self, name: &str) -> usize {
        lock(&self.gates).get(name).map_or(0, Gate::held)
    }

    /// Every gate with requests held now, and how many.
    pub fn all_held(&self) -> BTreeMap<String, usize> {
        lock(&self.gates)
            .iter()
            .map(|(name, gate)| (name.clone(), gate.held()))
            .filter(|(_, held)| *held > 0)
            .collect()
    }

    /// Waits until at least one request is held at `name`, at most `timeout`; returns how many
    /// are held then (0 on timeout).
    pub async fn wait_held(&self, name: &str, timeout: Duration) -> usize {
        let mut changes = self.changed.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let held = self.held(name);
                if held > 0 {
                    return held;
                }
                if changes.changed().await.is_err() {
                    return 0;
                }
            }
        })
        .await;
        waited.unwrap_or(0)
    }

    /// Ends every hold now and for good: held requests (and later ones) are abandoned.
    pub fn close(&self) {
        *lock(&self.closed) = true;
        self.bump();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_held_request_waits_for_its_release() {
        let holds = Arc::new(Holds::new());
        assert_eq!(holds.wait_held("g", Duration::from_millis(20)).await, 0);
        let waiter = {
            let holds = Arc::clone(&holds);
            tokio::spawn(async move { holds.hold("g").await })
        };
        assert_eq!(holds.wait_held("g", Duration::from_secs(5)).await, 1);
        assert_eq!(holds.held("other"), 0);
        assert_eq!(holds.all_held(), BTreeMap::from([("g".to_owned(), 1)]));
        assert!(!waiter.is_finished());
        assert_eq!(holds.release("g"), 1);
        assert_eq!(holds.held("g"), 0, "released at once, even before it wakes");
        assert_eq!(waiter.await.unwrap(), Released::Go);
        // A release with nobody held is not remembered for later arrivals.
        assert_eq!(holds.release("g"), 0);
        let later = {
            let holds = Arc::clone(&holds);
            tokio::spawn(async move { holds.hold("g").await })
        };
        assert_eq!(holds.wait_held("g", Duration::from_secs(5)).await, 1);
        holds.close();
        assert_eq!(later.await.unwrap(), Released::Closed);
        assert_eq!(holds.held("g"), 0);
    }

    #[tokio::test]
    async fn a_dropped_wait_is_no_longer_held() {
        let holds = Arc::new(Holds::new());
        let waiter = {
            let holds = Arc::clone(&holds);
            tokio::spawn(async move { holds.hold("g").await })
        };
        assert_eq!(holds.wait_held("g", Duration::from_secs(5)).await, 1);
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());
        assert_eq!(holds.held("g"), 0);
        assert_eq!(holds.release_all(), 0);
    }
}
