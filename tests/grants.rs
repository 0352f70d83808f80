//! Just-in-time grants end to end through the emulator: a grant writes one rule with one PATCH,
//! a revoke or the expiry removes it, and nothing else on the firewall moves.
//!
//! Time is the runner's [`TestClock`], moved by the tests: nothing here waits for an expiry.
//! The figures in BENCHMARKS.md come from `benches/grants.rs`, not from these tests.

mod support;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::future::join_all;
use serde_json::Value;
use tagfence::core::desired::FitMode;
use tagfence::core::grant::GrantRefusal;
use tagfence::reconcile::{ErrorKind, Outcome};
use tagfence::run::{
    GrantReport, GrantRequest, Requester, RevokeRequest, RevokeTarget, RunError, RunRequest,
};
use tagfence::state::dir::DirStore;
use tagfence::state::{Lock, State, StateError, Store};
use tagfence_emulator::{Emulator, FaultKind, Route};

use support::grants::*;
use support::observe::{count_for, settings, MANUAL};
use support::{emulator_config, start, stderr, stdout, vault, vault_id, Scratch};

fn grant(vault: &str, ip: &str, ttl_secs: u64) -> GrantRequest {
    GrantRequest {
        vault: vault_id(vault),
        address: ip.parse().unwrap(),
        ttl: Some(Duration::from_secs(ttl_secs)),
        reason: Some("release pipeline".to_owned()),
        requester: Requester::Cli {
            label: "test".to_owned(),
        },
        trigger: "cli",
    }
}

fn revoke_address(vault: &str, ip: &str) -> RevokeRequest {
    RevokeRequest {
        vault: Some(vault_id(vault)),
        target: RevokeTarget::Address(ip.parse().unwrap()),
        requester: Requester::Cli {
            label: "test".to_owned(),
        },
        trigger: "cli",
    }
}

fn revoke_id(id: &str) -> RevokeRequest {
    RevokeRequest {
        vault: None,
        target: RevokeTarget::Id(id.to_owned()),
        requester: Requester::Cli {
            label: "test".to_owned(),
        },
        trigger: "cli",
    }
}

impl World {
    fn gets(&self, name: &str) -> usize {
        count_for(&self.emulator, Route::VaultGet, name)
    }
}

fn set(rules: Vec<String>) -> BTreeSet<String> {
    rules.into_iter().collect()
}

/// The GETs and PATCHes of one vault, in the order the emulator finished them.
fn vault_trace(emulator: &Emulator, name: &str) -> Vec<Route> {
    emulator
        .requests()
        .into_iter()
        .filter(|r| r.vault.as_deref() == Some(name))
        .filter(|r| matches!(r.route, Route::VaultGet | Route::VaultPatch))
        .map(|r| r.route)
        .collect()
}

/// `n` writes made one at a time: each is read, read again and written (GET, GET, PATCH) before
/// the next one reads. Two writes in flight at once would show as two reads, or two PATCHes,
/// next to each other — and the later write would have been planned from a read that missed
/// the earlier one's rule.
fn assert_one_write_at_a_time(trace: &[Route], n: usize) {
    let expected: Vec<Route> =
        std::iter::repeat_n([Route::VaultGet, Route::VaultGet, Route::VaultPatch], n)
            .flatten()
            .collect();
    assert_eq!(trace, expected.as_slice(), "{trace:?}");
}

/// Twenty public addresses that no tag of the fixture holds as a /32, nor the person's rule.
fn addresses(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("52.174.20.{i}")).collect()
}

fn outcome(report: &GrantReport) -> &Outcome {
    &report
        .vault
        .as_ref()
        .expect("the vault was reconciled")
        .outcome
}

#[tokio::test]
async fn a_grant_then_a_revoke_write_one_patch_each_and_touch_nothing_else() {
    let emulator = start(emulator_config(vec![vault("kv1", &[MANUAL])])).await;
    let scratch = Scratch::new();
    let settings = settings(&emulator, &[vault_id("kv1")], Some(&scratch));
    let clock = TestClock::new();
    let runner = make_runner(&emulator, &settings, &clock);
    runner.run(&RunRequest::default()).await.unwrap();
    let before = emulator.ip_rules("kv1");
    emulator.clear_requests();

    let report = runner.grant(&grant("kv1", AGENT, 1800)).await.unwrap();
    assert!(report.succeeded(), "{}", report.to_text());
    let rules = emulator.ip_rules("kv1");
    assert!(rules.contains(&format!("{AGENT}/32")), "{rules:?}");
    assert_eq!(rules.len(), before.len() + 1);
    assert_eq!(count_for(&emulator, Route::VaultPatch, "kv1"), 1);
    let id = report.grant.as_ref().unwrap().id.clone();

    emulator.clear_requests();
    let report = runner.revoke(&revoke_id(&id)).await.unwrap();
    assert!(report.succeeded(), "{}", report.to_text());
    assert_eq!(emulator.ip_rules("kv1"), before);
    assert_eq!(count_for(&emulator, Route::VaultPatch, "kv1"), 1);
    assert!(runner.grants().await.unwrap().is_empty());
}

/// Claim 1: by address, the whole `networkAcls` (default action, bypass, vnet rules, rule order)
/// is as before but for the one rule; status lists the live grant with its expiry.
#[tokio::test]
async fn a_grant_then_a_revoke_by_address_leave_the_rest_of_the_firewall_byte_identical() {
    let w = World::kv1(|_| {}).await;
    let before = acls(&w.emulator, "kv1");
    w.emulator.clear_requests();

    let report = w.runner.grant(&grant("kv1", AGENT, 1800)).await.unwrap();
    succeeded(&report);
    assert_eq!(outcome(&report), &Outcome::Applied);
    assert_eq!((w.gets("kv1"), w.patches("kv1")), (2, 1), "GET, GET, PATCH");
    let granted = report.grant.clone().unwrap();
    let expected_expiry =
        tagfence::state::stored_time(w.clock.now() + chrono::Duration::seconds(1800));
    assert_eq!(granted.expires_at, expected_expiry);
    assert!(granted.placed);
    let mut after = acls(&w.emulator, "kv1");
    let rules = after["ipRules"].as_array_mut().unwrap();
    let at = rules
        .iter()
        .position(|r| r["value"] == rule(AGENT).as_str())
        .expect("the grant's rule is on the vault");
    rules.remove(at);
    assert_eq!(after, before, "nothing but the grant's rule changed");

    let status = w.runner.status().await.unwrap();
    assert_eq!(status.grants.len(), 1, "{}", status.to_text());
    let shown = &status.grants[0];
    assert_eq!(
        (shown.id.as_str(), shown.address, shown.expires_at),
        (
            granted.id.as_str(),
            AGENT.parse::<Ipv4Addr>().unwrap(),
            expected_expiry
        )
    );
    assert!(shown.is_live(w.clock.now()));
    assert!(
        status
            .to_text()
            .contains(&tagfence::state::timestamp(expected_expiry)),
        "{}",
        status.to_text()
    );

    w.emulator.clear_requests();
    let report = w
        .runner
        .revoke(&revoke_address("kv1", AGENT))
        .await
        .unwrap();
    succeeded(&report);
    assert_eq!(report.grant.as_ref().unwrap().id, granted.id);
    assert_eq!((w.gets("kv1"), w.patches("kv1")), (2, 1), "GET, GET, PATCH");
    assert_eq!(
        acls(&w.emulator, "kv1"),
        before,
        "byte-identical after the revoke"
    );
    let status = w.runner.status().await.unwrap();
    assert!(status.grants.is_empty(), "{}", status.to_text());
    assert!(w.index().await.vaults.is_empty());
}

/// Claim 2, one runner: twenty grants asked at once are written one at a time (the vault's
/// lock), none lost; twenty revokes at once take exactly them away again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_grants_and_revokes_on_one_vault_lose_no_update() {
    let w = World::kv1(|_| {}).await;
    let before = set(w.emulator.ip_rules("kv1"));
    let addresses = addresses(20);
    w.emulator.clear_requests();

    slow_patches(&w.emulator, 20);
    let requests: Vec<GrantRequest> = addresses.iter().map(|a| grant("kv1", a, 1800)).collect();
    let reports = join_all(requests.iter().map(|r| w.runner.grant(r))).await;
    let mut ids = BTreeSet::new();
    for report in reports {
        let report = report.unwrap();
        succeeded(&report);
        ids.insert(report.grant.unwrap().id);
    }
    assert_eq!(ids.len(), 20, "one id per grant");
    assert_concurrent_grants_landed(&w, &before, &addresses, &ids).await;

    w.emulator.clear_requests();
    slow_patches(&w.emulator, 20);
    let requests: Vec<RevokeRequest> = addresses.iter().map(|a| revoke_address("kv1", a)).collect();
    let reports = join_all(requests.iter().map(|r| w.runner.revoke(r))).await;
    for report in reports {
        succeeded(&report.unwrap());
    }
    assert_concurrent_revokes_landed(&w, &before).await;
}

/// Claim 2, two runners over one state directory (as two instances of the app would be): the
/// state's vault lock keeps their writes apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_grants_from_two_runners_sharing_the_state_lose_no_update() {
    let w = World::kv1(|_| {}).await;
    let other = make_runner(&w.emulator, &w.settings, &w.clock);
    let before = set(w.emulator.ip_rules("kv1"));
    let addresses = addresses(20);
    w.emulator.clear_requests();

    slow_patches(&w.emulator, 20);
    let requests: Vec<GrantRequest> = addresses.iter().map(|a| grant("kv1", a, 1800)).collect();
    let reports = join_all(requests.iter().enumerate().map(|(i, r)| {
        let runner = if i % 2 == 0 { &w.runner } else { &other };
        runner.grant(r)
    }))
    .await;
    let mut ids = BTreeSet::new();
    for report in reports {
        let report = report.unwrap();
        succeeded(&report);
        ids.insert(report.grant.unwrap().id);
    }
    assert_eq!(ids.len(), 20);
    assert_concurrent_grants_landed(&w, &before, &addresses, &ids).await;

    w.emulator.clear_requests();
    slow_patches(&w.emulator, 20);
    let requests: Vec<RevokeRequest> = addresses.iter().map(|a| revoke_address("kv1", a)).collect();
    let reports = join_all(requests.iter().enumerate().map(|(i, r)| {
        let runner = if i % 2 == 0 { &other } else { &w.runner };
        runner.revoke(r)
    }))
    .await;
    for report in reports {
        succeeded(&report.unwrap());
    }
    assert_concurrent_revokes_landed(&w, &before).await;
}

/// Makes the next `n` PATCHes of kv1 take a few milliseconds, so that a second write started
/// while one is in flight would be seen in flight (the window a lost update needs).
fn slow_patches(emulator: &Emulator, n: u32) {
    emulator.add_fault(fault_on(
        Route::VaultPatch,
        "kv1",
        FaultKind::Delay { ms: 5 },
        n,
    ));
}

async fn assert_concurrent_grants_landed(
    w: &World,
    before: &BTreeSet<String>,
    addresses: &[String],
    ids: &BTreeSet<String>,
) {
    let rules = set(w.emulator.ip_rules("kv1"));
    let mut expected = before.clone();
    expected.extend(addresses.iter().map(|a| rule(a)));
    assert_eq!(
        rules, expected,
        "every grant's rule, the person's and the tags' rules"
    );
    assert!(rules.contains(MANUAL));
    assert_one_write_at_a_time(&vault_trace(&w.emulator, "kv1"), 20);
    let recorded = w.grants().await;
    assert_eq!(recorded.len(), 20);
    assert!(recorded.iter().all(|g| g.placed), "{recorded:?}");
    assert_eq!(
        recorded
            .iter()
            .map(|g| g.id.clone())
            .collect::<BTreeSet<_>>(),
        *ids
    );
    let index = w.index().await;
    let indexed: BTreeSet<String> = index.vaults[&vault_id("kv1")].iter().cloned().collect();
    assert_eq!(indexed, *ids);
}

async fn assert_concurrent_revokes_landed(w: &World, before: &BTreeSet<String>) {
    assert_eq!(
        set(w.emulator.ip_rules("kv1")),
        *before,
        "every grant's rule gone; the person's and the tags' rules as they were"
    );
    assert_one_write_at_a_time(&vault_trace(&w.emulator, "kv1"), 20);
    assert!(w.grants().await.is_empty());
    assert!(w.index().await.vaults.is_empty());
}

/// Claim 3: the rule was a person's before the grant: the grant adds nothing, the revoke
/// removes nothing, and later runs still leave it as the person's.
#[tokio::test]
async fn a_person_s_identical_rule_is_neither_written_nor_removed_by_a_grant() {
    let w = World::kv1(|_| {}).await;
    let before = acls(&w.emulator, "kv1");
    let person = MANUAL.trim_end_matches("/32");
    w.emulator.clear_requests();

    let report = w.runner.grant(&grant("kv1", person, 1800)).await.unwrap();
    succeeded(&report);
    assert_eq!(outcome(&report), &Outcome::InSync);
    assert_eq!(w.patches("kv1"), 0);
    assert_eq!(w.grants().await.len(), 1);

    let report = w
        .runner
        .revoke(&revoke_address("kv1", person))
        .await
        .unwrap();
    succeeded(&report);
    assert_eq!(w.patches("kv1"), 0);
    assert_eq!(acls(&w.emulator, "kv1"), before);
    assert!(w.grants().await.is_empty());

    // Still the person's: a regular run keeps it, and so does a sweep.
    w.regular_run().await;
    w.runner.sweep("test").await.unwrap();
    assert_eq!(w.patches("kv1"), 0);
    assert_eq!(acls(&w.emulator, "kv1"), before);
}

/// Claim 3, second variant: a selected static rule equal to the grant's /32 stays after the
/// revoke (and after the grant's expiry).
#[tokio::test]
async fn a_static_rule_equal_to_the_granted_address_stays_after_the_revoke() {
    const STATIC: &str = "52.174.30.1";
    let w = World::kv1(|s| s.selection.static_rules = vec![STATIC.to_owned()]).await;
    assert!(w.emulator.ip_rules("kv1").contains(&rule(STATIC)));
    let before = acls(&w.emulator, "kv1");
    w.emulator.clear_requests();

    let report = w.runner.grant(&grant("kv1", STATIC, 1800)).await.unwrap();
    succeeded(&report);
    assert_eq!(w.patches("kv1"), 0, "the rule is there already");
    let report = w
        .runner
        .revoke(&revoke_address("kv1", STATIC))
        .await
        .unwrap();
    succeeded(&report);
    assert_eq!(
        w.patches("kv1"),
        0,
        "a tag's rule is not the grant's to remove"
    );
    assert_eq!(acls(&w.emulator, "kv1"), before);
    assert!(w.grants().await.is_empty());

    // The same through an expiry instead of a revoke.
    w.runner.grant(&grant("kv1", STATIC, 60)).await.unwrap();
    w.clock.advance(Duration::from_secs(61));
    let sweep = w.runner.sweep("test").await.unwrap();
    assert!(sweep.failed.is_empty(), "{}", sweep.to_text());
    w.regular_run().await;
    assert_eq!(w.patches("kv1"), 0);
    assert_eq!(acls(&w.emulator, "kv1"), before);
}

/// Claim 4: a second grant for the address extends the first: same id, later expiry, one rule,
/// no write.
#[tokio::test]
async fn a_second_grant_for_the_same_address_extends_the_first_without_a_write() {
    let w = World::kv1(|_| {}).await;
    let first = w.runner.grant(&grant("kv1", AGENT, 1800)).await.unwrap();
    let first = first.grant.unwrap();
    let rules = w.emulator.ip_rules("kv1");
    w.emulator.clear_requests();

    w.clock.advance(Duration::from_secs(600));
    let second = w.runner.grant(&grant("kv1", AGENT, 1800)).await.unwrap();
    succeeded(&second);
    let second = second.grant.unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(
        second.expires_at,
        first.expires_at + chrono::Duration::seconds(600)
    );
    assert_eq!(w.patches("kv1"), 0);
    assert_eq!(w.emulator.ip_rules("kv1"), rules, "no second rule");
    let recorded = w.grants().await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].expires_at, second.expires_at);
    assert_eq!(w.index().await.vaults[&vault_id("kv1")], vec![first.id]);

    // Past the first expiry, before the second: the sweep leaves it.
    w.clock.advance(Duration::from_secs(1300));
    let sweep = w.runner.sweep("test").await.unwrap();
    assert!(sweep.vaults.is_empty(), "{}", sweep.to_text());
    assert!(w.emulator.ip_rules("kv1").contains(&rule(AGENT)));
    w.clock.advance(Duration::from_secs(501));
    let sweep = w.runner.sweep("test").await.unwrap();
    assert_eq!(sweep.vaults.len(), 1, "{}", sweep.to_text());
    assert!(!w.emulator.ip_rules("kv1").contains(&rule(AGENT)));
}

/// Claim 5: a TTL above the vault's maximum is refused before anything is read or written.
#[tokio::test]
async fn a_ttl_above_the_vault_s_maximum_is_refused_before_anything_is_written() {
    let w = World::kv1(|s| s.grant_max_ttl = Some(Duration::from_secs(3600))).await;
    let before = acls(&w.emulator, "kv1");
    w.emulator.clear_requests();

    let err = w
        .runner
        .grant(&grant("kv1", AGENT, 2 * 3600))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            RunError::GrantRefused {
                refusal: GrantRefusal::TtlTooLong { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(
        err.to_string()
            .contains("longer than the longest allowed, 1h"),
        "{err}"
    );
    assert_eq!(vault_trace(&w.emulator, "kv1"), Vec::<Route>::new());
    assert_eq!(acls(&w.emulator, "kv1"), before);
    assert!(w.grants().await.is_empty());
    assert!(w.index().await.vaults.is_empty());
    // At the maximum exactly it is accepted.
    succeeded(&w.runner.grant(&grant("kv1", AGENT, 3600)).await.unwrap());
}

/// Claim 5: the vault's live grant limit refuses the next grant and keeps the others.
#[tokio::test]
async fn the_vault_s_live_grant_limit_refuses_the_next_grant_and_keeps_the_others() {
    let w = World::kv1(|s| s.grant_max_per_vault = Some(3)).await;
    let addresses = addresses(4);
    let mut ids = Vec::new();
    for address in &addresses[..3] {
        let report = w.runner.grant(&grant("kv1", address, 1800)).await.unwrap();
        succeeded(&report);
        ids.push(report.grant.unwrap().id);
    }
    let rules = w.emulator.ip_rules("kv1");
    w.emulator.clear_requests();

    let report = w
        .runner
        .grant(&grant("kv1", &addresses[3], 1800))
        .await
        .unwrap();
    assert!(!report.succeeded());
    let refused = outcome(&report);
    assert_eq!(
        refused.error_kind(),
        Some(ErrorKind::Refused),
        "{refused:?}"
    );
    let detail = refused.detail().unwrap_or_default();
    assert!(detail.contains("--grant-max-per-vault 3"), "{detail}");
    assert_eq!(w.patches("kv1"), 0);
    assert_eq!(w.emulator.ip_rules("kv1"), rules, "the first three intact");
    let recorded = w.grants().await;
    assert_eq!(
        recorded
            .iter()
            .map(|g| g.id.clone())
            .collect::<BTreeSet<_>>(),
        ids.iter().cloned().collect()
    );
    let mut indexed = w.index().await.vaults[&vault_id("kv1")].clone();
    indexed.sort();
    ids.sort();
    assert_eq!(indexed, ids);

    // Extending one of the three is no fourth grant; revoking one makes room.
    succeeded(
        &w.runner
            .grant(&grant("kv1", &addresses[0], 1800))
            .await
            .unwrap(),
    );
    succeeded(
        &w.runner
            .revoke(&revoke_address("kv1", &addresses[1]))
            .await
            .unwrap(),
    );
    succeeded(
        &w.runner
            .grant(&grant("kv1", &addresses[3], 1800))
            .await
            .unwrap(),
    );
}

/// Claim 5: a vault whose `max_rules` is exactly full has no room for a grant.
#[tokio::test]
async fn a_vault_exactly_full_refuses_a_grant_and_nothing_is_written() {
    // 24 AzureDevOps rules and the person's: 25.
    let w = World::kv1(|s| s.limits.max_rules = Some(25)).await;
    assert_eq!(w.emulator.ip_rules("kv1").len(), 25);
    let before = acls(&w.emulator, "kv1");
    w.emulator.clear_requests();

    let report = w.runner.grant(&grant("kv1", AGENT, 1800)).await.unwrap();
    assert!(!report.succeeded());
    let refused = outcome(&report);
    assert_eq!(
        refused.error_kind(),
        Some(ErrorKind::Refused),
        "{refused:?}"
    );
    let detail = refused.detail().unwrap_or_default();
    assert!(detail.contains("no room"), "{detail}");
    assert_eq!(w.patches("kv1"), 0);
    assert_eq!(acls(&w.emulator, "kv1"), before);
    assert!(
        w.grants().await.is_empty(),
        "a grant never placed is not recorded"
    );
    assert!(w.index().await.vaults.is_empty());
}

/// Claim 5: private, loopback and IPv6 addresses are refused by name, before any request.
#[tokio::test]
async fn private_and_ipv6_addresses_are_refused_with_why() {
    let w = World::kv1(|_| {}).await;
    w.emulator.clear_requests();
    for address in ["10.1.2.3", "192.168.1.1", "127.0.0.1"] {
        let err = w
            .runner
            .grant(&grant("kv1", address, 1800))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                RunError::GrantRefused {
                    refusal: GrantRefusal::NotPublic { .. },
                    ..
                }
            ),
            "{address}: {err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        let text = err.to_string();
        assert!(
            text.contains(&format!("{address} is not a public address")),
            "{text}"
        );
        assert!(text.contains("nothing written"), "{text}");
    }
    let err = w
        .runner
        .grant(&grant("kv1", "2001:db8::1", 1800))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            RunError::GrantRefused {
                refusal: GrantRefusal::Ipv6(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("tagfence writes IPv4 firewall rules only"),
        "{err}"
    );
    assert!(vault_trace(&w.emulator, "kv1").is_empty());
    assert!(w.grants().await.is_empty());
    assert!(w.index().await.vaults.is_empty());
}

/// Claim 5: a vault that is not managed, and a runner without state.
#[tokio::test]
async fn an_unmanaged_vault_and_a_runner_without_state_are_refused() {
    let w = World::new(
        vec![vault("kv1", &[MANUAL]), vault("kv-other", &[MANUAL])],
        &["kv1"],
        |_| {},
    )
    .await;
    let err = w
        .runner
        .grant(&grant("kv-other", AGENT, 1800))
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::UnknownVault(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(vault_trace(&w.emulator, "kv-other").is_empty());
    assert_eq!(w.emulator.ip_rules("kv-other"), vec![MANUAL.to_owned()]);

    let mut stateless = w.settings.clone();
    stateless.state_dir = None;
    let stateless = make_runner(&w.emulator, &stateless, &w.clock);
    let err = stateless
        .grant(&grant("kv1", AGENT, 1800))
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::GrantsNeedState), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::NotConfigured);
    assert!(matches!(
        stateless.revoke(&revoke_address("kv1", AGENT)).await,
        Err(RunError::GrantsNeedState)
    ));
    assert!(matches!(
        stateless.sweep("test").await,
        Err(RunError::GrantsNeedState)
    ));
    assert!(matches!(
        stateless.grants().await,
        Err(RunError::GrantsNeedState)
    ));
    assert!(w
        .emulator
        .requests()
        .iter()
        .all(|r| r.route != Route::VaultPatch));
}

#[tokio::test]
async fn an_expired_grant_is_gone_after_the_next_sweep() {
    let emulator = start(emulator_config(vec![vault("kv1", &[MANUAL])])).await;
    let scratch = Scratch::new();
    let settings = settings(&emulator, &[vault_id("kv1")], Some(&scratch));
    let clock = TestClock::new();
    let runner = make_runner(&emulator, &settings, &clock);
    runner.run(&RunRequest::default()).await.unwrap();
    let before = emulator.ip_rules("kv1");
    runner.grant(&grant("kv1", AGENT, 60)).await.unwrap();
    assert_eq!(emulator.ip_rules("kv1").len(), before.len() + 1);

    emulator.clear_requests();
    let sweep = runner.sweep("test").await.unwrap();
    assert!(sweep.vaults.is_empty(), "a live grant is not touched");
    assert!(
        emulator.requests().iter().all(|r| !r.route.is_vault()),
        "not even read"
    );
    clock.advance(Duration::from_secs(61));
    let sweep = runner.sweep("test").await.unwrap();
    assert_eq!(sweep.vaults.len(), 1, "{}", sweep.to_text());
    assert!(sweep.failed.is_empty(), "{}", sweep.to_text());
    assert_eq!(emulator.ip_rules("kv1"), before);
    assert_eq!(count_for(&emulator, Route::VaultPatch, "kv1"), 1);
    let sweep = runner.sweep("test").await.unwrap();
    assert_eq!(sweep.indexed, 0, "{}", sweep.to_text());
}

/// Claim 6: a regular run after the expiry removes the grant's rule, with no sweep.
#[tokio::test]
async fn a_regular_run_after_the_expiry_removes_the_grant_s_rule() {
    let w = World::kv1(|_| {}).await;
    let before = acls(&w.emulator, "kv1");
    w.runner.grant(&grant("kv1", AGENT, 60)).await.unwrap();
    w.clock.advance(Duration::from_secs(61));
    w.emulator.clear_requests();

    let report = w.regular_run().await;
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::Applied,
        "{}",
        report.to_text()
    );
    let plan = report.vaults[0].plan.as_ref().unwrap();
    assert_eq!(plan.remove, vec![rule(AGENT).parse().unwrap()]);
    assert!(plan.add.is_empty());
    assert_eq!(w.patches("kv1"), 1);
    assert_eq!(acls(&w.emulator, "kv1"), before);
    assert!(w.grants().await.is_empty());
    // A regular run leaves the grants index alone: the next sweep drops the vault's entry,
    // without reading the vault.
    w.emulator.clear_requests();
    let sweep = w.runner.sweep("test").await.unwrap();
    assert!(sweep.failed.is_empty(), "{}", sweep.to_text());
    assert!(w.emulator.requests().iter().all(|r| !r.route.is_vault()));
    assert!(w.index().await.vaults.is_empty(), "{:?}", w.index().await);
}

/// Claim 6: a regular run while the grant is live keeps its rule, without a write, and does not
/// take it for a person's (the sweep still removes it after the expiry).
#[tokio::test]
async fn a_regular_run_keeps_a_live_grant_and_does_not_take_it_for_a_person_s() {
    let w = World::kv1(|_| {}).await;
    let before = acls(&w.emulator, "kv1");
    w.runner.grant(&grant("kv1", AGENT, 60)).await.unwrap();
    w.emulator.clear_requests();

    let report = w.regular_run().await;
    let vault = &report.vaults[0];
    assert_eq!(vault.outcome, Outcome::InSync, "{}", report.to_text());
    let plan = vault.plan.as_ref().unwrap();
    let granted = rule(AGENT).parse().unwrap();
    assert!(plan.granted.contains(&granted), "{:?}", plan.granted);
    assert!(!plan.unmanaged.contains(&granted), "{:?}", plan.unmanaged);
    assert_eq!(
        plan.unmanaged,
        vec![MANUAL.parse().unwrap()],
        "only the person's rule is unmanaged"
    );
    assert_eq!(w.patches("kv1"), 0);
    assert!(w.emulator.ip_rules("kv1").contains(&rule(AGENT)));
    assert_eq!(w.grants().await.len(), 1);

    w.clock.advance(Duration::from_secs(61));
    let sweep = w.runner.sweep("test").await.unwrap();
    assert!(sweep.failed.is_empty(), "{}", sweep.to_text());
    assert_eq!(acls(&w.emulator, "kv1"), before);
}

/// Claim 6, with `--prune`: a live grant's rule is not a person's rule to prune.
#[tokio::test]
async fn a_pruning_run_keeps_a_live_grant() {
    let w = World::new(vec![vault("kv1", &[])], &["kv1"], |s| s.prune = true).await;
    w.regular_run().await;
    succeeded(&w.runner.grant(&grant("kv1", AGENT, 60)).await.unwrap());
    // A person's rule added since: pruned; the grant's: kept.
    let mut rules = w.emulator.ip_rules("kv1");
    rules.push(MANUAL.to_owned());
    w.emulator.set_ip_rules("kv1", rules);
    w.emulator.clear_requests();
    let report = w.regular_run().await;
    let plan = report.vaults[0].plan.as_ref().unwrap();
    assert_eq!(
        plan.remove,
        vec![MANUAL.parse().unwrap()],
        "{}",
        report.to_text()
    );
    assert_eq!(w.patches("kv1"), 1);
    let rules = w.emulator.ip_rules("kv1");
    assert!(rules.contains(&rule(AGENT)), "{rules:?}");
    assert!(!rules.contains(&MANUAL.to_owned()), "{rules:?}");
}

/// Claim 6: with `--fit exact` and the tags filling the vault but one slot, a grant takes the
/// last slot and the regular runs around it still succeed.
#[tokio::test]
async fn with_an_exact_fit_a_grant_takes_the_last_slot_and_regular_runs_still_succeed() {
    // 24 AzureDevOps rules and the person's: 25 of 26.
    let w = World::kv1(|s| {
        s.limits.max_rules = Some(26);
        s.limits.fit = Some(FitMode::Exact);
    })
    .await;
    assert_eq!(w.emulator.ip_rules("kv1").len(), 25);
    succeeded(&w.runner.grant(&grant("kv1", AGENT, 60)).await.unwrap());
    assert_eq!(w.emulator.ip_rules("kv1").len(), 26);
    w.emulator.clear_requests();

    let report = w.regular_run().await;
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::InSync,
        "{}",
        report.to_text()
    );
    assert_eq!(w.patches("kv1"), 0);
    assert_eq!(w.emulator.ip_rules("kv1").len(), 26);
    // No room for another grant meanwhile.
    let full = w
        .runner
        .grant(&grant("kv1", "52.174.20.1", 60))
        .await
        .unwrap();
    assert_eq!(outcome(&full).error_kind(), Some(ErrorKind::Refused));

    w.clock.advance(Duration::from_secs(61));
    let report = w.regular_run().await;
    assert_eq!(
        report.vaults[0].outcome,
        Outcome::Applied,
        "{}",
        report.to_text()
    );
    assert_eq!(w.emulator.ip_rules("kv1").len(), 25);
}

/// A vault dropped from the configuration while it holds grants: the sweep still removes an
/// expired one, and a revoke by id (no vault named) still ends a live one.
#[tokio::test]
async fn grants_on_a_vault_no_longer_managed_are_still_ended() {
    let w = World::new(
        vec![vault("kv1", &[MANUAL]), vault("kv2", &[MANUAL])],
        &["kv1", "kv2"],
        |_| {},
    )
    .await;
    w.regular_run().await;
    let before = acls(&w.emulator, "kv1");
    let expiring = w.runner.grant(&grant("kv1", AGENT, 60)).await.unwrap();
    succeeded(&expiring);
    let live = w
        .runner
        .grant(&grant("kv1", "52.174.20.1", 1800))
        .await
        .unwrap();
    let live = live.grant.unwrap().id;

    let mut only_kv2 = w.settings.clone();
    only_kv2.vaults = vec![vault_id("kv2")];
    let later = make_runner(&w.emulator, &only_kv2, &w.clock);
    w.clock.advance(Duration::from_secs(61));
    let sweep = later.sweep("test").await.unwrap();
    assert!(sweep.failed.is_empty(), "{}", sweep.to_text());
    assert_eq!(sweep.vaults.len(), 1, "{}", sweep.to_text());
    let rules = w.emulator.ip_rules("kv1");
    assert!(!rules.contains(&rule(AGENT)), "{rules:?}");
    assert!(rules.contains(&rule("52.174.20.1")), "{rules:?}");

    let report = later.revoke(&revoke_id(&live)).await.unwrap();
    succeeded(&report);
    assert_eq!(acls(&w.emulator, "kv1"), before);
    assert!(w.grants().await.is_empty());
    assert!(w.index().await.vaults.is_empty());
}

/// A store that passes everything to a directory store, but refuses vault record writes once
/// `allowed` of them have been made since it was armed: a process that died between two of
/// its writes.
#[derive(Debug)]
struct CrashingStore {
    inner: DirStore,
    allowed: AtomicUsize,
}

#[async_trait]
impl Store for CrashingStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StateError> {
        if key.starts_with("vaults/")
            && self
                .allowed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            return Err(StateError::Io {
                operation: "writing",
                key: key.to_owned(),
                store: self.describe(),
                detail: "injected failure: the process died".to_owned(),
            });
        }
        self.inner.put(key, bytes).await
    }
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<bool, StateError> {
        self.inner.put_if_absent(key, bytes).await
    }
    async fn lock(&self, key: &str, wait: Duration) -> Result<Box<dyn Lock>, StateError> {
        self.inner.lock(key, wait).await
    }
}

/// Claim 7: the PATCH that would remove an expired grant's rule keeps failing: the sweep reports
/// the grant with why, status shows it, and the next sweep removes it.
async fn a_failed_removal_is_retried_by_the_next_sweep(kind: FaultKind) {
    let w = World::kv1(|s| {
        s.http_max_retries = Some(1);
        s.http_retry_delay_ms = Some(1);
    })
    .await;
    let before = acls(&w.emulator, "kv1");
    let granted = w.runner.grant(&grant("kv1", AGENT, 60)).await.unwrap();
    let id = granted.grant.unwrap().id;
    w.clock.advance(Duration::from_secs(61));
    w.emulator
        .add_fault(fault_on(Route::VaultPatch, "kv1", kind.clone(), 1000));

    let sweep = w.runner.sweep("test").await.unwrap();
    assert_eq!(sweep.failed.len(), 1, "{}", sweep.to_text());
    assert_eq!(sweep.failed[0].id, id);
    let error = sweep.failed[0].removal_error.clone();
    assert!(error.is_some(), "{:?}", sweep.failed[0]);
    assert!(w.patches("kv1") >= 1, "the removal was tried");
    assert!(w.emulator.ip_rules("kv1").contains(&rule(AGENT)));
    let status = w.runner.status().await.unwrap();
    assert_eq!(status.grants.len(), 1, "{}", status.to_text());
    assert_eq!(status.grants[0].removal_error, error);
    assert!(
        status.to_text().contains("removal failed"),
        "{}",
        status.to_text()
    );
    assert_eq!(w.index().await.vaults[&vault_id("kv1")], vec![id]);

    w.emulator.clear_faults();
    w.emulator.clear_requests();
    let sweep = w.runner.sweep("test").await.unwrap();
    assert!(sweep.failed.is_empty(), "{}", sweep.to_text());
    assert_eq!(sweep.vaults.len(), 1);
    assert_eq!(w.patches("kv1"), 1);
    assert_eq!(acls(&w.emulator, "kv1"), before);
    assert!(w.grants().await.is_empty());
    assert!(
        w.index().await.vaults.is_empty(),
        "the vault's index entry is gone"
    );
    let sweep = w.runner.sweep("test").await.unwrap();
    assert_eq!(sweep.indexed, 0);
}

#[tokio::test]
async fn a_removal_answered_503_is_reported_and_retried_by_the_next_sweep() {
    a_failed_removal_is_retried_by_the_next_sweep(status_fault(503, "ServiceUnavailable")).await;
}

#[tokio::test]
async fn a_removal_whose_connection_is_reset_is_reported_and_retried_by_the_next_sweep() {
    a_failed_removal_is_retried_by_the_next_sweep(FaultKind::Drop).await;
}

/// Claim 7, through a revoke: the revoke's write fails; the grant is ended all the same, kept
/// with why its rule is still there, and the next sweep removes it.
#[tokio::test]
async fn a_revoke_whose_write_fails_is_finished_by_the_next_sweep() {
    let w = World::kv1(|s| {
        s.http_max_retries = Some(1);
        s.http_retry_delay_ms = Some(1);
    })
    .await;
    let before = acls(&w.emulator, "kv1");
    succeeded(&w.runner.grant(&grant("kv1", AGENT, 1800)).await.unwrap());
    w.emulator.add_fault(fault_on(
        Route::VaultPatch,
        "kv1",
        status_fault(503, "ServiceUnavailable"),
        1000,
    ));
    let report = w
        .runner
        .revoke(&revoke_address("kv1", AGENT))
        .await
        .unwrap();
    assert!(!report.succeeded(), "{}", report.to_text());
    let recorded = w.grants().await;
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].revoked_at.is_some());
    assert!(recorded[0].removal_error.is_some(), "{:?}", recorded[0]);
    assert!(w.emulator.ip_rules("kv1").contains(&rule(AGENT)));

    w.emulator.clear_faults();
    let sweep = w.runner.sweep("test").await.unwrap();
    assert!(sweep.failed.is_empty(), "{}", sweep.to_text());
    assert_eq!(acls(&w.emulator, "kv1"), before);
    assert!(w.grants().await.is_empty());
    assert!(w.index().await.vaults.is_empty());
}

/// Claim 8: a rule on the vault always has its grant recorded and indexed.
async fn assert_no_orphan_rule(w: &World, address: &str) {
    if w.emulator.ip_rules("kv1").contains(&rule(address)) {
        let recorded = w.grants().await;
        assert!(
            recorded.iter().any(|g| g.address.to_string() == address),
            "a grant's rule is on the vault with no grant recorded: {recorded:?}"
        );
        assert!(
            w.index().await.vaults.contains_key(&vault_id("kv1")),
            "a grant's rule is on the vault with no index entry"
        );
    }
}

/// Claim 8: ARM refuses the write (4xx): the grant never reached the vault and is not recorded.
#[tokio::test]
async fn a_grant_whose_write_arm_refuses_is_not_recorded() {
    let w = World::kv1(|_| {}).await;
    let before = acls(&w.emulator, "kv1");
    w.emulator.add_fault(fault_on(
        Route::VaultPatch,
        "kv1",
        status_fault(400, "BadRequest"),
        1000,
    ));
    let report = w.runner.grant(&grant("kv1", AGENT, 1800)).await.unwrap();
    assert!(!report.succeeded(), "{}", report.to_text());
    assert_eq!(acls(&w.emulator, "kv1"), before);
    assert!(w.grants().await.is_empty(), "{:?}", w.grants().await);
    assert!(w.index().await.vaults.is_empty(), "{:?}", w.index().await);
    let record = w
        .state()
        .read_vault(&vault_id("kv1").parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(record.pending.is_empty(), "{:?}", record.pending);
}

/// Claim 8: the write lands but its answer is lost: the read after it shows the rule, the grant
/// is recorded as placed, and removed at its expiry.
#[tokio::test]
async fn a_grant_whose_write_lands_but_whose_answer_is_lost_is_recorded_and_swept() {
    let w = World::kv1(|_| {}).await;
    let before = acls(&w.emulator, "kv1");
    w.emulator.clear_requests();
    w.emulator
        .add_fault(fault_on(Route::VaultPatch, "kv1", FaultKind::DropAfter, 1));
    let report = w.runner.grant(&grant("kv1", AGENT, 60)).await.unwrap();
    succeeded(&report);
    assert!(w.emulator.ip_rules("kv1").contains(&rule(AGENT)));
    assert_eq!(
        vault_trace(&w.emulator, "kv1"),
        [
            Route::VaultGet,
            Route::VaultGet,
            Route::VaultPatch,
            Route::VaultGet
        ],
        "not sent again: the read after the lost answer showed it landed"
    );
    assert_no_orphan_rule(&w, AGENT).await;
    assert!(w.grants().await[0].placed);

    w.clock.advance(Duration::from_secs(61));
    let sweep = w.runner.sweep("test").await.unwrap();
    assert!(sweep.failed.is_empty(), "{}", sweep.to_text());
    assert_eq!(acls(&w.emulator, "kv1"), before);
    assert!(w.index().await.vaults.is_empty());
}

/// Claim 8: the process dies after its write landed, before recording it: the record written
/// ahead of the write holds the grant, and the sweep removes its rule at the expiry.
#[tokio::test]
async fn a_grant_whose_record_after_the_write_is_lost_is_still_swept() {
    let w = World::new(vec![vault("kv1", &[MANUAL])], &["kv1"], |_| {}).await;
    let store = Arc::new(CrashingStore {
        inner: DirStore::new(w.scratch.join("state")),
        allowed: AtomicUsize::new(usize::MAX),
    });
    let crashing =
        make_runner(&w.emulator, &w.settings, &w.clock).with_state(State::new(store.clone()));
    crashing.run(&RunRequest::default()).await.unwrap();
    let before = acls(&w.emulator, "kv1");

    // The write-ahead record lands; the record after the PATCH does not.
    store.allowed.store(1, Ordering::SeqCst);
    let report = crashing.grant(&grant("kv1", AGENT, 60)).await.unwrap();
    let warnings = &report.vault.as_ref().unwrap().warnings;
    assert!(
        warnings.iter().any(|w| w.contains("injected failure")),
        "{warnings:?}"
    );
    assert!(w.emulator.ip_rules("kv1").contains(&rule(AGENT)));
    assert_no_orphan_rule(&w, AGENT).await;

    // Another instance, healthy, after the expiry.
    w.clock.advance(Duration::from_secs(61));
    let sweep = w.runner.sweep("test").await.unwrap();
    assert!(sweep.failed.is_empty(), "{}", sweep.to_text());
    assert_eq!(sweep.vaults.len(), 1, "{}", sweep.to_text());
    assert_eq!(acls(&w.emulator, "kv1"), before);
    assert!(w.grants().await.is_empty());
    assert!(w.index().await.vaults.is_empty());
}

/// Claim 8: the process dies while its PATCH is in flight (held by the emulator, then the task
/// is dropped): whether or not the rule reached the vault, the grant is recorded and indexed,
/// and the sweep ends it. The dead process's lock is taken over after its short TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_whose_process_dies_during_its_write_is_recorded_and_swept() {
    let w = World::kv1(|_| {}).await;
    let before = acls(&w.emulator, "kv1");
    let short_lock = || {
        State::new(Arc::new(
            DirStore::new(w.scratch.join("state")).with_lock_ttl(Duration::from_millis(300)),
        ))
    };
    let dying = Arc::new(make_runner(&w.emulator, &w.settings, &w.clock).with_state(short_lock()));
    w.emulator.add_fault(fault_on(
        Route::VaultPatch,
        "kv1",
        FaultKind::hold("patch"),
        1,
    ));
    let task = tokio::spawn({
        let dying = dying.clone();
        async move { dying.grant(&grant("kv1", AGENT, 60)).await }
    });
    assert!(
        w.emulator.wait_held("patch", Duration::from_secs(30)).await,
        "the PATCH was sent"
    );
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    w.emulator.release("patch");
    // Wait until the emulator is done with the held PATCH (handled, or abandoned as the
    // client went away), so that nothing lands after the sweep below.
    let patches = || {
        w.emulator
            .requests()
            .iter()
            .filter(|r| r.route == Route::VaultPatch)
            .count()
    };
    for _ in 0..1000 {
        if patches() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last = w
        .emulator
        .requests()
        .into_iter()
        .rfind(|r| r.route == Route::VaultPatch);
    let last = last.expect("the held PATCH is recorded");
    if last.abandoned {
        assert!(!w.emulator.ip_rules("kv1").contains(&rule(AGENT)));
    }

    // What the dead process left: the grant recorded ahead of its write, with its index entry.
    let recorded = w.grants().await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(!recorded[0].placed);
    assert!(w.index().await.vaults.contains_key(&vault_id("kv1")));
    assert_no_orphan_rule(&w, AGENT).await;

    w.clock.advance(Duration::from_secs(61));
    let survivor = make_runner(&w.emulator, &w.settings, &w.clock).with_state(short_lock());
    let sweep = survivor.sweep("test").await.unwrap();
    assert!(sweep.failed.is_empty(), "{}", sweep.to_text());
    assert_eq!(acls(&w.emulator, "kv1"), before);
    assert!(w.grants().await.is_empty());
    assert!(w.index().await.vaults.is_empty());
}

/// Claim 9: `grant`, `revoke --grant`, `sweep` through the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_grants_revokes_and_sweeps() {
    let emulator = start(emulator_config(vec![vault("kv1", &[MANUAL])])).await;
    let scratch = Scratch::new();
    let dir = scratch.join("state").display().to_string();
    let id = vault_id("kv1");
    let common = [
        "--vault",
        id.as_str(),
        "--state-dir",
        dir.as_str(),
        "--output",
        "json",
    ];
    let args = |command: &[&str]| -> Vec<String> {
        command
            .iter()
            .chain(&common)
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>| {
        let emulator = &emulator;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            support::tagfence(emulator, &args, &[]).await
        }
    };

    let out = run(args(&[
        "grant", "--ip", AGENT, "--ttl", "30m", "--by", "ci",
    ]))
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let grant_id = report["grant"]["id"].as_str().unwrap().to_owned();
    assert!(grant_id.starts_with("g-"), "{report}");
    let expires = report["grant"]["expires_at"].as_str().unwrap();
    let expires = tagfence::state::parse_timestamp(expires).unwrap();
    let ttl = expires - Utc::now();
    assert!(
        ttl > chrono::Duration::minutes(25) && ttl <= chrono::Duration::minutes(30),
        "{report}"
    );
    assert_eq!(report["grant"]["requested_by"], "cli:ci");
    assert!(emulator.ip_rules("kv1").contains(&rule(AGENT)));

    let out = run(args(&["revoke", "--grant", &grant_id])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(emulator.ip_rules("kv1"), vec![MANUAL.to_owned()]);

    let out = run(args(&["sweep"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let sweep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sweep["failed"], serde_json::json!([]), "{sweep}");

    emulator.clear_requests();
    let out = run(args(&["grant", "--ip", AGENT, "--ttl", "2x"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("--ttl"), "{text}");
    assert!(text.contains("90s, 30m, 2h or 1h30m"), "{text}");

    let out = run(args(&["grant", "--ip", "10.0.0.1", "--ttl", "30m"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("not a public address"), "{text}");
    assert!(emulator.requests().iter().all(|r| !r.route.is_vault()));
    assert_eq!(emulator.ip_rules("kv1"), vec![MANUAL.to_owned()]);
    emulator.shutdown().await;
}
