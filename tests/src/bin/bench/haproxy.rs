//! Failover as HAProxy's clients see it (issue 7): one cluster, two HAProxy instances in front
//! of it in the same run — the configuration we ship (`deploy/haproxy/haproxy.cfg`) and the same
//! file with Patroni's usual check timings (`inter 3s fall 3 rise 2`). Per kill -9 of the
//! primary's agent and Postgres: the write outage of a writer connected directly (multi-host,
//! `target_session_attrs=read-write`: the failover itself) and of a writer through each primary
//! listener; and reads that each replicas listener served from a primary (two readers each, on
//! long-lived sessions, so one sits on the replica that gets promoted).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use pgquorum_tests::haproxy::Haproxy;
use pgquorum_tests::pg::{CREATE_TABLE, Read, Readers, Write, Writer, conninfo};
use pgquorum_tests::{Cluster, ClusterOptions};

use crate::pg_failover::{Event, T, micros_now, others, port_of, steady};
use crate::{median, ms, pct};

/// Patroni's documented HAProxy check line.
const PATRONI_CHECKS: &str = "inter 3s fall 3 rise 2 on-marked-down shutdown-sessions";
const EVERY: Duration = Duration::from_millis(10);

/// One HAProxy setup under test, with its clients.
struct Front {
    name: &'static str,
    haproxy: Haproxy,
    writer: Option<Writer>,
    readers: Option<Readers>,
}

/// Results of one trial.
struct Trial {
    event: Event,
    old: String,
    new: String,
}

/// Runs `trials` kill -9 failovers with both HAProxy setups in front and prints the results.
pub(crate) fn run(trials: usize) -> Result<()> {
    let mut c = Cluster::start(ClusterOptions::with_durability(3, "availability"));
    let first = steady(&mut c);
    c.pg(&first).query(CREATE_TABLE).map_err(anyhow::Error::msg).context("create the writer's table")?;
    let limit = Duration::from_secs(600) + 4 * T * trials as u32;
    let mut fronts = vec![
        Front {
            name: "shipped",
            haproxy: Haproxy::shipped(&c, None, "shipped"),
            writer: None,
            readers: None,
        },
        Front {
            name: "patroni-timings",
            haproxy: Haproxy::shipped(&c, Some(PATRONI_CHECKS), "patroni"),
            writer: None,
            readers: None,
        },
    ];
    let direct = Writer::start(conninfo(&c.postgres_addresses(), true), EVERY, 1, limit);
    for (i, f) in fronts.iter_mut().enumerate() {
        f.haproxy.wait_routes_to_primary(&mut c, T);
        let first_id = (i as i64 + 1) * 1_000_000_000;
        f.writer = Some(Writer::start(
            conninfo(std::slice::from_ref(&f.haproxy.addr), false),
            EVERY,
            first_id,
            limit,
        ));
        f.readers = Some(Readers::start(&f.haproxy.replicas, 2, EVERY));
    }
    println!(
        "one cluster (durability availability), writers every {EVERY:?}: direct (multi-host read-write)"
    );
    for f in &fronts {
        println!(
            "  and through HAProxy {} ({}), 2 readers on its replicas listener",
            f.name,
            f.haproxy.config.display()
        );
    }
    let mut done: Vec<Trial> = Vec::with_capacity(trials);
    let mut start_us = 0;
    for n in 1..=trials {
        let old = steady(&mut c);
        let port = port_of(&c, &old)?;
        let clients: Vec<&Writer> =
            std::iter::once(&direct).chain(fronts.iter().filter_map(|f| f.writer.as_ref())).collect();
        for w in &clients {
            if !w.wait_acked_on(port, T) {
                bail!("trial {n}: a writer never reached the primary {old} before the kill");
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        let kill_us = micros_now();
        c.agent_mut(&old).kill9_with_postgres();
        let new = c.wait_for_primary(T);
        if new == old {
            bail!("trial {n}: {old} is still primary after the kill");
        }
        c.agent_mut(&old).start();
        let rest = others(&c, &new);
        c.wait_for_streaming(&[&rest[0], &rest[1]], T);
        let new_port = port_of(&c, &new)?;
        for w in &clients {
            if !w.wait_acked_on(new_port, T) {
                bail!("trial {n}: a writer never reached the new primary {new}");
            }
        }
        let end_us = micros_now();
        done.push(Trial { event: Event { kill_us, old_port: port, start_us, end_us }, old, new });
        start_us = end_us;
        eprintln!("trial {n} of {trials}: primary {} -> {}", done[n - 1].old, done[n - 1].new);
    }
    let direct = direct.stop();
    let mut results = Vec::new();
    for f in fronts {
        let writes = f.writer.context("writer")?.stop();
        let reads = f.readers.context("readers")?.stop();
        results.push((f.name, writes, reads));
    }
    report(&done, &direct, &results)
}

fn report(trials: &[Trial], direct: &[Write], fronts: &[(&str, Vec<Write>, Vec<Read>)]) -> Result<()> {
    println!("\nper trial, ms: write outage of the direct writer (the failover), then per HAProxy setup its");
    println!("writer's outage and, on its replicas listener, reads answered by a primary (count, span)");
    let mut direct_gaps = Vec::new();
    let mut front_gaps: Vec<Vec<Duration>> = vec![Vec::new(); fronts.len()];
    let mut extra: Vec<Vec<Duration>> = vec![Vec::new(); fronts.len()];
    let mut primary_reads: Vec<(usize, Duration)> = vec![(0, Duration::ZERO); fronts.len()];
    for (i, t) in trials.iter().enumerate() {
        let d = t.event.unavailable(direct).with_context(|| format!("trial {}: direct writer", i + 1))?;
        direct_gaps.push(d);
        let mut line = format!("trial {:>2}: {} -> {}: direct {:>9}", i + 1, t.old, t.new, ms(d));
        for (j, (name, writes, reads)) in fronts.iter().enumerate() {
            let g = t.event.unavailable(writes).with_context(|| format!("trial {}: {name} writer", i + 1))?;
            front_gaps[j].push(g);
            extra[j].push(g.saturating_sub(d));
            let bad: Vec<i64> = reads
                .iter()
                .filter(|r| r.primary && r.at_us > t.event.kill_us && r.at_us <= t.event.end_us)
                .map(|r| r.at_us)
                .collect();
            let span = match (bad.iter().min(), bad.iter().max()) {
                (Some(a), Some(b)) => Duration::from_micros((b - a) as u64),
                _ => Duration::ZERO,
            };
            primary_reads[j].0 += bad.len();
            primary_reads[j].1 = primary_reads[j].1.max(span);
            line.push_str(&format!(
                " | {name} {:>9}, reads on a primary {} over {}",
                ms(g),
                bad.len(),
                ms(span)
            ));
        }
        println!("{line}");
    }
    let row = |v: &mut Vec<Duration>| {
        v.sort();
        format!("median {:>9}  p99 {:>9}  max {:>9}", ms(median(v)), ms(pct(v, 99.0)), ms(v[v.len() - 1]))
    };
    println!(
        "\n{} kill -9 failovers (p99 is nearest-rank: with fewer than 100 trials, the max)",
        trials.len()
    );
    println!("{:<34} {}", "failover itself (direct writer)", row(&mut direct_gaps));
    for (j, (name, ..)) in fronts.iter().enumerate() {
        println!("{:<34} {}", format!("outage through HAProxy {name}"), row(&mut front_gaps[j]));
        println!("{:<34} {}", "  beyond the failover itself", row(&mut extra[j]));
        println!(
            "{:<34} {} reads in all; longest stretch {}",
            "  replicas listener: primary reads",
            primary_reads[j].0,
            ms(primary_reads[j].1)
        );
    }
    Ok(())
}
