//! Load balancers that route reads to this member: which addresses asked a replica-only health
//! check (`/replica`, `/async`, `/sync`) and what they were last told. Before it promotes, the
//! agent waits, briefly and boundedly, until every balancer told "replica" in the last few
//! seconds has since been told "not a replica" (a granted member answers 503 at once). A
//! balancer that marks a server down on one failed check (the shipped HAProxy replicas
//! listener: `fall 1`, `on-marked-down shutdown-sessions`) then closes its read sessions and
//! stops routing reads here before Postgres accepts its first write: reads never reach the new
//! primary through it.
//!
//! Balancers are told apart by address only: several on one host count as one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// A balancer that answered "replica" longer ago than this no longer routes reads here (it
/// checks at least this often, or it has gone).
pub const RECENT: Duration = Duration::from_secs(5);

/// The longest a promotion waits for balancers (a balancer checking less often is not waited
/// for: its reads may reach the new primary until its next check).
pub const MAX_WAIT: Duration = Duration::from_millis(400);

/// Time left to a balancer between being told and the promotion, to act on the answer.
const GRACE: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug, Default)]
struct Told {
    yes: Option<Duration>,
    no: Option<Duration>,
}

/// What each balancer was last told, by its address.
#[derive(Debug, Default)]
pub struct ReadBalancers {
    told: Mutex<HashMap<IpAddr, Told>>,
}

impl ReadBalancers {
    /// Records that `from` was told `replica` (200) or not (503) at `now`.
    pub fn record(&self, from: IpAddr, replica: bool, now: Duration) {
        let mut told = self.told.lock().expect("lock is never poisoned");
        told.retain(|_, t| t.yes.max(t.no).is_some_and(|at| now.saturating_sub(at) <= RECENT));
        let t = told.entry(from).or_default();
        if replica {
            t.yes = Some(now);
        } else {
            t.no = Some(now);
        }
    }

    /// Balancers that may still route reads here at `now`: told "replica" within `RECENT` and
    /// not told otherwise since (or only within `GRACE`).
    pub fn still_routing(&self, now: Duration) -> Vec<IpAddr> {
        let told = self.told.lock().expect("lock is never poisoned");
        let mut out: Vec<IpAddr> = told
            .iter()
            .filter(|(_, t)| {
                let Some(yes) = t.yes.filter(|y| now.saturating_sub(*y) <= RECENT) else { return false };
                t.no.is_none_or(|no| no < yes || now.saturating_sub(no) < GRACE)
            })
            .map(|(ip, _)| *ip)
            .collect();
        out.sort();
        out
    }

    /// Waits until no balancer still routes reads here, at most `MAX_WAIT`; `clock` is the
    /// loop's monotonic now. Returns the balancers it stopped waiting for.
    pub async fn drained(&self, clock: impl Fn() -> Duration) -> Vec<IpAddr> {
        let deadline = clock() + MAX_WAIT;
        loop {
            let left = self.still_routing(clock());
            if left.is_empty() || clock() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_balancer_told_replica_routes_until_told_otherwise_and_given_a_moment() {
        let b = ReadBalancers::default();
        let h1: IpAddr = "10.0.0.1".parse().expect("ip");
        let h2: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!(b.still_routing(ms(0)).is_empty(), "nobody asked");
        b.record(h1, true, ms(1000));
        b.record(h2, true, ms(1050));
        assert_eq!(b.still_routing(ms(1100)), vec![h1, h2]);
        b.record(h1, false, ms(1200));
        assert_eq!(b.still_routing(ms(1205)), vec![h1, h2], "h1 is given the grace to act");
        assert_eq!(b.still_routing(ms(1215)), vec![h2]);
        // h2 stops asking: after RECENT it is no longer waited for.
        assert_eq!(b.still_routing(ms(1050) + RECENT + ms(1)), Vec::<IpAddr>::new());
        // Told "replica" again after "no": routing again.
        b.record(h1, true, ms(7000));
        assert_eq!(b.still_routing(ms(7010)), vec![h1]);
    }

    #[test]
    fn balancers_that_only_ever_heard_no_are_not_waited_for() {
        let b = ReadBalancers::default();
        b.record("10.0.0.3".parse().expect("ip"), false, ms(10));
        assert!(b.still_routing(ms(20)).is_empty());
    }

    #[tokio::test]
    async fn the_wait_is_bounded() {
        let b = ReadBalancers::default();
        let start = std::time::Instant::now();
        let clock = move || start.elapsed();
        b.record("10.0.0.4".parse().expect("ip"), true, clock());
        let left = b.drained(clock).await;
        assert_eq!(left.len(), 1, "never told otherwise");
        assert!(start.elapsed() >= MAX_WAIT && start.elapsed() < MAX_WAIT + ms(300), "{:?}", start.elapsed());
    }
}
