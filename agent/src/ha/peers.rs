//! Every member's last report, polled from each peer's `MemberStatus` (served from memory) at
//! the HA loop's pace while anything changes, slower while this member is settled. Used by the coordinator (who is where, who stopped streaming) and by
//! replicas (the primary's timeline history and address).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use pgquorum_core::MemberName;
use pgquorum_core::ha::observation::{Report, Seen};
use pgquorum_proto::peer::MemberStatusRequest;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;

/// Reports by member name.
#[derive(Default)]
pub struct Reports {
    map: Mutex<BTreeMap<MemberName, Seen>>,
}

impl Reports {
    /// Stores a report received at `at`.
    pub fn put(&self, report: Report, at: Duration) {
        let mut map = self.map.lock().expect("reports lock is never poisoned");
        map.insert(report.member.clone(), Seen { report, received: at });
    }

    /// The last report of every member in `members` (None when never heard from).
    pub fn for_members(
        &self,
        members: impl IntoIterator<Item = MemberName>,
    ) -> BTreeMap<MemberName, Option<Seen>> {
        let map = self.map.lock().expect("reports lock is never poisoned");
        members
            .into_iter()
            .map(|m| {
                let seen = map.get(&m).cloned();
                (m, seen)
            })
            .collect()
    }

    /// Every report held.
    pub fn all(&self) -> Vec<Seen> {
        self.map.lock().expect("reports lock is never poisoned").values().cloned().collect()
    }
}

/// How often peers are polled while this member is settled: a quarter of the time after which
/// a report counts as stale, so one slow round never makes a live peer look unreachable.
pub fn settled_every() -> Duration {
    pgquorum_core::ha::HaConfig::default().report_stale_after / 4
}

/// Polls every other member until `cancel`: every `every` (the HA loop's interval) while this
/// member is not settled, every [`settled_every`] while it is. `clock` gives the HA loop's time.
pub async fn poll(
    cluster: Cluster,
    shared: std::sync::Arc<super::Shared>,
    every: Duration,
    clock: impl Fn() -> Duration + Send + Sync + 'static,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let reports = shared.reports.clone();
    let clock = std::sync::Arc::new(clock);
    loop {
        let me = cluster.node.ident.node_id;
        let calls = cluster.membership().nodes.into_iter().filter(|(id, _)| *id != me).map(|(_, node)| {
            let cluster = cluster.clone();
            let reports = reports.clone();
            let clock = clock.clone();
            async move {
                let Ok(mut client) = cluster.peer_client(&node.grpc) else { return };
                let mut req = tonic::Request::new(MemberStatusRequest {
                    cluster_name: cluster.node.ident.cluster_name.to_string(),
                });
                req.set_timeout(Duration::from_millis(500));
                if let Ok(Ok(reply)) =
                    tokio::time::timeout(Duration::from_millis(600), client.member_status(req)).await
                    && let Ok(report) = serde_json::from_slice::<Report>(&reply.get_ref().report)
                    && report.member == node.name
                {
                    reports.put(report, clock());
                }
            }
        });
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = futures::future::join_all(calls) => {}
        }
        let settled = shared.settled.load(std::sync::atomic::Ordering::SeqCst);
        let pause = if settled { settled_every().max(every) } else { every };
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
            _ = shared.unsettled.notified(), if settled => {}
        }
    }
}
