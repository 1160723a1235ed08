//! The workload of a chaos run: writers inserting rows `(client, seq)` through a multi-host
//! read-write connection (libpq's `target_session_attrs=read-write`), each on a long-lived
//! session that is replaced only when it fails, so a session an isolated primary already
//! serves stays open across faults; every write records its send and acknowledgement times and
//! the server's own record (member, timeline, time, LSN). Every tenth write also reads every
//! writer's progress inside its transaction (a read through the read-write endpoint). Readers
//! read the same progress from replicas, to measure staleness.
//!
//! Every loop ends when the run stops it; every statement has a timeout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use crate::history::{Accepted, Read, Write};

/// The table the workload writes.
pub const TABLE: &str = "pgquorum_chaos";

/// Where and how the workload connects and how hard it pushes.
#[derive(Clone, Debug)]
pub struct Target {
    /// Every member's Postgres as (host, port).
    pub hosts: Vec<(String, u16)>,
    /// Superuser name.
    pub user: String,
    /// Its password (never on a command line: read from a file by the caller).
    pub password: String,
    /// Concurrent writers.
    pub writers: usize,
    /// Pause between one writer's writes.
    pub write_interval: Duration,
    /// Replica readers.
    pub readers: usize,
    /// Pause between reads.
    pub read_interval: Duration,
}

/// Seconds since the Unix epoch, the clock of every history.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Target {
    fn conninfo(&self, hosts: &[(String, u16)], read_write: bool) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        for (h, p) in hosts {
            c.host(h).port(*p);
        }
        c.user(&self.user).password(&self.password).dbname("postgres");
        c.connect_timeout(Duration::from_secs(2));
        if read_write {
            c.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        }
        c
    }

    async fn connect(&self, hosts: &[(String, u16)], read_write: bool) -> Option<Client> {
        let cfg = self.conninfo(hosts, read_write);
        // Each host gets its own 2 s connect timeout (a frozen Postgres accepts the TCP
        // connection and never answers); the overall bound leaves time to try them all.
        let bound = Duration::from_secs(2 * hosts.len() as u64 + 1);
        let (client, conn) = tokio::time::timeout(bound, cfg.connect(NoTls)).await.ok()?.ok()?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Some(client)
    }

    /// A session on the primary, or why none could be had within `within`.
    pub async fn primary(&self, within: Duration) -> Result<Client, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(c) = self.connect(&self.hosts, true).await {
                return Ok(c);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("no read-write Postgres among {:?} within {within:?}", self.hosts));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates the workload's table (empty) on the primary.
    pub async fn prepare(&self) -> Result<(), String> {
        let c = self.primary(Duration::from_secs(60)).await?;
        let sql = format!(
            "DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (client int, seq bigint, \
             at timestamptz DEFAULT clock_timestamp(), PRIMARY KEY (client, seq))"
        );
        c.batch_execute(&sql).await.map_err(|e| format!("creating {TABLE}: {e}"))
    }

    /// `(client, seq)` of every row, read from the primary.
    pub async fn survivors(&self) -> Result<Vec<(u32, u64)>, String> {
        let c = self.primary(Duration::from_secs(60)).await?;
        let rows = c
            .query(&format!("SELECT client, seq FROM {TABLE}"), &[])
            .await
            .map_err(|e| format!("reading {TABLE}: {e}"))?;
        Ok(rows.iter().map(|r| (r.get::<_, i32>(0) as u32, r.get::<_, i64>(1) as u64)).collect())
    }

    /// Rows per member (`host:port`), `None` where the member did not answer.
    pub async fn row_counts(&self) -> Vec<(String, Option<i64>)> {
        let mut out = Vec::new();
        for h in &self.hosts {
            let n = match self.connect(std::slice::from_ref(h), false).await {
                Some(c) => tokio::time::timeout(
                    Duration::from_secs(5),
                    c.query_one(&format!("SELECT count(*) FROM {TABLE}"), &[]),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .map(|r| r.get::<_, i64>(0)),
                None => None,
            };
            out.push((format!("{}:{}", h.0, h.1), n));
        }
        out
    }
}

/// A running workload.
pub struct Workload {
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<(Vec<Write>, Vec<Read>)>>,
    readers: Vec<JoinHandle<Vec<Read>>>,
}

impl Workload {
    /// Starts the writers and readers.
    pub fn start(target: &Target) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let writers = (0..target.writers)
            .map(|i| tokio::spawn(write_loop(target.clone(), i as u32 + 1, stop.clone())))
            .collect();
        let readers =
            (0..target.readers).map(|i| tokio::spawn(read_loop(target.clone(), i, stop.clone()))).collect();
        Workload { stop, writers, readers }
    }

    /// Stops every loop and returns what they recorded.
    pub async fn stop(self) -> (Vec<Write>, Vec<Read>) {
        self.stop.store(true, Ordering::SeqCst);
        let (mut writes, mut reads) = (Vec::new(), Vec::new());
        for h in self.writers {
            if let Ok((w, r)) = h.await {
                writes.extend(w);
                reads.extend(r);
            }
        }
        for h in self.readers {
            if let Ok(r) = h.await {
                reads.extend(r);
            }
        }
        (writes, reads)
    }
}

/// Each writer's highest sequence number, from the primary key index.
fn progress_sql(writers: usize) -> String {
    format!(
        "(SELECT string_agg(c || ':' || coalesce((SELECT max(seq) FROM {TABLE} WHERE client = c), 0), ',') \
         FROM generate_series(1, {writers}) c)"
    )
}

fn parse_progress(s: Option<&str>) -> BTreeMap<u32, u64> {
    s.unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once(':'))
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.parse().ok()?)))
        .collect()
}

/// The timeline in a WAL file name (its first 8 hex digits).
fn timeline_of(walfile: &str) -> u32 {
    walfile.get(..8).and_then(|t| u32::from_str_radix(t, 16).ok()).unwrap_or(0)
}

async fn write_loop(t: Target, client: u32, stop: Arc<AtomicBool>) -> (Vec<Write>, Vec<Read>) {
    let (mut writes, mut reads) = (Vec::new(), Vec::new());
    let mut session: Option<Client> = None;
    let mut seq = 0u64;
    let plain = format!(
        "INSERT INTO {TABLE} (client, seq) VALUES ($1, $2) RETURNING host(inet_server_addr()) || ':' || \
         inet_server_port(), pg_walfile_name(pg_current_wal_lsn()), (pg_current_wal_lsn() - '0/0')::bigint, \
         extract(epoch FROM clock_timestamp())::float8, NULL::text"
    );
    let with_read = plain.replace("NULL::text", &progress_sql(t.writers));
    while !stop.load(Ordering::SeqCst) {
        if session.as_ref().is_none_or(Client::is_closed) {
            session = t.connect(&t.hosts, true).await;
            if session.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let Some(c) = &session else { continue };
        seq += 1;
        let sql = if seq.is_multiple_of(10) { &with_read } else { &plain };
        let sent = now();
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            c.query_one(sql.as_str(), &[&(client as i32), &(seq as i64)]),
        )
        .await;
        match res {
            Ok(Ok(row)) => {
                let acked = now();
                let member: String = row.get(0);
                if let Some(p) = row.get::<_, Option<&str>>(4) {
                    reads.push(Read {
                        member: member.clone(),
                        replica: false,
                        started: sent,
                        seen: parse_progress(Some(p)),
                    });
                }
                let server = Accepted {
                    member,
                    timeline: timeline_of(row.get(1)),
                    lsn: row.get::<_, i64>(2) as u64,
                    time: row.get(3),
                };
                writes.push(Write { client, seq, sent, acked: Some(acked), server: Some(server) });
            }
            _ => {
                writes.push(Write { client, seq, sent, acked: None, server: None });
                session = None;
            }
        }
        tokio::time::sleep(t.write_interval).await;
    }
    (writes, reads)
}

async fn read_loop(t: Target, reader: usize, stop: Arc<AtomicBool>) -> Vec<Read> {
    let mut reads = Vec::new();
    let sql = format!(
        "SELECT pg_is_in_recovery(), host(inet_server_addr()) || ':' || inet_server_port(), {}",
        progress_sql(t.writers)
    );
    let mut turn = reader;
    while !stop.load(Ordering::SeqCst) {
        turn += 1;
        let host = &t.hosts[turn % t.hosts.len()];
        if let Some(c) = t.connect(std::slice::from_ref(host), false).await {
            let started = now();
            let res = tokio::time::timeout(Duration::from_secs(5), c.query_one(sql.as_str(), &[])).await;
            if let Ok(Ok(row)) = res
                && row.get::<_, bool>(0)
            {
                reads.push(Read {
                    member: row.get(1),
                    replica: true,
                    started,
                    seen: parse_progress(row.get::<_, Option<&str>>(2)),
                });
            }
        }
        tokio::time::sleep(t.read_interval).await;
    }
    reads
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_and_timelines_parse_from_what_the_server_returns() {
        let p = super::parse_progress(Some("1:10,2:0,3:7"));
        assert_eq!(p.into_iter().collect::<Vec<_>>(), [(1, 10), (2, 0), (3, 7)]);
        assert!(super::parse_progress(None).is_empty());
        assert_eq!(super::timeline_of("0000000A0000000000000003"), 10);
    }
}
