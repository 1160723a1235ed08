//! This member's part of scheduled backups: when the replicated state says the coordinator
//! claimed a due backup for this member (`ClusterState::scheduled_backup`), take it and record
//! how it ended through Raft. Who takes which due time is the core's decision
//! (`rules::schedule`); this only carries it out, once per claim.
//!
//! Wakes only when the replicated state changes.

use std::sync::Arc;
use std::time::Duration;

use pgquorum_core::state::Command;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::ha::Shared;

/// Runs until `cancel`.
pub async fn run(cluster: Cluster, shared: Arc<Shared>, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut applied = cluster.node.sm.subscribe();
    let mut started = None;
    loop {
        let state = applied.borrow_and_update().state.clone();
        if let Some(b) = state.scheduled_backup.filter(|b| b.member == cluster.me.name && b.outcome.is_none())
            && started != Some(b.due)
        {
            started = Some(b.due);
            tracing::info!(due = b.due.0, "taking the scheduled base backup");
            let outcome = match crate::archive::backup::start(
                &shared,
                cluster.clone(),
                state.config.backup.retention.clone(),
            ) {
                Ok((job, _)) => Some(job),
                Err((_, why)) => {
                    tracing::warn!("scheduled base backup: {why}");
                    finish(&cluster, b.due, Err(why)).await;
                    None
                }
            };
            if let Some(job) = outcome {
                let (cluster, due) = (cluster.clone(), b.due);
                tokio::spawn(async move {
                    let res = match job.await {
                        Ok(Ok(m)) => Ok(m.id),
                        Ok(Err(e)) => Err(e),
                        Err(e) => Err(format!("backup task failed: {e}")),
                    };
                    finish(&cluster, due, res).await;
                });
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            changed = applied.changed() => if changed.is_err() { return Ok(()) },
        }
    }
}

/// Records the outcome, retrying while no Raft leader answers.
async fn finish(cluster: &Cluster, due: pgquorum_core::UnixMillis, outcome: Result<String, String>) {
    let cmd = Command::FinishBackup { due, member: cluster.me.name.clone(), outcome };
    for _ in 0..30 {
        match cluster.propose(cmd.clone()).await {
            Ok((Ok(_), _)) => return,
            Ok((Err(e), _)) => {
                tracing::warn!("recording the scheduled backup's outcome: {e}");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    tracing::warn!("could not record the scheduled backup's outcome: no Raft leader answered for 30 s");
}
