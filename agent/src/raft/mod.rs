//! Raft: openraft type configuration, durable log and vote, state machine with snapshots, and
//! the gRPC transport between agents.
//!
//! Owns everything under `<data_dir>/raft/`. Must not decide what the cluster does; commands
//! arrive from the cluster module and their meaning is the core's.

mod append_stream;
mod heartbeat;
mod identity;
pub mod lease_mail;
mod log_store;
mod network;
mod record;
mod service;
mod state_machine;
mod types;

#[cfg(test)]
mod conformance_test;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use identity::{Identity, NodeFile};
pub use lease_mail::LeaseMail;
pub use log_store::{LogStore, OpenError};
pub use network::{Channels, NetworkFactory, PeerChannel, status_text};
pub use service::RaftGrpc;
pub use state_machine::{Applied, StateMachine};
pub use types::{LogId, Raft, StoredMembership, TypeConfig, Vote};

use pgquorum_core::MemberName;

/// Raft timers and log bounds (per agent, from configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftSettings {
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_max: Duration,
    /// Log entries between snapshots; older entries are then purged.
    pub snapshot_every: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            // Four of the runtime's 64 ms timer slots, so aligned heartbeats are always exactly
            // one interval apart (docs/decisions.md, "Default timers").
            heartbeat_interval: Duration::from_millis(256),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(400),
            snapshot_every: 1000,
        }
    }
}

impl RaftSettings {
    fn to_openraft(&self, cluster_name: &str) -> Result<openraft::Config, String> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: ms(self.heartbeat_interval),
            election_timeout_min: ms(self.election_timeout_min),
            election_timeout_max: ms(self.election_timeout_max),
            install_snapshot_timeout: 2000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: (self.snapshot_every / 2).max(10),
            enable_pre_vote: Some(true),
            // The state machine lives in memory: a restarted leader must not resume leadership
            // before it has replayed the log (openraft FAQ, reference rust-stack §4.7).
            enable_leader_restore: Some(false),
            // A member whose log tail was cut at start (a torn or truncated `raft/log`) answers
            // with a conflict below what the leader believed it matched; the leader then starts
            // replicating to it again from where they agree, instead of stalling (or, in debug
            // builds, panicking). A wiped member is not such a case: it comes back under a new
            // node id (docs/decisions.md).
            allow_log_reversion: Some(true),
            // The defaults (65536 slots) are sized for high-throughput stores; ours carries a few
            // decisions a minute.
            api_channel_size: Some(256),
            notification_channel_size: Some(256),
            state_machine_channel_size: Some(64),
            ..Default::default()
        };
        config.validate().map_err(|e| format!("invalid Raft settings: {e}"))
    }
}

/// Why the Raft node could not start. All of these need an operator, so they exit the agent.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory holds another member's or cluster's data, or is damaged.
    #[error("{0}")]
    Data(String),
    /// The settings are invalid.
    #[error("{0}")]
    Settings(String),
    /// openraft failed to start.
    #[error("starting Raft: {0}")]
    Raft(String),
}

/// A running Raft member.
#[derive(Clone)]
pub struct RaftNode {
    /// The openraft handle.
    pub raft: Raft,
    /// The state machine (read applied state here).
    pub sm: StateMachine,
    /// Who we are.
    pub ident: Identity,
    /// Channels to peers, shared with the rest of the agent.
    pub channels: Channels,
    /// Lease renewals carried on AppendEntries traffic.
    pub mail: Arc<LeaseMail>,
}

impl RaftNode {
    /// Opens `<data_dir>/raft` (creating it) and starts Raft.
    pub async fn open(
        data_dir: &Path,
        member: &MemberName,
        cluster_name: &str,
        settings: &RaftSettings,
        channels: Channels,
    ) -> Result<RaftNode, StartError> {
        let dir = data_dir.join("raft");
        std::fs::create_dir_all(&dir)
            .map_err(|e| StartError::Data(format!("cannot create {}: {e}", dir.display())))?;
        let node = identity::load_or_create(&dir, member, cluster_name).map_err(StartError::Data)?;
        let (log, repaired) = LogStore::open(&dir).map_err(|e| StartError::Data(e.to_string()))?;
        if let Some(what) = repaired {
            tracing::warn!("Raft log repaired: {what}");
        }
        let sm = StateMachine::open(&dir).map_err(StartError::Data)?;
        let ident = Identity::new(&node, sm.clone());
        let mail = Arc::new(LeaseMail::default());
        let network = NetworkFactory { ident: ident.clone(), channels: channels.clone(), mail: mail.clone() };
        let config = Arc::new(settings.to_openraft(cluster_name).map_err(StartError::Settings)?);
        let raft = openraft::Raft::new(node.node_id, config, network, log, sm.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        Ok(RaftNode { raft, sm, ident, channels, mail })
    }
}
