//! Talking to the cluster's Postgres from tests: a blocking client, and a writer that inserts a
//! row every few milliseconds through a multi-host connection string (libpq-style
//! `target_session_attrs=read-write`) and records the outcome of every write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

use crate::agent::SUPERUSER_PASSWORD;

/// A libpq connection string for `hosts` (host:port each) as the superuser.
pub fn conninfo(hosts: &[String], read_write: bool) -> String {
    let (h, p): (Vec<&str>, Vec<&str>) = hosts.iter().filter_map(|a| a.rsplit_once(':')).unzip();
    let attrs = if read_write { "read-write" } else { "any" };
    format!(
        "host={} port={} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=1 target_session_attrs={attrs}",
        h.join(","),
        p.join(",")
    )
}

fn micros_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// A blocking client.
pub struct Pg {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Pg {
    /// Connects with `conninfo`.
    pub fn connect(conninfo: &str) -> Result<Pg, String> {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(conninfo, NoTls).await.map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, String>(client)
        })?;
        Ok(Pg { rt, client })
    }

    /// Runs statements; returns rows of text (NULL as None).
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        self.rt.block_on(async {
            let msgs = tokio::time::timeout(Duration::from_secs(30), self.client.simple_query(sql))
                .await
                .map_err(|_| format!("{sql}: no answer within 30s"))?
                .map_err(|e| {
                    format!("{sql}: {}", e.as_db_error().map_or(e.to_string(), |d| d.message().to_string()))
                })?;
            Ok(msgs
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    _ => None,
                })
                .collect())
        })
    }

    /// The first column of the first row.
    pub fn value(&self, sql: &str) -> Result<Option<String>, String> {
        Ok(self.query(sql)?.into_iter().next().and_then(|r| r.into_iter().next()).flatten())
    }
}

/// One write attempt.
#[derive(Clone, Debug)]
pub struct Write {
    /// The row id (unique per writer run).
    pub id: i64,
    /// Acknowledged (the commit's answer arrived).
    pub ok: bool,
    /// Client wall clock (µs since the epoch) when sent.
    pub sent_us: i64,
    /// Client wall clock when acknowledged.
    pub acked_us: Option<i64>,
    /// Server wall clock when the statement ran (same machine, same clock).
    pub server_us: Option<i64>,
    /// Port of the server that answered.
    pub port: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Inserts into table `pgq_writes(id bigint primary key, at timestamptz)` every `every`.
pub struct Writer {
    stop: Arc<AtomicBool>,
    /// The port of the server that acknowledged the latest write (0 before the first).
    last_acked_port: Arc<AtomicU32>,
    handle: JoinHandle<Vec<Write>>,
}

/// Creates the table the writer uses.
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS pgq_writes (id bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp(), \
     port integer DEFAULT inet_server_port())";

impl Writer {
    /// Starts writing through `conninfo` (ids from `first_id`), at most for `limit`.
    pub fn start(conninfo: String, every: Duration, first_id: i64, limit: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let last_acked_port = Arc::new(AtomicU32::new(0));
        let (flag, last) = (stop.clone(), last_acked_port.clone());
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(write_loop(conninfo, every, first_id, limit, flag, last))
        });
        Writer { stop, last_acked_port, handle }
    }

    /// Waits until the latest acknowledged write came from the server on `port`; false when
    /// `timeout` passes first.
    pub fn wait_acked_on(&self, port: u16, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.last_acked_port.load(Ordering::SeqCst) == u32::from(port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Stops and returns every attempt.
    pub fn stop(self) -> Vec<Write> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("writer thread")
    }
}

async fn write_loop(
    conninfo: String,
    every: Duration,
    first_id: i64,
    limit: Duration,
    stop: Arc<AtomicBool>,
    last_acked_port: Arc<AtomicU32>,
) -> Vec<Write> {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut client: Option<tokio_postgres::Client> = None;
    let mut id = first_id;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < limit {
        let tick = Instant::now();
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client =
                match tokio::time::timeout(Duration::from_secs(2), tokio_postgres::connect(&conninfo, NoTls))
                    .await
                {
                    Ok(Ok((c, conn))) => {
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                        Some(c)
                    }
                    _ => None,
                };
        }
        if let Some(c) = &client {
            let sent_us = micros_now();
            let stmt = "INSERT INTO pgq_writes (id) VALUES ($1) RETURNING inet_server_port(), (extract(epoch FROM clock_timestamp()) * 1000000)::bigint";
            let res = tokio::time::timeout(Duration::from_secs(5), c.query_one(stmt, &[&id])).await;
            let w = match res {
                Ok(Ok(row)) => Write {
                    id,
                    ok: true,
                    sent_us,
                    acked_us: Some(micros_now()),
                    server_us: Some(row.get(1)),
                    port: row.get::<_, Option<i32>>(0).map(|p| p as u16),
                    error: None,
                },
                Ok(Err(e)) => {
                    client = None;
                    Write {
                        id,
                        ok: false,
                        sent_us,
                        acked_us: None,
                        server_us: None,
                        port: None,
                        error: Some(e.to_string()),
                    }
                }
                Err(_) => {
                    client = None;
                    Write {
                        id,
                        ok: false,
                        sent_us,
                        acked_us: None,
                        server_us: None,
                        port: None,
                        error: Some("timeout".into()),
                    }
                }
            };
            if let (true, Some(port)) = (w.ok, w.port) {
                last_acked_port.store(u32::from(port), Ordering::SeqCst);
            }
            out.push(w);
            id += 1;
        }
        if let Some(left) = every.checked_sub(tick.elapsed()) {
            tokio::time::sleep(left).await;
        }
    }
    out
}

/// The longest stretch without an acknowledged write, between `from_us` and the last write: the
/// write unavailability a client saw.
pub fn longest_gap_us(writes: &[Write], from_us: i64) -> i64 {
    let mut acks: Vec<i64> = writes.iter().filter_map(|w| w.acked_us).filter(|t| *t >= from_us).collect();
    acks.sort();
    let mut prev = from_us;
    let mut worst = 0;
    for a in acks {
        worst = worst.max(a - prev);
        prev = a;
    }
    worst
}

/// Ids of acknowledged writes that `pg` (the current primary) does not have.
pub fn lost_writes(pg: &Pg, writes: &[Write]) -> Result<Vec<i64>, String> {
    let present: std::collections::HashSet<i64> = pg
        .query("SELECT id FROM pgq_writes")?
        .into_iter()
        .filter_map(|r| r[0].as_deref().and_then(|v| v.parse().ok()))
        .collect();
    Ok(writes.iter().filter(|w| w.ok && !present.contains(&w.id)).map(|w| w.id).collect())
}

/// One read: when it was answered, the port of the Postgres that answered, and whether that
/// Postgres was a primary.
#[derive(Clone, Debug)]
pub struct Read {
    /// Client wall clock, µs.
    pub at_us: i64,
    /// `inet_server_port()` of the answering server.
    pub port: Option<u16>,
    /// The answering server was not in recovery.
    pub primary: bool,
}

/// Readers on long-lived sessions through one address (a load balancer's replicas listener),
/// each reading every `every` and reconnecting after an error; at most an hour.
pub struct Readers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Read>>>,
}

impl Readers {
    /// Starts `n` readers through `addr`.
    pub fn start(addr: &str, n: usize, every: Duration) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let (info, stop) = (conninfo(&[addr.to_string()], false), stop.clone());
                std::thread::spawn(move || read_loop(&info, every, &stop))
            })
            .collect();
        Readers { stop, threads }
    }

    /// Stops them and returns every read.
    pub fn stop(self) -> Vec<Read> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads.into_iter().flat_map(|t| t.join().unwrap_or_default()).collect()
    }
}

fn read_loop(info: &str, every: Duration, stop: &AtomicBool) -> Vec<Read> {
    let mut out = Vec::new();
    let mut session: Option<Pg> = None;
    let limit = Instant::now() + Duration::from_secs(3600);
    while !stop.load(Ordering::SeqCst) && Instant::now() < limit {
        if session.is_none() {
            session = Pg::connect(info).ok();
        }
        if let Some(s) = &session {
            match s.query("SELECT inet_server_port(), NOT pg_is_in_recovery()") {
                Ok(rows) if !rows.is_empty() => out.push(Read {
                    at_us: micros_now(),
                    port: rows[0][0].as_deref().and_then(|p| p.parse().ok()),
                    primary: rows[0][1].as_deref() == Some("t"),
                }),
                _ => session = None,
            }
        }
        std::thread::sleep(every);
    }
    out
}
