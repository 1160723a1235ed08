//! The agent's HTTP endpoint: Patroni-compatible health checks (`/primary`, `/replica`,
//! `/read-only`, `/sync`, `/health`, `/liveness`, `/readiness`, ...), the JSON documents
//! `/patroni`, `/cluster`, `/history`, `/config`, and Prometheus `/metrics`, on one listener.
//!
//! The Patroni-compatible calls that change something (`POST /switchover`, ...) are in `mutate`,
//! behind credentials; everything else here is open and read-only.
//!
//! Owns routing and response shapes. Every answer is built from memory (`View`: the applied
//! cluster state and the last reports), never with SQL; the 200/503 rule of each health check is
//! the pure `health::check`. Must not change anything outside `mutate`.

mod documents;
pub mod health;
mod metrics;
mod mutate;
mod schedule;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use view::{View, api_url};

use crate::auth::Guard;
use crate::cluster::Cluster;
use crate::ha::Shared;

#[derive(Clone)]
struct App {
    cluster: Cluster,
    shared: Arc<Shared>,
    guard: Arc<Guard>,
}

/// Serves the HTTP endpoint on `listener` until `cancel`; calls that change something need
/// what `guard` accepts.
pub async fn serve_http(
    listener: TcpListener,
    cluster: Cluster,
    shared: Arc<Shared>,
    guard: Guard,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let app = Router::new()
        .fallback(handle)
        .with_state(App { cluster, shared, guard: Arc::new(guard) })
        .into_make_service_with_connect_info::<SocketAddr>();
    // Health checks are one small request and answer per connection: without TCP_NODELAY an
    // answer may wait for the client's delayed ACK.
    let listener = listener.tap_io(|s| {
        let _ = s.set_nodelay(true);
    });
    let serve = axum::serve(listener, app).with_graceful_shutdown(cancel.clone().cancelled_owned());
    super::until_grace(serve.into_future(), &cancel).await?;
    Ok(())
}

/// What an answer carries.
enum Body {
    Json(Value),
    Text(&'static str, String),
}

/// The response header naming this agent's gRPC address, so a tool pointed at this port by
/// mistake (`pgquorumctl --endpoint`) can say which port to use instead.
pub const GRPC_ADDRESS_HEADER: &str = "x-pgquorum-grpc-address";

async fn handle(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut resp = answer_request(&app, peer, method, uri, headers, body).await;
    if let Ok(v) = HeaderValue::from_str(&app.cluster.me.grpc) {
        resp.headers_mut().insert(GRPC_ADDRESS_HEADER, v);
    }
    resp
}

async fn answer_request(
    app: &App,
    peer: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let status_only = match method {
        Method::GET => false,
        Method::HEAD | Method::OPTIONS => true,
        _ => {
            let path = match uri.path() {
                "/" => "/",
                p => p.trim_end_matches('/'),
            };
            if mutate::PATHS.contains(&path) {
                return mutate::handle(app, &method, path, &headers, &body).await;
            }
            let body = json!({
                "error": format!("{method} {path} is not supported: use GET, HEAD or OPTIONS (see docs/http.md)")
            });
            return respond(StatusCode::NOT_IMPLEMENTED, Body::Json(body), false);
        }
    };
    let (code, body) = answer(app, peer, uri.path(), uri.query().unwrap_or(""));
    respond(code, body, status_only)
}

fn respond(code: StatusCode, body: Body, status_only: bool) -> Response {
    if status_only {
        // HEAD and OPTIONS (HAProxy's plain `option httpchk`) read the status line only.
        return code.into_response();
    }
    let (content_type, text) = match body {
        Body::Json(v) => ("application/json", v.to_string()),
        Body::Text(ct, t) => (ct, t),
    };
    let mut resp = (code, text).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The status and body for `path` with `query`, asked by `peer`.
fn answer(app: &App, peer: SocketAddr, path: &str, query: &str) -> (StatusCode, Body) {
    let view = View::gather(&app.cluster, &app.shared);
    match path {
        "/patroni" => (StatusCode::OK, Body::Json(documents::patroni(&view))),
        "/cluster" => {
            let status = crate::api::status::local_status(&app.cluster, &app.shared);
            (StatusCode::OK, Body::Json(documents::cluster(&status, view.state())))
        }
        "/history" => (StatusCode::OK, Body::Json(documents::history(view.state()))),
        "/config" => match documents::config(view.state()) {
            Some(c) => (StatusCode::OK, Body::Json(c)),
            None => {
                let body = json!({ "error": "the cluster is not initialised yet: no dynamic configuration" });
                (StatusCode::BAD_GATEWAY, Body::Json(body))
            }
        },
        "/metrics" => {
            let mut sample = metrics::Sample::gather(&view, &app.cluster.metrics());
            sample.archive = app.shared.archive.get().map(|a| a.status.snapshot());
            (StatusCode::OK, Body::Text(metrics::CONTENT_TYPE, metrics::encode(&sample)))
        }
        _ => {
            let mut doc = documents::patroni(&view);
            let code = match health::Endpoint::from_path(path) {
                Some(endpoint) => {
                    let verdict = health::check(endpoint, &health::Query::parse(query), &view.situation());
                    if let Err(why) = &verdict.0 {
                        tracing::debug!("GET {path}?{query}: 503, {why}");
                        doc["reason"] = json!(why);
                    }
                    if endpoint.routes_reads_to_replicas() {
                        let replica = verdict.0.is_ok();
                        app.shared.read_balancers.record(peer.ip(), replica, app.shared.now());
                    }
                    verdict.code()
                }
                None => {
                    doc["reason"] = json!(format!("unknown path {path}; see docs/http.md"));
                    503
                }
            };
            let code = StatusCode::from_u16(code).expect("200 and 503 are status codes");
            (code, Body::Json(doc))
        }
    }
}
