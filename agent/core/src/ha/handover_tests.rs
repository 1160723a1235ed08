//! Cases for the handover choice on termination.

use std::collections::BTreeMap;

use super::*;
use crate::Lsn;
use crate::ha::observation::{Postgres, ReplicaConnection, Report};
use crate::ha::pod::tests::{cluster, name, report, running};
use crate::state::GrantReason;

fn replica(member: &str, lsn: u64) -> Report {
    let mut r = report(member, running(true, true), None);
    if let Postgres::Running(p) = &mut r.postgres {
        p.lsn = Some(Lsn(lsn));
    }
    r
}

/// pg-0, the primary, with `streaming` connected to it (its own view, `pg_stat_replication`).
fn primary_seeing(streaming: &[&str]) -> Report {
    let mut r = report("pg-0", running(false, false), Some((3, 900)));
    if let Postgres::Running(p) = &mut r.postgres {
        p.replicas = streaming
            .iter()
            .map(|n| ReplicaConnection {
                name: n.to_string(),
                state: "streaming".into(),
                flush_lsn: None,
                replay_lsn: None,
                sync_state: "async".into(),
            })
            .collect();
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
        primary_seeing(&["pg-1", "pg-2"]),
        replica("pg-1", 100),
        replica("pg-2", 200),
        report("pg-3", Postgres::Stopped, None),
    ];
    assert_eq!(handover(&name("pg-0"), &c, &reports, &BTreeMap::new()), Handover::To(name("pg-2")));
}

#[test]
fn a_replica_already_on_the_new_revision_is_preferred_during_a_rolling_update() {
    let c = cluster("pg-0", 3, GrantReason::Bootstrap);
    let reports = vec![primary_seeing(&["pg-1", "pg-2"]), replica("pg-1", 100), replica("pg-2", 200)];
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
        handover(
            &name("pg-0"),
            &c,
            &[primary_seeing(&["pg-1", "pg-2"]), nofailover, not_streaming],
            &BTreeMap::new()
        ),
        Handover::NoCandidate
    );
}

/// `pgquorumctl local down` stops the replicas first: their last reports still say streaming,
/// but the primary's own Postgres no longer sees them, so it stops without a handover that
/// could not commit (and without waiting for one). A replica that says it stops is skipped too.
#[test]
fn a_replica_gone_from_the_primarys_view_or_stopping_is_not_a_candidate() {
    let c = cluster("pg-0", 3, GrantReason::Bootstrap);
    let both = vec![primary_seeing(&[]), replica("pg-1", 100), replica("pg-2", 200)];
    assert_eq!(handover(&name("pg-0"), &c, &both, &BTreeMap::new()), Handover::NoCandidate);
    let one = vec![primary_seeing(&["pg-1"]), replica("pg-1", 100), replica("pg-2", 200)];
    assert_eq!(handover(&name("pg-0"), &c, &one, &BTreeMap::new()), Handover::To(name("pg-1")));
    let mut stopping = replica("pg-2", 200);
    stopping.stopping = true;
    let seen = vec![primary_seeing(&["pg-1", "pg-2"]), replica("pg-1", 100), stopping];
    assert_eq!(handover(&name("pg-0"), &c, &seen, &BTreeMap::new()), Handover::To(name("pg-1")));
}

#[test]
fn leadership_goes_to_an_answering_voter_that_stays_and_to_the_primary_last() {
    let voters = vec![name("pg-0"), name("pg-1"), name("pg-2")];
    let all: std::collections::BTreeSet<_> = voters.iter().cloned().collect();
    let primary = name("pg-1");
    let to = |answering: &std::collections::BTreeSet<MemberName>, reports: &[Report]| {
        leadership_target(&name("pg-2"), &voters, answering, reports, Some(&primary)).cloned()
    };
    assert_eq!(to(&all, &[]), Some(name("pg-0")), "not the primary's member while another can");
    let mut stopping = replica("pg-0", 1);
    stopping.stopping = true;
    assert_eq!(to(&all, &[stopping.clone()]), Some(name("pg-1")), "the primary's, when the other stops");
    let only_primary: std::collections::BTreeSet<_> = [name("pg-1")].into();
    assert_eq!(to(&only_primary, &[]), Some(name("pg-1")));
    assert_eq!(to(&[name("pg-0")].into(), &[stopping]), None, "nobody answers and stays");
    assert_eq!(to(&Default::default(), &[]), None);
}

#[test]
fn only_a_report_that_says_so_makes_a_member_stopping() {
    let mut stopping = replica("pg-1", 1);
    stopping.stopping = true;
    let reports = vec![replica("pg-0", 1), stopping];
    assert!(reports_stopping(&reports, &name("pg-1")));
    assert!(!reports_stopping(&reports, &name("pg-0")));
    assert!(!reports_stopping(&reports, &name("pg-2")), "no report, no stop known");
}
