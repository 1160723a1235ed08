//! What `decide` returns: typed actions and the reason for them.
//!
//! Reasons are an enum so tests match on them and logs render them; an action never carries
//! free text. Executors carry actions out; long ones run as tasks and show up in a later
//! observation.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::state::{Command, SyncSet};
use crate::{Epoch, MemberName};

/// One thing to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    // ---- local Postgres ----
    /// Run initdb (task); the system identifier is recorded afterwards.
    Initdb,
    /// Clone the data directory from this member with pg_basebackup (task).
    Clone {
        /// Source.
        from: MemberName,
    },
    /// Rewind the data directory from this member with pg_rewind (task).
    Rewind {
        /// Source.
        from: MemberName,
    },
    /// Move the data directory aside so it can be cloned again.
    DiscardData,
    /// Start Postgres as the primary (requires the lease; the fence guard is armed first).
    StartPrimary,
    /// Start Postgres as a standby streaming from `upstream` (None: do not stream).
    StartReplica {
        /// Who to stream from.
        upstream: Option<MemberName>,
    },
    /// Point a running standby at `upstream` (None: stop streaming).
    Follow {
        /// Who to stream from.
        upstream: Option<MemberName>,
    },
    /// Put `sync` in place and promote the local standby (requires the lease).
    Promote {
        /// The synchronous set to configure before the first write.
        sync: SyncSet,
    },
    /// Set `synchronous_standby_names` on the running primary.
    ApplySync {
        /// The set.
        sync: SyncSet,
    },
    /// Create missing replication slots for these members and drop slots of non-members.
    Slots {
        /// Members that need a slot.
        members: Vec<MemberName>,
    },
    /// Stop Postgres with a fast shutdown.
    Stop,
    /// Checkpoint, then stop Postgres cleanly (its WAL reaches the standbys), and never renew
    /// this epoch again: the first step of a switchover.
    StopForSwitchover,
    /// Restart Postgres (stop, then the usual rules start it again), as an operator asked.
    RestartPostgres,
    /// Kill Postgres and all its backends now (it may not accept another write).
    Fence,
    // ---- lease ----
    /// Ask the coordinator to confirm the lease for `epoch`.
    Renew {
        /// The epoch held.
        epoch: Epoch,
    },
    /// Forget the lease (after fencing or when superseded).
    DropLease,
    // ---- cluster (through Raft) ----
    /// Propose a command to the replicated state.
    Propose(Command),
    // ---- coordinator ----
    /// Refuse further renewals of `epoch` (checked and set atomically by the executor).
    Expire {
        /// The epoch whose lease ran out.
        epoch: Epoch,
    },
    /// Ask these members to stop streaming from the primary of `epoch` and report their WAL
    /// position.
    StopStreaming {
        /// The failing epoch.
        epoch: Epoch,
        /// Members asked.
        members: Vec<MemberName>,
    },
    /// Hand Raft leadership to this member.
    TransferLeadership {
        /// The new leader.
        to: MemberName,
    },
}

/// Why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// Nothing to do.
    Steady,
    /// Maintenance mode.
    Paused,
    /// Witness member: no Postgres here.
    Witness,
    /// Waiting for the cluster's initialisation to be applied.
    NotInitialized,
    /// Waiting for a long action.
    TaskRunning,
    /// A recent attempt failed; waiting before the next.
    BackingOff,
    /// The data directory belongs to another cluster.
    ForeignData,
    /// The data directory cannot be used.
    UnusableData,
    /// This member was chosen to initialise the cluster.
    Bootstrapping,
    /// The lease is about to run out.
    LeaseExpiring,
    /// Postgres accepts writes without a lease for the current epoch.
    WritableWithoutLease,
    /// This member holds the primary role and is becoming primary.
    BecomingPrimary,
    /// Primary Postgres crashed; restarting it in place.
    RestartInPlace,
    /// Primary Postgres did not come back within primary_start_timeout.
    PrimaryStartTimeout,
    /// Keeping the primary's slots and synchronous settings in line.
    PrimaryUpkeep,
    /// This member needs data from the primary.
    NeedsClone,
    /// The primary is writable but still creating the replication role: a clone waits for it.
    PrimaryPreparing,
    /// Data diverged from the primary's timeline; says where.
    Diverged(String),
    /// Rewind failed; cloning again.
    RewindFailed,
    /// Following the primary.
    Following,
    /// Asked to stop streaming (failover in progress).
    StreamingStopped,
    /// No primary right now.
    NoPrimary,
    /// Coordinator: no primary yet; chose who initialises.
    ChoseBootstrapMember,
    /// Coordinator: the primary's lease ran out.
    LeaseExpired,
    /// Coordinator: waiting for replicas to stop streaming.
    WaitingForReplicas,
    /// Coordinator: promoting the best candidate; says who was considered at which position.
    Failover(String),
    /// Coordinator: no candidate provably holds every acknowledged commit (or all lag).
    NoSafeCandidate(String),
    /// Coordinator: the synchronous set needs to change.
    SyncChange,
    /// Coordinator: a scheduled base backup is due (or its member stalled).
    ScheduledBackup,
    /// Coordinator: keep the Raft leader off the primary's node.
    LeadershipOffPrimary,
    /// Coordinator: carrying out a requested switchover.
    Switchover,
    /// The switchover request no longer applies (someone else is primary).
    SwitchoverLapsed,
    /// The switchover did not complete in time and was cancelled.
    SwitchoverTimedOut,
    /// No replica can take over in a switchover.
    NoSwitchoverCandidate,
    /// Primary: waiting for the switchover target to catch up.
    WaitingForSwitchoverTarget,
    /// A manual failover waits until the primary's lease has run out.
    ManualFailoverWaiting,
    /// A manual failover request lapsed.
    ManualFailoverLapsed,
    /// An operator asked for a Postgres restart.
    RestartRequested,
    /// Postgres exited again soon after its start; waiting before the next start.
    RestartBackoff,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoSafeCandidate(why) => write!(f, "no safe candidate: {why}"),
            Reason::Failover(who) => write!(f, "failover: {who}"),
            Reason::Diverged(how) => write!(f, "diverged: {how}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// One decision: actions and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// What to do, in order.
    pub actions: Vec<Action>,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    /// Nothing to do, for `reason`.
    pub fn wait(reason: Reason) -> Decision {
        Decision { actions: Vec::new(), reason }
    }

    /// Do `actions` for `reason`.
    pub fn act(reason: Reason, actions: Vec<Action>) -> Decision {
        Decision { actions, reason }
    }
}

/// What one tick decided: for the local member, and (on the Raft leader) for the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The lease and the local Postgres.
    pub member: Decision,
    /// Cluster-wide decisions; `None` unless this agent is the Raft leader.
    pub coordinator: Option<Decision>,
}
