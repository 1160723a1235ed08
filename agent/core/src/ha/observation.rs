//! What an agent sees in one tick: the replicated state, its own Postgres, its lease, and (on
//! the Raft leader) every member's last report. Built by the agent's HA loop from caches.
//!
//! All instants are `Duration`s on one monotonic clock chosen by the caller (the agent uses
//! time since it started), so decisions never read a clock.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::{ClusterState, SyncSet};
use crate::{Epoch, Lsn, MemberName, SystemId, Timeline, UnixMillis};

/// Per-member settings that shape failover (Patroni's tags).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tags {
    /// Never promote this member.
    pub nofailover: bool,
    /// Never make this member a synchronous standby.
    pub nosync: bool,
    /// Higher wins among equally advanced candidates.
    pub failover_priority: i32,
    /// Free-form tags, matched by health-check queries.
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
}

/// What Postgres's control file says about the data directory (`pg_controldata`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDir {
    /// The data's system identifier.
    pub system_identifier: SystemId,
    /// The timeline of the last checkpoint.
    pub timeline: Timeline,
    /// Whether the data was last running as a primary ("in production" or "shut down"), as
    /// opposed to a standby. A former primary on an old timeline may hold WAL nobody else has.
    pub was_primary: bool,
    /// Whether the last shutdown was clean.
    pub clean_shutdown: bool,
    /// Start of the latest checkpoint record.
    pub checkpoint_lsn: Lsn,
    /// A standby's minimum recovery point and its timeline: how far its data files may
    /// reflect replayed WAL. Set once a standby has replayed anything.
    pub min_recovery: Option<(Timeline, Lsn)>,
}

/// Whether the data directory exists and what is in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Data {
    /// No data directory (or an empty one): needs initdb or a clone.
    Missing,
    /// A valid data directory.
    Present(DataDir),
    /// Not readable as a data directory; the message says why.
    Unusable(String),
}

/// A standby connected to this primary (`pg_stat_replication`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaConnection {
    /// `application_name`, which is the standby's member name.
    pub name: String,
    /// `state`: streaming, catchup, ...
    pub state: String,
    /// Last WAL position the standby flushed.
    pub flush_lsn: Option<Lsn>,
    /// Last WAL position it replayed.
    pub replay_lsn: Option<Lsn>,
    /// `sync_state`: sync, quorum, potential, async.
    pub sync_state: String,
}

/// Postgres's own WAL archiver (`pg_stat_archiver`), read when `archive_mode` is not `off`.
/// Shown by status and metrics; no decision depends on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archiver {
    /// WAL files archived since the statistics were reset.
    pub archived_count: u64,
    /// The last one archived (empty when none).
    pub last_archived_wal: String,
    /// When, as Postgres prints a timestamp (empty when none).
    pub last_archived_time: String,
    /// Failed attempts to archive.
    pub failed_count: u64,
    /// The last WAL file that failed (empty when none).
    pub last_failed_wal: String,
    /// When (empty when none).
    pub last_failed_time: String,
    /// The agent's own archive (`archive.enabled`): where it stores; empty when it does not.
    #[serde(default)]
    pub store: String,
    /// WAL files Postgres marked ready that the agent has not stored yet.
    #[serde(default)]
    pub pending_files: u64,
    /// Age of the oldest of them in milliseconds: the archive lag.
    #[serde(default)]
    pub lag_ms: u64,
    /// The agent's last archive failure, `kind: message` (empty when none).
    #[serde(default)]
    pub last_error: String,
}

/// A running Postgres, as one status query sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// Current timeline (primary: from its WAL insert position; standby: received or replayed).
    pub timeline: Option<Timeline>,
    /// Primary: current WAL position. Standby: the furthest of received and replayed.
    pub lsn: Option<Lsn>,
    /// Standby: last received WAL position.
    pub receive_lsn: Option<Lsn>,
    /// Standby: last replayed WAL position.
    pub replay_lsn: Option<Lsn>,
    /// Standby: the WAL receiver is streaming.
    pub streaming: bool,
    /// Standby: minimum recovery point and its timeline (`pg_control_recovery()`).
    pub min_recovery: Option<(Timeline, Lsn)>,
    /// Standby: the member it is configured to stream from (None: configured not to stream).
    pub upstream: Option<MemberName>,
    /// Current `synchronous_standby_names`.
    pub synchronous_standby_names: String,
    /// Primary: connected standbys.
    pub replicas: Vec<ReplicaConnection>,
    /// Primary: existing physical replication slots.
    pub slots: Vec<String>,
    /// Parameters changed in configuration that need a restart.
    pub pending_restart: Vec<String>,
    /// The WAL archiver, when archiving is on (boxed: rarely set, and large).
    #[serde(default)]
    pub archiver: Option<Box<Archiver>>,
}

/// The local Postgres process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Postgres {
    /// Not managed by this agent (a witness member: votes in Raft, holds no data).
    Disabled,
    /// Not running.
    Stopped,
    /// Started, not yet accepting connections.
    Starting {
        /// When it was started.
        since: Duration,
    },
    /// Running and answering queries.
    Running(Running),
    /// Exited without being asked to.
    Crashed {
        /// When the crash was noticed.
        at: Duration,
        /// Consecutive exits without a stable run in between (1: the first since Postgres ran
        /// well); the restart backoff grows with it (`rules::restart`).
        #[serde(default)]
        failures: u32,
    },
}

impl Postgres {
    /// The running status, if running.
    pub fn running(&self) -> Option<&Running> {
        match self {
            Postgres::Running(r) => Some(r),
            _ => None,
        }
    }

    /// Running as a writable primary.
    pub fn is_writable(&self) -> bool {
        self.running().is_some_and(|r| !r.in_recovery)
    }
}

/// A long action in progress (it reports back in a later observation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// initdb of a new cluster.
    Initdb,
    /// pg_basebackup from a member.
    Clone(MemberName),
    /// pg_rewind from a member.
    Rewind(MemberName),
    /// Promotion of the local standby.
    Promote,
    /// Starting or stopping Postgres.
    Restart,
}

/// A lease this member holds on the primary role.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The epoch it is for.
    pub epoch: Epoch,
    /// When the last confirmed renewal was sent.
    pub renewed_at: Duration,
    /// Monotonic time it ends: `renewed_at` plus the ttl the coordinator confirmed.
    pub deadline: Duration,
}

/// This agent's own state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Local {
    /// Postgres process state.
    pub postgres: Postgres,
    /// What the data directory holds (read when Postgres is stopped; kept while it runs).
    pub data: Data,
    /// The lease held, if any.
    pub lease: Option<Lease>,
    /// When the last renewal request was sent, if one is in flight.
    pub renewal_in_flight_since: Option<Duration>,
    /// When the last renewal was sent (answered or not).
    pub last_renewal_sent: Option<Duration>,
    /// An epoch this member fenced itself for; it never renews that epoch again.
    pub fenced_epoch: Option<Epoch>,
    /// The coordinator asked this member to stop streaming from the primary of this epoch.
    pub stop_streaming_for: Option<Epoch>,
    /// The long action in progress.
    pub task: Option<Task>,
    /// The last long action that failed, with why and when, so it is not retried in a loop.
    pub last_failure: Option<(Task, String, Duration)>,
    /// When the primary's Postgres last crashed and has not come back yet (restart budget).
    pub down_since: Option<Duration>,
    /// This member's tags.
    pub tags: Tags,
    /// The primary's WAL position when the current synchronous target took effect here.
    pub sync_applied_at: Option<(SyncSet, Lsn)>,
    /// An operator asked to restart this member's Postgres.
    #[serde(default)]
    pub restart_requested: bool,
}

/// What a member tells the others about itself (the peer `MemberStatus` call).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Who.
    pub member: MemberName,
    /// Where its Postgres accepts connections (host:port); empty for a witness.
    pub address: String,
    /// Highest epoch this member has applied.
    pub epoch: Epoch,
    /// Postgres process state.
    pub postgres: Postgres,
    /// Data directory state.
    pub data: Data,
    /// Lease held (epoch and time left at report time).
    pub lease: Option<(Epoch, Duration)>,
    /// Fenced epoch.
    pub fenced_epoch: Option<Epoch>,
    /// Asked to stop streaming for this epoch.
    pub stop_streaming_for: Option<Epoch>,
    /// Task in progress.
    pub task: Option<Task>,
    /// Tags.
    pub tags: Tags,
    /// Primary only: its timeline history, (timeline, LSN where it ended), oldest first.
    pub timeline_history: Vec<(Timeline, Lsn)>,
    /// Primary only: where the current synchronous target took effect.
    pub sync_applied_at: Option<(SyncSet, Lsn)>,
    /// Wall clock of the reporter (display only).
    pub at: UnixMillis,
    /// The reporter's `raft.election_timeout_max`: a dynamic ttl must outlast a Raft election
    /// on every member (`None`: an agent that does not say).
    #[serde(default)]
    pub election_timeout_max: Option<Duration>,
    /// Why this member's Postgres does not work, in Postgres's own words (display only).
    #[serde(default)]
    pub problem: Option<Problem>,
    /// Primary only: writable, but still creating the replication role. A clone started now
    /// would be refused ("password authentication failed"), so replicas without data wait.
    /// An agent that does not say (`false`) is taken as ready.
    #[serde(default)]
    pub roles_pending: bool,
    /// The agent is stopping (SIGTERM): not a candidate for a handover or a switchover. An
    /// agent that does not say (`false`) is not stopping.
    #[serde(default)]
    pub stopping: bool,
}

/// What keeps a member's Postgres from working, as Postgres itself logged it. Shown in status
/// and metrics; no decision depends on the text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// What fails.
    pub kind: ProblemKind,
    /// The line(s) Postgres logged about it (severity included), or what the agent saw
    /// when Postgres logged nothing.
    pub message: String,
    /// Start problems: consecutive failed starts.
    #[serde(default)]
    pub failures: u32,
}

/// The kinds of `Problem`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Postgres exits soon after it is started (or crashed).
    Start,
    /// A standby's WAL receiver cannot stream from its upstream.
    Replication,
}

impl ProblemKind {
    /// The name used in status, JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Start => "start",
            ProblemKind::Replication => "replication",
        }
    }
}

/// A member's last report as the coordinator holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The report.
    pub report: Report,
    /// When it arrived (monotonic).
    pub received: Duration,
}

/// What the coordinator (Raft leader) knows beyond the replicated state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coordinator {
    /// When this agent became Raft leader.
    pub leader_since: Duration,
    /// When this coordinator first saw the current epoch (its grant, or its own start).
    pub epoch_since: Duration,
    /// When the last renewal request of the current primary that this leader confirmed
    /// arrived (the confirmation counts from its arrival).
    pub last_confirmed: Option<Duration>,
    /// The longest ttl this leader granted for the current epoch.
    pub granted_ttl: Option<Duration>,
    /// An epoch this leader declared expired (it then refuses renewals for it).
    pub expired_epoch: Option<Epoch>,
    /// When this leader asked the replicas to stop streaming, for which epoch.
    pub stop_requested: Option<(Epoch, Duration)>,
    /// Voting members.
    pub voters: Vec<MemberName>,
    /// Members whose Raft log has caught up with the leader.
    pub caught_up: Vec<MemberName>,
    /// The last WAL position the current primary reported.
    pub last_primary_lsn: Option<Lsn>,
    /// When a leadership transfer was last attempted.
    pub last_transfer: Option<Duration>,
}

/// Everything `decide` looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Monotonic now.
    pub now: Duration,
    /// Wall clock now (only copied into commands).
    pub wall: UnixMillis,
    /// This member.
    pub me: MemberName,
    /// The applied replicated state.
    pub cluster: ClusterState,
    /// This agent's own state.
    pub local: Local,
    /// Every member of the Raft membership (self included) with its last report, if any.
    pub peers: BTreeMap<MemberName, Option<Seen>>,
    /// Present only on the Raft leader.
    pub coordinator: Option<Coordinator>,
}
