//! Server side of the Raft transport: hands peers' Raft RPCs to openraft.
//!
//! Owns decoding, the cluster check (traffic from another cluster is refused with a message that
//! says so) and encoding openraft's answers, and hands lease notes and renewals carried on
//! AppendEntries to the `LeaseMail` (only around an AppendEntries this member accepted). Must
//! not make decisions of its own.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use openraft::Snapshot as OpenraftSnapshot;
use openraft::raft::AppendEntriesResponse;
use pgquorum_proto::raft::raft_service_server::RaftService;
use pgquorum_proto::raft::{RaftReply, RaftRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status, Streaming};

use super::identity::Identity;
use super::lease_mail::LeaseMail;
use super::network::SnapshotEnvelope;
use super::types::{Raft, TypeConfig};

/// The tonic service wrapping the local Raft node.
#[derive(Clone)]
pub struct RaftGrpc {
    raft: Raft,
    ident: Identity,
    mail: Arc<LeaseMail>,
}

impl RaftGrpc {
    /// Wraps `raft`.
    pub fn new(raft: Raft, ident: Identity, mail: Arc<LeaseMail>) -> RaftGrpc {
        RaftGrpc { raft, ident, mail }
    }

    /// One AppendEntries, and, when it came on the stream (`carry`: the leader reads renewals
    /// only there), the lease mail around it: a note it carries confirms this member's renewal
    /// only if this member accepts it (its term is the current one and its log matches), and
    /// only the reply to an accepted one carries a renewal due now.
    async fn append(&self, mut body: RaftRequest, carry: bool) -> Result<RaftReply, Status> {
        let note = body.lease_note.take().filter(|_| carry);
        let binary = body.heartbeat.take();
        let answered_in_binary = binary.is_some();
        let rpc = match binary {
            Some(hb) => {
                self.check(&body)?;
                super::heartbeat::decode(hb)
            }
            None => self.decode_body(body)?,
        };
        let answer = self.raft.append_entries(rpc).await;
        let accepted =
            matches!(&answer, Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_)));
        let mut reply = append_reply(answer, answered_in_binary, carry)?;
        if accepted && carry {
            if let Some(note) = note {
                self.mail.note_accepted(&note);
            }
            reply.lease_renewal = self.mail.renewal_to_send(tokio::time::Instant::now());
        }
        Ok(reply)
    }

    fn decode<T: DeserializeOwned>(&self, req: Request<RaftRequest>) -> Result<T, Status> {
        self.decode_body(req.into_inner())
    }

    /// Refuses a message from another cluster, or meant for another node id.
    fn check(&self, body: &RaftRequest) -> Result<(), Status> {
        self.ident.check_peer(&body.cluster_name, &body.cluster_id).map_err(Status::failed_precondition)?;
        if body.to_node != self.ident.node_id {
            return Err(Status::failed_precondition(format!(
                "this is {} with node id {:016x}, not node {:016x}: that node's data was replaced",
                self.ident.member, self.ident.node_id, body.to_node
            )));
        }
        Ok(())
    }

    fn decode_body<T: DeserializeOwned>(&self, body: RaftRequest) -> Result<T, Status> {
        self.check(&body)?;
        serde_json::from_slice(&body.payload)
            .map_err(|e| Status::invalid_argument(format!("undecodable Raft message: {e}")))
    }
}

/// The reply to an AppendEntries: a success in binary when the request was a binary heartbeat
/// (`heartbeat`), else the JSON of the answer; on the stream (`carry`) it says that this member
/// reads binary heartbeats, so the sender uses them there (and only there).
fn append_reply<E: std::fmt::Display>(
    answer: Result<AppendEntriesResponse<TypeConfig>, E>,
    binary: bool,
    carry: bool,
) -> Result<RaftReply, Status> {
    let mut reply = match answer {
        Ok(AppendEntriesResponse::Success) if binary => RaftReply { success: true, ..Default::default() },
        answer => encode(answer)?,
    };
    reply.reads_heartbeats = carry;
    Ok(reply)
}

fn reply<T: Serialize, E: std::fmt::Display>(res: Result<T, E>) -> Result<Response<RaftReply>, Status> {
    encode(res).map(Response::new)
}

fn encode<T: Serialize, E: std::fmt::Display>(res: Result<T, E>) -> Result<RaftReply, Status> {
    let res = res.map_err(|e| e.to_string());
    let payload = serde_json::to_vec(&res).map_err(|e| Status::internal(e.to_string()))?;
    Ok(RaftReply { payload, ..Default::default() })
}

/// The answers on an AppendEntries stream, one per request, in order.
type AppendReplies = Pin<Box<dyn Stream<Item = Result<RaftReply, Status>> + Send>>;

impl RaftGrpc {
    /// Answers the next request on an AppendEntries stream; `None` once the caller closed it.
    /// An error is the stream's last item.
    async fn next_append(&self, inbound: &mut Streaming<RaftRequest>) -> Option<Result<RaftReply, Status>> {
        let body = match inbound.message().await {
            Ok(Some(body)) => body,
            Ok(None) => return None,
            Err(status) => return Some(Err(status)),
        };
        let reply = self.append(body, true).await;
        // Periodic work waiting for this wake-up runs in it (`timer::at_beat`).
        crate::timer::beat();
        Some(reply)
    }
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn append_entries(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let answer = self.append(req.into_inner(), false).await;
        crate::timer::beat();
        answer.map(Response::new)
    }

    type AppendEntriesStreamStream = AppendReplies;

    async fn append_entries_stream(
        &self,
        req: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<AppendReplies>, Status> {
        let state = Some((self.clone(), req.into_inner()));
        let replies = futures::stream::unfold(state, |state| async move {
            let (svc, mut inbound) = state?;
            let item = svc.next_append(&mut inbound).await?;
            // After an error the stream ends: the caller opens a new one.
            let next = item.is_ok().then_some((svc, inbound));
            Some((item, next))
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = self.decode(req)?;
        reply(self.raft.vote(rpc).await)
    }

    async fn pre_vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = self.decode(req)?;
        reply(self.raft.pre_vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let env: SnapshotEnvelope = self.decode(req)?;
        let snapshot = OpenraftSnapshot { meta: env.meta, snapshot: env.data };
        reply(self.raft.install_full_snapshot(env.vote, snapshot).await)
    }

    async fn transfer_leader(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = self.decode(req)?;
        reply(self.raft.handle_transfer_leader(rpc).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = Result<AppendEntriesResponse<TypeConfig>, String>;

    fn json(reply: &RaftReply) -> Answer {
        serde_json::from_slice(&reply.payload).expect("a JSON answer")
    }

    #[test]
    fn a_binary_heartbeat_that_succeeds_is_answered_in_binary() {
        let reply = append_reply::<String>(Ok(AppendEntriesResponse::Success), true, true).expect("a reply");
        assert!(reply.success && reply.payload.is_empty() && reply.reads_heartbeats);
    }

    #[test]
    fn any_other_answer_is_json_and_never_says_success() {
        let cases: [(Answer, bool); 4] = [
            (Ok(AppendEntriesResponse::Success), false),
            (Ok(AppendEntriesResponse::Conflict), true),
            (Ok(AppendEntriesResponse::PartialSuccess(None)), true),
            (Err("storage failed".into()), true),
        ];
        for (answer, binary) in cases {
            let expected = serde_json::to_value(answer.as_ref().map_err(|e| e.to_string())).expect("json");
            let reply = append_reply(answer, binary, true).expect("a reply");
            assert!(!reply.success);
            assert_eq!(serde_json::to_value(json(&reply)).expect("json"), expected);
        }
    }

    #[test]
    fn only_replies_on_the_stream_say_binary_heartbeats_are_read() {
        let plain =
            append_reply::<String>(Ok(AppendEntriesResponse::Success), false, false).expect("a reply");
        assert!(!plain.reads_heartbeats);
        let streamed =
            append_reply::<String>(Ok(AppendEntriesResponse::Conflict), false, true).expect("a reply");
        assert!(streamed.reads_heartbeats);
    }
}
