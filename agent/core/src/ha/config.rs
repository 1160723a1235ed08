//! Local timing knobs of the HA loop (the cluster-wide ones are in `DynamicConfig`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings `decide` needs beyond the replicated dynamic configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaConfig {
    /// A member's report older than this counts as unreachable.
    pub report_stale_after: Duration,
    /// How long the coordinator waits for reachable replicas to stop streaming.
    pub stop_streaming_timeout: Duration,
    /// Wait this long after a failed long action before trying again.
    pub retry_after_failure: Duration,
    /// Minimum time between two Raft leadership transfers.
    pub transfer_interval: Duration,
    /// Wait before the second start of a Postgres that exited again soon after its start;
    /// doubled on each further failure (`rules::restart`).
    pub restart_backoff_first: Duration,
    /// The longest wait between two starts of a failing Postgres.
    pub restart_backoff_max: Duration,
    /// A Postgres that ran this long before it exited starts again at once (the backoff resets).
    pub stable_run: Duration,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            report_stale_after: Duration::from_millis(2000),
            stop_streaming_timeout: Duration::from_millis(1000),
            retry_after_failure: Duration::from_secs(3),
            transfer_interval: Duration::from_secs(2),
            restart_backoff_first: Duration::from_millis(250),
            restart_backoff_max: Duration::from_secs(10),
            stable_run: Duration::from_secs(30),
        }
    }
}

/// How long before its deadline a primary fences itself: a tenth of the ttl, at least 100 ms,
/// so fencing is done before the coordinator may grant the next epoch.
pub fn fence_lead(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(100))
}

/// How often a primary renews: every third of the ttl.
pub fn renew_every(ttl: Duration) -> Duration {
    ttl / 3
}
