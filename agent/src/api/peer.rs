//! The peer service: hello (discovery), join, and proposals forwarded from other agents.
//!
//! Owns decoding and the cluster check for agent-to-agent calls.

use pgquorum_core::state::{Command, MemberNode};
use pgquorum_proto::peer::peer_service_server::PeerService;
use pgquorum_proto::peer::{HelloReply, HelloRequest, JoinReply, JoinRequest, ProposeReply, ProposeRequest};
use tonic::{Request, Response, Status};

use crate::cluster::Cluster;

/// Serves the peer service.
pub struct PeerApi {
    cluster: Cluster,
}

impl PeerApi {
    /// Wraps the cluster handle.
    pub fn new(cluster: Cluster) -> PeerApi {
        PeerApi { cluster }
    }

    fn check(&self, cluster_name: &str) -> Result<(), Status> {
        self.cluster.node.ident.check_peer(cluster_name, "").map_err(Status::failed_precondition)
    }
}

#[tonic::async_trait]
impl PeerService for PeerApi {
    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let req = req.into_inner();
        self.check(&req.cluster_name)?;
        let ident = &self.cluster.node.ident;
        let initialized =
            self.cluster.node.raft.is_initialized().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let (leader_id, leader_address) =
            self.cluster.leader().map(|(id, n)| (id, n.grpc)).unwrap_or_default();
        Ok(Response::new(HelloReply {
            cluster_name: ident.cluster_name.to_string(),
            member: ident.member.to_string(),
            node_id: ident.node_id,
            cluster_id: ident.cluster_id(),
            initialized,
            leader_id,
            leader_address,
        }))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let req = req.into_inner();
        self.check(&req.cluster_name)?;
        let node: MemberNode = serde_json::from_slice(&req.node)
            .map_err(|e| Status::invalid_argument(format!("bad node: {e}")))?;
        self.cluster.join(req.node_id, node).await.map_err(Status::failed_precondition)?;
        let leader_id = self.cluster.leader().map(|(id, _)| id).unwrap_or_default();
        Ok(Response::new(JoinReply { cluster_id: self.cluster.node.ident.cluster_id(), leader_id }))
    }

    async fn propose(&self, req: Request<ProposeRequest>) -> Result<Response<ProposeReply>, Status> {
        let req = req.into_inner();
        self.check(&req.cluster_name)?;
        let cmd: Command = serde_json::from_slice(&req.command)
            .map_err(|e| Status::invalid_argument(format!("bad command: {e}")))?;
        if !self.cluster.is_leader() {
            return Err(Status::unavailable("not the Raft leader (leadership moved); retry"));
        }
        let resp =
            self.cluster.node.raft.client_write(cmd).await.map_err(|e| Status::unavailable(e.to_string()))?;
        let result = serde_json::to_vec(&resp.data).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ProposeReply { result, log_index: resp.log_id.index }))
    }
}
