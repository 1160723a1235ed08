//! A real HAProxy (Debian's `haproxy`) in front of the cluster's Postgres, with the configuration
//! we ship (`deploy/haproxy/haproxy.cfg`: TCP mode, `option httpchk GET /primary` and
//! `GET /replica`, each server a member's Postgres checked on that member's HTTP port), pointed
//! at the cluster's members.
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
    /// Where clients of the primary connect (127.0.0.1:port).
    pub addr: String,
    /// Where clients of the replicas connect, when the configuration has that listener.
    pub replicas: String,
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

/// The configuration shipped in `deploy/haproxy/haproxy.cfg`, pointed at `servers`
/// (`(name, postgres, http)`): its primary listener on `primary`, its replicas listener on
/// `replicas`. With `checks`, that replaces the shipped `default-server` line (to compare other
/// check timings on the same cluster).
pub fn shipped_config(
    primary: &str,
    replicas: &str,
    servers: &[(String, String, String)],
    checks: Option<&str>,
) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy/haproxy.cfg");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("server ") {
            continue;
        }
        if t == "bind *:5000" || t == "bind *:5001" {
            let bind = if t.ends_with("5000") { primary } else { replicas };
            out.push_str(&format!("    bind {bind}\n"));
            continue;
        }
        if let (Some(c), true) = (checks, t.starts_with("default-server ")) {
            out.push_str(&format!("    default-server {c}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
        if t.starts_with("default-server ") {
            for (name, pg, http) in servers {
                let port = port_of(http).expect("http address has a port");
                out.push_str(&format!("    server {name} {pg} maxconn 100 check port {port}\n"));
            }
        }
    }
    assert!(
        out.contains(&format!("bind {primary}")) && out.contains(&format!("bind {replicas}")),
        "{} no longer has `bind *:5000` and `bind *:5001` listeners",
        path.display()
    );
    out
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
        let h = Haproxy { addr, replicas: String::new(), config, log, child: Some(child) };
        wait_for("haproxy listening", Duration::from_secs(10), || {
            Ok(std::net::TcpStream::connect(&h.addr).is_ok().then_some(()))
        });
        h
    }

    /// HAProxy with the shipped configuration in front of the cluster, on free loopback ports:
    /// `addr` routes to the primary, `replicas` to the replicas. `checks` replaces the shipped
    /// check timings; `tag` names its files (several may serve one cluster).
    pub fn shipped(c: &Cluster, checks: Option<&str>, tag: &str) -> Haproxy {
        let servers: Vec<(String, String, String)> = c
            .agents
            .iter()
            .map(|a| {
                let pg = a.postgres.clone().expect("members with Postgres");
                (a.name.clone(), pg, a.http.clone().expect("members with HTTP"))
            })
            .collect();
        let addr = format!("127.0.0.1:{}", free_port());
        let replicas = loop {
            let r = format!("127.0.0.1:{}", free_port());
            if r != addr {
                break r;
            }
        };
        let dir = c.dir.path().join(format!("haproxy-{tag}"));
        std::fs::create_dir_all(&dir).expect("haproxy directory");
        let mut h = Haproxy::start(&dir, addr.clone(), &shipped_config(&addr, &replicas, &servers, checks));
        h.replicas = replicas;
        h
    }

    /// Connects through HAProxy's primary listener and asks the Postgres that answers who it is.
    pub fn routed(&self, c: &Cluster) -> Result<Routed, String> {
        Haproxy::routed_via(c, &self.addr)
    }

    /// The same through the replicas listener.
    pub fn routed_replica(&self, c: &Cluster) -> Result<Routed, String> {
        Haproxy::routed_via(c, &self.replicas)
    }

    fn routed_via(c: &Cluster, addr: &str) -> Result<Routed, String> {
        let pg = Pg::connect(&conninfo(&[addr.to_string()], false))?;
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
