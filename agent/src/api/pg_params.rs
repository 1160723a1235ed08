//! `postgres_parameters` in a configuration change: checked with Postgres itself before the
//! change is stored (`postgres::params`), on this member's binaries, or by the primary's agent
//! when this member is a witness; and the changed ones that wait for a restart are named.

use pgquorum_core::state::DynamicConfig;
use pgquorum_proto::management::{SetConfigReply, SetConfigRequest};
use tonic::Status;

use super::management::{ManagementApi, forwarded};
use crate::postgres::params;

impl ManagementApi {
    /// `Ok(None)`: Postgres accepts `new`'s parameters (checked here). `Ok(Some)`: this member
    /// has no Postgres, so the request went to the primary's agent, which checked and stored it.
    pub(super) async fn check_postgres_parameters(
        &self,
        req: &SetConfigRequest,
        new: &DynamicConfig,
    ) -> Result<Option<SetConfigReply>, Status> {
        if let Some(pg) = self.shared.pg.get() {
            params::check(&pg.bin, &pg.scratch, &new.postgres_parameters).await.map_err(|e| {
                // Exit 1 in pgquorumctl: the cluster refused the change (docs/ctl.md).
                Status::failed_precondition(format!(
                    "postgres_parameters: Postgres refuses them: {e}. Nothing was stored; correct the value \
                     (the current configuration: pgquorumctl config show) and retry"
                ))
            })?;
            return Ok(None);
        }
        // A witness: ask a member that runs Postgres, the primary first. A cluster where no
        // member runs Postgres has nothing that could fail to start with them.
        let primary = self.cluster.applied().state.primary.as_ref().map(|p| p.member.clone());
        let mut with_pg: Vec<String> = self
            .cluster
            .membership()
            .nodes
            .into_values()
            .filter(|n| !n.postgres.is_empty())
            .map(|n| n.name.to_string())
            .collect();
        if with_pg.is_empty() {
            return Ok(None);
        }
        with_pg.sort_by_key(|n| Some(n.as_str()) != primary.as_ref().map(|p| p.as_str()));
        let mut last = String::new();
        for name in with_pg {
            let mut client = self.member_client(&name)?;
            match client.set_config(req.clone()).await {
                Ok(reply) => return Ok(Some(reply.into_inner())),
                Err(s) if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown => {
                    last = format!("{name}: {}", s.message());
                }
                Err(s) => return Err(forwarded(s)),
            }
        }
        Err(Status::unavailable(format!(
            "postgres_parameters are checked with Postgres before they are stored, but this member is a witness \
             (no Postgres) and no member that runs Postgres answered ({last}); retry, or send the change to a \
             member that runs Postgres (pgquorumctl --endpoint)"
        )))
    }

    /// Adds a line to `changes` for each changed parameter that takes effect only after a
    /// Postgres restart (as this member's `postgres --describe-config` says).
    pub(super) async fn note_restarts(
        &self,
        old: &DynamicConfig,
        new: &DynamicConfig,
        changes: &mut Vec<String>,
    ) {
        let Some(bin) = self.shared.pg.get().map(|pg| &pg.bin) else { return };
        let changed: Vec<String> = new
            .postgres_parameters
            .iter()
            .filter(|(k, v)| old.postgres_parameters.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        if changed.is_empty() {
            return;
        }
        let restart = params::needing_restart(bin, &changed).await;
        if !restart.is_empty() {
            changes.push(format!(
                "restart Postgres for {} to take effect: pgquorumctl restart --pending",
                restart.join(", ")
            ));
        }
    }
}
