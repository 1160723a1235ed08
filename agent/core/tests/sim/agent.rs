//! One agent's memory and what it observes: the lease, renewal bookkeeping, fenced and
//! stop-streaming epochs, the running task, peers' last reports, and (on the Raft leader) the
//! coordinator's memory. All of it is lost when the agent crashes; a frozen agent keeps it.
//!
//! Owns building the `Observation` and the `Report` exactly as the real agent would from its
//! caches. Must not decide: `decide` does that.

use std::collections::BTreeMap;
use std::time::Duration;

use pgquorum_core::ha::observation::{
    Coordinator, Lease, Local, Observation, ReplicaConnection, Report, Seen, Tags, Task,
};
use pgquorum_core::state::SyncSet;
use pgquorum_core::{Epoch, Lsn, MemberName, UnixMillis};

use super::network::Id;
use super::postgres::lsn_at;
use super::world::World;

/// A long action in progress.
#[derive(Clone, Debug)]
pub struct RunningTask {
    /// What the observation shows.
    pub task: Task,
    /// When it finishes.
    pub done_at: Duration,
    /// Promote only: the synchronous set to put in place first.
    pub sync: SyncSet,
}

/// A renewal the leader is confirming (its quorum round trip ends at `done_at`).
#[derive(Clone, Debug)]
pub struct Confirming {
    /// Who asked.
    pub from: Id,
    /// For which epoch.
    pub epoch: Epoch,
    /// The requester's send time.
    pub sent: Duration,
    /// When the request reached the leader: the confirmation counts from here.
    pub arrived: Duration,
    /// End of the round trip.
    pub done_at: Duration,
    /// Raft term when it started; a leadership change voids it.
    pub term: u64,
}

/// The coordinator's memory, kept only while this agent leads Raft.
#[derive(Clone, Debug)]
pub struct CoordMem {
    /// When it became leader.
    pub leader_since: Duration,
    /// When it first saw the current epoch.
    pub epoch_since: Duration,
    /// The epoch it last saw applied.
    pub seen_epoch: Epoch,
    /// Last confirmation of the current primary's lease.
    pub last_confirmed: Option<Duration>,
    /// Longest ttl confirmed for the current epoch.
    pub granted_ttl: Option<Duration>,
    /// Epoch declared expired.
    pub expired_epoch: Option<Epoch>,
    /// When replicas were asked to stop streaming, for which epoch.
    pub stop_requested: Option<(Epoch, Duration)>,
    /// The primary's last reported WAL position.
    pub last_primary_lsn: Option<Lsn>,
    /// Last leadership transfer attempt.
    pub last_transfer: Option<Duration>,
    /// Renewals being confirmed.
    pub confirming: Vec<Confirming>,
}

impl CoordMem {
    /// Fresh memory of a leader elected at `now` with `epoch` applied.
    pub fn new(now: Duration, epoch: Epoch) -> CoordMem {
        CoordMem {
            leader_since: now,
            epoch_since: now,
            seen_epoch: epoch,
            last_confirmed: None,
            granted_ttl: None,
            expired_epoch: None,
            stop_requested: None,
            last_primary_lsn: None,
            last_transfer: None,
            confirming: Vec::new(),
        }
    }
}

/// One agent process.
#[derive(Clone, Debug)]
pub struct Agent {
    /// Running (false after kill -9 until restarted).
    pub up: bool,
    /// SIGSTOPped: decides nothing, answers nothing; its Postgres and fence guard go on.
    pub frozen: bool,
    /// Tags from its configuration (survive restarts).
    pub tags: Tags,
    /// The lease held.
    pub lease: Option<Lease>,
    /// Renewal in flight since.
    pub inflight: Option<Duration>,
    /// Last renewal sent.
    pub last_sent: Option<Duration>,
    /// Epoch fenced for.
    pub fenced_epoch: Option<Epoch>,
    /// Asked to stop streaming for this epoch.
    pub stop_streaming_for: Option<Epoch>,
    /// Long action in progress.
    pub task: Option<RunningTask>,
    /// Last failed long action.
    pub last_failure: Option<(Task, String, Duration)>,
    /// Primary's Postgres crashed at, not back yet.
    pub down_since: Option<Duration>,
    /// The fence guard (outside the agent process) watches the lease deadline.
    pub guard_armed: bool,
    /// Peers' last reports.
    pub peers: BTreeMap<Id, Seen>,
    /// Coordinator memory while leading.
    pub coord: Option<CoordMem>,
}

impl Agent {
    /// A freshly started agent with `tags`.
    pub fn new(tags: Tags) -> Agent {
        Agent {
            up: true,
            frozen: false,
            tags,
            lease: None,
            inflight: None,
            last_sent: None,
            fenced_epoch: None,
            stop_streaming_for: None,
            task: None,
            last_failure: None,
            down_since: None,
            guard_armed: false,
            peers: BTreeMap::new(),
            coord: None,
        }
    }

    /// Whether it runs its loop this step.
    pub fn active(&self) -> bool {
        self.up && !self.frozen
    }
}

/// Standbys connected to member `i`'s Postgres, as `pg_stat_replication` lists them.
pub fn replicas_of(w: &World, i: Id) -> Vec<ReplicaConnection> {
    (0..w.pgs.len())
        .filter(|&j| j != i && w.pgs[j].standby() && w.pgs[j].upstream == Some(i) && w.pgs[j].streaming)
        .map(|j| ReplicaConnection {
            name: w.names[j].to_string(),
            state: "streaming".into(),
            flush_lsn: Some(lsn_at(w.pgs[j].wal.len())),
            replay_lsn: Some(lsn_at(w.pgs[j].wal.len())),
            sync_state: if w.pgs[i].sync.members.contains(&w.names[j]) { "quorum" } else { "async" }.into(),
        })
        .collect()
}

/// What member `i` tells the others now.
pub fn report(w: &World, i: Id) -> Report {
    let (a, pg) = (&w.agents[i], &w.pgs[i]);
    let now = w.clock.now;
    Report {
        member: w.names[i].clone(),
        address: format!("{}:5432", w.names[i]),
        epoch: w.raft.states[i].epoch,
        postgres: pg.observed(&w.names, replicas_of(w, i)),
        data: pg.data(),
        lease: a.lease.map(|l| (l.epoch, l.deadline.saturating_sub(now))),
        fenced_epoch: a.fenced_epoch,
        stop_streaming_for: a.stop_streaming_for,
        task: a.task.as_ref().map(|t| t.task.clone()),
        tags: a.tags.clone(),
        timeline_history: pg.timeline_history(),
        sync_applied_at: pg.sync_applied_at.clone(),
        at: UnixMillis(now.as_millis() as u64),
        election_timeout_max: None,
        problem: None,
        roles_pending: false,
        stopping: false,
    }
}

/// Member `i`'s observation this step.
pub fn observation(w: &World, i: Id) -> Observation {
    let (a, pg) = (&w.agents[i], &w.pgs[i]);
    let now = w.clock.now;
    let local = Local {
        postgres: pg.observed(&w.names, replicas_of(w, i)),
        data: pg.data(),
        lease: a.lease,
        renewal_in_flight_since: a.inflight,
        last_renewal_sent: a.last_sent,
        fenced_epoch: a.fenced_epoch,
        stop_streaming_for: a.stop_streaming_for,
        task: a.task.as_ref().map(|t| t.task.clone()),
        last_failure: a.last_failure.clone(),
        down_since: a.down_since,
        tags: a.tags.clone(),
        restart_requested: false,
        sync_applied_at: pg.sync_applied_at.clone(),
    };
    let mut peers = BTreeMap::new();
    for (j, name) in w.names.iter().enumerate() {
        let seen = if j == i {
            Some(Seen { report: report(w, i), received: now })
        } else {
            a.peers.get(&j).cloned()
        };
        peers.insert(name.clone(), seen);
    }
    let coordinator = match (&a.coord, w.raft.leader == Some(i)) {
        (Some(c), true) => Some(Coordinator {
            leader_since: c.leader_since,
            epoch_since: c.epoch_since,
            last_confirmed: c.last_confirmed,
            granted_ttl: c.granted_ttl,
            expired_epoch: c.expired_epoch,
            stop_requested: c.stop_requested,
            voters: w.names.clone(),
            caught_up: caught_up(w, i),
            last_primary_lsn: c.last_primary_lsn,
            last_transfer: c.last_transfer,
        }),
        _ => None,
    };
    Observation {
        now,
        wall: UnixMillis(1_700_000_000_000 + now.as_millis() as u64),
        me: w.names[i].clone(),
        cluster: w.raft.states[i].clone(),
        local,
        peers,
        coordinator,
    }
}

fn caught_up(w: &World, l: Id) -> Vec<MemberName> {
    let up = w.raft_up();
    (0..w.names.len())
        .filter(|&j| up[j] && w.net.connected(l, j) && w.raft.applied[j] == w.raft.log.len())
        .map(|j| w.names[j].clone())
        .collect()
}
