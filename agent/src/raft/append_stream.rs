//! AppendEntries on one long-lived gRPC stream per openraft client (its heartbeats and its
//! replication), instead of one call per request.
//!
//! Owns the stream's life: opened on first use, one request in flight at a time, dropped on any
//! error or on a call abandoned midway (its answer would be read as the next one's), opened
//! again on the next call, and given up for a peer that answers Unimplemented (an agent that
//! predates the stream), whose caller then makes plain calls. A call on a stream that broke
//! since its last use (the peer restarted) is sent once more on a new one, as a plain call
//! would find the new connection; AppendEntries may be repeated (Raft makes it idempotent).

use pgquorum_proto::raft::raft_service_client::RaftServiceClient;
use pgquorum_proto::raft::{RaftReply, RaftRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use super::network::PeerChannel;

/// The AppendEntries stream of one openraft client.
#[derive(Default)]
pub enum AppendStream {
    /// None open: the next call opens one.
    #[default]
    Closed,
    Open(Box<Open>),
    /// The peer does not know the stream: plain calls only.
    Unsupported,
}

/// An open stream.
pub struct Open {
    requests: mpsc::Sender<RaftRequest>,
    replies: Streaming<RaftReply>,
    /// A request went out and its answer was not read: the call was abandoned.
    unanswered: bool,
    /// The receiver's last reply said it reads binary heartbeats (`heartbeat`).
    reads_heartbeats: bool,
}

impl AppendStream {
    /// Sends the body `make` builds on the stream and returns its answer, or `None` when the
    /// peer does not support the stream (make a plain call). `make` is told whether the stream
    /// it goes on reads binary heartbeats (its receiver said so in a reply; a new stream has
    /// not yet). On an error the stream is dropped.
    pub async fn call(
        &mut self,
        channel: &PeerChannel,
        make: impl Fn(bool) -> Result<RaftRequest, Status>,
    ) -> Result<Option<RaftReply>, Status> {
        if let AppendStream::Open(open) = self {
            if !open.unanswered
                && let Ok(reply) = open.exchange(make(open.reads_heartbeats)?).await
            {
                return Ok(Some(reply));
            }
            // Broken since its last use, or an answer is still owed to an abandoned call.
            *self = AppendStream::Closed;
        }
        if matches!(self, AppendStream::Unsupported) {
            return Ok(None);
        }
        let mut open = match open(channel).await {
            Ok(open) => open,
            Err(status) if status.code() == Code::Unimplemented => {
                *self = AppendStream::Unsupported;
                return Ok(None);
            }
            Err(status) => return Err(status),
        };
        let reply = open.exchange(make(false)?).await?;
        *self = AppendStream::Open(open);
        Ok(Some(reply))
    }
}

async fn open(channel: &PeerChannel) -> Result<Box<Open>, Status> {
    let (requests, queue) = mpsc::channel(1);
    let mut client = RaftServiceClient::new(channel.clone());
    let replies = client.append_entries_stream(ReceiverStream::new(queue)).await?.into_inner();
    Ok(Box::new(Open { requests, replies, unanswered: false, reads_heartbeats: false }))
}

impl Open {
    async fn exchange(&mut self, body: RaftRequest) -> Result<RaftReply, Status> {
        self.unanswered = true;
        if self.requests.send(body).await.is_err() {
            return Err(Status::unavailable("the AppendEntries stream was closed"));
        }
        let reply = self
            .replies
            .message()
            .await?
            .ok_or_else(|| Status::unavailable("the peer ended the AppendEntries stream"))?;
        self.unanswered = false;
        self.reads_heartbeats = reply.reads_heartbeats;
        Ok(reply)
    }
}

#[cfg(test)]
#[path = "append_stream_tests.rs"]
mod tests;
