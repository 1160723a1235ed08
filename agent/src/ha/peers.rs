//! Every member's last report, followed with one long poll per pair of members of the peer's
//! `MemberStatus` (served from memory): a peer answers as soon as its report changes, and
//! otherwise twice per staleness bound; each request carries the asker's own report, so the
//! one poll serves both ways. Used by the coordinator (who is where, who stopped streaming) and
//! by replicas (the primary's timeline history and address).

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
    /// Per peer: what the last reports it sent were.
    peers: Mutex<BTreeMap<MemberName, PeerMeta>>,
    /// Notified on every report a peer sends with its request.
    pushes: tokio::sync::Notify,
    /// Long-poll requests this member sent to its peers (a metric: an idle member that only
    /// listens sends none).
    polls: std::sync::atomic::AtomicU64,
}

/// What this member knows of the reports a peer sent.
#[derive(Clone, Copy, Default)]
struct PeerMeta {
    /// The digest of the last report's content (`report_digest`).
    content: u64,
    /// When the peer last sent its report with a request of its own long poll ([`follow`]).
    pushed: Option<tokio::time::Instant>,
    /// The sequence number of that request.
    seq: u64,
}

impl Reports {
    /// Stores a report received at `at`.
    pub fn put(&self, report: Report, at: Duration) {
        let mut map = self.map.lock().expect("reports lock is never poisoned");
        map.insert(report.member.clone(), Seen { report, received: at });
    }

    /// Stores a peer's report received at `at` in answer to this member's long poll. Returns
    /// whether its content differs from the last one stored this way (then the HA loop has
    /// something new to look at).
    pub fn put_peer(&self, report: Report, at: Duration) -> bool {
        self.put_from_peer(report, at, None).unwrap_or(false)
    }

    /// Stores a report a peer sent with request `seq` of its own long poll, received at `at`;
    /// `None` when not taken: a request older than one already taken (while the peer's pushes
    /// are fresh: a retry on a new connection overtook it). Else whether the content changed.
    pub fn put_pushed(&self, report: Report, at: Duration, seq: u64) -> Option<bool> {
        self.put_from_peer(report, at, Some(seq))
    }

    fn put_from_peer(&self, report: Report, at: Duration, pushed: Option<u64>) -> Option<bool> {
        let content = super::report_digest(&report);
        let now = tokio::time::Instant::now();
        let stale_after = pgquorum_core::ha::HaConfig::default().report_stale_after;
        let mut peers = self.peers.lock().expect("reports lock is never poisoned");
        let meta = peers.entry(report.member.clone()).or_default();
        if let Some(seq) = pushed {
            let fresh = meta.pushed.is_some_and(|t| now.saturating_duration_since(t) <= stale_after);
            if seq != 0 && seq <= meta.seq && fresh {
                return None;
            }
            (meta.pushed, meta.seq) = (Some(now), seq);
            self.pushes.notify_waiters();
        }
        let changed = std::mem::replace(&mut meta.content, content) != content;
        drop(peers);
        self.put(report, at);
        Some(changed)
    }

    /// How many long-poll requests this member has sent to its peers.
    pub fn polls(&self) -> u64 {
        self.polls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When `member` last sent its report with a request of its own.
    pub fn pushed_at(&self, member: &MemberName) -> Option<tokio::time::Instant> {
        self.peers.lock().expect("reports lock is never poisoned").get(member).and_then(|p| p.pushed)
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
                let polled = id < me;
                let task = follow(cluster.clone(), shared.clone(), node, polled, clock.clone());
                e.insert((grpc, tokio::spawn(task)));
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
/// least every [`keepalive`]. Each request carries this member's own report, and a new request
/// goes out as soon as it changes, so one long poll per pair of members carries reports both
/// ways: of two members, the one with the lower node id polls; the other (`polled`) only
/// listens while those requests arrive, and polls itself while they do not (the peer is down,
/// or predates pushed reports). A changed report wakes the HA loop, and so does the moment the
/// last report goes stale while the peer does not answer (a quiet loop does not tick to find
/// out). After a failure (the peer is down, or unreachable) it tries again every
/// [`keepalive`] / 2.
async fn follow(
    cluster: Cluster,
    shared: std::sync::Arc<super::Shared>,
    node: MemberNode,
    polled: bool,
    clock: Clock,
) {
    let keepalive = keepalive();
    let stale_after = pgquorum_core::ha::HaConfig::default().report_stale_after;
    let just_after = |t: tokio::time::Instant| t + stale_after + Duration::from_millis(1);
    // The peer's requests come a keepalive apart: half of one more and the next is overdue.
    let overdue = keepalive + keepalive / 2;
    // The digest the peer sent (for its long poll).
    let mut known = 0u64;
    // When the last report arrived, and whether the loop was told it went stale since.
    let (mut last_ok, mut told_stale) = (None::<tokio::time::Instant>, false);
    let mut mine = shared.digest.subscribe();
    loop {
        // Registered before reading the push time, so no push slips in between.
        let next_push = shared.reports.pushes.notified();
        tokio::pin!(next_push);
        next_push.as_mut().enable();
        let pushed = polled.then(|| shared.reports.pushed_at(&node.name)).flatten();
        if let Some(at) = pushed.filter(|at| *at + overdue > tokio::time::Instant::now()) {
            // The peer's own long poll keeps its report fresh here: look again at the next
            // push (which arrives on a wake-up of its own), or when it is overdue; then ask at
            // once (`known` 0), before its report goes stale.
            (last_ok, told_stale, known) = (Some(at), false, 0);
            tokio::select! {
                _ = tokio::time::sleep_until(at + overdue) => {}
                _ = next_push => {}
            }
            continue;
        }
        let started = tokio::time::Instant::now();
        mine.borrow_and_update();
        let call = async {
            tokio::select! {
                answer = ask(&cluster, &shared, &node, known, keepalive) => Some(answer),
                _ = mine.changed() => None,
            }
        };
        let Some(answer) = telling_stale(call, last_ok.map(just_after), &mut told_stale, &shared).await
        else {
            // This member's report changed: ask again at once, carrying the new one.
            continue;
        };
        let digest = match answer {
            Some((report, digest)) => {
                if shared.reports.put_peer(report, clock()) {
                    shared.wake.notify_one();
                }
                (last_ok, told_stale) = (Some(tokio::time::Instant::now()), false);
                digest
            }
            None => 0,
        };
        // 0: the call failed, or the peer predates long polls (it answered at once).
        if digest == 0 {
            let retry = tokio::time::sleep_until(started + keepalive / 2);
            telling_stale(retry, last_ok.map(just_after), &mut told_stale, &shared).await;
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

/// The next sequence number of a `MemberStatus` request: growing for as long as the process
/// runs, from its start time in microseconds (so a restarted agent starts above where it was).
fn next_seq() -> u64 {
    static SEQ: std::sync::OnceLock<std::sync::atomic::AtomicU64> = std::sync::OnceLock::new();
    SEQ.get_or_init(|| {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        std::sync::atomic::AtomicU64::new(u64::try_from(since.as_micros()).unwrap_or(1).max(1))
    })
    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One `MemberStatus` call carrying this member's report: the peer's report and digest, or
/// `None` when it did not answer.
async fn ask(
    cluster: &Cluster,
    shared: &super::Shared,
    node: &MemberNode,
    known: u64,
    wait: Duration,
) -> Option<(Report, u64)> {
    let mut client = cluster.peer_client(&node.grpc).ok()?;
    shared.reports.polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mine = shared.current_report().0.and_then(|r| serde_json::to_vec(&r).ok()).unwrap_or_default();
    let mut req = tonic::Request::new(MemberStatusRequest {
        cluster_name: cluster.node.ident.cluster_name.to_string(),
        known,
        wait_ms: if known == 0 { 0 } else { wait.as_millis() as u32 },
        report: mine,
        seq: next_seq(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use pgquorum_core::ha::observation::{Data, Postgres, Tags};
    use pgquorum_core::{Epoch, UnixMillis};

    fn report(member: &str, epoch: u64, at: u64) -> Report {
        Report {
            member: MemberName::new(member).expect("name"),
            address: String::new(),
            epoch: Epoch(epoch),
            postgres: Postgres::Stopped,
            data: Data::Missing,
            lease: None,
            fenced_epoch: None,
            stop_streaming_for: None,
            task: None,
            tags: Tags::default(),
            timeline_history: Vec::new(),
            sync_applied_at: None,
            at: UnixMillis(at),
            election_timeout_max: None,
            problem: None,
            roles_pending: false,
            stopping: false,
        }
    }

    #[test]
    fn a_peer_report_counts_as_new_only_when_its_content_changed() {
        let r = Reports::default();
        let ms = Duration::from_millis;
        assert!(r.put_peer(report("m2", 1, 0), ms(10)), "the first report is new");
        assert_eq!(r.put_pushed(report("m2", 1, 500), ms(20), 7), Some(false), "only its time differs");
        assert!(r.put_peer(report("m2", 2, 500), ms(30)), "a new epoch is new");
        assert!(r.put_peer(report("m3", 2, 500), ms(30)), "each member on its own");
        let seen = r.for_members([MemberName::new("m2").expect("name")]);
        let m2 = seen.values().next().and_then(|s| s.as_ref()).expect("held");
        assert_eq!((m2.report.epoch, m2.received), (Epoch(2), ms(30)), "the last one is held");
    }

    #[test]
    fn only_a_report_sent_with_a_request_is_a_push() {
        let r = Reports::default();
        let m2 = MemberName::new("m2").expect("name");
        r.put_peer(report("m2", 1, 0), Duration::ZERO);
        assert_eq!(r.pushed_at(&m2), None, "an answer to this member's own poll");
        let before = tokio::time::Instant::now();
        r.put_pushed(report("m2", 1, 0), Duration::ZERO, 5);
        assert!(r.pushed_at(&m2).is_some_and(|t| t >= before));
        r.put(report("m2", 1, 0), Duration::ZERO);
        assert!(r.pushed_at(&m2).is_some(), "a plain put leaves the push time alone");
    }

    #[test]
    fn a_pushed_report_from_an_older_request_is_not_taken() {
        let r = Reports::default();
        let ms = Duration::from_millis;
        let m2 = MemberName::new("m2").expect("name");
        let epoch = |r: &Reports| r.for_members([m2.clone()])[&m2].as_ref().map(|s| s.report.epoch);
        assert_eq!(r.put_pushed(report("m2", 2, 0), ms(10), 20), Some(true));
        assert_eq!(r.put_pushed(report("m2", 1, 0), ms(20), 19), None, "overtaken by request 20");
        assert_eq!(r.put_pushed(report("m2", 1, 0), ms(20), 20), None, "the same request again");
        assert_eq!(epoch(&r), Some(Epoch(2)), "the newer report is kept");
        assert_eq!(r.put_pushed(report("m2", 3, 0), ms(30), 21), Some(true));
        assert_eq!(r.put_pushed(report("m2", 3, 0), ms(40), 0), Some(false), "0: not given, taken");
        assert_eq!(epoch(&r), Some(Epoch(3)));
    }
}
