//! Which synchronous set the primary should use, and how to change it safely.
//!
//! The recorded set (Raft) always covers what Postgres may have acknowledged with: a new target
//! is recorded before the primary applies it, through the union of old and new when the new one
//! is not within the recorded bound; the bound narrows to the target only after the primary
//! applied it and `k` of its members flushed past the position where it took effect.

use crate::ha::config::HaConfig;
use crate::ha::observation::{Observation, Postgres, Report};
use crate::state::{Command, DurabilityMode, SyncSet};
use crate::{Epoch, MemberName};

fn eligible(obs: &Observation, primary: &MemberName, m: &MemberName) -> bool {
    if m == primary {
        return false;
    }
    match obs.peers.get(m).and_then(|s| s.as_ref()) {
        Some(s) => s.report.postgres != Postgres::Disabled && !s.report.tags.nosync,
        None => true,
    }
}

/// Whether `m` is following `primary` by its own fresh report (configured to stream from it,
/// even if not connected yet).
fn following(obs: &Observation, hc: &HaConfig, primary: &MemberName, m: &MemberName) -> bool {
    obs.peers.get(m).and_then(|s| s.as_ref()).is_some_and(|s| {
        obs.now.saturating_sub(s.received) <= hc.report_stale_after
            && s.report
                .postgres
                .running()
                .is_some_and(|r| r.in_recovery && r.upstream.as_ref() == Some(primary))
    })
}

/// The set for a running primary: the standbys streaming from it, plus, during the first
/// 2 × ttl of an epoch, standbys that follow it but have not connected yet (so the set does not
/// collapse while replicas reconnect after a failover).
pub fn desired(obs: &Observation, hc: &HaConfig, primary: &MemberName, report: &Report) -> SyncSet {
    let cfg = &obs.cluster.config;
    let k = cfg.synchronous_node_count;
    if cfg.durability == DurabilityMode::Performance {
        return SyncSet::none();
    }
    let connected: Vec<MemberName> = report
        .postgres
        .running()
        .map(|r| {
            r.replicas
                .iter()
                .filter(|c| c.state == "streaming")
                .filter_map(|c| MemberName::new(c.name.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    let young = obs.coordinator.as_ref().is_some_and(|c| obs.now < c.epoch_since + cfg.ttl * 2);
    let streaming: Vec<MemberName> = obs
        .peers
        .keys()
        .filter(|m| eligible(obs, primary, m))
        .filter(|m| connected.contains(m) || (young && following(obs, hc, primary, m)))
        .cloned()
        .collect();
    match cfg.durability {
        DurabilityMode::Availability => SyncSet::any((k as usize).min(streaming.len()) as u32, streaming),
        _ if streaming.len() >= k as usize => SyncSet::any(k, streaming),
        // Protection with too few standbys: keep waiting on the current set rather than
        // acknowledging commits nobody else holds.
        _ if !obs.cluster.sync.target.is_async() => obs.cluster.sync.target.clone(),
        _ => SyncSet::any(k, obs.peers.keys().filter(|m| eligible(obs, primary, m)).cloned()),
    }
}

/// The set a newly chosen primary configures before its first write. Nobody streams from it yet,
/// so it names the members that can reach it.
pub fn for_new_primary(obs: &Observation, new_primary: &MemberName, reachable: &[MemberName]) -> SyncSet {
    let cfg = &obs.cluster.config;
    let k = cfg.synchronous_node_count;
    let candidates: Vec<MemberName> =
        reachable.iter().filter(|m| eligible(obs, new_primary, m)).cloned().collect();
    match cfg.durability {
        DurabilityMode::Performance => SyncSet::none(),
        DurabilityMode::Availability => SyncSet::any((k as usize).min(candidates.len()) as u32, candidates),
        DurabilityMode::Protection if candidates.len() >= k as usize => SyncSet::any(k, candidates),
        DurabilityMode::Protection => {
            SyncSet::any(k, obs.peers.keys().filter(|m| eligible(obs, new_primary, m)).cloned())
        }
    }
}

/// The next `SetSync` for the primary of `epoch`, if the set should change.
pub fn next_change(
    obs: &Observation,
    hc: &HaConfig,
    epoch: Epoch,
    primary: &MemberName,
    report: &Report,
) -> Option<Command> {
    let cur = &obs.cluster.sync;
    let want = desired(obs, hc, primary, report);
    if want != cur.target {
        let recorded =
            if want.is_within(&cur.recorded) { cur.recorded.clone() } else { cur.recorded.union(&want) };
        return Some(Command::SetSync { epoch, recorded, target: want });
    }
    if cur.recorded != cur.target && narrowing_is_safe(report, &cur.target) {
        return Some(Command::SetSync { epoch, recorded: cur.target.clone(), target: cur.target.clone() });
    }
    None
}

/// The primary applied `target`, and `k` of its members flushed past where it took effect: every
/// commit acknowledged before is now held by `k` members of `target`, as later ones will be.
fn narrowing_is_safe(report: &Report, target: &SyncSet) -> bool {
    let Some((applied, at)) = &report.sync_applied_at else { return false };
    let Some(r) = report.postgres.running() else { return false };
    if applied != target || r.synchronous_standby_names != target.to_postgres() {
        return false;
    }
    let caught = r
        .replicas
        .iter()
        .filter(|c| target.members.iter().any(|m| m.as_str() == c.name))
        .filter(|c| c.flush_lsn.is_some_and(|f| f >= *at))
        .count();
    caught >= target.k as usize
}
