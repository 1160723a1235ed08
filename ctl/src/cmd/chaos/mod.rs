//! `pgquorumctl chaos run --scenario FILE`: break a cluster on purpose and check it held. Starts
//! a fresh local cluster (or uses `--dir`), runs the scenario's workload, injects its seeded
//! schedule of faults one at a time (waiting for convergence after each), then checks the
//! recorded history (pgquorum_chaos::checker) and prints the report; exit 1 on any violation.
//!
//! `cluster` is the cluster under test, `faults` injects one fault; the decisions about what
//! counts as a violation live in the chaos crate, not here.

mod cluster;
mod faults;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgquorum_chaos::checker::{self, Checks, Durability};
use pgquorum_chaos::history::History;
use pgquorum_chaos::report::{self, Report};
use pgquorum_chaos::scenario::Scenario;
use pgquorum_chaos::workload::{Workload, now};

use super::local::{DirArg, parse_timeout};
use crate::{Failure, Output};
use cluster::Under;

/// Subcommands of `chaos`.
#[derive(clap::Subcommand)]
pub enum Args {
    /// Run a scenario: workload, seeded faults, checks, report.
    Run(RunArgs),
}

/// Arguments of `chaos run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Scenario file (see chaos/scenarios/ and docs/chaos.md).
    #[arg(long, value_name = "FILE")]
    pub scenario: PathBuf,
    /// Seed of the fault schedule: the same seed replays the same schedule [default: the time].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop injecting after this long (120, 90s, 30m).
    #[arg(long, value_parser = parse_timeout, conflicts_with = "faults")]
    pub duration: Option<Duration>,
    /// Number of faults to inject [default: the scenario's `run.faults`].
    #[arg(long)]
    pub faults: Option<usize>,
    /// Durability mode of the fresh cluster [default: the scenario's].
    #[arg(long, value_parser = ["performance", "availability", "protection"])]
    pub durability: Option<String>,
    /// In performance mode, WAL bytes an acknowledged write may lose on failover (the
    /// cluster's `maximum_lag_on_failover`).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_lag_bytes: u64,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write the recorded history (every write, read and fault) here, as JSON.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Use the local cluster in DIR (`pgquorumctl local up --dir DIR`) instead of starting one.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Runs `chaos`.
pub async fn run(output: Output, args: Args) -> Result<(), Failure> {
    match args {
        Args::Run(a) => run_scenario(output, a).await,
    }
}

fn durability(name: &str) -> Durability {
    match name {
        "performance" => Durability::Performance,
        "availability" => Durability::Availability,
        _ => Durability::Protection,
    }
}

async fn run_scenario(output: Output, args: RunArgs) -> Result<(), Failure> {
    let text = std::fs::read_to_string(&args.scenario)
        .map_err(|e| Failure::usage(format!("--scenario {}: {e}", args.scenario.display())))?;
    let sc = Scenario::parse(&text)
        .map_err(|e| Failure::usage(format!("--scenario {}: {e}", args.scenario.display())))?;
    let seed = args.seed.unwrap_or_else(|| now() as u64);
    let mode = args.durability.clone().unwrap_or_else(|| {
        serde_json::to_value(sc.durability)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    });
    let mut under = match &args.dir {
        Some(d) => {
            let st = DirArg { dir: d.clone() }.load()?;
            let d = durability(&st.durability);
            if args.durability.is_some() && durability(&mode) != d {
                return Err(Failure::usage(format!(
                    "--durability {mode}: the cluster in {} was created with {}; change it with \
                     `pgquorumctl config set durability={mode}` or drop --durability",
                    st.dir.display(),
                    st.durability
                )));
            }
            Under::reuse(st)
        }
        None => Under::fresh(sc.members, &mode).await?,
    };
    // Without network namespaces, faults that cut the network are left out, and said so.
    let network = under.has_network();
    let count =
        args.faults.unwrap_or(if args.duration.is_some() { 100_000 } else { sc.default_faults(network) });
    let schedule = sc.schedule(seed, count, network);
    let mut skipped: Vec<String> = sc
        .fault
        .iter()
        .filter(|f| f.kind.needs_network() && !network)
        .map(|f| format!("{} (needs network namespaces: run as root, without --dir)", f.kind.name()))
        .collect();
    skipped.dedup();
    let how_many = match (args.faults, args.duration) {
        (None, Some(d)) => format!("faults for {}s", d.as_secs()),
        _ => format!("{} faults", schedule.len()),
    };
    eprintln!(
        "chaos: scenario {} seed {seed}, {how_many}, {mode} mode, {}",
        args.scenario.display(),
        if network { "members in network namespaces" } else { "loopback" }
    );
    let started = Instant::now();
    let res = drive(&mut under, &sc, &schedule, &args).await;
    let checks = Checks {
        durability: durability(&mode),
        max_lag_bytes: args.max_lag_bytes,
        max_replica_staleness: sc.max_replica_staleness.map(|d| d.as_secs_f64()),
    };
    let verdict = res.as_ref().ok().map(|h| checker::check(h, &checks));
    under.finish(verdict.as_ref().is_none_or(|v| !v.violations.is_empty())).await;
    let history = res?;
    let verdict = verdict.expect("checked when the run succeeded");
    if let Some(path) = &args.history {
        let text = serde_json::to_string(&history).expect("the history serialises");
        std::fs::write(path, text)
            .map_err(|e| Failure::failed(format!("writing --history {}: {e}", path.display())))?;
    }
    let rep = Report {
        scenario: args.scenario.display().to_string(),
        seed,
        durability: mode,
        network: if network { "network namespaces" } else { "loopback (no partition faults)" }.into(),
        skipped,
        seconds: started.elapsed().as_secs_f64(),
        per_kind: report::per_kind(&verdict.faults),
        verdict,
    };
    let json = serde_json::to_string_pretty(&rep).expect("the report serialises");
    if let Some(path) = &args.report {
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| Failure::failed(format!("writing --report {}: {e}", path.display())))?;
    }
    match output {
        Output::Json => println!("{json}"),
        Output::Table => print!("{}", rep.summary()),
    }
    if rep.verdict.violations.is_empty() {
        Ok(())
    } else {
        Err(Failure::failed(format!(
            "chaos run found {} violations (seed {seed})",
            rep.verdict.violations.len()
        )))
    }
}

/// The run itself: workload on, each fault injected and recovered from, workload off, and the
/// end state read back.
async fn drive(
    under: &mut Under,
    sc: &Scenario,
    schedule: &[pgquorum_chaos::scenario::Planned],
    args: &RunArgs,
) -> Result<History, Failure> {
    if under.wait_converged(Duration::from_secs(120)).await.is_none() {
        return Err(Failure::failed(
            "the cluster under test is not healthy: no primary with every member streaming",
        ));
    }
    let mut target = under.workload_target()?;
    target.writers = sc.writers;
    target.write_interval = sc.write_interval;
    target.readers = sc.readers;
    target.read_interval = sc.read_interval;
    target.prepare().await.map_err(Failure::failed)?;
    let workload = Workload::start(&target);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut history = History::default();
    for (i, planned) in schedule.iter().enumerate() {
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let mut fault = match faults::inject(under, planned, sc.recover_timeout).await {
            Ok(f) => f,
            Err(e) => {
                let _ = workload.stop().await;
                return Err(e);
            }
        };
        fault.converged = under.wait_converged(sc.recover_timeout).await;
        eprintln!(
            "chaos: fault {}: {} on {}: {}",
            i + 1,
            fault.kind,
            fault.target,
            match fault.converged {
                Some(t) => format!("converged after {:.1}s", t - fault.injected),
                None => format!("NOT converged within {:?}", sc.recover_timeout),
            }
        );
        let stuck = fault.converged.is_none();
        history.faults.push(fault);
        if stuck {
            break;
        }
        tokio::time::sleep(sc.pause).await;
    }
    // Let the last writes land, then stop and read back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (writes, reads) = workload.stop().await;
    history.writes = writes;
    history.reads = reads;
    under.wait_converged(sc.recover_timeout).await;
    history.survivors = target.survivors().await.map_err(Failure::failed)?;
    history.lagging_at_end = lagging(&target, history.survivors.len()).await;
    Ok(history)
}

/// Members whose row count has not reached the primary's within a minute.
async fn lagging(target: &pgquorum_chaos::workload::Target, rows: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let behind: Vec<String> = target
            .row_counts()
            .await
            .into_iter()
            .filter(|(_, n)| *n != Some(rows as i64))
            .map(|(m, n)| format!("{m} ({} of {rows} rows)", n.map_or("no answer".into(), |n| n.to_string())))
            .collect();
        if behind.is_empty() || tokio::time::Instant::now() > deadline {
            return behind;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
