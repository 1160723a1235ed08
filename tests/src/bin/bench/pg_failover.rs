//! Postgres failover and switchover under a steady writer: 3 members with a durability mode, one
//! writer that inserts every 10 ms through a multi-host connection string
//! (`target_session_attrs=read-write`), and N rounds of either kill -9 of the primary's agent and
//! Postgres, or `pgquorumctl switchover`. Owns the trial loop and the arithmetic on the writer's
//! records: a trial's write unavailability is the gap between the last acknowledged write before
//! the first one acknowledged by another server after the event (the kill, or the start of the
//! switchover command) and that one, both in client wall-clock µs, as is the event time. Uses the harness's blocking waits (`wait_for`
//! panics after its deadline; the `Cluster` then prints each agent's log and stops everything).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use pgquorum_tests::pg::{CREATE_TABLE, Write, Writer, conninfo};
use pgquorum_tests::{Cluster, ClusterOptions};

use crate::timeline::{self, Events};
use crate::{median, ms, pct};

/// Deadline for each wait (a primary, replicas streaming, a rejoin).
pub(crate) const T: Duration = Duration::from_secs(120);
/// The writer's interval.
const EVERY: Duration = Duration::from_millis(10);
/// How long the writer runs before each kill.
const BEFORE_KILL: Duration = Duration::from_secs(1);

/// What each trial does to the primary.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// kill -9 of its agent and Postgres, then restart of the agent (it rejoins as a replica).
    Kill,
    /// `pgquorumctl switchover` to any replica.
    Switchover,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Kill => "kill -9 of",
            Action::Switchover => "switchover from",
        }
    }
}

/// One kill -9 of, or switchover from, the primary.
struct Trial {
    old: String,
    old_port: u16,
    new: String,
    /// Client wall clock (µs) just before the kill or the switchover command.
    kill_us: i64,
    /// Client wall clock when every member streamed again (end of the trial's window).
    end_us: i64,
    /// The event until `wait_for_primary` (pgquorumctl every 50 ms, then a SQL check) saw the new
    /// primary.
    seen: Duration,
    /// After `seen`: the killed agent's restart (or nothing) until both replicas streamed.
    rejoin: Duration,
    events: Events,
}

pub(crate) fn micros_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

pub(crate) fn port_of(c: &Cluster, name: &str) -> Result<u16> {
    let addr = c.agent(name).postgres.clone().with_context(|| format!("{name} has no Postgres"))?;
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).with_context(|| format!("port of {addr}"))
}

pub(crate) fn others(c: &Cluster, not: &str) -> Vec<String> {
    c.agents.iter().map(|a| a.name.clone()).filter(|n| n != not).collect()
}

/// Waits for a primary and both other members streaming from it; returns the primary.
pub(crate) fn steady(c: &mut Cluster) -> String {
    let p = c.wait_for_primary(T);
    let rest = others(c, &p);
    c.wait_for_streaming(&[&rest[0], &rest[1]], T);
    p
}

/// Runs `trials` failovers in a cluster with durability `mode` and prints the results.
pub(crate) fn run(mode: &str, action: Action, trials: usize, logs: Option<PathBuf>) -> Result<()> {
    let mut c = Cluster::start(ClusterOptions::with_durability(3, mode));
    let first = steady(&mut c);
    c.pg(&first).query(CREATE_TABLE).map_err(anyhow::Error::msg).context("create the writer's table")?;
    let limit = Duration::from_secs(300) + 4 * T * trials as u32;
    let writer = Writer::start(conninfo(&c.postgres_addresses(), true), EVERY, 1, limit);
    println!(
        "durability {mode}: primary {first}; one writer every {EVERY:?} via {:?}",
        c.postgres_addresses()
    );
    println!("client connect time (median of 5): {}", connect_cost(&c, &first)?);
    let mut done = Vec::with_capacity(trials);
    for n in 1..=trials {
        let old = steady(&mut c);
        std::thread::sleep(BEFORE_KILL);
        for a in &c.agents {
            a.mark_log(&format!("trial {n}: {} {old}", action.verb()));
        }
        let old_port = port_of(&c, &old)?;
        let kill_us = micros_now();
        let t0 = Instant::now();
        match action {
            Action::Kill => c.agent_mut(&old).kill9_with_postgres(),
            Action::Switchover => {
                let asked = others(&c, &old)[0].clone();
                c.agent(&asked)
                    .ctl_json(&["switchover"])
                    .map_err(anyhow::Error::msg)
                    .context("switchover")?;
            }
        }
        let new = c.wait_for_primary(T);
        let seen = t0.elapsed();
        if new == old {
            bail!("trial {n}: {old} is still primary after the {}", action.verb());
        }
        let t1 = Instant::now();
        if action == Action::Kill {
            c.agent_mut(&old).start();
        }
        let rest = others(&c, &new);
        c.wait_for_streaming(&[&rest[0], &rest[1]], T);
        let rejoin = t1.elapsed();
        // The trial's window ends only once the writer is back on the new primary: with a fast
        // switchover the replicas stream again before the writer's reconnect has landed.
        if !writer.wait_acked_on(port_of(&c, &new)?, T) {
            bail!("trial {n}: no write acknowledged by the new primary {new} within {T:?}");
        }
        let events = timeline::events(&c, n, &new);
        done.push(Trial { old, old_port, new, kill_us, end_us: micros_now(), seen, rejoin, events });
        eprintln!("trial {n} of {trials}: primary {} -> {}", done[n - 1].old, done[n - 1].new);
    }
    let last = steady(&mut c);
    std::thread::sleep(Duration::from_millis(500));
    let writes = writer.stop();
    let present: HashSet<i64> = c
        .pg(&last)
        .query("SELECT id FROM pgq_writes")
        .map_err(anyhow::Error::msg)
        .context("read the final primary's table")?
        .into_iter()
        .filter_map(|r| r[0].as_deref().and_then(|v| v.parse().ok()))
        .collect();
    if let Some(dir) = logs {
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        for a in &c.agents {
            let to = dir.join(format!("{mode}-{}.log", a.name));
            std::fs::copy(&a.log, &to)
                .with_context(|| format!("copy {} to {}", a.log.display(), to.display()))?;
        }
        write_csv(&dir.join(format!("{mode}-writes.csv")), &writes)?;
        let kills: Vec<String> = done
            .iter()
            .enumerate()
            .map(|(i, t)| format!("{},{},{},{}", i + 1, t.old, t.new, t.kill_us))
            .collect();
        let path = dir.join(format!("{mode}-kills.csv"));
        std::fs::write(&path, format!("trial,old,new,kill_us\n{}\n", kills.join("\n")))
            .with_context(|| format!("write {}", path.display()))?;
    }
    report(mode, action, &done, &writes, &present, &last)
}

/// How long the writer's client takes to connect (SCRAM authentication runs in the client, and
/// a failover makes it reconnect): to the primary alone, and through the multi-host string.
fn connect_cost(c: &Cluster, primary: &str) -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut out = Vec::new();
    for (what, info) in [
        ("primary", conninfo(&[c.agent(primary).postgres.clone().unwrap_or_default()], true)),
        ("multi-host read-write", conninfo(&c.postgres_addresses(), true)),
    ] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls).await?;
                drop(client);
                conn.await
            })
            .with_context(|| format!("connect to the {what}"))?;
            times.push(t.elapsed());
        }
        times.sort();
        out.push(format!("{what} {}", ms(median(&times))));
    }
    Ok(out.join(", "))
}

/// The writes around one kill.
struct Gap<'a> {
    /// Client clock of the last acknowledgement before `first` (normally before the kill).
    last_before: i64,
    /// The first write acknowledged after the kill by another server than the killed one.
    first: &'a Write,
    /// Inserts that failed between the two (connection attempts that fail are not recorded).
    failed: usize,
    /// Acknowledgements from the old primary after the event (in flight at a kill; until it stops
    /// accepting writes in a switchover).
    late_old: usize,
    error: Option<String>,
}

/// The event at `kill_us` on the primary at `old_port`, and the window of writes (sent after
/// `start_us`, until `end_us`) that belong to it.
pub(crate) struct Event {
    pub kill_us: i64,
    pub old_port: u16,
    pub start_us: i64,
    pub end_us: i64,
}

impl Event {
    fn of(t: &Trial, start_us: i64) -> Event {
        Event { kill_us: t.kill_us, old_port: t.old_port, start_us, end_us: t.end_us }
    }

    /// How long this client was without an acknowledged write around the event (see `Gap`).
    pub(crate) fn unavailable(&self, writes: &[Write]) -> Option<Duration> {
        let g = gap(self, writes)?;
        Some(us(g.first.acked_us? - g.last_before))
    }
}

fn gap<'a>(t: &Event, writes: &'a [Write]) -> Option<Gap<'a>> {
    let window: Vec<&Write> =
        writes.iter().filter(|w| w.sent_us > t.start_us && w.sent_us <= t.end_us).collect();
    let after_kill = |w: &&&Write| w.acked_us.is_some_and(|a| a > t.kill_us);
    let first = *window
        .iter()
        .filter(after_kill)
        .filter(|w| w.port != Some(t.old_port))
        .min_by_key(|w| w.acked_us)?;
    let first_ack = first.acked_us?;
    let last_before = window.iter().filter_map(|w| w.acked_us).filter(|a| *a < first_ack).max()?;
    let failed: Vec<&&Write> =
        window.iter().filter(|w| !w.ok && w.sent_us >= last_before && w.sent_us < first_ack).collect();
    let late_old = window.iter().filter(after_kill).filter(|w| w.port == Some(t.old_port)).count();
    Some(Gap {
        last_before,
        first,
        failed: failed.len(),
        late_old,
        error: failed.first().and_then(|w| w.error.clone()),
    })
}

fn us(d: i64) -> Duration {
    Duration::from_micros(d.max(0) as u64)
}

/// Signed milliseconds relative to the kill.
fn rel(t: i64, kill_us: i64) -> String {
    format!("{:+.0}", (t - kill_us) as f64 / 1000.0)
}

fn report(
    mode: &str,
    action: Action,
    trials: &[Trial],
    writes: &[Write],
    present: &HashSet<i64>,
    last: &str,
) -> Result<()> {
    println!("\nper trial: unavailability = first ack after the event - last ack before it. Times in ms");
    println!("from the event (client wall clock; the server's for \"ran\"): the last ack before; the first");
    println!("successful insert after (sent, ran on the server, acked); then from the agents' logs:");
    println!("lease declared expired, grant proposed, promote started and done, the surviving replica");
    println!("pointed at the new primary. \"seen\": until wait_for_primary (pgquorumctl every 50 ms)");
    println!("returned; \"rejoin\": from then until both replicas stream (after restarting a killed agent).");
    let mut gaps = Vec::with_capacity(trials.len());
    let mut start_us = 0;
    for (i, t) in trials.iter().enumerate() {
        let g = gap(&Event::of(t, start_us), writes)
            .with_context(|| format!("trial {}: no acknowledged write", i + 1))?;
        start_us = t.end_us;
        let first_ack = g.first.acked_us.unwrap_or_default();
        let d = us(first_ack - g.last_before);
        gaps.push(d);
        println!(
            "trial {:>2}: {} -> {}: unavailable {:>9} | last ack {}, first sent {} ran {} acked {}; \
             {} failed insert(s){} | {} | seen {:.0}, rejoin {:.1} s",
            i + 1,
            t.old,
            t.new,
            ms(d),
            rel(g.last_before, t.kill_us),
            rel(g.first.sent_us, t.kill_us),
            g.first.server_us.map_or("?".into(), |s| rel(s, t.kill_us)),
            rel(first_ack, t.kill_us),
            g.failed,
            if g.late_old > 0 {
                format!(" ({} ack(s) from the old primary after the event)", g.late_old)
            } else {
                String::new()
            },
            t.events.summary(t.kill_us),
            t.seen.as_secs_f64() * 1000.0,
            t.rejoin.as_secs_f64(),
        );
        if let Some(e) = g.error {
            println!("           first error: {}", e.lines().next().unwrap_or(""));
        }
    }
    gaps.sort();
    let acked: Vec<i64> = writes.iter().filter(|w| w.ok).map(|w| w.id).collect();
    let acked_set: HashSet<i64> = acked.iter().copied().collect();
    let lost: Vec<i64> = acked.iter().filter(|id| !present.contains(id)).copied().collect();
    let unacked_present = present.iter().filter(|id| !acked_set.contains(id)).count();
    let what = match action {
        Action::Kill => "failovers (kill -9 of the primary's agent and Postgres)",
        Action::Switchover => "switchovers (pgquorumctl switchover to any replica)",
    };
    println!("\ndurability {mode}: {} {what}", trials.len());
    println!("write unavailability (p99 is nearest-rank; with fewer than 100 trials it is the max):");
    println!("{:>10} {:>10} {:>10} {:>10} {:>10}", "median", "p90", "p99", "max", "min");
    let row = [median(&gaps), pct(&gaps, 90.0), pct(&gaps, 99.0), gaps[gaps.len() - 1], gaps[0]];
    println!("{}", row.map(|d| format!("{:>10}", ms(d))).join(" "));
    println!(
        "writes attempted {}, acknowledged {}, failed {}; lost (acknowledged, missing on the final \
         primary {last}): {}; present but not acknowledged: {unacked_present}",
        writes.len(),
        acked.len(),
        writes.len() - acked.len(),
        lost.len()
    );
    for id in &lost {
        let Some(w) = writes.iter().find(|w| w.id == *id) else { continue };
        let ack = w.acked_us.unwrap_or_default();
        // The kill it belongs to: the last one before the acknowledgement, else the first.
        let Some((n, t)) = trials
            .iter()
            .enumerate()
            .rev()
            .find(|(_, t)| t.kill_us <= ack)
            .or(trials.iter().enumerate().next())
        else {
            continue;
        };
        println!(
            "lost id {id}: trial {}, sent {} ms and acknowledged {} ms from the kill of {}, by {}",
            n + 1,
            rel(w.sent_us, t.kill_us),
            rel(ack, t.kill_us),
            t.old,
            if w.port == Some(t.old_port) {
                "the old primary".to_string()
            } else {
                format!("port {:?}", w.port)
            }
        );
    }
    Ok(())
}

/// Every write attempt as CSV (µs of the client's wall clock; `server_us` is the server's).
fn write_csv(path: &std::path::Path, writes: &[Write]) -> Result<()> {
    let mut text = String::from("id,ok,sent_us,acked_us,server_us,port,error\n");
    for w in writes {
        let opt = |v: Option<i64>| v.map_or(String::new(), |v| v.to_string());
        let error = w.error.as_deref().unwrap_or("").replace(['\n', ','], " ");
        text.push_str(&format!(
            "{},{},{},{},{},{},{error}\n",
            w.id,
            w.ok,
            w.sent_us,
            opt(w.acked_us),
            opt(w.server_us),
            w.port.map_or(String::new(), |p| p.to_string())
        ));
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}
