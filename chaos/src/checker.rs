//! The checker: judges a recorded `History` against the invariants (DESIGN.md): acknowledged
//! writes lost (none in `protection` and `availability`, at most the configured lag in
//! `performance`), split brain (two members acknowledging writes in overlapping windows, from
//! the server-side record), stale reads through the read-write endpoint, replica staleness,
//! and for every fault the time to a writable primary and to convergence.
//!
//! Pure: a history and the checks in, a verdict out.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::history::{History, Write};

/// Durability mode the cluster ran in (what loss is allowed).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Asynchronous: loss up to `max_lag_bytes` of WAL per failover.
    Performance,
    /// Synchronous while a standby is available: no loss expected.
    Availability,
    /// Always synchronous: no loss.
    Protection,
}

/// What the checker enforces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    /// The mode the cluster ran in.
    pub durability: Durability,
    /// `maximum_lag_on_failover` in bytes (performance mode's loss bound).
    pub max_lag_bytes: u64,
    /// Replica reads older than this (seconds) are violations; `None`: measured only.
    pub max_replica_staleness: Option<f64>,
}

/// An acknowledged write missing at the end.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lost {
    /// Writer and sequence number.
    pub client: u32,
    /// Sequence number.
    pub seq: u64,
    /// Member and timeline that acknowledged it.
    pub member: String,
    /// Timeline it was acknowledged on.
    pub timeline: u32,
    /// WAL bytes between it and the last surviving write of the same member and timeline.
    pub lag_bytes: u64,
    /// Within performance mode's bound (never in the other modes).
    pub allowed: bool,
}

/// Two members that acknowledged writes in overlapping time windows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Overlap {
    /// `member/timeline` and its window `[first, last]` acceptance (server time).
    pub a: (String, f64, f64),
    /// The other one.
    pub b: (String, f64, f64),
}

/// A read through the read-write endpoint that missed an acknowledged write.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StaleRead {
    /// Who answered.
    pub member: String,
    /// When the read was sent.
    pub started: f64,
    /// The writer whose acknowledged write was missing.
    pub client: u32,
    /// Highest sequence acknowledged before the read.
    pub acked_seq: u64,
    /// Highest sequence the read saw.
    pub seen_seq: u64,
}

/// What followed one fault.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultTiming {
    /// Fault kind.
    pub kind: String,
    /// Its target.
    pub target: String,
    /// Seconds the cluster was not writable after the fault: the longest stretch without an
    /// acknowledged write from injection until (the first acknowledgement after) convergence.
    /// For a fault that takes the primary away, the time until a new primary took writes.
    pub writable_after: Option<f64>,
    /// Seconds from injection to convergence.
    pub converged_after: Option<f64>,
}

/// The checker's verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// Writes attempted.
    pub writes: usize,
    /// Writes acknowledged.
    pub acknowledged: usize,
    /// Acknowledged writes missing at the end.
    pub lost: Vec<Lost>,
    /// Split-brain windows.
    pub split_brain: Vec<Overlap>,
    /// Stale reads through the read-write endpoint.
    pub stale_reads: Vec<StaleRead>,
    /// Worst replica staleness measured, seconds.
    pub max_replica_staleness: Option<f64>,
    /// Per fault.
    pub faults: Vec<FaultTiming>,
    /// Members not caught up at the end.
    pub lagging_at_end: Vec<String>,
    /// Every violation, one sentence each; empty: the run passed.
    pub violations: Vec<String>,
}

/// Judges `h` against `checks`.
pub fn check(h: &History, checks: &Checks) -> Verdict {
    let acked: Vec<&Write> = h.writes.iter().filter(|w| w.acked.is_some() && w.server.is_some()).collect();
    let lost = lost_writes(h, &acked, checks);
    let split_brain = overlaps(&acked);
    // A write whose loss performance mode allows is loss, not staleness: reads that miss it
    // are not stale.
    let allowed: BTreeSet<(u32, u64)> =
        lost.iter().filter(|l| l.allowed).map(|l| (l.client, l.seq)).collect();
    let kept: Vec<&Write> = acked.iter().copied().filter(|w| !allowed.contains(&(w.client, w.seq))).collect();
    let (stale_reads, max_replica_staleness) = reads(h, &kept);
    let faults = fault_timings(h);
    let mut violations = Vec::new();
    for l in lost.iter().filter(|l| !l.allowed) {
        violations.push(format!(
            "acknowledged write {}/{} (by {} on timeline {}) lost ({} WAL bytes past the last survivor)",
            l.client, l.seq, l.member, l.timeline, l.lag_bytes
        ));
    }
    for o in &split_brain {
        violations.push(format!(
            "split brain: {} acknowledged writes in [{:.3}, {:.3}] and {} in [{:.3}, {:.3}]",
            o.a.0, o.a.1, o.a.2, o.b.0, o.b.1, o.b.2
        ));
    }
    for s in &stale_reads {
        violations.push(format!(
            "stale read from {} at {:.3}: writer {} had {} acknowledged, the read saw {}",
            s.member, s.started, s.client, s.acked_seq, s.seen_seq
        ));
    }
    if let (Some(limit), Some(worst)) = (checks.max_replica_staleness, max_replica_staleness)
        && worst > limit
    {
        violations.push(format!("a replica read was {worst:.3}s stale (limit {limit}s)"));
    }
    for f in &faults {
        if f.writable_after.is_none() {
            violations.push(format!("{} on {}: no write was acknowledged after it", f.kind, f.target));
        }
        if f.converged_after.is_none() {
            violations.push(format!("{} on {}: the cluster did not converge after it", f.kind, f.target));
        }
    }
    for m in &h.lagging_at_end {
        violations.push(format!("{m} had not caught up with the primary at the end"));
    }
    Verdict {
        writes: h.writes.len(),
        acknowledged: acked.len(),
        lost,
        split_brain,
        stale_reads,
        max_replica_staleness,
        faults,
        lagging_at_end: h.lagging_at_end.clone(),
        violations,
    }
}

fn reign(w: &Write) -> (String, u32) {
    let s = w.server.as_ref().expect("only acknowledged writes have a server record");
    (s.member.clone(), s.timeline)
}

fn lost_writes(h: &History, acked: &[&Write], checks: &Checks) -> Vec<Lost> {
    let survivors: BTreeSet<(u32, u64)> = h.survivors.iter().copied().collect();
    // The loss of a write is measured from the last survivor of its member and timeline, or
    // from that reign's first acknowledged write when none of its writes survived.
    let (mut survived, mut first): (BTreeMap<_, u64>, BTreeMap<_, u64>) = Default::default();
    for w in acked {
        let lsn = w.server.as_ref().map_or(0, |s| s.lsn);
        let f = first.entry(reign(w)).or_insert(lsn);
        *f = (*f).min(lsn);
        if survivors.contains(&(w.client, w.seq)) {
            let s = survived.entry(reign(w)).or_insert(lsn);
            *s = (*s).max(lsn);
        }
    }
    acked
        .iter()
        .filter(|w| !survivors.contains(&(w.client, w.seq)))
        .map(|w| {
            let s = w.server.as_ref().expect("acknowledged");
            let r = reign(w);
            let base = survived.get(&r).or_else(|| first.get(&r)).copied().unwrap_or(s.lsn);
            let lag_bytes = s.lsn.saturating_sub(base);
            Lost {
                client: w.client,
                seq: w.seq,
                member: s.member.clone(),
                timeline: s.timeline,
                lag_bytes,
                allowed: checks.durability == Durability::Performance && lag_bytes <= checks.max_lag_bytes,
            }
        })
        .collect()
}

fn overlaps(acked: &[&Write]) -> Vec<Overlap> {
    let mut windows: BTreeMap<(String, u32), (f64, f64)> = BTreeMap::new();
    for w in acked {
        let t = w.server.as_ref().map_or(0.0, |s| s.time);
        let e = windows.entry(reign(w)).or_insert((t, t));
        *e = (e.0.min(t), e.1.max(t));
    }
    let list: Vec<_> = windows.into_iter().collect();
    let mut out = Vec::new();
    for (i, ((ma, ta), (sa, ea))) in list.iter().enumerate() {
        for ((mb, tb), (sb, eb)) in &list[i + 1..] {
            if ma != mb && sa < eb && sb < ea {
                out.push(Overlap {
                    a: (format!("{ma}/{ta}"), *sa, *ea),
                    b: (format!("{mb}/{tb}"), *sb, *eb),
                });
            }
        }
    }
    out
}

fn reads(h: &History, acked: &[&Write]) -> (Vec<StaleRead>, Option<f64>) {
    // Each writer is sequential: its acknowledged writes, in sequence order, have increasing
    // acknowledgement times, so both questions below are binary searches.
    let mut per_client: BTreeMap<u32, Vec<(u64, f64)>> = BTreeMap::new();
    for w in acked {
        per_client.entry(w.client).or_default().push((w.seq, w.acked.unwrap_or(f64::MAX)));
    }
    for v in per_client.values_mut() {
        v.sort_by_key(|w| w.0);
    }
    let mut stale = Vec::new();
    let mut worst: Option<f64> = None;
    for r in &h.reads {
        let mut staleness = 0.0f64;
        for (&client, writes) in &per_client {
            let seen_seq = r.seen.get(&client).copied().unwrap_or(0);
            let done = writes.partition_point(|(_, a)| *a < r.started);
            let Some(&(acked_seq, _)) = done.checked_sub(1).and_then(|i| writes.get(i)) else { continue };
            if acked_seq <= seen_seq {
                continue;
            }
            if r.replica {
                let missed = writes.partition_point(|(s, _)| *s <= seen_seq);
                staleness = staleness.max(r.started - writes[missed].1);
            } else {
                stale.push(StaleRead {
                    member: r.member.clone(),
                    started: r.started,
                    client,
                    acked_seq,
                    seen_seq,
                });
            }
        }
        if r.replica {
            worst = Some(worst.map_or(staleness, |w| w.max(staleness)));
        }
    }
    (stale, worst)
}

fn fault_timings(h: &History) -> Vec<FaultTiming> {
    let mut acks: Vec<f64> = h.writes.iter().filter(|w| w.server.is_some()).filter_map(|w| w.acked).collect();
    acks.sort_by(f64::total_cmp);
    h.faults
        .iter()
        .map(|f| {
            // The longest stretch without an acknowledgement from the fault until convergence
            // (the stretch that ends after convergence included): writes acknowledged in the
            // instant after the fault, before it bit, do not hide the outage that follows.
            let end = f.converged.unwrap_or(f64::INFINITY);
            let (mut prev, mut worst, mut any) = (f.injected, 0.0f64, false);
            for &a in acks.iter().skip(acks.partition_point(|a| *a < f.injected)) {
                worst = worst.max(a - prev);
                prev = a;
                any = true;
                if a > end {
                    break;
                }
            }
            FaultTiming {
                kind: f.kind.clone(),
                target: f.target.clone(),
                writable_after: any.then_some(worst),
                converged_after: f.converged.map(|c| c - f.injected),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
