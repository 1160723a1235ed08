//! The AppendEntries stream against a real tonic server on loopback: one stream for many
//! calls, a new one after an abandoned call or a stream the peer ended, plain calls for a peer
//! that does not know the stream, and binary heartbeats only on a stream whose receiver said it
//! reads them.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::Stream;
use pgquorum_proto::raft::raft_service_server::{RaftService, RaftServiceServer};
use pgquorum_proto::raft::{RaftReply, RaftRequest};
use tonic::{Request, Response, Status, Streaming};

use super::{AppendStream, PeerChannel};
use crate::raft::network::Channels;

/// Echoes each request's payload ("binary" for a binary heartbeat); one that says "slow" is
/// answered after a second, and after one that says "last" the stream ends (as when the peer
/// restarts). With `binary`, its replies say it reads binary heartbeats.
#[derive(Clone, Default)]
struct Echo {
    opened: Arc<AtomicUsize>,
    streams: bool,
    binary: bool,
}

type Replies = Pin<Box<dyn Stream<Item = Result<RaftReply, Status>> + Send>>;

fn no<T>() -> Result<T, Status> {
    Err(Status::unimplemented("not in this test"))
}

#[tonic::async_trait]
impl RaftService for Echo {
    type AppendEntriesStreamStream = Replies;

    async fn append_entries_stream(
        &self,
        req: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<Replies>, Status> {
        if !self.streams {
            return Err(Status::unimplemented("an agent that predates the stream"));
        }
        self.opened.fetch_add(1, Ordering::SeqCst);
        let binary = self.binary;
        let replies = futures::stream::unfold(Some(req.into_inner()), move |inbound| async move {
            let mut inbound = inbound?;
            let body = inbound.message().await.ok()??;
            if body.payload == b"slow" {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let next = (body.payload != b"last").then_some(inbound);
            let payload = if body.heartbeat.is_some() { b"binary".to_vec() } else { body.payload };
            Some((Ok(RaftReply { payload, reads_heartbeats: binary, ..Default::default() }), next))
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn append_entries(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        no()
    }
    async fn vote(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        no()
    }
    async fn pre_vote(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        no()
    }
    async fn install_snapshot(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        no()
    }
    async fn transfer_leader(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        no()
    }
}

/// Serves `echo` on a loopback port until the returned handle is aborted.
async fn serve(echo: Echo, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        let server = tonic::transport::Server::builder().add_service(RaftServiceServer::new(echo));
        server.serve_with_incoming(incoming).await.expect("serve");
    })
}

async fn started(echo: Echo) -> (PeerChannel, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = serve(echo, listener).await;
    let channel = Channels::new(None, None).expect("channels").get(&addr.to_string()).expect("channel");
    (channel, server)
}

/// Builds a request carrying `payload`, whatever the stream reads.
fn body(payload: &[u8]) -> impl Fn(bool) -> Result<RaftRequest, Status> {
    let payload = payload.to_vec();
    move |_| Ok(RaftRequest { payload: payload.clone(), ..Default::default() })
}

async fn answer(stream: &mut AppendStream, channel: &PeerChannel, payload: &[u8]) -> Vec<u8> {
    let reply = stream.call(channel, body(payload)).await.expect("call").expect("streamed");
    reply.payload
}

#[tokio::test]
async fn many_calls_share_one_stream_and_each_gets_its_own_answer() {
    let echo = Echo { streams: true, ..Default::default() };
    let (channel, _server) = started(echo.clone()).await;
    let mut stream = AppendStream::default();
    for i in 0..5u8 {
        assert_eq!(answer(&mut stream, &channel, &[i]).await, vec![i]);
    }
    assert_eq!(echo.opened.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_abandoned_call_leaves_its_answer_on_a_stream_that_is_not_used_again() {
    let echo = Echo { streams: true, ..Default::default() };
    let (channel, _server) = started(echo.clone()).await;
    let mut stream = AppendStream::default();
    assert_eq!(answer(&mut stream, &channel, b"first").await, b"first");
    let abandoned =
        tokio::time::timeout(Duration::from_millis(100), stream.call(&channel, body(b"slow"))).await;
    assert!(abandoned.is_err(), "the slow call should have been cut off");
    // The late answer to "slow" must not be taken for this call's.
    assert_eq!(answer(&mut stream, &channel, b"next").await, b"next");
    assert_eq!(echo.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_stream_the_peer_ended_is_replaced_within_the_next_call() {
    let echo = Echo { streams: true, ..Default::default() };
    let (channel, _server) = started(echo.clone()).await;
    let mut stream = AppendStream::default();
    assert_eq!(answer(&mut stream, &channel, b"last").await, b"last");
    assert_eq!(answer(&mut stream, &channel, b"after").await, b"after");
    assert_eq!(echo.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_peer_without_the_stream_gets_plain_calls() {
    let (channel, _server) = started(Echo::default()).await;
    let mut stream = AppendStream::default();
    assert!(stream.call(&channel, body(b"x")).await.expect("no error").is_none());
    assert!(matches!(stream, AppendStream::Unsupported));
    assert!(stream.call(&channel, body(b"y")).await.expect("no error").is_none(), "not asked again");
}

#[tokio::test]
async fn binary_heartbeats_go_only_on_a_stream_whose_receiver_reads_them() {
    let echo = Echo { streams: true, binary: true, ..Default::default() };
    let (channel, _server) = started(echo.clone()).await;
    let mut stream = AppendStream::default();
    let asked = std::sync::Mutex::new(Vec::new());
    let heartbeat = |payload: &'static [u8]| {
        let asked = &asked;
        move |binary: bool| {
            asked.lock().expect("lock").push(binary);
            let heartbeat = binary.then(pgquorum_proto::raft::Heartbeat::default);
            Ok(RaftRequest { payload: payload.to_vec(), heartbeat, ..Default::default() })
        }
    };
    let mut call = async |payload| {
        stream.call(&channel, heartbeat(payload)).await.expect("call").expect("streamed").payload
    };
    // A new stream: JSON, until the first reply says binary is read.
    assert_eq!(call(b"first").await, b"first");
    assert_eq!(call(b"second").await, b"binary");
    // The stream ends after this one; the call after it goes on a new stream, in JSON again.
    assert_eq!(call(b"last").await, b"binary");
    assert_eq!(call(b"again").await, b"again");
    assert_eq!(*asked.lock().expect("lock"), [false, true, true, true, false]);
    assert_eq!(echo.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_receiver_that_does_not_say_it_reads_binary_heartbeats_never_gets_one() {
    let echo = Echo { streams: true, ..Default::default() };
    let (channel, _server) = started(echo).await;
    let mut stream = AppendStream::default();
    for _ in 0..3 {
        let make = |binary: bool| {
            assert!(!binary, "offered binary on a stream that never said it reads it");
            Ok(RaftRequest { payload: b"json".to_vec(), ..Default::default() })
        };
        assert_eq!(stream.call(&channel, make).await.expect("call").expect("streamed").payload, b"json");
    }
}
