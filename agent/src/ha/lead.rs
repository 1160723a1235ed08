//! Carrying out the coordinator's actions (on the Raft leader).

use pgquorum_core::ha::observation::{Observation, Report};
use pgquorum_core::ha::plan::Action;
use pgquorum_core::ha::rules::lease::coordinator_ttl;
use pgquorum_proto::peer::StopStreamingRequest;

use super::Ha;

impl Ha {
    /// Executes one coordinator action.
    pub(super) async fn exec_coord(&mut self, obs: &Observation, action: &Action) -> Result<(), String> {
        let now = self.shared.now();
        match action {
            Action::Expire { epoch } => {
                let (ttl, margin) = (coordinator_ttl(&obs.cluster), obs.cluster.config.lease_margin);
                if !self.shared.coord.try_expire(*epoch, ttl, margin, now) {
                    return Err(format!("epoch {epoch} was renewed meanwhile"));
                }
                let who = obs.cluster.primary.as_ref().map_or("-".to_string(), |p| p.member.to_string());
                tracing::warn!(epoch = %epoch, "the lease of primary {who} ran out; failing over");
            }
            Action::StopStreaming { epoch, members } => {
                self.shared.coord.note_stop_requested(*epoch, now);
                for m in members {
                    if *m == obs.me {
                        self.shared.stop_streaming(*epoch);
                        continue;
                    }
                    let Some(node) = self.cluster.membership().nodes.into_values().find(|n| &n.name == m)
                    else {
                        continue;
                    };
                    let (cluster, shared) = (self.cluster.clone(), self.shared.clone());
                    let epoch = epoch.0;
                    tokio::spawn(async move {
                        let Ok(mut c) = cluster.peer_client(&node.grpc) else { return };
                        let mut req = tonic::Request::new(StopStreamingRequest {
                            cluster_name: cluster.node.ident.cluster_name.to_string(),
                            epoch,
                        });
                        req.set_timeout(std::time::Duration::from_millis(800));
                        // The answer carries the member's report after it stopped streaming: no
                        // need to wait for the next poll.
                        if let Ok(reply) = c.stop_streaming(req).await
                            && let Ok(report) = serde_json::from_slice::<Report>(&reply.get_ref().report)
                            && report.member == node.name
                        {
                            shared.reports.put(report, shared.now());
                            shared.wake.notify_one();
                        }
                    });
                }
            }
            Action::TransferLeadership { to } => {
                self.shared.coord.note_transfer(now);
                if let Some(id) = self.cluster.membership().id_of(to.as_str()) {
                    tracing::info!("handing Raft leadership to {to} to keep it off the primary's node");
                    self.cluster.node.raft.trigger().transfer_leader(id).await.map_err(|e| e.to_string())?;
                }
            }
            Action::Propose(cmd) => {
                if self.local.coord_proposal.as_ref().is_some_and(|h| !h.is_finished()) {
                    return Ok(());
                }
                let (cluster, cmd) = (self.cluster.clone(), cmd.clone());
                // The term this coordinator decided in: only its own leadership commits it.
                let term = self.local.coord_term;
                tracing::info!("coordinator proposes: {cmd}");
                self.local.coord_proposal = Some(tokio::spawn(async move {
                    match cluster.propose_as_leader(cmd.clone(), term).await {
                        Ok((Ok(_), _)) => {}
                        Ok((Err(e), _)) => tracing::warn!("{cmd}: refused: {e}"),
                        Err(e) => tracing::warn!("{cmd}: {e}"),
                    }
                }));
            }
            other => return Err(format!("{other:?} is not a coordinator action")),
        }
        Ok(())
    }
}
