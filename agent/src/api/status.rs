//! Builds the management `Status` answer: Raft metrics, the applied cluster state, and every
//! member's last report as this agent holds it (no SQL per request).

use std::collections::BTreeMap;

use openraft::ServerState;
use pgquorum_core::ha::observation::{Postgres, Report, Seen, Task};
use pgquorum_core::state::ClusterState;
use pgquorum_proto::management::{self as pb, HaStatus, MemberStatus, RaftStatus, StatusReply};

use crate::cluster::Cluster;
use crate::ha::Shared;

/// Whether a report received at `seen.received` is too old to describe the member at `now`:
/// the same limit after which the HA core counts the member as unreachable.
pub fn is_stale(seen: &Seen, now: std::time::Duration) -> bool {
    now.saturating_sub(seen.received) > pgquorum_core::ha::HaConfig::default().report_stale_after
}

/// (role, state) of a member from its report, Patroni-style.
pub fn role_and_state(report: &Report, state: &ClusterState) -> (String, String) {
    let granted = state.primary.as_ref().is_some_and(|p| p.member == report.member);
    let task = |t: &Task| match t {
        Task::Initdb => ("bootstrapping", "initialising"),
        Task::Clone(_) => ("cloning", "creating replica"),
        Task::Rewind(_) => ("rewinding", "rewinding"),
        Task::Promote => ("promoting", "promoting"),
        Task::Restart => ("restarting", "stopping"),
    };
    if let Some(t) = &report.task {
        let (r, s) = task(t);
        return (r.into(), s.into());
    }
    let (role, st) = match &report.postgres {
        Postgres::Disabled => ("witness", "running"),
        Postgres::Stopped => ("stopped", "stopped"),
        Postgres::Crashed { .. } => ("crashed", "crashed"),
        Postgres::Starting { .. } => ("starting", "starting"),
        Postgres::Running(r) if !r.in_recovery => (if granted { "primary" } else { "demoting" }, "running"),
        Postgres::Running(r) if r.streaming => (if granted { "promoting" } else { "replica" }, "streaming"),
        Postgres::Running(_) => (if granted { "promoting" } else { "replica" }, "in archive recovery"),
    };
    (role.into(), st.into())
}

fn member_row(
    seen: Option<&Seen>,
    now: std::time::Duration,
    state: &ClusterState,
    primary: Option<&Report>,
) -> MemberStatus {
    let Some(seen) = seen else {
        return MemberStatus { role: "unknown".into(), state: "unreachable".into(), ..Default::default() };
    };
    let age = now.saturating_sub(seen.received);
    if is_stale(seen, now) {
        // Its last report describes a past it may no longer be in (killed, exited, cut off):
        // what the HA core treats as unreachable, status shows as unreachable.
        return MemberStatus {
            role: "unknown".into(),
            state: "unreachable".into(),
            postgres: seen.report.address.clone(),
            report_age_ms: Some(age.as_millis() as u64),
            ..Default::default()
        };
    }
    let rep = &seen.report;
    let (role, st) = role_and_state(rep, state);
    let running = rep.postgres.running();
    let primary_lsn =
        primary.and_then(|p| p.postgres.running()).filter(|r| !r.in_recovery).and_then(|r| r.lsn);
    let is_primary = running.is_some_and(|r| !r.in_recovery);
    let lag = match (running, primary_lsn) {
        (Some(r), Some(p)) if r.in_recovery => r.replay_lsn.or(r.lsn).map(|l| p.saturating_sub(l)),
        (Some(_), Some(_)) if is_primary => Some(0),
        _ => None,
    };
    let sync_state = primary
        .and_then(|p| p.postgres.running())
        .and_then(|r| r.replicas.iter().find(|c| c.name == rep.member.as_str()))
        .map(|c| c.sync_state.clone())
        .unwrap_or_default();
    let mut tags: BTreeMap<String, String> = rep.tags.custom.clone().into_iter().collect();
    if rep.tags.nofailover {
        tags.insert("nofailover".into(), "true".into());
    }
    if rep.tags.nosync {
        tags.insert("nosync".into(), "true".into());
    }
    let lsn_text = |l: Option<pgquorum_core::Lsn>| l.map(|l| l.to_string()).unwrap_or_default();
    MemberStatus {
        role,
        state: st,
        timeline: running.and_then(|r| r.timeline).map(|t| t.0).unwrap_or_default(),
        receive_lsn: lsn_text(running.filter(|r| r.in_recovery).and_then(|r| r.receive_lsn)),
        replay_lsn: lsn_text(running.filter(|r| r.in_recovery).and_then(|r| r.replay_lsn)),
        lsn: lsn_text(running.filter(|r| !r.in_recovery).and_then(|r| r.lsn)),
        lag_bytes: lag,
        sync_state,
        postgres: rep.address.clone(),
        tags: tags.into_iter().collect(),
        report_age_ms: Some(age.as_millis() as u64),
        pending_restart: running.map(|r| r.pending_restart.clone()).unwrap_or_default(),
        problem: rep.problem.as_ref().map(|p| p.message.clone()).unwrap_or_default(),
        problem_kind: rep.problem.as_ref().map(|p| p.kind.as_str().to_string()).unwrap_or_default(),
        failed_starts: rep.problem.as_ref().map_or(0, |p| p.failures),
        ..Default::default()
    }
}

/// This agent's own view of the cluster. Last-contact times are known only on the leader.
pub fn local_status(cluster: &Cluster, shared: &Shared) -> StatusReply {
    let m = cluster.metrics();
    let applied = cluster.applied();
    let state = &applied.state;
    let membership = cluster.membership();
    let leader_id = m.current_leader.unwrap_or_default();
    let leader_name = membership.nodes.get(&leader_id).map(|n| n.name.to_string()).unwrap_or_default();
    let reports = shared.reports.for_members(membership.nodes.values().map(|n| n.name.clone()));
    let now = shared.now();
    let primary_report = state
        .primary
        .as_ref()
        .and_then(|p| reports.get(&p.member))
        .and_then(|s| s.as_ref())
        .map(|s| &s.report);
    let members = membership
        .nodes
        .iter()
        .map(|(id, node)| {
            let voter = membership.voters.contains(id);
            let raft_role = if *id == leader_id && leader_id != 0 {
                "leader"
            } else if *id == m.id && m.state == ServerState::Candidate {
                "candidate"
            } else if voter {
                "follower"
            } else {
                "learner"
            };
            let last_contact_ms = m
                .heartbeat
                .as_ref()
                .and_then(|hb| hb.get(id).cloned().flatten())
                .map(|at| openraft::Instant::elapsed(&*at).as_millis() as u64)
                .or_else(|| (*id == m.id && m.state == ServerState::Leader).then_some(0));
            let matched_index = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index)
                .or_else(|| (*id == m.id).then_some(m.last_log_index).flatten());
            let seen = reports.get(&node.name).and_then(|s| s.as_ref());
            MemberStatus {
                node_id: *id,
                name: node.name.to_string(),
                address: node.grpc.clone(),
                api_url: super::http::api_url(&node.http),
                raft_role: raft_role.to_string(),
                voter,
                last_contact_ms,
                matched_index,
                ..member_row(seen, now, state, primary_report)
            }
        })
        .collect();
    let timeline = primary_report
        .and_then(|r| r.postgres.running())
        .and_then(|r| r.timeline)
        .map(|t| t.0)
        .unwrap_or_default();
    let archiver = primary_report
        .and_then(|r| r.postgres.running())
        .filter(|r| !r.in_recovery)
        .and_then(|r| r.archiver.as_deref().cloned())
        .map(|a| pb::Archiver {
            archived_count: a.archived_count,
            last_archived_wal: a.last_archived_wal,
            last_archived_time: a.last_archived_time,
            failed_count: a.failed_count,
            last_failed_wal: a.last_failed_wal,
            last_failed_time: a.last_failed_time,
            store: a.store,
            pending_files: a.pending_files,
            lag_ms: a.lag_ms,
            last_error: a.last_error,
        });
    let policy = &state.config.backup;
    let any = !policy.schedule.is_empty() || state.scheduled_backup.is_some() || state.last_backup.is_some();
    let backup = any.then(|| {
        let last = state.scheduled_backup.as_ref();
        let next = pgquorum_core::cron::Schedule::parse(&policy.schedule)
            .ok()
            .and_then(|s| s.next_after(crate::ha::observe::wall().0));
        pb::BackupSchedule {
            schedule: policy.schedule.clone(),
            retention: policy.retention.clone(),
            last_due_ms: last.map(|b| b.due.0).unwrap_or_default(),
            last_member: last.map(|b| b.member.to_string()).unwrap_or_default(),
            last_outcome: match last.map(|b| &b.outcome) {
                None => String::new(),
                Some(None) => "running".into(),
                Some(Some(Ok(id))) => format!("ok {id}"),
                Some(Some(Err(e))) => format!("failed: {e}"),
            },
            next_due_ms: next.unwrap_or_default(),
            last_backup_id: state.last_backup.as_ref().map(|b| b.id.clone()).unwrap_or_default(),
            last_backup_member: state.last_backup.as_ref().map(|b| b.member.to_string()).unwrap_or_default(),
            last_backup_ms: state.last_backup.as_ref().map(|b| b.at.0).unwrap_or_default(),
        }
    });
    let switchover = state.switchover.as_ref().map(|s| match &s.to {
        Some(to) => format!("from {} to {to}", s.from),
        None => format!("from {}", s.from),
    });
    StatusReply {
        cluster_name: cluster.node.ident.cluster_name.to_string(),
        cluster_id: state.cluster_id.clone().unwrap_or_default(),
        raft: Some(RaftStatus {
            leader_id,
            leader_name,
            term: m.current_term,
            commit_index: m.local_committed.or(m.cluster_committed).map(|l| l.index).unwrap_or_default(),
            last_log_index: m.last_log_index.unwrap_or_default(),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or_default(),
            answered_by: cluster.me.name.to_string(),
        }),
        members,
        warning: String::new(),
        ha: Some(HaStatus {
            system_identifier: state.system_identifier.map(|s| s.0).unwrap_or_default(),
            primary: state.primary.as_ref().map(|p| p.member.to_string()).unwrap_or_default(),
            epoch: state.epoch.0,
            timeline,
            durability: state.config.durability.to_string(),
            sync_recorded: state.sync.recorded.to_string(),
            sync_target: state.sync.target.to_string(),
            paused: state.paused,
            primary_since_ms: state.primary.as_ref().map(|p| p.since.0).unwrap_or_default(),
            switchover: switchover.unwrap_or_default(),
            coordinator: shared.coordinator_reason.lock().expect("lock is never poisoned").clone(),
            failover: state
                .failover
                .as_ref()
                .map(|f| format!("to {}{}", f.to, if f.force { " (forced)" } else { "" }))
                .unwrap_or_default(),
            archiver,
            backup,
        }),
    }
}
