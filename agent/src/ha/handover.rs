//! Before a stopping agent leaves (SIGTERM: pod deletion, drain, rolling update,
//! `systemctl stop`): a primary hands its role to the best replica through the switchover
//! path, and a Raft leader hands leadership to another voter. Both bounded by the handover
//! timeout, after which the agent stops regardless (the cluster then fails over as usual).
//!
//! Runs while the HA loop still runs (it carries the switchover out). The choice is the core's
//! (`pgquorum_core::ha::handover`); this file only gathers inputs and waits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pgquorum_core::MemberName;
use pgquorum_core::ha::handover::{Handover, handover, leadership_target, reports_stopping};
use pgquorum_core::ha::observation::Report;
use pgquorum_core::state::{Command, SwitchoverRequest};
use tokio::time::Instant;

use super::Shared;
use super::observe::wall;
use crate::cluster::Cluster;
use crate::kube::KubeSettings;

/// How long a stopping agent waits for the HA loop's fresh report before choosing.
const FRESH_REPORT_WITHIN: Duration = Duration::from_secs(1);

/// Hands over what this member holds, within `timeout`.
pub async fn before_stop(
    cluster: &Cluster,
    shared: &Shared,
    me: &MemberName,
    kube: &KubeSettings,
    timeout: Duration,
) {
    if timeout.is_zero() {
        return;
    }
    let deadline = Instant::now() + timeout;
    // A report that says this member stops, from a tick that read Postgres after the request:
    // peers stop counting on it, and this primary's own view of who streams from it is fresh
    // (replicas stopped just before it are no longer candidates).
    let mut published = shared.published.subscribe();
    shared.request_stop();
    let fresh = published.wait_for(|r| r.as_ref().is_some_and(|r| r.stopping));
    if tokio::time::timeout(FRESH_REPORT_WITHIN, fresh).await.is_err() {
        tracing::debug!("no fresh report within {FRESH_REPORT_WITHIN:?}; handing over with the last one");
    }
    let state = cluster.applied().state.clone();
    let revisions = if kube.active() {
        tokio::time::timeout(Duration::from_secs(1), crate::kube::revisions(kube)).await.unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    let reports: Vec<_> = shared.reports.all().into_iter().map(|s| s.report).collect();
    match handover(me, &state, &reports, &revisions) {
        Handover::To(to) => hand_primary(cluster, me, to, deadline).await,
        Handover::NoCandidate => tracing::warn!(
            "stopping the primary with no replica able to take over; the cluster fails over when the lease runs out"
        ),
        Handover::Paused => tracing::warn!("stopping the primary in maintenance mode: no handover"),
        Handover::NotPrimary => {}
    }
    hand_leadership(cluster, shared, &reports, deadline).await;
}

async fn hand_primary(cluster: &Cluster, me: &MemberName, to: MemberName, deadline: Instant) {
    tracing::info!("stopping: handing the primary over to {to} first (switchover)");
    let req =
        SwitchoverRequest { from: me.clone(), to: Some(to.clone()), not_before: None, requested_at: wall() };
    match tokio::time::timeout_at(deadline, cluster.propose(Command::RequestSwitchover(req))).await {
        Ok(Ok((Ok(_), _))) => {}
        Ok(Ok((Err(e), _))) => {
            tracing::warn!("the switchover to {to} was refused ({e}); stopping without a handover");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!("could not request the switchover to {to} ({e}); stopping without a handover");
            return;
        }
        Err(_) => {
            tracing::warn!("no answer to the switchover request in time; stopping without a handover");
            return;
        }
    }
    let mut applied = cluster.node.sm.subscribe();
    let mut seen_request = false;
    loop {
        let (primary, pending) = {
            let a = applied.borrow_and_update();
            (a.state.primary.clone(), a.state.switchover.is_some())
        };
        seen_request |= pending;
        match primary {
            Some(p) if p.member != *me => {
                tracing::info!("{} is primary of epoch {}; stopping", p.member, p.epoch);
                return;
            }
            Some(_) if seen_request && !pending => {
                tracing::warn!("the switchover to {to} was cancelled; stopping without a handover");
                return;
            }
            _ => {}
        }
        if tokio::time::timeout_at(deadline, applied.changed()).await.is_err() {
            tracing::warn!("the handover to {to} did not complete in time; stopping anyway");
            return;
        }
    }
}

/// If this agent leads Raft, makes the voter the core chooses (`leadership_target`) the leader.
/// Waits for it to lead, up to 3 s, and no longer once its report says it is stopping too (it
/// was not when the choice was made: members stopped together, by `local down` or a rollout).
async fn hand_leadership(cluster: &Cluster, shared: &Shared, reports: &[Report], deadline: Instant) {
    let my_id = cluster.node.ident.node_id;
    if cluster.leader().is_none_or(|(id, _)| id != my_id) {
        return;
    }
    let m = cluster.membership();
    let name_of = |id: &u64| m.nodes.get(id).map(|n| n.name.clone());
    let voters: Vec<MemberName> = m.voters.iter().filter_map(name_of).collect();
    let answering: BTreeSet<MemberName> = cluster
        .answering(cluster.answered_within(Duration::from_secs(1)))
        .iter()
        .filter_map(name_of)
        .collect();
    let primary = cluster.applied().state.primary.clone().map(|p| p.member);
    let me = name_of(&my_id).unwrap_or_else(|| cluster.me.name.clone());
    let Some(name) = leadership_target(&me, &voters, &answering, reports, primary.as_ref()).cloned() else {
        tracing::info!("stopping as Raft leader: no other voter answers and stays");
        return;
    };
    let Some(to) = m.id_of(name.as_str()) else { return };
    tracing::info!("stopping: handing Raft leadership to {name}");
    if let Err(e) = cluster.node.raft.trigger().transfer_leader(to).await {
        tracing::warn!("leadership transfer to {name}: {e}");
        return;
    }
    let wait = async {
        while cluster.leader().is_some_and(|(id, _)| id == my_id) {
            let reports: Vec<_> = shared.reports.all().into_iter().map(|s| s.report).collect();
            if reports_stopping(&reports, &name) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    };
    let bound = deadline.min(Instant::now() + Duration::from_secs(3));
    match tokio::time::timeout_at(bound, wait).await {
        Ok(true) => {}
        Ok(false) => tracing::info!("{name} is stopping too; stopping without waiting for it to lead"),
        Err(_) => tracing::warn!("Raft leadership did not move to {name} in time; stopping anyway"),
    }
}
