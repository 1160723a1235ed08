//! `Coord::confirm` and `Coord::confirm_carried` against a real one-member Raft leader: a
//! confirmation counts from the request's arrival, not from the end of its ReadIndex round (or
//! the AppendEntries that carries the note), and never moves back; a carried one only in the
//! leader's own term, for the primary of the current epoch, and never once it expired.

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

/// A one-member Raft leader whose cluster granted epoch 1 to `m1`.
async fn granted(dir: &std::path::Path) -> (crate::cluster::Cluster, MemberName) {
    let cluster = lone_leader(dir).await;
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
    (cluster, m1)
}

#[tokio::test]
async fn a_confirmation_counts_from_the_requests_arrival() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, m1) = granted(dir.path()).await;
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

#[tokio::test]
async fn a_carried_renewal_is_confirmed_only_for_the_current_primary_with_the_leaders_vote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, m1) = granted(dir.path()).await;
    let (term, vote) = cluster.with_metrics(|m| (m.current_term, m.vote));
    let ttl = cluster.applied().state.config.ttl;
    let (margin, ms) = (Duration::from_millis(100), Duration::from_millis);
    // The lone voter is a quorum by itself: any peer id completes the pair.
    let peer = 7;
    let coord = Coord::default();
    let confirm = |member: &MemberName, epoch: u64, vote: crate::raft::Vote, arrived: u64| {
        let member = member.clone();
        let (cluster, coord) = (&cluster, &coord);
        async move {
            let now = move || ms(arrived + 256);
            coord.confirm_carried(cluster, peer, (&member, Epoch(epoch)), vote, (ms(arrived), now)).await
        }
    };
    assert_eq!(confirm(&m1, 1, vote, 10_000).await, Ok(ttl));
    let view = coord.view(term).expect("leading");
    assert_eq!(view.last_confirmed, Some(ms(10_000)), "counted from the renewal's arrival");
    assert!(!coord.try_expire(Epoch(1), ttl, margin, ms(10_000) + ttl + margin - ms(1)));

    let later = crate::raft::Vote::new_committed(term + 1, cluster.node.ident.node_id);
    assert!(confirm(&m1, 1, later, 10_500).await.is_err(), "a vote this node does not hold carries no note");
    let m2 = MemberName::new("m2").expect("valid name");
    assert!(confirm(&m2, 1, vote, 10_500).await.is_err(), "only the primary's renewal");
    assert!(confirm(&m1, 2, vote, 10_500).await.is_err(), "only the current epoch's");
    assert_eq!(
        coord.view(term).expect("leading").last_confirmed,
        Some(ms(10_000)),
        "refusals record nothing"
    );

    // An older renewal answered late does not move the confirmation back.
    confirm(&m1, 1, vote, 9_800).await.expect("confirmed");
    assert_eq!(coord.view(term).expect("leading").last_confirmed, Some(ms(10_000)));
    // Once the coordinator declared the epoch expired, nothing renews it (its term started at
    // the first confirmation's "now", 10 256 ms).
    assert!(coord.try_expire(Epoch(1), ttl, margin, ms(10_256) + ttl + margin));
    assert!(confirm(&m1, 1, vote, 12_000).await.is_err(), "expired: refused");
    cluster.node.raft.shutdown().await.expect("shutdown");
}
