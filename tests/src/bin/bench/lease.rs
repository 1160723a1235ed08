//! The lease under operator changes and short network cuts (issue 11):
//! - `lease-ttl-changes`: 3 members with Postgres and a writer (every 20 ms through a
//!   multi-host connection string); N random `config set ttl=… lease_margin=…` within the
//!   allowed range (ttl from 3 × the 300 ms election timeout to 6 s), 0.3–1.5 s apart; counts
//!   failovers (epoch changes), fencing events (agent and guard log lines) and lost writes.
//! - `lease-cuts`: 3 members with Postgres in network namespaces; for each cut length, N trials
//!   of cutting the primary from the others (and the client) for that long, starting at a
//!   random moment of the renewal cycle; a trial failed over when the epoch changed. After a
//!   failover it waits for the cluster to heal (old primary streaming) before the next trial.
//!
//! Every loop is bounded by its count and the harness's deadlines.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use pgquorum_tests::lease::{Rng, cut_off, epoch, fencings, random_change};
use pgquorum_tests::pg::{CREATE_TABLE, Writer, conninfo, lost_writes};
use pgquorum_tests::{Cluster, ClusterOptions};

const T: Duration = Duration::from_secs(120);

fn others(c: &Cluster, not: &str) -> Vec<String> {
    c.agents.iter().map(|a| a.name.clone()).filter(|n| n != not).collect()
}

fn ready(c: &mut Cluster) -> String {
    let p = c.wait_for_primary(T);
    let rest = others(c, &p);
    c.wait_for_streaming(&[&rest[0], &rest[1]], T);
    p
}

fn fencing_total(c: &Cluster, mark: &str) -> (usize, usize) {
    c.agents.iter().map(|a| fencings(c, &a.name, mark)).fold((0, 0), |(a, g), (x, y)| (a + x, g + y))
}

/// `lease-ttl-changes`.
pub fn ttl_changes(changes: usize, seed: u64) -> Result<()> {
    let mut c = Cluster::start(ClusterOptions::default());
    let p = ready(&mut c);
    c.pg(&p).query(CREATE_TABLE).map_err(anyhow::Error::msg)?;
    let before = epoch(&mut c).map_err(anyhow::Error::msg)?;
    let mark = "bench: ttl changes start";
    for a in &c.agents {
        a.mark_log(mark);
    }
    let limit = Duration::from_secs(30 + 2 * changes as u64);
    let writer = Writer::start(conninfo(&c.postgres_addresses(), true), Duration::from_millis(20), 1, limit);
    let mut rng = Rng::new(seed);
    let mut ttl = Duration::from_millis(1500);
    let mut refused = 0;
    let started = Instant::now();
    for i in 0..changes {
        let change = random_change(&mut rng, Duration::from_millis(900), ttl);
        let mut args = vec!["config", "set"];
        args.extend(change.iter().map(String::as_str));
        let who = &c.agents[i % c.agents.len()];
        match who.ctl_json(&args) {
            Ok(_) => {
                if let Some(t) = change.iter().find_map(|s| s.strip_prefix("ttl=")) {
                    ttl = Duration::from_millis(t.trim_end_matches("ms").parse()?);
                }
                println!("change {i:2}: {}", change.join(" "));
            }
            Err(e) => {
                refused += 1;
                println!("change {i:2}: {} refused: {e}", change.join(" "));
            }
        }
        std::thread::sleep(Duration::from_millis(rng.range(300, 1500)));
    }
    std::thread::sleep(ttl);
    let took = started.elapsed();
    let writes = writer.stop();
    let after = epoch(&mut c).map_err(anyhow::Error::msg)?;
    let (agent, guard) = fencing_total(&c, mark);
    let primary = c.wait_for_primary(T);
    let lost = lost_writes(&c.pg(&primary), &writes).map_err(anyhow::Error::msg)?;
    let acked = writes.iter().filter(|w| w.ok).count();
    let gap = pgquorum_tests::pg::longest_gap_us(&writes, writes.first().map_or(0, |w| w.sent_us));
    println!(
        "{changes} changes in {:.1} s ({refused} refused); failovers: {}; fencing events: {agent} by agents, {guard} by guards; \
         writes acknowledged: {acked} of {}; lost: {}; longest gap between acknowledgements: {:.0} ms",
        took.as_secs_f64(),
        after - before,
        writes.len(),
        lost.len(),
        gap as f64 / 1000.0
    );
    if after != before || agent + guard > 0 || !lost.is_empty() {
        bail!("the target (0 failovers, 0 fencing events, 0 lost writes) is not met");
    }
    Ok(())
}

/// `lease-cuts`.
pub fn cuts(lengths: &[Duration], trials: usize, seed: u64) -> Result<()> {
    let mut c = Cluster::start(ClusterOptions { netns: true, ..Default::default() });
    let mut rng = Rng::new(seed);
    let mut rows = Vec::new();
    for &len in lengths {
        let mut failovers = 0;
        let mut actual = Vec::new();
        for trial in 0..trials {
            let p = ready(&mut c);
            let before = epoch(&mut c).map_err(anyhow::Error::msg)?;
            // A random moment of the renewal cycle (renewals are 500 ms apart at ttl 1.5 s).
            std::thread::sleep(Duration::from_millis(rng.range(0, 500)));
            let mark = format!("bench: cut {len:?} trial {trial}");
            c.agent(&p).mark_log(&mark);
            actual.push(cut_off(&c, &p, len));
            // A failover, if any, is decided within ttl + margin + promotion of the cut's start.
            std::thread::sleep(Duration::from_secs(3));
            let after = epoch(&mut c).map_err(anyhow::Error::msg)?;
            let (agent, guard) = fencings(&c, &p, &mark);
            let failed_over = after != before;
            failovers += usize::from(failed_over);
            println!(
                "cut {:.2} s (measured {:.3} s) trial {trial}: {} (fencing: agent {agent}, guard {guard})",
                len.as_secs_f64(),
                actual.last().map_or(0.0, Duration::as_secs_f64),
                if failed_over { "failover" } else { "no failover" }
            );
        }
        rows.push((len, failovers, actual.iter().max().copied().unwrap_or_default()));
    }
    println!("cut length | failovers / trials | longest measured cut");
    for (len, f, longest) in rows {
        println!("{:.2} s | {f} / {trials} | {:.3} s", len.as_secs_f64(), longest.as_secs_f64());
    }
    Ok(())
}
