//! `Cluster::leader_within` against a real one-member Raft node: it waits for a leader that
//! appears meanwhile, and gives up after its bound when none does.

use std::collections::BTreeMap;
use std::time::Duration;

use super::testing::lone_member;

#[tokio::test]
async fn waits_for_a_leader_that_appears_and_gives_up_after_its_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = lone_member(dir.path()).await;

    let started = tokio::time::Instant::now();
    assert!(
        cluster.leader_within(Duration::from_millis(150)).await.is_none(),
        "no leader before initialising"
    );
    assert!(started.elapsed() >= Duration::from_millis(150), "waited its whole bound");

    let init = {
        let raft = cluster.node.raft.clone();
        let members = BTreeMap::from([(cluster.node.ident.node_id, (*cluster.me).clone())]);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            raft.initialize(members).await.expect("initialise");
        })
    };
    let (id, node) = cluster.leader_within(Duration::from_secs(10)).await.expect("the leader that appeared");
    assert_eq!(id, cluster.node.ident.node_id);
    assert_eq!(node.name.as_str(), "m1");
    init.await.expect("initialiser");
    cluster.node.raft.shutdown().await.expect("shutdown");
}
