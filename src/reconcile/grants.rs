//! A vault's just-in-time grants inside its reconcile: the change a grant, revoke or sweep
//! makes to the vault's record under its lock ([`note_change`]), and what the record keeps of
//! its grants once the reconcile knows what the vault holds ([`settle`]).

use std::net::Ipv4Addr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;

use crate::core::grant::GrantRefusal;
use crate::state::{stored_time, GrantRecord, VaultState};

/// A change to a vault's grants, made under the vault's lock before it is planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantChange {
    /// Record a grant (or extend the live one for the same address).
    Grant(NewGrant),
    /// End a grant.
    Revoke { which: GrantWhich, by: String },
    /// Remove the rules of grants that ended.
    Sweep,
}

/// A grant to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGrant {
    /// Its id, when it is new (a live grant for the same address keeps its own).
    pub id: String,
    pub address: Ipv4Addr,
    pub expires_at: DateTime<Utc>,
    pub requested_by: String,
    pub reason: Option<String>,
    /// Live grants the vault may hold at once.
    pub max_live: usize,
}

/// Which grant a revoke names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantWhich {
    Address(Ipv4Addr),
    Id(String),
}

/// What [`note_change`] did, for the report and for the reconcile's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Noted {
    /// The grant the change is about, as now recorded (`None`: a revoke that found none).
    pub grant: Option<GrantRecord>,
    /// Why nothing changed (no such grant, already ended).
    pub note: Option<String>,
    /// Whether the vault's firewall may need a write: a grant to place, or a grant that ended.
    pub needs_work: bool,
}

/// Applies `change` to the vault's record in memory, at `now`, by run `run_id`; `max_ttl` is
/// the vault's longest grant (a recorded grant outliving it counts as ended,
/// [`GrantRecord::is_live_within`]).
///
/// # Errors
/// [`GrantRefusal::TooMany`] when a new grant would exceed the vault's live grants.
pub fn note_change(
    remembered: &mut VaultState,
    change: &GrantChange,
    now: DateTime<Utc>,
    run_id: &str,
    max_ttl: Duration,
) -> Result<Noted, GrantRefusal> {
    let live = |g: &GrantRecord| g.is_live_within(now, max_ttl);
    let any_ended = |r: &VaultState| r.grants.iter().any(|g| !live(g));
    match change {
        GrantChange::Grant(new) => {
            let live_others = remembered
                .grants
                .iter()
                .filter(|g| live(g) && g.address != new.address)
                .count();
            let existing = remembered
                .grants
                .iter_mut()
                .find(|g| g.address == new.address && live(g));
            let grant = match existing {
                Some(live) => {
                    // A second grant for the same address extends the first; never shortens it.
                    live.expires_at = live.expires_at.max(new.expires_at);
                    live.run_id = run_id.to_owned();
                    if new.reason.is_some() {
                        live.reason.clone_from(&new.reason);
                    }
                    live.clone()
                }
                None => {
                    if live_others >= new.max_live {
                        return Err(GrantRefusal::TooMany {
                            live: live_others,
                            max: new.max_live,
                        });
                    }
                    // An ended grant for the address, if still recorded, is replaced: the new
                    // one wants the same rule.
                    remembered.grants.retain(|g| g.address != new.address);
                    let grant = GrantRecord {
                        id: new.id.clone(),
                        vault: remembered.vault.clone(),
                        address: new.address,
                        granted_at: stored_time(now),
                        expires_at: new.expires_at,
                        requested_by: new.requested_by.clone(),
                        reason: new.reason.clone(),
                        run_id: run_id.to_owned(),
                        revoked_at: None,
                        revoked_by: None,
                        placed: false,
                        removal_error: None,
                    };
                    remembered.grants.push(grant.clone());
                    remembered.grants.sort_by_key(|g| g.address);
                    grant
                }
            };
            Ok(Noted {
                grant: Some(grant),
                note: None,
                needs_work: true,
            })
        }
        GrantChange::Revoke { which, by } => {
            let found = remembered.grants.iter_mut().find(|g| match which {
                GrantWhich::Address(address) => g.address == *address,
                GrantWhich::Id(id) => g.id.eq_ignore_ascii_case(id),
            });
            let (grant, note) = match found {
                None => (None, Some(format!("no grant {} on this vault (never granted, or ended and removed already); nothing to revoke", which_text(which)))),
                Some(grant) if !live(grant) => {
                    let note = format!(
                        "grant {} already ended at {}; its rule is removed if still there",
                        grant.id,
                        crate::state::timestamp(grant.ends_at())
                    );
                    (Some(grant.clone()), Some(note))
                }
                Some(grant) => {
                    grant.revoked_at = Some(stored_time(now));
                    grant.revoked_by = Some(by.clone());
                    (Some(grant.clone()), None)
                }
            };
            Ok(Noted {
                grant,
                note,
                needs_work: any_ended(remembered),
            })
        }
        GrantChange::Sweep => Ok(Noted {
            grant: None,
            note: None,
            needs_work: any_ended(remembered),
        }),
    }
}

fn which_text(which: &GrantWhich) -> String {
    match which {
        GrantWhich::Address(address) => format!("for {address}"),
        GrantWhich::Id(id) => id.clone(),
    }
}

/// Updates the record's grants after the reconcile. When the vault is known to hold `settled`
/// (written and verified, or read in sync): a live grant whose rule it holds is placed, and
/// every ended grant is done with (its rule is gone, or it stays because a tag or a person
/// wants it, which the plan decided). Otherwise the ended grants are kept, with `failure` as
/// why their removal did not happen, for the sweep to retry.
pub fn settle(
    remembered: &mut VaultState,
    settled: Option<&[Ipv4Net]>,
    failure: Option<String>,
    now: DateTime<Utc>,
    max_ttl: Duration,
) {
    let live = |g: &GrantRecord| g.is_live_within(now, max_ttl);
    match settled {
        Some(on_vault) => {
            remembered.grants.retain(live);
            for grant in &mut remembered.grants {
                grant.placed = on_vault.contains(&grant.rule());
            }
        }
        None => {
            if let Some(failure) = failure {
                for grant in remembered.grants.iter_mut().filter(|g| !live(g)) {
                    grant.removal_error = Some(failure.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::ResourceId;

    /// The vaults' longest grant in these tests.
    const MAX: Duration = Duration::from_secs(24 * 3600);

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap()
    }

    fn new_grant(id: &str, address: &str, expires: i64, max_live: usize) -> GrantChange {
        GrantChange::Grant(NewGrant {
            id: id.to_owned(),
            address: address.parse().unwrap(),
            expires_at: at(expires),
            requested_by: "cli:test".to_owned(),
            reason: None,
            max_live,
        })
    }

    fn record() -> VaultState {
        let id: ResourceId =
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-one"
                .parse()
                .unwrap();
        VaultState::new(&id)
    }

    #[test]
    fn a_second_grant_for_an_address_extends_the_first_and_never_shortens_it() {
        let mut r = record();
        let first = note_change(
            &mut r,
            &new_grant("g1", "20.1.2.3", 30, 50),
            at(0),
            "run1",
            MAX,
        )
        .unwrap();
        assert!(first.needs_work);
        let again = note_change(
            &mut r,
            &new_grant("g2", "20.1.2.3", 60, 50),
            at(10),
            "run2",
            MAX,
        )
        .unwrap();
        let grant = again.grant.unwrap();
        assert_eq!((grant.id.as_str(), grant.expires_at), ("g1", at(60)));
        note_change(
            &mut r,
            &new_grant("g3", "20.1.2.3", 20, 50),
            at(11),
            "run3",
            MAX,
        )
        .unwrap();
        assert_eq!(r.grants.len(), 1);
        assert_eq!(r.grants[0].expires_at, at(60));
    }

    #[test]
    fn live_grants_are_counted_against_the_vault_s_maximum() {
        let mut r = record();
        note_change(&mut r, &new_grant("g1", "20.1.2.3", 30, 2), at(0), "r", MAX).unwrap();
        note_change(&mut r, &new_grant("g2", "20.1.2.4", 30, 2), at(0), "r", MAX).unwrap();
        let err =
            note_change(&mut r, &new_grant("g3", "20.1.2.5", 30, 2), at(0), "r", MAX).unwrap_err();
        assert_eq!(err, GrantRefusal::TooMany { live: 2, max: 2 });
        // Extending one of the two is no new grant.
        note_change(&mut r, &new_grant("g4", "20.1.2.4", 40, 2), at(0), "r", MAX).unwrap();
        // Once one expired, there is room again.
        note_change(
            &mut r,
            &new_grant("g5", "20.1.2.5", 90, 2),
            at(31),
            "r",
            MAX,
        )
        .unwrap();
    }

    #[test]
    fn a_revoke_ends_a_live_grant_and_is_idempotent() {
        let mut r = record();
        note_change(
            &mut r,
            &new_grant("g1", "20.1.2.3", 30, 50),
            at(0),
            "r",
            MAX,
        )
        .unwrap();
        let revoke = GrantChange::Revoke {
            which: GrantWhich::Id("G1".to_owned()),
            by: "cli:me".to_owned(),
        };
        let noted = note_change(&mut r, &revoke, at(5), "r", MAX).unwrap();
        assert!(noted.needs_work && noted.note.is_none());
        assert_eq!(r.grants[0].revoked_at, Some(at(5)));
        let again = note_change(&mut r, &revoke, at(6), "r", MAX).unwrap();
        assert!(again.note.unwrap().contains("already ended"));
        assert_eq!(r.grants[0].revoked_at, Some(at(5)));
        settle(&mut r, Some(&[]), None, at(6), MAX);
        assert!(r.grants.is_empty());
        let gone = note_change(&mut r, &revoke, at(7), "r", MAX).unwrap();
        assert!(!gone.needs_work && gone.grant.is_none());
        assert!(gone.note.unwrap().contains("nothing to revoke"));
    }

    #[test]
    fn an_ended_grant_whose_removal_failed_is_kept_with_the_reason() {
        let mut r = record();
        note_change(
            &mut r,
            &new_grant("g1", "20.1.2.3", 30, 50),
            at(0),
            "r",
            MAX,
        )
        .unwrap();
        settle(
            &mut r,
            Some(&["20.1.2.3/32".parse().unwrap()]),
            None,
            at(1),
            MAX,
        );
        assert!(r.grants[0].placed);
        settle(
            &mut r,
            None,
            Some("ARM answered 503".to_owned()),
            at(31),
            MAX,
        );
        assert_eq!(
            r.grants[0].removal_error.as_deref(),
            Some("ARM answered 503")
        );
        assert!(
            note_change(&mut r, &GrantChange::Sweep, at(32), "r", MAX)
                .unwrap()
                .needs_work
        );
    }
}
