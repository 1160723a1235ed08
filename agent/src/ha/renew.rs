//! One lease renewal on the member's side, as a series of attempts: the first on the cached
//! channel to the Raft leader, confirmed with the leader's next periodic heartbeat (no extra
//! round while all is well; at once while the member acquires the lease or after a renewal
//! that failed: [`urgent`], [`prompt`]); then,
//! while none has answered, another on a new connection confirmed with a heartbeat sent at once
//! (the earlier ones keep running): the first of them after [`first_retry_after`], the rest
//! every [`attempt_every`]. The first confirmation wins and counts from its own send time. A
//! request sent into a network cut sits in TCP retransmission (its next try can be seconds
//! after the network is back); the attempt started after the cut heals lands at once, so a blip
//! shorter than the lease does not cost it (DESIGN invariant 7).
//!
//! A quiet primary's first attempt usually goes out on a reply to a Raft AppendEntries instead
//! and is confirmed in a later one ([`Carried`], `raft::lease_mail`); its later attempts, if it
//! needs any, are calls as above.
//!
//! Owns only the transport of a renewal: whether and when to renew is the core's
//! (`rules::lease::upkeep`), confirming it is the coordinator's (`Coord::confirm`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pgquorum_core::{Epoch, MemberName};
use pgquorum_proto::peer::RenewLeaseRequest;

use super::Shared;
use crate::cluster::Cluster;

/// A confirmed renewal: the epoch, the ttl the coordinator confirmed, and when the attempt
/// that got the confirmation was sent (the lease counts from there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirmed {
    /// The epoch renewed.
    pub epoch: Epoch,
    /// The ttl confirmed.
    pub ttl: Duration,
    /// Send time of the attempt that was confirmed (the loop's monotonic clock).
    pub sent: Duration,
}

/// How often a renewal starts another attempt while none has answered: a fifteenth of the ttl,
/// between 50 and 200 ms (ttl 1.5 s: every 100 ms, so about 13 attempts fit before the fence
/// point even if every earlier one is lost).
pub fn attempt_every(ttl: Duration) -> Duration {
    (ttl / 15).clamp(Duration::from_millis(50), Duration::from_millis(200))
}

/// When a renewal starts its second attempt: once the first, which waits for the leader's next
/// periodic heartbeat, should have been answered (a heartbeat interval, the timer slot the
/// leader may send it late by, and half an `every`),
/// and no sooner than `every`; after `every` when the first failed sooner. `heartbeat` is this
/// member's own `raft.heartbeat_interval`, which the leader's is expected to match.
pub fn first_retry_after(every: Duration, heartbeat: Duration) -> Duration {
    every.max(heartbeat + crate::timer::SLOT + every / 2)
}

/// Whether a renewal is urgent: the member is `acquiring` (it does not hold this epoch's lease
/// yet), or the last renewal of the lease it holds `failed_before` (no attempt was confirmed
/// within its budget). An urgent renewal asks for a confirmation at once from its first
/// attempt ([`prompt`]) and tries again every attempt interval ([`schedule`]).
///
/// A new primary promotes only once it holds its lease, so its first confirmation must not
/// wait on the leader's heartbeat schedule: that costs one heartbeat round per failover or
/// switchover, and saves up to a heartbeat interval (plus the slot the leader may send it late
/// by) on every promotion. After a failed renewal the Raft leader may be gone (frozen, cut off):
/// waiting for its next periodic heartbeat would put the second attempt a heartbeat interval,
/// a slot and half an attempt interval later, which at the defaults (ttl 1.5 s, heartbeat
/// 256 ms) falls after the fence point (renewals start ttl/3 apart with a budget of ttl/3: the
/// second renewal after the last confirmed one starts at 1000 ms, the fence point is at
/// 1350 ms, and its second attempt would have come at 1370 ms).
pub fn urgent(acquiring: bool, failed_before: bool) -> bool {
    acquiring || failed_before
}

/// When a renewal starts its second attempt and every one after: ([`first_retry_after`],
/// [`attempt_every`]), or the attempt interval for both when it is [`urgent`].
pub fn schedule(ttl: Duration, heartbeat: Duration, urgent: bool) -> (Duration, Duration) {
    let every = attempt_every(ttl);
    (if urgent { every } else { first_retry_after(every, heartbeat) }, every)
}

/// Whether attempt `n` (0: the first) of a renewal asks for a confirmation at once (the leader
/// sends a heartbeat for it) rather than with its next periodic heartbeat: every attempt after
/// the first, and the first too when the renewal is [`urgent`].
pub fn prompt(n: u32, urgent: bool) -> bool {
    n > 0 || urgent
}

/// A first attempt that already went out on a reply to an AppendEntries (`raft::lease_mail`):
/// when, on the loop's clock and the runtime's, and its confirmation (a note this member
/// accepted).
pub struct Carried {
    /// Send time on the loop's clock (the lease counts from it).
    pub sent: Duration,
    /// The same moment on the runtime's clock.
    pub at: tokio::time::Instant,
    /// Resolves with the ttl once confirmed.
    pub confirmed: Pin<Box<dyn Future<Output = Duration> + Send>>,
}

type Attempt = Pin<Box<dyn Future<Output = Result<Confirmed, String>> + Send>>;

/// Renews `epoch` for `me`, trying until `budget` has passed: a second attempt after
/// `first_retry`, then one every `every`; `urgent`: see [`prompt`]. The first attempt is
/// `carried` when it already went out on Raft's traffic (never urgent), and a call otherwise;
/// the later ones are calls either way.
#[allow(clippy::too_many_arguments)]
pub async fn renew(
    cluster: Cluster,
    shared: Arc<Shared>,
    me: MemberName,
    epoch: Epoch,
    (first_retry, every): (Duration, Duration),
    budget: Duration,
    urgent: bool,
    carried: Option<Carried>,
) -> Result<Confirmed, String> {
    let mut attempts = FuturesUnordered::<Attempt>::new();
    let mut last_err = String::from("no attempt answered");
    let mut n = 0u32;
    let mut started = tokio::time::Instant::now();
    let mut next = started;
    if let Some(c) = carried {
        let sent = c.sent;
        attempts.push(Box::pin(async move { Ok(Confirmed { epoch, ttl: c.confirmed.await, sent }) }));
        (n, started, next) = (1, c.at, c.at + first_retry);
    }
    let give_up = started + budget;
    loop {
        let now = tokio::time::Instant::now();
        if now >= next {
            let sent = shared.now();
            let (cluster, shared, me) = (cluster.clone(), shared.clone(), me.clone());
            let fresh = prompt(n, urgent);
            attempts.push(Box::pin(async move {
                let res = attempt(&cluster, &shared, &me, epoch, fresh).await;
                res.map(|ttl| Confirmed { epoch, ttl, sent })
            }));
            n += 1;
            next = now + if n == 1 { first_retry } else { every };
        }
        tokio::select! {
            Some(res) = attempts.next() => match res {
                Ok(c) => return Ok(c),
                Err(e) => {
                    last_err = e;
                    // The first attempt failed without waiting for a heartbeat (no leader
                    // known, a refused connection): the second need not wait either.
                    if n == 1 {
                        next = next.min(started + every);
                    }
                }
            },
            _ = tokio::time::sleep_until(next) => {}
            _ = tokio::time::sleep_until(give_up) => {
                return Err(format!("no confirmation within {budget:?} ({n} attempts; last error: {last_err})"));
            }
        }
    }
}

/// One request to the leader (or the local coordinator when this agent leads); a `fresh` one
/// ([`prompt`]: a later attempt, or the first of an [`urgent`] renewal) on a new connection, and
/// confirmed with a heartbeat sent at once.
async fn attempt(
    cluster: &Cluster,
    shared: &Shared,
    me: &MemberName,
    epoch: Epoch,
    fresh: bool,
) -> Result<Duration, String> {
    match cluster.leader() {
        Some((id, _)) if id == cluster.node.ident.node_id => {
            shared.coord.confirm(cluster, me, epoch, fresh, || shared.now()).await
        }
        Some((_, node)) => {
            let channel = if fresh {
                cluster.node.channels.reconnect(&node.grpc)?
            } else {
                cluster.node.channels.get(&node.grpc)?
            };
            shared.renewal_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut client = pgquorum_proto::peer::peer_service_client::PeerServiceClient::new(channel);
            let req = RenewLeaseRequest {
                cluster_name: cluster.node.ident.cluster_name.to_string(),
                member: me.to_string(),
                epoch: epoch.0,
                periodic: !fresh,
            };
            let reply = client.renew_lease(req).await.map_err(|s| s.message().to_string())?;
            Ok(Duration::from_millis(reply.get_ref().ttl_ms))
        }
        None => Err("no Raft leader known".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn later_attempts_come_every_fifteenth_of_the_ttl_within_bounds() {
        assert_eq!(attempt_every(MS(1500)), MS(100));
        assert_eq!(attempt_every(MS(300)), MS(50), "at least 50 ms");
        assert_eq!(attempt_every(MS(15_000)), MS(200), "at most 200 ms");
    }

    #[test]
    fn only_a_held_leases_first_attempt_waits_for_the_periodic_heartbeat() {
        assert!(!prompt(0, false), "renewing a held lease: the next periodic heartbeat confirms it");
        assert!(prompt(0, true), "urgent: confirmed at once, promotion does not wait");
        assert!(prompt(1, false) && prompt(2, true), "later attempts: at once");
    }

    #[test]
    fn the_second_attempt_waits_for_the_first_ones_heartbeat() {
        // Defaults: a 256 ms heartbeat, sent on the leader's next 64 ms timer slot; the first
        // attempt is answered within about 320 ms.
        assert_eq!(first_retry_after(MS(100), MS(256)), MS(370));
        // The 150 ms heartbeat of the sessions before the thirteenth.
        assert_eq!(first_retry_after(MS(100), MS(150)), MS(264));
        // A slow heartbeat (the low-power profile: 500 ms) holds the second attempt back as long.
        assert_eq!(first_retry_after(MS(200), MS(500)), MS(664));
        // Never sooner than the attempt interval.
        assert_eq!(first_retry_after(MS(300), MS(50)), MS(300));
    }

    #[test]
    fn a_renewal_after_a_failed_one_tries_every_attempt_interval_from_the_start() {
        assert!(urgent(true, false) && urgent(false, true) && !urgent(false, false));
        let (ttl, heartbeat) = (MS(1500), MS(256));
        assert_eq!(schedule(ttl, heartbeat, false), (MS(370), MS(100)));
        assert_eq!(schedule(ttl, heartbeat, true), (MS(100), MS(100)));
        // The last confirmed renewal was sent at 0; its lease fences at 1350 ms. The next
        // renewal starts at 500 ms and fails (its leader froze after confirming at 0); the one
        // after starts at 1000 ms. Its attempts must reach a new leader before the fence point
        // whenever one exists by then: not urgent, its second attempt would come after it.
        let (start, fence) = (MS(1000), MS(1350));
        let (first, _) = schedule(ttl, heartbeat, false);
        assert!(start + first > fence, "the case this rule is for");
        let (first, every) = schedule(ttl, heartbeat, true);
        assert!(start + first + every * 2 < fence, "attempts at 1000, 1100, 1200 and 1300 ms");
    }
}
