//! The tag history and the grace window, as pure functions of the state and the document: which
//! selected tags changed since the last run, which previous versions are still inside the grace
//! window, and which vault keeps which of them. The reads and writes around them are `prepare`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::config::VaultTarget;
use crate::core::desired::GraceTag;
use crate::core::service_tags::ServiceTags;
use crate::state::{self, PreviousVersion, SourceState, TagHistory};

/// The selected tag names of all targets, as the document spells them (unknown names are left
/// to the per-vault plan to report).
pub(super) fn selected_names(doc: &ServiceTags, targets: &[VaultTarget]) -> BTreeSet<String> {
    targets
        .iter()
        .flat_map(|t| t.selection.tags.iter())
        .filter_map(|name| doc.find(name.trim()).map(|tag| tag.name.to_owned()))
        .collect()
}

/// The tag history after seeing `doc`: a selected tag whose change number moved starts a new
/// entry that points at the version it replaced; entries of tags not selected now are kept
/// (another run may select them).
pub(super) fn next_history(
    last: Option<&SourceState>,
    doc: &ServiceTags,
    selected: &BTreeSet<String>,
    now: DateTime<Utc>,
) -> BTreeMap<String, TagHistory> {
    let mut history = last.map(|l| l.tags.clone()).unwrap_or_default();
    for name in selected {
        let Some(tag) = doc.find(name) else { continue };
        let entry = match history.get(name) {
            Some(seen) if seen.change_number == tag.change_number => TagHistory {
                seen_in: doc.change_number.max(seen.seen_in),
                ..seen.clone()
            },
            Some(seen) => TagHistory {
                change_number: tag.change_number,
                since: state::stored_time(now),
                seen_in: doc.change_number,
                previous: Some(PreviousVersion {
                    change_number: seen.change_number,
                    document: seen.seen_in,
                }),
            },
            None => TagHistory {
                change_number: tag.change_number,
                since: state::stored_time(now),
                seen_in: doc.change_number,
                previous: None,
            },
        };
        history.insert(name.clone(), entry);
    }
    history
}

/// The previous versions of the selected tags that changed less than `window` before `now`,
/// by the archived document that holds them (one read per document).
pub(super) fn grace_wanted(
    history: &BTreeMap<String, TagHistory>,
    selected: &BTreeSet<String>,
    now: DateTime<Utc>,
    window: chrono::Duration,
) -> BTreeMap<u64, Vec<(String, PreviousVersion)>> {
    let mut wanted: BTreeMap<u64, Vec<(String, PreviousVersion)>> = BTreeMap::new();
    for (name, tag) in history.iter().filter(|(name, _)| selected.contains(*name)) {
        let Some(previous) = &tag.previous else {
            continue;
        };
        if now - tag.since < window {
            wanted
                .entry(previous.document)
                .or_default()
                .push((name.clone(), previous.clone()));
        }
    }
    wanted
}

/// Each target with the grace ranges of the tags it selects (and no others).
pub(super) fn with_grace(
    targets: Vec<VaultTarget>,
    grace: &[GraceTag],
    doc: &ServiceTags,
) -> Vec<VaultTarget> {
    targets
        .into_iter()
        .map(|mut target| {
            target.selection.grace = grace
                .iter()
                .filter(|g| {
                    target.selection.tags.iter().any(|t| {
                        doc.find(t.trim())
                            .is_some_and(|tag| tag.name.eq_ignore_ascii_case(&g.tag))
                    })
                })
                .cloned()
                .collect();
            target
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::config::{Safety, TargetSource};
    use crate::core::desired::{Limits, Selection};

    /// A document of change `number` with tags `A` and `B` at the given change numbers.
    fn doc(number: u64, a: u64, b: u64) -> ServiceTags {
        let text = format!(
            r#"{{"changeNumber": {number}, "cloud": "Public", "values": [
              {{"name": "A", "properties": {{"changeNumber": {a}, "addressPrefixes": ["20.0.{a}.0/24"]}}}},
              {{"name": "B", "properties": {{"changeNumber": {b}, "addressPrefixes": ["40.0.{b}.0/24"]}}}}]}}"#
        );
        ServiceTags::parse(text.as_bytes()).unwrap()
    }

    fn day(n: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, n, 6, 30, 0).unwrap()
    }

    fn selected(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn source(history: BTreeMap<String, TagHistory>) -> SourceState {
        SourceState {
            format_version: state::STATE_FORMAT_VERSION,
            cloud: crate::core::service_tags::Cloud::Public,
            change_number: 0,
            applied_at: day(1),
            tags: history,
        }
    }

    fn target(tags: &[&str]) -> VaultTarget {
        VaultTarget {
            id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-a"
                .parse()
                .unwrap(),
            selection: Selection {
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                ..Selection::default()
            },
            limits: Limits::default(),
            prune: false,
            safety: Safety::default(),
            grants: crate::config::GrantPolicy::default(),
            source: TargetSource::Listed,
        }
    }

    #[test]
    fn selected_names_are_spelled_as_the_document_spells_them_and_unknown_ones_left_out() {
        let mut t = target(&[" a ", "Nope"]);
        t.selection.tags.push("B".to_owned());
        assert_eq!(selected_names(&doc(10, 1, 1), &[t]), selected(&["A", "B"]));
    }

    #[test]
    fn a_first_sight_starts_the_history_without_a_previous_version() {
        let history = next_history(None, &doc(10, 1, 2), &selected(&["A"]), day(2));
        assert_eq!(history.len(), 1, "only selected tags");
        let a = &history["A"];
        assert_eq!((a.change_number, a.seen_in, a.since), (1, 10, day(2)));
        assert_eq!(a.previous, None);
    }

    #[test]
    fn an_unchanged_tag_keeps_its_date_and_is_seen_in_the_newer_document() {
        let first = next_history(None, &doc(10, 1, 2), &selected(&["A"]), day(2));
        let again = next_history(
            Some(&source(first)),
            &doc(11, 1, 3),
            &selected(&["A"]),
            day(9),
        );
        let a = &again["A"];
        assert_eq!((a.change_number, a.seen_in, a.since), (1, 11, day(2)));
        assert_eq!(a.previous, None);
    }

    #[test]
    fn a_moved_tag_points_at_the_version_it_replaced_and_the_document_that_held_it() {
        let first = next_history(None, &doc(10, 1, 2), &selected(&["A", "B"]), day(2));
        let seen = next_history(
            Some(&source(first)),
            &doc(11, 1, 2),
            &selected(&["A", "B"]),
            day(3),
        );
        let moved = next_history(
            Some(&source(seen)),
            &doc(12, 5, 2),
            &selected(&["A"]),
            day(9),
        );
        let a = &moved["A"];
        assert_eq!((a.change_number, a.seen_in, a.since), (5, 12, day(9)));
        assert_eq!(
            a.previous,
            Some(PreviousVersion {
                change_number: 1,
                document: 11
            })
        );
        // B is not selected by this run: its entry is kept for the runs that select it.
        assert_eq!(moved["B"].seen_in, 11);
    }

    #[test]
    fn the_grace_window_wants_only_recent_changes_of_selected_tags_by_document() {
        let previous = |change_number, document| {
            Some(PreviousVersion {
                change_number,
                document,
            })
        };
        let entry = |since, previous| TagHistory {
            change_number: 9,
            since,
            seen_in: 20,
            previous,
        };
        let history: BTreeMap<String, TagHistory> = [
            ("A".to_owned(), entry(day(5), previous(1, 11))),
            ("B".to_owned(), entry(day(5), previous(2, 11))),
            // Changed too long ago.
            ("C".to_owned(), entry(day(1), previous(3, 12))),
            // Never changed.
            ("D".to_owned(), entry(day(5), None)),
            // Not selected.
            ("E".to_owned(), entry(day(5), previous(4, 13))),
        ]
        .into_iter()
        .collect();
        let wanted = grace_wanted(
            &history,
            &selected(&["A", "B", "C", "D"]),
            day(7),
            chrono::Duration::days(3),
        );
        assert_eq!(wanted.keys().copied().collect::<Vec<_>>(), [11]);
        let names: Vec<&str> = wanted[&11].iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["A", "B"]);
        // The window is exclusive at its end: a change exactly `window` ago is out.
        let at_edge = grace_wanted(
            &history,
            &selected(&["A"]),
            day(8),
            chrono::Duration::days(3),
        );
        assert!(at_edge.is_empty());
    }

    #[test]
    fn each_target_keeps_the_grace_ranges_of_its_own_tags_only() {
        let grace = vec![GraceTag {
            tag: "A".to_owned(),
            change_number: 1,
            prefixes: vec!["20.0.1.0/24".parse().unwrap()],
        }];
        let targets = with_grace(vec![target(&["a"]), target(&["B"])], &grace, &doc(12, 5, 2));
        assert_eq!(targets[0].selection.grace, grace);
        assert!(targets[1].selection.grace.is_empty());
    }
}
