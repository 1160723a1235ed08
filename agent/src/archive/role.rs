//! Whether this member may archive now, and under which system identifier: only the holder
//! of an unexpired primary lease, whose Postgres runs as a primary, archives. The answer
//! follows the HA loop's published reports, so archiving never decides anything about HA.
//!
//! Must not renew, take or release a lease.

use std::sync::Mutex;
use std::time::Duration;

use pgquorum_core::SystemId;
use pgquorum_core::ha::observation::Report;
use tokio::time::Instant;

/// What the archive needs to know about the member's role.
pub trait Role: Send + Sync {
    /// The cluster's Postgres system identifier, once known.
    fn system(&self) -> Option<SystemId>;
    /// Whether this member holds an unexpired primary lease and runs a primary now.
    fn archives(&self) -> bool;
}

/// The role as the HA loop's reports tell it.
pub struct LeaseRole {
    cluster: crate::cluster::Cluster,
    /// Until when the last report's lease runs (on the monotonic clock), if it ran a primary.
    until: Mutex<Option<Instant>>,
}

impl LeaseRole {
    /// A role reading the cluster's replicated state; `observe` feeds it reports.
    pub fn new(cluster: crate::cluster::Cluster) -> LeaseRole {
        LeaseRole { cluster, until: Mutex::new(None) }
    }

    /// Takes in a report the HA loop just published.
    pub fn observe(&self, report: &Report) {
        let primary = report.postgres.running().is_some_and(|r| !r.in_recovery);
        let until = match (primary, report.lease) {
            (true, Some((_, left))) if left > Duration::ZERO => Some(Instant::now() + left),
            _ => None,
        };
        *self.until.lock().expect("lock is never poisoned") = until;
    }

    /// Follows `published` until `cancel`.
    pub async fn follow(
        &self,
        mut published: tokio::sync::watch::Receiver<Option<Report>>,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        loop {
            if let Some(r) = published.borrow_and_update().as_ref() {
                self.observe(r);
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = published.changed() => if changed.is_err() { return },
            }
        }
    }
}

impl Role for LeaseRole {
    fn system(&self) -> Option<SystemId> {
        self.cluster.applied().state.system_identifier
    }

    fn archives(&self) -> bool {
        self.until.lock().expect("lock is never poisoned").is_some_and(|u| Instant::now() < u)
    }
}
