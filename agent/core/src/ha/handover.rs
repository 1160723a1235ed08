//! Graceful handover on termination: when the primary's agent is asked to stop (SIGTERM from a
//! pod deletion, a drain, a rolling update, `systemctl stop`), whom it hands the primary to
//! through the switchover path, or why it cannot.
//!
//! Pure: the agent gathers the reports and the pods' StatefulSet revisions, carries out the
//! answer (a switchover request, then waiting within the grace period) and stops regardless.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::observation::Report;
use crate::MemberName;
use crate::state::ClusterState;

/// What a stopping agent does first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handover {
    /// Not the primary: nothing to hand over.
    NotPrimary,
    /// Maintenance mode: nobody may be promoted; stop as is.
    Paused,
    /// Hand over to this replica (a switchover to it).
    To(MemberName),
    /// No replica can take over (none streaming, all tagged nofailover): stop as is; the
    /// others fail over when the lease runs out.
    NoCandidate,
}

/// Chooses the handover of `me`, given every member's last report and, where known, the
/// StatefulSet revision each member's pod runs (`controller-revision-hash`).
///
/// Candidates are streaming replicas not tagged `nofailover` and not stopping themselves,
/// which this primary's own report shows connected and streaming (a replica stopped just
/// before it still has a recent report that says streaming). During a rolling update the
/// stopping pod runs the old revision and the pods already replaced run the new one: a
/// replica whose revision differs from ours is preferred, so the update costs one switchover
/// rather than one per pod. Then the most advanced WAL position, the failover priority tag,
/// and the name break ties.
pub fn handover(
    me: &MemberName,
    cluster: &ClusterState,
    reports: &[Report],
    revisions: &BTreeMap<MemberName, String>,
) -> Handover {
    if cluster.primary.as_ref().is_none_or(|p| p.member != *me || p.expired) {
        return Handover::NotPrimary;
    }
    if cluster.paused {
        return Handover::Paused;
    }
    let mine = revisions.get(me);
    let connected =
        reports.iter().find(|r| r.member == *me).and_then(|r| r.postgres.running()).map(|p| &p.replicas);
    let streams_from_me = |r: &Report| {
        connected.is_some_and(|c| c.iter().any(|c| c.name == r.member.as_str() && c.state == "streaming"))
    };
    let best = reports
        .iter()
        .filter(|r| r.member != *me && !r.tags.nofailover && !r.stopping)
        .filter(|r| r.postgres.running().is_some_and(|p| p.in_recovery && p.streaming) && streams_from_me(r))
        .max_by(|a, b| {
            let updated = |r: &Report| match (mine, revisions.get(&r.member)) {
                (Some(m), Some(theirs)) => theirs != m,
                _ => false,
            };
            let lsn = |r: &Report| r.postgres.running().and_then(|p| p.lsn);
            updated(a)
                .cmp(&updated(b))
                .then(lsn(a).cmp(&lsn(b)))
                .then(a.tags.failover_priority.cmp(&b.tags.failover_priority))
                .then(b.member.cmp(&a.member))
        });
    match best {
        Some(r) => Handover::To(r.member.clone()),
        None => Handover::NoCandidate,
    }
}

/// Whom a stopping Raft leader hands leadership to, of `voters` (in their order): another
/// voter that answers its heartbeats and does not say it stops too (when every member stops,
/// the others may be stopping or gone), the primary's member only when no other can (the Raft
/// leader is kept off it). `None`: it stops as leader.
pub fn leadership_target<'a>(
    me: &MemberName,
    voters: &'a [MemberName],
    answering: &BTreeSet<MemberName>,
    reports: &[Report],
    primary: Option<&MemberName>,
) -> Option<&'a MemberName> {
    let mut usable =
        voters.iter().filter(|v| *v != me && answering.contains(*v) && !reports_stopping(reports, v));
    let first = usable.clone().find(|v| Some(*v) != primary);
    first.or_else(|| usable.next())
}

/// Whether `member`'s report says it is stopping: it is no target for a handover, and a
/// stopping leader waiting for it to take Raft leadership waits no longer.
pub fn reports_stopping(reports: &[Report], member: &MemberName) -> bool {
    reports.iter().any(|r| r.member == *member && r.stopping)
}

#[cfg(test)]
#[path = "handover_tests.rs"]
mod tests;
