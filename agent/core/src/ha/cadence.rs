//! How often the agent reads its Postgres's status over SQL. Every tick while anything is
//! changing; at a slower interval once the member is settled, so an idle member does not query
//! Postgres ten times a second. A crashed postmaster is the agent's child and is noticed every
//! tick without SQL, so slowing the status read never delays fencing or a restart in place.
//!
//! Owns the rule only (pure); the HA loop keeps the clock and does the reading.

use std::time::Duration;

use crate::ha::Observation;
use crate::ha::plan::{Action, Plan};

/// Whether a tick's plan and observation show a settled member: it only renewed (or held) its
/// lease, the coordinator part had nothing to do, no long task runs, no switchover or manual
/// failover is pending and no stop-streaming request stands. Anything else may be waiting for
/// Postgres to change, so the next tick reads the status again.
pub fn settled(obs: &Observation, plan: &Plan) -> bool {
    plan.member.actions.iter().all(|a| matches!(a, Action::Renew { .. }))
        && plan.coordinator.as_ref().is_none_or(|c| c.actions.is_empty())
        && obs.local.task.is_none()
        && obs.local.stop_streaming_for.is_none()
        && obs.cluster.switchover.is_none()
        && obs.cluster.failover.is_none()
}

/// Whether to read the status this tick: when a change asked for it (`forced`), when there is
/// no reading, or when the last one is at least `interval` old.
pub fn status_due(now: Duration, last_read: Option<Duration>, forced: bool, interval: Duration) -> bool {
    forced || last_read.is_none_or(|at| now.saturating_sub(at) >= interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_settled_member_reads_status_once_per_interval() {
        let ms = Duration::from_millis;
        assert!(status_due(ms(0), None, false, S), "no reading yet");
        assert!(!status_due(ms(100), Some(ms(0)), false, S));
        assert!(!status_due(ms(999), Some(ms(0)), false, S));
        assert!(status_due(ms(1000), Some(ms(0)), false, S));
    }

    #[test]
    fn a_change_forces_a_reading_at_once() {
        let ms = Duration::from_millis;
        assert!(status_due(ms(100), Some(ms(50)), true, S));
    }
}
