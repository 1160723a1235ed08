//! Client side of the Raft transport: openraft's network traits over tonic.
//!
//! Owns one cached channel per peer address (reconnecting on its own), per-call deadlines from
//! openraft's `RPCOption` (AppendEntries, heartbeats included, goes on a stream of its own:
//! `append_stream`), and the mapping of transport failures to openraft's error kinds
//! (refused connection: Unreachable, so openraft backs off; deadline: Timeout; other: Network).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RPCTypes};
use pgquorum_core::state::MemberNode;
use pgquorum_proto::auth::AttachToken;
use pgquorum_proto::raft::raft_service_client::RaftServiceClient;
use pgquorum_proto::raft::{RaftReply, RaftRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::auth::tls::TlsMaterial;

use super::append_stream::AppendStream;
use super::identity::Identity;
use super::lease_mail::LeaseMail;
use super::types::{Snapshot, TypeConfig, Vote};

/// A channel to another agent: it carries this agent's token on every call (and, with mutual
/// TLS, presents this agent's certificate), so peers and forwarded operator calls authenticate.
pub type PeerChannel = InterceptedService<Channel, AttachToken>;

/// Cached gRPC channels, one per peer address. Channels connect lazily and reconnect by
/// themselves; a call on a dead peer fails fast with `Unavailable`.
#[derive(Clone, Default)]
pub struct Channels {
    inner: Arc<Mutex<HashMap<String, PeerChannel>>>,
    token: AttachToken,
    tls: Option<TlsMaterial>,
}

impl Channels {
    /// Channels that send `token` and, when given, speak TLS with `tls`.
    pub fn new(token: Option<&str>, tls: Option<TlsMaterial>) -> Result<Channels, String> {
        Ok(Channels { inner: Default::default(), token: AttachToken::new(token)?, tls })
    }

    /// The channel for `addr` (host:port), created on first use.
    pub fn get(&self, addr: &str) -> Result<PeerChannel, String> {
        let mut map = self.inner.lock().expect("channel cache lock is never poisoned");
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ch = self.connect(addr)?;
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// A new channel for `addr` (a new connection), which also replaces the cached one: a call
    /// retried after a network cut must not queue behind a request stuck in TCP retransmission
    /// on the old connection.
    pub fn reconnect(&self, addr: &str) -> Result<PeerChannel, String> {
        let ch = self.connect(addr)?;
        let mut map = self.inner.lock().expect("channel cache lock is never poisoned");
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    fn connect(&self, addr: &str) -> Result<PeerChannel, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("invalid peer address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            endpoint =
                endpoint.tls_config(tls.client()).map_err(|e| format!("TLS settings for {addr}: {e}"))?;
        }
        Ok(InterceptedService::new(endpoint.connect_lazy(), self.token.clone()))
    }
}

/// Creates openraft's per-peer clients.
#[derive(Clone)]
pub struct NetworkFactory {
    pub(crate) ident: Identity,
    pub(crate) channels: Channels,
    pub(crate) mail: Arc<LeaseMail>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerRaft;

    async fn new_client(&mut self, target: u64, node: &MemberNode) -> PeerRaft {
        PeerRaft {
            channel: self.channels.get(&node.grpc),
            target,
            ident: self.ident.clone(),
            append: AppendStream::Closed,
            mail: self.mail.clone(),
        }
    }
}

/// Raft RPCs to one peer.
pub struct PeerRaft {
    channel: Result<PeerChannel, String>,
    target: u64,
    ident: Identity,
    append: AppendStream,
    mail: Arc<LeaseMail>,
}

#[derive(Serialize, serde::Deserialize)]
pub(crate) struct SnapshotEnvelope {
    pub vote: Vote,
    pub meta: super::types::SnapshotMeta,
    pub data: Vec<u8>,
}

type CallFuture = std::pin::Pin<
    Box<dyn Future<Output = Result<tonic::Response<pgquorum_proto::raft::RaftReply>, tonic::Status>> + Send>,
>;

impl PeerRaft {
    fn channel(&self) -> Result<PeerChannel, RPCError<TypeConfig>> {
        self.channel.clone().map_err(|e| RPCError::Unreachable(Unreachable::new(&io_err(e))))
    }

    /// A request to the peer with no message in it yet.
    fn header(&self) -> RaftRequest {
        RaftRequest {
            cluster_name: self.ident.cluster_name.to_string(),
            from_node: self.ident.node_id,
            cluster_id: self.ident.cluster_id(),
            to_node: self.target,
            ..Default::default()
        }
    }

    /// A request to the peer carrying `req` as JSON.
    fn envelope<Req: Serialize>(&self, req: &Req) -> Result<RaftRequest, RPCError<TypeConfig>> {
        let payload = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        Ok(RaftRequest { payload, ..self.header() })
    }

    fn timeout(&self, action: RPCTypes, ttl: Duration) -> RPCError<TypeConfig> {
        RPCError::Timeout(Timeout { action, id: self.ident.node_id, target: self.target, timeout: ttl })
    }

    async fn call<Req, Resp>(
        &mut self,
        action: RPCTypes,
        req: &Req,
        ttl: Duration,
        send: impl FnOnce(RaftServiceClient<PeerChannel>, tonic::Request<RaftRequest>) -> CallFuture,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let channel = self.channel()?;
        let mut request = tonic::Request::new(self.envelope(req)?);
        request.set_timeout(ttl);
        let client = RaftServiceClient::new(channel);
        match tokio::time::timeout(ttl, send(client, request)).await {
            Err(_) => Err(self.timeout(action, ttl)),
            Ok(Err(status)) => Err(map_status(status)),
            Ok(Ok(r)) => decode(r.into_inner()),
        }
    }
}

/// The openraft result a peer sent back.
fn decode<Resp: DeserializeOwned>(reply: RaftReply) -> Result<Resp, RPCError<TypeConfig>> {
    let result: Result<Resp, String> =
        serde_json::from_slice(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    result.map_err(|remote| RPCError::Network(NetworkError::new(&io_err(remote))))
}

/// A failed call's message with its causes. tonic says only "transport error" when, say, a peer
/// refused this agent's certificate; the reason is in the source chain.
pub fn status_text(status: &tonic::Status) -> String {
    let mut out = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

fn io_err(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

fn map_status(status: tonic::Status) -> RPCError<TypeConfig> {
    let err = io_err(format!("{}: {}", status.code(), status_text(&status)));
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::FailedPrecondition => {
            RPCError::Unreachable(Unreachable::new(&err))
        }
        _ => RPCError::Network(NetworkError::new(&err)),
    }
}

impl PeerRaft {
    /// One AppendEntries (a heartbeat when it carries no entries): on the stream, else as a
    /// plain call.
    async fn send_append(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.hard_ttl();
        if !matches!(self.append, AppendStream::Unsupported) {
            let channel = self.channel()?;
            // Only peers that know the stream carry renewals, so only the stream carries notes.
            let note = self.mail.note_for(self.target, &rpc.vote);
            let (header, heartbeat) = (self.header(), super::heartbeat::encode(&rpc));
            let make = |binary: bool| {
                let mut body = match heartbeat.as_ref().filter(|_| binary) {
                    Some(hb) => RaftRequest { heartbeat: Some(*hb), ..header.clone() },
                    None => {
                        let payload =
                            serde_json::to_vec(&rpc).map_err(|e| tonic::Status::internal(e.to_string()))?;
                        RaftRequest { payload, ..header.clone() }
                    }
                };
                body.lease_note = note;
                Ok(body)
            };
            match tokio::time::timeout(ttl, self.append.call(&channel, make)).await {
                Err(_) => {
                    self.append = AppendStream::Closed;
                    return Err(self.timeout(RPCTypes::AppendEntries, ttl));
                }
                Ok(Err(status)) => return Err(map_status(status)),
                Ok(Ok(Some(mut reply))) => {
                    if let Some(renewal) = reply.lease_renewal.take() {
                        let now = tokio::time::Instant::now();
                        self.mail.renewal_arrived(self.target, renewal, now, rpc.vote);
                    }
                    if reply.success {
                        return Ok(AppendEntriesResponse::Success);
                    }
                    return decode(reply);
                }
                Ok(Ok(None)) => {} // the peer predates the stream
            }
        }
        self.call(RPCTypes::AppendEntries, &rpc, ttl, |mut c, r| {
            Box::pin(async move { c.append_entries(r).await })
        })
        .await
    }
}

impl RaftNetworkV2<TypeConfig> for PeerRaft {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let answer = self.send_append(rpc, option).await;
        // The answer is in: periodic work waiting for a wake-up runs in this one
        // (`timer::at_beat`).
        crate::timer::beat();
        answer
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RPCTypes::Vote, &rpc, option.hard_ttl(), |mut c, r| {
            Box::pin(async move { c.vote(r).await })
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RPCTypes::Vote, &rpc, option.hard_ttl(), |mut c, r| {
            Box::pin(async move { c.pre_vote(r).await })
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let env = SnapshotEnvelope { vote, meta: snapshot.meta, data: snapshot.snapshot };
        let call = self.call(RPCTypes::InstallSnapshot, &env, option.hard_ttl(), |mut c, r| {
            Box::pin(async move { c.install_snapshot(r).await })
        });
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = call => res.map_err(|e| match e {
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&io_err(r.to_string()))),
            }),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RPCTypes::TransferLeader, &req, option.hard_ttl(), |mut c, r| {
            Box::pin(async move { c.transfer_leader(r).await })
        })
        .await
    }
}
