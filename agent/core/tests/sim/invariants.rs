//! DESIGN's invariants, checked on the simulated cluster: (1) at most one unexpired lease and
//! epochs that only grow, (2) never two writable Postgres, (3) no acknowledged commit missing
//! from a member when it becomes writable (protection always, but for a failover of the first
//! epoch before its record became synchronous, a documented decision; availability when the
//! failing epoch recorded k > 0; performance loss bounded by the lag limit plus recent writes),
//! and (6) convergence to one primary with every other member streaming from it.
//!
//! Owns the checks only; the world calls `on_writable` and the driver calls the rest.

use std::collections::HashSet;

use pgquorum_core::Epoch;
use pgquorum_core::state::DurabilityMode;

use super::network::Id;
use super::postgres::STEP;
use super::world::World;

/// What the checks remember between steps.
pub struct Checker {
    last_epoch: Vec<Epoch>,
    /// Violations found by event hooks, reported at the end of the step.
    pub violations: Vec<String>,
}

impl Checker {
    /// Bookkeeping for `n` members.
    pub fn new(n: usize) -> Checker {
        Checker { last_epoch: vec![Epoch(0); n], violations: Vec::new() }
    }
}

/// Invariants 1 and 2 (and anything `on_writable` found), every step.
pub fn safety(w: &mut World) -> Result<(), String> {
    if let Some(v) = w.checker.violations.first() {
        return Err(v.clone());
    }
    let now = w.clock.now;
    let holders: Vec<String> = (0..w.agents.len())
        .filter_map(|i| {
            let a = &w.agents[i];
            a.lease
                .filter(|l| a.up && l.deadline > now)
                .map(|l| format!("{} (epoch {}, deadline {:?})", w.names[i], l.epoch, l.deadline))
        })
        .collect();
    if holders.len() > 1 {
        return Err(format!(
            "invariant 1: {} members hold an unexpired lease: {}",
            holders.len(),
            holders.join(", ")
        ));
    }
    for i in 0..w.agents.len() {
        let e = w.raft.states[i].epoch;
        if e < w.checker.last_epoch[i] {
            return Err(format!(
                "invariant 1: {} applied epoch went back from {} to {e}",
                w.names[i], w.checker.last_epoch[i]
            ));
        }
        w.checker.last_epoch[i] = e;
    }
    if w.raft.grants.windows(2).any(|g| g[0].epoch >= g[1].epoch) {
        return Err("invariant 1: granted epochs did not strictly increase".into());
    }
    let writable: Vec<String> =
        (0..w.pgs.len()).filter(|&i| w.pgs[i].writable()).map(|i| w.names[i].to_string()).collect();
    if writable.len() > 1 {
        return Err(format!(
            "invariant 2: {} writable Postgres at once: {}",
            writable.len(),
            writable.join(", ")
        ));
    }
    Ok(())
}

/// Invariant 3, when member `i` starts accepting writes.
pub fn on_writable(w: &mut World, i: Id) -> Result<(), String> {
    let state = &w.raft.states[i];
    let (mode, cfg) = (state.config.durability, state.config.clone());
    let epoch = w.agents[i].lease.map_or(state.epoch, |l| l.epoch);
    let grant = w.raft.grants.iter().rev().find(|g| g.epoch == epoch).cloned();
    let have: HashSet<u64> = w.pgs[i].wal.iter().map(|e| e.id).collect();
    let missing: Vec<u64> = w.client.acked.keys().filter(|id| !have.contains(id)).copied().collect();
    if missing.is_empty() {
        return Ok(());
    }
    let recorded_k = grant.as_ref().map_or(0, |g| g.prev_recorded.k);
    // docs/decisions.md: protection starts asynchronous at bootstrap (its writes must not wait
    // for standbys that cannot clone yet) and is synchronous once the record narrowed to the
    // first target; only a failover of that first epoch before then may lose commits.
    let first = w.raft.grants.first().map(|g| g.epoch);
    let bootstrap_async =
        recorded_k == 0 && grant.as_ref().is_some_and(|g| first.map(|f| f.next()) == Some(g.epoch));
    let protected = match mode {
        DurabilityMode::Protection => !bootstrap_async,
        DurabilityMode::Availability => recorded_k > 0,
        DurabilityMode::Performance => false,
    };
    let first: Vec<String> = missing
        .iter()
        .take(5)
        .map(|id| {
            format!("{id} (acked by {} at {:?})", w.names[w.client.acked[id].member], w.client.acked[id].at)
        })
        .collect();
    let what = format!(
        "{} became writable for epoch {epoch} missing {} acknowledged commits, e.g. {}; {mode} mode, failing epoch recorded {}",
        w.names[i],
        missing.len(),
        first.join(", "),
        grant.as_ref().map_or("?".into(), |g| g.prev_recorded.to_string()),
    );
    if protected {
        return Err(format!("invariant 3: {what}"));
    }
    // Unprotected loss: within the lag limit, plus what was written since the last report the
    // coordinator could have seen (ttl, margin, staleness and the stop-streaming wait).
    let window = cfg.ttl
        + cfg.lease_margin
        + w.cfg.report_stale_after
        + w.cfg.stop_streaming_timeout
        + std::time::Duration::from_secs(1);
    let granted_at = grant.as_ref().map_or(w.clock.now, |g| g.at);
    let old = missing.iter().filter(|id| w.client.acked[id].at + window < granted_at).count() as u64;
    if old * STEP > cfg.maximum_lag_on_failover && mode == DurabilityMode::Performance {
        return Err(format!(
            "invariant 3 (performance bound): {old} commits older than {window:?} lost: {what}"
        ));
    }
    w.log(format!("allowed loss: {what}"));
    w.stats.allowed_loss += missing.len() as u64;
    for id in missing {
        w.client.acked.remove(&id);
    }
    Ok(())
}

/// Invariant 6's target: exactly one writable primary, every other member streaming from it.
pub fn converged(w: &World) -> bool {
    let writable: Vec<Id> = (0..w.pgs.len()).filter(|&i| w.pgs[i].writable()).collect();
    let [p] = writable[..] else { return false };
    (0..w.pgs.len())
        .all(|j| j == p || (w.pgs[j].standby() && w.pgs[j].upstream == Some(p) && w.pgs[j].streaming))
}

/// Why the cluster has not converged, for the failure message.
pub fn describe(w: &World) -> String {
    let mut out = Vec::new();
    for i in 0..w.pgs.len() {
        let (pg, a) = (&w.pgs[i], &w.agents[i]);
        out.push(format!(
            "{}: {:?} data={} tl={} wal={} upstream={:?} streaming={} lease={:?} fenced={:?} stop={:?} task={:?} failure={:?} applied epoch={} primary={:?}",
            w.names[i],
            pg.proc,
            pg.has_data,
            pg.timeline,
            pg.wal.len(),
            pg.upstream.map(|u| w.names[u].to_string()),
            pg.streaming,
            a.lease.map(|l| (l.epoch, l.deadline)),
            a.fenced_epoch,
            a.stop_streaming_for,
            a.task.as_ref().map(|t| t.task.clone()),
            a.last_failure.as_ref().map(|f| f.0.clone()),
            w.raft.states[i].epoch,
            w.raft.states[i].primary.as_ref().map(|p| p.member.to_string()),
        ));
    }
    out.push(format!(
        "raft leader {:?}, sync {:?}",
        w.raft.leader.map(|l| w.names[l].to_string()),
        w.raft.states[0].sync
    ));
    out.join("\n")
}
