//! Long-running operations: a registry's PATCH answered 201 with `Azure-AsyncOperation`
//! ([`crate::policy::RegistryUpdates`]), and the answers a GET of that URL gets.
//!
//! Pure bookkeeping: which operations exist, for which resource and body, and how many
//! `InProgress` answers each has left. Applying the body when an operation succeeds is the
//! handler's (`arm`), against the resource as it is then.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::paths::ResourcePath;
use crate::policy::{OperationOutcome, RegistryUpdates};

/// One operation: the PATCH it finishes and where it stands.
#[derive(Clone, Debug)]
struct Pending {
    path: ResourcePath,
    body: Value,
    in_progress_left: u32,
    outcome: OperationOutcome,
    /// The outcome once reached (later GETs answer it again; the body is applied once).
    finished: Option<OperationOutcome>,
}

/// What a GET of an operation answers.
#[derive(Clone, Debug)]
pub(crate) enum Poll {
    /// No operation of this id.
    Unknown,
    /// Still running.
    InProgress,
    /// Reached its outcome now: the caller applies `body` to the resource at `path` when the
    /// outcome is `Succeeded` (and may turn it into `Failed` when the body no longer applies).
    Finishing {
        path: ResourcePath,
        body: Value,
        outcome: OperationOutcome,
    },
    /// Reached its outcome at an earlier GET.
    Finished(OperationOutcome),
}

/// The operations started so far, by id.
#[derive(Default)]
pub(crate) struct Operations {
    next: u64,
    pending: BTreeMap<String, Pending>,
}

impl Operations {
    /// Registers the PATCH `body` of the resource at `path` as an operation run by `updates`,
    /// and returns its id (`registries-{n}` style, unique in this emulator).
    pub fn start(&mut self, path: &ResourcePath, body: Value, updates: &RegistryUpdates) -> String {
        self.next += 1;
        let id = format!(
            "registries-{:08x}-{}",
            self.next,
            path.name.to_ascii_lowercase()
        );
        self.pending.insert(
            id.clone(),
            Pending {
                path: path.clone(),
                body,
                in_progress_left: updates.in_progress,
                outcome: updates.outcome.clone(),
                finished: None,
            },
        );
        id
    }

    /// One GET of the operation `id`.
    pub fn poll(&mut self, id: &str) -> Poll {
        let Some(pending) = self.pending.get_mut(id) else {
            return Poll::Unknown;
        };
        if let Some(outcome) = &pending.finished {
            return Poll::Finished(outcome.clone());
        }
        if pending.in_progress_left > 0 {
            pending.in_progress_left -= 1;
            return Poll::InProgress;
        }
        Poll::Finishing {
            path: pending.path.clone(),
            body: pending.body.clone(),
            outcome: pending.outcome.clone(),
        }
    }

    /// Records the outcome the operation `id` reached (what later GETs answer).
    pub fn finish(&mut self, id: &str, outcome: OperationOutcome) {
        if let Some(pending) = self.pending.get_mut(id) {
            pending.finished = Some(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_operation_is_in_progress_then_finishes_once() {
        let path = ResourcePath::parse_id(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/cr",
        )
        .unwrap();
        let mut operations = Operations::default();
        let updates = RegistryUpdates {
            in_progress: 2,
            ..RegistryUpdates::default()
        };
        let id = operations.start(&path, json!({"x": 1}), &updates);
        assert!(matches!(operations.poll("nope"), Poll::Unknown));
        assert!(matches!(operations.poll(&id), Poll::InProgress));
        assert!(matches!(operations.poll(&id), Poll::InProgress));
        let Poll::Finishing { body, outcome, .. } = operations.poll(&id) else {
            panic!("not finishing");
        };
        assert_eq!(body, json!({"x": 1}));
        assert_eq!(outcome, OperationOutcome::Succeeded);
        operations.finish(&id, OperationOutcome::Canceled);
        assert!(matches!(
            operations.poll(&id),
            Poll::Finished(OperationOutcome::Canceled)
        ));
    }
}
