//! Builds the management `Status` answer from this agent's Raft metrics and applied state.

use openraft::ServerState;
use pgquorum_proto::management::{MemberStatus, RaftStatus, StatusReply};

use crate::cluster::Cluster;

/// This agent's own view of the cluster. Last-contact times are known only on the leader.
pub fn local_status(cluster: &Cluster) -> StatusReply {
    let m = cluster.metrics();
    let applied = cluster.applied();
    let membership = cluster.membership();
    let leader_id = m.current_leader.unwrap_or_default();
    let leader_name = membership.nodes.get(&leader_id).map(|n| n.name.to_string()).unwrap_or_default();
    let members = membership
        .nodes
        .iter()
        .map(|(id, node)| {
            let voter = membership.voters.contains(id);
            let raft_role = if *id == leader_id && leader_id != 0 {
                "leader"
            } else if *id == m.id && m.state == ServerState::Candidate {
                "candidate"
            } else if voter {
                "follower"
            } else {
                "learner"
            };
            let last_contact_ms = m
                .heartbeat
                .as_ref()
                .and_then(|hb| hb.get(id).cloned().flatten())
                .map(|at| openraft::Instant::elapsed(&*at).as_millis() as u64)
                .or_else(|| (*id == m.id && m.state == ServerState::Leader).then_some(0));
            let matched_index = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index)
                .or_else(|| (*id == m.id).then_some(m.last_log_index).flatten());
            MemberStatus {
                node_id: *id,
                name: node.name.to_string(),
                address: node.grpc.clone(),
                raft_role: raft_role.to_string(),
                voter,
                last_contact_ms,
                matched_index,
            }
        })
        .collect();
    StatusReply {
        cluster_name: cluster.node.ident.cluster_name.to_string(),
        cluster_id: applied.state.cluster_id.clone().unwrap_or_default(),
        raft: Some(RaftStatus {
            leader_id,
            leader_name,
            term: m.current_term,
            commit_index: m.local_committed.or(m.cluster_committed).map(|l| l.index).unwrap_or_default(),
            last_log_index: m.last_log_index.unwrap_or_default(),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or_default(),
            answered_by: cluster.me.name.to_string(),
        }),
        members,
        warning: String::new(),
    }
}
