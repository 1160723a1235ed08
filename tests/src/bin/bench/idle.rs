//! Idle agents: memory, CPU and bytes written to storage over a window without requests, read
//! from `/proc/<pid>/{status,stat,io}` of each agent.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgquorum_tests::{Cluster, footprint};

use crate::raft::Bench;

impl Bench {
    /// Samples every agent at the start and end of a `seconds` window without requests.
    pub(crate) async fn idle(&self, c: &Cluster, seconds: u64) -> Result<()> {
        let all: Vec<usize> = (0..self.names.len()).collect();
        let leader = self.agreed_leader(&all).await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let ticks = footprint::clk_tck();
        let pids: Vec<u32> =
            c.agents.iter().map(|a| a.pid().context("agent not running")).collect::<Result<_>>()?;
        let before =
            c.agents.iter().zip(&pids).map(|(a, &p)| sample(p, &a.log)).collect::<Result<Vec<_>>>()?;
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let after =
            c.agents.iter().zip(&pids).map(|(a, &p)| sample(p, &a.log)).collect::<Result<Vec<_>>>()?;
        let window = t.elapsed().as_secs_f64();
        let leader_end = self.agreed_leader(&all).await?;
        println!(
            "leader: {} at the start, {} at the end; window {window:.1} s; CLK_TCK {}",
            self.names[leader], self.names[leader_end], ticks
        );
        let tck = ticks as f64;
        println!(
            "{:<6} {:>7} {:>9} {:>8} {:>9} {:>8} {:>7} {:>8} {:>12} {:>10}",
            "agent",
            "pid",
            "RSS start",
            "RSS end",
            "anon end",
            "HWM end",
            "CPU s",
            "% core",
            "write_bytes",
            "log bytes"
        );
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            let (b, a) = (&b.proc, &a.proc);
            let cpu = a.ticks.saturating_sub(b.ticks) as f64 / tck;
            println!(
                "{:<6} {:>7} {:>9.1} {:>8.1} {:>9.1} {:>8.1} {:>7.2} {:>7.2}% {:>12} {:>10}",
                self.names[i],
                pids[i],
                mib(b.rss_kb),
                mib(a.rss_kb),
                mib(a.anon_kb),
                mib(a.hwm_kb),
                cpu,
                100.0 * cpu / window,
                a.write_bytes.saturating_sub(b.write_bytes),
                after[i].log_bytes.saturating_sub(before[i].log_bytes)
            );
        }
        println!("memory in MiB (anon = RssAnon); write_bytes: /proc/<pid>/io delta (reached the storage");
        println!("layer); log bytes: growth of the agent's stdout/stderr log file, which is on disk too");
        println!(
            "threads per agent at the end: {:?}",
            after.iter().map(|s| s.proc.threads).collect::<Vec<_>>()
        );
        Ok(())
    }
}

pub(crate) fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

struct Sample {
    proc: footprint::Sample,
    log_bytes: u64,
}

fn sample(pid: u32, log: &Path) -> Result<Sample> {
    Ok(Sample {
        proc: footprint::sample(pid)?,
        log_bytes: std::fs::metadata(log).map(|m| m.len()).unwrap_or(0),
    })
}
