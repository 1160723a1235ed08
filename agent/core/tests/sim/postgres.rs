//! A model of one Postgres instance: WAL as a sequence of entries (commits and promotion
//! markers) tagged with their timeline, a timeline history, the process state, and what
//! `pg_controldata`, `pg_stat_replication` and friends would report about it.
//!
//! Owns WAL arithmetic (an entry's LSN is its position), prefix checks (a standby can stream
//! from a source only if its WAL is a prefix of the source's) and the observed `Postgres` and
//! `Data` values the agent puts into its observation. Deciding anything is not its job.

use std::time::Duration;

use pgquorum_core::ha::observation::{Data, DataDir, Postgres, ReplicaConnection, Running};
use pgquorum_core::state::SyncSet;
use pgquorum_core::{Lsn, MemberName, SystemId, Timeline};

/// One WAL record: a client commit (`id` below `MARKER`) or a promotion marker.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The timeline it was written on.
    pub tl: u32,
    /// Commit id, or `MARKER | n` for initdb and end-of-recovery records.
    pub id: u64,
}

/// Ids at or above this are not client commits.
pub const MARKER: u64 = 1 << 62;
/// Bytes per WAL entry.
pub const STEP: u64 = 0x80;
const BASE: u64 = 0x100_0000;

/// The LSN after `len` entries.
pub fn lsn_at(len: usize) -> Lsn {
    Lsn(BASE + len as u64 * STEP)
}

/// The process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proc {
    /// Not running.
    Stopped,
    /// Started; accepts connections at `ready_at`.
    Starting { ready_at: Duration, since: Duration, primary: bool },
    /// Running as primary (writable) or standby.
    Running { primary: bool },
    /// Died (killed, fenced or crashed) at `at`.
    Crashed { at: Duration },
}

/// One member's Postgres.
#[derive(Clone, Debug)]
pub struct Pg {
    /// Process state.
    pub proc: Proc,
    /// Whether a data directory exists.
    pub has_data: bool,
    /// The data's system identifier.
    pub sysid: u64,
    /// Last ran as a primary (control file "in production"/"shut down").
    pub was_primary: bool,
    /// Last shutdown was clean.
    pub clean: bool,
    /// The WAL, oldest first.
    pub wal: Vec<Entry>,
    /// Current timeline.
    pub timeline: u32,
    /// Timeline history: (timeline, LSN where it ended).
    pub history: Vec<(u32, Lsn)>,
    /// Standby: member it streams from (primary_conninfo).
    pub upstream: Option<usize>,
    /// Standby: the WAL receiver is connected.
    pub streaming: bool,
    /// Primary: synchronous_standby_names in effect.
    pub sync: SyncSet,
    /// Primary: where the current sync setting took effect.
    pub sync_applied_at: Option<(SyncSet, Lsn)>,
    /// Primary: replication slots.
    pub slots: Vec<String>,
    /// Bumped each time it becomes writable; acknowledgements of an older one never arrive.
    pub incarnation: u64,
}

impl Pg {
    /// No data, not running.
    pub fn empty() -> Pg {
        Pg {
            proc: Proc::Stopped,
            has_data: false,
            sysid: 0,
            was_primary: false,
            clean: true,
            wal: Vec::new(),
            timeline: 1,
            history: Vec::new(),
            upstream: None,
            streaming: false,
            sync: SyncSet::none(),
            sync_applied_at: None,
            slots: Vec::new(),
            incarnation: 0,
        }
    }

    /// End of WAL.
    pub fn lsn(&self) -> Lsn {
        lsn_at(self.wal.len())
    }

    /// Accepting writes.
    pub fn writable(&self) -> bool {
        self.proc == Proc::Running { primary: true }
    }

    /// Running as a standby.
    pub fn standby(&self) -> bool {
        self.proc == Proc::Running { primary: false }
    }

    /// Killed at once: no clean shutdown, receiver gone.
    pub fn kill(&mut self, now: Duration) {
        if matches!(self.proc, Proc::Running { .. } | Proc::Starting { .. }) {
            self.proc = Proc::Crashed { at: now };
            self.clean = false;
            self.streaming = false;
        }
    }

    /// Whether this WAL is a prefix of `other`'s. Entries are unique and only ever copied as
    /// prefixes, so comparing the last entry suffices.
    pub fn is_prefix_of(&self, other: &Pg) -> bool {
        match self.wal.last() {
            None => true,
            Some(e) => other.wal.get(self.wal.len() - 1) == Some(e),
        }
    }

    /// Copies `src`'s data directory (clone, or a rewind that ends at the source's position).
    pub fn copy_from(&mut self, src: &Pg) {
        self.has_data = true;
        self.sysid = src.sysid;
        self.wal = src.wal.clone();
        self.timeline = src.timeline;
        self.history = src.history.clone();
        self.was_primary = false;
        self.clean = true;
    }

    /// Starts a new timeline `tl` at the current end of WAL (promotion).
    pub fn promote(&mut self, tl: u32, marker: u64) {
        self.history.push((self.timeline, self.lsn()));
        self.timeline = tl;
        self.wal.push(Entry { tl, id: MARKER | marker });
        self.proc = Proc::Running { primary: true };
        self.was_primary = true;
        self.upstream = None;
        self.streaming = false;
    }

    /// What `pg_controldata` says.
    pub fn data(&self) -> Data {
        if !self.has_data {
            return Data::Missing;
        }
        Data::Present(DataDir {
            system_identifier: SystemId(self.sysid),
            timeline: Timeline(self.timeline),
            was_primary: self.was_primary,
            clean_shutdown: self.clean,
            checkpoint_lsn: self.lsn(),
            min_recovery: (!self.was_primary).then(|| (Timeline(self.timeline), self.lsn())),
        })
    }

    /// What the status query says; `replicas` are the standbys connected to this one.
    pub fn observed(&self, names: &[MemberName], replicas: Vec<ReplicaConnection>) -> Postgres {
        match &self.proc {
            Proc::Stopped => Postgres::Stopped,
            Proc::Starting { since, .. } => Postgres::Starting { since: *since },
            Proc::Crashed { at } => Postgres::Crashed { at: *at, failures: 1 },
            Proc::Running { primary } => Postgres::Running(Running {
                in_recovery: !primary,
                timeline: Some(Timeline(self.timeline)),
                lsn: Some(self.lsn()),
                receive_lsn: (!primary).then(|| self.lsn()),
                replay_lsn: (!primary).then(|| self.lsn()),
                streaming: self.streaming,
                min_recovery: (!primary).then(|| (Timeline(self.timeline), self.lsn())),
                upstream: self.upstream.map(|u| names[u].clone()),
                synchronous_standby_names: if *primary { self.sync.to_postgres() } else { String::new() },
                replicas,
                slots: self.slots.clone(),
                pending_restart: Vec::new(),
                archiver: None,
            }),
        }
    }

    /// Timeline history as the core reads it.
    pub fn timeline_history(&self) -> Vec<(Timeline, Lsn)> {
        self.history.iter().map(|(t, l)| (Timeline(*t), *l)).collect()
    }

    /// Whether entry `e` is at position `pos` of this WAL.
    pub fn has(&self, pos: usize, e: Entry) -> bool {
        self.wal.get(pos) == Some(&e)
    }
}
