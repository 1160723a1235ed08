//! The gRPC side of `Guard`: a tower layer in front of every service of the agent's endpoint.
//! Open methods (status, configuration, history) pass; every other call (operator changes,
//! agent-to-agent Raft and peer traffic) needs the token in its `authorization` metadata or a
//! verified client certificate on its connection, else it is answered `Unauthenticated` (or
//! `PermissionDenied` when changes are off) without reaching the service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pgquorum_proto::auth::{HEADER, bearer, needs_credentials};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::{Denied, Guard};

/// Puts `Guard` in front of the services it wraps.
#[derive(Clone)]
pub struct AuthLayer(Arc<Guard>);

impl AuthLayer {
    /// A layer enforcing `guard`.
    pub fn new(guard: Guard) -> AuthLayer {
        AuthLayer(Arc::new(guard))
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService { inner, guard: self.0.clone() }
    }
}

/// The service `AuthLayer` produces.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    guard: Arc<Guard>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Whether the request's connection presented a client certificate that TLS verified.
fn verified_cert<B>(req: &Request<B>) -> bool {
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .is_some_and(|c| !c.is_empty())
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
                let msg = self.guard.message(denied);
                if path.starts_with("/pgquorum.management.") {
                    tracing::warn!(method = %path, "refused a call: {denied:?}");
                } else {
                    // A misconfigured peer retries many times a second: keep its refusals quiet.
                    tracing::debug!(method = %path, "refused a call: {denied:?}");
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
