//! Resource Graph's index of the resources (vaults, storage accounts, registries; "vault" below
//! stands for any of them): a view kept apart from the resource store, so that a query can see
//! the resources as they were rather than as they are.
//!
//! Resource Graph is "an asynchronous index over control-plane data" that "lags behind the source
//! of truth, typically by seconds, occasionally longer" (Microsoft Learn, "Choose the right query
//! strategy for Azure Resource Graph"); Resource Manager notifies it of each change and it then
//! updates its database (Microsoft Learn, "What is Azure Resource Graph?"). How long the lag is
//! is not documented, so [`GraphIndex`] makes it a setting: none ([`GraphIndex::Live`]), a fixed
//! lag ([`GraphIndex::Lag`]) or a snapshot the test refreshes ([`GraphIndex::Manual`]).
//!
//! The resource store journals every change (PATCH, PUT, DELETE, the out-of-band edits), and the
//! state hands each one here with the time it happened. Under `Lag` each vault keeps the versions
//! of the last `lag` (plus the one in force before them); a query sees, per vault, the newest
//! version at least `lag` old. The vaults as they were when the index started (the seed, or the
//! store when the mode was switched or the index refreshed) count as old enough for any lag.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use serde_json::Value;

use crate::paths::ResourcePath;
use crate::policy::GraphIndex;

/// One state of a vault as the index saw it.
#[derive(Debug)]
struct Version {
    /// When the change happened; `None` for the state the index started from.
    at: Option<Instant>,
    /// The vault as ARM GET returned it then; `None` once deleted.
    vault: Option<Value>,
}

/// One vault's versions, oldest first (never empty).
#[derive(Debug)]
struct History {
    path: ResourcePath,
    versions: VecDeque<Version>,
}

/// The index: per vault, the versions a query may still have to show.
#[derive(Debug)]
pub(crate) struct Index {
    mode: GraphIndex,
    histories: HashMap<String, History>,
}

fn key(path: &ResourcePath) -> String {
    path.id().to_ascii_lowercase()
}

impl Index {
    /// An index in `mode` that starts from `vaults` as they are.
    pub fn new<'a>(
        mode: GraphIndex,
        vaults: impl Iterator<Item = (&'a ResourcePath, &'a Value)>,
    ) -> Index {
        let mut index = Index {
            mode,
            histories: HashMap::new(),
        };
        index.restart(mode, vaults);
        index
    }

    pub fn mode(&self) -> GraphIndex {
        self.mode
    }

    /// Starts over in `mode` from `vaults` as they are now: every change so far is caught up
    /// with (a switch of mode, or [`crate::Emulator::refresh_index`]).
    pub fn restart<'a>(
        &mut self,
        mode: GraphIndex,
        vaults: impl Iterator<Item = (&'a ResourcePath, &'a Value)>,
    ) {
        self.mode = mode;
        self.histories.clear();
        if mode == GraphIndex::Live {
            // A live index reads the store itself; it keeps nothing.
            return;
        }
        for (path, vault) in vaults {
            let version = Version {
                at: None,
                vault: Some(vault.clone()),
            };
            self.histories.insert(
                key(path),
                History {
                    path: path.clone(),
                    versions: VecDeque::from([version]),
                },
            );
        }
    }

    /// A change to the vault at `path` (`None`: deleted) that happened at `at`. Only a lagging
    /// index keeps it; a live one reads the store and a manual one waits for a refresh.
    pub fn record(&mut self, path: &ResourcePath, vault: Option<Value>, at: Instant) {
        let GraphIndex::Lag(lag) = self.mode else {
            return;
        };
        let version = Version {
            at: Some(at),
            vault,
        };
        match self.histories.get_mut(&key(path)) {
            Some(history) => history.versions.push_back(version),
            None => {
                self.histories.insert(
                    key(path),
                    History {
                        path: path.clone(),
                        versions: VecDeque::from([version]),
                    },
                );
            }
        }
        if let Some(cutoff) = at.checked_sub(lag) {
            self.prune(cutoff);
        }
    }

    /// Drops every version older than the one in force at `cutoff`, and the vaults whose
    /// version in force then is a deletion with nothing after it: memory stays bounded by the
    /// changes of the last `lag`.
    fn prune(&mut self, cutoff: Instant) {
        self.histories.retain(|_, history| {
            let versions = &mut history.versions;
            let old_enough = |version: &Version| version.at.is_none_or(|at| at <= cutoff);
            let in_force = versions.iter().rposition(old_enough);
            if let Some(position) = in_force {
                versions.drain(..position);
            }
            !(versions.len() == 1 && versions[0].vault.is_none() && old_enough(&versions[0]))
        });
    }

    /// The vaults a query sees at `now`, with their paths: `None` for a live index (the caller
    /// reads the store).
    pub fn visible(&mut self, now: Instant) -> Option<Vec<(ResourcePath, Value)>> {
        let cutoff = match self.mode {
            GraphIndex::Live => return None,
            GraphIndex::Manual => None,
            GraphIndex::Lag(lag) => {
                let cutoff = now.checked_sub(lag);
                if let Some(cutoff) = cutoff {
                    self.prune(cutoff);
                }
                cutoff
            }
        };
        let rows = self
            .histories
            .values()
            .filter_map(|history| {
                let version = history.versions.iter().rev().find(|version| {
                    match (version.at, cutoff) {
                        (None, _) => true,
                        (Some(at), Some(cutoff)) => at <= cutoff,
                        // Under Manual every version is a start; under a lag that reaches back
                        // before the clock's origin only the start counts.
                        (Some(_), None) => false,
                    }
                })?;
                Some((history.path.clone(), version.vault.clone()?))
            })
            .collect();
        Some(rows)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn path(name: &str) -> ResourcePath {
        ResourcePath::parse_id(&format!(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/{name}"
        ))
        .unwrap()
    }

    fn names(rows: Option<Vec<(ResourcePath, Value)>>) -> Vec<String> {
        let mut names: Vec<String> = rows
            .unwrap()
            .into_iter()
            .map(|(_, vault)| format!("{}={}", vault["name"], vault["v"]))
            .collect();
        names.sort();
        names
    }

    fn seeded(mode: GraphIndex) -> Index {
        let (a, b) = (path("a"), path("b"));
        let (va, vb) = (json!({"name": "a", "v": 0}), json!({"name": "b", "v": 0}));
        Index::new(mode, [(&a, &va), (&b, &vb)].into_iter())
    }

    #[test]
    fn a_live_index_keeps_nothing() {
        let mut index = seeded(GraphIndex::Live);
        index.record(&path("a"), None, Instant::now());
        assert!(index.visible(Instant::now()).is_none());
        assert!(index.histories.is_empty());
    }

    #[test]
    fn a_lagging_index_shows_each_vault_as_it_was() {
        let lag = Duration::from_secs(10);
        let mut index = seeded(GraphIndex::Lag(lag));
        let t0 = Instant::now();
        // The seed is visible at once.
        assert_eq!(names(index.visible(t0)), ["\"a\"=0", "\"b\"=0"]);
        index.record(&path("a"), Some(json!({"name": "a", "v": 1})), t0);
        index.record(&path("b"), None, t0);
        index.record(&path("c"), Some(json!({"name": "c", "v": 1})), t0);
        // Before the lag has passed: the old a, the deleted b, no c.
        let early = t0 + Duration::from_secs(9);
        assert_eq!(names(index.visible(early)), ["\"a\"=0", "\"b\"=0"]);
        index.record(
            &path("a"),
            Some(json!({"name": "a", "v": 2})),
            t0 + Duration::from_secs(5),
        );
        let after = t0 + Duration::from_secs(10);
        assert_eq!(names(index.visible(after)), ["\"a\"=1", "\"c\"=1"]);
        let later = t0 + Duration::from_secs(15);
        assert_eq!(names(index.visible(later)), ["\"a\"=2", "\"c\"=1"]);
        // Pruned: one version each, and the deleted vault is gone.
        assert_eq!(index.histories.len(), 2);
        assert!(index.histories.values().all(|h| h.versions.len() == 1));
    }

    #[test]
    fn a_manual_index_shows_its_snapshot_until_restarted() {
        let mut index = seeded(GraphIndex::Manual);
        let now = Instant::now();
        index.record(&path("a"), None, now);
        assert_eq!(names(index.visible(now)), ["\"a\"=0", "\"b\"=0"]);
        let a = path("a");
        let va = json!({"name": "a", "v": 3});
        index.restart(GraphIndex::Manual, [(&a, &va)].into_iter());
        assert_eq!(names(index.visible(now)), ["\"a\"=3"]);
        assert_eq!(index.mode(), GraphIndex::Manual);
    }
}
