//! How often the agent reads its Postgres's status over SQL. Every tick while anything is
//! changing; at a slower interval once the member is settled, so an idle member does not query
//! Postgres ten times a second. A postmaster that exits is the agent's child and wakes the loop
//! without SQL, so slowing the status read never delays fencing or a restart in place.
//!
//! A quiet member (`quiet`: settled, and both its own and the coordinator's decision
//! "steady") does not tick at the loop interval at all: it sleeps until `next_deadline`, the
//! first moment a decision could change on time alone (a renewal due, the primary's lease
//! running out on the coordinator), or until the status interval, and is woken at once by
//! anything else that could change a decision (a new Raft state, leadership, a peer's changed
//! or stale report, a finished renewal or task, Postgres exiting). A renewal due waits up to
//! [`RENEWAL_BEAT_WAIT`] for the next Raft message, to go out in its wake-up
//! (`next_exact_deadline`).
//!
//! Owns the rules only (pure); the HA loop keeps the clock, does the reading and the waking.

use std::time::Duration;

use crate::ha::Observation;
use crate::ha::config::HaConfig;
use crate::ha::plan::{Action, Plan, Reason};
use crate::ha::rules::lease::{free_at, renew_due_at};

/// Whether a tick's plan and observation show a settled member: it only renewed (or held) its
/// lease, the coordinator part had nothing to do, no long task runs, no switchover or manual
/// failover is pending and no stop-streaming request stands (one for an epoch older than the
/// current grant's is history: it was for the primary before this one). Anything else may be
/// waiting for Postgres to change, so the next tick reads the status again.
pub fn settled(obs: &Observation, plan: &Plan) -> bool {
    plan.member.actions.iter().all(|a| matches!(a, Action::Renew { .. }))
        && plan.coordinator.as_ref().is_none_or(|c| c.actions.is_empty())
        && obs.local.task.is_none()
        && obs.local.stop_streaming_for.is_none_or(|e| e < obs.cluster.epoch)
        && obs.cluster.switchover.is_none()
        && obs.cluster.failover.is_none()
}

/// Whether the member may sleep until [`next_deadline`] instead of ticking at the loop
/// interval: settled, its own decision and the coordinator's (when it leads) are `Steady`.
/// Everything else (waiting for a task, a backoff, a switchover, no primary) ticks as before.
pub fn quiet(obs: &Observation, plan: &Plan) -> bool {
    let steady = |r: &Reason| matches!(r, Reason::Steady | Reason::Witness);
    settled(obs, plan)
        && steady(&plan.member.reason)
        && plan.coordinator.as_ref().is_none_or(|c| steady(&c.reason))
}

/// How long past its due time a quiet primary's renewal waits for the next Raft message its
/// agent handles, so that it goes out in that wake-up instead of one of its own. A renewal's
/// first attempt is confirmed with the Raft leader's next periodic heartbeat, so a renewal
/// sent as a heartbeat arrives comes back with the one after; at the defaults (ttl 1.5 s,
/// renewals ttl/3 apart, heartbeats exactly 256 ms apart) the heartbeat two after the one that
/// carried the last renewal arrives 12 ms past the next renewal's due time, so while heartbeats
/// come regularly every renewal rides on one. A quiet member's renewal waits at least this
/// long; its own timer fires at the agent's next timer slot boundary at or after it (at most
/// 64 ms more, so that the runtime wakes once for it and never before the heartbeat it waits
/// for; a busy loop's may be a tick late, as before); its attempts end on the renewal grid
/// whatever the delay (`Lease::renewal_gives_up_at`); safety does not depend on when it is
/// sent (the lease counts from the send time; the fence point is exact).
pub const RENEWAL_BEAT_WAIT: Duration = Duration::from_millis(32);

/// The first moment after `obs.now` at which a decision could change with nothing else
/// happening: this primary's next renewal, and on the coordinator the moment the primary's
/// lease may have run out, the end of a new primary's young window and the next leadership
/// transfer attempt. `None` when time alone changes nothing. (The fence point is the
/// loop's own wake-up; a peer's report going stale is the peer follower's.)
pub fn next_deadline(obs: &Observation, cfg: &HaConfig) -> Option<Duration> {
    let renewal = renew_due_at(obs).filter(|t| *t > obs.now);
    renewal.into_iter().chain(coordinator_deadline(obs, cfg)).min()
}

/// The first moment after `obs.now` at which a quiet member's loop must tick on its own timer
/// rather than with the next Raft message ([`quiet_until`] waits for one): the coordinator's
/// deadlines, and [`RENEWAL_BEAT_WAIT`] after this primary's next renewal is due.
pub fn next_exact_deadline(obs: &Observation, cfg: &HaConfig) -> Option<Duration> {
    renewal_beat_deadline(obs).into_iter().chain(coordinator_deadline(obs, cfg)).min()
}

/// [`RENEWAL_BEAT_WAIT`] after this primary's next renewal is due: where a quiet loop stops
/// waiting for a Raft message to carry it (the agent rounds it up to its timer slot).
pub fn renewal_beat_deadline(obs: &Observation) -> Option<Duration> {
    renew_due_at(obs).filter(|t| *t > obs.now).map(|t| t + RENEWAL_BEAT_WAIT)
}

/// On the coordinator, the first moment after `obs.now` at which a decision about the current
/// primary could change on time alone: its lease may have run out, a new primary's young
/// window ends, the next leadership transfer attempt. Met exactly.
pub fn coordinator_deadline(obs: &Observation, cfg: &HaConfig) -> Option<Duration> {
    let mut at = Vec::new();
    if let (Some(c), Some(p)) = (&obs.coordinator, &obs.cluster.primary)
        && !p.expired
        && c.expired_epoch != Some(p.epoch)
    {
        at.push(free_at(obs, c));
        // The end of a new primary's young window (`sync::target`), and the next leadership
        // transfer attempt off the primary's member.
        at.push(c.epoch_since + obs.cluster.config.ttl * 2);
        at.extend(c.last_transfer.map(|t| t + cfg.transfer_interval));
    }
    at.into_iter().filter(|t| *t > obs.now).min()
}

/// When a quiet member's loop next ticks with nothing else happening (loop time), or `None`
/// when it must tick at the loop interval (not quiet, or a status read is already due):
/// the next deadline, the next status read (`next_status`, at least a loop interval away), and
/// at the latest half the staleness bound from now, so the member's own published report
/// (which status, health checks and the core read) never goes stale.
pub fn quiet_until(
    obs: &Observation,
    plan: &Plan,
    cfg: &HaConfig,
    next_status: Option<Duration>,
    loop_interval: Duration,
) -> Option<Duration> {
    let next_status = next_status.filter(|_| quiet(obs, plan))?;
    let latest = next_status.max(obs.now + loop_interval).min(obs.now + cfg.report_stale_after / 2);
    Some(next_deadline(obs, cfg).map_or(latest, |d| d.min(latest)))
}

/// How long after an entry of the data directory appeared or went (a `promote` file, a removed
/// `standby.signal`: something outside the agent acting on its Postgres) the status is read
/// every tick: a promotion ends a moment after its signal files change, and the member is
/// then writable without a lease until it fences.
pub const DATA_CHANGE_READS: Duration = Duration::from_secs(1);

/// How often a quiet member reads its status while it cannot watch its data directory
/// (inotify refused: too many instances for the user, say): at most this far apart, as before
/// the watch, so a promotion from outside the agent is still noticed within about a second.
pub const UNWATCHED_STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// How often a quiet member reads its Postgres's status: the configured interval, and no more
/// than [`UNWATCHED_STATUS_INTERVAL`] while the data directory is not `watched`.
pub fn status_interval(configured: Duration, watched: bool) -> Duration {
    if watched { configured } else { configured.min(UNWATCHED_STATUS_INTERVAL) }
}

/// How long after a failed attempt to watch the data directory the agent tries again.
pub const WATCH_RETRY: Duration = Duration::from_secs(10);

/// Whether the data directory changed recently enough (`changed_at`, see
/// [`DATA_CHANGE_READS`]) that this tick reads the status whatever the interval says.
pub fn data_recently_changed(now: Duration, changed_at: Option<Duration>) -> bool {
    changed_at.is_some_and(|at| now < at + DATA_CHANGE_READS)
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
    fn a_second_of_readings_follows_a_change_in_the_data_directory() {
        let ms = Duration::from_millis;
        assert!(!data_recently_changed(ms(5000), None));
        assert!(data_recently_changed(ms(5000), Some(ms(5000))));
        assert!(data_recently_changed(ms(5999), Some(ms(5000))));
        assert!(!data_recently_changed(ms(6000), Some(ms(5000))));
    }

    #[test]
    fn without_a_watch_on_the_data_directory_the_status_is_read_every_second_at_least() {
        let s = Duration::from_secs;
        assert_eq!(status_interval(s(2), true), s(2));
        assert_eq!(status_interval(s(2), false), s(1));
        assert_eq!(status_interval(Duration::from_millis(500), false), Duration::from_millis(500));
    }

    #[test]
    fn a_change_forces_a_reading_at_once() {
        let ms = Duration::from_millis;
        assert!(status_due(ms(100), Some(ms(50)), true, S));
    }
}
