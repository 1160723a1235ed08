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
    AddMemberReply, AddMemberRequest, CancelSwitchoverReply, CancelSwitchoverRequest, FailoverReply,
    FailoverRequest, GetConfigReply, GetConfigRequest, HistoryReply, HistoryRequest, PauseReply,
    PauseRequest, ReloadReply, ReloadRequest, RemoveMemberReply, RemoveMemberRequest, RestartReply,
    RestartRequest, SetConfigReply, SetConfigRequest, StatusReply, StatusRequest, SwitchoverReply,
    SwitchoverRequest,
};
use tonic::{Request, Response, Status};

use super::status::local_status;
use crate::cluster::{Cluster, ProposeError};
use crate::raft::PeerChannel;

/// Serves the management API.
pub struct ManagementApi {
    pub(super) cluster: Cluster,
    pub(super) shared: std::sync::Arc<crate::ha::Shared>,
}

impl ManagementApi {
    /// Wraps the cluster handle and the HA loop's shared state.
    pub fn new(cluster: Cluster, shared: std::sync::Arc<crate::ha::Shared>) -> ManagementApi {
        ManagementApi { cluster, shared }
    }

    /// A client for member `name`'s management API.
    pub(super) fn member_client(&self, name: &str) -> Result<ManagementClient<PeerChannel>, Status> {
        let node =
            self.cluster.membership().nodes.into_values().find(|n| n.name.as_str() == name).ok_or_else(
                || Status::invalid_argument(format!("no member named {name}; see pgquorumctl member list")),
            )?;
        let ch = self.cluster.node.channels.get(&node.grpc).map_err(Status::internal)?;
        Ok(ManagementClient::new(ch))
    }

    /// Each member's `raft.election_timeout_max`, from its last report (this agent's own
    /// included; `None` for a member never heard from).
    fn member_timing(&self) -> Vec<(pgquorum_core::MemberName, Option<Duration>)> {
        let members = self.cluster.membership().nodes.into_values().map(|n| n.name);
        let reports = self.shared.reports.for_members(members);
        reports.into_iter().map(|(m, seen)| (m, seen.and_then(|s| s.report.election_timeout_max))).collect()
    }

    /// A client for the leader's management API, unless this agent is the leader.
    /// Waits for a leader while an election or a hand-off runs (see `Cluster::leader_within`).
    async fn leader_client(&self) -> Result<Option<ManagementClient<PeerChannel>>, Status> {
        match self.cluster.leader_within(self.cluster.leader_wait()).await {
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

/// A refusal of a call this agent forwarded: the caller was let in here, so a refusal of this
/// agent's own credentials means the members' configurations disagree, not the caller's fault.
pub(super) fn forwarded(s: Status) -> Status {
    match s.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => Status::internal(format!(
            "the member this call was forwarded to refused this agent's credentials ({}); every member needs the \
             same auth.token_file (or certificates from the same CA)",
            s.message()
        )),
        _ => s,
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
    let json = |c| serde_json::to_value(c).expect("configuration always serialises");
    pgquorum_core::state::json_diff(&json(old), &json(new))
}

#[tonic::async_trait]
impl Management for ManagementApi {
    type CreateBackupStream = super::backups::ProgressStream;

    async fn create_backup(
        &self,
        req: Request<pgquorum_proto::management::CreateBackupRequest>,
    ) -> Result<Response<Self::CreateBackupStream>, Status> {
        self.create_backup_call(req.into_inner()).await.map(Response::new)
    }

    async fn list_backups(
        &self,
        _req: Request<pgquorum_proto::management::ListBackupsRequest>,
    ) -> Result<Response<pgquorum_proto::management::ListBackupsReply>, Status> {
        self.list_backups_call().await.map(Response::new)
    }

    async fn delete_backup(
        &self,
        req: Request<pgquorum_proto::management::DeleteBackupRequest>,
    ) -> Result<Response<pgquorum_proto::management::DeleteBackupReply>, Status> {
        self.delete_backup_call(req.into_inner()).await.map(Response::new)
    }

    async fn create_restore_point(
        &self,
        req: Request<pgquorum_proto::management::RestorePointRequest>,
    ) -> Result<Response<pgquorum_proto::management::RestorePointReply>, Status> {
        self.restore_point_call(req.into_inner()).await.map(Response::new)
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        if req.into_inner().local_only {
            return Ok(Response::new(local_status(&self.cluster, &self.shared)));
        }
        let forward = match self.leader_client().await {
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
        if req.settings.is_empty() && req.config_json.is_empty() {
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
            let mut new = if req.config_json.is_empty() {
                old.clone()
            } else {
                serde_json::from_str::<DynamicConfig>(&req.config_json)
                    .map_err(|e| Status::invalid_argument(format!("the configuration is not valid: {e}")))?
            };
            for s in &req.settings {
                let (k, v) = s.split_once('=').ok_or_else(|| {
                    Status::invalid_argument(format!("{s:?}: write KEY=VALUE, for example ttl=2s"))
                })?;
                new.set(k.trim(), v.trim()).map_err(Status::invalid_argument)?;
            }
            new.validate().map_err(|e| Status::invalid_argument(e.join("; ")))?;
            new.validate_timing(old.ttl, &self.member_timing()).map_err(Status::invalid_argument)?;
            if new.postgres_parameters != old.postgres_parameters
                && let Some(reply) = self.check_postgres_parameters(&req, &new).await?
            {
                return Ok(Response::new(reply));
            }
            let mut changes = diff(&old, &new);
            self.note_restarts(&old, &new, &mut changes).await;
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
        match self.leader_client().await? {
            Some(mut leader) => leader.remove_member(req).await.map_err(forwarded),
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

    async fn switchover(&self, req: Request<SwitchoverRequest>) -> Result<Response<SwitchoverReply>, Status> {
        match self.leader_client().await? {
            Some(mut leader) => leader.switchover(req.into_inner()).await.map_err(forwarded),
            None => super::ops::switchover(self, req.into_inner()).await.map(Response::new),
        }
    }

    async fn cancel_switchover(
        &self,
        req: Request<CancelSwitchoverRequest>,
    ) -> Result<Response<CancelSwitchoverReply>, Status> {
        match self.leader_client().await? {
            Some(mut leader) => leader.cancel_switchover(req.into_inner()).await.map_err(forwarded),
            None => super::ops::cancel_switchover(self).await.map(Response::new),
        }
    }

    async fn failover(&self, req: Request<FailoverRequest>) -> Result<Response<FailoverReply>, Status> {
        match self.leader_client().await? {
            Some(mut leader) => leader.failover(req.into_inner()).await.map_err(forwarded),
            None => super::ops::failover(self, req.into_inner()).await.map(Response::new),
        }
    }

    async fn pause(&self, req: Request<PauseRequest>) -> Result<Response<PauseReply>, Status> {
        super::ops::pause(self, req.into_inner()).await.map(Response::new)
    }

    async fn restart(&self, req: Request<RestartRequest>) -> Result<Response<RestartReply>, Status> {
        let req = req.into_inner();
        if req.member == self.cluster.me.name.as_str() {
            if self
                .shared
                .report
                .lock()
                .expect("lock is never poisoned")
                .as_ref()
                .is_some_and(|r| r.postgres == pgquorum_core::ha::observation::Postgres::Disabled)
            {
                return Err(Status::failed_precondition(format!(
                    "{} is a witness (no Postgres)",
                    req.member
                )));
            }
            self.shared.request_restart();
            return Ok(Response::new(RestartReply {}));
        }
        let mut client = self.member_client(&req.member)?;
        client.restart(req).await.map_err(forwarded)
    }

    async fn reload(&self, req: Request<ReloadRequest>) -> Result<Response<ReloadReply>, Status> {
        let req = req.into_inner();
        if req.member == self.cluster.me.name.as_str() {
            self.shared.request_reload();
            return Ok(Response::new(ReloadReply {}));
        }
        let mut client = self.member_client(&req.member)?;
        client.reload(req).await.map_err(forwarded)
    }

    async fn history(&self, _req: Request<HistoryRequest>) -> Result<Response<HistoryReply>, Status> {
        Ok(Response::new(super::ops::history(self)))
    }

    async fn add_member(&self, req: Request<AddMemberRequest>) -> Result<Response<AddMemberReply>, Status> {
        match self.leader_client().await? {
            Some(mut leader) => leader.add_member(req.into_inner()).await.map_err(forwarded),
            None => super::ops::add_member(self, req.into_inner()).await.map(Response::new),
        }
    }
}
