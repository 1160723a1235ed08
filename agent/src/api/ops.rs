//! Operations the management API offers beyond status and configuration: switchover, manual
//! failover, pause/resume, restart, reload, history, adding a member.
//!
//! Owns validation and operator-facing wording (what is wrong, what to do); the decisions of
//! the HA core then carry the requests out. Calls that need the Raft leader arrive here already
//! forwarded (see `management.rs`).

use pgquorum_core::ha::observation::Postgres;
use pgquorum_core::state::{Command, CommandError, FailoverRequest, MemberNode, SwitchoverRequest as Req};
use pgquorum_core::{MemberName, UnixMillis};
use pgquorum_proto::management as pb;
use tonic::Status;

use super::ManagementApi;
use crate::ha::observe::wall;

fn precondition(msg: impl Into<String>) -> Status {
    Status::failed_precondition(msg.into())
}

fn member(api: &ManagementApi, name: &str) -> Result<MemberName, Status> {
    let m = MemberName::new(name).map_err(Status::invalid_argument)?;
    if api.cluster.membership().id_of(name).is_none() {
        let names: Vec<String> =
            api.cluster.membership().nodes.values().map(|n| n.name.to_string()).collect();
        return Err(Status::invalid_argument(format!(
            "no member named {name}; members are {}",
            names.join(", ")
        )));
    }
    Ok(m)
}

async fn propose(api: &ManagementApi, cmd: Command) -> Result<(), Status> {
    let (res, _) = api.cluster.propose(cmd).await.map_err(|e| Status::unavailable(e.to_string()))?;
    res.map(|_| ()).map_err(|e| match e {
        CommandError::SwitchoverPending { .. } => Status::already_exists(e.to_string()),
        other => precondition(other.to_string()),
    })
}

/// Whether `m`'s last report (fresh) shows a writable Postgres holding the current lease.
fn healthy_primary(api: &ManagementApi, m: &MemberName) -> bool {
    let state = &api.cluster.applied().state;
    let Some(grant) = state.primary.as_ref().filter(|p| &p.member == m && !p.expired) else { return false };
    let reports = api.shared.reports.for_members([m.clone()]);
    reports.get(m).and_then(|s| s.as_ref()).is_some_and(|s| {
        api.shared.now().saturating_sub(s.received).as_secs() < 2
            && s.report.postgres.is_writable()
            && s.report.lease.is_some_and(|(e, _)| e == grant.epoch)
    })
}

/// A replica that could take over: reports fresh, streams, may be promoted.
fn check_target(api: &ManagementApi, to: &MemberName) -> Result<(), Status> {
    let reports = api.shared.reports.for_members([to.clone()]);
    let Some(seen) = reports.get(to).and_then(|s| s.as_ref()) else {
        return Err(precondition(format!("{to} has not reported its state; is its agent running?")));
    };
    let r = &seen.report;
    if r.tags.nofailover {
        return Err(precondition(format!("{to} is tagged nofailover and is never promoted")));
    }
    match &r.postgres {
        Postgres::Running(p) if p.in_recovery && p.streaming => Ok(()),
        Postgres::Disabled => Err(precondition(format!("{to} is a witness (no Postgres)"))),
        _ => Err(precondition(format!("{to} is not a streaming replica right now; see pgquorumctl status"))),
    }
}

/// `Switchover`: validated on the leader, then recorded for the coordinator.
pub async fn switchover(
    api: &ManagementApi,
    req: pb::SwitchoverRequest,
) -> Result<pb::SwitchoverReply, Status> {
    let state = api.cluster.applied().state.clone();
    if state.paused {
        return Err(precondition(
            "the cluster is paused (maintenance mode): resume it first with pgquorumctl resume",
        ));
    }
    let Some(primary) = state.primary.as_ref().filter(|p| !p.expired) else {
        return Err(precondition(
            "there is no primary to switch over from; use pgquorumctl failover --to MEMBER",
        ));
    };
    if !healthy_primary(api, &primary.member) {
        return Err(precondition(format!(
            "the primary {} is not healthy right now; a switchover needs it to hand over cleanly (use failover if it is down)",
            primary.member
        )));
    }
    let to = if req.to.is_empty() {
        None
    } else {
        let to = member(api, &req.to)?;
        if to == primary.member {
            return Err(Status::invalid_argument(format!("{to} is already the primary")));
        }
        check_target(api, &to)?;
        Some(to)
    };
    let now = wall();
    if req.at_ms != 0 && req.at_ms + 1000 < now.0 {
        return Err(Status::invalid_argument("the requested time is in the past"));
    }
    let not_before = (req.at_ms > now.0).then_some(UnixMillis(req.at_ms));
    let r = Req { from: primary.member.clone(), to: to.clone(), not_before, requested_at: now };
    propose(api, Command::RequestSwitchover(r)).await?;
    Ok(pb::SwitchoverReply {
        from: primary.member.to_string(),
        to: to.map(|t| t.to_string()).unwrap_or_default(),
    })
}

/// `CancelSwitchover`: drops a switchover scheduled for later, before it starts.
pub async fn cancel_switchover(api: &ManagementApi) -> Result<pb::CancelSwitchoverReply, Status> {
    let state = api.cluster.applied().state.clone();
    let Some(r) = state.switchover else {
        return Err(Status::not_found("no switchover is scheduled"));
    };
    if r.not_before.is_none_or(|t| t.0 <= wall().0) {
        return Err(precondition(format!(
            "the switchover from {} has started; it completes, or is cancelled by the coordinator if it cannot",
            r.from
        )));
    }
    propose(api, Command::ClearSwitchover).await?;
    Ok(pb::CancelSwitchoverReply {
        from: r.from.to_string(),
        to: r.to.map(|t| t.to_string()).unwrap_or_default(),
    })
}

/// `Failover`: only when there is no healthy primary.
pub async fn failover(api: &ManagementApi, req: pb::FailoverRequest) -> Result<pb::FailoverReply, Status> {
    if req.to.is_empty() {
        return Err(Status::invalid_argument("name the member to promote: pgquorumctl failover --to MEMBER"));
    }
    let to = member(api, &req.to)?;
    let state = api.cluster.applied().state.clone();
    let from = state.primary.as_ref().map(|p| p.member.clone());
    if let Some(p) = &from
        && healthy_primary(api, p)
    {
        return Err(precondition(format!(
            "{p} is a healthy primary; use pgquorumctl switchover --to {to} for a planned hand-over"
        )));
    }
    let r = FailoverRequest { to, force: req.force, requested_at: wall() };
    propose(api, Command::RequestFailover(r)).await?;
    Ok(pb::FailoverReply { from: from.map(|f| f.to_string()).unwrap_or_default() })
}

/// `Pause`: maintenance mode on or off.
pub async fn pause(api: &ManagementApi, req: pb::PauseRequest) -> Result<pb::PauseReply, Status> {
    propose(api, Command::SetPaused { paused: req.paused }).await?;
    Ok(pb::PauseReply {})
}

/// `History`.
pub fn history(api: &ManagementApi) -> pb::HistoryReply {
    let state = api.cluster.applied().state.clone();
    let entries = state
        .history
        .iter()
        .map(|h| pb::HistoryEntry {
            epoch: h.epoch.0,
            member: h.member.to_string(),
            previous: h.previous.as_ref().map(|p| p.to_string()).unwrap_or_default(),
            reason: h.reason.to_string(),
            at_ms: h.at.0,
            lsn: h.lsn.map(|l| l.to_string()).unwrap_or_default(),
            timeline: h.timeline.map(|t| t.0).unwrap_or_default(),
        })
        .collect();
    pb::HistoryReply { entries }
}

/// `AddMember` on the leader: ask the agent at `address` who it is, then add it.
pub async fn add_member(
    api: &ManagementApi,
    req: pb::AddMemberRequest,
) -> Result<pb::AddMemberReply, Status> {
    let name = MemberName::new(req.name.clone()).map_err(Status::invalid_argument)?;
    let mut client = api.cluster.peer_client(&req.address).map_err(Status::invalid_argument)?;
    let hello = pgquorum_proto::peer::HelloRequest {
        cluster_name: api.cluster.node.ident.cluster_name.to_string(),
        from_member: api.cluster.me.name.to_string(),
    };
    let reply = client
        .hello(hello)
        .await
        .map_err(|s| {
            precondition(format!("no agent of this cluster answers at {}: {}", req.address, s.message()))
        })?
        .into_inner();
    if reply.member != name.as_str() {
        return Err(precondition(format!("the agent at {} is {}, not {name}", req.address, reply.member)));
    }
    if reply.initialized && api.cluster.membership().nodes.contains_key(&reply.node_id) {
        return Err(Status::already_exists(format!("{name} is already a member")));
    }
    let node: MemberNode = serde_json::from_slice(&reply.node).unwrap_or(MemberNode {
        name: name.clone(),
        grpc: req.address.clone(),
        ..Default::default()
    });
    api.cluster
        .join(reply.node_id, node)
        .await
        .map_err(|e| precondition(e.trim_start_matches("refused: ").to_string()))?;
    let m = api.cluster.membership();
    let voters = m.voters.iter().filter_map(|id| m.nodes.get(id)).map(|n| n.name.to_string()).collect();
    Ok(pb::AddMemberReply { voters })
}
