//! What a chaos run records: every write the workload sent (and what the server said when it
//! acknowledged it), every read, every fault with its timing, and the rows that survived. The
//! checker judges a `History`; nothing here does IO.
//!
//! Times are Unix epoch seconds (`f64`): the workload, the fault injector and the servers run on
//! one machine, so client and server times share one clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One insert by one client: `(client, seq)` is unique in the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Write {
    /// Which writer sent it.
    pub client: u32,
    /// Per-client sequence number, increasing by one per attempt.
    pub seq: u64,
    /// When the client sent it.
    pub sent: f64,
    /// When the commit was acknowledged; `None`: it failed or its outcome is unknown.
    pub acked: Option<f64>,
    /// What the server that acknowledged it reported; `None` when not acknowledged.
    pub server: Option<Accepted>,
}

/// The server-side record of an acknowledged write: who accepted it, on which timeline, when
/// (the server's clock) and where in the WAL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// The accepting Postgres, `address:port` as the server sees itself.
    pub member: String,
    /// Its WAL insert timeline at the insert.
    pub timeline: u32,
    /// `clock_timestamp()` at the insert.
    pub time: f64,
    /// `pg_current_wal_lsn()` at the insert, in bytes.
    pub lsn: u64,
}

/// One read of the writers' progress: for each writer, the highest sequence number visible.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Read {
    /// The Postgres that answered (`address:port`).
    pub member: String,
    /// Read through a replica (staleness is measured) or through the read-write endpoint (a
    /// read that misses an acknowledged write is a violation).
    pub replica: bool,
    /// When the read was sent.
    pub started: f64,
    /// Highest visible `seq` per writer client.
    pub seen: BTreeMap<u32, u64>,
}

/// One injected fault and what the runner observed after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Fault kind as named in scenario files (`kill-postgres`, `freeze-agent`, ...).
    pub kind: String,
    /// The member it hit and its role then (`m1 (primary)`).
    pub target: String,
    /// When it was injected.
    pub injected: f64,
    /// When it was healed (process restarted or resumed, network reconnected); `None` for faults
    /// that heal themselves.
    pub healed: Option<f64>,
    /// When the cluster was seen converged again: a primary and every member streaming from it;
    /// `None`: not within the scenario's recovery timeout.
    pub converged: Option<f64>,
}

/// Everything a run recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Every write attempt.
    pub writes: Vec<Write>,
    /// Every read.
    pub reads: Vec<Read>,
    /// Every fault, in injection order.
    pub faults: Vec<Fault>,
    /// `(client, seq)` of every row in the table at the end, read from the final primary.
    pub survivors: Vec<(u32, u64)>,
    /// Members (`address:port`) whose row count did not catch up with the primary at the end.
    pub lagging_at_end: Vec<String>,
}
