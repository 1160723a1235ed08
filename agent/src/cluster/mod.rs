//! The agent's gateway to the replicated cluster state: read what is applied, propose commands
//! (forwarded to the Raft leader when this agent is not it), join, remove and describe members.
//!
//! Owns the forwarding and retry policy around Raft writes. Must not decide *what* to propose:
//! callers (bootstrap, the HA loop, the management API) do.

mod bootstrap;
mod foreign;
mod members;
mod watch;

#[cfg(test)]
mod leader_wait_tests;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use pgquorum_core::state::{Command, CommandResult, MemberNode};
use pgquorum_proto::peer::peer_service_client::PeerServiceClient;
use pgquorum_proto::peer::{JoinRequest, ProposeRequest};
use tokio::time::Instant;

pub use bootstrap::{form_or_join, seed_cluster_state};
pub use foreign::refuse_foreign_data;
pub use watch::log_transitions;

use crate::raft::{Applied, RaftNode};

/// Why a proposal did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// No leader could be reached in time (no quorum, or an election in progress).
    #[error("no Raft leader reachable within {0:?}: is a majority of members up and connected?")]
    NoLeader(Duration),
    /// Talking to the leader failed.
    #[error("forwarding to the leader failed: {0}")]
    Forward(String),
    /// The local Raft node stopped.
    #[error("the local Raft node stopped: {0}")]
    Fatal(String),
}

/// Members as the Raft membership lists them.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    /// Every node, voter or learner.
    pub nodes: BTreeMap<u64, MemberNode>,
    /// Voting members.
    pub voters: BTreeSet<u64>,
}

impl Membership {
    /// The node id of the member called `name`.
    pub fn id_of(&self, name: &str) -> Option<u64> {
        self.nodes.iter().find(|(_, n)| n.name.as_str() == name).map(|(id, _)| *id)
    }
}

/// Handle to the local Raft member and, through it, the cluster.
#[derive(Clone)]
pub struct Cluster {
    /// The Raft member.
    pub node: RaftNode,
    /// This agent's own addresses.
    pub me: Arc<MemberNode>,
    /// How long writes wait for a leader.
    pub write_timeout: Duration,
    /// Held for a whole membership change on the leader: openraft takes one at a time, and a
    /// retried join must not race the first attempt.
    pub membership_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Cluster {
    /// Wraps a started Raft member.
    pub fn new(node: RaftNode, me: MemberNode) -> Cluster {
        Cluster {
            node,
            me: Arc::new(me),
            write_timeout: Duration::from_secs(5),
            membership_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The latest applied cluster state.
    pub fn applied(&self) -> Arc<Applied> {
        self.node.sm.current()
    }

    /// A snapshot of openraft's metrics (cloned: holding the watch borrow blocks Raft).
    pub fn metrics(&self) -> openraft::RaftMetrics<crate::raft::TypeConfig> {
        self.node.raft.metrics().borrow_watched().clone()
    }

    /// Reads openraft's metrics under a borrow held only while `f` runs: for the few fields a
    /// hot path needs, without copying the whole struct (its maps and membership) each time.
    pub fn with_metrics<R>(&self, f: impl FnOnce(&openraft::RaftMetrics<crate::raft::TypeConfig>) -> R) -> R {
        let rx = self.node.raft.metrics();
        let m = rx.borrow_watched();
        f(&m)
    }

    /// Whether this agent is the Raft leader right now.
    pub fn is_leader(&self) -> bool {
        self.with_metrics(|m| m.state == ServerState::Leader)
    }

    /// The current membership (as this agent knows it).
    pub fn membership(&self) -> Membership {
        self.with_metrics(|m| {
            let mc = &m.membership_config;
            Membership {
                nodes: mc.nodes().map(|(id, n)| (*id, n.clone())).collect(),
                voters: mc.voter_ids().collect(),
            }
        })
    }

    /// The leader's id and addresses, when known.
    pub fn leader(&self) -> Option<(u64, MemberNode)> {
        self.with_metrics(|m| leader_node(m.current_leader, &m.membership_config))
    }

    /// The leader, waiting up to `within` while none is known: an election, or the hand-off that
    /// keeps Raft leadership off the primary's node after a switchover, leaves a member without
    /// a leader for some milliseconds, and an operator's call then should not fail.
    pub async fn leader_within(&self, within: Duration) -> Option<(u64, MemberNode)> {
        let mut server = self.node.raft.server_metrics();
        let deadline = Instant::now() + within;
        loop {
            let found = {
                let s = server.borrow_watched();
                leader_node(s.current_leader, &s.membership_config)
            };
            if found.is_some() {
                return found;
            }
            match tokio::time::timeout_at(deadline, server.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    /// How long a call waits for a leader before saying none is known: two election timeouts.
    pub fn leader_wait(&self) -> Duration {
        Duration::from_millis(2 * self.node.raft.config().election_timeout_max)
    }

    /// How old a peer's last acknowledged heartbeat may look on the leader while the peer
    /// answers every one, and never less than `floor`: three heartbeat intervals (the
    /// interval, up to one more before openraft publishes an acknowledgement, which it does
    /// about once per heartbeat, and the round trip; third_party/openraft/README-pgquorum.md,
    /// item 6).
    pub fn answered_within(&self, floor: Duration) -> Duration {
        floor.max(Duration::from_millis(3 * self.node.raft.config().heartbeat_interval))
    }

    /// On the leader: the peers that answered a heartbeat within `within` (empty elsewhere).
    pub fn answering(&self, within: Duration) -> BTreeSet<u64> {
        self.with_metrics(|m| {
            m.heartbeat
                .iter()
                .flatten()
                .filter(|(id, at)| {
                    **id != m.id && at.as_ref().is_some_and(|t| openraft::Instant::elapsed(&**t) <= within)
                })
                .map(|(id, _)| *id)
                .collect()
        })
    }

    /// A peer client for `addr`.
    pub fn peer_client(&self, addr: &str) -> Result<PeerServiceClient<crate::raft::PeerChannel>, String> {
        Ok(PeerServiceClient::new(self.node.channels.get(addr)?))
    }

    /// Proposes `cmd` and waits until it is committed and applied; returns the command's result
    /// and its log index. Retries through elections until `write_timeout`.
    pub async fn propose(&self, cmd: Command) -> Result<(CommandResult, u64), ProposeError> {
        let deadline = Instant::now() + self.write_timeout;
        loop {
            match self.try_propose(&cmd).await {
                Ok(r) => return Ok(r),
                Err(Attempt::Fatal(e)) => return Err(ProposeError::Fatal(e)),
                Err(Attempt::Retry(why)) => {
                    if Instant::now() >= deadline {
                        return Err(match why {
                            Some(e) => ProposeError::Forward(e),
                            None => ProposeError::NoLeader(self.write_timeout),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Proposes `cmd` on this node as the Raft leader of `term`, never forwarding it and never
    /// retrying. A coordinator's decisions rest on what it holds in memory as that leader (the
    /// confirmations it gave, its failover handshake), so only that leader may commit them: a
    /// leader that was frozen or cut off, and still believes it leads an old term, would
    /// otherwise have another leader commit a decision taken on its stale memory (an expiry of a
    /// lease the new leader kept renewing). Written here, the entry commits only if a quorum
    /// still accepts `term`.
    pub async fn propose_as_leader(&self, cmd: Command, term: u64) -> Result<(CommandResult, u64), String> {
        let current = self.with_metrics(|m| m.current_term);
        if current != term || !self.is_leader() {
            return Err(format!("no longer the Raft leader of term {term} (term {current})"));
        }
        let resp = self.node.raft.client_write(cmd).await.map_err(|e| match e.forward_to_leader() {
            Some(_) => format!("no longer the Raft leader of term {term}"),
            None => e.to_string(),
        })?;
        Ok((resp.data, resp.log_id.index))
    }

    async fn try_propose(&self, cmd: &Command) -> Result<(CommandResult, u64), Attempt> {
        let leader = self.leader();
        match leader {
            Some((id, _)) if id == self.node.ident.node_id => {
                match self.node.raft.client_write(cmd.clone()).await {
                    Ok(resp) => Ok((resp.data, resp.log_id.index)),
                    Err(e) if e.forward_to_leader().is_some() => Err(Attempt::Retry(None)),
                    Err(e) => Err(Attempt::Fatal(e.to_string())),
                }
            }
            Some((_, node)) => {
                let mut client = self.peer_client(&node.grpc).map_err(|e| Attempt::Retry(Some(e)))?;
                let command = serde_json::to_vec(cmd).map_err(|e| Attempt::Fatal(e.to_string()))?;
                let mut req = tonic::Request::new(ProposeRequest {
                    cluster_name: self.node.ident.cluster_name.to_string(),
                    command,
                });
                req.set_timeout(self.write_timeout);
                let reply = client
                    .propose(req)
                    .await
                    .map_err(|s| {
                        Attempt::Retry(Some(format!("{} at {}: {}", node.name, node.grpc, s.message())))
                    })?
                    .into_inner();
                let result =
                    serde_json::from_slice(&reply.result).map_err(|e| Attempt::Fatal(e.to_string()))?;
                Ok((result, reply.log_index))
            }
            None => Err(Attempt::Retry(None)),
        }
    }

    /// Asks the leader to add `node` (learner first, voter once caught up).
    pub async fn join(&self, node_id: u64, node: MemberNode) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let res = match self.leader() {
                Some((id, _)) if id == self.node.ident.node_id => {
                    members::join_as_leader(self, node_id, node.clone()).await
                }
                Some((_, leader)) => self.join_via(&leader.grpc, node_id, &node).await,
                None => Err("no leader known yet".to_string()),
            };
            match res {
                Ok(()) => return Ok(()),
                Err(e) if e.starts_with("refused:") || Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::debug!("join of {} not done yet: {e}", node.name);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Sends a join request to the agent at `addr`, which routes it to its leader.
    pub async fn join_via(&self, addr: &str, node_id: u64, node: &MemberNode) -> Result<(), String> {
        let mut client = self.peer_client(addr)?;
        let body = JoinRequest {
            cluster_name: self.node.ident.cluster_name.to_string(),
            node_id,
            node: serde_json::to_vec(node).map_err(|e| e.to_string())?,
        };
        client.join(body).await.map(|_| ()).map_err(|s| crate::raft::status_text(&s))
    }

    /// Removes the member called `name` (leader only; others forward through the API layer).
    pub async fn remove(&self, name: &str) -> Result<Vec<String>, String> {
        members::remove_as_leader(self, name).await
    }
}

enum Attempt {
    /// Try again (no leader yet, or forwarding failed with this message).
    Retry(Option<String>),
    /// Give up.
    Fatal(String),
}

/// The leader's id and addresses, from a metrics snapshot's leader and membership.
fn leader_node(id: Option<u64>, membership: &crate::raft::StoredMembership) -> Option<(u64, MemberNode)> {
    let id = id?;
    Some((id, membership.get_node(&id)?.clone()))
}
