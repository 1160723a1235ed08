//! The HTTP calls that change something, as Patroni names them: `POST /switchover`,
//! `DELETE /switchover`, `POST /failover`, `POST /restart`, `POST /reload`, `PATCH` and
//! `PUT /config`. Each needs credentials (`Guard`), then calls the management API's own handler
//! (leader forwarding and validation included) and answers with Patroni's status codes.
//!
//! Owns request parsing, credentials from HTTP headers and the status-code mapping. Must not
//! decide anything: the management API and the HA core do.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use pgquorum_proto::management::management_server::Management;
use pgquorum_proto::management::{
    FailoverRequest, ReloadRequest, RestartRequest, SetConfigRequest, SwitchoverRequest,
};
use serde_json::{Value, json};
use tonic::{Code, Request};

use super::App;
use crate::api::ManagementApi;
use crate::auth::Denied;

/// The paths this module answers for any method but GET, HEAD and OPTIONS.
pub const PATHS: &[&str] = &["/switchover", "/failover", "/restart", "/reload", "/config"];

/// How long a switchover or failover is waited for before answering "status unknown".
const WAIT: Duration = Duration::from_secs(30);

fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}

/// The token an `Authorization` header carries: `Bearer <token>`, or Basic auth whose password
/// is the token (what Patroni clients send).
fn presented(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(t) = pgquorum_proto::auth::bearer(value) {
        return Some(t.to_string());
    }
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let (_, password) =
        String::from_utf8(decoded).ok()?.split_once(':').map(|(u, p)| (u.to_string(), p.to_string()))?;
    Some(password)
}

/// Answers `method path` (a path in `PATHS`).
pub async fn handle(app: &App, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let route = (method.as_str(), path);
    let known = matches!(
        route,
        ("POST", "/switchover" | "/failover" | "/restart" | "/reload")
            | ("DELETE", "/switchover")
            | ("PATCH" | "PUT", "/config")
    );
    if !known {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} {path} is not supported; see docs/http.md"),
        );
    }
    if let Err(denied) = app.guard.check(presented(headers).as_deref(), false) {
        let msg = app.guard.message(denied, true);
        tracing::warn!("refused HTTP {method} {path}: {denied:?}");
        if denied == Denied::Disabled {
            return text(StatusCode::FORBIDDEN, msg);
        }
        let mut resp = text(StatusCode::UNAUTHORIZED, msg);
        let challenge = HeaderValue::from_static("Bearer realm=\"pgquorum\", Basic realm=\"pgquorum\"");
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        return resp;
    }
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return text(StatusCode::BAD_REQUEST, "the body must be a JSON object"),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")),
        }
    };
    let api = ManagementApi::new(app.cluster.clone(), app.shared.clone());
    tracing::info!("HTTP {method} {path}: {body}");
    let result = match route {
        ("POST", "/switchover") => switchover(&api, &body).await,
        ("DELETE", "/switchover") => cancel_switchover(&api).await,
        ("POST", "/failover") if body.get("leader").is_some_and(|l| !l.is_null()) => {
            switchover(&api, &body).await
        }
        ("POST", "/failover") => failover(&api, &body).await,
        ("POST", "/restart") => restart(&api, &body).await,
        ("POST", "/reload") => reload(&api).await,
        (m, _) => config(&api, &body, m == "PATCH").await,
    };
    result.unwrap_or_else(|(code, msg)| text(code, msg))
}

type Answer = Result<Response, (StatusCode, String)>;

/// The HTTP status for a refusal of the management API.
fn status(s: tonic::Status) -> (StatusCode, String) {
    let code = match s.code() {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, s.message().to_string())
}

fn field<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, (StatusCode, String)> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err((StatusCode::BAD_REQUEST, format!("\"{name}\" must be a string, not {other}"))),
    }
}

fn current_primary(api: &ManagementApi) -> Option<String> {
    api.cluster.applied().state.primary.as_ref().filter(|p| !p.expired).map(|p| p.member.to_string())
}

/// Polls the applied state until `done` says the outcome, within `WAIT`.
async fn wait_for(
    api: &ManagementApi,
    done: impl Fn(&pgquorum_core::state::ClusterState) -> Option<Answer>,
) -> Answer {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Some(answer) = done(&api.cluster.applied().state) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err((
        StatusCode::SERVICE_UNAVAILABLE,
        format!("status unknown after {}s; see GET /cluster", WAIT.as_secs()),
    ))
}

async fn switchover(api: &ManagementApi, body: &Value) -> Answer {
    let leader = field(body, "leader")?;
    let candidate = match field(body, "candidate")? {
        Some(c) => Some(c),
        None => field(body, "member")?,
    };
    let primary = current_primary(api);
    let Some(leader) = leader else {
        let hint = primary.map(|p| format!(" (it is {p})")).unwrap_or_default();
        return Err((StatusCode::BAD_REQUEST, format!("name the current primary in \"leader\"{hint}")));
    };
    if primary.as_deref() != Some(leader) {
        let now = primary.unwrap_or_else(|| "none".into());
        return Err((
            StatusCode::PRECONDITION_FAILED,
            format!("leader name does not match: the primary is {now}"),
        ));
    }
    if candidate == Some(leader) {
        return Err((StatusCode::BAD_REQUEST, "switchover target and source are the same".into()));
    }
    let at_ms = match field(body, "scheduled_at")? {
        Some(at) => super::schedule::parse(at, crate::ha::observe::wall().0)?,
        None => 0,
    };
    let req = SwitchoverRequest { to: candidate.unwrap_or_default().to_string(), at_ms };
    let reply = api.switchover(Request::new(req)).await.map_err(status)?.into_inner();
    if at_ms != 0 {
        return Ok(text(StatusCode::ACCEPTED, "Switchover scheduled"));
    }
    let from = reply.from;
    wait_for(api, |s| {
        let new = s.primary.as_ref().filter(|p| !p.expired && p.member.as_str() != from)?;
        Some(Ok(text(StatusCode::OK, format!("Successfully switched over to \"{}\"", new.member))))
    })
    .await
}

async fn cancel_switchover(api: &ManagementApi) -> Answer {
    api.cancel_switchover(Request::new(Default::default())).await.map_err(status)?;
    Ok(text(StatusCode::OK, "scheduled switchover deleted"))
}

async fn failover(api: &ManagementApi, body: &Value) -> Answer {
    let Some(candidate) = field(body, "candidate")? else {
        return Err((
            StatusCode::BAD_REQUEST,
            "failover could be performed only to a specific candidate: set \"candidate\"".into(),
        ));
    };
    let force = body.get("force").and_then(Value::as_bool).unwrap_or(false);
    let req = FailoverRequest { to: candidate.to_string(), force };
    api.failover(Request::new(req)).await.map_err(status)?;
    let to = candidate.to_string();
    wait_for(api, |s| {
        s.primary.as_ref().filter(|p| !p.expired && p.member.as_str() == to)?;
        Some(Ok(text(StatusCode::OK, format!("Successfully failed over to \"{to}\""))))
    })
    .await
}

async fn restart(api: &ManagementApi, body: &Value) -> Answer {
    for unsupported in ["schedule", "postgres_version"] {
        if body.get(unsupported).is_some_and(|v| !v.is_null()) {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("\"{unsupported}\" is not supported: pgquorum restarts now"),
            ));
        }
    }
    let view = super::View::gather(&api.cluster, &api.shared);
    if body.get("restart_pending").and_then(Value::as_bool) == Some(true)
        && view.running().is_none_or(|r| r.pending_restart.is_empty())
    {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "restart conditions are not satisfied: no restart is pending".into(),
        ));
    }
    if let Some(role) = field(body, "role")? {
        let primary = current_primary(api).as_deref() == Some(api.cluster.me.name.as_str());
        let matches = match role {
            "primary" | "master" | "leader" => primary,
            "replica" => !primary,
            other => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!("\"role\" {other:?} must be primary or replica"),
                ));
            }
        };
        if !matches {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("restart conditions are not satisfied: not a {role}"),
            ));
        }
    }
    let req = RestartRequest { member: api.cluster.me.name.to_string() };
    api.restart(Request::new(req)).await.map_err(status)?;
    Ok(text(StatusCode::ACCEPTED, "restart requested"))
}

async fn reload(api: &ManagementApi) -> Answer {
    api.reload(Request::new(ReloadRequest { member: api.cluster.me.name.to_string() }))
        .await
        .map_err(status)?;
    Ok(text(StatusCode::ACCEPTED, "reload scheduled"))
}

/// `PATCH /config` (a JSON merge patch, `null` removes a key) or `PUT /config` (the whole
/// configuration); answers with the new configuration.
async fn config(api: &ManagementApi, body: &Value, patch: bool) -> Answer {
    let applied = api.cluster.applied();
    if applied.state.cluster_id.is_none() {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "the cluster is not initialised yet".into()));
    }
    let new = if patch {
        let mut current =
            serde_json::to_value(&applied.state.config).expect("the configuration always serialises");
        merge(&mut current, body);
        current
    } else {
        body.clone()
    };
    let req = SetConfigRequest {
        settings: Vec::new(),
        expected_version: applied.state.config_version,
        config_json: new.to_string(),
    };
    let reply = api.set_config(Request::new(req)).await.map_err(status)?.into_inner();
    let doc: Value = serde_json::from_str(&reply.config_json).unwrap_or(Value::Null);
    let mut resp = text(StatusCode::OK, doc.to_string());
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// RFC 7396 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_replaces_adds_and_removes() {
        let mut doc = json!({"ttl": "2s", "postgres_parameters": {"work_mem": "4MB", "a": "1"}});
        merge(&mut doc, &json!({"ttl": "3s", "postgres_parameters": {"a": null, "b": "2"}}));
        assert_eq!(doc, json!({"ttl": "3s", "postgres_parameters": {"work_mem": "4MB", "b": "2"}}));
    }

    #[test]
    fn credentials_come_as_bearer_or_as_the_basic_auth_password() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).expect("valid header"));
            presented(&m)
        };
        assert_eq!(h("Bearer tok-0123456789abcdef").as_deref(), Some("tok-0123456789abcdef"));
        let basic = base64::engine::general_purpose::STANDARD.encode("patroni:tok-0123456789abcdef");
        assert_eq!(h(&format!("Basic {basic}")).as_deref(), Some("tok-0123456789abcdef"));
        assert_eq!(h("Basic !!!"), None);
        assert_eq!(h("Digest x"), None);
        assert_eq!(presented(&HeaderMap::new()), None);
    }
}
