//! Every member's last report, followed with a long poll of each peer's `MemberStatus` (served
//! from memory): a peer answers as soon as its report changes, and otherwise twice per
//! staleness bound. Used by the coordinator (who is where, who stopped streaming) and by
//! replicas (the primary's timeline history and address).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use pgquorum_core::MemberName;
use pgquorum_core::ha::observation::{Report, Seen};
use pgquorum_core::state::MemberNode;
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

/// How long a peer holds a long poll while its report does not change: half the time after
/// which a report counts as stale, so a live peer's report is always fresh.
pub fn keepalive() -> Duration {
    pgquorum_core::ha::HaConfig::default().report_stale_after / 2
}

/// Follows every other member's report until `cancel`, each with its own long poll
/// ([`follow`]); the members are re-read `every` (the HA loop's interval) after Raft's
/// membership or state changes, and every 10 s regardless. `clock` gives the HA loop's time.
pub async fn poll(
    cluster: Cluster,
    shared: std::sync::Arc<super::Shared>,
    every: Duration,
    clock: impl Fn() -> Duration + Send + Sync + 'static,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let clock: Clock = std::sync::Arc::new(clock);
    let mut following: BTreeMap<u64, (String, tokio::task::JoinHandle<()>)> = BTreeMap::new();
    let mut members = cluster.node.raft.server_metrics();
    loop {
        let me = cluster.node.ident.node_id;
        let nodes: BTreeMap<u64, _> =
            cluster.membership().nodes.into_iter().filter(|(id, _)| *id != me).collect();
        following.retain(|id, (grpc, task)| {
            let keep = nodes.get(id).is_some_and(|n| &n.grpc == grpc) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (id, node) in nodes {
            if let std::collections::btree_map::Entry::Vacant(e) = following.entry(id) {
                let grpc = node.grpc.clone();
                e.insert((grpc, tokio::spawn(follow(cluster.clone(), shared.clone(), node, clock.clone()))));
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = openraft::async_runtime::watch::WatchReceiver::changed(&mut members) => {
                tokio::time::sleep(every).await;
            }
        }
    }
    for (_, task) in following.values() {
        task.abort();
    }
    Ok(())
}

type Clock = std::sync::Arc<dyn Fn() -> Duration + Send + Sync>;

/// Follows one peer's report: a long poll that the peer answers when its report changes, and at
/// least every [`keepalive`]. A changed report wakes the HA loop, and so does the moment the last
/// report goes stale while the peer does not answer (a quiet loop does not tick to find out).
/// After a failure (the peer is down, or unreachable) it tries again every [`keepalive`] / 2.
async fn follow(cluster: Cluster, shared: std::sync::Arc<super::Shared>, node: MemberNode, clock: Clock) {
    let keepalive = keepalive();
    let stale_after = pgquorum_core::ha::HaConfig::default().report_stale_after;
    // The digest the peer sent (for its long poll) and that of the content last seen.
    let (mut known, mut seen) = (0u64, 0u64);
    // When the last report arrived, and whether the loop was told it went stale since.
    let (mut last_ok, mut told_stale) = (None::<tokio::time::Instant>, false);
    loop {
        let started = tokio::time::Instant::now();
        let stale_at = last_ok.map(|t| t + stale_after + Duration::from_millis(1));
        let answer =
            telling_stale(ask(&cluster, &node, known, keepalive), stale_at, &mut told_stale, &shared).await;
        let digest = match answer {
            Some((report, digest)) => {
                // Compared by content here too: a peer that predates long polls sends no digest.
                let content = super::report_digest(&report);
                shared.reports.put(report, clock());
                (last_ok, told_stale) = (Some(tokio::time::Instant::now()), false);
                if content != seen {
                    seen = content;
                    shared.wake.notify_one();
                }
                digest
            }
            None => 0,
        };
        // 0: the call failed, or the peer predates long polls (it answered at once).
        if digest == 0 {
            let stale_at = last_ok.map(|t| t + stale_after + Duration::from_millis(1));
            let retry = tokio::time::sleep_until(started + keepalive / 2);
            telling_stale(retry, stale_at, &mut told_stale, &shared).await;
        }
        known = digest;
    }
}

/// Awaits `fut`; if `stale_at` passes first, wakes the HA loop (once per silence: `told`).
async fn telling_stale<T>(
    fut: impl std::future::Future<Output = T>,
    stale_at: Option<tokio::time::Instant>,
    told: &mut bool,
    shared: &super::Shared,
) -> T {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = super::sleep_until_some(stale_at), if !*told => {
                *told = true;
                shared.wake.notify_one();
            }
        }
    }
}

/// One `MemberStatus` call: the peer's report and digest, or `None` when it did not answer.
async fn ask(cluster: &Cluster, node: &MemberNode, known: u64, wait: Duration) -> Option<(Report, u64)> {
    let mut client = cluster.peer_client(&node.grpc).ok()?;
    let mut req = tonic::Request::new(MemberStatusRequest {
        cluster_name: cluster.node.ident.cluster_name.to_string(),
        known,
        wait_ms: if known == 0 { 0 } else { wait.as_millis() as u32 },
    });
    let limit = wait + Duration::from_millis(500);
    req.set_timeout(limit);
    let reply = tokio::time::timeout(limit + Duration::from_millis(100), client.member_status(req))
        .await
        .ok()?
        .ok()?;
    let reply = reply.into_inner();
    let report = serde_json::from_slice::<Report>(&reply.report).ok().filter(|r| r.member == node.name)?;
    Some((report, reply.digest))
}
