//! The lease under run-time changes of `ttl` and `lease_margin` (issue 11, item 1), as a
//! property over random histories: a primary and a coordinator, each applying the replicated
//! configuration changes at its own moment, renewals with random latency (some answers lost),
//! and leader changes (the new coordinator starts with no memory).
//!
//! Checked at every step, with the core's own rules (`lease::upkeep`, `may_confirm`,
//! `expired_for`, `coordinator_ttl`) and a copy of the agent's coordinator bookkeeping:
//! - safety: while the member may still count on its lease (now before its deadline), the
//!   coordinator never considers it expired;
//! - no self-fence: a primary whose renewals are all answered within 40 ms never fences itself
//!   (nor lets the coordinator expire it), whatever the ttl changes.
//!
//! Deterministic: a fixed proptest seed (override with PGQUORUM_PROP_SEED), no persistence;
//! PGQUORUM_PROP_CASES / 4 cases per property (default 250).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use pgquorum_core::ha::observation::{Coordinator, Data, Lease, Observation, Postgres, Running};
use pgquorum_core::ha::plan::{Action, Reason};
use pgquorum_core::ha::rules::lease::{expired_for, may_confirm, upkeep};
use pgquorum_core::state::{ClusterState, Command, DynamicConfig};
use pgquorum_core::{Epoch, Lsn, MemberName, UnixMillis};

fn config() -> Config {
    // Each case is a long history: a quarter of the usual number keeps this under ~10 s.
    let cases =
        std::env::var("PGQUORUM_PROP_CASES").ok().and_then(|v| v.parse::<u32>().ok()).map_or(250, |n| n / 4);
    let seed = std::env::var("PGQUORUM_PROP_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x1ea5e);
    Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() }
}

const EPOCH: Epoch = Epoch(3);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One thing that happens.
#[derive(Clone, Debug)]
enum Event {
    /// Time passes (the member and the coordinator each get a tick at the end).
    Wait(u64),
    /// `config set ttl=.. lease_margin=..`; the member applies it `member_lag` ms after the
    /// leader (or before, when negative: it may be the one that applied first).
    SetConfig { ttl: u64, margin_pct: u64, member_lag: i64 },
    /// The Raft leader changes: the new coordinator knows nothing but the replicated state.
    NewLeader,
    /// The member is cut off for this many ms: requests sent meanwhile never arrive (only in
    /// histories where answers may be lost).
    Cut(u64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => (1u64..20).prop_map(Event::Wait),
        2 => (300u64..6000, 0u64..60, -80i64..80).prop_map(|(ttl, margin_pct, member_lag)| Event::SetConfig {
            ttl,
            margin_pct,
            member_lag
        }),
        1 => Just(Event::NewLeader),
        1 => (100u64..3000).prop_map(Event::Cut),
    ]
}

/// A renewal on its way: sent at, confirmed at, answered at, whether the answer reaches the
/// member, and the ttl confirmed (once it was).
#[derive(Clone, Copy, Debug)]
struct InFlight {
    sent: Duration,
    /// When the request reaches the coordinator: the confirmation counts from here.
    arrive_at: Duration,
    confirm_at: Duration,
    answer_at: Duration,
    answer_lost: bool,
    request_lost: bool,
    confirmed_ttl: Option<Duration>,
}

/// The agent's coordinator memory (agent/src/ha/coord.rs), for one epoch.
#[derive(Clone, Debug)]
struct CoordMem {
    leader_since: Duration,
    last_confirmed: Option<Duration>,
    granted_ttl: Option<Duration>,
}

struct World {
    now: Duration,
    leader_state: ClusterState,
    member_state: ClusterState,
    /// Configuration changes not applied yet: (when it applies, the configuration).
    leader_pending: Vec<(Duration, DynamicConfig)>,
    member_pending: Vec<(Duration, DynamicConfig)>,
    coord: CoordMem,
    lease: Option<Lease>,
    last_sent: Option<Duration>,
    in_flight: Option<InFlight>,
    latency: Vec<u64>,
    next_latency: usize,
    lose_answers: bool,
    cut_until: Duration,
    fenced: bool,
}

fn me() -> MemberName {
    support::m("pg-0")
}

fn initial_state(ttl: u64) -> ClusterState {
    let mut cs = ClusterState { cluster_id: Some("c".into()), epoch: EPOCH, ..ClusterState::default() };
    cs.config.ttl = ms(ttl);
    cs.config.lease_margin = ms(100.min(ttl / 4));
    cs.primary = Some(support::grant(me(), EPOCH, false, None));
    cs
}

fn writable() -> Postgres {
    Postgres::Running(Running { lsn: Some(Lsn(0x300_0000)), ..support::running(false) })
}

impl World {
    fn new(ttl: u64, latency: Vec<u64>, lose_answers: bool) -> World {
        let now = ms(10_000);
        let state = initial_state(ttl);
        World {
            now,
            leader_state: state.clone(),
            member_state: state,
            leader_pending: Vec::new(),
            member_pending: Vec::new(),
            // The primary has just renewed (sent and confirmed now).
            coord: CoordMem { leader_since: ms(0), last_confirmed: Some(now), granted_ttl: Some(ms(ttl)) },
            lease: Some(Lease { epoch: EPOCH, renewed_at: now, deadline: now + ms(ttl) }),
            last_sent: Some(now),
            in_flight: None,
            latency,
            next_latency: 0,
            lose_answers,
            cut_until: Duration::ZERO,
            fenced: false,
        }
    }

    fn member_obs(&self) -> Observation {
        let mut local = support::empty_local();
        local.postgres = if self.fenced { Postgres::Stopped } else { writable() };
        local.data = Data::Missing;
        local.lease = self.lease;
        local.renewal_in_flight_since = self.in_flight.map(|f| f.sent);
        local.last_renewal_sent = self.last_sent;
        local.fenced_epoch = self.fenced.then_some(EPOCH);
        Observation {
            now: self.now,
            wall: UnixMillis(0),
            me: me(),
            cluster: self.member_state.clone(),
            local,
            peers: BTreeMap::new(),
            coordinator: None,
        }
    }

    fn coordinator_view(&self) -> (Observation, Coordinator) {
        let c = Coordinator {
            leader_since: self.coord.leader_since,
            epoch_since: self.coord.leader_since,
            last_confirmed: self.coord.last_confirmed,
            granted_ttl: self.coord.granted_ttl,
            expired_epoch: None,
            stop_requested: None,
            voters: Vec::new(),
            caught_up: Vec::new(),
            last_primary_lsn: None,
            last_transfer: None,
        };
        let obs = Observation {
            now: self.now,
            wall: UnixMillis(0),
            me: support::m("pg-1"),
            cluster: self.leader_state.clone(),
            local: support::empty_local(),
            peers: BTreeMap::new(),
            coordinator: Some(c.clone()),
        };
        (obs, c)
    }

    fn set_config(&mut self, ttl: u64, margin_pct: u64, member_lag: i64) {
        let mut cfg = self.leader_state.config.clone();
        cfg.ttl = ms(ttl);
        cfg.lease_margin = ms(ttl * margin_pct / 100);
        // One log entry, applied by the leader and the member at their own moments.
        let (leader_at, member_at) = if member_lag >= 0 {
            (self.now, self.now + ms(member_lag.unsigned_abs()))
        } else {
            (self.now + ms(member_lag.unsigned_abs()), self.now)
        };
        self.leader_pending.push((leader_at, cfg.clone()));
        self.member_pending.push((member_at, cfg));
        self.apply_pending();
    }

    fn apply_pending(&mut self) {
        let now = self.now;
        for (queue, state) in [
            (&mut self.leader_pending, &mut self.leader_state),
            (&mut self.member_pending, &mut self.member_state),
        ] {
            let (due, later): (Vec<_>, Vec<_>) = queue.drain(..).partition(|(at, _)| *at <= now);
            *queue = later;
            for (_, cfg) in due {
                let cmd = Command::SetConfig { expected_version: None, config: cfg };
                state.apply(cmd).expect("a valid configuration is accepted");
            }
        }
    }

    fn wait(&mut self, d: u64) {
        for _ in 0..d {
            self.now += ms(1);
            self.apply_pending();
            self.deliver();
        }
    }

    /// The coordinator confirms at `confirm_at` (as `Coord::confirm` does); the answer reaches
    /// the member `answer_after` later unless it is lost.
    fn deliver_confirmation(&mut self) {
        let Some(f) = self.in_flight.as_mut() else { return };
        if self.now < f.confirm_at || f.confirmed_ttl.is_some() {
            return;
        }
        if f.request_lost {
            if self.now >= f.answer_at {
                self.in_flight = None;
            }
            return;
        }
        if may_confirm(&self.leader_state, None, &me(), EPOCH).is_err() {
            self.in_flight = None;
            return;
        }
        let ttl = self.leader_state.config.ttl;
        // As `Coord::confirm`: from the request's arrival, never moving back.
        let arrived = f.arrive_at.min(self.now);
        self.coord.last_confirmed = Some(self.coord.last_confirmed.map_or(arrived, |t| t.max(arrived)));
        self.coord.granted_ttl = Some(self.coord.granted_ttl.map_or(ttl, |g| g.max(ttl)));
        f.confirmed_ttl = Some(ttl);
    }

    fn deliver(&mut self) {
        self.deliver_confirmation();
        let Some(f) = self.in_flight else { return };
        let Some(ttl) = f.confirmed_ttl else { return };
        if self.now < f.answer_at {
            return;
        }
        self.in_flight = None;
        if !f.answer_lost && !self.fenced {
            self.lease = Some(Lease { epoch: EPOCH, renewed_at: f.sent, deadline: f.sent + ttl });
        }
    }

    /// The member's tick: the core's lease upkeep, carried out.
    fn member_tick(&mut self) -> Result<(), String> {
        let obs = self.member_obs();
        let (actions, reason) = upkeep(&obs);
        if let Some(r) = reason {
            if matches!(r, Reason::LeaseExpiring | Reason::WritableWithoutLease) && !self.lose_answers {
                return Err(format!(
                    "a primary that kept renewing fenced itself: {r} at {:?}, lease {:?}, config {:?}",
                    self.now, self.lease, self.member_state.config
                ));
            }
            self.fenced = true;
        }
        for a in actions {
            match a {
                Action::Renew { epoch } => {
                    assert_eq!(epoch, EPOCH);
                    let latency = self.latency[self.next_latency % self.latency.len()];
                    self.next_latency += 1;
                    let answer_lost =
                        self.lose_answers && (latency.is_multiple_of(3) || self.now < self.cut_until);
                    let request_lost = self.now < self.cut_until;
                    self.last_sent = Some(self.now);
                    self.in_flight = Some(InFlight {
                        sent: self.now,
                        // The request travels a quarter of the latency, then waits up to a
                        // quarter for its ReadIndex round.
                        arrive_at: self.now + ms(latency / 4),
                        confirm_at: self.now + ms(latency / 2),
                        answer_at: self.now + ms(latency),
                        answer_lost,
                        request_lost,
                        confirmed_ttl: None,
                    });
                }
                Action::DropLease => self.lease = None,
                Action::Fence => self.fenced = true,
                other => return Err(format!("unexpected lease action {other:?}")),
            }
        }
        Ok(())
    }

    /// The invariants at this instant.
    fn check(&self) -> Result<(), String> {
        let (obs, c) = self.coordinator_view();
        let expired = expired_for(&obs, &c);
        if let Some(l) = self.lease
            && !self.fenced
            && self.now < l.deadline
            && expired.is_some()
        {
            return Err(format!(
                "the coordinator counts the lease as expired ({expired:?} ago) at {:?} while the member holds it until {:?} (config {:?}, memory {:?})",
                self.now, l.deadline, self.leader_state.config, self.coord
            ));
        }
        if !self.lose_answers && expired.is_some() {
            return Err(format!("the coordinator expired a primary that kept renewing at {:?}", self.now));
        }
        Ok(())
    }

    fn run(&mut self, events: &[Event]) -> Result<(), String> {
        for e in events {
            match e {
                Event::Wait(d) => {
                    // Ticks every few ms, as the agent's loop (woken at the fence point) does.
                    for _ in 0..*d {
                        self.wait(1);
                        self.member_tick()?;
                        self.check()?;
                    }
                }
                Event::SetConfig { ttl, margin_pct, member_lag } => {
                    self.set_config(*ttl, *margin_pct, *member_lag);
                    self.member_tick()?;
                    self.check()?;
                }
                Event::Cut(d) => {
                    if self.lose_answers {
                        self.cut_until = self.now + ms(*d);
                    }
                }
                Event::NewLeader => {
                    // The worst case: the old leader confirms the renewal in flight just before
                    // it loses leadership (its answer still reaches the member, or not).
                    if let Some(f) = self.in_flight.as_mut() {
                        f.confirm_at = f.confirm_at.min(self.now);
                    }
                    self.deliver_confirmation();
                    self.coord = CoordMem { leader_since: self.now, last_confirmed: None, granted_ttl: None };
                    self.check()?;
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_primary_that_keeps_renewing_never_fences_itself_whatever_the_ttl_changes(
        ttl in 300u64..6000,
        latency in prop::collection::vec(1u64..40, 1..8),
        events in prop::collection::vec(event(), 1..400),
    ) {
        let mut w = World::new(ttl, latency, false);
        if let Err(e) = w.run(&events) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn the_coordinator_never_frees_the_role_while_the_old_primary_may_hold_its_lease(
        ttl in 300u64..6000,
        latency in prop::collection::vec(1u64..400, 1..8),
        events in prop::collection::vec(event(), 1..400),
    ) {
        let mut w = World::new(ttl, latency, true);
        if let Err(e) = w.run(&events) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// The case the random histories rarely hit: the ttl is lowered, the Raft leader changes right
/// away, and the primary is cut off before it renews under the new ttl. The new coordinator
/// never saw the old confirmation; it must still wait for the old, longer ttl.
#[test]
fn a_new_leader_after_a_lowered_ttl_waits_for_the_old_ttl() {
    let mut w = World::new(3000, vec![10], true);
    let mut events = vec![
        Event::Wait(5),
        Event::SetConfig { ttl: 300, margin_pct: 10, member_lag: 50 },
        Event::NewLeader,
        Event::Cut(4000),
    ];
    events.extend(std::iter::repeat_n(Event::Wait(20), 250));
    w.run(&events).unwrap_or_else(|e| panic!("{e}"));
    assert!(w.fenced, "the cut-off primary fenced itself");
}
