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
        if let Some((bin, scratch)) = self.shared.pg_tools.get() {
            params::check(bin, scratch, &new.postgres_parameters).await.map_err(|e| {
                // Exit 1 in pgquorumctl: the cluster refused the change (docs/ctl.md).
                Status::failed_precondition(format!(
                    "postgres_parameters: Postgres refuses them: {e}. Nothing was stored; correct the value \
                     (the current configuration: pgquorumctl config show) and retry"
                ))
            })?;
            return Ok(None);
        }
        let primary = self.cluster.applied().state.primary.clone().ok_or_else(|| {
            Status::unavailable(
                "postgres_parameters are checked with Postgres before they are stored, but this member is a \
                 witness (no Postgres) and there is no primary to ask; send the change to a member that runs \
                 Postgres (pgquorumctl --endpoint)",
            )
        })?;
        let mut client = self.member_client(primary.member.as_str())?;
        let reply = client.set_config(req.clone()).await.map_err(forwarded)?;
        Ok(Some(reply.into_inner()))
    }

    /// Adds a line to `changes` for each changed parameter that takes effect only after a
    /// Postgres restart (as this member's `postgres --describe-config` says).
    pub(super) async fn note_restarts(
        &self,
        old: &DynamicConfig,
        new: &DynamicConfig,
        changes: &mut Vec<String>,
    ) {
        let Some((bin, _)) = self.shared.pg_tools.get() else { return };
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
