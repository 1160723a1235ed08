//! `pgquorum-bench`: benchmarks that take too long for the test run. Results, and the commands
//! that produced them, are in BENCHMARKS.md.
//!
//! Owns the command line, the wait for a quiet machine and the statistics helpers. The
//! measurements live in the modules: `raft` (leader failover, commit latency) and `idle` talk to
//! the agents' management gRPC API directly, so polling is cheap enough to time in milliseconds;
//! `pg_failover` kills the Postgres primary, or switches it over, under a steady writer; `health`
//! times the HTTP health checks; `haproxy` failover through HAProxy; `lease` changes ttl under a writer and cuts the primary's network. Each starts real agents through the harness (`Cluster`, which
//! stops everything it started by PID when dropped), and every loop is bounded by a count and a
//! deadline. Before measuring it waits (at most 20 minutes) for the 1-minute load average to drop
//! to `--max-load`, and prints the load it ran under.

mod archive;
mod haproxy;
mod health;
mod idle;
mod idle_pg;
mod kube;
mod lease;
mod pg_failover;
mod raft;
mod timeline;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use pgquorum_tests::{Cluster, ClusterOptions};

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
    /// 3 idle members with Postgres: agent, fence guard and Postgres memory and CPU, bytes
    /// written and the agent's SQL statements over S seconds, after a settling time.
    IdleMembers {
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
        /// Seconds to wait after the cluster is steady before the window starts.
        #[arg(long, default_value_t = 10)]
        settle: u64,
        /// Run Postgres with log_statement=all and count the statements (costs Postgres CPU).
        #[arg(long)]
        log_statements: bool,
        /// Archive WAL to a directory, and before the window end this many WAL segments on the
        /// primary (a row each) and wait until every member has archived them: members that have
        /// been archiving, as in any real cluster, rather than freshly started ones.
        #[arg(long, default_value_t = 0)]
        switch_wal: u64,
        /// Run pgbench with this many clients against the primary through the window (0: none):
        /// what the members cost under a writer rather than idle. Archives WAL as --switch-wal.
        #[arg(long, default_value_t = 0)]
        writer: u32,
    },
    /// 3 agents with Postgres and one writer: kill -9 the primary (agent and Postgres) N times;
    /// write unavailability per failover, and acknowledged writes lost at the end.
    Failover {
        /// Durability mode set at bootstrap.
        #[arg(long, value_enum)]
        mode: Mode,
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
        trials: u64,
        /// Copy every agent's log (with the bench's per-trial markers) into this directory at the
        /// end, as `<mode>-<member>.log`, with the writer's attempts (`<mode>-writes.csv`) and the
        /// kill times (`<mode>-kills.csv`).
        #[arg(long)]
        logs: Option<std::path::PathBuf>,
    },
    /// 3 agents with Postgres and two HAProxy instances in front (the shipped configuration and
    /// the same with Patroni's usual check timings): kill -9 the primary N times; write outage
    /// directly and through each, and reads each replicas listener served from a primary.
    HaproxyFailover {
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
        trials: u64,
    },
    /// 3 agents with Postgres: N HTTP health checks (new connection each) on the primary and a
    /// replica; latency p50, p99 and max.
    Health {
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
        requests: u64,
    },
    /// 3 agents with Postgres and a writer: N random `config set ttl=… lease_margin=…` within the
    /// allowed range; failovers, fencing events and lost writes (issue 11).
    LeaseTtlChanges {
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=500))]
        changes: u64,
        /// Seed of the random changes (printed changes can be replayed with it).
        #[arg(long, default_value_t = 11)]
        seed: u64,
    },
    /// 3 agents with Postgres in network namespaces (root): cut the primary off for each length
    /// (seconds), N trials each; failovers per length (issue 11).
    LeaseCuts {
        #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75,1.0,1.25")]
        lengths: Vec<f64>,
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
        trials: u64,
        #[arg(long, default_value_t = 11)]
        seed: u64,
    },
    /// 3 agents bound to pods of a real kube-apiserver: kill -9 the primary N times; time from
    /// the new primary accepting writes to its pod labelled primary and the old pod unlabelled.
    KubeLabelLag {
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
        trials: u64,
    },
    /// 3 agents bound to pods, one writer: SIGTERM the primary's agent N times; write pause of
    /// the handover and acknowledged writes lost.
    KubeHandover {
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
        trials: u64,
    },
    /// 1 agent with Postgres archiving WAL to a moto S3 server under `pgbench -c 8` for S
    /// seconds: files archived per second, archive lag, drain time, the agent's RSS.
    Archive {
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
        /// archive.compression.
        #[arg(long, default_value = "zstd")]
        compression: String,
        /// archive.parallel.
        #[arg(long, default_value_t = 4)]
        parallel: u32,
    },
    /// 3 agents with Postgres and one writer: N `pgquorumctl switchover` to any replica; write
    /// pause per switchover, and acknowledged writes lost at the end.
    Switchover {
        /// Durability mode set at bootstrap.
        #[arg(long, value_enum, default_value = "availability")]
        mode: Mode,
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
        trials: u64,
        /// As for `failover`.
        #[arg(long)]
        logs: Option<std::path::PathBuf>,
    },
}

/// `bootstrap.durability`.
#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Performance,
    Availability,
    Protection,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Performance => "performance",
            Mode::Availability => "availability",
            Mode::Protection => "protection",
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    println!("load average before: {}", wait_quiet(cli.max_load)?);
    let result = match cli.cmd {
        Cmd::Failover { mode, trials, logs } => {
            pg_failover::run(mode.as_str(), pg_failover::Action::Kill, trials as usize, logs)
        }
        Cmd::Health { requests } => health::run(requests as usize),
        Cmd::HaproxyFailover { trials } => haproxy::run(trials as usize),
        Cmd::LeaseTtlChanges { changes, seed } => lease::ttl_changes(changes as usize, seed),
        Cmd::LeaseCuts { lengths, trials, seed } => {
            if lengths.iter().any(|l| !(0.01..=30.0).contains(l)) {
                anyhow::bail!(
                    "--lengths: each cut length is in seconds, between 0.01 and 30 (got {lengths:?})"
                );
            }
            let lengths: Vec<Duration> = lengths.iter().map(|s| Duration::from_secs_f64(*s)).collect();
            lease::cuts(&lengths, trials as usize, seed)
        }
        Cmd::KubeLabelLag { trials } => kube::label_lag(trials as usize),
        Cmd::KubeHandover { trials } => kube::handover(trials as usize),
        Cmd::IdleMembers { seconds, settle, log_statements, switch_wal, writer } => {
            idle_pg::run(seconds, settle, log_statements, switch_wal, writer)
        }
        Cmd::Archive { seconds, compression, parallel } => archive::run(seconds, &compression, parallel),
        Cmd::Switchover { mode, trials, logs } => {
            pg_failover::run(mode.as_str(), pg_failover::Action::Switchover, trials as usize, logs)
        }
        raft_cmd => on_raft_group(raft_cmd),
    };
    println!("load average after:  {}", loadavg()?);
    result
}

/// Starts 3 agents without Postgres and runs a Raft subcommand on a Tokio runtime; on failure
/// prints the end of every agent's log.
fn on_raft_group(cmd: Cmd) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    let mut c = Cluster::start(ClusterOptions::raft_only(3));
    let result = rt.block_on(async {
        let b = raft::Bench::new(&c)?;
        match cmd {
            Cmd::RaftFailover { trials } => b.failover(&mut c, trials as usize).await,
            Cmd::RaftCommit { count } => b.commit(count as usize).await,
            Cmd::Idle { seconds } => b.idle(&c, seconds).await,
            Cmd::Failover { .. }
            | Cmd::Switchover { .. }
            | Cmd::Health { .. }
            | Cmd::HaproxyFailover { .. }
            | Cmd::LeaseTtlChanges { .. }
            | Cmd::LeaseCuts { .. }
            | Cmd::KubeLabelLag { .. }
            | Cmd::KubeHandover { .. }
            | Cmd::IdleMembers { .. }
            | Cmd::Archive { .. } => {
                unreachable!("not a Raft-only subcommand")
            }
        }
    });
    if result.is_err() {
        print_log_tails(&c, 20);
    }
    result
}

/// The last `n` lines of every agent's log, on stderr.
fn print_log_tails(c: &Cluster, n: usize) {
    for a in &c.agents {
        let text = a.log_text();
        let lines: Vec<&str> = text.lines().collect();
        for l in &lines[lines.len().saturating_sub(n)..] {
            eprintln!("{}| {l}", a.name);
        }
    }
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
