//! Invariants of single decisions over random observations (proptest). Here: no Postgres becomes
//! writable without the lease, a writable Postgres without the lease is fenced, renewals are
//! confirmed only for the current unexpired grant, replicas stream from the primary and stop only
//! for a recorded expiry they were asked about, every proposal is valid for the state it was
//! decided on, and `decide` is a function. The coordinator's failover properties are in
//! `prop_failover/`; the shared helpers below read observations without the core's helpers, so a
//! property never trusts what it checks.
//!
//! Deterministic: a fixed proptest seed (override with PGQUORUM_PROP_SEED) and no persistence
//! files. PGQUORUM_PROP_CASES scales the number of cases per property (default 1000).

mod prop_failover;
mod prop_gen;
mod support;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use pgquorum_core::ha::config::fence_lead;
use pgquorum_core::ha::observation::{Data, Observation, Postgres, Report};
use pgquorum_core::ha::rules::lease::{Refusal, may_confirm};
use pgquorum_core::ha::{Action, HaConfig, Plan, decide};
use pgquorum_core::state::{Command, GrantReason, SyncSet};
use pgquorum_core::{Epoch, Lsn, MemberName, Timeline};

fn config() -> Config {
    let cases = std::env::var("PGQUORUM_PROP_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let seed = std::env::var("PGQUORUM_PROP_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_cafe);
    Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() }
}

fn granted(obs: &Observation) -> Option<Epoch> {
    obs.cluster.primary.as_ref().filter(|p| p.member == obs.me).map(|p| p.epoch)
}

/// The fence lead of a lease: a tenth of the ttl it was confirmed with (its own, not today's).
fn lead_of(l: &pgquorum_core::ha::observation::Lease) -> std::time::Duration {
    fence_lead(l.deadline.saturating_sub(l.renewed_at))
}

/// The lease for the current grant, with more than the fence lead left.
fn holds(obs: &Observation) -> bool {
    matches!((obs.local.lease, granted(obs)), (Some(l), Some(e)) if l.epoch == e && obs.now + lead_of(&l) < l.deadline)
}

fn all_actions(p: &Plan) -> impl Iterator<Item = &Action> {
    p.member.actions.iter().chain(p.coordinator.iter().flat_map(|c| c.actions.iter()))
}

fn fresh<'a>(obs: &'a Observation, cfg: &HaConfig, m: &MemberName) -> Option<&'a Report> {
    let s = obs.peers.get(m)?.as_ref()?;
    (obs.now.saturating_sub(s.received) <= cfg.report_stale_after).then_some(&s.report)
}

/// A member whose WAL position is final for `epoch`: fresh, a standby that stopped streaming.
fn final_pos(obs: &Observation, cfg: &HaConfig, m: &MemberName, epoch: Epoch) -> Option<(Lsn, Timeline)> {
    let rep = fresh(obs, cfg, m)?;
    let r = rep.postgres.running()?;
    let same_system =
        matches!(&rep.data, Data::Present(d) if Some(d.system_identifier) == obs.cluster.system_identifier);
    let stopped = rep.stop_streaming_for.is_some_and(|e| e >= epoch) && !r.streaming;
    (r.in_recovery && stopped && same_system).then_some((r.lsn?, r.timeline?))
}

fn final_lsn(obs: &Observation, cfg: &HaConfig, m: &MemberName, epoch: Epoch) -> Option<Lsn> {
    final_pos(obs, cfg, m, epoch).map(|(l, _)| l)
}

/// A `GrantPrimary` a plan proposes.
struct Grant {
    expected: Epoch,
    member: MemberName,
    reason: GrantReason,
    sync: SyncSet,
    lsn: Option<Lsn>,
    timeline: Option<Timeline>,
    floor: Option<Lsn>,
}

fn grants(p: &Plan) -> Vec<Grant> {
    all_actions(p)
        .filter_map(|a| match a {
            Action::Propose(Command::GrantPrimary {
                expected_epoch,
                member,
                reason,
                sync,
                lsn,
                timeline,
                floor,
                ..
            }) => Some(Grant {
                expected: *expected_epoch,
                member: member.clone(),
                reason: *reason,
                sync: sync.clone(),
                lsn: *lsn,
                timeline: *timeline,
                floor: *floor,
            }),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn postgres_starts_as_primary_or_promotes_only_with_the_lease_past_the_fence_lead((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        if plan.member.actions.iter().any(|a| matches!(a, Action::StartPrimary | Action::Promote { .. })) {
            prop_assert!(holds(&obs), "{:?}", plan.member);
        }
    }

    #[test]
    fn writable_postgres_without_the_lease_is_fenced_first((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        if obs.local.postgres.is_writable() && !holds(&obs) {
            prop_assert_eq!(plan.member.actions.first(), Some(&Action::Fence), "{:?}", plan.member);
        }
    }

    #[test]
    fn lease_inside_the_fence_lead_is_fenced_and_dropped_and_nothing_else((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        let expiring = obs.local.postgres != Postgres::Disabled
            && matches!((obs.local.lease, granted(&obs)), (Some(l), Some(e)) if l.epoch == e && obs.now + lead_of(&l) >= l.deadline);
        if expiring {
            prop_assert_eq!(&plan.member.actions, &vec![Action::Fence, Action::DropLease]);
        }
    }

    #[test]
    fn renew_is_only_for_the_granted_epoch_and_never_for_the_fenced_one((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        for a in &plan.member.actions {
            if let Action::Renew { epoch } = a {
                prop_assert_eq!(Some(*epoch), granted(&obs));
                prop_assert_ne!(Some(*epoch), obs.local.fenced_epoch);
                prop_assert!(obs.local.renewal_in_flight_since.is_none());
            }
        }
    }

    /// Once any coordinator recorded the expiry (or this one declared it), nobody renews the
    /// grant again; otherwise only its own member renews it, for its own epoch.
    #[test]
    fn renewals_are_confirmed_only_for_the_current_unexpired_grant((obs, _cfg) in prop_gen::observation()) {
        let declared = obs.coordinator.as_ref().and_then(|c| c.expired_epoch);
        for name in obs.peers.keys() {
            for e in [Epoch(1), prop_gen::EPOCH, prop_gen::EPOCH.next()] {
                let got = may_confirm(&obs.cluster, declared, name, e);
                let current = obs.cluster.primary.as_ref().is_some_and(|p| &p.member == name && p.epoch == e);
                let expired = obs.cluster.primary.as_ref().is_some_and(|p| p.expired) || declared == Some(e);
                match (current, expired) {
                    (false, _) => prop_assert_eq!(got, Err(Refusal::NotPrimary)),
                    (true, true) => prop_assert_eq!(got, Err(Refusal::Expired)),
                    (true, false) => prop_assert_eq!(got, Ok(())),
                }
            }
        }
    }

    #[test]
    fn every_proposal_applies_to_the_state_it_was_decided_on((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        for a in all_actions(&plan) {
            if let Action::Propose(cmd) = a {
                let mut state = obs.cluster.clone();
                let res = state.apply(cmd.clone());
                prop_assert!(res.is_ok(), "{} refused: {:?}", support::command(cmd), res);
            }
        }
    }

    #[test]
    fn decide_is_a_function_of_its_inputs((obs, cfg) in prop_gen::observation()) {
        let first = decide(&obs, &cfg);
        let copy = obs.clone();
        prop_assert_eq!(&first, &decide(&copy, &cfg));
        prop_assert_eq!(first.coordinator.is_some(), obs.coordinator.is_some());
    }

    #[test]
    fn local_postgres_is_left_alone_while_a_task_runs_or_on_a_witness((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        let lease_only = |a: &Action| matches!(a, Action::Renew { .. } | Action::Fence | Action::DropLease);
        if obs.local.postgres == Postgres::Disabled {
            prop_assert!(plan.member.actions.is_empty());
        }
        if obs.local.task.is_some() {
            prop_assert!(plan.member.actions.iter().all(lease_only), "{:?}", plan.member);
        }
    }

    #[test]
    fn replicas_copy_from_and_stream_from_the_primary_only((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        let primary = obs.cluster.primary.as_ref().map(|p| p.member.clone());
        for a in &plan.member.actions {
            if matches!(a, Action::Clone { .. }) {
                prop_assert!(matches!(obs.local.data, Data::Missing), "clone over existing data");
            }
            match a {
                Action::Clone { from } | Action::Rewind { from } => {
                    prop_assert_eq!(Some(from), primary.as_ref());
                    prop_assert_ne!(from, &obs.me);
                }
                Action::StartReplica { upstream: Some(u) } | Action::Follow { upstream: Some(u) } => {
                    prop_assert_eq!(Some(u), primary.as_ref());
                    prop_assert_ne!(u, &obs.me);
                }
                _ => {}
            }
        }
    }

    /// A replica stops streaming from the granted primary only when it was asked to for that
    /// epoch and the expiry is recorded in Raft: a coordinator that asked may lose its
    /// leadership before recording it, and the next one may renew the same epoch.
    #[test]
    fn replicas_stop_streaming_only_for_a_recorded_expiry_they_were_asked_about((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        let Some(g) = obs.cluster.primary.as_ref().filter(|p| p.member != obs.me) else {
            return Ok(());
        };
        let asked = obs.local.stop_streaming_for.is_some_and(|e| e >= g.epoch);
        for a in &plan.member.actions {
            if matches!(a, Action::StartReplica { upstream: None } | Action::Follow { upstream: None }) {
                prop_assert!(g.expired, "stopped streaming from {} of unexpired epoch {}", g.member, g.epoch);
                prop_assert!(asked, "stopped streaming from {} without being asked", g.member);
            }
        }
    }
}

/// The generator must reach the branches the properties are about; otherwise they would hold
/// vacuously. Counts, over a fixed sample, the plans that grant, promote, fence and expire.
#[test]
fn generator_reaches_grants_promotions_fencing_and_expiry() {
    let mut runner = TestRunner::new(Config { rng_seed: RngSeed::Fixed(7), ..Config::default() });
    let strategy = prop_gen::observation();
    let mut n = std::collections::BTreeMap::<&str, usize>::new();
    for _ in 0..3000 {
        let (obs, cfg) = strategy.new_tree(&mut runner).expect("generates").current();
        let plan = decide(&obs, &cfg);
        let mut count = |k, hit: bool| *n.entry(k).or_default() += usize::from(hit);
        for g in grants(&plan) {
            count("grants", true);
            count("sync failovers", g.reason == GrantReason::Failover && obs.cluster.sync.recorded.k > 0);
            count(
                "lag-limited failovers",
                g.reason == GrantReason::Failover && obs.cluster.sync.recorded.k == 0,
            );
            count("reacquires", g.reason == GrantReason::Reacquire);
            count(
                "floor-raised grants",
                g.floor.is_some() && obs.cluster.primary.as_ref().is_some_and(|p| p.floor.is_some()),
            );
        }
        let coord = plan.coordinator.iter().flat_map(|c| c.actions.iter());
        for a in all_actions(&plan) {
            count("promotes", matches!(a, Action::Promote { .. }));
            count("fences", matches!(a, Action::Fence));
            count("expires", matches!(a, Action::Expire { .. }));
        }
        for a in coord {
            count("expiry proposals", matches!(a, Action::Propose(Command::ExpirePrimary { .. })));
            count("stop-streaming", matches!(a, Action::StopStreaming { .. }));
        }
        let stops = plan.member.actions.iter().any(|a| matches!(a, Action::Follow { upstream: None }));
        count("replicas stopping", stops && obs.cluster.primary.is_some());
    }
    let minimum = [
        ("grants", 30),
        ("sync failovers", 5),
        ("lag-limited failovers", 5),
        ("reacquires", 3),
        ("floor-raised grants", 3),
        ("promotes", 5),
        ("fences", 100),
        ("expires", 30),
        ("expiry proposals", 30),
        ("stop-streaming", 30),
        ("replicas stopping", 5),
    ];
    let counts = format!("{n:?}");
    for (k, min) in minimum {
        assert!(n.get(k).copied().unwrap_or(0) >= min, "{k} below {min}: {counts}");
    }
    println!("{counts} in 3000 observations");
}
