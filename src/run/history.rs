//! What the state says about a document before any vault is touched: freshness (an older
//! document is refused), the snapshot archive, which selected tags changed since the last run,
//! and the previous versions of those still inside the grace window.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use tracing::info;

use super::{RunError, RunRequest, Runner};
use crate::config::VaultTarget;
use crate::core::desired::GraceTag;
use crate::core::service_tags::ServiceTags;
use crate::source::Fetched;
use crate::state::{self, PreviousVersion, SourceState, State, TagHistory};

/// What a run learnt from the state before reconciling.
pub(super) struct Prepared {
    /// The targets, each with the grace ranges of its tags.
    pub(super) targets: Vec<VaultTarget>,
    /// The source state to write after the run, when it should be written.
    pub(super) next_source: Option<SourceState>,
    pub(super) warnings: Vec<String>,
}

impl Runner {
    /// Freshness, archive, tag history and grace ranges: everything the state says about the
    /// document before any vault is touched.
    pub(super) async fn prepare(
        &self,
        state: &State,
        fetched: &Fetched,
        targets: Vec<VaultTarget>,
        request: &RunRequest,
        now: DateTime<Utc>,
    ) -> Result<Prepared, RunError> {
        let doc = &fetched.tags;
        let last = state.read_source(doc.cloud).await?;
        let mut warnings = Vec::new();
        let older = last
            .as_ref()
            .is_some_and(|last| doc.change_number < last.change_number);
        if let (true, Some(last)) = (older, &last) {
            if !self.config.allow_older {
                return Err(RunError::Older {
                    origin: fetched.origin.clone(),
                    cloud: doc.cloud,
                    found: doc.change_number,
                    applied: last.change_number,
                });
            }
            warnings.push(format!(
                "using change number {}, older than {} applied before (--allow-older); the grace window is off for this run",
                doc.change_number, last.change_number
            ));
        }

        // Archive before use, so that the grace window can find this version later.
        if !request.dry_run {
            let raw = if fetched.raw.is_empty() {
                doc.to_download_json()
            } else {
                fetched.raw.clone()
            };
            if state
                .archive_snapshot(doc.cloud, doc.change_number, &raw)
                .await?
            {
                info!(
                    change_number = doc.change_number,
                    "archived the service tags"
                );
            }
        }

        let selected = selected_names(doc, &targets);
        let history = next_history(last.as_ref(), doc, &selected, now);
        for (name, tag) in &history {
            let moved = last
                .as_ref()
                .and_then(|l| l.tags.get(name))
                .is_some_and(|before| before.change_number != tag.change_number);
            if moved {
                info!(tag = %name, change_number = tag.change_number, "selected tag changed since the last run");
            }
        }
        let grace = if self.config.grace_days == 0 || older {
            Vec::new()
        } else {
            self.grace_tags(state, &history, &selected, now, &mut warnings)
                .await
        };
        let targets = targets
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
            .collect();
        let next_source = (!request.dry_run && !older).then(|| SourceState {
            format_version: state::STATE_FORMAT_VERSION,
            cloud: doc.cloud,
            change_number: doc.change_number,
            applied_at: state::stored_time(now),
            tags: history,
        });
        Ok(Prepared {
            targets,
            next_source,
            warnings,
        })
    }

    /// The previous versions of the selected tags that changed less than the grace window
    /// ago, read from the archived documents that hold them.
    async fn grace_tags(
        &self,
        state: &State,
        history: &BTreeMap<String, TagHistory>,
        selected: &BTreeSet<String>,
        now: DateTime<Utc>,
        warnings: &mut Vec<String>,
    ) -> Vec<GraceTag> {
        let window = chrono::Duration::days(i64::from(self.config.grace_days));
        let mut wanted: BTreeMap<u64, Vec<(&String, &PreviousVersion)>> = BTreeMap::new();
        for (name, tag) in history.iter().filter(|(name, _)| selected.contains(*name)) {
            let Some(previous) = &tag.previous else {
                continue;
            };
            if now - tag.since < window {
                wanted
                    .entry(previous.document)
                    .or_default()
                    .push((name, previous));
            }
        }
        let mut grace = Vec::new();
        let cloud = self.config.cloud;
        for (document, tags) in wanted {
            let names: Vec<String> = tags.iter().map(|(name, _)| (*name).clone()).collect();
            let missing = |why: String| {
                format!(
                    "grace window: the previous version of {} is not available ({why}); its retired ranges are not kept",
                    names.join(", ")
                )
            };
            let bytes = match state.read_snapshot(cloud, document).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    warnings.push(missing(format!(
                        "document {document} is not in the archive"
                    )));
                    continue;
                }
                Err(err) => {
                    warnings.push(missing(err.to_string()));
                    continue;
                }
            };
            let old = match ServiceTags::parse_only(&bytes, &names) {
                Ok(old) => old,
                Err(err) => {
                    warnings.push(missing(format!("archived document {document}: {err}")));
                    continue;
                }
            };
            for (name, previous) in tags {
                match old.find(name) {
                    Some(tag) if tag.change_number == previous.change_number => {
                        info!(tag = %name, previous_change_number = previous.change_number, prefixes = tag.ipv4.len(), "keeping the previous ranges in the grace window");
                        grace.push(GraceTag {
                            tag: tag.name.to_owned(),
                            change_number: tag.change_number,
                            prefixes: tag.ipv4.to_vec(),
                        });
                    }
                    _ => warnings.push(format!(
                        "grace window: archived document {document} does not hold version {} of {name}; its retired ranges are not kept",
                        previous.change_number
                    )),
                }
            }
        }
        grace
    }
}

/// The selected tag names of all targets, as the document spells them (unknown names are left
/// to the per-vault plan to report).
fn selected_names(doc: &ServiceTags, targets: &[VaultTarget]) -> BTreeSet<String> {
    targets
        .iter()
        .flat_map(|t| t.selection.tags.iter())
        .filter_map(|name| doc.find(name.trim()).map(|tag| tag.name.to_owned()))
        .collect()
}

/// The tag history after seeing `doc`: a selected tag whose change number moved starts a new
/// entry that points at the version it replaced; entries of tags not selected now are kept
/// (another run may select them).
fn next_history(
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
