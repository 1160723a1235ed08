//! The commands of the Raft log and their results.
//!
//! Owns the vocabulary of decisions the cluster records. Must not contain observations: only
//! things decided once and remembered (DESIGN "Raft as the cluster's memory").

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{DynamicConfig, SyncSet};
use crate::{Epoch, Lsn, MemberName, SystemId, Timeline, UnixMillis};

/// Why the primary role was granted.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantReason {
    /// First primary of a new cluster: this member runs initdb.
    Bootstrap,
    /// The previous primary's lease ran out.
    Failover,
    /// A planned hand-over.
    Switchover,
    /// An operator forced the choice (`pgquorumctl failover --to`).
    ManualFailover,
    /// The previous primary lost its lease but is again the best (or only) candidate.
    Reacquire,
}

impl fmt::Display for GrantReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GrantReason::Bootstrap => "bootstrap",
            GrantReason::Failover => "failover",
            GrantReason::Switchover => "switchover",
            GrantReason::ManualFailover => "manual failover",
            GrantReason::Reacquire => "reacquire",
        })
    }
}

/// A planned switchover waiting to be carried out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverRequest {
    /// The primary at request time; the request lapses if someone else becomes primary.
    pub from: MemberName,
    /// The member to hand over to; `None` lets the coordinator choose the best replica.
    pub to: Option<MemberName>,
    /// Do not start before this time (wall clock); `None` means now.
    pub not_before: Option<UnixMillis>,
    /// When it was requested.
    pub requested_at: UnixMillis,
}

/// An operator's request to promote a particular member when there is no healthy primary
/// (`pgquorumctl failover --to`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRequest {
    /// The member to promote.
    pub to: MemberName,
    /// Promote it even if it cannot be shown to hold every acknowledged commit.
    pub force: bool,
    /// When it was requested (requests lapse after a while).
    pub requested_at: UnixMillis,
}

/// A change to the replicated cluster state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum Command {
    /// The first command of a new cluster: its id and initial dynamic configuration.
    InitCluster {
        /// Random, chosen by the initialising agent.
        cluster_id: String,
        /// Starting dynamic configuration.
        config: DynamicConfig,
        /// When.
        at: UnixMillis,
    },
    /// Postgres was initialised; every member's data must carry this system identifier.
    RecordSystemIdentifier {
        /// From `pg_controldata` of the bootstrap member.
        system_identifier: SystemId,
        /// Who ran initdb.
        member: MemberName,
    },
    /// Grant the primary role for epoch `expected_epoch + 1`.
    GrantPrimary {
        /// The epoch the coordinator based its decision on; a stale decision is refused.
        expected_epoch: Epoch,
        /// The new primary.
        member: MemberName,
        /// Why.
        reason: GrantReason,
        /// The synchronous set the new primary configures before its first write.
        sync: SyncSet,
        /// When (coordinator's wall clock).
        at: UnixMillis,
        /// The new primary's WAL position when chosen, if known.
        lsn: Option<Lsn>,
        /// Its timeline when chosen, if known.
        timeline: Option<Timeline>,
        /// Every acknowledged commit so far lies at or below this position (see
        /// `PrimaryGrant::floor`).
        #[serde(default)]
        floor: Option<Lsn>,
    },
    /// The primary of `epoch` lost its lease: recorded so that every coordinator refuses its
    /// renewals from now on and replicas may stop streaming from it.
    ExpirePrimary {
        /// The epoch whose lease ran out.
        epoch: Epoch,
    },
    /// The primary of `epoch` gave up its role after stopping Postgres (for example it could not
    /// restart it within `primary_start_timeout`), so nobody needs to wait for its lease.
    ReleasePrimary {
        /// The epoch given up.
        epoch: Epoch,
    },
    /// Record a synchronous set for the current epoch.
    SetSync {
        /// Must be the current epoch.
        epoch: Epoch,
        /// The new bound on acknowledging standbys.
        recorded: SyncSet,
        /// What the primary should configure; must lie within `recorded`.
        target: SyncSet,
    },
    /// Replace the dynamic configuration.
    SetConfig {
        /// Compare-and-set on `config_version`; `None` overwrites unconditionally.
        expected_version: Option<u64>,
        /// The new configuration (validated again on apply).
        config: DynamicConfig,
    },
    /// Ask for a planned switchover.
    RequestSwitchover(SwitchoverRequest),
    /// Forget a pending switchover (carried out elsewhere, lapsed or cancelled).
    ClearSwitchover,
    /// Name the target of a pending switchover that was requested without one.
    SetSwitchoverTarget {
        /// The primary the request is from (guards against a lapsed request).
        from: MemberName,
        /// The chosen target.
        to: MemberName,
    },
    /// Ask for a manual failover.
    RequestFailover(FailoverRequest),
    /// Forget a pending manual failover.
    ClearFailover,
    /// Enter or leave maintenance mode.
    SetPaused {
        /// On or off.
        paused: bool,
    },
    /// Have `member` take the scheduled base backup due at `due`. Refused for a due time at or
    /// before the last one claimed, unless it hands an unfinished claim to another member.
    ClaimBackup {
        /// The schedule's due time.
        due: UnixMillis,
        /// Who takes it.
        member: MemberName,
        /// When (coordinator's wall clock).
        at: UnixMillis,
    },
    /// A base backup was stored (kept for status when it is newer than the one recorded).
    RecordBackup(super::BackupRecord),
    /// The scheduled backup due at `due` ended.
    FinishBackup {
        /// The due time it was claimed for.
        due: UnixMillis,
        /// The member that took it.
        member: MemberName,
        /// The backup id, or why it failed.
        outcome: Result<String, String>,
    },
}

/// What a successful command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandOk {
    /// Applied, nothing to report.
    Done,
    /// A primary was granted this epoch.
    Granted {
        /// The new epoch.
        epoch: Epoch,
    },
    /// The configuration now has this version.
    ConfigVersion {
        /// New version.
        version: u64,
    },
}

/// Why a command was refused. Refusals are deterministic: every agent refuses alike.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "error")]
pub enum CommandError {
    /// The cluster was initialised already.
    #[error("the cluster is already initialised (id {cluster_id}); a second initialisation is refused")]
    AlreadyInitialized {
        /// The existing id.
        cluster_id: String,
    },
    /// The command needs an initialised cluster.
    #[error("the cluster is not initialised yet")]
    NotInitialized,
    /// A stale decision.
    #[error("epoch changed: expected {expected}, the cluster is at {actual}")]
    EpochMismatch {
        /// What the proposer assumed.
        expected: Epoch,
        /// The current epoch.
        actual: Epoch,
    },
    /// A different Postgres cluster.
    #[error("system identifier {got} does not match the cluster's {recorded}")]
    SystemIdentifierMismatch {
        /// What the cluster recorded.
        recorded: SystemId,
        /// What was offered.
        got: SystemId,
    },
    /// Someone else changed the configuration first.
    #[error("configuration changed meanwhile (version {actual}, expected {expected}); re-read and retry")]
    ConfigVersionMismatch {
        /// What the proposer read.
        expected: u64,
        /// The current version.
        actual: u64,
    },
    /// Maintenance mode forbids automatic failover.
    #[error("the cluster is paused (maintenance mode); resume it first")]
    Paused,
    /// A switchover is already pending.
    #[error("a switchover is already pending (from {from}); cancel it first")]
    SwitchoverPending {
        /// The pending request's primary.
        from: MemberName,
    },
    /// The command is malformed.
    #[error("{0}")]
    Invalid(String),
}

/// The response of applying one command.
pub type CommandResult = Result<CommandOk, CommandError>;

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::InitCluster { cluster_id, .. } => write!(f, "init cluster {cluster_id}"),
            Command::RecordSystemIdentifier { system_identifier, member } => {
                write!(f, "record system identifier {system_identifier} from {member}")
            }
            Command::GrantPrimary { expected_epoch, member, reason, sync, .. } => {
                write!(
                    f,
                    "grant primary to {member} at epoch {} ({reason}, sync {sync})",
                    expected_epoch.next()
                )
            }
            Command::ReleasePrimary { epoch } => write!(f, "release primary of epoch {epoch}"),
            Command::ExpirePrimary { epoch } => write!(f, "expire the lease of epoch {epoch}"),
            Command::SetSync { epoch, recorded, target } => {
                write!(f, "set sync at epoch {epoch}: recorded {recorded}, target {target}")
            }
            Command::SetConfig { expected_version, .. } => match expected_version {
                Some(v) => write!(f, "set config (from version {v})"),
                None => f.write_str("set config"),
            },
            Command::RequestSwitchover(r) => match &r.to {
                Some(to) => write!(f, "request switchover from {} to {to}", r.from),
                None => write!(f, "request switchover from {}", r.from),
            },
            Command::ClearSwitchover => f.write_str("clear switchover"),
            Command::SetSwitchoverTarget { from, to } => write!(f, "switchover from {from} goes to {to}"),
            Command::RequestFailover(r) => {
                write!(f, "request failover to {}{}", r.to, if r.force { " (forced)" } else { "" })
            }
            Command::ClearFailover => f.write_str("clear failover request"),
            Command::SetPaused { paused } => write!(f, "set paused={paused}"),
            Command::RecordBackup(b) => write!(f, "backup {} stored by {}", b.id, b.member),
            Command::ClaimBackup { due, member, .. } => {
                write!(f, "scheduled backup due at {} taken by {member}", due.0)
            }
            Command::FinishBackup { due, member, outcome } => {
                write!(f, "scheduled backup due at {} by {member} ended: {outcome:?}", due.0)
            }
        }
    }
}
