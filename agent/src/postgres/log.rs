//! Reading why Postgres failed from its own output (the file the agent sends its stderr to):
//! the FATAL line of a start that failed (with the lines that name a bad setting), and the WAL
//! receiver's last error while a standby does not stream.
//!
//! Reads only what Postgres wrote since a given offset, at most `MAX_READ` bytes, and only when
//! the HA loop saw a failure: never per tick. Picking the lines is pure and tested here.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The most of Postgres's output read at once (the newest part wins).
const MAX_READ: u64 = 256 * 1024;

/// Severities Postgres prefixes its messages with (`LC_MESSAGES=C`).
const SEVERITIES: &[&str] = &["PANIC", "FATAL", "ERROR", "WARNING", "LOG", "DETAIL", "HINT", "STATEMENT"];

/// A position in Postgres's output file, read forward.
#[derive(Clone, Debug)]
pub struct LogTail {
    path: PathBuf,
    offset: u64,
}

impl LogTail {
    /// A reader of `path` starting at its current end (what was written before is not read).
    pub fn at_end(path: &Path) -> LogTail {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        LogTail { path: path.to_path_buf(), offset }
    }

    /// The text written since the last read (or since `at_end`), at most `MAX_READ` bytes.
    pub fn read_new(&mut self) -> std::io::Result<String> {
        let mut f = std::fs::File::open(&self.path)?;
        let len = f.metadata()?.len();
        if len < self.offset {
            // Truncated or replaced: start over.
            self.offset = 0;
        }
        let from = self.offset.max(len.saturating_sub(MAX_READ));
        f.seek(SeekFrom::Start(from))?;
        let mut buf = Vec::with_capacity(usize::try_from(len - from).unwrap_or(0));
        f.take(len - from).read_to_end(&mut buf)?;
        self.offset = len;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// A message line: its severity and text without the line prefix (time, PID).
fn message(line: &str) -> Option<(&'static str, &str)> {
    SEVERITIES.iter().find_map(|sev| {
        let tag = format!("{sev}:  ");
        let at = line.find(&tag)?;
        Some((*sev, line[at..].trim_end()))
    })
}

/// FATAL messages of one client connection (the agent's own status query among them), not of
/// the server: they never say why Postgres stopped.
const CONNECTION_FATALS: &[&str] = &[
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "the database system is in recovery mode",
    "connection to client lost",
    "terminating connection due to",
    "password authentication failed",
    "no pg_hba.conf entry",
    "sorry, too many clients already",
    // `role "x" does not exist`, `database "x" does not exist` (not `data directory ...`).
    ":  role \"",
    ":  database \"",
];

/// What the agent adds to a start failure whose cause Postgres's own hint does not name.
const SHARED_MEMORY_HINT: &str = "pgquorum: Postgres instances killed with kill -9 leave their \
     System V segment behind when their data directory is then deleted; `ipcs -m` lists them \
     (nattch 0), `ipcrm -m ID` removes one";

/// Why a start failed, from what Postgres wrote since it was started: its last FATAL or PANIC
/// line (not a client connection's) with the DETAIL and HINT that follow it, preceded by the
/// lines that name what is wrong when a configuration file is refused (Postgres logs each bad
/// setting at LOG level, then "configuration file ... contains errors").
pub fn start_failure(output: &str) -> Option<String> {
    let lines: Vec<(&str, &str)> = output.lines().filter_map(message).collect();
    let server_fatal = |(sev, m): &(&str, &str)| {
        matches!(*sev, "FATAL" | "PANIC") && !CONNECTION_FATALS.iter().any(|c| m.contains(c))
    };
    let fatal = lines.iter().rposition(server_fatal)?;
    let mut picked = vec![lines[fatal].1];
    if lines[fatal].1.contains("configuration file") {
        let causes = lines[..fatal]
            .iter()
            .rev()
            .take_while(|(sev, _)| matches!(*sev, "LOG" | "ERROR" | "DETAIL" | "HINT"))
            .filter(|(sev, _)| matches!(*sev, "LOG" | "ERROR"))
            .take(5)
            .map(|(_, m)| *m);
        let mut causes: Vec<&str> = causes.collect();
        causes.reverse();
        causes.extend(picked);
        picked = causes;
    }
    let explained = lines[fatal + 1..].iter().take_while(|(sev, _)| matches!(*sev, "DETAIL" | "HINT"));
    picked.extend(explained.take(2).map(|(_, m)| *m));
    if lines[fatal].1.contains("could not create shared memory segment") {
        picked.push(SHARED_MEMORY_HINT);
    }
    Some(picked.join("; "))
}

/// Words of the WAL receiver's (and the startup process's) errors about streaming.
const RECEIVER_WORDS: &[&str] =
    &["primary server", "primary and standby", "WAL stream", "walreceiver", "replication", "timeline"];

/// The last error the WAL receiver logged in `output`: FATAL or ERROR lines about the primary,
/// the stream or timelines (a client's errors on this standby are not about streaming).
pub fn receiver_error(output: &str) -> Option<String> {
    output
        .lines()
        .filter_map(message)
        .filter(|(sev, m)| matches!(*sev, "FATAL" | "ERROR") && RECEIVER_WORDS.iter().any(|w| m.contains(w)))
        .map(|(_, m)| m.to_string())
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD_SETTING: &str = "\
2026-12-06 00:10:00.001 UTC [4242] LOG:  invalid value for parameter \"shared_buffers\": \"banana\"
2026-12-06 00:10:00.001 UTC [4242] HINT:  Valid units for this parameter are \"B\", \"kB\", \"MB\", \"GB\", and \"TB\".
2026-12-06 00:10:00.001 UTC [4242] FATAL:  configuration file \"/d/postgresql.auto.conf\" contains errors
";

    #[test]
    fn a_refused_configuration_names_the_bad_setting_and_the_fatal_line() {
        assert_eq!(
            start_failure(BAD_SETTING).as_deref(),
            Some(
                "LOG:  invalid value for parameter \"shared_buffers\": \"banana\"; FATAL:  configuration file \
                 \"/d/postgresql.auto.conf\" contains errors"
            )
        );
    }

    #[test]
    fn a_full_disk_is_the_fatal_line_alone() {
        let out = "2026-12-06 00:10:00.001 UTC [1] LOG:  starting PostgreSQL 15.10\n\
                   2026-12-06 00:10:00.002 UTC [1] FATAL:  could not write lock file \"postmaster.pid\": No space left on device\n";
        assert_eq!(
            start_failure(out).as_deref(),
            Some("FATAL:  could not write lock file \"postmaster.pid\": No space left on device")
        );
        assert_eq!(start_failure("2026 [1] LOG:  database system is shut down\n"), None);
        let clients = "2026 [2] FATAL:  the database system is starting up\n2026 [3] FATAL:  connection to client lost\n";
        assert_eq!(start_failure(clients), None, "a client connection's FATAL is not why Postgres stopped");
    }

    #[test]
    fn the_fatal_line_keeps_postgres_own_detail_and_hint_and_used_up_shared_memory_says_why() {
        let out = "2026-12-07 19:47:33.001 UTC [9] LOG:  starting PostgreSQL 15.10\n\
                   2026-12-07 19:47:33.002 UTC [9] FATAL:  could not create shared memory segment: No space left on device\n\
                   2026-12-07 19:47:33.002 UTC [9] DETAIL:  Failed system call was shmget(key=9961501, size=56, 03600).\n\
                   2026-12-07 19:47:33.002 UTC [9] HINT:  This error does *not* mean that you have run out of disk space.\n\
                   2026-12-07 19:47:33.003 UTC [9] LOG:  database system is shut down\n";
        assert_eq!(
            start_failure(out).as_deref(),
            Some(
                format!(
                    "FATAL:  could not create shared memory segment: No space left on device; DETAIL:  Failed \
                     system call was shmget(key=9961501, size=56, 03600).; HINT:  This error does *not* mean \
                     that you have run out of disk space.; {SHARED_MEMORY_HINT}"
                )
                .as_str()
            )
        );
        let owner = "2026 [1] FATAL:  data directory \"/d\" has wrong ownership\n\
                     2026 [1] HINT:  The server must be started by the user that owns the data directory.\n";
        assert_eq!(
            start_failure(owner).as_deref(),
            Some(
                "FATAL:  data directory \"/d\" has wrong ownership; HINT:  The server must be started by the user \
                 that owns the data directory."
            )
        );
    }

    #[test]
    fn the_receiver_error_is_the_last_one_about_streaming() {
        let out = "\
2026-12-06 00:10:00.001 UTC [7] FATAL:  could not connect to the primary server: connection to server at \"127.0.0.1\", port 5433 failed: FATAL:  password authentication failed for user \"replicator\"
2026-12-06 00:10:00.050 UTC [8] ERROR:  cannot execute INSERT in a read-only transaction
2026-12-06 00:10:00.060 UTC [8] STATEMENT:  insert into t values (1)
";
        let got = receiver_error(out).expect("found");
        assert!(got.starts_with("FATAL:  could not connect to the primary server"), "{got}");
        assert!(got.ends_with("password authentication failed for user \"replicator\""), "{got}");
        assert_eq!(
            receiver_error("2026 [8] FATAL:  terminating connection due to administrator command\n"),
            None
        );
    }

    #[test]
    fn the_tail_reads_only_what_was_written_since() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("postgres.log");
        std::fs::write(&path, "old FATAL:  before\n").expect("write");
        let mut tail = LogTail::at_end(&path);
        assert_eq!(tail.read_new().expect("read"), "");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
        std::io::Write::write_all(&mut f, b"x FATAL:  now\n").expect("append");
        assert_eq!(tail.read_new().expect("read"), "x FATAL:  now\n");
        assert_eq!(tail.read_new().expect("read"), "");
        std::fs::write(&path, "y\n").expect("replace");
        assert_eq!(tail.read_new().expect("read"), "y\n", "a shorter file is read from its start");
    }
}
