//! The quiet loop (issue 10): a settled member sleeps until `cadence::next_deadline` instead of
//! ticking every 100 ms. These tests pin what that deadline must cover: the primary's next
//! renewal (after a confirmed one and after a failed one) and the moment the coordinator may
//! expire the primary's lease (a peer's report going stale wakes the loop from the agent's peer
//! follower); and a history test that a quiet primary
//! whose renewals are answered never comes near its fence point, with the loop woken only where
//! the agent wakes it. Also the two lease rules the renewal and the Raft timer read: whether
//! the last renewal failed, and the primary's election delay.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use pgquorum_core::ha::cadence::{RENEWAL_BEAT_WAIT, next_deadline, next_exact_deadline, quiet, quiet_until};
use pgquorum_core::ha::observation::{Coordinator, Lease, Observation, Postgres};
use pgquorum_core::ha::plan::{Action, Decision, Plan, Reason};
use pgquorum_core::ha::rules::lease::upkeep;
use pgquorum_core::ha::{HaConfig, decide};
use pgquorum_core::state::ClusterState;
use pgquorum_core::{Epoch, UnixMillis};
use support::{empty_local, grant, m, running};

const EPOCH: Epoch = Epoch(2);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// m1 is the primary of `EPOCH` (ttl 1.5 s, margin 100 ms), running writable; m2 and m3 exist.
fn primary_obs(now: Duration) -> Observation {
    let mut cluster = ClusterState { epoch: EPOCH, cluster_id: Some("c".into()), ..ClusterState::default() };
    cluster.primary = Some(grant(m("m1"), EPOCH, false, None));
    cluster.config.ttl = ms(1500);
    cluster.config.lease_margin = ms(100);
    let mut local = empty_local();
    let mut pg = running(false);
    pg.slots = vec![m("m2").slot_name(), m("m3").slot_name()];
    local.postgres = Postgres::Running(pg);
    let peers = ["m1", "m2", "m3"].into_iter().map(|n| (m(n), None)).collect::<BTreeMap<_, _>>();
    Observation { now, wall: UnixMillis(0), me: m("m1"), cluster, local, peers, coordinator: None }
}

/// `obs` holds the lease renewed at `renewed_at` (ttl 1.5 s); the last renewal went out at `sent`.
fn holding(obs: &mut Observation, renewed_at: u64, sent: u64) {
    obs.local.lease =
        Some(Lease { epoch: EPOCH, renewed_at: ms(renewed_at), deadline: ms(renewed_at + 1500) });
    obs.local.last_renewal_sent = Some(ms(sent));
}

/// `obs` seen from m2, the Raft leader, which last confirmed m1's lease at 2.8 s (ttl 1.5 s).
fn coordinating(obs: &mut Observation) {
    obs.me = m("m2");
    obs.coordinator = Some(Coordinator {
        leader_since: ms(0),
        epoch_since: ms(0),
        last_confirmed: Some(ms(2800)),
        granted_ttl: Some(ms(1500)),
        expired_epoch: None,
        stop_requested: None,
        voters: vec![m("m1"), m("m2"), m("m3")],
        caught_up: Vec::new(),
        last_primary_lsn: None,
        last_transfer: None,
    });
}

fn steady_plan() -> Plan {
    Plan { member: Decision::wait(Reason::Steady), coordinator: None }
}

#[test]
fn a_held_lease_is_renewed_at_a_third_of_its_ttl() {
    let mut obs = primary_obs(ms(100));
    holding(&mut obs, 0, 0);
    assert_eq!(next_deadline(&obs, &HaConfig::default()), Some(ms(500)));
    // While a renewal is in flight its answer wakes the loop; time alone does not.
    obs.local.renewal_in_flight_since = Some(ms(90));
    assert_eq!(next_deadline(&obs, &HaConfig::default()), None);
}

#[test]
fn a_failed_renewal_is_retried_100_ms_after_it_was_sent() {
    // Renewed at 0, the renewal sent at 500 failed (its answer came at 520, a refusal).
    let mut obs = primary_obs(ms(520));
    holding(&mut obs, 0, 500);
    assert_eq!(next_deadline(&obs, &HaConfig::default()), Some(ms(600)));
    // A retry that is already due is planned in the same tick, never left to a deadline.
    obs.now = ms(650);
    assert!(upkeep(&obs).0.contains(&Action::Renew { epoch: EPOCH }));
}

#[test]
fn the_coordinator_wakes_when_the_primary_lease_may_have_run_out() {
    let mut obs = primary_obs(ms(3000));
    obs.local.postgres = Postgres::Running(running(true));
    coordinating(&mut obs);
    // Last confirmed at 2.8 s: free at 2.8 + 1.5 + 0.1 s.
    assert_eq!(next_deadline(&obs, &HaConfig::default()), Some(ms(4400)));
    // A new primary's young window (2 ttl from the grant) ends before that.
    obs.coordinator.as_mut().expect("coordinator").epoch_since = ms(1000);
    assert_eq!(next_deadline(&obs, &HaConfig::default()), Some(ms(4000)));
    // And a leadership transfer is tried again `transfer_interval` after the last.
    obs.coordinator.as_mut().expect("coordinator").last_transfer = Some(ms(1500));
    assert_eq!(
        next_deadline(&obs, &HaConfig::default()),
        Some(ms(1500) + HaConfig::default().transfer_interval)
    );
}

#[test]
fn a_quiet_member_ticks_at_least_twice_per_staleness_bound_and_not_at_all_when_a_read_is_due() {
    let mut obs = primary_obs(ms(100));
    holding(&mut obs, 0, 0);
    let cfg = HaConfig::default();
    // Renewal due at 500 ms comes first.
    assert_eq!(quiet_until(&obs, &steady_plan(), &cfg, Some(ms(1100)), ms(100)), Some(ms(500)));
    // Without a nearer deadline: half the staleness bound (2 s), not a later status read.
    obs.local.renewal_in_flight_since = Some(ms(90));
    assert_eq!(quiet_until(&obs, &steady_plan(), &cfg, Some(ms(2100)), ms(100)), Some(ms(1100)));
    // A status read already due (or a busy member) ticks at the loop interval.
    assert_eq!(quiet_until(&obs, &steady_plan(), &cfg, None, ms(100)), None);
    let busy = Plan { member: Decision::wait(Reason::BackingOff), coordinator: None };
    assert_eq!(quiet_until(&obs, &busy, &cfg, Some(ms(1100)), ms(100)), None);
}

#[test]
fn a_stop_streaming_request_for_an_earlier_epoch_does_not_keep_a_member_busy() {
    let mut obs = primary_obs(ms(100));
    obs.local.stop_streaming_for = Some(EPOCH);
    assert!(!quiet(&obs, &steady_plan()), "the request for the current epoch stands");
    obs.local.stop_streaming_for = Some(Epoch(EPOCH.0 - 1));
    assert!(quiet(&obs, &steady_plan()), "a request for the previous primary is history");
}

#[test]
fn only_a_steady_member_and_coordinator_are_quiet() {
    let obs = primary_obs(ms(100));
    assert!(quiet(&obs, &steady_plan()));
    let renew = Plan {
        member: Decision::act(Reason::Steady, vec![Action::Renew { epoch: EPOCH }]),
        coordinator: None,
    };
    assert!(quiet(&obs, &renew), "renewing is part of being steady");
    let backing_off = Plan { member: Decision::wait(Reason::BackingOff), coordinator: None };
    assert!(!quiet(&obs, &backing_off), "a backoff ends on a timer the deadline does not know");
    let coordinating = Plan {
        member: Decision::wait(Reason::Steady),
        coordinator: Some(Decision::wait(Reason::WaitingForReplicas)),
    };
    assert!(!quiet(&obs, &coordinating));
    let fencing =
        Plan { member: Decision::act(Reason::LeaseExpiring, vec![Action::Fence]), coordinator: None };
    assert!(!quiet(&obs, &fencing));
}

/// A quiet primary is woken only where the agent wakes it (a Raft message after its
/// `quiet_until`, its exact deadline, its fence point, a renewal's answer): over a minute,
/// every renewal starts at most `RENEWAL_BEAT_WAIT` after it is due and the lease never comes
/// within 500 ms of its fence point (with the old 100 ms tick the margin was the same).
/// Without Raft messages (`beats` off) a renewal is answered `latency` after it is sent; with
/// heartbeats every 256 ms, at the heartbeat after the one it was sent with (plus `latency`),
/// and then almost every renewal goes out with a heartbeat. (The model wakes at the core's
/// exact deadline; the agent rounds a renewal's up to its runtime's 64 ms timer slot, so there
/// a renewal no heartbeat carried may start up to a slot later than modelled.)
#[test]
fn a_quiet_primary_renews_on_time_and_never_nears_its_fence_point() {
    let heartbeat = ms(256);
    // The first heartbeat at or after `t` (heartbeats at 7 ms + k × 256 ms).
    let beat_at = |t: Duration| {
        let k = t.saturating_sub(ms(7)).as_nanos().div_ceil(heartbeat.as_nanos());
        ms(7) + heartbeat * u32::try_from(k).expect("small")
    };
    for (beats, latency) in [(false, 1u64), (false, 15), (false, 40), (false, 120), (true, 1), (true, 15)] {
        let mut obs = primary_obs(ms(0));
        holding(&mut obs, 0, 0);
        let mut ticks = (0, 0); // (quiet, all)
        let mut in_flight: Option<(Duration, Duration)> = None; // (sent, answered at)
        let mut closest = Duration::MAX;
        let (mut renewals, mut with_a_beat) = (0, 0);
        while obs.now < ms(60_000) {
            if let Some((sent, at)) = in_flight
                && obs.now >= at
            {
                obs.local.lease = Some(Lease { epoch: EPOCH, renewed_at: sent, deadline: sent + ms(1500) });
                obs.local.renewal_in_flight_since = None;
                in_flight = None;
            }
            let plan = decide(&obs, &HaConfig::default());
            if plan.member.actions.contains(&Action::Fence) {
                panic!("beats {beats}, latency {latency} ms: fenced at {:?}", obs.now);
            }
            if plan.member.actions.contains(&Action::Renew { epoch: EPOCH }) {
                if let Some(l) = obs.local.lease {
                    let latest = l.renew_at(ms(1500)) + RENEWAL_BEAT_WAIT;
                    assert!(obs.now <= latest + ms(1), "late renewal at {:?}", obs.now);
                }
                let answer = if beats { beat_at(obs.now + ms(1)) } else { obs.now } + ms(latency);
                obs.local.last_renewal_sent = Some(obs.now);
                obs.local.renewal_in_flight_since = Some(obs.now);
                in_flight = Some((obs.now, answer));
                renewals += 1;
                with_a_beat += usize::from(beats && beat_at(obs.now) == obs.now);
            }
            if let Some(l) = obs.local.lease {
                closest = closest.min(l.fence_at().saturating_sub(obs.now));
            }
            // The next wake-up: as the agent's loop picks it (status read every second).
            ticks.1 += 1;
            let cfg = HaConfig::default();
            let quiet_until = quiet_until(&obs, &plan, &cfg, Some(obs.now + ms(1000)), ms(100));
            ticks.0 += usize::from(quiet_until.is_some());
            let mut next = match quiet_until {
                // `timer::at_beat`: the first Raft message at or after it (or its own timer).
                Some(at) if beats => vec![beat_at(at)],
                Some(at) => vec![at + ms(256)],
                None => vec![obs.now + ms(100)],
            };
            next.extend(quiet_until.and(next_exact_deadline(&obs, &cfg)));
            next.extend(obs.local.lease.map(|l| l.fence_at()));
            next.extend(in_flight.map(|(_, at)| at));
            obs.now = next.into_iter().filter(|t| *t > obs.now).min().expect("always a next wake-up");
        }
        let what = format!("beats {beats}, latency {latency} ms");
        assert!(
            ticks.0 * 10 >= ticks.1 * 9,
            "{what}: quiet in only {ticks:?} (quiet, all) ticks; {plan:?}",
            plan = decide(&obs, &HaConfig::default())
        );
        assert!(ticks.1 <= 400, "{what}: {} ticks in a minute", ticks.1);
        assert!(renewals >= 110, "{what}: only {renewals} renewals in a minute");
        assert!(closest >= ms(500), "{what}: came within {closest:?} of the fence point");
        if beats {
            assert!(
                with_a_beat * 100 >= renewals * 95,
                "{what}: {with_a_beat} of {renewals} renewals rode a beat"
            );
        }
    }
}

#[test]
fn a_renewal_due_waits_a_little_for_a_raft_message_and_the_coordinator_none() {
    let mut obs = primary_obs(ms(100));
    holding(&mut obs, 0, 0);
    let cfg = HaConfig::default();
    assert_eq!(next_deadline(&obs, &cfg), Some(ms(500)));
    assert_eq!(next_exact_deadline(&obs, &cfg), Some(ms(500) + RENEWAL_BEAT_WAIT));
    assert_eq!(RENEWAL_BEAT_WAIT, ms(32), "12 ms past the due time is where the heartbeat comes");
    obs.local.renewal_in_flight_since = Some(ms(90));
    assert_eq!(next_exact_deadline(&obs, &cfg), None);
    // The coordinator's own deadline is met exactly.
    coordinating(&mut obs);
    obs.now = ms(3000);
    assert_eq!(next_exact_deadline(&obs, &cfg), Some(ms(4400)));
}

#[test]
fn a_renewal_gives_up_a_renewal_interval_after_it_was_due_however_late_it_went_out() {
    let lease = Lease { epoch: EPOCH, renewed_at: ms(0), deadline: ms(1500) };
    assert_eq!(lease.renew_at(ms(1500)), ms(500));
    // Sent at 532 ms (a quiet loop waited for a heartbeat that did not come): it still gives
    // up at 1000 ms, so the urgent renewal's attempts come at 1000-1300 ms, before the fence
    // point at 1350 ms.
    assert_eq!(lease.renewal_gives_up_at(ms(1500)), ms(1000));
    assert!(lease.renewal_gives_up_at(ms(1500)) + ms(300) < lease.fence_at());
    // A lowered configured ttl shortens both.
    assert_eq!(lease.renewal_gives_up_at(ms(900)), ms(600));
}

#[test]
fn a_renewal_sent_after_the_confirmed_one_counts_as_failed() {
    let lease = Lease { epoch: EPOCH, renewed_at: ms(1000), deadline: ms(2500) };
    assert!(!lease.last_renewal_failed(None));
    assert!(!lease.last_renewal_failed(Some(ms(1000))), "the renewal this lease counts from");
    assert!(!lease.last_renewal_failed(Some(ms(900))), "its attempt sent later was confirmed");
    assert!(lease.last_renewal_failed(Some(ms(1500))), "sent since, and not confirmed");
}

#[test]
fn only_the_granted_primary_delays_its_raft_elections() {
    use pgquorum_core::ha::rules::lease::election_delay;
    let timeouts = (ms(300), ms(400));
    let mut obs = primary_obs(ms(0));
    assert_eq!(election_delay(&obs, timeouts), ms(200), "the range's width plus 100 ms");
    assert_eq!(election_delay(&obs, (ms(1200), ms(1600))), ms(500));
    obs.me = m("m2");
    assert_eq!(election_delay(&obs, timeouts), Duration::ZERO, "a replica campaigns on time");
    obs.me = m("m1");
    obs.cluster.primary = Some(grant(m("m1"), EPOCH, true, None));
    assert_eq!(election_delay(&obs, timeouts), Duration::ZERO, "an expired grant is no primary");
    obs.cluster.primary = None;
    assert_eq!(election_delay(&obs, timeouts), Duration::ZERO);
}
