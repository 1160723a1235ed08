//! The agent's runtime, and deadlines that cost one wake-up instead of two.
//!
//! tokio keeps timers in a wheel of levels: 1 ms slots, then 64 ms slots, then 4096 ms slots.
//! A timer more than one 64 ms slot away waits in a coarser level, and the runtime wakes at the
//! start of that slot only to move it down, then again at the deadline: a 500 ms sleep wakes
//! the thread twice. A deadline on a 64 ms boundary of the wheel's own clock (which starts when
//! the runtime is built) fires at the slot start itself. [`runtime`] builds the runtime and
//! records where the wheel's clock starts.
//!
//! Periodic work that may come a little early or late, because no decision waits for it (an
//! idle member's HA loop refreshing its report and reading its status, a long poll's keepalive
//! answer), happens on the agent's *beat*: every eighth slot boundary (512 ms). Whatever is due
//! around the same beat then shares one wake-up: a member that answers two peers' long polls
//! and refreshes its own report wakes once for the three. [`on_beat`] picks the beat. The unit
//! tests below fail if tokio's wheel stops working this way.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// The width of a slot on the wheel's second level: how late an aligned deadline may fire.
const SLOT: Duration = Duration::from_millis(64);

/// Every eighth slot boundary: when periodic work that no decision waits for is done.
pub const BEAT: Duration = Duration::from_millis(512);

/// Taken just before the runtime (and its timer wheel) is built.
static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Builds the agent's runtime: one thread (tokio's current-thread scheduler), with I/O and
/// timers, and records the origin [`on_beat`] aligns to.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let origin = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _ = ORIGIN.set(origin);
    Ok(runtime)
}

/// When to do something due `wait` from `now` that may come early, or at most one slot late:
/// the last beat no later than a slot after the due time, if that is after `now`; otherwise the
/// slot boundary at or after the due time. Unchanged when the runtime was not built by
/// [`runtime`] (tests, tools).
pub fn on_beat(now: Instant, wait: Duration) -> Instant {
    ORIGIN.get().map_or(now + wait, |origin| beat_or_slot(*origin, now, wait))
}

fn beat_or_slot(origin: Instant, now: Instant, wait: Duration) -> Instant {
    let latest = (now + wait + SLOT).saturating_duration_since(origin);
    let beats = latest.as_nanos() / BEAT.as_nanos();
    let beat = origin + BEAT * u32::try_from(beats).unwrap_or(u32::MAX);
    if beat > now { beat } else { aligned(origin, now + wait) }
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
    fn periodic_work_lands_on_the_last_beat_before_it_is_a_slot_late() {
        let o = Instant::now();
        let ms = Duration::from_millis;
        // A long poll held from 100 ms: due at 600, answered at the beat at 512.
        assert_eq!(beat_or_slot(o, o + ms(100), ms(500)), o + ms(512));
        // Held from 460: due at 960, answered at the beat at 1024 (64 ms late at most).
        assert_eq!(beat_or_slot(o, o + ms(460), ms(500)), o + ms(1024));
        // Two requests held from different moments of one beat are answered together, and so is
        // the HA loop's refresh woken at the previous beat.
        let answers = [ms(530), ms(700), ms(900)].map(|at| beat_or_slot(o, o + at, ms(500)));
        assert_eq!(answers, [o + ms(1024); 3]);
        assert_eq!(beat_or_slot(o, o + ms(512), ms(500)), o + ms(1024));
        // Nothing due before the next beat: the slot after the due time.
        assert_eq!(beat_or_slot(o, o + ms(10), ms(100)), o + ms(128));
        // Never more than a slot late, never at or before now.
        for start in (0..2048).step_by(7) {
            let now = o + ms(start);
            for wait in [ms(50), ms(500), ms(1000)] {
                let at = beat_or_slot(o, now, wait);
                assert!(at > now && at <= now + wait + SLOT, "{start} ms + {wait:?} -> {:?}", at - o);
            }
        }
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
