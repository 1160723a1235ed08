//! Restart backoff of the local Postgres: how long to wait before starting it again after it
//! exited on its own, so a Postgres that cannot start (a full disk, a setting it refuses) is
//! not started again every tick forever, while a crash after a good run restarts at once.
//!
//! The agent counts consecutive exits with `failures_after_exit`; `hold` keeps a start back
//! until the delay for that count has passed. Pure: no clock, no I/O.

use std::time::Duration;

use crate::ha::config::HaConfig;
use crate::ha::observation::{Observation, Postgres};
use crate::ha::plan::{Action, Decision, Reason};

/// The count of consecutive failed runs after Postgres exited having run for `ran_for`: a run of
/// at least `stable_run` starts the count again, and so does an exit by a signal (`killed`:
/// something outside Postgres stopped it, such as the fence guard, the OOM killer or an
/// operator; Postgres itself fails with an exit code), which then restarts at once.
pub fn failures_after_exit(previous: u32, ran_for: Duration, killed: bool, cfg: &HaConfig) -> u32 {
    if killed || ran_for >= cfg.stable_run { 1 } else { previous.saturating_add(1) }
}

/// How long to wait after the `failures`-th consecutive exit before the next start: nothing
/// after the first (a crash after a good run restarts at once), then `restart_backoff_first`,
/// doubling with each further failure up to `restart_backoff_max`.
pub fn delay(failures: u32, cfg: &HaConfig) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let doublings = (failures - 2).min(30);
    cfg.restart_backoff_first.saturating_mul(1u32 << doublings).min(cfg.restart_backoff_max)
}

/// When Postgres may be started again, if it exited on its own.
pub fn next_start(obs: &Observation, cfg: &HaConfig) -> Option<Duration> {
    match obs.local.postgres {
        Postgres::Crashed { at, failures } => Some(at + delay(failures, cfg)),
        _ => None,
    }
}

/// `d`, unless it starts Postgres before the backoff has passed: then a wait.
pub fn hold(obs: &Observation, cfg: &HaConfig, d: Decision) -> Decision {
    let starts = d.actions.iter().any(|a| matches!(a, Action::StartPrimary | Action::StartReplica { .. }));
    match next_start(obs, cfg) {
        Some(due) if starts && obs.now < due => Decision::wait(Reason::RestartBackoff),
        _ => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn first_exit_restarts_at_once_then_the_wait_doubles_up_to_the_maximum() {
        let cfg = HaConfig::default();
        let waits: Vec<Duration> = (1..=9).map(|n| delay(n, &cfg)).collect();
        assert_eq!(
            waits,
            [0, 250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000].map(ms).to_vec(),
            "the schedule for the default configuration"
        );
        assert_eq!(delay(0, &cfg), Duration::ZERO);
        assert_eq!(delay(u32::MAX, &cfg), cfg.restart_backoff_max, "bounded even for huge counts");
    }

    #[test]
    fn a_stable_run_resets_the_count_and_a_short_one_adds_to_it() {
        let cfg = HaConfig::default();
        assert_eq!(failures_after_exit(0, ms(10), false, &cfg), 1);
        assert_eq!(failures_after_exit(4, ms(10), false, &cfg), 5);
        assert_eq!(failures_after_exit(4, cfg.stable_run, false, &cfg), 1);
        assert_eq!(failures_after_exit(u32::MAX, ms(1), false, &cfg), u32::MAX);
        assert_eq!(failures_after_exit(4, ms(10), true, &cfg), 1, "killed from outside: at once");
    }

    #[test]
    fn the_schedule_never_shrinks_and_never_exceeds_the_maximum() {
        let cfg =
            HaConfig { restart_backoff_first: ms(7), restart_backoff_max: ms(1000), ..HaConfig::default() };
        let mut last = Duration::ZERO;
        for n in 0..100 {
            let d = delay(n, &cfg);
            assert!(d >= last && d <= cfg.restart_backoff_max, "failure {n}: {d:?} after {last:?}");
            last = d;
        }
    }
}
