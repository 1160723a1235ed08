//! Base backups as data: the manifest stored beside each backup, what `pg_basebackup --verbose`
//! says about its WAL range, and retention — which backups expire and which archived WAL no
//! retained backup needs. Pure: the agent lists the store and deletes what this returns.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Lsn;

/// Bytes of one WAL segment (Postgres's default, which pgquorum's initdb keeps).
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// What is known about one stored base backup (`backup.json`, written after the data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Identifier: the UTC start time, `20261206T000000Z`.
    pub id: String,
    /// The cluster name it was taken in.
    pub cluster: String,
    /// Postgres's system identifier.
    pub system_identifier: u64,
    /// Member it was taken from.
    pub member: String,
    /// Whether that member was the primary then.
    pub from_primary: bool,
    /// Timeline at the start.
    pub timeline: u32,
    /// First WAL position recovery needs.
    pub start_lsn: String,
    /// Position recovery must reach to be consistent.
    pub end_lsn: String,
    /// Start, Unix milliseconds.
    pub start_ms: u64,
    /// End, Unix milliseconds.
    pub end_ms: u64,
    /// Size of the tar stream (uncompressed).
    pub size: u64,
    /// Size stored (compressed).
    pub stored_size: u64,
    /// Compression of the stored tar.
    pub compression: String,
    /// SHA-256 of the uncompressed tar, lower-case hex.
    pub sha256: String,
    /// The object holding the tar, relative to the cluster's folder.
    pub data_key: String,
}

impl Manifest {
    /// The start position, parsed.
    pub fn start(&self) -> Option<Lsn> {
        self.start_lsn.parse().ok()
    }

    /// The end position, parsed.
    pub fn end(&self) -> Option<Lsn> {
        self.end_lsn.parse().ok()
    }
}

/// A backup identifier for a start time (Unix milliseconds): `YYYYMMDDTHHMMSSZ`, UTC.
pub fn backup_id(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The WAL range `pg_basebackup --verbose` reports on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalRange {
    /// `write-ahead log start point: X/Y on timeline N`.
    pub start: Lsn,
    /// The timeline of the start point.
    pub timeline: u32,
    /// `write-ahead log end point: X/Y`.
    pub end: Lsn,
}

/// Reads the start and end points out of `pg_basebackup --verbose` output.
pub fn parse_wal_range(stderr: &str) -> Result<WalRange, String> {
    let after = |marker: &str| {
        stderr.lines().find_map(|l| l.split_once(marker).map(|(_, rest)| rest.trim().to_string()))
    };
    let start = after("write-ahead log start point:")
        .ok_or("pg_basebackup did not report its write-ahead log start point")?;
    let (lsn, tli) =
        start.split_once(" on timeline ").ok_or_else(|| format!("unexpected start point line {start:?}"))?;
    let end = after("write-ahead log end point:")
        .ok_or("pg_basebackup did not report its write-ahead log end point")?;
    Ok(WalRange {
        start: lsn.parse()?,
        timeline: tli.trim().parse().map_err(|_| format!("unexpected timeline {tli:?}"))?,
        end: end.parse()?,
    })
}

/// How long backups are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Keep everything.
    Forever,
    /// Keep the newest `n` backups.
    Count(usize),
    /// Keep what a restore to any moment of the last `window` needs.
    Window(Duration),
}

impl Retention {
    /// Parses `""`/`forever`, a count (`7`) or a window (`90d`, `12h`).
    pub fn parse(v: &str) -> Result<Retention, String> {
        let v = v.trim();
        if v.is_empty() || v == "forever" {
            return Ok(Retention::Forever);
        }
        if let Ok(n) = v.parse::<usize>() {
            if n == 0 {
                return Err("a retention count must be at least 1 (or `forever`)".into());
            }
            return Ok(Retention::Count(n));
        }
        crate::duration::parse(v).map(Retention::Window).map_err(|_| {
            format!("{v:?} is neither a count of backups (7) nor a recovery window (90d, 12h), nor `forever`")
        })
    }
}

/// Which of `backups` a policy lets go at `now_ms`. The newest backup is never expired; with a
/// window, the newest backup that ended before the window starts is kept too (a restore to the
/// window's first moment starts from it).
pub fn expired(backups: &[Manifest], policy: Retention, now_ms: u64) -> Vec<String> {
    let mut by_end: Vec<&Manifest> = backups.iter().collect();
    by_end.sort_by_key(|m| (m.end_ms, m.id.clone()));
    by_end.reverse(); // newest first
    let keep = match policy {
        Retention::Forever => by_end.len(),
        Retention::Count(n) => n.max(1),
        Retention::Window(w) => {
            let edge = now_ms.saturating_sub(w.as_millis() as u64);
            let inside = by_end.iter().take_while(|m| m.end_ms >= edge).count();
            (inside + 1).max(1)
        }
    };
    by_end.iter().skip(keep).map(|m| m.id.clone()).collect()
}

/// The position of a segment file name (`TTTTTTTTXXXXXXXXYYYYYYYY`) ignoring its timeline, or
/// `None` for other names.
pub fn segment_position(name: &str) -> Option<u64> {
    let base = name.get(..24)?;
    if !base.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let log = u64::from_str_radix(&base[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&base[16..24], 16).ok()?;
    Some(log * (0x1_0000_0000 / SEGMENT_BYTES) + seg)
}

/// Whether archived WAL file `name` is needed by none of the backups that start at or after
/// `oldest_start`: segments (and `.partial`, `.backup` files) wholly before it. Timeline history
/// files are always kept (they are tiny and every restore reads them).
pub fn wal_unneeded(name: &str, oldest_start: Lsn) -> bool {
    if name.ends_with(".history") {
        return false;
    }
    segment_position(name).is_some_and(|p| p < oldest_start.0 / SEGMENT_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, end_ms: u64) -> Manifest {
        Manifest {
            id: id.into(),
            cluster: "c".into(),
            system_identifier: 1,
            member: "m1".into(),
            from_primary: false,
            timeline: 1,
            start_lsn: "0/2000028".into(),
            end_lsn: "0/2000100".into(),
            start_ms: end_ms - 1,
            end_ms,
            size: 1,
            stored_size: 1,
            compression: "zstd".into(),
            sha256: String::new(),
            data_key: String::new(),
        }
    }

    #[test]
    fn ids_are_utc_start_times() {
        assert_eq!(backup_id(0), "19700101T000000Z");
        assert_eq!(backup_id(1_796_515_200_000 + 3_723_000), "20261206T010203Z");
        assert_eq!(backup_id(951_782_400_000), "20000229T000000Z");
    }

    #[test]
    fn wal_range_is_read_from_verbose_output() {
        let out = "pg_basebackup: initiating base backup, waiting for checkpoint to complete\n\
                   pg_basebackup: checkpoint completed\n\
                   pg_basebackup: write-ahead log start point: 0/5000028 on timeline 3\n\
                   pg_basebackup: write-ahead log end point: 0/5000100\n\
                   pg_basebackup: base backup completed\n";
        let r = parse_wal_range(out).expect("valid");
        assert_eq!((r.start, r.timeline, r.end), (Lsn(0x500_0028), 3, Lsn(0x500_0100)));
        assert!(parse_wal_range("pg_basebackup: error: connection failed").is_err());
    }

    #[test]
    fn retention_parses_counts_windows_and_forever_and_says_what_is_wrong() {
        assert_eq!(Retention::parse("").expect("valid"), Retention::Forever);
        assert_eq!(Retention::parse("7").expect("valid"), Retention::Count(7));
        assert_eq!(
            Retention::parse("90d").expect("valid"),
            Retention::Window(Duration::from_secs(90 * 86_400))
        );
        assert!(Retention::parse("0").expect_err("refused").contains("at least 1"));
        assert!(Retention::parse("ninety").expect_err("refused").contains("recovery window"));
    }

    #[test]
    fn a_count_keeps_the_newest_and_never_the_last_one() {
        let b = [m("a", 10), m("b", 20), m("c", 30)];
        assert_eq!(expired(&b, Retention::Count(2), 100), ["a"]);
        assert!(expired(&b, Retention::Count(5), 100).is_empty());
        assert!(expired(&b, Retention::Forever, 100).is_empty());
    }

    #[test]
    fn a_window_keeps_everything_inside_it_and_the_backup_just_before_it() {
        let b = [m("a", 10_000), m("b", 20_000), m("c", 30_000), m("d", 40_000)];
        // Window starts at 25_000: c and d inside, b needed to restore to 25_000, a expires.
        assert_eq!(expired(&b, Retention::Window(Duration::from_secs(15)), 40_000), ["a"]);
        // Everything older than the window: only the newest stays.
        assert_eq!(expired(&b, Retention::Window(Duration::from_secs(1)), 100_000), ["c", "b", "a"]);
    }

    #[test]
    fn wal_before_the_oldest_kept_start_goes_and_history_stays() {
        let start = Lsn(0x500_0028); // segment 5
        assert!(wal_unneeded("000000010000000000000004", start));
        assert!(wal_unneeded("000000020000000000000004.partial", start));
        assert!(!wal_unneeded("000000010000000000000005", start));
        assert!(!wal_unneeded("000000010000000100000000", start));
        assert!(!wal_unneeded("00000002.history", start));
        assert!(wal_unneeded("000000010000000000000003.00000028.backup", start));
    }
}
