//! The gRPC side of `Guard`: a tower layer in front of every service of the agent's endpoint.
//! Open methods (status, configuration, history) pass; every other call (operator changes,
//! agent-to-agent Raft and peer traffic) needs the token in its `authorization` metadata or a
//! verified client certificate on its connection, else it is answered `Unauthenticated` (or
//! `PermissionDenied` when changes are off) without reaching the service.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use pgquorum_proto::auth::{HEADER, bearer, needs_credentials};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::{Denied, Guard};

/// How often a refused member-to-member call is logged at WARN; a misconfigured peer retries
/// many times a second, the rest go to DEBUG.
const PEER_WARN_EVERY: Duration = Duration::from_secs(30);

/// Puts `Guard` in front of the services it wraps.
#[derive(Clone)]
pub struct AuthLayer {
    guard: Arc<Guard>,
    last_peer_warning: Arc<Mutex<Option<Instant>>>,
}

impl AuthLayer {
    /// A layer enforcing `guard`.
    pub fn new(guard: Guard) -> AuthLayer {
        AuthLayer { guard: Arc::new(guard), last_peer_warning: Default::default() }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService { inner, guard: self.guard.clone(), last_peer_warning: self.last_peer_warning.clone() }
    }
}

/// The service `AuthLayer` produces.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    guard: Arc<Guard>,
    last_peer_warning: Arc<Mutex<Option<Instant>>>,
}

impl<S> AuthService<S> {
    /// Whether a refused member-to-member call should be logged at WARN now.
    fn peer_warning_due(&self) -> bool {
        let mut last = self.last_peer_warning.lock().expect("warning clock lock is never poisoned");
        let due = last.is_none_or(|t| t.elapsed() >= PEER_WARN_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Whether the request's connection presented a client certificate that TLS verified.
fn verified_cert<B>(req: &Request<B>) -> bool {
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .is_some_and(|c| !c.is_empty())
}

/// The caller's address, for logs.
fn remote<B>(req: &Request<B>) -> String {
    let tcp = req
        .extensions()
        .get::<TcpConnectInfo>()
        .or_else(|| req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().map(|i| i.get_ref()));
    tcp.and_then(|i| i.remote_addr()).map_or_else(|| "?".to_string(), |a| a.to_string())
}

impl<S, B> tower::Service<Request<B>> for AuthService<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        if needs_credentials(&path) {
            let token = req.headers().get(HEADER).and_then(|v| v.to_str().ok()).and_then(bearer);
            if let Err(denied) = self.guard.check_call(&path, token, verified_cert(&req)) {
                let operator = path.starts_with("/pgquorum.management.");
                let msg = self.guard.message(denied, operator);
                let from = remote(&req);
                if operator {
                    tracing::warn!(method = %path, %from, "refused a call: {denied:?}");
                } else if self.peer_warning_due() {
                    tracing::warn!(method = %path, %from, "refused a member-to-member call: {msg}");
                } else {
                    tracing::debug!(method = %path, %from, "refused a member-to-member call: {denied:?}");
                }
                let status = match denied {
                    Denied::Disabled => tonic::Status::permission_denied(msg),
                    Denied::Missing | Denied::Wrong => tonic::Status::unauthenticated(msg),
                };
                return Box::pin(std::future::ready(Ok(status.into_http::<Body>())));
            }
        }
        Box::pin(self.inner.call(req))
    }
}
