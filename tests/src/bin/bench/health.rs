//! Health-check latency: what HAProxy or a load balancer pays per check. 3 members with
//! Postgres; N requests, each on a new TCP connection (`Connection: close`, as HAProxy's
//! `option httpchk` does), cycling through the checks below on the primary and a replica. Every
//! answer's status is checked against what it must be, so a fast wrong answer fails the run.
//! The time is connect + request + whole answer, on the client's monotonic clock.
//!
//! Interleaved with them, the same request to a baseline: a minimal HTTP responder on a thread
//! of this process (accept, read the request, write a fixed 200, close). It shows what the
//! machine itself adds to a connection's round trip (scheduling, loopback), so the agents'
//! figures can be read against it.

use std::io::{Read, Write};
use std::net::TcpListener;
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
    let base_addr = baseline()?;
    println!(
        "primary {primary} ({p_addr}), replica {replica} ({r_addr}); {count} checks, new connection each"
    );
    let mut per_check: Vec<Vec<Duration>> = vec![Vec::with_capacity(count / CHECKS.len() + 1); CHECKS.len()];
    let mut base = Vec::with_capacity(count / CHECKS.len() + 1);
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
        if k == 0 {
            let t = Instant::now();
            let answer = request(&base_addr, "GET", "/").map_err(anyhow::Error::msg)?;
            if answer.status != 200 {
                bail!("the baseline answered {}", answer.status);
            }
            if i >= 200 {
                base.push(t.elapsed());
            }
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
    base.sort();
    print_row("baseline (minimal responder)", &base);
    Ok(())
}

/// Starts the baseline responder on a loopback port; its thread ends with the process.
fn baseline() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 1024];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    Ok(addr)
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
