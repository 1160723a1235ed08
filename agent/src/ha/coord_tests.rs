//! `Coord::confirm` against a real one-member Raft leader: a confirmation counts from the
//! request's arrival, not from the end of its ReadIndex round, and never moves back.

use std::sync::Mutex;
use std::time::Duration;

use pgquorum_core::state::{Command, DynamicConfig, GrantReason};
use pgquorum_core::{Epoch, MemberName, UnixMillis};

use super::Coord;
use crate::cluster::testing::lone_leader;

/// A clock that reads `first` once, then `later` on every call after: the first read is the
/// request's arrival, the later ones the end of its round.
fn clock(first: Duration, later: Duration) -> impl Fn() -> Duration {
    let calls = Mutex::new(0u32);
    move || {
        let mut n = calls.lock().expect("not poisoned");
        *n += 1;
        if *n == 1 { first } else { later }
    }
}

#[tokio::test]
async fn a_confirmation_counts_from_the_requests_arrival() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = lone_leader(dir.path()).await;
    let m1 = MemberName::new("m1").expect("valid name");
    let init =
        Command::InitCluster { cluster_id: "c".into(), config: DynamicConfig::default(), at: UnixMillis(1) };
    cluster.propose(init).await.expect("committed").0.expect("initialised");
    let grant = Command::GrantPrimary {
        expected_epoch: Epoch(0),
        member: m1.clone(),
        reason: GrantReason::Bootstrap,
        sync: Default::default(),
        at: UnixMillis(2),
        lsn: None,
        timeline: None,
        floor: None,
    };
    cluster.propose(grant).await.expect("committed").0.expect("granted");
    let term = cluster.with_metrics(|m| m.current_term);
    let ttl = cluster.applied().state.config.ttl;
    let (margin, ms) = (Duration::from_millis(100), Duration::from_millis);

    let coord = Coord::default();
    // Arrives at 10 s; its round ends 300 ms later (a heartbeat interval and more).
    let confirmed = coord.confirm(&cluster, &m1, Epoch(1), false, clock(ms(10_000), ms(10_300))).await;
    assert_eq!(confirmed, Ok(ttl));
    let view = coord.view(term).expect("leading");
    assert_eq!(view.last_confirmed, Some(ms(10_000)), "counted from the arrival");
    // So the lease may be declared expired ttl + margin after the arrival.
    assert!(!coord.try_expire(Epoch(1), ttl, margin, ms(10_000) + ttl + margin - ms(1)));

    // An older request answered late does not move the confirmation back.
    coord.confirm(&cluster, &m1, Epoch(1), true, clock(ms(9_800), ms(10_400))).await.expect("confirmed");
    assert_eq!(coord.view(term).expect("leading").last_confirmed, Some(ms(10_000)));
    // A newer one moves it on.
    coord.confirm(&cluster, &m1, Epoch(1), false, clock(ms(10_500), ms(10_900))).await.expect("confirmed");
    assert_eq!(coord.view(term).expect("leading").last_confirmed, Some(ms(10_500)));
    assert!(coord.try_expire(Epoch(1), ttl, margin, ms(10_500) + ttl + margin));
    cluster.node.raft.shutdown().await.expect("shutdown");
}
