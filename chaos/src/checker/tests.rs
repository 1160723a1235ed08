//! The checker on recorded histories: each violation it must catch, and a clean history.

use std::collections::BTreeMap;

use super::{Checks, Durability, check};
use crate::history::{Accepted, Fault, History, Read, Write};

fn protection() -> Checks {
    Checks { durability: Durability::Protection, max_lag_bytes: 1 << 20, max_replica_staleness: None }
}

/// Writer `client`'s write `seq`, sent at `t`, acknowledged 10 ms later by `member` on timeline
/// `tli` at LSN `lsn`.
fn ack(client: u32, seq: u64, t: f64, member: &str, tli: u32, lsn: u64) -> Write {
    Write {
        client,
        seq,
        sent: t,
        acked: Some(t + 0.01),
        server: Some(Accepted { member: member.into(), timeline: tli, time: t + 0.005, lsn }),
    }
}

fn failed(client: u32, seq: u64, t: f64) -> Write {
    Write { client, seq, sent: t, acked: None, server: None }
}

fn read(member: &str, replica: bool, t: f64, seen: &[(u32, u64)]) -> Read {
    Read {
        member: member.into(),
        replica,
        started: t,
        seen: seen.iter().copied().collect::<BTreeMap<_, _>>(),
    }
}

/// m1 on timeline 1 until a kill at t=10, m2 on timeline 2 from t=12: every write survives,
/// reads see what was acknowledged.
fn clean() -> History {
    let mut writes = Vec::new();
    for i in 0..10u64 {
        writes.push(ack(1, i + 1, i as f64, "127.0.0.1:5001", 1, 1000 + i * 100));
    }
    writes.push(failed(1, 11, 10.5));
    for i in 0..5u64 {
        writes.push(ack(1, 12 + i, 12.0 + i as f64, "127.0.0.1:5002", 2, 5000 + i * 100));
    }
    let survivors = writes.iter().filter(|w| w.acked.is_some()).map(|w| (w.client, w.seq)).collect();
    History {
        writes,
        reads: vec![
            read("127.0.0.1:5001", false, 5.5, &[(1, 6)]),
            read("127.0.0.1:5003", true, 14.5, &[(1, 13)]),
        ],
        faults: vec![Fault {
            kind: "kill-node".into(),
            target: "m1 (primary)".into(),
            injected: 10.0,
            healed: Some(11.0),
            converged: Some(15.0),
        }],
        survivors,
        lagging_at_end: Vec::new(),
    }
}

#[test]
fn a_clean_history_has_no_violation_and_measures_the_failover() {
    let v = check(&clean(), &protection());
    assert_eq!(v.violations, Vec::<String>::new());
    assert_eq!((v.writes, v.acknowledged), (16, 15));
    let f = &v.faults[0];
    assert!((f.writable_after.expect("writable") - 2.01).abs() < 1e-9, "{f:?}");
    assert!((f.converged_after.expect("converged") - 5.0).abs() < 1e-9);
    // The replica read at 14.5 missed seq 14 (acknowledged at 14.01).
    assert!((v.max_replica_staleness.expect("measured") - 0.49).abs() < 1e-9);
}

#[test]
fn the_outage_after_a_fault_counts_even_when_a_write_landed_just_after_it() {
    let mut h = clean();
    // A write acknowledged 10 ms after the fault (in flight when it hit), then nothing until 12.01.
    h.writes.push(ack(2, 1, 10.0, "127.0.0.1:5001", 1, 1950));
    h.survivors.push((2, 1));
    let v = check(&h, &protection());
    assert!((v.faults[0].writable_after.expect("writable") - 2.0).abs() < 1e-9, "{:?}", v.faults[0]);
}

#[test]
fn an_acknowledged_write_missing_at_the_end_is_lost() {
    let mut h = clean();
    h.survivors.retain(|&(_, seq)| seq != 10);
    let v = check(&h, &protection());
    assert_eq!(v.lost.len(), 1);
    assert_eq!((v.lost[0].seq, v.lost[0].lag_bytes, v.lost[0].allowed), (10, 100, false));
    assert!(v.violations[0].contains("acknowledged write 1/10"), "{:?}", v.violations);
}

#[test]
fn performance_mode_allows_loss_within_the_lag_bound_only() {
    let mut h = clean();
    h.survivors.retain(|&(_, seq)| seq != 9 && seq != 10);
    let mut checks = Checks { durability: Durability::Performance, max_lag_bytes: 150, ..protection() };
    let v = check(&h, &checks);
    assert_eq!(
        v.lost.iter().map(|l| (l.lag_bytes, l.allowed)).collect::<Vec<_>>(),
        [(100, true), (200, false)]
    );
    assert_eq!(v.violations.len(), 1);
    checks.max_lag_bytes = 200;
    assert!(check(&h, &checks).violations.is_empty());
    // A read on the new primary misses the two lost writes: allowed loss, not a stale read.
    h.reads.push(read("127.0.0.1:5002", false, 11.5, &[(1, 8)]));
    let v = check(&h, &checks);
    assert!(v.violations.is_empty(), "{:?}", v.violations);
    checks.durability = Durability::Protection;
    let v = check(&h, &checks);
    assert_eq!((v.lost.len(), v.stale_reads.len()), (2, 1), "in protection both are violations");
}

#[test]
fn two_members_acknowledging_in_overlapping_windows_is_split_brain() {
    let mut h = clean();
    // The old primary acknowledges once more after the new one took its first write.
    h.writes.push(ack(2, 1, 12.5, "127.0.0.1:5001", 1, 2000));
    h.survivors.push((2, 1));
    let v = check(&h, &protection());
    assert_eq!(v.split_brain.len(), 1, "{v:?}");
    assert!(
        v.violations.iter().any(|s| s.starts_with("split brain: 127.0.0.1:5001/1")),
        "{:?}",
        v.violations
    );
}

#[test]
fn a_member_primary_again_on_a_later_timeline_is_not_split_brain() {
    let mut h = clean();
    h.writes.push(ack(1, 17, 20.0, "127.0.0.1:5001", 3, 9000));
    h.survivors.push((1, 17));
    assert!(check(&h, &protection()).violations.is_empty());
}

#[test]
fn a_read_write_read_missing_an_acknowledged_write_is_stale() {
    let mut h = clean();
    h.reads.push(read("127.0.0.1:5002", false, 13.5, &[(1, 11)]));
    let v = check(&h, &protection());
    assert_eq!(v.stale_reads.len(), 1);
    assert_eq!((v.stale_reads[0].acked_seq, v.stale_reads[0].seen_seq), (13, 11));
}

#[test]
fn replica_staleness_beyond_the_limit_is_a_violation() {
    let mut h = clean();
    h.reads.push(read("127.0.0.1:5003", true, 14.5, &[(1, 3)]));
    let mut checks = protection();
    assert!(check(&h, &checks).violations.is_empty(), "measured only without a limit");
    checks.max_replica_staleness = Some(5.0);
    let v = check(&h, &checks);
    assert!((v.max_replica_staleness.expect("measured") - 11.49).abs() < 1e-9);
    assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
}

#[test]
fn a_fault_never_followed_by_a_write_or_convergence_is_unrecovered() {
    let mut h = clean();
    h.faults.push(Fault {
        kind: "freeze-agent".into(),
        target: "m2 (primary)".into(),
        injected: 30.0,
        healed: None,
        converged: None,
    });
    h.lagging_at_end.push("127.0.0.1:5003".into());
    let v = check(&h, &protection());
    assert_eq!(v.violations.len(), 3, "{:?}", v.violations);
}
