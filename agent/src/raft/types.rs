//! openraft type configuration for pgquorum.
//!
//! Owns the binding of openraft's generic types to ours: log commands are the core's
//! `Command`, nodes are `MemberNode`, one leader per term (classic Raft, so "term" in status
//! means what operators expect).

use pgquorum_core::state::{Command, CommandResult, MemberNode};

openraft::declare_raft_types!(
    /// pgquorum's Raft types.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = MemberNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// A log position.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote (term, candidate, committed).
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// Membership as stored with a log id.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with its data (JSON of the cluster state).
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>;
/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig, super::StateMachine>;
