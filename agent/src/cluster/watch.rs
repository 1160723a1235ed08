//! Logs what an operator wants to know about the Raft group, once per change: leader changes,
//! and (on the leader) peers becoming unreachable and reachable again. openraft itself logs
//! every failed heartbeat, which is why its default log level is `error`.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Cluster;

/// How long without an acknowledged heartbeat before a peer counts as unreachable, at least
/// (`Cluster::answered_within`: longer at long heartbeat intervals).
const UNREACHABLE_AFTER: Duration = Duration::from_secs(2);

/// Runs until `cancel`, logging transitions. Wakes when the leader changes, and on the leader
/// once a second (on a timer-slot boundary) to look at its peers' heartbeats; not on every
/// heartbeat, which changes openraft's full metrics.
pub async fn log_transitions(cluster: Cluster, cancel: CancellationToken) -> anyhow::Result<()> {
    use openraft::async_runtime::watch::WatchReceiver;
    let mut server = cluster.node.raft.server_metrics();
    let mut leader: Option<u64> = None;
    let mut unreachable: BTreeSet<u64> = BTreeSet::new();
    // Since when this member leads (its heartbeats may be unanswered at first).
    let mut leading_since: Option<tokio::time::Instant> = None;
    let after = cluster.answered_within(UNREACHABLE_AFTER);
    loop {
        let (leading, lines) = cluster.with_metrics(|m| {
            let leading = m.heartbeat.is_some() && m.current_leader == Some(m.id);
            if !leading || m.current_leader != leader {
                leading_since = None;
            }
            let settled =
                leading && leading_since.get_or_insert_with(tokio::time::Instant::now).elapsed() > after;
            (leading, transitions(m, &mut leader, &mut unreachable, settled, after))
        });
        if !lines.is_empty() {
            let membership = cluster.membership();
            let name = |id: u64| {
                membership.nodes.get(&id).map_or_else(|| format!("{id:016x}"), |n| n.name.to_string())
            };
            for line in lines {
                match line {
                    Transition::Leader(term, Some(l)) => {
                        tracing::info!(term, "Raft leader is now {}", name(l))
                    }
                    Transition::Leader(term, None) => tracing::info!(term, "no Raft leader"),
                    Transition::Lost(id) => {
                        tracing::warn!("{} is unreachable (no heartbeat answer for {after:?})", name(id))
                    }
                    Transition::Back(id) => tracing::info!("{} is reachable again", name(id)),
                }
            }
        }
        // With the first heartbeat after a second: no wake-up of its own (`timer::at_beat`).
        let look_again = crate::timer::at_beat(tokio::time::Instant::now() + LOOK_EVERY);
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            changed = server.changed() => if changed.is_err() {
                return Ok(());
            },
            _ = look_again, if leading => {}
        }
    }
}

/// How often the leader looks at its peers' heartbeats.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// One thing to log.
#[derive(Debug, PartialEq, Eq)]
enum Transition {
    Leader(u64, Option<u64>),
    Lost(u64),
    Back(u64),
}

/// What changed since `leader` and `unreachable` (which it updates). A peer never answered
/// counts as unreachable only once this member has led for `after` (`settled`):
/// right after an election its heartbeats may not have been answered yet.
fn transitions(
    m: &openraft::RaftMetrics<crate::raft::TypeConfig>,
    leader: &mut Option<u64>,
    unreachable: &mut BTreeSet<u64>,
    settled: bool,
    after: Duration,
) -> Vec<Transition> {
    let mut out = Vec::new();
    if m.current_leader != *leader {
        out.push(Transition::Leader(m.current_term, m.current_leader));
        *leader = m.current_leader;
        unreachable.clear();
    }
    for (id, at) in m.heartbeat.iter().flatten() {
        if *id == m.id {
            continue;
        }
        let lost = at.as_ref().map_or(settled, |t| openraft::Instant::elapsed(&**t) > after);
        if lost && unreachable.insert(*id) {
            out.push(Transition::Lost(*id));
        } else if !lost && unreachable.remove(id) {
            out.push(Transition::Back(*id));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::metrics::SerdeInstant;

    fn metrics(
        leader: Option<u64>,
        heard: &[(u64, Option<Duration>)],
    ) -> openraft::RaftMetrics<crate::raft::TypeConfig> {
        let mut m = openraft::RaftMetrics::new_initial(1);
        m.current_term = 3;
        m.current_leader = leader;
        if !heard.is_empty() {
            let now = <openraft::alias::InstantOf<crate::raft::TypeConfig> as openraft::Instant>::now();
            m.heartbeat =
                Some(heard.iter().map(|(id, ago)| (*id, ago.map(|a| SerdeInstant::new(now - a)))).collect());
        }
        m
    }

    #[test]
    fn each_transition_is_reported_once() {
        let (mut leader, mut unreachable) = (None, BTreeSet::new());
        let secs = Duration::from_secs;
        let m = metrics(Some(1), &[(1, Some(secs(0))), (2, Some(secs(0))), (3, Some(secs(3)))]);
        assert_eq!(
            transitions(&m, &mut leader, &mut unreachable, true, UNREACHABLE_AFTER),
            vec![Transition::Leader(3, Some(1)), Transition::Lost(3)]
        );
        assert_eq!(transitions(&m, &mut leader, &mut unreachable, true, UNREACHABLE_AFTER), vec![]);
        let m = metrics(Some(1), &[(1, Some(secs(0))), (2, None), (3, Some(secs(0)))]);
        assert_eq!(
            transitions(&m, &mut leader, &mut unreachable, true, UNREACHABLE_AFTER),
            vec![Transition::Lost(2), Transition::Back(3)]
        );
        let m = metrics(None, &[]);
        assert_eq!(
            transitions(&m, &mut leader, &mut unreachable, true, UNREACHABLE_AFTER),
            vec![Transition::Leader(3, None)]
        );
        assert!(unreachable.is_empty(), "a new leader starts with every peer reachable");
    }

    #[test]
    fn a_peer_not_yet_answered_is_unreachable_only_once_the_leader_has_settled() {
        let (mut leader, mut unreachable) = (None, BTreeSet::new());
        let m = metrics(Some(1), &[(1, Some(Duration::ZERO)), (2, None)]);
        assert_eq!(
            transitions(&m, &mut leader, &mut unreachable, false, UNREACHABLE_AFTER),
            vec![Transition::Leader(3, Some(1))]
        );
        assert_eq!(
            transitions(&m, &mut leader, &mut unreachable, true, UNREACHABLE_AFTER),
            vec![Transition::Lost(2)]
        );
    }
}
