//! pgquorum: the leader's heartbeats on the host runtime's timer slots (README-pgquorum.md).
//!
//! tokio keeps a timer more than 64 ms away on a coarser level of its wheel and wakes the
//! thread once to move it down and once more at the deadline; a deadline on a slot boundary
//! costs one wake-up. The embedding application knows where its runtime's slots lie and
//! installs [`set_heartbeat_alignment`]; the leader then sends each heartbeat at the first
//! slot boundary at or after it is due. Each heartbeat is due one interval after the previous
//! one was due (not after it went out), so they stay one interval apart on average, each at
//! most one slot late. Without an alignment installed nothing changes.

use std::sync::OnceLock;
use std::time::Duration;

use crate::Instant;

/// Given how far away a heartbeat is due, how long to wait instead (at least as long).
pub type Alignment = fn(Duration) -> Duration;

static ALIGNMENT: OnceLock<Alignment> = OnceLock::new();

/// Installs `alignment` for every Raft node of this process; only the first call counts.
pub fn set_heartbeat_alignment(alignment: Alignment) {
    let _ = ALIGNMENT.set(alignment);
}

/// When the next heartbeat is due: one interval after the last one was due, or one interval
/// from `now` if that has passed already (the leader was held up).
pub(crate) fn next_due<I: Instant>(last_due: I, now: I, interval: Duration) -> I {
    let due = last_due + interval;
    if due > now { due } else { now + interval }
}

/// When to send a heartbeat that is due at `due`.
pub(crate) fn send_at<I: Instant>(now: I, due: I) -> I {
    aligned(ALIGNMENT.get().copied(), now, due)
}

fn aligned<I: Instant>(alignment: Option<Alignment>, now: I, due: I) -> I {
    match alignment {
        Some(f) if due > now => {
            let wait = due - now;
            now + f(wait).max(wait)
        }
        _ => due,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokioInstant;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Slots of 64 ms counted from the current instant, as a test stand-in for the runtime's.
    fn slots(wait: Duration) -> Duration {
        ms((wait.as_millis() as u64).div_ceil(64) * 64)
    }

    #[test]
    fn heartbeats_are_due_one_interval_after_the_last_was_due() {
        let t0 = TokioInstant::now();
        assert_eq!(next_due(t0, t0 + ms(40), ms(150)), t0 + ms(150), "sent 40 ms late: still due at 150");
        assert_eq!(next_due(t0, t0 + ms(150), ms(150)), t0 + ms(300), "sent one interval late: one from now");
        assert_eq!(next_due(t0, t0 + ms(400), ms(150)), t0 + ms(550), "held up: one interval from now");
    }

    #[test]
    fn a_heartbeat_goes_out_at_the_next_slot_and_never_before_it_is_due() {
        let now = TokioInstant::now();
        assert_eq!(aligned(Some(slots), now, now + ms(150)), now + ms(192));
        assert_eq!(aligned(Some(slots), now, now + ms(128)), now + ms(128), "on a boundary already");
        assert_eq!(aligned(Some(|_| Duration::ZERO), now, now + ms(150)), now + ms(150), "never early");
        assert_eq!(aligned(None, now, now + ms(150)), now + ms(150), "no alignment installed");
        assert_eq!(aligned(Some(slots), now, now - ms(5)), now - ms(5), "overdue: unchanged");
    }

    #[test]
    fn aligned_heartbeats_keep_their_interval_on_average() {
        // Slots counted from t0, so the grid stays put while time moves on.
        let (t0, interval) = (TokioInstant::now(), ms(150));
        let (mut due, mut sent) = (t0, Vec::new());
        for _ in 0..20 {
            let at = aligned(Some(slots), t0, due);
            sent.push(at - t0);
            due = next_due(due, at, interval);
        }
        let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g == ms(128) || *g == ms(192)), "{gaps:?}");
        // 19 intervals of 150 ms are 2850 ms; the 20th heartbeat goes out at the slot after.
        assert_eq!(sent[19], ms(2880), "{sent:?}");
    }
}
