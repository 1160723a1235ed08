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
//!
//! Periodic work that no decision waits for can do better still: [`at_beat`] waits past its
//! deadline for the next Raft AppendEntries the agent has answered or handled ([`beat`]: the
//! leader's heartbeats, a follower's), and so shares that wake-up instead of costing one of its
//! own; without one it fires on its own timer at most [`BEAT_WAIT`] plus a slot late.

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

/// How long after its deadline [`at_beat`] waits for a [`beat`] before it fires on its own
/// timer (at the next slot boundary): the default heartbeat interval, so a member that hears
/// from its Raft leader, or leads, almost always has a beat by then.
pub const BEAT_WAIT: Duration = Duration::from_millis(256);

/// Woken by [`beat`].
static BEAT: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Marks a moment the runtime is awake for Raft anyway: every [`at_beat`] whose deadline has
/// passed ends now, in this wake-up. Called where the agent has its AppendEntries answered (the
/// leader's heartbeats) and where it has handled one (a follower's). A member that leads or
/// hears from its leader gets one at least every heartbeat interval (256 ms by default); a
/// single-voter cluster gets none, and its waits end on their own timers.
pub fn beat() {
    BEAT.notify_waiters();
}

/// Resolves at the first [`beat`] at or after `deadline`, or, when none comes within
/// [`BEAT_WAIT`], at the next slot boundary after that (at most `BEAT_WAIT` + 64 ms late).
/// For periodic work where lateness does not matter: an idle member's status read and report
/// refresh, a long poll's keepalive answer, the leader's look at its peers, the archive's idle
/// scan.
pub async fn at_beat(deadline: Instant) {
    at_beat_of(&BEAT, deadline).await
}

/// [`at_beat`] for the beats of `beats` (tests use their own).
async fn at_beat_of(beats: &tokio::sync::Notify, deadline: Instant) {
    let fallback = tokio::time::sleep_until(coarse(deadline + BEAT_WAIT));
    tokio::pin!(fallback);
    loop {
        // A beat from here on ends the wait once the deadline has passed.
        let beat = beats.notified();
        tokio::pin!(beat);
        beat.as_mut().enable();
        tokio::select! {
            biased;
            _ = &mut fallback => return,
            _ = beat => {
                if Instant::now() >= deadline {
                    return;
                }
            }
        }
    }
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

    #[tokio::test]
    async fn at_beat_ends_at_the_first_beat_after_its_deadline() {
        let ms = Duration::from_millis;
        let beats = std::sync::Arc::new(tokio::sync::Notify::new());
        let start = Instant::now();
        let heart = {
            let beats = beats.clone();
            tokio::spawn(async move {
                for at in [20, 80] {
                    tokio::time::sleep_until(start + ms(at)).await;
                    beats.notify_waiters();
                }
            })
        };
        at_beat_of(&beats, start + ms(50)).await;
        let took = start.elapsed();
        assert!(took >= ms(80), "ended at {took:?}: the beat at 20 ms came before its deadline");
        assert!(took < ms(50) + BEAT_WAIT, "ended at {took:?}: it missed the beat at 80 ms");
        heart.await.expect("beats");
    }

    #[tokio::test]
    async fn at_beat_without_beats_fires_on_its_own_timer() {
        let beats = tokio::sync::Notify::new();
        let start = Instant::now();
        at_beat_of(&beats, start + Duration::from_millis(10)).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(10) + BEAT_WAIT, "ended at {took:?}");
        assert!(took < Duration::from_millis(10) + BEAT_WAIT + SLOT + Duration::from_millis(200), "{took:?}");
    }

    #[test]
    fn work_at_a_beat_costs_no_wake_up_of_its_own() {
        // A "heartbeat" every 100 ms (off the slot boundaries) beats; four pieces of periodic
        // work due every 150 ms wait for it. The thread's wake-ups over ten heartbeats alone,
        // then over ten with the work waiting for them: the work adds none.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let beats = tokio::sync::Notify::new();
        let (alone, with_work) = rt.block_on(async {
            let heart = || async {
                let start = Instant::now();
                for n in 1..=10 {
                    tokio::time::sleep_until(start + Duration::from_millis(100 * n + 7)).await;
                    beats.notify_waiters();
                }
            };
            let before = voluntary_switches();
            heart().await;
            let alone = voluntary_switches() - before;
            let before = voluntary_switches();
            let work = async {
                for _ in 0..4 {
                    at_beat_of(&beats, Instant::now() + Duration::from_millis(150)).await;
                }
            };
            tokio::join!(heart(), work);
            (alone, voluntary_switches() - before)
        });
        assert!(
            with_work <= alone + 1,
            "{alone} wake-ups for the heartbeats alone, {with_work} with the work"
        );
    }
}
