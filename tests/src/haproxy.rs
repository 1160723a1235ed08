//! A real HAProxy (Debian's `haproxy`) in front of the cluster's Postgres, configured the way
//! Patroni's documentation does it: TCP mode, `option httpchk GET /primary`, `http-check expect
//! status 200`, each server a member's Postgres checked on that member's HTTP port.
//!
//! Listens on 127.0.0.1 only; started by the test, stopped by PID when dropped. The routing
//! helpers (`routed`, `wait_routes_to_primary`) serve failover and switchover tests alike.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bins::free_port;
use crate::cluster::Cluster;
use crate::pg::{Pg, conninfo};
use crate::wait::wait_for;

/// The HAProxy binary Debian installs.
pub const HAPROXY: &str = "/usr/sbin/haproxy";

/// A running HAProxy.
pub struct Haproxy {
    /// Where clients connect (127.0.0.1:port).
    pub addr: String,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    child: Option<Child>,
}

/// Where a new connection through HAProxy landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    /// The member whose Postgres answered.
    pub member: String,
    /// Whether that Postgres is in recovery (a replica).
    pub in_recovery: bool,
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// The configuration: one TCP listener whose servers are `(name, postgres, http)`, a server
/// being up while `GET <check>` on its HTTP port answers 200.
pub fn config(bind: &str, check: &str, servers: &[(String, String, String)]) -> String {
    let mut cfg = format!(
        "global\n    maxconn 200\n\ndefaults\n    mode tcp\n    retries 2\n    timeout connect 1s\n    \
         timeout client 30m\n    timeout server 30m\n    timeout check 1s\n\nlisten postgres\n    bind {bind}\n    \
         option httpchk GET {check}\n    http-check expect status 200\n    \
         default-server inter 200ms fastinter 100ms downinter 200ms fall 2 rise 1 on-marked-down shutdown-sessions\n"
    );
    for (name, pg, http) in servers {
        let port = port_of(http).expect("http address has a port");
        cfg.push_str(&format!("    server {name} {pg} maxconn 100 check port {port}\n"));
    }
    cfg
}

impl Haproxy {
    /// Starts HAProxy in the foreground with `cfg` (written into `dir`); waits until it listens.
    pub fn start(dir: &Path, addr: String, cfg: &str) -> Haproxy {
        assert!(
            Path::new(HAPROXY).exists(),
            "{HAPROXY} not found: install Debian's haproxy package (.ci/run does)"
        );
        let config = dir.join("haproxy.cfg");
        std::fs::write(&config, cfg).expect("write haproxy.cfg");
        let check = Command::new(HAPROXY).arg("-c").arg("-f").arg(&config).output().expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy rejects its configuration:\n{cfg}\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = dir.join("haproxy.log");
        let out = File::create(&log).expect("haproxy log");
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .expect("spawn haproxy");
        let h = Haproxy { addr, config, log, child: Some(child) };
        wait_for("haproxy listening", Duration::from_secs(10), || {
            Ok(std::net::TcpStream::connect(&h.addr).is_ok().then_some(()))
        });
        h
    }

    /// HAProxy routing to the cluster's primary, Patroni-style, on a free loopback port.
    pub fn primary_router(c: &Cluster) -> Haproxy {
        let servers: Vec<(String, String, String)> = c
            .agents
            .iter()
            .map(|a| {
                let pg = a.postgres.clone().expect("members with Postgres");
                (a.name.clone(), pg, a.http.clone().expect("members with HTTP"))
            })
            .collect();
        let addr = format!("127.0.0.1:{}", free_port());
        Haproxy::start(c.dir.path(), addr.clone(), &config(&addr, "/primary", &servers))
    }

    /// Connects through HAProxy and asks the Postgres that answers who it is.
    pub fn routed(&self, c: &Cluster) -> Result<Routed, String> {
        let pg = Pg::connect(&conninfo(std::slice::from_ref(&self.addr), false))?;
        let row = pg.query("SELECT inet_server_port(), pg_is_in_recovery()")?.into_iter().next();
        let row = row.ok_or("no row")?;
        let port: u16 = row[0].as_deref().and_then(|p| p.parse().ok()).ok_or("no server port")?;
        let member = c
            .agents
            .iter()
            .find(|a| a.postgres.as_deref().and_then(port_of) == Some(port))
            .map(|a| a.name.clone())
            .ok_or_else(|| format!("port {port} is no member's"))?;
        Ok(Routed { member, in_recovery: row[1].as_deref() == Some("t") })
    }

    /// Waits until a new connection through HAProxy reaches the cluster's writable primary;
    /// returns its name. After a failover or a switchover, this is the moment clients of the
    /// load balancer are served again.
    pub fn wait_routes_to_primary(&self, c: &mut Cluster, timeout: Duration) -> String {
        let start = Instant::now();
        let primary = c.wait_for_primary(timeout);
        let left = timeout.saturating_sub(start.elapsed());
        wait_for(&format!("haproxy routing to the primary {primary}"), left, || {
            let r = self.routed(c)?;
            if r.member == primary && !r.in_recovery {
                Ok(Some(primary.clone()))
            } else {
                Err(format!("routed to {r:?}"))
            }
        })
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops HAProxy by its PID (SIGTERM, then SIGKILL after 2 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        crate::procs::stop_child(&mut child, Duration::from_secs(2));
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
    }
}
