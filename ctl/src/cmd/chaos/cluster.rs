//! The cluster under test: a fresh local cluster `chaos run` starts itself (through `pgquorumctl
//! local up` in a new directory, with free ports) or an existing one (`--dir`), and the effects
//! faults need on it: reading the status, signalling members' agents and Postgres by PID,
//! starting agents again, waiting for convergence, and stopping what the run started.
//!
//! Run as root, a fresh cluster's members live in network namespaces (pgquorum_chaos::lab), so
//! partitions are real; otherwise, and with `--dir`, on loopback, where partitions cannot be made.

use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use pgquorum_chaos::lab::Lab;
use pgquorum_chaos::workload;
use pgquorum_proto::management::StatusReply;
use rustix::process::Signal;

use crate::Failure;
use crate::cmd::local::health::{Clients, Health, assess};
use crate::cmd::local::state::LocalState;
use crate::cmd::local::{launcher_for, prereq, procs};

/// A local cluster and what the run started in it.
pub struct Under {
    /// Its record (reloaded after changes).
    pub st: LocalState,
    /// The directory to remove at the end, when the run created the cluster.
    owned: Option<PathBuf>,
    clients: Clients,
    /// Agents this run started (reaped at the end).
    children: Vec<Child>,
    /// The members' network namespaces, when they have them (removed last).
    lab: Option<Lab>,
}

/// Who holds which role right now.
#[derive(Clone, Debug, Default)]
pub struct Roles {
    /// The primary's name, if any.
    pub primary: Option<String>,
    /// The Raft leader's name, if any.
    pub leader: Option<String>,
}

fn free_base() -> Result<u16, Failure> {
    let start = 20000 + (std::process::id() % 200) as u16 * 100;
    (0..100u16)
        .map(|i| 20000 + (start - 20000 + i * 300) % 40000)
        .find(|b| (0..300).all(|o| std::net::TcpListener::bind(("127.0.0.1", b + o)).is_ok()))
        .ok_or_else(|| Failure::failed("no free range of 300 loopback ports for the cluster under test"))
}

/// Runs this binary with `args` (a `local` subcommand), its output captured; fails with it.
async fn ctl(args: &[String]) -> Result<String, Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::failed(format!("finding pgquorumctl: {e}")))?;
    let out = tokio::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Failure::failed(format!("running pgquorumctl {}: {e}", args.join(" "))))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Failure::failed(format!(
            "pgquorumctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Under {
    /// Starts a fresh cluster of `members` in a new directory under the system's temporary
    /// directory.
    pub async fn fresh(members: usize, durability: &str) -> Result<Under, Failure> {
        let dir = std::env::temp_dir().join(format!("pgquorum-chaos-{}", std::process::id()));
        let base = free_base()?;
        let mut args: Vec<String> = [
            "local",
            "up",
            "--dir",
            &dir.display().to_string(),
            "--members",
            &members.to_string(),
            "--base-port",
            &base.to_string(),
            "--durability",
            durability,
            "--timeout",
            "240s",
        ]
        .map(String::from)
        .to_vec();
        let lab = match crate::cmd::local::prereq::is_root().then(|| Lab::create(members)) {
            Some(Ok(lab)) => Some(lab),
            Some(Err(e)) => {
                eprintln!("chaos: no network namespaces ({e}): running on loopback, without partitions");
                None
            }
            None => None,
        };
        if let Some(lab) = &lab {
            let specs: Vec<String> = (0..members).map(|i| format!("{}={}", lab.ns(i), lab.ip(i))).collect();
            args.extend(["--netns".to_string(), specs.join(",")]);
        }
        let up = ctl(&args).await;
        let st = LocalState::load(&dir)?;
        let Some(st) = st else {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(up.err().unwrap_or_else(|| Failure::failed("local up left no record")));
        };
        let under = Under { clients: Clients::new(&st), st, owned: Some(dir), children: Vec::new(), lab };
        if let Err(e) = up {
            under.finish(true).await;
            return Err(e);
        }
        Ok(under)
    }

    /// An existing cluster (`local up --dir DIR`), left running at the end.
    pub fn reuse(st: LocalState) -> Under {
        Under { clients: Clients::new(&st), st, owned: None, children: Vec::new(), lab: None }
    }

    /// Whether members can be cut off from each other (they live in network namespaces).
    pub fn has_network(&self) -> bool {
        self.lab.is_some()
    }

    /// Cuts member `name` off from the other members; this machine still reaches it.
    pub fn isolate(&self, name: &str) -> Result<(), Failure> {
        let lab = self.lab.as_ref().ok_or_else(|| Failure::failed("partitions need network namespaces"))?;
        lab.isolate_from_peers(&[self.index(name)])
            .map_err(|e| Failure::failed(format!("partitioning {name}: {e}")))
    }

    /// Makes member `name`'s link slow both ways (delay, and loss past the queue).
    pub fn slow_link(&self, name: &str) -> Result<(), Failure> {
        let lab = self.lab.as_ref().ok_or_else(|| Failure::failed("a slow link needs network namespaces"))?;
        lab.slow_link(self.index(name), 16, 300)
            .map_err(|e| Failure::failed(format!("slowing {name}'s link: {e}")))
    }

    /// Reconnects every member.
    pub fn heal(&self) {
        if let Some(lab) = &self.lab {
            lab.heal();
        }
    }

    /// Names of every member.
    pub fn names(&self) -> Vec<String> {
        self.st.members.iter().map(|m| m.name.clone()).collect()
    }

    /// What the workload needs to connect: every member's Postgres and the superuser's password
    /// from the cluster's password file.
    pub fn workload_target(&self) -> Result<workload::Target, Failure> {
        let text = std::fs::read_to_string(&self.st.pgpass)
            .map_err(|e| Failure::failed(format!("reading {}: {e}", self.st.pgpass.display())))?;
        let password =
            text.lines().find_map(|l| l.split_once(":*:*:postgres:").map(|(_, pw)| pw)).ok_or_else(|| {
                Failure::failed(format!("{} has no password for postgres", self.st.pgpass.display()))
            })?;
        Ok(workload::Target {
            hosts: self.st.members.iter().map(|m| (m.host.clone(), m.ports.postgres)).collect(),
            user: "postgres".into(),
            password: password.trim().to_string(),
            writers: 1,
            write_interval: Duration::from_millis(20),
            readers: 1,
            read_interval: Duration::from_millis(250),
        })
    }

    /// The leader's view of the cluster, from the first member that has it.
    pub async fn status(&mut self) -> Option<StatusReply> {
        self.clients.status(&self.names()).await.ok()
    }

    /// Current primary and Raft leader.
    pub async fn roles(&mut self) -> Roles {
        let r = self.status().await.unwrap_or_default();
        let name = |s: String| (!s.is_empty()).then_some(s);
        Roles {
            primary: r.ha.and_then(|h| name(h.primary)),
            leader: r.raft.and_then(|r| name(r.leader_name)),
        }
    }

    /// Waits until a primary and every member streaming; the time it was seen, or `None` after
    /// `timeout`.
    pub async fn wait_converged(&mut self, timeout: Duration) -> Option<f64> {
        let deadline = tokio::time::Instant::now() + timeout;
        let names = self.names();
        while tokio::time::Instant::now() < deadline {
            if let Ok(r) = self.clients.status(&names).await
                && matches!(assess(&r, &names), Health::Healthy { .. })
            {
                return Some(workload::now());
            }
            self.reap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    fn index(&self, name: &str) -> usize {
        self.st.members.iter().position(|m| m.name == name).expect("member names come from the record")
    }

    /// The member's live agent PID.
    pub fn agent_pid(&self, name: &str) -> Option<u32> {
        let m = &self.st.members[self.index(name)];
        m.agent_pid.filter(|p| procs::is_agent(*p, &m.config))
    }

    /// The member's postmaster PID.
    pub fn postmaster(&self, name: &str) -> Option<u32> {
        procs::postmaster(&self.st.members[self.index(name)].pgdata)
    }

    /// Every live Postgres process of the member (postmaster and children).
    pub fn postgres_pids(&self, name: &str) -> Vec<u32> {
        procs::postgres_in(&self.st.members[self.index(name)].pgdata)
    }

    /// Sends `sig` to each of `pids`.
    pub fn signal(pids: &[u32], sig: Signal) {
        for p in pids {
            procs::signal(*p, sig);
        }
    }

    /// kill -9 of the member's agent, its Postgres too when `postgres`; waits (bounded) until
    /// they are gone.
    pub async fn kill(&mut self, name: &str, agent: bool, postgres: bool) {
        let pm = if postgres { self.postmaster(name) } else { None };
        let ag = if agent { self.agent_pid(name) } else { None };
        Under::signal(&ag.into_iter().chain(pm).collect::<Vec<_>>(), Signal::KILL);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline
            && (ag.is_some_and(procs::alive)
                || pm.is_some_and(procs::alive)
                || (postgres && !self.postgres_pids(name).is_empty()))
        {
            self.reap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if agent {
            let i = self.index(name);
            self.st.members[i].agent_pid = None;
        }
    }

    /// Starts the member's agent again (a no-op when it runs). A Postgres it left running is
    /// the agent's to adopt or stop, so no port check here.
    pub fn start(&mut self, name: &str) -> Result<(), Failure> {
        if self.agent_pid(name).is_some() {
            return Ok(());
        }
        let agent = prereq::find_agent()?;
        let launcher = launcher_for(&self.st, &agent)?;
        let i = self.index(name);
        let child = launcher.start(&self.st.members[i])?;
        self.st.members[i].agent_pid = Some(child.id());
        self.children.push(child);
        self.st.save()
    }

    /// A planned switchover through the management API (as `pgquorumctl switchover`); with
    /// `wait` false it returns once requested.
    pub async fn switchover(&self, wait: bool) -> Result<String, Failure> {
        let mut args: Vec<String> =
            ["--endpoint", &self.st.endpoint(), "--output", "json"].map(String::from).to_vec();
        if let Some(t) = &self.st.token_file {
            args.extend(["--token-file".to_string(), t.display().to_string()]);
        }
        args.extend(["switchover", "--timeout", "60s"].map(String::from));
        if !wait {
            args.push("--no-wait".into());
        }
        ctl(&args).await
    }

    fn reap(&mut self) {
        self.children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
    }

    /// Stops what the run started: the whole cluster when the run created it, and its
    /// directory unless `keep` (a failed run keeps the agents' logs for the post-mortem).
    pub async fn finish(mut self, keep: bool) {
        self.heal();
        let Some(dir) = self.owned.take() else { return };
        let args =
            ["local", "down", "--dir", &dir.display().to_string(), "--timeout", "30s"].map(String::from);
        if let Err(e) = ctl(&args).await {
            eprintln!("warning: stopping the cluster under test: {}", e.message);
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        if keep {
            eprintln!("chaos: the cluster's directory, with the agents' logs, is kept in {}", dir.display());
        } else if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("warning: removing {}: {e}", dir.display());
        }
    }
}
