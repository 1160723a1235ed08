//! Kubernetes benchmarks against a real kube-apiserver (the agents bound to pod objects, as in
//! tests/tests/kube_labels.rs): label lag over kill -9 failovers, and the write pause of a
//! SIGTERM handover under a writer. Every loop is bounded by its trial count and deadlines.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use pgquorum_tests::kube_cluster::KubeCluster;
use pgquorum_tests::pg::{CREATE_TABLE, Pg, Writer, conninfo, longest_gap_us, lost_writes};
use pgquorum_tests::{ClusterOptions, wait_for};
use rustix::process::Signal;

use crate::{median, ms, pct};

const T: Duration = Duration::from_secs(120);

fn settle(k: &mut KubeCluster) -> (String, Vec<String>) {
    k.settle(T)
}

fn print_row(what: &str, v: &mut [Duration]) {
    v.sort();
    println!(
        "{what:<36} median {:>10}  p99 {:>10}  max {:>10}  min {:>10}  (n={})",
        ms(median(v)),
        ms(pct(v, 99.0)),
        ms(v[v.len() - 1]),
        ms(v[0]),
        v.len()
    );
}

/// kill -9 of the primary `trials` times: from the new primary accepting writes (polled every
/// 10 ms) to the watch stream showing its pod labelled primary, and the old pod unlabelled.
pub fn label_lag(trials: usize) -> Result<()> {
    let mut k = KubeCluster::start(ClusterOptions::default());
    let watcher = k.watch();
    let (mut labelled, mut unlabelled, mut failover) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..trials {
        let (old, rest) = settle(&mut k);
        let conns: Vec<(String, Pg)> = rest
            .iter()
            .map(|n| {
                Ok((
                    n.clone(),
                    Pg::connect(&conninfo(
                        &[k.cluster.agent(n).postgres.clone().unwrap_or_default()],
                        false,
                    ))?,
                ))
            })
            .collect::<Result<_, String>>()
            .map_err(anyhow::Error::msg)?;
        let killed = Instant::now();
        k.cluster.agent_mut(&old).kill9_with_postgres();
        let (new, promoted) = wait_for("a replica accepting writes", T, || {
            for (n, pg) in &conns {
                if pg.value("SELECT pg_is_in_recovery()").ok().flatten().as_deref() == Some("f") {
                    return Ok(Some((n.clone(), Instant::now())));
                }
            }
            Err("none yet".into())
        });
        let on = wait_for("the new primary labelled", T, || Ok(watcher.saw(&new, "primary", killed)));
        let off = wait_for("the old primary unlabelled", T, || Ok(watcher.saw(&old, "", killed)));
        let lag_on = on.saturating_duration_since(promoted);
        let lag_off = off.saturating_duration_since(promoted);
        println!(
            "trial {i}: {old} -> {new}: promoted {} after the kill; labelled +{}, old unlabelled +{}",
            ms(promoted - killed),
            ms(lag_on),
            ms(lag_off)
        );
        labelled.push(lag_on);
        unlabelled.push(lag_off);
        failover.push(promoted - killed);
        drop(conns);
        k.cluster.agent_mut(&old).start();
    }
    let seen = watcher.stop();
    println!("label lag over {trials} kill -9 failovers (from the new primary accepting writes):");
    print_row("kill -> new primary writable", &mut failover);
    print_row("writable -> labelled primary", &mut labelled);
    print_row("writable -> old pod unlabelled", &mut unlabelled);
    println!("two pods labelled primary at once: {} times ({} polls)", seen.violations.len(), seen.polls);
    if !seen.violations.is_empty() {
        bail!("two primaries seen: {:?}", seen.violations);
    }
    Ok(())
}

/// SIGTERM of the primary's agent under a writer (one insert every 10 ms), `trials` times: the
/// longest stretch without an acknowledged write, and acknowledged writes lost.
pub fn handover(trials: usize) -> Result<()> {
    let mut k = KubeCluster::start(ClusterOptions::default());
    let (first, _) = settle(&mut k);
    k.cluster.pg(&first).query(CREATE_TABLE).map_err(anyhow::Error::msg)?;
    let (mut pauses, mut stops, mut lost_total) = (Vec::new(), Vec::new(), 0);
    for i in 0..trials {
        let (old, _) = settle(&mut k);
        let first_id = (i as i64 + 1) * 1_000_000;
        let writer = Writer::start(
            conninfo(&k.cluster.postgres_addresses(), true),
            Duration::from_millis(10),
            first_id,
            T,
        );
        std::thread::sleep(Duration::from_millis(500));
        let stopped = Instant::now();
        k.cluster.agent(&old).signal(Signal::TERM);
        if k.cluster.agent_mut(&old).wait_exit(Duration::from_secs(45)).is_none() {
            bail!("{old}'s agent did not stop within 45 s");
        }
        let took = stopped.elapsed();
        let new = k.cluster.wait_for_primary(T);
        std::thread::sleep(Duration::from_millis(500));
        let writes = writer.stop();
        let lost = lost_writes(&k.cluster.pg(&new), &writes).map_err(anyhow::Error::msg)?;
        let pause = Duration::from_micros(longest_gap_us(&writes, writes[0].sent_us).max(0) as u64);
        println!(
            "trial {i}: {old} -> {new}: agent stopped after {}, writes paused {}, lost {}",
            ms(took),
            ms(pause),
            lost.len()
        );
        lost_total += lost.len();
        pauses.push(pause);
        stops.push(took);
        k.cluster.agent_mut(&old).start();
    }
    println!("SIGTERM handover over {trials} trials:");
    print_row("write pause", &mut pauses);
    print_row("SIGTERM -> agent exited", &mut stops);
    println!("acknowledged writes lost: {lost_total}");
    Ok(())
}
