//! What the state says about a document before any vault is touched: freshness (an older
//! document is refused), the snapshot archive, which selected tags changed since the last run,
//! and the previous versions of those still inside the grace window. The decisions are the pure
//! functions of `history`; this module reads and writes the state around them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tracing::info;

use super::error::RunError;
use super::history;
use super::request::RunRequest;
use crate::config::{Config, VaultTarget};
use crate::core::desired::GraceTag;
use crate::core::service_tags::{Cloud, ServiceTags};
use crate::source::Fetched;
use crate::state::{self, PreviousVersion, SourceState, State};

/// What a run learnt from the state before reconciling.
pub(super) struct Prepared {
    /// The targets, each with the grace ranges of its tags.
    pub(super) targets: Vec<VaultTarget>,
    /// The source state to write after the run, when it should be written.
    pub(super) next_source: Option<SourceState>,
    pub(super) warnings: Vec<String>,
}

/// Freshness, archive, tag history and grace ranges: everything the state says about the
/// document before any vault is touched.
pub(super) async fn prepare(
    config: &Config,
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
        if !config.allow_older {
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

    let selected = history::selected_names(doc, &targets);
    let tag_history = history::next_history(last.as_ref(), doc, &selected, now);
    for (name, tag) in &tag_history {
        let moved = last
            .as_ref()
            .and_then(|l| l.tags.get(name))
            .is_some_and(|before| before.change_number != tag.change_number);
        if moved {
            info!(tag = %name, change_number = tag.change_number, "selected tag changed since the last run");
        }
    }
    let grace = if config.grace_days == 0 || older {
        Vec::new()
    } else {
        let window = chrono::Duration::days(i64::from(config.grace_days));
        let wanted = history::grace_wanted(&tag_history, &selected, now, window);
        read_grace(state, config.cloud, wanted, &mut warnings).await
    };
    let targets = history::with_grace(targets, &grace, doc);
    let next_source = (!request.dry_run && !older).then(|| SourceState {
        format_version: state::STATE_FORMAT_VERSION,
        cloud: doc.cloud,
        change_number: doc.change_number,
        applied_at: state::stored_time(now),
        tags: tag_history,
    });
    Ok(Prepared {
        targets,
        next_source,
        warnings,
    })
}

/// The previous versions `wanted` (by the document that holds them), read from the archive.
async fn read_grace(
    state: &State,
    cloud: Cloud,
    wanted: BTreeMap<u64, Vec<(String, PreviousVersion)>>,
    warnings: &mut Vec<String>,
) -> Vec<GraceTag> {
    let mut grace = Vec::new();
    for (document, tags) in wanted {
        let names: Vec<String> = tags.iter().map(|(name, _)| name.clone()).collect();
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
            match old.find(&name) {
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
