//! Idle agents: memory, CPU and bytes written to storage over a window without requests, read
//! from `/proc/<pid>/{status,stat,io}` of each agent.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgquorum_tests::Cluster;

use crate::raft::Bench;

impl Bench {
    /// Samples every agent at the start and end of a `seconds` window without requests.
    pub(crate) async fn idle(&self, c: &Cluster, seconds: u64) -> Result<()> {
        let all: Vec<usize> = (0..self.names.len()).collect();
        let leader = self.agreed_leader(&all).await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let ticks = clk_tck();
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
            self.names[leader],
            self.names[leader_end],
            ticks.map_or("unknown, assumed 100".to_string(), |t| t.to_string())
        );
        let tck = ticks.unwrap_or(100) as f64;
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
                a.log_bytes.saturating_sub(b.log_bytes)
            );
        }
        println!("memory in MiB (anon = RssAnon); write_bytes: /proc/<pid>/io delta (reached the storage");
        println!("layer); log bytes: growth of the agent's stdout/stderr log file, which is on disk too");
        println!("threads per agent at the end: {:?}", after.iter().map(|s| s.threads).collect::<Vec<_>>());
        Ok(())
    }
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Clock ticks per second from `getconf CLK_TCK`, if it answers.
fn clk_tck() -> Option<u64> {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

struct Sample {
    rss_kb: u64,
    anon_kb: u64,
    hwm_kb: u64,
    threads: u64,
    ticks: u64,
    write_bytes: u64,
    log_bytes: u64,
}

fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn sample(pid: u32, log: &Path) -> Result<Sample> {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{f}")).with_context(|| format!("/proc/{pid}/{f}"))
    };
    let (status, stat, io) = (read("status")?, read("stat")?, read("io")?);
    let get = |text: &str, key: &str| field(text, key).with_context(|| format!("{key} of pid {pid}"));
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let rest: Vec<&str> = stat.rsplit_once(')').context("stat")?.1.split_whitespace().collect();
    let tick = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok()).context("utime/stime");
    Ok(Sample {
        rss_kb: get(&status, "VmRSS:")?,
        anon_kb: get(&status, "RssAnon:")?,
        hwm_kb: get(&status, "VmHWM:")?,
        threads: get(&status, "Threads:")?,
        ticks: tick(14)? + tick(15)?,
        write_bytes: get(&io, "write_bytes:")?,
        log_bytes: std::fs::metadata(log).map(|m| m.len()).unwrap_or(0),
    })
}
