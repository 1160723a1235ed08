//! Test support: a real one-member Raft node wrapped in a `Cluster`, for tests of code that
//! needs a Raft leader without a network.

use std::collections::BTreeMap;
use std::time::Duration;

use pgquorum_core::state::MemberNode;

use super::Cluster;
use crate::raft::{Channels, RaftNode, RaftSettings};

/// A member named `m1` with its Raft log in `dir`, not initialised.
pub async fn lone_member(dir: &std::path::Path) -> Cluster {
    let name = pgquorum_core::MemberName::new("m1").expect("valid name");
    let channels = Channels::new(None, None).expect("channels");
    let node = RaftNode::open(dir, &name, "c", &RaftSettings::default(), channels).await.expect("raft node");
    Cluster::new(node, MemberNode { name, ..MemberNode::default() })
}

/// [`lone_member`], initialised and leading.
pub async fn lone_leader(dir: &std::path::Path) -> Cluster {
    let cluster = lone_member(dir).await;
    let members = BTreeMap::from([(cluster.node.ident.node_id, (*cluster.me).clone())]);
    cluster.node.raft.initialize(members).await.expect("initialise");
    cluster.leader_within(Duration::from_secs(10)).await.expect("a lone voter elects itself");
    cluster
}
