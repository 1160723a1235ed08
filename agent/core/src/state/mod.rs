//! The replicated cluster state: what the Raft log means.
//!
//! Owns the state every agent holds identically (`ClusterState`), the commands that change it
//! and their apply logic. Apply is deterministic: it reads nothing but the state and the command
//! (wall time travels inside commands). Must not hold anything that changes without a decision:
//! member health and LSNs are observed, never logged, so a steady cluster writes nothing.

mod apply;
mod command;
mod config;
mod config_diff;
mod sync;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use command::{
    Command, CommandError, CommandOk, CommandResult, FailoverRequest, GrantReason, SwitchoverRequest,
};
pub use config::{DurabilityMode, DynamicConfig, min_ttl_for, parse_bytes};
pub use config_diff::json_diff;
pub use sync::SyncSet;

use crate::{Epoch, Lsn, MemberName, SystemId, Timeline, UnixMillis};

/// How many primary grants `ClusterState::history` keeps.
pub const HISTORY_LIMIT: usize = 200;

/// Addresses of one member, stored in the Raft membership so every agent can reach every other.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    /// The member's name (unique in the cluster).
    pub name: MemberName,
    /// host:port of the agent's gRPC endpoint (Raft, peer and management services).
    pub grpc: String,
    /// host:port of the agent's HTTP endpoint (health checks, metrics); empty if disabled.
    #[serde(default)]
    pub http: String,
    /// host:port where the member's Postgres accepts connections; empty before the HA issue.
    #[serde(default)]
    pub postgres: String,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.grpc)
    }
}

/// The member holding the primary role, and for which epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryGrant {
    /// Who is primary.
    pub member: MemberName,
    /// The epoch of this grant; leases are renewed for exactly this epoch.
    pub epoch: Epoch,
    /// When the grant was decided (the coordinator's wall clock; display only).
    pub since: UnixMillis,
    /// The coordinator declared this grant's lease expired: no leader confirms it again, and
    /// replicas may stop streaming from it.
    #[serde(default)]
    pub expired: bool,
    /// Every commit acknowledged before this epoch lies at or below this WAL position (the
    /// proof bar of the failover that granted it, carried forward): a later failover candidate
    /// must have reached it. `None` when nothing was proven (asynchronous history).
    #[serde(default)]
    pub floor: Option<Lsn>,
    /// The longest ttl (milliseconds) configured at any time since this grant, when it was
    /// longer than today's: a lease confirmed under it may still run, so a coordinator (even
    /// one elected later) waits for it before granting the next epoch. `None`: the current ttl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_ttl_ms: Option<u64>,
}

/// The recorded synchronous replication state for the current epoch.
///
/// `recorded` bounds what Postgres may ever have used to acknowledge commits in this epoch:
/// failover candidates are judged against it. `target` is what the primary should configure
/// now; it is always within `recorded` (see `SyncSet::is_within`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The set commits may have been acknowledged by.
    pub recorded: SyncSet,
    /// The set the primary should have in `synchronous_standby_names`.
    pub target: SyncSet,
}

/// One line of the failover history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The epoch granted.
    pub epoch: Epoch,
    /// Who became primary.
    pub member: MemberName,
    /// Who was primary before, if anyone.
    pub previous: Option<MemberName>,
    /// Why.
    pub reason: GrantReason,
    /// When (coordinator's wall clock).
    pub at: UnixMillis,
    /// The new primary's WAL position when chosen, when known.
    pub lsn: Option<Lsn>,
    /// The timeline the new primary was on when chosen, when known.
    pub timeline: Option<Timeline>,
    /// The floor of acknowledged commits carried by the grant (see `PrimaryGrant::floor`).
    #[serde(default)]
    pub floor: Option<Lsn>,
}

/// The state every agent holds identically, rebuilt from the Raft log and snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Random id chosen when the cluster was initialised; `None` before `InitCluster`.
    pub cluster_id: Option<String>,
    /// When the cluster was initialised.
    pub initialized_at: Option<UnixMillis>,
    /// Postgres's system identifier, recorded by the member that ran initdb.
    pub system_identifier: Option<SystemId>,
    /// Cluster-wide settings (lease ttl, durability, Postgres parameters, ...).
    pub config: DynamicConfig,
    /// Bumped on every configuration change, for compare-and-set edits.
    pub config_version: u64,
    /// The current primary grant, if any.
    pub primary: Option<PrimaryGrant>,
    /// The highest epoch ever granted (0 before the first grant). Never decreases.
    pub epoch: Epoch,
    /// Synchronous replication bookkeeping for the current epoch.
    pub sync: SyncState,
    /// A requested switchover not yet carried out.
    pub switchover: Option<SwitchoverRequest>,
    /// A requested manual failover not yet carried out.
    #[serde(default)]
    pub failover: Option<FailoverRequest>,
    /// Maintenance mode: agents leave Postgres alone and nobody fails over.
    pub paused: bool,
    /// Past primary grants, oldest first, at most `HISTORY_LIMIT`.
    pub history: Vec<HistoryEntry>,
    /// Every grant ever made, by reason (unlike `history`, never trimmed: for counters).
    #[serde(default)]
    pub grants: std::collections::BTreeMap<GrantReason, u64>,
    /// The latest scheduled base backup: which due time, who takes it, how it ended.
    #[serde(default)]
    pub scheduled_backup: Option<ScheduledBackup>,
    /// The newest base backup stored (scheduled or not), for status.
    #[serde(default)]
    pub last_backup: Option<BackupRecord>,
}

/// A stored base backup, as status shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Its id (`backup list`).
    pub id: String,
    /// The member that took it.
    pub member: MemberName,
    /// When it ended.
    pub at: UnixMillis,
}

/// One due time of `backup.schedule`, claimed by the coordinator for one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledBackup {
    /// The due time (the schedule's minute).
    pub due: UnixMillis,
    /// The member that takes it.
    pub member: MemberName,
    /// When it was claimed (a stalled claim is handed to another member).
    pub claimed_at: UnixMillis,
    /// How it ended: `Ok(backup id)` or `Err(why)`; `None` while it runs.
    pub outcome: Option<Result<String, String>>,
}

impl ClusterState {
    /// Applies one committed command. See `apply.rs` for the rules of each command.
    pub fn apply(&mut self, command: Command) -> CommandResult {
        apply::apply(self, command)
    }
}
