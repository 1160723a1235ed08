//! The durable Raft log: vote, entries, truncations, purges and the committed marker, as CRC
//! framed records in one append-only file (`raft/log`), fsync'd before anything is acknowledged.
//!
//! Owns replay on start-up, including what to do with damage: a torn tail (the last write never
//! finished) is cut when that loses nothing known to be committed; anything else refuses to start
//! with a message saying how to recover. Must not know what commands mean.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use openraft::OptionalSend;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::record::{self, Damage};
use super::types::{Entry, LogId, TypeConfig, Vote};

/// One record of the log file.
#[derive(Serialize, Deserialize)]
enum LogRecord {
    Vote(Vote),
    Entry(Entry),
    TruncateAfter(Option<LogId>),
    Purge(LogId),
    Committed(Option<LogId>),
}

#[derive(Default)]
struct Mem {
    vote: Option<Vote>,
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    committed: Option<LogId>,
    /// Records in the file; compaction rewrites when this outgrows the live set.
    file_records: usize,
}

impl Mem {
    fn replay(&mut self, rec: LogRecord) {
        self.file_records += 1;
        match rec {
            LogRecord::Vote(v) => self.vote = Some(v),
            LogRecord::Entry(e) => {
                self.entries.insert(e.log_id.index, e);
            }
            LogRecord::TruncateAfter(id) => {
                let keep_to = id.map(|l| l.index + 1).unwrap_or(0);
                self.entries.split_off(&keep_to);
            }
            LogRecord::Purge(id) => {
                self.entries = self.entries.split_off(&(id.index + 1));
                self.last_purged = Some(id);
            }
            LogRecord::Committed(c) => self.committed = c,
        }
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries.values().next_back().map(|e| e.log_id).or(self.last_purged)
    }

    /// The records that rebuild this state from nothing.
    fn snapshot_records(&self) -> Vec<LogRecord> {
        let mut out = Vec::new();
        if let Some(v) = self.vote {
            out.push(LogRecord::Vote(v));
        }
        if let Some(p) = self.last_purged {
            out.push(LogRecord::Purge(p));
        }
        out.extend(self.entries.values().cloned().map(LogRecord::Entry));
        if self.committed.is_some() {
            out.push(LogRecord::Committed(self.committed));
        }
        out
    }
}

/// Why the log could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    /// Reading or writing the file failed.
    #[error("cannot use Raft log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Damage that cannot be repaired without losing committed entries.
    #[error(
        "Raft log {path} is damaged at byte {offset} ({what}); {why}. This member's Raft data cannot be \
         trusted. To recover: stop this agent, move {dir} aside (keep it for analysis), and start the agent \
         again: it joins the cluster as a new node and copies the cluster state from the leader"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Its directory (the thing to move aside).
        dir: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        what: String,
        /// Why it cannot simply be cut.
        why: String,
    },
}

/// The log store. Clones share state; openraft uses a clone as its log reader.
#[derive(Clone)]
pub struct LogStore {
    mem: Arc<Mutex<Mem>>,
    file: Arc<Mutex<File>>,
    path: Arc<PathBuf>,
    /// Set after a failed write: the store then refuses every write (fail closed; retrying an
    /// fsync after an error can silently lose data).
    failed: Arc<AtomicBool>,
}

impl LogStore {
    /// Opens (or creates) `dir/log` and replays it. Returns the store and, when a torn tail was
    /// cut, a description of what was cut.
    pub fn open(dir: &Path) -> Result<(LogStore, Option<String>), OpenError> {
        let path = dir.join("log");
        let io_err = |source| OpenError::Io { path: path.clone(), source };
        let buf = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(e)),
        };
        let scan = record::scan(&buf);
        let mut mem = Mem::default();
        for (i, payload) in scan.records.iter().enumerate() {
            let rec: LogRecord = serde_json::from_slice(payload).map_err(|e| OpenError::Corrupt {
                path: path.clone(),
                dir: dir.to_path_buf(),
                offset: 0,
                what: format!("record {i} has a valid checksum but cannot be decoded: {e}"),
                why: "it was written by an incompatible version or corrupted before checksumming".into(),
            })?;
            mem.replay(rec);
        }
        let mut repaired = None;
        if let Some(damage) = scan.damage {
            check_cut_is_safe(&damage, &mem).map_err(|why| OpenError::Corrupt {
                path: path.clone(),
                dir: dir.to_path_buf(),
                offset: damage.offset,
                what: damage.what.clone(),
                why,
            })?;
            let f = OpenOptions::new().write(true).open(&path).map_err(io_err)?;
            f.set_len(scan.valid_len).map_err(io_err)?;
            f.sync_all().map_err(io_err)?;
            repaired = Some(format!(
                "cut a torn tail of {} bytes at byte {} of {} ({}); nothing committed was lost",
                buf.len() as u64 - scan.valid_len,
                damage.offset,
                path.display(),
                damage.what
            ));
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err)?;
        record::sync_dir(dir).map_err(io_err)?;
        let store = LogStore {
            mem: Arc::new(Mutex::new(mem)),
            file: Arc::new(Mutex::new(file)),
            path: Arc::new(path),
            failed: Arc::new(AtomicBool::new(false)),
        };
        Ok((store, repaired))
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().expect("log memory lock is never poisoned: no panics while held")
    }

    /// Appends records durably, then applies them in memory.
    async fn write(&self, records: Vec<LogRecord>) -> io::Result<()> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(io::Error::other("the Raft log refused a write after an earlier write error"));
        }
        let payloads = records.iter().map(serde_json::to_vec).collect::<Result<Vec<_>, _>>()?;
        let file = self.file.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut f = file.lock().map_err(|_| io::Error::other("log file lock poisoned"))?;
            record::append_durable(&mut f, &payloads)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        if let Err(e) = res {
            self.failed.store(true, Ordering::SeqCst);
            return Err(e);
        }
        let mut mem = self.mem();
        for r in records {
            mem.replay(r);
        }
        Ok(())
    }

    /// Rewrites the file from memory when dead records dominate (after purges).
    async fn maybe_compact(&self) -> io::Result<()> {
        let (bytes, live) = {
            let mem = self.mem();
            let live = mem.entries.len() + 3;
            if mem.file_records < 2 * live + 64 {
                return Ok(());
            }
            let mut bytes = Vec::new();
            for r in mem.snapshot_records() {
                bytes.extend_from_slice(&record::frame(&serde_json::to_vec(&r)?));
            }
            (bytes, live)
        };
        let file = self.file.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut f = file.lock().map_err(|_| io::Error::other("log file lock poisoned"))?;
            record::replace_durable(&path, &bytes)?;
            *f = OpenOptions::new().append(true).open(&*path)?;
            Ok::<_, io::Error>(())
        })
        .await
        .map_err(io::Error::other)??;
        self.mem().file_records = live;
        Ok(())
    }
}

/// A torn tail may be cut only if it cannot hold an entry known to be committed.
fn check_cut_is_safe(damage: &Damage, mem: &Mem) -> Result<(), String> {
    if damage.intact_after > 0 {
        return Err(format!(
            "{} intact records follow the damaged one, so this is corruption, not an unfinished write",
            damage.intact_after
        ));
    }
    let last = mem.last_log_id().map(|l| l.index);
    match mem.committed {
        Some(c) if last.is_none_or(|l| l < c.index) => Err(format!(
            "the damaged tail may hold committed entries (committed up to index {}, only {} readable)",
            c.index,
            last.map_or("none".to_string(), |l| format!("up to {l}"))
        )),
        _ => Ok(()),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&s) => Bound::Included(s),
            Bound::Excluded(&s) => Bound::Excluded(s),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Bound::Included(e),
            Bound::Excluded(&e) => Bound::Excluded(e),
            Bound::Unbounded => Bound::Unbounded,
        };
        Ok(self.mem().entries.range((start, end)).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.mem().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let mem = self.mem();
        Ok(LogState { last_purged_log_id: mem.last_purged, last_log_id: mem.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.write(vec![LogRecord::Vote(*vote)]).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        if self.mem().committed == committed {
            return Ok(());
        }
        self.write(vec![LogRecord::Committed(committed)]).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.mem().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let records: Vec<LogRecord> = entries.into_iter().map(LogRecord::Entry).collect();
        let res = self.write(records).await;
        match res {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.write(vec![LogRecord::TruncateAfter(last_log_id)]).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.write(vec![LogRecord::Purge(log_id)]).await?;
        self.maybe_compact().await
    }
}
