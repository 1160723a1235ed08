//! `archive`: one agent with Postgres archiving WAL to a moto S3 server while `pgbench -c 8`
//! runs for S seconds. Samples the agent's `/metrics` every second (files archived, files
//! waiting, archive lag) and its RSS, then times how long the backlog takes to drain.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pgquorum_tests::agent::SUPERUSER_PASSWORD;
use pgquorum_tests::bins::postgres_bin;
use pgquorum_tests::moto::{Moto, SECRET_KEY};
use pgquorum_tests::secrets::SecretDir;
use pgquorum_tests::{Cluster, ClusterOptions};

struct Tick {
    archived: f64,
    pending: f64,
    lag: f64,
    rss_kib: u64,
}

fn sample(c: &Cluster, name: &str) -> Option<Tick> {
    let a = c.agent(name);
    let text = a.http("GET", "/metrics").ok()?.body;
    let s = pgquorum_tests::prom::parse(&text).ok()?;
    let v = |n: &str| pgquorum_tests::prom::value(&s, n, &[]).unwrap_or(0.0);
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", a.pid()?))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|r| r.trim().trim_end_matches(" kB").parse().ok()))?;
    Some(Tick {
        archived: v("pgquorum_archive_archived_files_total"),
        pending: v("pgquorum_archive_pending_files"),
        lag: v("pgquorum_archive_lag_seconds"),
        rss_kib,
    })
}

fn pgbench(addr: &str, args: &[&str]) -> Result<()> {
    let (host, port) = addr.rsplit_once(':').context("postgres address")?;
    let out = Command::new(postgres_bin("pgbench"))
        .args(["-h", host, "-p", port, "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .context("running pgbench")?;
    if !out.status.success() {
        bail!("pgbench {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Runs the benchmark with `compression` for `seconds` of pgbench load.
pub fn run(seconds: u64, compression: &str, parallel: u32) -> Result<()> {
    let moto = Moto::start().context("moto_server is not installed (run .ci/run)")?;
    moto.create_bucket("bench");
    let secrets = SecretDir::new();
    let secret = secrets.write("s3-secret", &format!("{SECRET_KEY}\n"));
    let mut settings = moto.agent_settings("bench", &secret);
    settings.push(format!("archive.compression={compression}"));
    settings.push(format!("archive.parallel={parallel}"));
    let mut c = Cluster::start(ClusterOptions { members: 1, settings, ..Default::default() });
    let p = c.wait_for_primary(Duration::from_secs(120));
    let addr = c.agent(&p).postgres.clone().context("postgres address")?;
    pgbench(&addr, &["-i", "-q", "-s", "10"])?;
    let start = sample(&c, &p).context("first sample")?;
    let began = Instant::now();
    let load = {
        let addr = addr.clone();
        let secs = seconds.to_string();
        std::thread::spawn(move || pgbench(&addr, &["-c", "8", "-j", "2", "-T", &secs, "-n"]))
    };
    let mut ticks = Vec::new();
    while !load.is_finished() && began.elapsed() < Duration::from_secs(seconds + 120) {
        if let Some(t) = sample(&c, &p) {
            ticks.push(t);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    load.join().map_err(|_| anyhow::anyhow!("pgbench thread panicked"))??;
    let loaded = began.elapsed();
    let drain_start = Instant::now();
    let end = loop {
        let t = sample(&c, &p).context("sample")?;
        if t.pending == 0.0 || drain_start.elapsed() > Duration::from_secs(300) {
            break t;
        }
        ticks.push(t);
        std::thread::sleep(Duration::from_millis(200));
    };
    let drained = drain_start.elapsed();
    let files = end.archived - start.archived;
    let mut lags: Vec<f64> = ticks.iter().map(|t| t.lag).collect();
    lags.sort_by(f64::total_cmp);
    let max_pending = ticks.iter().map(|t| t.pending).fold(0.0, f64::max);
    let max_rss = ticks.iter().map(|t| t.rss_kib).max().unwrap_or(end.rss_kib);
    println!("compression {compression}, parallel {parallel}, pgbench -c 8 for {seconds} s");
    println!(
        "archived {files} files in {:.1} s of load + {:.1} s to drain: {:.2} files/s",
        loaded.as_secs_f64(),
        drained.as_secs_f64(),
        files / (loaded + drained).as_secs_f64()
    );
    println!(
        "archive lag under load: median {:.1} s, max {:.1} s; files waiting at most {max_pending}",
        lags.get(lags.len() / 2).copied().unwrap_or(0.0),
        lags.last().copied().unwrap_or(0.0)
    );
    println!("agent RSS while archiving: max {:.1} MiB", max_rss as f64 / 1024.0);
    Ok(())
}
