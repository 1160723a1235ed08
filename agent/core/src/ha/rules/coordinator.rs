//! The Raft leader's decisions for the whole cluster: who initialises, when the primary's lease
//! has run out, the two-phase failover (stop streaming, then grant the best candidate), the
//! synchronous set, and keeping Raft leadership off the primary's node.

use crate::ha::config::HaConfig;
use crate::ha::observation::{Coordinator, Data, Observation, Postgres};
use crate::ha::plan::{Action, Decision, Reason};
use crate::ha::rules::{candidate, lease, member, schedule, switchover, sync};
use crate::state::{Command, GrantReason, PrimaryGrant, SyncSet};
use crate::{Epoch, MemberName};

/// The coordinator's decision, `None` when this agent is not the Raft leader.
pub fn decide(obs: &Observation, cfg: &HaConfig) -> Option<Decision> {
    let c = obs.coordinator.as_ref()?;
    if obs.cluster.cluster_id.is_none() {
        return Some(Decision::wait(Reason::NotInitialized));
    }
    // Maintenance mode: no automatic failover; an operator's manual failover still proceeds.
    if obs.cluster.paused && obs.cluster.failover.is_none() {
        return Some(Decision::wait(Reason::Paused));
    }
    if let Some(f) = &obs.cluster.failover
        && obs.wall.0 >= f.requested_at.0 + MANUAL_FAILOVER_TIMEOUT_MS
    {
        return Some(Decision::act(
            Reason::ManualFailoverLapsed,
            vec![Action::Propose(Command::ClearFailover)],
        ));
    }
    Some(match &obs.cluster.primary {
        None if obs.cluster.system_identifier.is_none() && obs.cluster.epoch == Epoch(0) => {
            bootstrap(obs, cfg)
        }
        None => failover_released(obs, cfg, c),
        Some(p) if p.expired || c.expired_epoch == Some(p.epoch) || lease::expired_for(obs, c).is_some() => {
            failover(obs, cfg, c, p)
        }
        Some(_) if obs.cluster.failover.is_some() => Decision::wait(Reason::ManualFailoverWaiting),
        Some(p) => steady(obs, cfg, c, p),
    })
}

/// A manual failover request lapses after this long (the primary kept its lease).
pub const MANUAL_FAILOVER_TIMEOUT_MS: u64 = 30_000;

fn fresh<'a>(
    obs: &'a Observation,
    cfg: &HaConfig,
) -> impl Iterator<Item = (&'a MemberName, &'a crate::ha::observation::Report)> {
    obs.peers.iter().filter_map(move |(m, s)| {
        let s = s.as_ref()?;
        (obs.now.saturating_sub(s.received) <= cfg.report_stale_after).then_some((m, &s.report))
    })
}

fn grant(
    obs: &Observation,
    member: MemberName,
    reason: GrantReason,
    sync: SyncSet,
    cand: Option<&candidate::Candidate>,
) -> Action {
    Action::Propose(Command::GrantPrimary {
        expected_epoch: obs.cluster.epoch,
        member,
        reason,
        sync,
        at: obs.wall,
        lsn: cand.and_then(|c| c.lsn),
        timeline: cand.and_then(|c| c.timeline),
        floor: cand.and_then(|c| c.floor),
    })
}

/// Nobody ever held the primary role: pick who runs initdb, preferring a member that already
/// has data (taking over an existing Postgres), then priority, then name.
fn bootstrap(obs: &Observation, cfg: &HaConfig) -> Decision {
    let mut with_data = Vec::new();
    let mut empty = Vec::new();
    for (m, rep) in fresh(obs, cfg) {
        if rep.tags.nofailover || rep.postgres == Postgres::Disabled {
            continue;
        }
        match &rep.data {
            Data::Present(d) => with_data.push((d.checkpoint_lsn, rep.tags.failover_priority, m.clone())),
            Data::Missing => empty.push((rep.tags.failover_priority, m.clone())),
            Data::Unusable(_) => {}
        }
    }
    with_data.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    empty.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let chosen = with_data.into_iter().map(|x| x.2).next().or_else(|| empty.into_iter().map(|x| x.1).next());
    match chosen {
        // Synchronous replication starts once standbys stream (sync.rs); the bootstrap itself
        // must not wait for standbys that cannot clone before it finishes.
        Some(m) => Decision::act(
            Reason::ChoseBootstrapMember,
            vec![grant(obs, m, GrantReason::Bootstrap, SyncSet::none(), None)],
        ),
        None => Decision::wait(Reason::NotInitialized),
    }
}

/// The primary of the current epoch gave its role up (after stopping Postgres): no lease to wait
/// for.
fn failover_released(obs: &Observation, cfg: &HaConfig, c: &Coordinator) -> Decision {
    let epoch = obs.cluster.epoch;
    let old = obs.cluster.history.iter().rev().find(|h| h.epoch == epoch).map(|h| &h.member);
    phase_one(obs, cfg, c, epoch, old)
}

/// Two-phase failover of `grant`: declare its lease expired (atomically with renewals on this
/// leader, then in Raft so that every coordinator refuses it and replicas may stop streaming),
/// make replicas stop streaming and report, then grant the next epoch to the best candidate.
fn failover(obs: &Observation, cfg: &HaConfig, c: &Coordinator, grant: &PrimaryGrant) -> Decision {
    let epoch = grant.epoch;
    if !grant.expired {
        let record = Action::Propose(Command::ExpirePrimary { epoch });
        let actions = if c.expired_epoch == Some(epoch) {
            vec![record]
        } else {
            vec![Action::Expire { epoch }, record]
        };
        return Decision::act(Reason::LeaseExpired, actions);
    }
    phase_one(obs, cfg, c, epoch, Some(&grant.member))
}

/// Stop streaming, then choose.
fn phase_one(
    obs: &Observation,
    cfg: &HaConfig,
    c: &Coordinator,
    epoch: Epoch,
    old: Option<&MemberName>,
) -> Decision {
    let others: Vec<MemberName> = fresh(obs, cfg)
        .filter(|(m, rep)| Some(*m) != old && rep.postgres.running().is_some_and(|r| r.in_recovery))
        .map(|(m, _)| m.clone())
        .collect();
    let pending: Vec<MemberName> = fresh(obs, cfg)
        .filter(|(m, _)| others.contains(m))
        .filter(|(_, rep)| {
            let streaming = rep.postgres.running().is_some_and(|r| r.streaming);
            rep.stop_streaming_for.is_none_or(|e| e < epoch) || streaming
        })
        .map(|(m, _)| m.clone())
        .collect();
    let asked = c.stop_requested.filter(|(e, _)| *e == epoch);
    match asked {
        None => {
            return Decision::act(
                Reason::WaitingForReplicas,
                vec![Action::StopStreaming { epoch, members: others }],
            );
        }
        Some((_, since)) if !pending.is_empty() && obs.now < since + cfg.stop_streaming_timeout => {
            return Decision::act(
                Reason::WaitingForReplicas,
                vec![Action::StopStreaming { epoch, members: pending }],
            );
        }
        Some(_) => {}
    }
    // Past the timeout: go on without the stragglers, but keep asking them (one of them may be
    // needed to prove that no acknowledged commit is lost).
    let keep_asking: Vec<Action> =
        if pending.is_empty() { Vec::new() } else { vec![Action::StopStreaming { epoch, members: pending }] };
    let old_name = old.cloned().unwrap_or_default();
    let prefer = match (&obs.cluster.failover, &obs.cluster.switchover) {
        (Some(f), _) => Some(candidate::Preference { member: &f.to, force: f.force }),
        (None, Some(s)) => s.to.as_ref().map(|m| candidate::Preference { member: m, force: false }),
        (None, None) => None,
    };
    let mut chosen = candidate::choose_with(obs, cfg, &old_name, epoch, c.last_primary_lsn, prefer);
    // Paused, only the operator's choice may be promoted.
    if let (true, Some(f), Ok(cand)) = (obs.cluster.paused, &obs.cluster.failover, &chosen)
        && cand.member != f.to
    {
        chosen = Err(format!(
            "{} is not eligible ({} is: further ahead or needed to keep every acknowledged commit); \
             `pgquorumctl failover --to {} --force` takes it anyway",
            f.to, cand.member, f.to
        ));
    }
    let reachable: Vec<MemberName> = fresh(obs, cfg).map(|(m, _)| m.clone()).collect();
    let considered = candidate::summary(obs, cfg, &old_name, epoch);
    match chosen {
        Ok(cand) => {
            let sync = sync::for_new_primary(obs, &cand.member, &reachable);
            let reason = Reason::Failover(format!("chose {} among {considered}", cand.member));
            let why = grant_reason(obs, &cand.member);
            Decision::act(reason, vec![grant(obs, cand.member.clone(), why, sync, Some(&cand))])
        }
        Err(why) => match old.and_then(|o| candidate::former_primary(obs, cfg, o, epoch)) {
            Some(cand) => {
                let sync = sync::for_new_primary(obs, &cand.member, &reachable);
                let reason = Reason::Failover(format!("{} takes its role back ({why})", cand.member));
                Decision::act(
                    reason,
                    vec![grant(obs, cand.member.clone(), GrantReason::Reacquire, sync, Some(&cand))],
                )
            }
            None => Decision::act(Reason::NoSafeCandidate(why), keep_asking),
        },
    }
}

/// Why `member` gets the role: an operator's manual failover or switchover when it is the
/// member they asked for (or any member, for a switchover to any), else an automatic failover.
fn grant_reason(obs: &Observation, member: &MemberName) -> GrantReason {
    match (&obs.cluster.failover, &obs.cluster.switchover) {
        (Some(f), _) if f.to == *member => GrantReason::ManualFailover,
        (_, Some(s)) if s.to.as_ref().is_none_or(|t| t == member) => GrantReason::Switchover,
        _ => GrantReason::Failover,
    }
}

/// A primary with a live lease: keep its synchronous set right and Raft leadership elsewhere.
fn steady(obs: &Observation, cfg: &HaConfig, c: &Coordinator, p: &PrimaryGrant) -> Decision {
    let Some(report) = member::primary_report(obs, cfg, &p.member) else {
        return Decision::wait(Reason::Steady);
    };
    let leased = report.lease.is_some_and(|(e, _)| e == p.epoch) && report.postgres.is_writable();
    if !leased {
        return Decision::wait(Reason::Steady);
    }
    if let Some(d) = switchover::coordinate(obs, p, report) {
        return d;
    }
    if let Some(cmd) = sync::next_change(obs, cfg, p.epoch, &p.member, report) {
        return Decision::act(Reason::SyncChange, vec![Action::Propose(cmd)]);
    }
    if let Some(cmd) = schedule::next(obs, cfg, &p.member) {
        return Decision::act(Reason::ScheduledBackup, vec![Action::Propose(cmd)]);
    }
    if p.member == obs.me && c.last_transfer.is_none_or(|t| obs.now >= t + cfg.transfer_interval) {
        // Prefer a member without Postgres (a witness), then any caught-up voter with a fresh report.
        let mut options: Vec<(bool, &MemberName)> = fresh(obs, cfg)
            .filter(|(m, _)| **m != obs.me && c.voters.contains(m) && c.caught_up.contains(m))
            .map(|(m, rep)| (rep.postgres != Postgres::Disabled, m))
            .collect();
        options.sort();
        if let Some((_, to)) = options.first() {
            return Decision::act(
                Reason::LeadershipOffPrimary,
                vec![Action::TransferLeadership { to: (*to).clone() }],
            );
        }
    }
    Decision::wait(Reason::Steady)
}
