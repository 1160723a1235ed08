//! `pgquorum-bench`: benchmarks that take too long for the test run. Results, and the commands
//! that produced them, are in BENCHMARKS.md.
//!
//! Owns the measurement logic only: each subcommand starts real agents through the harness
//! (`Cluster`, which stops everything it started by PID when dropped) and talks to them over
//! the management gRPC API directly, so polling is cheap enough to time in milliseconds. Every
//! loop is bounded by a count and a deadline. Before measuring it waits (at most 20 minutes)
//! for the 1-minute load average to drop to `--max-load`, and prints the load it ran under.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use pgquorum_proto::management::management_client::ManagementClient;
use pgquorum_proto::management::{RaftStatus, SetConfigRequest, StatusRequest};
use pgquorum_tests::{Cluster, ClusterOptions};
use tonic::transport::{Channel, Endpoint};

type Client = ManagementClient<Channel>;

/// Poll interval while timing a failover.
const POLL: Duration = Duration::from_millis(5);
/// Deadline for setup steps (leader agreement, catch-up).
const SETUP: Duration = Duration::from_secs(30);
/// Deadline for one failover to complete.
const FAILOVER_LIMIT: Duration = Duration::from_secs(20);

#[derive(Parser)]
#[command(about = "Benchmarks of pgquorum agents (see BENCHMARKS.md)")]
struct Cli {
    /// Wait (up to 20 minutes) until the 1-minute load average is at most this before measuring.
    #[arg(long, default_value_t = 1.5, global = true)]
    max_load: f64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// 3 agents: kill -9 the leader N times; time until a survivor leads and a write succeeds.
    RaftFailover {
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
        trials: u64,
    },
    /// 3 agents: N sequential SetConfig round trips to the leader.
    RaftCommit {
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
    },
    /// 3 idle agents: memory, CPU and bytes written to storage over S seconds.
    Idle {
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    println!("load average before: {}", wait_quiet(cli.max_load)?);
    let mut c = Cluster::start(ClusterOptions::raft_only(3));
    let names: Vec<String> = c.agents.iter().map(|a| a.name.clone()).collect();
    let clients = c.agents.iter().map(|a| client(&a.grpc)).collect::<Result<Vec<_>>>()?;
    let b = Bench { names, clients };
    let result = match cli.cmd {
        Cmd::RaftFailover { trials } => b.failover(&mut c, trials as usize).await,
        Cmd::RaftCommit { count } => b.commit(count as usize).await,
        Cmd::Idle { seconds } => b.idle(&c, seconds).await,
    };
    println!("load average after:  {}", loadavg()?);
    if result.is_err() {
        for a in &c.agents {
            let text = a.log_text();
            let lines: Vec<&str> = text.lines().collect();
            for l in &lines[lines.len().saturating_sub(20)..] {
                eprintln!("{}| {l}", a.name);
            }
        }
    }
    result
}

fn loadavg() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/loadavg").context("read /proc/loadavg")?.trim().to_string())
}

/// Waits until the 1-minute load is at most `max` (polling every 30 s, at most 20 minutes).
fn wait_quiet(max: f64) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    loop {
        let text = loadavg()?;
        let one: f64 = text.split_whitespace().next().and_then(|s| s.parse().ok()).context("loadavg")?;
        if one <= max {
            return Ok(text);
        }
        if Instant::now() >= deadline {
            eprintln!("warning: load stayed above {max} for 20 minutes; measuring anyway");
            return Ok(text);
        }
        eprintln!("1-minute load {one} > {max}; checking again in 30 s");
        std::thread::sleep(Duration::from_secs(30));
    }
}

fn client(grpc: &str) -> Result<Client> {
    let ep = Endpoint::from_shared(format!("http://{grpc}"))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(2));
    Ok(ManagementClient::new(ep.connect_lazy()))
}

/// An agent's own view of Raft (`StatusRequest { local_only: true }`).
async fn local(c: &Client) -> Result<RaftStatus> {
    let r = c.clone().status(StatusRequest { local_only: true }).await?.into_inner();
    r.raft.ok_or_else(|| anyhow!("status without raft section"))
}

async fn set(c: &Client, kv: String) -> Result<()> {
    c.clone().set_config(SetConfigRequest { settings: vec![kv], expected_version: 0 }).await?;
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Median of sorted samples (mean of the two middle ones for an even count).
fn median(s: &[Duration]) -> Duration {
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2 }
}

struct Bench {
    names: Vec<String>,
    clients: Vec<Client>,
}

impl Bench {
    /// Index of the leader once every agent in `running` names the same running one.
    async fn agreed_leader(&self, running: &[usize]) -> Result<usize> {
        let deadline = Instant::now() + SETUP;
        loop {
            let last = match self.agreement(running).await {
                Ok(i) => return Ok(i),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                bail!("no leader all agents agree on after {SETUP:?}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn agreement(&self, running: &[usize]) -> Result<usize> {
        let mut leader: Option<String> = None;
        for &i in running {
            let r = local(&self.clients[i]).await.with_context(|| format!("status of {}", self.names[i]))?;
            if r.leader_name.is_empty() {
                bail!("{} knows no leader", self.names[i]);
            }
            if *leader.get_or_insert_with(|| r.leader_name.clone()) != r.leader_name {
                bail!("disagreement about the leader");
            }
        }
        let l = leader.ok_or_else(|| anyhow!("no agents"))?;
        running.iter().copied().find(|&i| self.names[i] == l).ok_or_else(|| anyhow!("leader {l} not running"))
    }

    /// Polls `survivors` every `POLL` until one says it is the leader: (elapsed, who, term).
    async fn first_self_leader(&self, survivors: &[usize], t0: Instant) -> Result<(Duration, usize, u64)> {
        while t0.elapsed() < FAILOVER_LIMIT {
            for &i in survivors {
                if let Ok(r) = local(&self.clients[i]).await
                    && r.leader_name == self.names[i]
                {
                    return Ok((t0.elapsed(), i, r.term));
                }
            }
            tokio::time::sleep(POLL).await;
        }
        bail!("no survivor became leader within {FAILOVER_LIMIT:?}")
    }

    /// Retries a write every `POLL` until one succeeds: (elapsed, attempts).
    async fn first_write(&self, via: usize, kv: &str, t0: Instant) -> Result<(Duration, u32)> {
        let mut attempts = 0;
        while t0.elapsed() < FAILOVER_LIMIT {
            attempts += 1;
            if set(&self.clients[via], kv.to_string()).await.is_ok() {
                return Ok((t0.elapsed(), attempts));
            }
            tokio::time::sleep(POLL).await;
        }
        bail!("no write succeeded within {FAILOVER_LIMIT:?} ({attempts} attempts)")
    }

    async fn failover(&self, c: &mut Cluster, trials: usize) -> Result<()> {
        let all: Vec<usize> = (0..self.names.len()).collect();
        let (mut elect, mut write) = (Vec::new(), Vec::new());
        for trial in 1..=trials {
            let old = self.agreed_leader(&all).await?;
            let term = local(&self.clients[old]).await?.term;
            let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != old).collect();
            let kv = format!("postgres_parameters.pgq.bench={trial}");
            let t0 = Instant::now();
            c.agents[old].kill9();
            let (e, w) =
                tokio::join!(self.first_self_leader(&survivors, t0), self.first_write(survivors[0], &kv, t0));
            let ((e, new, new_term), (w, attempts)) = (e?, w?);
            // Bring the killed agent back and wait until it has caught up.
            let t1 = Instant::now();
            c.agents[old].start();
            let leader = self.agreed_leader(&all).await?;
            let commit = local(&self.clients[leader]).await?.commit_index;
            let deadline = Instant::now() + SETUP;
            while local(&self.clients[old]).await.map(|r| r.applied_index).unwrap_or(0) < commit {
                if Instant::now() >= deadline {
                    bail!("{} did not apply index {commit} within {SETUP:?}", self.names[old]);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            println!(
                "trial {trial:>2}: kill -9 {} (term {term}) -> {} leads (term {new_term}) after {}, \
                 write via {} ok after {} ({attempts} attempt(s)); {} caught up {:.2} s after restart",
                self.names[old],
                self.names[new],
                ms(e),
                self.names[survivors[0]],
                ms(w),
                self.names[old],
                t1.elapsed().as_secs_f64()
            );
            elect.push(e);
            write.push(w);
        }
        elect.sort();
        write.sort();
        let n = elect.len();
        println!("\n{n} trials (p99 is nearest-rank; with fewer than 100 trials it is the max)");
        println!("{:<34} {:>10} {:>10} {:>10}", "", "median", "p99", "min");
        for (what, s) in [("kill -9 -> survivor is leader", &elect), ("kill -9 -> write succeeds", &write)] {
            println!("{what:<34} {:>10} {:>10} {:>10}", ms(median(s)), ms(pct(s, 99.0)), ms(s[0]));
        }
        Ok(())
    }

    async fn commit(&self, count: usize) -> Result<()> {
        let all: Vec<usize> = (0..self.names.len()).collect();
        let leader = self.agreed_leader(&all).await?;
        let c = self.clients[leader].clone();
        let term = local(&c).await?.term; // also opens the cached channel
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut lat = Vec::with_capacity(count);
        let mut config_bytes = 0;
        for i in 0..count {
            if Instant::now() >= deadline {
                bail!("{i} of {count} writes took longer than 300 s");
            }
            let req = SetConfigRequest {
                settings: vec![format!("postgres_parameters.pgq.c{i}={i}")],
                ..Default::default()
            };
            let t = Instant::now();
            let reply = c.clone().set_config(req).await.with_context(|| format!("write {i}"))?.into_inner();
            lat.push(t.elapsed());
            config_bytes = reply.config_json.len();
        }
        let end = local(&c).await?;
        if end.leader_name != self.names[leader] || end.term != term {
            println!(
                "warning: leadership changed during the run (now {} term {})",
                end.leader_name, end.term
            );
        }
        let half = count / 2;
        let (mut first, mut second) = (lat[..half].to_vec(), lat[half..].to_vec());
        first.sort();
        second.sort();
        lat.sort();
        println!(
            "{count} sequential SetConfig to leader {} (term {term}) over one channel",
            self.names[leader]
        );
        println!("{:>10} {:>10} {:>10} {:>10} {:>10}", "p50", "p90", "p99", "max", "min");
        let row = [pct(&lat, 50.0), pct(&lat, 90.0), pct(&lat, 99.0), lat[count - 1], lat[0]];
        println!("{}", row.map(|d| format!("{:>10}", ms(d))).join(" "));
        if half > 0 {
            println!(
                "p50 of the first {half}: {}, of the last {}: {}; config JSON at the end: {config_bytes} bytes",
                ms(pct(&first, 50.0)),
                count - half,
                ms(pct(&second, 50.0))
            );
        }
        Ok(())
    }

    async fn idle(&self, c: &Cluster, seconds: u64) -> Result<()> {
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
