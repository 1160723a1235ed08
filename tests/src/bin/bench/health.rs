//! Health-check latency: what HAProxy or a load balancer pays per check. 3 members with
//! Postgres; N requests, each on a new TCP connection (`Connection: close`, as HAProxy's
//! `option httpchk` does), cycling through the checks below on the primary and a replica. Every
//! answer's status is checked against what it must be, so a fast wrong answer fails the run.
//! The time is connect + request + whole answer, on the client's monotonic clock.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use pgquorum_tests::http::request;
use pgquorum_tests::{Cluster, ClusterOptions};

use crate::pct;

const T: Duration = Duration::from_secs(120);

/// (member is the primary?, method, path, status it must return).
const CHECKS: [(bool, &str, &str, u16); 6] = [
    (true, "GET", "/primary", 200),
    (false, "GET", "/primary", 503),
    (false, "GET", "/replica", 200),
    (true, "GET", "/replica", 503),
    (false, "GET", "/replica?lag=16MB", 200),
    (false, "OPTIONS", "/health", 200),
];

/// Runs `count` checks (after 200 unmeasured ones) and prints the latency distribution.
pub(crate) fn run(count: usize) -> Result<()> {
    let mut c = Cluster::start(ClusterOptions::default());
    let primary = c.wait_for_primary(T);
    let replica = c.agents.iter().map(|a| a.name.clone()).find(|n| *n != primary).unwrap_or_default();
    let rest: Vec<String> = c.agents.iter().map(|a| a.name.clone()).filter(|n| *n != primary).collect();
    c.wait_for_streaming(&[&rest[0], &rest[1]], T);
    let addr = |name: &str| c.agent(name).http.clone().unwrap_or_default();
    let (p_addr, r_addr) = (addr(&primary), addr(&replica));
    println!(
        "primary {primary} ({p_addr}), replica {replica} ({r_addr}); {count} checks, new connection each"
    );
    let mut per_check: Vec<Vec<Duration>> = vec![Vec::with_capacity(count / CHECKS.len() + 1); CHECKS.len()];
    let deadline = Instant::now() + Duration::from_secs(600);
    for i in 0..count + 200 {
        if Instant::now() > deadline {
            bail!("stopped after {i} checks: over 10 minutes");
        }
        let k = i % CHECKS.len();
        let (on_primary, method, path, want) = CHECKS[k];
        let to = if on_primary { &p_addr } else { &r_addr };
        let t = Instant::now();
        let answer = request(to, method, path).map_err(anyhow::Error::msg)?;
        let took = t.elapsed();
        if answer.status != want {
            bail!("{method} {path} on {to} answered {} (want {want}): {}", answer.status, answer.body);
        }
        if i >= 200 {
            per_check[k].push(took);
        }
    }
    println!("{:<30} {:>7} {:>10} {:>10} {:>10}", "check", "count", "p50", "p99", "max");
    let mut all = Vec::with_capacity(count);
    for (k, samples) in per_check.iter_mut().enumerate() {
        samples.sort();
        let (on_primary, method, path, want) = CHECKS[k];
        let label = format!("{method} {path} {} {want}", if on_primary { "P" } else { "R" });
        print_row(&label, samples);
        all.extend_from_slice(samples);
    }
    all.sort();
    print_row("all", &all);
    Ok(())
}

fn print_row(label: &str, sorted: &[Duration]) {
    println!(
        "{label:<30} {:>7} {:>10} {:>10} {:>10}",
        sorted.len(),
        ms3(pct(sorted, 50.0)),
        ms3(pct(sorted, 99.0)),
        ms3(sorted[sorted.len() - 1])
    );
}

/// Milliseconds with 3 decimals (these are well under a millisecond).
fn ms3(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}
