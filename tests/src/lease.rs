//! Lease checks shared by the lease tests and `pgquorum-bench lease-*`: the cluster's epoch,
//! who fenced (the agent or its guard, told apart by their log lines), random `ttl` /
//! `lease_margin` changes within what the members allow, and short cuts of the primary from
//! the others in the network lab. Each cut is bounded: partition, wait the cut length, heal.

use std::time::{Duration, Instant};

use crate::cluster::Cluster;

/// What the agent logs when it fences its own Postgres (agent/src/ha/execute.rs).
pub const AGENT_FENCE_LINE: &str = "fencing: the agent kills Postgres";
/// What the fence guard prints when it kills Postgres (agent/src/fence/guard.rs).
pub const GUARD_FENCE_LINE: &str = "pgquorum fence guard: lease deadline reached";

/// The cluster's epoch as the leader reports it.
pub fn epoch(c: &mut Cluster) -> Result<u64, String> {
    let st = c.status()?;
    st["epoch"].as_u64().ok_or_else(|| format!("no epoch in {st}"))
}

/// How often each kind of fencing appears in `name`'s log after the marker `since` (the whole
/// log when the marker is absent): (by the agent, by the guard).
pub fn fencings(c: &Cluster, name: &str, since: &str) -> (usize, usize) {
    let text = c.agent(name).log_text();
    let tail = text.rfind(since).map_or(text.as_str(), |i| &text[i..]);
    (tail.matches(AGENT_FENCE_LINE).count(), tail.matches(GUARD_FENCE_LINE).count())
}

/// The cluster's epoch, and how often `name` fenced since the marker `since` (by the agent, by
/// the guard): a primary that was not failed over compares equal to (the epoch before, 0, 0).
pub fn epoch_and_fencings(c: &mut Cluster, name: &str, since: &str) -> (u64, usize, usize) {
    let (agent, guard) = fencings(c, name, since);
    (epoch(c).expect("epoch"), agent, guard)
}

/// A small deterministic generator (xorshift64*), so a run can be replayed from its seed.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed odd constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    /// A number in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % (hi - lo)
    }
}

/// One random change: `ttl` between `min_ttl` and 6 s (in 100 ms steps) with a `lease_margin`
/// below a quarter of it, or only a new `lease_margin` for the current ttl. Returns the
/// `KEY=VALUE` settings.
pub fn random_change(rng: &mut Rng, min_ttl: Duration, current_ttl: Duration) -> Vec<String> {
    let lo = (min_ttl.as_millis() as u64).div_ceil(100);
    let ttl = if rng.range(0, 4) == 0 { current_ttl.as_millis() as u64 } else { rng.range(lo, 61) * 100 };
    let margin = rng.range(0, ttl / 4 / 10 + 1) * 10;
    let mut out = Vec::new();
    if ttl != current_ttl.as_millis() as u64 {
        out.push(format!("ttl={ttl}ms"));
    }
    out.push(format!("lease_margin={margin}ms"));
    out
}

/// Cuts member `name` off from every other member (and the test process) for `cut`, then
/// heals. Needs a cluster started with `netns`.
pub fn cut_off(c: &Cluster, name: &str, cut: Duration) -> Duration {
    let lab = c.lab.as_ref().expect("cutting the network needs a cluster in the network lab");
    let i = c.agents.iter().position(|a| a.name == name).expect("a member of this cluster");
    let start = Instant::now();
    lab.partition(&[i]);
    // The sleep is the fault itself (the cut's length), not a wait for a condition.
    std::thread::sleep(cut.saturating_sub(start.elapsed()));
    lab.heal();
    start.elapsed()
}

/// How old a lease is when the member learns it was renewed: a quiet primary sends its renewal
/// with a Raft heartbeat and the leader confirms it with its next one (`raft.heartbeat_interval`,
/// 256 ms by default); the lease counts from the send time.
pub const CONFIRMED_AFTER: Duration = Duration::from_millis(256);

/// Waits until `name` holds a lease whose renewal was confirmed within the last `within` (at
/// least `ttl - CONFIRMED_AFTER - within` left, as its `pgquorum_lease_remaining_seconds`
/// says), so a fault that starts now starts just after a confirmation. Gives up (returns
/// false) after `timeout`.
pub fn wait_fresh_lease(c: &Cluster, name: &str, ttl: Duration, within: Duration, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let enough = ttl.saturating_sub(CONFIRMED_AFTER + within).as_secs_f64();
    while Instant::now() < deadline {
        let left = c.agent(name).http("GET", "/metrics").ok().and_then(|a| {
            let samples = crate::prom::parse(&a.body).ok()?;
            crate::prom::value(&samples, "pgquorum_lease_remaining_seconds", &[])
        });
        if left.is_some_and(|l| l >= enough) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}
