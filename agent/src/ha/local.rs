//! The HA loop's own memory about the local member (process handles, lease, tasks) and how it
//! becomes the core's `Local` and `Postgres` views.

use std::time::Duration;

use pgquorum_core::ha::observation::{
    Data, Lease, Local, Postgres, Problem, ProblemKind, Running, Tags, Task,
};
use pgquorum_core::state::SyncSet;
use pgquorum_core::{Epoch, Lsn, MemberName};
use tokio::task::JoinHandle;

use crate::postgres::process::Postmaster;
use crate::postgres::sql::Status;

/// What a finished long task hands back.
pub type TaskResult = Result<Option<Postmaster>, String>;

/// A renewal in flight: it answers the epoch, the ttl confirmed and the send time it counts from.
pub type Renewal = JoinHandle<Result<super::renew::Confirmed, String>>;

/// Mutable state of the local member.
pub struct LocalState {
    /// Our postmaster, when running.
    pub postmaster: Option<Postmaster>,
    /// When it was started.
    pub started_at: Option<Duration>,
    /// When it crashed (cleared when it runs again).
    pub crashed_at: Option<Duration>,
    /// Control data of the data directory (refreshed when Postgres is down).
    pub data: Data,
    /// `data` must be re-read.
    pub data_stale: bool,
    /// Lease held.
    pub lease: Option<Lease>,
    /// Renewal in flight: send time and the call.
    pub renewal: Option<(Duration, Renewal)>,
    /// When the last renewal was sent.
    pub last_renewal_sent: Option<Duration>,
    /// The Raft election delay set on this node (`Ha::election_delay`).
    pub election_delay: Duration,
    /// The Raft term the last observation saw this node lead (0: it did not).
    pub coord_term: u64,
    /// Epoch fenced for.
    pub fenced_epoch: Option<Epoch>,
    /// Long task in progress.
    pub task: Option<(Task, JoinHandle<TaskResult>)>,
    /// Last failed task.
    pub last_failure: Option<(Task, String, Duration)>,
    /// Primary Postgres down since (restart-in-place budget).
    pub down_since: Option<Duration>,
    /// Upstream written into the configuration.
    pub upstream: Option<MemberName>,
    /// Whether the configuration is a standby's (standby.signal).
    pub conf_standby: bool,
    /// `synchronous_standby_names` written into the configuration.
    pub conf_sync: String,
    /// Where the synchronous target took effect.
    pub sync_applied_at: Option<(SyncSet, Lsn)>,
    /// Last status reading.
    pub status: Option<Status>,
    /// When `status` was last read (loop clock).
    pub status_at: Option<Duration>,
    /// Something changed: read the status on the next tick, whatever `ha.status_interval` says.
    pub status_due: bool,
    /// When an entry of the data directory last appeared or went (`postgres::watch`): the
    /// status is read every tick for a while after it (`cadence::data_recently_changed`).
    pub data_changed_at: Option<Duration>,
    /// A proposal of this member in flight.
    pub proposal: Option<JoinHandle<()>>,
    /// A coordinator proposal in flight.
    pub coord_proposal: Option<JoinHandle<()>>,
    /// Roles were checked since this postmaster became primary.
    pub roles_checked: bool,
    /// The agent is stopping (its report says so; `Shared::request_stop`).
    pub stopping: bool,
    /// Role creation running in the background; it answers whether it succeeded.
    pub roles: Option<JoinHandle<bool>>,
    /// A witness member: no Postgres.
    pub witness: bool,
    /// Highest timeline this standby has been seen on (kept while its receiver is down).
    pub standby_tli: Option<pgquorum_core::Timeline>,
    /// Consecutive exits of Postgres without a stable run between them (restart backoff).
    pub start_failures: u32,
    /// Why Postgres does not work, as it logged it (shown in the report).
    pub problem: Option<Problem>,
    /// The last configuration written: its inputs' digest, the postmaster it was written
    /// for, and when (the upkeep skips rewriting the same files for the same server).
    pub conf_written: Option<(u64, Option<u32>, Duration)>,
}

impl LocalState {
    /// A fresh state with the data directory read at start.
    pub fn new(data: Data) -> LocalState {
        LocalState {
            postmaster: None,
            started_at: None,
            crashed_at: None,
            data,
            data_stale: false,
            lease: None,
            renewal: None,
            last_renewal_sent: None,
            election_delay: Duration::ZERO,
            coord_term: 0,
            fenced_epoch: None,
            task: None,
            last_failure: None,
            down_since: None,
            upstream: None,
            conf_standby: true,
            conf_sync: String::new(),
            sync_applied_at: None,
            status: None,
            status_at: None,
            status_due: true,
            data_changed_at: None,
            proposal: None,
            coord_proposal: None,
            roles_checked: false,
            stopping: false,
            roles: None,
            witness: false,
            standby_tli: None,
            start_failures: 0,
            problem: None,
            conf_written: None,
        }
    }

    /// Records what keeps Postgres from working (`None`: nothing); answers whether the kind or
    /// the words changed since the last call, so the caller logs once per change, not per retry.
    pub fn set_problem(&mut self, problem: Option<Problem>) -> bool {
        let key = |p: &Option<Problem>| p.as_ref().map(|p| (p.kind, p.message.clone()));
        let changed = key(&self.problem) != key(&problem);
        self.problem = problem;
        changed
    }

    /// Clears a problem of `kind`, logging that it is over; other kinds stay.
    pub fn clear_problem(&mut self, kind: ProblemKind, now_ok: &str) {
        if self.problem.as_ref().is_some_and(|p| p.kind == kind) {
            self.problem = None;
            tracing::info!("{now_ok}");
        }
    }

    /// Writable, and the replication role not yet confirmed since this postmaster started.
    pub fn roles_pending(&self) -> bool {
        self.postmaster.is_some()
            && self.status.as_ref().is_some_and(|s| !s.in_recovery)
            && !self.roles_checked
    }

    /// The core's view of the local Postgres.
    pub fn postgres_view(&self) -> Postgres {
        if self.witness {
            return Postgres::Disabled;
        }
        match (&self.postmaster, &self.status) {
            (None, _) => match self.crashed_at {
                Some(at) => Postgres::Crashed { at, failures: self.start_failures },
                None => Postgres::Stopped,
            },
            (Some(_), None) => Postgres::Starting { since: self.started_at.unwrap_or_default() },
            (Some(_), Some(s)) => Postgres::Running(running(s, self.upstream.clone())),
        }
    }

    /// The core's view of the local member.
    pub fn view(&self, stop_streaming_for: Option<Epoch>, tags: &Tags, restart_requested: bool) -> Local {
        Local {
            postgres: self.postgres_view(),
            data: self.data.clone(),
            lease: self.lease,
            renewal_in_flight_since: self.renewal.as_ref().map(|(sent, _)| *sent),
            last_renewal_sent: self.last_renewal_sent,
            fenced_epoch: self.fenced_epoch,
            stop_streaming_for,
            task: self.task.as_ref().map(|(t, _)| t.clone()),
            last_failure: self.last_failure.clone(),
            down_since: self.down_since,
            tags: tags.clone(),
            sync_applied_at: self.sync_applied_at.clone(),
            restart_requested,
        }
    }
}

/// A status reading as the core's `Running`.
pub fn running(s: &Status, upstream: Option<MemberName>) -> Running {
    let lsn = if s.in_recovery { s.receive_lsn.max(s.replay_lsn) } else { s.current_lsn };
    Running {
        in_recovery: s.in_recovery,
        timeline: s.timeline,
        lsn,
        receive_lsn: s.receive_lsn,
        replay_lsn: s.replay_lsn,
        streaming: s.receiver.as_deref() == Some("streaming"),
        min_recovery: s.min_recovery,
        upstream: if s.in_recovery { upstream } else { None },
        synchronous_standby_names: s.synchronous_standby_names.clone(),
        replicas: s.replicas.clone(),
        slots: s.slots.clone(),
        pending_restart: s.pending_restart.clone(),
        archiver: s.archiver.clone(),
    }
}
