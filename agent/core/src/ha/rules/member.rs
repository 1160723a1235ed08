//! What the local Postgres should be doing: be the primary (initdb, start, promote, upkeep), or
//! follow the primary (clone, rewind, start as standby, re-point), given the grant in the
//! replicated state, this member's lease and the primary's last report.
//!
//! Postgres becomes writable only while the lease for the current grant is held; `lease.rs`
//! fences it otherwise, and that check runs before anything here.

use crate::ha::config::HaConfig;
use crate::ha::observation::{Data, DataDir, Observation, Postgres, Report, Running, Task};
use crate::ha::plan::{Action, Decision, Reason};
use crate::ha::rules::lease;
use crate::ha::rules::rejoin::{self, Compat};
use crate::ha::rules::restart;
use crate::ha::rules::switchover;
use crate::state::{Command, PrimaryGrant};
use crate::{MemberName, Timeline};

/// The member's decision (after lease upkeep, which the caller prepends).
pub fn decide(obs: &Observation, cfg: &HaConfig) -> Decision {
    if let Data::Unusable(_) = &obs.local.data {
        return Decision::wait(Reason::UnusableData);
    }
    if let (Data::Present(d), Some(recorded)) = (&obs.local.data, obs.cluster.system_identifier)
        && d.system_identifier != recorded
    {
        return Decision::wait(Reason::ForeignData);
    }
    if obs.local.task.is_some() {
        return Decision::wait(Reason::TaskRunning);
    }
    let d = match &obs.cluster.primary {
        Some(p) if p.member == obs.me => as_primary(obs, p),
        primary => as_replica(obs, cfg, primary.as_ref()),
    };
    restart::hold(obs, cfg, d)
}

fn backing_off(obs: &Observation, cfg: &HaConfig, task: &Task) -> bool {
    obs.local
        .last_failure
        .as_ref()
        .is_some_and(|(t, _, at)| t == task && obs.now < *at + cfg.retry_after_failure)
}

fn as_primary(obs: &Observation, grant: &PrimaryGrant) -> Decision {
    // An epoch this member fenced itself for (or stopped for a switchover) is never written in
    // again, even while its lease lasts.
    let fenced = obs.local.fenced_epoch == Some(grant.epoch);
    let holds = lease::holds_lease(obs) && !fenced;
    let cfg = &obs.cluster.config;
    match (&obs.local.postgres, &obs.local.data) {
        (Postgres::Stopped | Postgres::Crashed { .. }, Data::Missing) => {
            if obs.cluster.system_identifier.is_none() {
                Decision::act(Reason::Bootstrapping, vec![Action::Initdb])
            } else {
                // Granted, but the data is gone: give the role back so someone else can lead.
                Decision::act(
                    Reason::UnusableData,
                    vec![Action::Propose(Command::ReleasePrimary { epoch: grant.epoch })],
                )
            }
        }
        (Postgres::Stopped | Postgres::Crashed { .. }, Data::Present(d)) => {
            if obs.cluster.system_identifier.is_none() {
                let record = Command::RecordSystemIdentifier {
                    system_identifier: d.system_identifier,
                    member: obs.me.clone(),
                };
                return Decision::act(Reason::Bootstrapping, vec![Action::Propose(record)]);
            }
            let switching = obs.cluster.switchover.as_ref().is_some_and(|r| r.from == obs.me);
            if fenced && switching && d.was_primary && d.clean_shutdown {
                // Stopped cleanly for the switchover: every commit is in the standbys' WAL.
                return Decision::act(
                    Reason::Switchover,
                    vec![Action::DropLease, Action::Propose(Command::ReleasePrimary { epoch: grant.epoch })],
                );
            }
            if let Some(since) = obs.local.down_since
                && obs.now >= since + cfg.primary_start_timeout
            {
                return Decision::act(
                    Reason::PrimaryStartTimeout,
                    vec![
                        Action::Fence,
                        Action::DropLease,
                        Action::Propose(Command::ReleasePrimary { epoch: grant.epoch }),
                    ],
                );
            }
            if !holds {
                return Decision::wait(Reason::BecomingPrimary);
            }
            let reason =
                if obs.local.down_since.is_some() { Reason::RestartInPlace } else { Reason::BecomingPrimary };
            // A standby's data becomes primary only through promotion (a new timeline); started
            // without standby.signal it would reuse the old timeline with different contents.
            let action =
                if d.was_primary { Action::StartPrimary } else { Action::StartReplica { upstream: None } };
            Decision::act(reason, vec![action])
        }
        (Postgres::Starting { .. }, _) => Decision::wait(Reason::BecomingPrimary),
        (Postgres::Running(r), _) if r.in_recovery => {
            if holds {
                Decision::act(
                    Reason::BecomingPrimary,
                    vec![Action::Promote { sync: obs.cluster.sync.target.clone() }],
                )
            } else {
                Decision::wait(Reason::BecomingPrimary)
            }
        }
        (Postgres::Running(r), _) => primary_upkeep(obs, r),
        (Postgres::Disabled, _) => Decision::wait(Reason::Witness),
        (_, Data::Unusable(_)) => Decision::wait(Reason::UnusableData),
    }
}

fn primary_upkeep(obs: &Observation, r: &Running) -> Decision {
    if obs.local.restart_requested {
        return Decision::act(Reason::RestartRequested, vec![Action::RestartPostgres]);
    }
    let sync = &obs.cluster.sync;
    // A change of the synchronous set in flight is finished first: the next primary is chosen
    // by the recorded set, and a member recorded but not yet streaming (an old primary still
    // rejoining) would leave no provably complete candidate once this one stops.
    let sync_settled =
        sync.recorded == sync.target && r.synchronous_standby_names == sync.target.to_postgres();
    if let Some(req) = switchover::due(obs, &obs.me)
        && let Some(to) = &req.to
        && sync_settled
    {
        if switchover::target_caught_up(r, to) {
            return Decision::act(Reason::Switchover, vec![Action::StopForSwitchover]);
        }
        return Decision::wait(Reason::WaitingForSwitchoverTarget);
    }
    let mut actions = Vec::new();
    let target = &sync.target;
    if r.synchronous_standby_names != target.to_postgres() {
        actions.push(Action::ApplySync { sync: target.clone() });
    }
    let mut wanted: Vec<MemberName> =
        obs.peers.keys().filter(|m| **m != obs.me && !is_witness(obs, m)).cloned().collect();
    wanted.sort();
    let mut have: Vec<String> = r.slots.iter().filter(|s| s.starts_with("pgquorum_")).cloned().collect();
    have.sort();
    let mut want_slots: Vec<String> = wanted.iter().map(MemberName::slot_name).collect();
    want_slots.sort();
    if have != want_slots {
        actions.push(Action::Slots { members: wanted });
    }
    let reason = if actions.is_empty() { Reason::Steady } else { Reason::PrimaryUpkeep };
    Decision::act(reason, actions)
}

fn is_witness(obs: &Observation, m: &MemberName) -> bool {
    obs.peers.get(m).and_then(|s| s.as_ref()).is_some_and(|s| s.report.postgres == Postgres::Disabled)
}

/// The primary's fresh report, when it is running Postgres (as primary, or still promoting).
pub fn primary_report<'a>(obs: &'a Observation, cfg: &HaConfig, primary: &MemberName) -> Option<&'a Report> {
    let seen = obs.peers.get(primary)?.as_ref()?;
    let fresh = obs.now.saturating_sub(seen.received) <= cfg.report_stale_after;
    (fresh && seen.report.postgres.running().is_some()).then_some(&seen.report)
}

/// The primary's timeline, once it is writable: only then does its report carry the history of
/// the timeline it is on (a member still promoting would make every replica look diverged).
pub fn primary_timeline(report: &Report) -> Option<Timeline> {
    report.postgres.running().filter(|r| !r.in_recovery).and_then(|r| r.timeline)
}

fn as_replica(obs: &Observation, cfg: &HaConfig, grant: Option<&PrimaryGrant>) -> Decision {
    let primary = grant.map(|g| &g.member);
    let report = primary.and_then(|p| primary_report(obs, cfg, p));
    // Stop streaming only when asked for this epoch and the expiry is recorded in Raft: if the
    // coordinator that asked lost its leadership before recording it, the primary may renew
    // with the next one, and replicas must follow it again.
    let stopped = |g: &PrimaryGrant| g.expired && obs.local.stop_streaming_for.is_some_and(|e| e >= g.epoch);
    let upstream = match grant {
        Some(g) if !stopped(g) => Some(g.member.clone()),
        _ => None,
    };
    let reason = if upstream.is_some() {
        Reason::Following
    } else if grant.is_some() {
        Reason::StreamingStopped
    } else {
        Reason::NoPrimary
    };
    match (&obs.local.postgres, &obs.local.data) {
        (Postgres::Disabled, _) => Decision::wait(Reason::Witness),
        (Postgres::Stopped | Postgres::Crashed { .. }, Data::Missing) => match (primary, report) {
            (Some(_), Some(r)) if r.roles_pending => Decision::wait(Reason::PrimaryPreparing),
            (Some(p), Some(_)) if backing_off(obs, cfg, &Task::Clone(p.clone())) => {
                Decision::wait(Reason::BackingOff)
            }
            (Some(p), Some(_)) => Decision::act(Reason::NeedsClone, vec![Action::Clone { from: p.clone() }]),
            _ => Decision::wait(Reason::NoPrimary),
        },
        (Postgres::Stopped | Postgres::Crashed { .. }, Data::Present(d)) => {
            stopped_replica(obs, cfg, d, primary, report, upstream, reason)
        }
        (Postgres::Starting { .. }, _) => Decision::wait(reason),
        (Postgres::Running(r), _) => {
            if let (Some(rep), true) = (report, r.in_recovery)
                && let Some(tli) = primary_timeline(rep)
                && r.upstream.as_ref() == primary
                && rejoin::running(r, tli, &rep.timeline_history) == Compat::Diverged
            {
                let (t, l) =
                    r.min_recovery.map_or((r.timeline.unwrap_or_default(), None), |(t, l)| (t, Some(l)));
                let how = format!("replayed {}", rejoin::explain(t, l, tli, &rep.timeline_history));
                return Decision::act(Reason::Diverged(how), vec![Action::Stop]);
            }
            if obs.local.restart_requested {
                return Decision::act(Reason::RestartRequested, vec![Action::RestartPostgres]);
            }
            if r.upstream != upstream {
                return Decision::act(reason, vec![Action::Follow { upstream }]);
            }
            Decision::wait(if upstream.is_some() { Reason::Steady } else { reason })
        }
        (_, Data::Unusable(_)) => Decision::wait(Reason::UnusableData),
    }
}

fn stopped_replica(
    obs: &Observation,
    cfg: &HaConfig,
    d: &DataDir,
    primary: Option<&MemberName>,
    report: Option<&Report>,
    upstream: Option<MemberName>,
    reason: Reason,
) -> Decision {
    let (Some(p), Some(rep)) = (primary, report) else {
        // No primary to compare with: a standby can still start (read-only) and wait; a former
        // primary stays down until there is a timeline to check it against.
        if d.was_primary {
            return Decision::wait(Reason::NoPrimary);
        }
        return Decision::act(reason, vec![Action::StartReplica { upstream }]);
    };
    let Some(tli) = primary_timeline(rep) else { return Decision::wait(Reason::NoPrimary) };
    match rejoin::data(d, tli, &rep.timeline_history) {
        Compat::Compatible => Decision::act(reason, vec![Action::StartReplica { upstream }]),
        verdict @ (Compat::Diverged | Compat::Unknown) => {
            let (t, l) = rejoin::data_position(d);
            let kind = if d.was_primary { "a former primary" } else { "a standby" };
            let how = format!(
                "{kind}{} {}",
                if verdict == Compat::Unknown { " that did not shut down cleanly," } else { "" },
                rejoin::explain(t, l, tli, &rep.timeline_history)
            );
            let cc = &obs.cluster.config;
            let rewind_failed = backing_off(obs, cfg, &Task::Rewind(p.clone()))
                || obs.local.last_failure.as_ref().is_some_and(|(t, _, _)| matches!(t, Task::Rewind(_)));
            if cc.use_pg_rewind && !rewind_failed {
                Decision::act(Reason::Diverged(how), vec![Action::Rewind { from: p.clone() }])
            } else if cc.reclone_on_rewind_failure {
                Decision::act(Reason::RewindFailed, vec![Action::DiscardData])
            } else {
                Decision::wait(Reason::Diverged(how))
            }
        }
    }
}
