//! `pgbench` as a background load on whichever member is primary: short runs one after the
//! other through a multi-host read-write connection string, so a switchover or a failover
//! only ends the run in progress and the next one finds the new primary. The password goes
//! through the environment, never the command line.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::agent::SUPERUSER_PASSWORD;
use crate::bins::postgres_bin;

/// A libpq connection string (no password) reaching the writable one of `hosts`.
fn conninfo(hosts: &[String]) -> String {
    let (h, p): (Vec<&str>, Vec<&str>) = hosts.iter().filter_map(|a| a.rsplit_once(':')).unzip();
    format!(
        "host={} port={} user=postgres dbname=postgres connect_timeout=2 target_session_attrs=read-write",
        h.join(","),
        p.join(",")
    )
}

fn pgbench(hosts: &[String], args: &[&str]) -> std::process::Output {
    Command::new(postgres_bin("pgbench"))
        .args(args)
        .arg(conninfo(hosts))
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .expect("run pgbench")
}

/// Creates pgbench's tables at `scale` on the primary among `hosts`.
pub fn init(hosts: &[String], scale: u32) {
    let out = pgbench(hosts, &["-i", "-q", "-s", &scale.to_string()]);
    assert!(out.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&out.stderr));
}

/// A running load; `stop` ends it.
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Load {
    /// Starts `clients` pgbench clients in runs of 2 s, for at most `limit`.
    pub fn start(hosts: Vec<String>, clients: u32, limit: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (start, mut done) = (Instant::now(), 0u64);
            let c = clients.to_string();
            while !flag.load(Ordering::SeqCst) && start.elapsed() < limit {
                let out = pgbench(&hosts, &["-n", "-c", &c, "-j", "2", "-T", "2"]);
                let text = String::from_utf8_lossy(&out.stdout);
                done += text
                    .lines()
                    .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
                    .and_then(|n| n.split('/').next()?.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                if !out.status.success() {
                    // No primary right now (a failover): try again shortly.
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            done
        });
        Load { stop, thread: Some(thread) }
    }

    /// Stops the load; returns the transactions pgbench reported as processed.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().map(|t| t.join().expect("pgbench thread")).unwrap_or(0)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
