//! The agent's runtime, and deadlines that cost one wake-up instead of two.
//!
//! tokio keeps timers in a wheel of levels: 1 ms slots, then 64 ms slots, then 4096 ms slots.
//! A timer more than one 64 ms slot away waits in a coarser level, and the runtime wakes at the
//! start of that slot only to move it down, then again at the deadline: a 500 ms sleep wakes
//! the thread twice. A deadline on a 64 ms boundary of the wheel's own clock (which starts when
//! the runtime is built) fires at the slot start itself. [`coarse`] moves a deadline later to
//! the next such boundary (at most 64 ms), for sleeps where that does not matter: an idle
//! member's HA loop, a long poll's keepalive. [`runtime`] builds the runtime, records where
//! the wheel's clock starts, and has the Raft leader send its heartbeats on those boundaries too
//! (each due one interval after the last, going out at most one slot late; the patched
//! openraft's `set_heartbeat_alignment`). The unit test below fails if tokio's wheel stops
//! working this way.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// The width of a slot on the wheel's second level: how late an aligned deadline may fire.
pub const SLOT: Duration = Duration::from_millis(64);

/// Taken just before the runtime (and its timer wheel) is built.
static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Builds the agent's runtime: one thread (tokio's current-thread scheduler), with I/O and
/// timers, and records the origin [`coarse`] aligns to.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let origin = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _ = ORIGIN.set(origin);
    openraft::set_heartbeat_alignment(slot_wait);
    Ok(runtime)
}

/// How long to wait for something due `wait` from now so that it fires on a slot boundary.
/// openraft adds this to an instant it took before calling, so the sum lands on the boundary
/// or a hair before it, never in the next millisecond.
fn slot_wait(wait: Duration) -> Duration {
    let now = Instant::now();
    coarse(now + wait).saturating_duration_since(now)
}

/// `deadline`, moved later (by less than 64 ms) to where it costs the runtime a single
/// wake-up; unchanged when the runtime was not built by [`runtime`] (tests, tools).
pub fn coarse(deadline: Instant) -> Instant {
    ORIGIN.get().map_or(deadline, |origin| aligned(*origin, deadline))
}

/// The first instant at or after `deadline` that is a whole number of slots after `origin`.
fn aligned(origin: Instant, deadline: Instant) -> Instant {
    let slots = deadline.saturating_duration_since(origin).as_nanos().div_ceil(SLOT.as_nanos());
    origin + SLOT * u32::try_from(slots).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voluntary_switches() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("/proc");
        let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches")).expect("field");
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("number")
    }

    #[test]
    fn aligned_deadlines_are_on_slot_boundaries_and_never_earlier() {
        let o = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(aligned(o, o + ms(500)), o + ms(512));
        assert_eq!(aligned(o, o + ms(512)), o + ms(512), "already on a boundary");
        assert_eq!(aligned(o, o + ms(512) + Duration::from_micros(1)), o + ms(576));
        assert_eq!(aligned(o, o + ms(1)), o + ms(64));
        assert_eq!(aligned(o + ms(10), o), o + ms(10), "a deadline before the origin: the origin");
    }

    #[test]
    fn an_aligned_sleep_wakes_the_runtime_once_and_a_plain_one_twice() {
        // The same steps as `runtime`, on this test's own thread and origin.
        let origin = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (plain, coarse) = rt.block_on(async {
            let count = |f: fn(Instant, Instant) -> Instant| async move {
                let before = voluntary_switches();
                for _ in 0..8 {
                    tokio::time::sleep_until(f(origin, Instant::now() + Duration::from_millis(150))).await;
                }
                voluntary_switches() - before
            };
            // 150 ms plus 7: never on a boundary by chance.
            let plain = count(|_, d| d + Duration::from_millis(7)).await;
            let coarse = count(aligned).await;
            (plain, coarse)
        });
        assert!(coarse <= 9, "8 aligned sleeps woke the thread {coarse} times (expected 8)");
        assert!(plain >= 14, "8 plain sleeps woke the thread {plain} times: tokio's wheel changed?");
    }
}
