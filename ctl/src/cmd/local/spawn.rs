//! Starting one member's agent detached: in a new session (util-linux `setsid`, which execs in
//! place, so the PID we get is the agent's), with stdin closed and output appended to its log,
//! as the invoking user or, as root, as the `postgres` user through `setpriv` (which also
//! execs in place). The agent's environment loses every `PGQUORUM_*` variable so only its
//! configuration file decides its settings.
//!
//! Owns the command line of an agent; must not decide which members to start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::prereq::{self, RunAs};
use super::setup;
use super::state::MemberState;
use crate::Failure;

/// How agents are started for one cluster.
pub struct Launcher {
    /// The agent binary (reachable by `run_as`).
    pub agent: PathBuf,
    /// The user agents run as (`None`: the invoking user).
    pub run_as: Option<RunAs>,
    /// The cluster directory (the agents' working directory).
    pub dir: PathBuf,
    setsid: PathBuf,
    setpriv: Option<PathBuf>,
}

impl Launcher {
    /// Checks the tools it needs and prepares the agent binary for `run_as`.
    pub fn new(
        agent: &Path,
        run_as: Option<RunAs>,
        layout: &super::state::Layout,
    ) -> Result<Launcher, Failure> {
        let setsid = prereq::tool("setsid")?;
        let setpriv = run_as.as_ref().map(|_| prereq::tool("setpriv")).transpose()?;
        let agent = setup::agent_for(agent, layout, run_as.as_ref())?;
        Ok(Launcher { agent, run_as, dir: layout.dir.clone(), setsid, setpriv })
    }

    /// Starts `m`'s agent; returns the child (its PID is the agent's).
    pub fn start(&self, m: &MemberState) -> Result<Child, Failure> {
        let log = setup::open_log(&m.log, self.run_as.as_ref())?;
        let err_log =
            log.try_clone().map_err(|e| Failure::failed(format!("log {}: {e}", m.log.display())))?;
        let mut cmd = Command::new(&self.setsid);
        if let Some(ns) = &m.netns {
            // `ip netns exec` execs in place too: the PID stays the agent's.
            cmd.args(["ip", "netns", "exec", ns]);
        }
        if let (Some(user), Some(setpriv)) = (&self.run_as, &self.setpriv) {
            cmd.arg(setpriv).args(["--reuid", &user.name, "--regid", &user.name, "--init-groups", "--"]);
        }
        cmd.arg(&self.agent).arg("--config").arg(&m.config).arg("run");
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("PGQUORUM_")) {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(&self.dir).stdin(Stdio::null()).stdout(log).stderr(err_log);
        cmd.spawn().map_err(|e| {
            Failure::failed(format!("cannot start the agent of {} ({}): {e}", m.name, self.agent.display()))
        })
    }
}

/// The last `n` lines of a log, indented, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// What an agent's exit code means (see the agent's main.rs).
pub fn exit_meaning(code: Option<i32>) -> &'static str {
    match code {
        Some(64) => "bad configuration",
        Some(65) => "data directory unusable, or run as root",
        Some(77) => "permission denied",
        Some(0) => "stopped",
        Some(_) => "failed",
        None => "killed by a signal",
    }
}
