//! Cases for the pod role and events: when a member may be labelled primary or replica, and
//! which events a change records.

use std::time::Duration;

use super::*;
use crate::ha::observation::{Data, Postgres, Running, Tags};
use crate::state::{HistoryEntry, PrimaryGrant};
use crate::{MemberName, UnixMillis};

pub(crate) fn name(n: &str) -> MemberName {
    MemberName::new(n).expect("valid name")
}

pub(crate) fn running(in_recovery: bool, streaming: bool) -> Postgres {
    Postgres::Running(Running {
        in_recovery,
        timeline: None,
        lsn: None,
        receive_lsn: None,
        replay_lsn: None,
        streaming,
        min_recovery: None,
        upstream: in_recovery.then(|| name("pg-0")),
        synchronous_standby_names: String::new(),
        replicas: Vec::new(),
        slots: Vec::new(),
        pending_restart: Vec::new(),
        archiver: None,
    })
}

pub(crate) fn report(member: &str, postgres: Postgres, lease: Option<(u64, u64)>) -> Report {
    Report {
        member: name(member),
        address: String::new(),
        epoch: Epoch(3),
        postgres,
        data: Data::Missing,
        lease: lease.map(|(e, ms)| (Epoch(e), Duration::from_millis(ms))),
        fenced_epoch: None,
        stop_streaming_for: None,
        task: None,
        tags: Tags::default(),
        timeline_history: Vec::new(),
        sync_applied_at: None,
        at: UnixMillis(0),
        election_timeout_max: None,
        problem: None,
        roles_pending: false,
        stopping: false,
    }
}

pub(crate) fn cluster(primary: &str, epoch: u64, reason: GrantReason) -> ClusterState {
    ClusterState {
        primary: Some(PrimaryGrant {
            member: name(primary),
            epoch: Epoch(epoch),
            since: UnixMillis(0),
            expired: false,
            floor: None,
            longest_ttl_ms: None,
        }),
        epoch: Epoch(epoch),
        history: vec![HistoryEntry {
            epoch: Epoch(epoch),
            member: name(primary),
            previous: Some(name("pg-0")),
            reason,
            at: UnixMillis(0),
            lsn: None,
            timeline: None,
            floor: None,
        }],
        ..ClusterState::default()
    }
}

#[test]
fn writable_member_with_grant_and_lease_is_labelled_primary() {
    let c = cluster("pg-1", 3, GrantReason::Failover);
    let r = report("pg-1", running(false, false), Some((3, 800)));
    let role = pod_role(&r, &c);
    assert_eq!(role.role, Some(Role::Primary));
    assert_eq!(role.epoch, Epoch(3));
    assert_eq!(role.lease_left, Some(Duration::from_millis(800)));
}

#[test]
fn primary_is_unlabelled_without_lease_when_fenced_superseded_or_still_promoting() {
    let c = cluster("pg-1", 3, GrantReason::Failover);
    let no_lease = report("pg-1", running(false, false), None);
    assert_eq!(pod_role(&no_lease, &c).role, None);
    let run_out = report("pg-1", running(false, false), Some((3, 0)));
    assert_eq!(pod_role(&run_out, &c).role, None);
    let mut fenced = report("pg-1", running(false, false), Some((3, 500)));
    fenced.fenced_epoch = Some(Epoch(3));
    assert_eq!(pod_role(&fenced, &c).role, None);
    let old_epoch = report("pg-1", running(false, false), Some((2, 500)));
    assert_eq!(pod_role(&old_epoch, &c).role, None);
    let other = report("pg-2", running(false, false), Some((3, 500)));
    assert_eq!(pod_role(&other, &c).role, None, "the grant is pg-1's");
    let newer = cluster("pg-2", 4, GrantReason::Failover);
    let stale = report("pg-1", running(false, false), Some((3, 500)));
    let role = pod_role(&stale, &newer);
    assert_eq!(role.role, None);
    assert_eq!(role.epoch, Epoch(4), "the annotation carries the newest epoch known");
    let mut promoting = report("pg-1", running(true, false), Some((3, 500)));
    promoting.task = Some(Task::Promote);
    assert_eq!(pod_role(&promoting, &c).role, None, "labelled only once Postgres accepts writes");
}

#[test]
fn streaming_standby_is_a_replica_and_others_are_unlabelled() {
    let c = cluster("pg-0", 3, GrantReason::Bootstrap);
    assert_eq!(pod_role(&report("pg-1", running(true, true), None), &c).role, Some(Role::Replica));
    assert_eq!(pod_role(&report("pg-1", running(true, false), None), &c).role, None, "not streaming");
    assert_eq!(pod_role(&report("pg-1", Postgres::Stopped, None), &c).role, None);
    assert_eq!(pod_role(&report("pg-1", Postgres::Starting { since: Duration::ZERO }, None), &c).role, None);
    let mut cloning = report("pg-1", Postgres::Stopped, None);
    cloning.task = Some(Task::Clone(name("pg-0")));
    assert_eq!(pod_role(&cloning, &c).role, None);
}

#[test]
fn promotion_after_failover_records_promoted_and_failover() {
    let c = cluster("pg-1", 3, GrantReason::Failover);
    let before = report("pg-1", running(true, true), None);
    let after = report("pg-1", running(false, false), Some((3, 800)));
    let (rb, ra) = (pod_role(&before, &c), pod_role(&after, &c));
    let ev = pod_events(Some((&before, rb)), &after, ra, &c);
    let kinds: Vec<EventKind> = ev.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EventKind::Promoted, EventKind::Failover]);
    assert!(ev[0].message.contains("epoch 3") && ev[0].message.contains("from pg-0"), "{ev:?}");
    assert!(pod_events(Some((&after, ra)), &after, ra, &c).is_empty(), "no change, no event");
}

#[test]
fn switchover_demotion_fencing_clone_and_rewind_record_events() {
    let c = cluster("pg-1", 3, GrantReason::Switchover);
    let before = report("pg-1", running(true, true), None);
    let after = report("pg-1", running(false, false), Some((3, 800)));
    let kinds: Vec<EventKind> =
        pod_events(Some((&before, pod_role(&before, &c))), &after, pod_role(&after, &c), &c)
            .iter()
            .map(|e| e.kind)
            .collect();
    assert_eq!(kinds, vec![EventKind::Promoted, EventKind::Switchover]);

    let mut old = report("pg-0", running(false, false), Some((2, 800)));
    old.epoch = Epoch(2);
    let old_c = cluster("pg-0", 2, GrantReason::Bootstrap);
    assert_eq!(pod_role(&old, &old_c).role, Some(Role::Primary));
    let mut fenced = report("pg-0", Postgres::Stopped, None);
    fenced.fenced_epoch = Some(Epoch(2));
    let ev = pod_events(Some((&old, pod_role(&old, &old_c))), &fenced, pod_role(&fenced, &c), &c);
    let kinds: Vec<EventKind> = ev.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EventKind::Demoted, EventKind::Fenced]);
    assert!(ev[0].message.contains("pg-1 is primary of epoch 3"), "{ev:?}");

    let mut rewinding = report("pg-0", Postgres::Stopped, None);
    rewinding.task = Some(Task::Rewind(name("pg-1")));
    let ev = pod_events(Some((&fenced, pod_role(&fenced, &c))), &rewinding, pod_role(&rewinding, &c), &c);
    assert_eq!(ev.iter().map(|e| e.kind).collect::<Vec<_>>(), vec![EventKind::Rewind]);
    let mut cloning = report("pg-0", Postgres::Stopped, None);
    cloning.task = Some(Task::Clone(name("pg-1")));
    let ev = pod_events(Some((&rewinding, pod_role(&rewinding, &c))), &cloning, pod_role(&cloning, &c), &c);
    assert_eq!(ev.iter().map(|e| e.kind).collect::<Vec<_>>(), vec![EventKind::Clone]);
}
