//! The coordinator's failover properties over random observations: the lease's expiry is
//! declared and recorded in Raft before anything else happens, phase 1 and grants follow only a
//! recorded expiry, synchronous failovers provably keep every acknowledged commit (the recorded
//! set and the floor inherited from earlier epochs), floors never go down, lag-limited failovers
//! stay within the lag limit of every position known on the candidate's timeline, the former
//! primary is reacquired only when it provably cannot write, and protection never returns to an
//! asynchronous set once it left it.

use proptest::prelude::*;

use pgquorum_core::Lsn;
use pgquorum_core::ha::observation::{Data, Observation, Postgres};
use pgquorum_core::ha::rules::lease::expired_for;
use pgquorum_core::ha::{Action, decide};
use pgquorum_core::state::{Command, DurabilityMode, GrantReason};

use super::{config, final_lsn, final_pos, fresh, grants, prop_gen};

/// The floor of the epoch being failed over: the grant's, or for a released grant the history
/// entry of the current epoch.
fn inherited_floor(obs: &Observation) -> Option<Lsn> {
    match &obs.cluster.primary {
        Some(p) => p.floor,
        None => obs.cluster.history.iter().rfind(|h| h.epoch == obs.cluster.epoch).and_then(|h| h.floor),
    }
}

/// Synchronous: the failing epoch's commits may have been acknowledged by a standby.
fn synchronous(obs: &Observation) -> bool {
    obs.cluster.config.durability != DurabilityMode::Performance && obs.cluster.sync.recorded.k > 0
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn grants_follow_a_recorded_expiry_and_are_based_on_the_current_epoch((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        for g in grants(&plan) {
            prop_assert_eq!(g.expected, obs.cluster.epoch);
            prop_assert!(!obs.cluster.paused);
            prop_assert!(obs.coordinator.is_some(), "only the coordinator grants");
            if let Some(p) = &obs.cluster.primary {
                prop_assert!(p.expired, "granted {} while epoch {} may be renewed", g.member, p.epoch);
            }
            prop_assert!(fresh(&obs, &cfg, &g.member).is_some(), "granted {} unheard of", g.member);
        }
    }

    /// The expiry is declared on this leader (`Expire`, atomically with its renewals) unless it
    /// already was, then proposed; nothing else happens in that tick.
    #[test]
    fn expiry_is_declared_then_recorded_before_anything_else((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        let Some(d) = &plan.coordinator else { return Ok(()) };
        let co = obs.coordinator.as_ref().expect("leader");
        let proposed: Vec<_> = d.actions.iter().filter_map(|a| match a {
            Action::Propose(Command::ExpirePrimary { epoch }) => Some(*epoch),
            _ => None,
        }).collect();
        for e in &proposed {
            let p = obs.cluster.primary.as_ref().expect("a grant to expire");
            prop_assert_eq!(p.epoch, *e);
            prop_assert!(!p.expired, "recorded twice");
            prop_assert!(expired_for(&obs, co).is_some() || co.expired_epoch == Some(*e));
            let declare = Action::Expire { epoch: *e };
            let want = if co.expired_epoch == Some(*e) { vec![] } else { vec![declare] };
            prop_assert_eq!(&d.actions[..d.actions.len() - 1], &want[..], "{:?}", d.actions);
        }
        for a in &d.actions {
            if let Action::Expire { epoch } = a {
                prop_assert!(expired_for(&obs, co).is_some());
                prop_assert_eq!(&proposed, &vec![*epoch], "declared without recording");
            }
        }
    }

    #[test]
    fn replicas_are_asked_to_stop_only_for_a_recorded_expiry_of_the_current_epoch((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        let Some(d) = &plan.coordinator else { return Ok(()) };
        for a in &d.actions {
            if let Action::StopStreaming { epoch, members } = a {
                prop_assert_eq!(*epoch, obs.cluster.epoch);
                let live = obs.cluster.primary.as_ref().is_some_and(|p| !p.expired);
                prop_assert!(!live, "phase 1 of a live grant");
                for m in members {
                    prop_assert!(obs.cluster.primary.as_ref().is_none_or(|p| &p.member != m));
                    let rep = fresh(&obs, &cfg, m).expect("asked members reported recently");
                    prop_assert!(rep.postgres.running().is_some_and(|r| r.in_recovery));
                }
            }
        }
    }

    /// The candidate holds every commit the recorded set `ANY k (S)` could acknowledge (|S|-k+1
    /// of S reported a final position, it reached all of them) and every commit of earlier
    /// epochs (the inherited floor); the grant's floor says so and the candidate reached it.
    #[test]
    fn synchronous_failover_candidate_holds_every_acknowledged_commit((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        let recorded = &obs.cluster.sync.recorded;
        let old = obs.cluster.primary.as_ref().map(|p| p.member.clone());
        for g in grants(&plan) {
            if !synchronous(&obs) || g.reason != GrantReason::Failover {
                continue;
            }
            // The old primary never counts as a witness of its own commits.
            let reported: Vec<Lsn> = recorded
                .members
                .iter()
                .filter(|s| Some(*s) != old.as_ref())
                .filter_map(|s| final_lsn(&obs, &cfg, s, obs.cluster.epoch))
                .collect();
            let need = (recorded.members.len() + 1).saturating_sub(recorded.k as usize);
            let heard = reported.len();
            prop_assert!(heard >= need, "{} granted after {heard} of {need} reports", g.member);
            let lsn = g.lsn.expect("a failover grant carries the candidate's LSN");
            let floor = g.floor.expect("a synchronous failover proves a floor");
            let inherited = inherited_floor(&obs);
            prop_assert!(reported.iter().all(|r| floor >= *r), "floor {floor} below one of {reported:?}");
            prop_assert!(inherited.is_none_or(|f| floor >= f), "floor {floor} below {inherited:?}");
            prop_assert!(lsn >= floor, "{} at {lsn} has not reached the floor {floor}", g.member);
            prop_assert!(Some(&g.member) != old.as_ref());
            prop_assert!(!fresh(&obs, &cfg, &g.member).expect("fresh").tags.nofailover);
        }
    }

    /// Floors never go down, except that a lag-limited failover gives up what lies above its
    /// candidate: then the floor is the candidate's position (the new timeline forks there).
    #[test]
    fn floors_never_go_down_except_to_a_lag_limited_candidate((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        for g in grants(&plan) {
            if g.reason == GrantReason::Bootstrap {
                continue;
            }
            let inherited = inherited_floor(&obs);
            let lag_limited = !synchronous(&obs) && g.reason == GrantReason::Failover;
            let at_least = if lag_limited { inherited.min(g.lsn) } else { inherited };
            prop_assert!(g.floor >= at_least, "{:?} below {at_least:?}", g.floor);
        }
    }

    /// Lag-limited (performance, or an asynchronous record): the candidate is within
    /// maximum_lag_on_failover of every position known of the failed primary: the coordinator's
    /// memory, the primary's last report of any age, and every final position on the
    /// candidate's timeline (a replica cannot be ahead of its primary).
    #[test]
    fn lag_limited_failover_candidate_is_within_the_lag_limit_of_every_position_known((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        let max_lag = obs.cluster.config.maximum_lag_on_failover;
        let old = obs.cluster.primary.as_ref().map(|p| p.member.clone());
        for g in grants(&plan) {
            if synchronous(&obs) || g.reason != GrantReason::Failover {
                continue;
            }
            let (lsn, tl) = (g.lsn.expect("candidate's LSN"), g.timeline.expect("candidate's timeline"));
            let memory = obs.coordinator.as_ref().and_then(|c| c.last_primary_lsn);
            let report =
                old.as_ref().and_then(|o| obs.peers.get(o)?.as_ref()?.report.postgres.running()?.lsn);
            let others = obs.peers.keys().filter(|m| Some(*m) != old.as_ref());
            let finals = others.filter_map(|m| final_pos(&obs, &cfg, m, obs.cluster.epoch));
            let same_tl = finals.filter(|(_, t)| *t == tl).map(|(l, _)| l);
            let best = [memory, report].into_iter().flatten().chain(same_tl).max().unwrap_or(lsn);
            prop_assert!(best.saturating_sub(lsn) <= max_lag, "{} at {lsn} while {best} is known", g.member);
        }
    }

    #[test]
    fn former_primary_is_reacquired_only_when_it_provably_cannot_write((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        for g in grants(&plan) {
            if g.reason != GrantReason::Reacquire {
                continue;
            }
            let epoch = match obs.cluster.primary.as_ref() {
                Some(p) => {
                    prop_assert!(p.expired && g.member == p.member);
                    p.epoch
                }
                None => {
                    // Released: only its last holder, and only while no other member runs Postgres.
                    let last = obs.cluster.history.iter().rev().find(|h| h.epoch == obs.cluster.epoch);
                    prop_assert!(last.is_some_and(|h| h.member == g.member), "not the last holder");
                    let others_run = obs.peers.iter().any(|(m, _)| {
                        *m != g.member
                            && fresh(&obs, &cfg, m).is_some_and(|r| {
                                matches!(r.postgres, Postgres::Running(_) | Postgres::Starting { .. })
                            })
                    });
                    prop_assert!(!others_run, "released role taken back while another member runs Postgres");
                    obs.cluster.epoch
                }
            };
            let p_member = g.member.clone();
            let rep = fresh(&obs, &cfg, &p_member).expect("a fresh report");
            let down = matches!(rep.postgres, Postgres::Stopped | Postgres::Crashed { .. });
            // Or still a standby: it never promoted in its epoch, so it wrote nothing there.
            let standby = rep.postgres.running().filter(|r| r.in_recovery);
            prop_assert!(down || standby.is_some(), "{:?}", rep.postgres);
            prop_assert!(rep.lease.is_none_or(|(e, _)| e != epoch), "still holds {:?}", rep.lease);
            prop_assert!(!rep.tags.nofailover);
            let Data::Present(d) = &rep.data else {
                return Err(TestCaseError::fail("reacquired without data"));
            };
            prop_assert_eq!(Some(d.system_identifier), obs.cluster.system_identifier);
            match standby {
                Some(r) => {
                    prop_assert_eq!(g.lsn, r.lsn);
                    prop_assert!(inherited_floor(&obs).is_none_or(|f| r.lsn >= Some(f)), "below the floor");
                }
                None => prop_assert_eq!(g.lsn, Some(d.checkpoint_lsn)),
            }
            prop_assert_eq!(g.floor, inherited_floor(&obs));
        }
    }

    /// Protection starts asynchronous at bootstrap (docs/decisions.md: bootstrap writes must not
    /// wait for standbys that cannot clone yet) and is synchronous from the moment its record
    /// narrowed to the first target: no proposal ever returns to an asynchronous set.
    #[test]
    fn protection_never_returns_to_an_asynchronous_set((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        if obs.cluster.config.durability != DurabilityMode::Protection {
            return Ok(());
        }
        for a in plan.coordinator.iter().flat_map(|c| c.actions.iter()) {
            if let Action::Propose(Command::SetSync { recorded, target, .. }) = a {
                prop_assert!(target.k > 0, "target {target}");
                prop_assert!(recorded.k > 0 || obs.cluster.sync.recorded.k == 0, "recorded {recorded}");
            }
        }
        for g in grants(&plan) {
            let synchronous = g.reason == GrantReason::Bootstrap || g.sync.k > 0;
            prop_assert!(synchronous, "{} granted with {}", g.member, g.sync);
        }
    }

    /// A lag-limited failover may give up commits above its candidate; the floor it records
    /// must then come down to the candidate's position, or the next synchronous failover
    /// demands WAL the new timeline forked before (testdata/regressions.txt).
    #[test]
    fn failover_grant_floor_lies_at_or_below_its_candidate((obs, cfg) in prop_gen::observation()) {
        let plan = decide(&obs, &cfg);
        for g in grants(&plan) {
            if g.reason == GrantReason::Failover {
                prop_assert!(g.floor <= g.lsn, "{} at {:?} granted floor {:?}", g.member, g.lsn, g.floor);
            }
        }
    }
}
