//! The archive's series in `/metrics` (`pgquorum_archive_*`), from its status snapshot.
//!
//! Pure: a status in, registrations out.

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

use super::status::ArchiveStatus;

/// Registers the archive's series.
pub fn register(r: &mut Registry, s: &ArchiveStatus) {
    r.register(
        "archive_active",
        "1 if this agent archives WAL now (it holds the primary lease)",
        ConstGauge::new(i64::from(s.active)),
    );
    r.register(
        "archive_archived_files",
        "WAL files this agent stored in the archive since it started",
        ConstCounter::new(s.archived_count),
    );
    r.register(
        "archive_fetched_files",
        "WAL files this agent restored from the archive for Postgres since it started",
        ConstCounter::new(s.fetched_count),
    );
    r.register(
        "archive_pending_files",
        "WAL files Postgres marked ready that are not archived yet",
        ConstGauge::new(i64::try_from(s.pending_files).unwrap_or(i64::MAX)),
    );
    r.register_with_unit(
        "archive_lag",
        "Age of the oldest WAL file waiting to be archived (0 when none)",
        Unit::Seconds,
        ConstGauge::new(s.lag_seconds),
    );
    if let Some(at) = s.last_archived_at {
        r.register_with_unit(
            "archive_last_archived_timestamp",
            "When the last WAL file was archived, Unix time",
            Unit::Seconds,
            ConstGauge::new(at),
        );
    }
    let failures: Family<Vec<(String, String)>, Gauge> = Family::default();
    for (kind, n) in &s.failures {
        failures
            .get_or_create(&vec![("kind".to_string(), kind.label().to_string())])
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    r.register("archive_failures", "Failed archive operations since start, by kind (a count)", failures);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::status::{FailureKind, Tracker};

    #[test]
    fn archive_series_carry_units_and_failure_kinds() {
        let t = Tracker::new("/a".into());
        t.failed(FailureKind::Unavailable, "down");
        t.update(|s| {
            s.active = true;
            s.pending_files = 3;
            s.lag_seconds = 2.5;
        });
        let mut r = Registry::with_prefix("pgquorum");
        register(&mut r, &t.snapshot());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).expect("encode");
        for want in [
            "pgquorum_archive_active 1",
            "pgquorum_archive_pending_files 3",
            "pgquorum_archive_lag_seconds 2.5",
            "pgquorum_archive_failures{kind=\"unavailable\"} 1",
            "pgquorum_archive_failures{kind=\"conflict\"} 0",
            "pgquorum_archive_archived_files_total 0",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
    }
}
