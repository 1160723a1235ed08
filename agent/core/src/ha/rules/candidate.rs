//! Whom to promote when the primary's lease ran out.
//!
//! Only members that stopped streaming for the failing epoch count (their WAL position is
//! final). In synchronous modes the recorded set `ANY k (S)` must be heard from: at least
//! `|S| - k + 1` of its members, so one of them holds every acknowledged commit, and the
//! candidate must be at least as far as all of them. In performance mode (or while replication
//! was asynchronous) a candidate must be within `maximum_lag_on_failover` of the primary's last
//! known position. Ties: higher `failover_priority`, then name.

use crate::ha::config::HaConfig;
use crate::ha::observation::{Data, Observation, Postgres};
use crate::state::DurabilityMode;
use crate::{Epoch, Lsn, MemberName, Timeline};

/// The chosen member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Who.
    pub member: MemberName,
    /// Its final WAL position, when known.
    pub lsn: Option<Lsn>,
    /// Its timeline, when known.
    pub timeline: Option<Timeline>,
    /// Every acknowledged commit lies at or below this position: the proof bar, or the floor
    /// inherited from earlier epochs, whichever is higher. `None` when nothing was proven.
    pub floor: Option<Lsn>,
}

/// The floor of the epoch being failed over (see `PrimaryGrant::floor`).
fn inherited_floor(obs: &Observation) -> Option<Lsn> {
    let epoch = obs.cluster.epoch;
    match &obs.cluster.primary {
        Some(p) => p.floor,
        None => obs.cluster.history.iter().rev().find(|h| h.epoch == epoch).and_then(|h| h.floor),
    }
}

/// The highest WAL position anyone knows the failed primary reached: the coordinator's memory,
/// the primary's last report (any age), and every replica's final position.
fn lag_reference(
    obs: &Observation,
    old: &MemberName,
    last_primary_lsn: Option<Lsn>,
    finals: &[&Final],
) -> Option<Lsn> {
    let reported = obs
        .peers
        .get(old)
        .and_then(|s| s.as_ref())
        .and_then(|s| s.report.postgres.running())
        .and_then(|r| r.lsn);
    [last_primary_lsn, reported].into_iter().flatten().chain(finals.iter().map(|f| f.lsn)).max()
}

struct Final {
    member: MemberName,
    lsn: Lsn,
    timeline: Timeline,
    nofailover: bool,
    priority: i32,
}

/// Members whose streaming stopped for `epoch`, with fresh reports.
fn finals(obs: &Observation, cfg: &HaConfig, old: &MemberName, epoch: Epoch) -> Vec<Final> {
    let mut out = Vec::new();
    for (name, seen) in &obs.peers {
        let Some(seen) = seen else { continue };
        if name == old || obs.now.saturating_sub(seen.received) > cfg.report_stale_after {
            continue;
        }
        let rep = &seen.report;
        let Postgres::Running(r) = &rep.postgres else { continue };
        let stopped = rep.stop_streaming_for.is_some_and(|e| e >= epoch) && !r.streaming;
        if !r.in_recovery || !stopped {
            continue;
        }
        let (Some(lsn), Some(timeline)) = (r.lsn, r.timeline) else { continue };
        let matches_cluster = match (&rep.data, obs.cluster.system_identifier) {
            (Data::Present(d), Some(id)) => d.system_identifier == id,
            _ => false,
        };
        if !matches_cluster {
            continue;
        }
        out.push(Final {
            member: name.clone(),
            lsn,
            timeline,
            nofailover: rep.tags.nofailover,
            priority: rep.tags.failover_priority,
        });
    }
    out
}

/// One line naming every replica with a final position, for the failover log.
pub fn summary(obs: &Observation, cfg: &HaConfig, old: &MemberName, epoch: Epoch) -> String {
    let f = finals(obs, cfg, old, epoch);
    let parts: Vec<String> =
        f.iter().map(|f| format!("{} at {} on timeline {}", f.member, f.lsn, f.timeline)).collect();
    if parts.is_empty() { "no replica reported".into() } else { parts.join(", ") }
}

/// An operator's preference: a switchover target, or a manual failover's member (`force`: take
/// it even without proof).
#[derive(Copy, Clone, Debug)]
pub struct Preference<'a> {
    /// The preferred member.
    pub member: &'a MemberName,
    /// Skip the durability and lag checks.
    pub force: bool,
}

/// Chooses the replica to promote after `old` lost the lease of `epoch`, preferring `prefer`
/// when it is eligible (or forced).
pub fn choose_with(
    obs: &Observation,
    cfg: &HaConfig,
    old: &MemberName,
    epoch: Epoch,
    last_primary_lsn: Option<Lsn>,
    prefer: Option<Preference<'_>>,
) -> Result<Candidate, String> {
    if let Some(p) = prefer.filter(|p| p.force) {
        let f = finals(obs, cfg, old, epoch);
        return match f.iter().find(|f| f.member == *p.member) {
            Some(f) => Ok(Candidate {
                member: f.member.clone(),
                lsn: Some(f.lsn),
                timeline: Some(f.timeline),
                floor: None,
            }),
            None => Err(format!(
                "{} has not reported a final WAL position (is it running and reachable?)",
                p.member
            )),
        };
    }
    choose_inner(obs, cfg, old, epoch, last_primary_lsn, prefer.map(|p| p.member))
}

/// Chooses the replica to promote after `old` lost the lease of `epoch`.
pub fn choose(
    obs: &Observation,
    cfg: &HaConfig,
    old: &MemberName,
    epoch: Epoch,
    last_primary_lsn: Option<Lsn>,
) -> Result<Candidate, String> {
    choose_inner(obs, cfg, old, epoch, last_primary_lsn, None)
}

fn choose_inner(
    obs: &Observation,
    cfg: &HaConfig,
    old: &MemberName,
    epoch: Epoch,
    last_primary_lsn: Option<Lsn>,
    prefer: Option<&MemberName>,
) -> Result<Candidate, String> {
    let finals = finals(obs, cfg, old, epoch);
    if finals.is_empty() {
        return Err("no replica has reported a final WAL position".into());
    }
    let recorded = &obs.cluster.sync.recorded;
    let need = recorded.quorum_to_prove_commits();
    let top_tli = finals.iter().map(|f| f.timeline).max().expect("finals is not empty");
    let responders: Vec<&Final> = finals.iter().filter(|f| recorded.members.contains(&f.member)).collect();
    let mut bar = None;
    if need > 0 {
        if responders.len() < need {
            let heard: Vec<&str> = responders.iter().map(|f| f.member.as_str()).collect();
            return Err(format!(
                "heard from {} of synchronous set {recorded} ({}); {need} needed to be sure no acknowledged commit is lost",
                responders.len(),
                if heard.is_empty() { "none".to_string() } else { heard.join(", ") }
            ));
        }
        if responders.iter().any(|f| f.timeline != top_tli) {
            return Err("synchronous standbys are on different timelines".into());
        }
        bar = responders.iter().map(|f| f.lsn).max();
    }
    // Commits acknowledged in earlier epochs are held by whoever reached the inherited floor
    // (the new set may not have received them yet).
    let floor = inherited_floor(obs);
    if need > 0 {
        bar = bar.max(floor);
    }
    // A switchover loses nothing in any mode: the candidate has the old primary's last WAL.
    bar = bar.max(switch_point(obs, cfg, old));
    let lag_limited = obs.cluster.config.durability == DurabilityMode::Performance || recorded.k == 0;
    let max_lag = obs.cluster.config.maximum_lag_on_failover;
    // Replicas on older timelines diverged before the failed primary's: no bound on it.
    let on_top: Vec<&Final> = finals.iter().filter(|f| f.timeline == top_tli).collect();
    let last_primary_lsn = lag_reference(obs, old, last_primary_lsn, &on_top);
    let mut eligible: Vec<&Final> = finals
        .iter()
        .filter(|f| f.timeline == top_tli && !f.nofailover)
        .filter(|f| bar.is_none_or(|b| f.lsn >= b))
        .filter(|f| !lag_limited || last_primary_lsn.is_none_or(|last| last.saturating_sub(f.lsn) <= max_lag))
        .collect();
    eligible
        .sort_by(|a, b| b.lsn.cmp(&a.lsn).then(b.priority.cmp(&a.priority)).then(a.member.cmp(&b.member)));
    if let Some(p) = prefer
        && let Some(pos) = eligible.iter().position(|f| f.member == *p)
    {
        let preferred = eligible.remove(pos);
        eligible.insert(0, preferred);
    }
    match eligible.first() {
        Some(f) => Ok(Candidate {
            member: f.member.clone(),
            lsn: Some(f.lsn),
            timeline: Some(f.timeline),
            // Without proof, commits above the candidate are given up (within the lag limit):
            // the new timeline forks at its position, so the floor cannot lie above it.
            floor: if need > 0 { bar } else { floor.map(|fl| fl.min(f.lsn)) },
        }),
        None if lag_limited && last_primary_lsn.is_some() => {
            Err(format!("every replica lags more than maximum_lag_on_failover ({max_lag} bytes)"))
        }
        None if bar.is_some() => Err(format!(
            "no eligible replica reached {} (every acknowledged commit lies at or below it); nofailover or behind",
            bar.map_or("?".into(), |b| b.to_string())
        )),
        None => Err("no eligible replica (nofailover or on an older timeline)".into()),
    }
}

/// Where the primary that gave its role up for a switchover stopped (its shutdown checkpoint,
/// after every commit), when it stopped cleanly and says so in a fresh report.
fn switch_point(obs: &Observation, cfg: &HaConfig, old: &MemberName) -> Option<Lsn> {
    let released = obs.cluster.primary.is_none();
    if !released || obs.cluster.switchover.as_ref().is_none_or(|s| s.from != *old) {
        return None;
    }
    let seen = obs.peers.get(old)?.as_ref()?;
    if obs.now.saturating_sub(seen.received) > cfg.report_stale_after {
        return None;
    }
    match (&seen.report.postgres, &seen.report.data) {
        (Postgres::Stopped, Data::Present(d)) if d.was_primary && d.clean_shutdown => Some(d.checkpoint_lsn),
        _ => None,
    }
}

/// The former primary, if it can take its role back: its expiry is recorded or it released the
/// role for a switchover (so no coordinator renews its lease), it is reachable, holds no lease, its data is this cluster's, and its
/// Postgres is stopped (it holds every commit it acknowledged by definition) or still a standby
/// that never promoted in its epoch (cut off before its first renewal) and reached the floor.
pub fn former_primary(
    obs: &Observation,
    cfg: &HaConfig,
    old: &MemberName,
    epoch: Epoch,
) -> Option<Candidate> {
    let expired =
        obs.cluster.primary.as_ref().is_some_and(|p| p.epoch == epoch && p.expired && &p.member == old);
    // A primary that gave its role up for a switchover takes it back when no replica got its
    // last WAL (one that gave up because it could not start would only fail again).
    let last_holder =
        obs.cluster.history.iter().rev().find(|h| h.epoch == epoch).is_some_and(|h| &h.member == old);
    let switched = last_holder && switch_point(obs, cfg, old).is_some();
    // A primary that released its role (on shutdown, or after failing to start) takes it back
    // when no other member runs Postgres at all (a one-member cluster restarted, every member
    // stopped): nobody was granted since, so its data is the newest. While replicas run, the
    // cluster waits for them instead (one that could not start would only fail again).
    let others_run = obs.peers.iter().any(|(m, s)| {
        m != old
            && s.as_ref().is_some_and(|s| {
                obs.now.saturating_sub(s.received) <= cfg.report_stale_after
                    && matches!(s.report.postgres, Postgres::Running(_) | Postgres::Starting { .. })
            })
    });
    let released = last_holder && obs.cluster.primary.is_none() && !others_run;
    let expired = expired || switched || released;
    let seen = obs.peers.get(old)?.as_ref()?;
    if !expired || obs.now.saturating_sub(seen.received) > cfg.report_stale_after {
        return None;
    }
    let rep = &seen.report;
    let floor = inherited_floor(obs);
    let no_lease = rep.lease.is_none_or(|(e, _)| e != epoch);
    let Data::Present(d) = &rep.data else { return None };
    if !no_lease || obs.cluster.system_identifier != Some(d.system_identifier) || rep.tags.nofailover {
        return None;
    }
    let (lsn, timeline) = match &rep.postgres {
        Postgres::Stopped | Postgres::Crashed { .. } => (d.checkpoint_lsn, d.timeline),
        Postgres::Running(r) if r.in_recovery => match (r.lsn, r.timeline) {
            (Some(lsn), Some(tli)) if floor.is_none_or(|f| lsn >= f) => (lsn, tli),
            _ => return None,
        },
        _ => return None,
    };
    Some(Candidate { member: old.clone(), lsn: Some(lsn), timeline: Some(timeline), floor })
}
