//! Cases for the handover choice on termination.

use std::collections::BTreeMap;

use super::*;
use crate::Lsn;
use crate::ha::observation::{Postgres, Report};
use crate::ha::pod::tests::{cluster, name, report, running};
use crate::state::GrantReason;

fn replica(member: &str, lsn: u64) -> Report {
    let mut r = report(member, running(true, true), None);
    if let Postgres::Running(p) = &mut r.postgres {
        p.lsn = Some(Lsn(lsn));
    }
    r
}

fn revs(pairs: &[(&str, &str)]) -> BTreeMap<MemberName, String> {
    pairs.iter().map(|(m, r)| (name(m), r.to_string())).collect()
}

#[test]
fn primary_hands_over_to_the_most_advanced_streaming_replica() {
    let c = cluster("pg-0", 3, GrantReason::Bootstrap);
    let reports = vec![
        report("pg-0", running(false, false), Some((3, 900))),
        replica("pg-1", 100),
        replica("pg-2", 200),
        report("pg-3", Postgres::Stopped, None),
    ];
    assert_eq!(handover(&name("pg-0"), &c, &reports, &BTreeMap::new()), Handover::To(name("pg-2")));
}

#[test]
fn a_replica_already_on_the_new_revision_is_preferred_during_a_rolling_update() {
    let c = cluster("pg-0", 3, GrantReason::Bootstrap);
    let reports = vec![replica("pg-1", 100), replica("pg-2", 200)];
    let r = revs(&[("pg-0", "old"), ("pg-1", "new"), ("pg-2", "old")]);
    assert_eq!(handover(&name("pg-0"), &c, &reports, &r), Handover::To(name("pg-1")));
    let same = revs(&[("pg-0", "old"), ("pg-1", "old"), ("pg-2", "old")]);
    assert_eq!(handover(&name("pg-0"), &c, &reports, &same), Handover::To(name("pg-2")));
}

#[test]
fn nothing_to_hand_over_for_a_replica_paused_cluster_or_without_candidates() {
    let c = cluster("pg-0", 3, GrantReason::Bootstrap);
    let reports = vec![replica("pg-1", 100)];
    assert_eq!(handover(&name("pg-1"), &c, &reports, &BTreeMap::new()), Handover::NotPrimary);
    let mut paused = c.clone();
    paused.paused = true;
    assert_eq!(handover(&name("pg-0"), &paused, &reports, &BTreeMap::new()), Handover::Paused);
    let mut nofailover = replica("pg-1", 100);
    nofailover.tags.nofailover = true;
    let not_streaming = report("pg-2", running(true, false), None);
    assert_eq!(
        handover(&name("pg-0"), &c, &[nofailover, not_streaming], &BTreeMap::new()),
        Handover::NoCandidate
    );
}
