//! The peer service: hello (discovery), join, and proposals forwarded from other agents.
//!
//! Owns decoding and the cluster check for agent-to-agent calls.

use std::sync::Arc;
use std::time::Duration;

use pgquorum_core::state::{Command, MemberNode};
use pgquorum_core::{Epoch, MemberName};
use pgquorum_proto::peer::peer_service_server::PeerService;
use pgquorum_proto::peer::{
    HelloReply, HelloRequest, JoinReply, JoinRequest, MemberStatusReply, MemberStatusRequest, ProposeReply,
    ProposeRequest, RenewLeaseReply, RenewLeaseRequest, StopStreamingReply, StopStreamingRequest,
};
use tonic::{Request, Response, Status};

use crate::cluster::Cluster;
use crate::ha::Shared;

/// Serves the peer service.
pub struct PeerApi {
    cluster: Cluster,
    shared: Arc<Shared>,
}

impl PeerApi {
    /// Wraps the cluster handle and the HA loop's shared state.
    pub fn new(cluster: Cluster, shared: Arc<Shared>) -> PeerApi {
        PeerApi { cluster, shared }
    }

    fn check(&self, cluster_name: &str) -> Result<(), Status> {
        self.cluster.node.ident.check_peer(cluster_name, "").map_err(Status::failed_precondition)
    }

    /// Stores the report a peer sent with its long poll request `seq` (`ha::peers::follow`), and
    /// wakes the HA loop when its content changed. Not stored, and the long poll answered all
    /// the same: a report that does not parse (an agent of a newer version; the asker then
    /// counts on its own answers no more than before), one of this member or of a non-member (one
    /// that joined before this member applied its addition), or one from an older request than
    /// one already taken.
    fn take_pushed(&self, bytes: &[u8], seq: u64) {
        let report: pgquorum_core::ha::observation::Report = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("not storing the report sent with a long poll: it does not parse: {e}");
                return;
            }
        };
        let other = report.member != self.cluster.node.ident.member
            && self.cluster.membership().nodes.values().any(|n| n.name == report.member);
        if !other {
            tracing::debug!("not storing {}'s report: not another member of this cluster", report.member);
        } else if self.shared.reports.put_pushed(report, self.shared.now(), seq) == Some(true) {
            self.shared.wake.notify_one();
        }
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
            node: serde_json::to_vec(&*self.cluster.me).map_err(|e| Status::internal(e.to_string()))?,
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

    async fn member_status(
        &self,
        req: Request<MemberStatusRequest>,
    ) -> Result<Response<MemberStatusReply>, Status> {
        let req = req.into_inner();
        self.check(&req.cluster_name)?;
        if !req.report.is_empty() {
            self.take_pushed(&req.report, req.seq);
        }
        if req.known != 0 && req.wait_ms > 0 {
            // Long poll: wait for a different report, at most `wait_ms` (bounded here too).
            let wait = Duration::from_millis(u64::from(req.wait_ms)).min(Duration::from_secs(5));
            // The keepalive answer goes out with the first Raft message after `wait` (at most
            // `timer::BEAT_WAIT` + 64 ms later than asked): no wake-up of its own (`timer`).
            let until = tokio::time::Instant::now() + wait;
            let mut digest = self.shared.digest.subscribe();
            tokio::select! {
                _ = crate::timer::at_beat(until) => {}
                _ = digest.wait_for(|d| *d != req.known) => {}
            }
        }
        let (report, digest) = self.shared.current_report();
        let report = report.ok_or_else(|| Status::unavailable("no report yet (starting)"))?;
        let bytes = serde_json::to_vec(&report).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(MemberStatusReply { report: bytes, digest }))
    }

    async fn renew_lease(
        &self,
        req: Request<RenewLeaseRequest>,
    ) -> Result<Response<RenewLeaseReply>, Status> {
        let req = req.into_inner();
        self.check(&req.cluster_name)?;
        let member = MemberName::new(req.member).map_err(Status::invalid_argument)?;
        let shared = self.shared.clone();
        let ttl = self
            .shared
            .coord
            .confirm(&self.cluster, &member, Epoch(req.epoch), !req.periodic, move || shared.now())
            .await
            .map_err(Status::failed_precondition)?;
        Ok(Response::new(RenewLeaseReply { ttl_ms: ttl.as_millis() as u64 }))
    }

    async fn stop_streaming(
        &self,
        req: Request<StopStreamingRequest>,
    ) -> Result<Response<StopStreamingReply>, Status> {
        let req = req.into_inner();
        self.check(&req.cluster_name)?;
        let epoch = Epoch(req.epoch);
        let mut published = self.shared.published.subscribe();
        self.shared.stop_streaming(epoch);
        let stopped = |r: &Option<pgquorum_core::ha::observation::Report>| {
            r.as_ref().is_some_and(|r| {
                r.stop_streaming_for.is_some_and(|e| e >= epoch)
                    && !r.postgres.running().is_some_and(|p| p.streaming)
            })
        };
        let _ =
            tokio::time::timeout(std::time::Duration::from_millis(600), published.wait_for(stopped)).await;
        let report = published.borrow().clone();
        let bytes = serde_json::to_vec(&report).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(StopStreamingReply { report: bytes }))
    }
}
