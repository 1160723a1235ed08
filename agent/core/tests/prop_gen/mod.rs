//! Random observations for the property tests: every Postgres state, data directory state and
//! lease shape, grants to this member, to another or to nobody (expired in Raft or not, with or
//! without an inherited floor, also on the released grant's history entry), peers with fresh or
//! stale reports, and (often) a coordinator view whose clocks make the lease expired or not.
//!
//! Owns only the distribution. Observations are decoded from a vector of random numbers, so
//! proptest generates (and shrinks) cheaply: a number shrunk towards 0 picks the first, simplest
//! option. It biases towards the states where rules branch (replicas that stopped streaming for
//! the current epoch, leases near their deadline, expired coordinators and recorded expiries,
//! floors within the range of generated positions) so that properties about failover and
//! fencing are exercised, not just vacuously true.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use pgquorum_core::ha::HaConfig;
use pgquorum_core::ha::observation::{
    Coordinator, Data, DataDir, Lease, Local, Observation, Postgres, ReplicaConnection, Report, Running,
    Seen, Tags, Task,
};
use pgquorum_core::state::{ClusterState, DurabilityMode, GrantReason, HistoryEntry, SyncSet, SyncState};
use pgquorum_core::{Epoch, Lsn, MemberName, SystemId, Timeline, UnixMillis};

use crate::support::{empty_local, empty_report, m};

/// The member pool; observations use a prefix of 3 to 5 of them.
pub const NAMES: [&str; 5] = ["pg-0", "pg-1", "pg-2", "pg-3", "pg-4"];
/// Monotonic "now" of every generated observation.
pub const NOW: Duration = Duration::from_secs(100);
/// The cluster's epoch in most observations (0 in a few: before the first grant).
pub const EPOCH: Epoch = Epoch(2);

/// Reads choices from a stream of random numbers (0 once it runs out).
struct Draw<'a> {
    xs: &'a [u32],
    i: usize,
}

impl Draw<'_> {
    fn below(&mut self, n: u32) -> u32 {
        let v = self.xs.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        v % n
    }

    /// True with `pct` percent probability; false for a 0 draw.
    fn chance(&mut self, pct: u32) -> bool {
        self.below(100) >= 100 - pct
    }

    /// An index into `weights`, proportionally; 0 for a 0 draw.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let mut x = self.below(weights.iter().sum());
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    fn opt<T>(&mut self, pct: u32, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.chance(pct) { Some(f(self)) } else { None }
    }

    /// An instant within `[now - back_ms, now + ahead_ms]`.
    fn instant(&mut self, back_ms: u32, ahead_ms: u32) -> Duration {
        let x = self.below(back_ms + ahead_ms + 1);
        (NOW + Duration::from_millis(u64::from(x))).saturating_sub(Duration::from_millis(u64::from(back_ms)))
    }

    fn lsn(&mut self) -> Lsn {
        Lsn(0x300_0000 + u64::from(self.below(24)) * 0x20)
    }

    fn name(&mut self) -> MemberName {
        m(NAMES[self.below(5) as usize])
    }

    fn members(&mut self) -> Vec<MemberName> {
        let bits = self.below(32);
        (0..5).filter(|i| bits & (1 << i) != 0).map(|i| m(NAMES[i])).collect()
    }

    fn sync_set(&mut self) -> SyncSet {
        if self.chance(80) { SyncSet::any(1 + self.below(2), self.members()) } else { SyncSet::none() }
    }

    fn timeline(&mut self) -> Timeline {
        Timeline(1 + self.below(3))
    }

    /// One before the cluster's epoch, equal (most often), or one after.
    fn near(&mut self) -> Epoch {
        [EPOCH, Epoch(EPOCH.0 - 1), EPOCH.next()][self.weighted(&[4, 1, 1])]
    }
}

fn sync_state(d: &mut Draw) -> SyncState {
    let recorded = d.sync_set();
    let target = if recorded.is_async() || d.chance(50) {
        recorded.clone()
    } else {
        let sub = d.members();
        let extra = d.below(2);
        SyncSet::any(recorded.k + extra, sub.into_iter().filter(|x| recorded.members.contains(x)))
    };
    SyncState { recorded, target }
}

fn running(d: &mut Draw) -> Running {
    let in_recovery = d.chance(60);
    let lsn = d.opt(95, |d| d.lsn());
    let replicas = (0..d.below(4))
        .map(|_| {
            let at = d.lsn();
            ReplicaConnection {
                name: d.name().to_string(),
                state: if d.chance(70) { "streaming" } else { "catchup" }.into(),
                flush_lsn: Some(at),
                replay_lsn: Some(at),
                sync_state: "quorum".into(),
            }
        })
        .collect();
    Running {
        in_recovery,
        timeline: d.opt(95, |d| d.timeline()),
        lsn,
        receive_lsn: lsn.filter(|_| in_recovery),
        replay_lsn: lsn.filter(|_| in_recovery),
        streaming: d.chance(50),
        min_recovery: d.opt(50, |d| (d.timeline(), d.lsn())).filter(|_| in_recovery),
        upstream: d.opt(70, |d| d.name()),
        synchronous_standby_names: d.sync_set().to_postgres(),
        replicas,
        slots: d.members().iter().map(MemberName::slot_name).collect(),
        pending_restart: Vec::new(),
        archiver: None,
    }
}

fn postgres(d: &mut Draw) -> Postgres {
    match d.weighted(&[3, 1, 1, 2, 8]) {
        0 => Postgres::Stopped,
        1 => Postgres::Disabled,
        2 => Postgres::Starting { since: d.instant(3000, 0) },
        3 => Postgres::Crashed { at: d.instant(3000, 0), failures: 1 },
        _ => Postgres::Running(running(d)),
    }
}

fn data(d: &mut Draw) -> Data {
    match d.weighted(&[8, 2, 1]) {
        0 => {
            let was_primary = d.chance(50);
            let ckpt = d.lsn();
            Data::Present(DataDir {
                system_identifier: SystemId(if d.chance(10) { 8 } else { 7 }),
                timeline: d.timeline(),
                was_primary,
                clean_shutdown: d.chance(50),
                checkpoint_lsn: ckpt,
                min_recovery: (!was_primary).then_some((Timeline(1 + d.below(3)), ckpt)),
            })
        }
        1 => Data::Missing,
        _ => Data::Unusable("bad".into()),
    }
}

fn task(d: &mut Draw) -> Task {
    match d.below(5) {
        0 => Task::Initdb,
        1 => Task::Clone(d.name()),
        2 => Task::Rewind(d.name()),
        3 => Task::Promote,
        _ => Task::Restart,
    }
}

fn tags(d: &mut Draw) -> Tags {
    Tags {
        nofailover: d.chance(20),
        nosync: d.chance(20),
        failover_priority: d.below(3) as i32,
        custom: BTreeMap::new(),
    }
}

fn cluster(d: &mut Draw) -> ClusterState {
    let mut cs = ClusterState { config_version: 1, ..Default::default() };
    cs.cluster_id = (!d.chance(5)).then(|| "c1".into());
    cs.system_identifier = (!d.chance(15)).then_some(SystemId(7));
    cs.epoch = if d.chance(5) { Epoch(0) } else { EPOCH };
    let primary = d.opt(80, |d| d.name());
    let (expired, floor) = (d.chance(30), d.opt(40, |d| d.lsn()));
    cs.primary = primary
        .clone()
        .filter(|_| cs.epoch > Epoch(0))
        .map(|member| crate::support::grant(member, cs.epoch, expired, floor));
    // The current epoch's history entry carries the same floor (a released grant keeps it).
    if cs.epoch > Epoch(0) {
        let member = primary.unwrap_or_else(|| d.name());
        let reason = GrantReason::Failover;
        let (lsn, timeline) = (None, None);
        cs.history.push(HistoryEntry {
            epoch: cs.epoch,
            member,
            previous: None,
            reason,
            at: UnixMillis(0),
            lsn,
            timeline,
            floor,
        });
    }
    cs.sync = sync_state(d);
    cs.paused = d.chance(5);
    cs.config.durability =
        [DurabilityMode::Availability, DurabilityMode::Protection, DurabilityMode::Performance]
            [d.below(3) as usize];
    cs.config.synchronous_node_count = 1 + d.below(2);
    cs.config.ttl = Duration::from_millis([1500, 500, 3000][d.below(3) as usize]);
    cs.config.maximum_lag_on_failover = [1 << 20, 0, 0x40, 0x100][d.below(4) as usize];
    cs
}

fn local(d: &mut Draw) -> Local {
    let mut l = empty_local();
    l.lease = d.opt(60, |d| {
        let epoch = d.near();
        let renewed_at = d.instant(3000, 0);
        Lease { epoch, renewed_at, deadline: d.instant(400, 2000) }
    });
    l.renewal_in_flight_since = d.opt(30, |d| d.instant(500, 0));
    l.postgres = postgres(d);
    l.data = data(d);
    l.last_renewal_sent = d.opt(70, |d| d.instant(1000, 0)).or(l.renewal_in_flight_since);
    l.fenced_epoch = d.opt(30, |d| d.near());
    l.stop_streaming_for = d.opt(40, |d| d.near());
    l.task = d.opt(20, task);
    l.last_failure = d.opt(20, |d| (task(d), "failed".into(), d.instant(5000, 0)));
    l.down_since = d.opt(20, |d| d.instant(40_000, 0));
    l.tags = tags(d);
    l.sync_applied_at = d.opt(30, |d| (d.sync_set(), d.lsn()));
    l
}

fn report(d: &mut Draw, who: &MemberName) -> Report {
    let epoch = d.near();
    Report {
        postgres: postgres(d),
        data: data(d),
        lease: d.opt(40, |d| (d.near(), Duration::from_millis(u64::from(d.below(1500))))),
        fenced_epoch: d.opt(30, |d| d.near()),
        stop_streaming_for: d.opt(50, |d| d.near()),
        task: d.opt(10, task),
        tags: tags(d),
        timeline_history: (0..d.below(3)).map(|_| (d.timeline(), d.lsn())).collect(),
        sync_applied_at: d.opt(40, |d| (d.sync_set(), d.lsn())),
        ..empty_report(who, epoch)
    }
}

fn coordinator(d: &mut Draw) -> Coordinator {
    Coordinator {
        leader_since: d.instant(6000, 0),
        epoch_since: d.instant(8000, 0),
        last_confirmed: d.opt(70, |d| d.instant(4000, 0)),
        granted_ttl: d.opt(30, |d| Duration::from_millis([1500, 4000][d.below(2) as usize])),
        expired_epoch: d.opt(40, |d| d.near()),
        stop_requested: d.opt(50, |d| (d.near(), d.instant(2500, 0))),
        voters: d.members(),
        caught_up: d.members(),
        last_primary_lsn: d.opt(60, |d| d.lsn()),
        last_transfer: d.opt(30, |d| d.instant(4000, 0)),
    }
}

/// Makes a report look like a replica that stopped streaming for the current epoch, the
/// shape failover decisions look for (used on a fraction of observations).
fn make_final(rep: &mut Report, epoch: Epoch) {
    if let Postgres::Running(r) = &mut rep.postgres {
        r.in_recovery = true;
        r.streaming = false;
        r.timeline = Some(Timeline(1));
        r.lsn = r.lsn.or(Some(Lsn(0x300_0000)));
        rep.stop_streaming_for = Some(epoch);
        rep.data = Data::Present(DataDir {
            system_identifier: SystemId(7),
            timeline: Timeline(1),
            was_primary: false,
            clean_shutdown: false,
            checkpoint_lsn: Lsn(0x300_0000),
            min_recovery: None,
        });
    }
}

/// What this member reports about itself, consistent with its local state.
fn own_report(me: &MemberName, cs: &ClusterState, l: &Local) -> Report {
    Report {
        postgres: l.postgres.clone(),
        data: l.data.clone(),
        lease: l.lease.map(|x| (x.epoch, x.deadline.saturating_sub(NOW))),
        fenced_epoch: l.fenced_epoch,
        stop_streaming_for: l.stop_streaming_for,
        task: l.task.clone(),
        tags: l.tags.clone(),
        sync_applied_at: l.sync_applied_at.clone(),
        ..empty_report(me, cs.epoch)
    }
}

fn decode(xs: &[u32]) -> (Observation, HaConfig) {
    let d = &mut Draw { xs, i: 0 };
    let n = 3 + d.below(3) as usize;
    let me = m(NAMES[d.below(n as u32) as usize]);
    let failover_shaped = d.chance(30);
    let mut cluster = cluster(d);
    let local = local(d);
    let mut peers = BTreeMap::new();
    for name in NAMES.iter().take(n).map(|s| m(s)) {
        let seen = d.opt(85, |d| Seen { report: report(d, &name), received: d.instant(2500, 0) });
        peers.insert(name, seen);
    }
    let mut coordinator = d.opt(70, coordinator);
    if failover_shaped {
        for s in peers.values_mut().flatten() {
            make_final(&mut s.report, cluster.epoch);
            s.received = s.received.max(NOW - Duration::from_millis(500));
        }
        if let Some(c) = &mut coordinator {
            c.expired_epoch = Some(cluster.epoch);
            c.stop_requested = Some((cluster.epoch, NOW - Duration::from_secs(2)));
        }
        // Phase 1 runs only once the expiry is recorded in Raft.
        if let Some(p) = &mut cluster.primary {
            p.expired = d.chance(85);
        }
    }
    if !d.chance(30) {
        peers.insert(me.clone(), Some(Seen { report: own_report(&me, &cluster, &local), received: NOW }));
    }
    if let Some(p) = &mut cluster.primary
        && !peers.contains_key(&p.member)
    {
        p.member = me.clone();
    }
    let obs = Observation { now: NOW, wall: UnixMillis(1), me, cluster, local, peers, coordinator };
    (obs, HaConfig::default())
}

/// A whole observation with 3 to 5 members, and the HA settings to decide with.
pub fn observation() -> BoxedStrategy<(Observation, HaConfig)> {
    proptest::collection::vec(any::<u32>(), 300).prop_map(|xs| decode(&xs)).boxed()
}
