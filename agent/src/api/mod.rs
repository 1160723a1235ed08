//! The agent's gRPC endpoint: Raft transport, peer service and management API on one listener;
//! and (in `http`) its HTTP endpoint: health checks, status documents, metrics.
//!
//! Owns serving and request plumbing. Answers come from the cluster handle; this module must
//! not decide anything about the cluster itself.

mod backups;
pub mod http;
mod management;
mod ops;
mod peer;
mod pg_params;
mod status;

use std::sync::Arc;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use pgquorum_proto::management::management_server::ManagementServer;
use pgquorum_proto::peer::peer_service_server::PeerServiceServer;
use pgquorum_proto::raft::raft_service_server::RaftServiceServer;

pub use http::serve_http;
pub use management::ManagementApi;
pub use peer::PeerApi;

use crate::auth::Guard;
use crate::auth::grpc::AuthLayer;
use crate::auth::tls::TlsMaterial;
use crate::cluster::Cluster;
use crate::ha::Shared;
use crate::raft::RaftGrpc;

/// How long the servers let calls in flight finish once the agent is asked to stop. A graceful
/// shutdown waits for every open call, and a peer's AppendEntries stream and long polls never
/// end by themselves: without a bound, a member stopped alone waited 10 s for them.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs `serve` (a server with graceful shutdown on `cancel`) to its end, or until
/// [`SHUTDOWN_GRACE`] after `cancel`, when it is dropped with whatever calls are still open.
pub(crate) async fn until_grace<E>(
    serve: impl std::future::Future<Output = Result<(), E>>,
    cancel: &CancellationToken,
) -> Result<(), E> {
    let grace = async {
        cancel.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        done = serve => done,
        () = grace => Ok(()),
    }
}

/// Serves all gRPC services on `listener` until `cancel`, behind `guard` (authentication) and,
/// when `tls` is given, over mutual TLS.
pub async fn serve_grpc(
    listener: TcpListener,
    cluster: Cluster,
    shared: Arc<Shared>,
    guard: Guard,
    tls: Option<TlsMaterial>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let raft =
        RaftGrpc::new(cluster.node.raft.clone(), cluster.node.ident.clone(), cluster.node.mail.clone());
    // tonic ignores its own tcp_nodelay setting for an incoming stream; without it every small
    // request-reply waits for the peer's delayed ACK (~40 ms).
    let incoming = TcpListenerStream::new(listener).map(|s| {
        s.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        server = server.tls_config(tls.server())?;
    }
    let serve = server
        .layer(AuthLayer::new(guard))
        .add_service(RaftServiceServer::new(raft).max_decoding_message_size(64 << 20))
        .add_service(PeerServiceServer::new(PeerApi::new(cluster.clone(), shared.clone())))
        .add_service(ManagementServer::new(ManagementApi::new(cluster, shared)))
        .serve_with_incoming_shutdown(incoming, cancel.cancelled());
    until_grace(serve, &cancel).await?;
    Ok(())
}
