//! Scheduled base backups: the coordinator claims each due time of `backup.schedule` for
//! exactly one member through Raft (a streaming replica when there is one, else the primary).
//! A claim is recorded before anyone starts, so a new coordinator after a failover never takes
//! the same due time twice; a due time missed by less than `CATCH_UP_MS` (no leader, a
//! failover) is still taken; a claim whose member stalls is handed to another member.

use crate::cron::Schedule;
use crate::ha::config::HaConfig;
use crate::ha::observation::{Observation, Postgres};
use crate::state::Command;
use crate::{MemberName, UnixMillis};

/// A due time missed by at most this long is still taken.
pub const CATCH_UP_MS: u64 = 10 * 60_000;
/// A claim whose member has not been seen running Postgres for this long goes to another.
pub const STALL_MS: u64 = 30_000;

/// The latest due time in `(now - CATCH_UP_MS, now]`.
fn latest_due(s: &Schedule, now: u64) -> Option<u64> {
    let mut t = now.saturating_sub(CATCH_UP_MS);
    let mut due = None;
    while let Some(n) = s.next_after(t).filter(|n| *n <= now) {
        due = Some(n);
        t = n;
    }
    due
}

/// Members that could take a backup now: streaming replicas first (by name), then the primary.
fn takers<'a>(obs: &'a Observation, cfg: &HaConfig, primary: &'a MemberName) -> Vec<&'a MemberName> {
    let mut replicas: Vec<&MemberName> = Vec::new();
    let mut primary_up = false;
    for (m, s) in &obs.peers {
        let Some(s) = s.as_ref().filter(|s| obs.now.saturating_sub(s.received) <= cfg.report_stale_after)
        else {
            continue;
        };
        match &s.report.postgres {
            Postgres::Running(r) if r.in_recovery && r.streaming => replicas.push(m),
            Postgres::Running(r) if !r.in_recovery && m == primary => primary_up = true,
            _ => {}
        }
    }
    replicas.sort();
    if primary_up {
        replicas.push(primary);
    }
    replicas
}

/// The claim to propose now, if any.
pub fn next(obs: &Observation, cfg: &HaConfig, primary: &MemberName) -> Option<Command> {
    let sched = obs.cluster.config.backup.schedule.as_str();
    let sched = (!sched.is_empty()).then(|| Schedule::parse(sched).ok()).flatten()?;
    let now = obs.wall.0;
    let takers = takers(obs, cfg, primary);
    let claim = |due: u64, member: &MemberName| Command::ClaimBackup {
        due: UnixMillis(due),
        member: member.clone(),
        at: obs.wall,
    };
    if let Some(b) = &obs.cluster.scheduled_backup
        && b.outcome.is_none()
    {
        let stalled = now >= b.claimed_at.0 + STALL_MS && !takers.contains(&&b.member);
        let other = takers.iter().find(|m| ***m != b.member)?;
        return stalled.then(|| claim(b.due.0, other));
    }
    let due = latest_due(&sched, now)?;
    if obs.cluster.scheduled_backup.as_ref().is_some_and(|b| b.due.0 >= due) {
        return None;
    }
    takers.first().map(|m| claim(due, m))
}
