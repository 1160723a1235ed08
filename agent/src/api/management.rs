//! The management service pgquorumctl talks to. Every agent serves it; calls that need the Raft
//! leader are forwarded to it.
//!
//! Owns request validation and error wording for operators (what was wrong, what to do). The
//! changes themselves go through the cluster handle.

use std::time::Duration;

use pgquorum_core::state::{Command, CommandError, DynamicConfig};
use pgquorum_proto::management::management_client::ManagementClient;
use pgquorum_proto::management::management_server::Management;
use pgquorum_proto::management::{
    GetConfigReply, GetConfigRequest, RemoveMemberReply, RemoveMemberRequest, SetConfigReply,
    SetConfigRequest, StatusReply, StatusRequest,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::status::local_status;
use crate::cluster::{Cluster, ProposeError};

/// Serves the management API.
pub struct ManagementApi {
    cluster: Cluster,
    shared: std::sync::Arc<crate::ha::Shared>,
}

impl ManagementApi {
    /// Wraps the cluster handle and the HA loop's shared state.
    pub fn new(cluster: Cluster, shared: std::sync::Arc<crate::ha::Shared>) -> ManagementApi {
        ManagementApi { cluster, shared }
    }

    /// A client for the leader's management API, unless this agent is the leader.
    fn leader_client(&self) -> Result<Option<ManagementClient<Channel>>, Status> {
        match self.cluster.leader() {
            Some((id, _)) if id == self.cluster.node.ident.node_id => Ok(None),
            Some((_, node)) => {
                let ch = self.cluster.node.channels.get(&node.grpc).map_err(Status::internal)?;
                Ok(Some(ManagementClient::new(ch)))
            }
            None => Err(Status::unavailable(
                "no Raft leader is known: is a majority of members up and connected? (pgquorumctl status shows who answers)",
            )),
        }
    }
}

fn propose_status(e: ProposeError) -> Status {
    match e {
        ProposeError::NoLeader(_) | ProposeError::Forward(_) => Status::unavailable(e.to_string()),
        ProposeError::Fatal(_) => Status::internal(e.to_string()),
    }
}

fn config_json(c: &DynamicConfig) -> String {
    serde_json::to_string_pretty(c).expect("configuration always serialises")
}

fn diff(old: &DynamicConfig, new: &DynamicConfig) -> Vec<String> {
    let flat = |c: &DynamicConfig| -> Vec<(String, String)> {
        let v = serde_json::to_value(c).expect("configuration always serialises");
        let mut out = Vec::new();
        if let serde_json::Value::Object(map) = v {
            for (k, v) in map {
                match v {
                    serde_json::Value::Object(inner) => {
                        out.extend(inner.into_iter().map(|(ik, iv)| (format!("{k}.{ik}"), iv.to_string())))
                    }
                    other => out.push((k, other.to_string())),
                }
            }
        }
        out
    };
    let (a, b) = (flat(old), flat(new));
    let mut keys: Vec<&String> = a.iter().chain(b.iter()).map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    let get = |l: &[(String, String)], k: &str| l.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    keys.into_iter()
        .filter_map(|k| {
            let (o, n) = (get(&a, k), get(&b, k));
            (o != n).then(|| {
                format!("{k}: {} -> {}", o.unwrap_or("(unset)".into()), n.unwrap_or("(unset)".into()))
            })
        })
        .collect()
}

#[tonic::async_trait]
impl Management for ManagementApi {
    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        if req.into_inner().local_only {
            return Ok(Response::new(local_status(&self.cluster, &self.shared)));
        }
        let forward = match self.leader_client() {
            Ok(Some(c)) => Some(c),
            Ok(None) => None,
            Err(e) => {
                let mut local = local_status(&self.cluster, &self.shared);
                local.warning = format!("{} This is {}'s own view.", e.message(), self.cluster.me.name);
                return Ok(Response::new(local));
            }
        };
        let Some(mut client) = forward else {
            return Ok(Response::new(local_status(&self.cluster, &self.shared)));
        };
        let mut fwd = Request::new(StatusRequest { local_only: true });
        fwd.set_timeout(Duration::from_secs(2));
        match client.status(fwd).await {
            Ok(r) => Ok(r),
            Err(e) => {
                let mut local = local_status(&self.cluster, &self.shared);
                local.warning = format!(
                    "the Raft leader did not answer ({}); this is {}'s own view",
                    e.message(),
                    self.cluster.me.name
                );
                Ok(Response::new(local))
            }
        }
    }

    async fn get_config(&self, _req: Request<GetConfigRequest>) -> Result<Response<GetConfigReply>, Status> {
        let applied = self.cluster.applied();
        if applied.state.cluster_id.is_none() {
            return Err(Status::unavailable("the cluster is not initialised yet"));
        }
        Ok(Response::new(GetConfigReply {
            version: applied.state.config_version,
            config_json: config_json(&applied.state.config),
        }))
    }

    async fn set_config(&self, req: Request<SetConfigRequest>) -> Result<Response<SetConfigReply>, Status> {
        let req = req.into_inner();
        if req.settings.is_empty() {
            return Err(Status::invalid_argument("no settings given: pass KEY=VALUE, for example ttl=2s"));
        }
        for attempt in 0..5 {
            let applied = self.cluster.applied();
            let old = applied.state.config.clone();
            let version = applied.state.config_version;
            if req.expected_version != 0 && req.expected_version != version {
                return Err(Status::aborted(format!(
                    "configuration changed meanwhile (version {version}, you expected {}); re-read it and retry",
                    req.expected_version
                )));
            }
            let mut new = old.clone();
            for s in &req.settings {
                let (k, v) = s.split_once('=').ok_or_else(|| {
                    Status::invalid_argument(format!("{s:?}: write KEY=VALUE, for example ttl=2s"))
                })?;
                new.set(k.trim(), v.trim()).map_err(Status::invalid_argument)?;
            }
            new.validate().map_err(|e| Status::invalid_argument(e.join("; ")))?;
            let changes = diff(&old, &new);
            let cmd = Command::SetConfig { expected_version: Some(version), config: new.clone() };
            let (result, _) = self.cluster.propose(cmd).await.map_err(propose_status)?;
            match result {
                Ok(_) => {
                    return Ok(Response::new(SetConfigReply {
                        version: version + 1,
                        config_json: config_json(&new),
                        changes,
                    }));
                }
                Err(CommandError::ConfigVersionMismatch { .. })
                    if req.expected_version == 0 && attempt < 4 =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(Status::failed_precondition(e.to_string())),
            }
        }
        Err(Status::aborted("the configuration kept changing under this request; retry"))
    }

    async fn remove_member(
        &self,
        req: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberReply>, Status> {
        let req = req.into_inner();
        match self.leader_client()? {
            Some(mut leader) => leader.remove_member(req).await,
            None => {
                let voters = self.cluster.remove(&req.name).await.map_err(|e| {
                    let msg = e.trim_start_matches("refused: ").to_string();
                    if e.starts_with("refused:") {
                        Status::failed_precondition(msg)
                    } else {
                        Status::unavailable(msg)
                    }
                })?;
                Ok(Response::new(RemoveMemberReply { voters }))
            }
        }
    }
}
