//! Membership changes on the leader: add a joining member (learner, then voter), replace a
//! member whose data was wiped (same name, new node id), remove a member.
//!
//! Owns the safety checks around those changes. Errors that the caller must not retry start
//! with "refused:".

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::errors::{ChangeMembershipError, ClientWriteError};
use pgquorum_core::state::MemberNode;

use super::Cluster;
use crate::raft::TypeConfig;

type WriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;

/// Whether the latest membership entry is applied here (no change in flight).
fn membership_settled(c: &Cluster) -> bool {
    let m = c.metrics();
    let applied = m.last_applied.map(|l| l.index);
    m.membership_config.log_id().is_none_or(|id| applied.is_some_and(|a| a >= id.index))
}

/// Changes membership, waiting (up to 10 s) for a change still in progress to commit first: a
/// learner just promoted to voter goes through a joint configuration for a moment.
async fn change(c: &Cluster, members: ChangeMembers<u64, MemberNode>) -> Result<WriteResponse, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Asking while a change is still in flight makes openraft log an error: wait for the
        // current membership entry to be applied first.
        while !membership_settled(c) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match c.node.raft.change_membership(members.clone(), false).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                let in_progress = matches!(
                    e.api_error(),
                    Some(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_)))
                );
                if !in_progress || tokio::time::Instant::now() >= deadline {
                    return Err(e.to_string());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Whether the agent at `node`'s address still answers as node `id` (then its name is taken).
async fn still_answers_as(c: &Cluster, node: &MemberNode, id: u64) -> bool {
    let Ok(mut client) = c.peer_client(&node.grpc) else { return false };
    let mut req = tonic::Request::new(pgquorum_proto::peer::HelloRequest {
        cluster_name: c.node.ident.cluster_name.to_string(),
        from_member: c.me.name.to_string(),
    });
    req.set_timeout(Duration::from_secs(1));
    matches!(client.hello(req).await, Ok(r) if r.get_ref().node_id == id)
}

pub(super) async fn join_as_leader(c: &Cluster, node_id: u64, node: MemberNode) -> Result<(), String> {
    let _one_at_a_time = c.membership_lock.lock().await;
    let membership = c.membership();
    if membership.voters.contains(&node_id) {
        return Ok(());
    }
    if let Some((&old, old_node)) =
        membership.nodes.iter().find(|(id, n)| n.name == node.name && **id != node_id)
    {
        if still_answers_as(c, old_node, old).await {
            return Err(format!(
                "refused: member name {} is already used by a live node ({old:016x}); give the new agent another \
                 name, or stop the other agent first",
                node.name
            ));
        }
        tracing::info!(
            "{} rejoins with new node id {node_id:016x}; removing its old id {old:016x}",
            node.name
        );
        let change = if membership.voters.contains(&old) {
            ChangeMembers::RemoveVoters(BTreeSet::from([old]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([old]))
        };
        self::change(c, change).await?;
    }
    if !membership.nodes.contains_key(&node_id) {
        tracing::info!("adding {} ({node_id:016x}) as a learner", node.name);
        let add = c.node.raft.add_learner(node_id, node.clone(), true);
        tokio::time::timeout(Duration::from_secs(20), add)
            .await
            .map_err(|_| format!("{} did not catch up within 20s", node.name))?
            .map_err(|e| e.to_string())?;
    }
    tracing::info!("promoting {} ({node_id:016x}) to voter", node.name);
    change(c, ChangeMembers::AddVoterIds(BTreeSet::from([node_id]))).await?;
    Ok(())
}

pub(super) async fn remove_as_leader(c: &Cluster, name: &str) -> Result<Vec<String>, String> {
    let _one_at_a_time = c.membership_lock.lock().await;
    let membership = c.membership();
    let Some(id) = membership.id_of(name) else {
        let names: Vec<&str> = membership.nodes.values().map(|n| n.name.as_str()).collect();
        return Err(format!("refused: no member named {name:?}; members are {}", names.join(", ")));
    };
    let change = if membership.voters.contains(&id) {
        if membership.voters.len() == 1 {
            return Err(format!(
                "refused: {name} is the last voter; a cluster cannot remove its last member"
            ));
        }
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    let resp = self::change(c, change).await?;
    let nodes: BTreeMap<u64, MemberNode> = resp
        .membership
        .as_ref()
        .map(|m| m.nodes().map(|(i, n)| (*i, n.clone())).collect())
        .unwrap_or_default();
    let voters: Vec<String> = resp
        .membership
        .map(|m| m.voter_ids().filter_map(|v| nodes.get(&v).map(|n| n.name.to_string())).collect())
        .unwrap_or_default();
    Ok(voters)
}
