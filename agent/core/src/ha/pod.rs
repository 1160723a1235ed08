//! What this member's Kubernetes pod should say about it: the role label
//! (`pgquorum.io/role=primary|replica`, or none), the epoch annotation, and which events to
//! record when the member's state changes.
//!
//! Decided from this member's own published report and the replicated state, never from the
//! labels themselves: labels are an effect of HA, not an input. Pure; the agent's `kube`
//! module carries the result out against the API server.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::observation::{Report, Task};
use crate::Epoch;
use crate::state::{ClusterState, GrantReason};

/// The value of the role label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Holds the grant and the lease, and its Postgres accepts writes.
    Primary,
    /// A standby streaming from the primary.
    Replica,
}

impl Role {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// What the pod should carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRole {
    /// The role label; `None` removes it (stopped, starting, cloning, rewinding, fenced,
    /// promoting, not streaming).
    pub role: Option<Role>,
    /// The highest epoch this member knows: written as the annotation, and a patch is refused
    /// when the pod already carries a higher one (a stale agent never relabels).
    pub epoch: Epoch,
    /// For `Primary`: how long the lease still runs, as of the report. The label is only
    /// applied while it runs.
    pub lease_left: Option<Duration>,
}

/// The role this member's pod should carry.
pub fn pod_role(report: &Report, cluster: &ClusterState) -> PodRole {
    let epoch = report.epoch.max(cluster.epoch);
    let none = PodRole { role: None, epoch, lease_left: None };
    if report.task.is_some() {
        return none;
    }
    let Some(running) = report.postgres.running() else { return none };
    if !running.in_recovery {
        let granted = cluster.primary.as_ref().filter(|p| p.member == report.member && !p.expired);
        let lease = report.lease.filter(|(e, left)| {
            granted.is_some_and(|g| g.epoch == *e) && !left.is_zero() && report.fenced_epoch != Some(*e)
        });
        return match lease {
            Some((_, left)) if epoch == cluster.epoch => {
                PodRole { role: Some(Role::Primary), epoch, lease_left: Some(left) }
            }
            _ => none,
        };
    }
    if running.streaming && running.upstream.is_some() {
        return PodRole { role: Some(Role::Replica), epoch, lease_left: None };
    }
    none
}

/// The kind of an event recorded on the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// This member became the primary.
    Promoted,
    /// The promotion came from a failover (the previous primary's lease ran out, or an
    /// operator forced it).
    Failover,
    /// The promotion came from a planned switchover.
    Switchover,
    /// This member stopped being the primary.
    Demoted,
    /// This member killed its Postgres because it lost the lease.
    Fenced,
    /// A base backup from another member started.
    Clone,
    /// A pg_rewind from another member started.
    Rewind,
}

impl EventKind {
    /// The event's `reason` field (CamelCase, as Kubernetes reasons are).
    pub fn reason(self) -> &'static str {
        match self {
            EventKind::Promoted => "Promoted",
            EventKind::Failover => "Failover",
            EventKind::Switchover => "Switchover",
            EventKind::Demoted => "Demoted",
            EventKind::Fenced => "Fenced",
            EventKind::Clone => "Cloning",
            EventKind::Rewind => "Rewinding",
        }
    }

    /// Whether the event is a warning (rather than normal).
    pub fn warning(self) -> bool {
        matches!(self, EventKind::Fenced | EventKind::Failover)
    }
}

/// One event to record on the pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodEvent {
    /// What happened.
    pub kind: EventKind,
    /// A sentence for `kubectl describe pod`.
    pub message: String,
}

/// The events between two consecutive reports of this member (`prev` is `None` at start).
pub fn pod_events(
    prev: Option<(&Report, PodRole)>,
    next: &Report,
    next_role: PodRole,
    cluster: &ClusterState,
) -> Vec<PodEvent> {
    let mut out = Vec::new();
    let ev = |kind, message: String| PodEvent { kind, message };
    let (prev_report, prev_role) = match prev {
        Some((r, role)) => (Some(r), role.role),
        None => (None, None),
    };
    let was_primary = prev_role == Some(Role::Primary);
    let is_primary = next_role.role == Some(Role::Primary);
    if is_primary && !was_primary {
        let entry =
            cluster.history.iter().rev().find(|h| h.epoch == next_role.epoch && h.member == next.member);
        let from = entry.and_then(|h| h.previous.as_ref()).map(|m| format!(" from {m}")).unwrap_or_default();
        let why = entry.map(|h| h.reason.to_string()).unwrap_or_else(|| "grant".into());
        out.push(ev(EventKind::Promoted, format!("primary of epoch {} ({why}{from})", next_role.epoch)));
        match entry.map(|h| h.reason) {
            Some(GrantReason::Failover | GrantReason::ManualFailover) => out.push(ev(
                EventKind::Failover,
                format!("took over as primary{from} at epoch {}", next_role.epoch),
            )),
            Some(GrantReason::Switchover) => out.push(ev(
                EventKind::Switchover,
                format!("took over as primary{from} at epoch {}", next_role.epoch),
            )),
            _ => {}
        }
    }
    if was_primary && !is_primary {
        let why = match (&next.task, cluster.primary.as_ref()) {
            (_, Some(p)) if p.member != next.member => {
                format!("{} is primary of epoch {}", p.member, p.epoch)
            }
            (Some(Task::Restart), _) => "Postgres stopping".to_string(),
            _ if next.lease.is_none() => "the lease is no longer held".to_string(),
            _ => "no longer a healthy primary".to_string(),
        };
        out.push(ev(EventKind::Demoted, format!("no longer primary: {why}")));
    }
    if let Some(e) = next.fenced_epoch
        && prev_report.is_none_or(|p| p.fenced_epoch != Some(e))
        && !matches!(next.task, Some(Task::Restart))
    {
        out.push(ev(EventKind::Fenced, format!("stopped accepting writes for epoch {e}: its lease ran out")));
    }
    let prev_task = prev_report.and_then(|p| p.task.as_ref());
    match &next.task {
        Some(Task::Clone(from)) if prev_task != next.task.as_ref() => {
            out.push(ev(EventKind::Clone, format!("cloning the data directory from {from} (pg_basebackup)")))
        }
        Some(Task::Rewind(from)) if prev_task != next.task.as_ref() => {
            out.push(ev(EventKind::Rewind, format!("rewinding the data directory from {from} (pg_rewind)")))
        }
        _ => {}
    }
    out
}

#[cfg(test)]
#[path = "pod_tests.rs"]
pub(crate) mod tests;
