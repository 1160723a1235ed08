//! Planned switchover: the coordinator names a target when none was given, the primary waits
//! until the target is close behind, checkpoints and shuts down cleanly (its WAL reaches the
//! standbys), then gives the role up; the coordinator's usual phase 1 then promotes the target,
//! which provably holds everything (`candidate.rs`), and the old primary follows it without a
//! rewind (it stopped cleanly behind the switch point).

use crate::ha::observation::{Observation, Report, Running};
use crate::ha::plan::{Action, Decision, Reason};
use crate::state::{Command, PrimaryGrant, SwitchoverRequest};
use crate::{MemberName, UnixMillis};

/// A switchover that has not completed within this long is cancelled.
pub const TIMEOUT_MS: u64 = 60_000;

/// How long after a switchover to any member falls due the coordinator waits for a replica to
/// show up in the primary's replication state before it gives up: a settled primary reads that
/// state only about once a second (`ha.status_interval`), so a replica that just started
/// streaming may not be in the report the coordinator holds when the request arrives.
pub const CANDIDATE_WAIT_MS: u64 = 3_000;

/// The target must be within this many bytes of the primary before it shuts down.
pub const CATCH_UP_BYTES: u64 = 16 << 20;

/// The pending switchover from `primary`, if its time has come.
pub fn due<'a>(obs: &'a Observation, primary: &MemberName) -> Option<&'a SwitchoverRequest> {
    let r = obs.cluster.switchover.as_ref()?;
    (&r.from == primary && r.not_before.is_none_or(|t| obs.wall >= t)).then_some(r)
}

fn started(r: &SwitchoverRequest) -> UnixMillis {
    r.not_before.unwrap_or(r.requested_at).max(r.requested_at)
}

/// The coordinator's part while the primary still holds its lease: drop a lapsed or late
/// request, and name a target when none was given.
pub fn coordinate(obs: &Observation, grant: &PrimaryGrant, primary: &Report) -> Option<Decision> {
    let r = obs.cluster.switchover.as_ref()?;
    if r.from != grant.member {
        return Some(Decision::act(
            Reason::SwitchoverLapsed,
            vec![Action::Propose(Command::ClearSwitchover)],
        ));
    }
    if obs.wall.0 >= started(r).0 + TIMEOUT_MS {
        return Some(Decision::act(
            Reason::SwitchoverTimedOut,
            vec![Action::Propose(Command::ClearSwitchover)],
        ));
    }
    due(obs, &grant.member)?;
    if r.to.is_some() {
        return None;
    }
    match best_target(obs, &grant.member, primary.postgres.running()?) {
        Some(to) => {
            let cmd = Command::SetSwitchoverTarget { from: grant.member.clone(), to };
            Some(Decision::act(Reason::Switchover, vec![Action::Propose(cmd)]))
        }
        None if obs.wall.0 < started(r).0 + CANDIDATE_WAIT_MS => None,
        None => Some(Decision::act(
            Reason::NoSwitchoverCandidate,
            vec![Action::Propose(Command::ClearSwitchover)],
        )),
    }
}

/// The streaming replica furthest ahead (then priority, then name) that may be promoted.
fn best_target(obs: &Observation, primary: &MemberName, running: &Running) -> Option<MemberName> {
    let mut options: Vec<(Option<crate::Lsn>, i32, MemberName)> = running
        .replicas
        .iter()
        .filter(|c| c.state == "streaming")
        .filter_map(|c| {
            let m = MemberName::new(c.name.clone()).ok()?;
            let rep = &obs.peers.get(&m)?.as_ref()?.report;
            (m != *primary && !rep.tags.nofailover && rep.postgres.running().is_some_and(|r| r.in_recovery))
                .then_some((c.flush_lsn, rep.tags.failover_priority, m))
        })
        .collect();
    options.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    options.into_iter().next().map(|(_, _, m)| m)
}

/// Whether `to` streams from this primary and is within `CATCH_UP_BYTES` of it.
pub fn target_caught_up(running: &Running, to: &MemberName) -> bool {
    let Some(mine) = running.lsn else { return false };
    running.replicas.iter().any(|c| {
        c.name == to.as_str()
            && c.state == "streaming"
            && c.flush_lsn.is_some_and(|f| mine.saturating_sub(f) <= CATCH_UP_BYTES)
    })
}
