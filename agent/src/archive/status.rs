//! What the archive reports about itself: last archived file, backlog, failures. Shown by
//! `pgquorumctl status` and `/metrics`. A failure is logged once per kind until archiving
//! succeeds again, not once per retry.
//!
//! Must not act on what it records.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Kinds of failure, each logged once until the next success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The store did not answer or answered with a retryable error.
    Unavailable,
    /// The store refused (credentials, missing bucket, permissions).
    Refused,
    /// Different content is already stored under the name; never overwritten.
    Conflict,
    /// The prefix holds another system identifier's WAL.
    ForeignSystem,
    /// The local file could not be read.
    LocalFile,
    /// An object failed its checksum on fetch.
    Corrupt,
}

impl FailureKind {
    /// The label used in metrics and status.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Unavailable => "unavailable",
            FailureKind::Refused => "refused",
            FailureKind::Conflict => "conflict",
            FailureKind::ForeignSystem => "foreign_system",
            FailureKind::LocalFile => "local_file",
            FailureKind::Corrupt => "corrupt",
        }
    }

    /// Every kind, for metrics.
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Unavailable,
        FailureKind::Refused,
        FailureKind::Conflict,
        FailureKind::ForeignSystem,
        FailureKind::LocalFile,
        FailureKind::Corrupt,
    ];
}

/// A snapshot of the archive's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArchiveStatus {
    /// Where the archive is (`/mnt/archive`, `s3://bucket/prefix/`).
    pub store: String,
    /// This member archives now (it holds the primary lease).
    pub active: bool,
    /// The last WAL file stored (empty when none since start).
    pub last_archived: String,
    /// When, in Unix seconds.
    pub last_archived_at: Option<f64>,
    /// Files stored since the agent started.
    pub archived_count: u64,
    /// Files restored for Postgres since the agent started.
    pub fetched_count: u64,
    /// WAL files Postgres marked ready that are not stored yet.
    pub pending_files: u64,
    /// Age in seconds of the oldest of them (0 when none): the archive lag.
    pub lag_seconds: f64,
    /// Failures by kind since start, in `FailureKind::ALL` order.
    pub failures: Vec<(FailureKind, u64)>,
    /// The last failure: kind, message, Unix seconds.
    pub last_failure: Option<(FailureKind, String, f64)>,
}

/// Copies the archive's state into the report's view of Postgres's archiver.
pub fn summarize(s: &ArchiveStatus, into: &mut pgquorum_core::ha::observation::Archiver) {
    into.store = s.store.clone();
    into.pending_files = s.pending_files;
    into.lag_ms = (s.lag_seconds * 1000.0) as u64;
    into.last_error =
        s.last_failure.as_ref().map(|(k, m, _)| format!("{}: {m}", k.label())).unwrap_or_default();
}

/// The live status, updated by the archive's tasks.
#[derive(Default)]
pub struct Tracker {
    inner: Mutex<(ArchiveStatus, Option<FailureKind>)>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Tracker {
    /// A tracker for the store described by `store`.
    pub fn new(store: String) -> Tracker {
        let st = ArchiveStatus {
            store,
            failures: FailureKind::ALL.iter().map(|k| (*k, 0)).collect(),
            ..Default::default()
        };
        Tracker { inner: Mutex::new((st, None)) }
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> ArchiveStatus {
        self.inner.lock().expect("lock is never poisoned").0.clone()
    }

    /// Applies `f` to the status.
    pub fn update(&self, f: impl FnOnce(&mut ArchiveStatus)) {
        f(&mut self.inner.lock().expect("lock is never poisoned").0);
    }

    /// Records a stored file.
    pub fn archived(&self, name: &str) {
        let mut g = self.inner.lock().expect("lock is never poisoned");
        g.0.last_archived = name.to_string();
        g.0.last_archived_at = Some(unix_now());
        g.0.archived_count += 1;
        if let Some(kind) = g.1.take() {
            tracing::info!("archiving works again (after {} failures)", kind.label());
        }
    }

    /// Records a failure; logs it when it is the first of its kind since the last success.
    pub fn failed(&self, kind: FailureKind, msg: &str) {
        let mut g = self.inner.lock().expect("lock is never poisoned");
        if let Some((_, n)) = g.0.failures.iter_mut().find(|(k, _)| *k == kind) {
            *n += 1;
        }
        g.0.last_failure = Some((kind, msg.to_string(), unix_now()));
        if g.1 != Some(kind) {
            tracing::error!(kind = kind.label(), "archive: {msg}");
            g.1 = Some(kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_per_kind_and_a_success_resets_the_log_latch() {
        let t = Tracker::new("/x".into());
        t.failed(FailureKind::Unavailable, "down");
        t.failed(FailureKind::Unavailable, "down");
        t.failed(FailureKind::Conflict, "differs");
        let s = t.snapshot();
        assert_eq!(s.failures[0], (FailureKind::Unavailable, 2));
        assert_eq!(s.failures[2], (FailureKind::Conflict, 1));
        assert_eq!(s.last_failure.as_ref().map(|f| f.0), Some(FailureKind::Conflict));
        t.archived("000000010000000000000001");
        assert_eq!(t.inner.lock().expect("lock").1, None);
        assert_eq!(t.snapshot().archived_count, 1);
    }
}
