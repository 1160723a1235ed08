//! Who this agent is: its node id (random, stored once in `raft/node.json`), member name and
//! cluster, and the check that refuses traffic and data from a different cluster.
//!
//! Owns `node.json`. Must not decide membership; that is the cluster module's job.

use std::io;
use std::path::Path;
use std::sync::Arc;

use pgquorum_core::MemberName;
use serde::{Deserialize, Serialize};

use super::StateMachine;
use super::record;

/// Contents of `raft/node.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeFile {
    /// Random Raft node id, never reused.
    pub node_id: u64,
    /// The member name this data belongs to.
    pub member: MemberName,
    /// The cluster this data belongs to.
    pub cluster_name: String,
}

/// Loads `dir/node.json`, creating it with a fresh random node id on first start. Refuses data
/// that belongs to another member or cluster.
pub fn load_or_create(dir: &Path, member: &MemberName, cluster_name: &str) -> Result<NodeFile, String> {
    let path = dir.join("node.json");
    match std::fs::read(&path) {
        Ok(buf) => {
            let f: NodeFile = serde_json::from_slice(&buf).map_err(|e| {
                format!("{} is unreadable ({e}); it identifies this member's Raft data", path.display())
            })?;
            if f.cluster_name != cluster_name {
                return Err(format!(
                    "data directory {} belongs to cluster {:?}, but this agent is configured for cluster {:?}. \
                     Point data_dir at this cluster's data, or set cluster to {:?} if that is what you meant",
                    dir.display(),
                    f.cluster_name,
                    cluster_name,
                    f.cluster_name
                ));
            }
            if &f.member != member {
                return Err(format!(
                    "data directory {} belongs to member {}, but this agent is configured as {member}. \
                     Each member needs its own data directory",
                    dir.display(),
                    f.member
                ));
            }
            Ok(f)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let node_id = loop {
                let id: u64 = rand::random();
                if id != 0 {
                    break id;
                }
            };
            let f = NodeFile { node_id, member: member.clone(), cluster_name: cluster_name.to_string() };
            let bytes = serde_json::to_vec_pretty(&f).map_err(|e| e.to_string())?;
            record::replace_durable(&path, &bytes)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(f)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// This agent's identity as carried on every peer RPC.
#[derive(Clone)]
pub struct Identity {
    /// Cluster name from configuration.
    pub cluster_name: Arc<str>,
    /// This agent's Raft node id.
    pub node_id: u64,
    /// This agent's member name.
    pub member: MemberName,
    sm: StateMachine,
}

impl Identity {
    /// Builds the identity; the cluster id is read from the applied state as it becomes known.
    pub fn new(node: &NodeFile, sm: StateMachine) -> Identity {
        Identity {
            cluster_name: node.cluster_name.as_str().into(),
            node_id: node.node_id,
            member: node.member.clone(),
            sm,
        }
    }

    /// The cluster id, empty before initialisation has been applied here.
    pub fn cluster_id(&self) -> String {
        self.sm.current().state.cluster_id.clone().unwrap_or_default()
    }

    /// Refuses a peer from another cluster.
    pub fn check_peer(&self, cluster_name: &str, cluster_id: &str) -> Result<(), String> {
        if cluster_name != &*self.cluster_name {
            return Err(format!(
                "cluster mismatch: {} belongs to cluster {:?}, the caller to {cluster_name:?}; check the peers setting",
                self.member, self.cluster_name
            ));
        }
        let mine = self.cluster_id();
        if !mine.is_empty() && !cluster_id.is_empty() && mine != cluster_id {
            return Err(format!(
                "cluster mismatch: {} belongs to cluster {:?} with id {mine}, the caller to id {cluster_id}: \
                 two clusters share a name; give them different names or separate their peers",
                self.member, self.cluster_name
            ));
        }
        Ok(())
    }
}
