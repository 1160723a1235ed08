//! Logs what an operator wants to know about the Raft group, once per change: leader changes,
//! and (on the leader) peers becoming unreachable and reachable again. openraft itself logs
//! every failed heartbeat, which is why its default log level is `error`.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Cluster;

/// How long without an acknowledged heartbeat before a peer counts as unreachable.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(2);

/// Runs until `cancel`, logging transitions.
pub async fn log_transitions(cluster: Cluster, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut leader: Option<u64> = None;
    let mut unreachable: BTreeSet<u64> = BTreeSet::new();
    loop {
        let m = cluster.metrics();
        let membership = cluster.membership();
        let name =
            |id: u64| membership.nodes.get(&id).map_or_else(|| format!("{id:016x}"), |n| n.name.to_string());
        if m.current_leader != leader {
            match m.current_leader {
                Some(l) => tracing::info!(term = m.current_term, "Raft leader is now {}", name(l)),
                None => tracing::info!(term = m.current_term, "no Raft leader"),
            }
            leader = m.current_leader;
            unreachable.clear();
        }
        if let Some(hb) = &m.heartbeat {
            for (id, at) in hb {
                if *id == m.id {
                    continue;
                }
                let lost = at.as_ref().is_none_or(|t| openraft::Instant::elapsed(&**t) > UNREACHABLE_AFTER);
                if lost && unreachable.insert(*id) {
                    tracing::warn!(
                        "{} is unreachable (no heartbeat answer for {UNREACHABLE_AFTER:?})",
                        name(*id)
                    );
                } else if !lost && unreachable.remove(id) {
                    tracing::info!("{} is reachable again", name(*id));
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
