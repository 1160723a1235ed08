//! Postgres as the agent's child process: start `postgres -D`, notice when it exits, stop it
//! (fast, then immediate, then kill).

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::fence::kill::kill_instance;
use crate::postgres::log::LogTail;

/// A running postmaster started by this agent.
pub struct Postmaster {
    child: Child,
    /// Its PID.
    pub pid: u32,
    /// When it was started.
    pub started: Instant,
    /// Its output from its start on (read when it fails).
    pub output: LogTail,
}

/// Starts `postgres -D data`, appending its output to `log`.
pub fn start(bin: &Path, data: &Path, log: &Path) -> std::io::Result<Postmaster> {
    let output = LogTail::at_end(log);
    let log = OpenOptions::new().create(true).append(true).open(log)?;
    let mut cmd = Command::new(bin.join("postgres"));
    crate::postgres::tools::clean_env(&mut cmd);
    let child = cmd
        .arg("-D")
        .arg(data)
        .env("LC_MESSAGES", "C")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(false)
        .spawn()?;
    let pid = child.id().ok_or_else(|| std::io::Error::other("postgres exited at once"))?;
    Ok(Postmaster { child, pid, started: Instant::now(), output })
}

impl Postmaster {
    /// The exit status if the postmaster has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Resolves when the postmaster exits (cancel-safe; [`Postmaster::exited`] then has the
    /// status).
    pub async fn wait_exit(&mut self) {
        let _ = self.child.wait().await;
    }

    fn signal(&self, sig: Signal) {
        if let Some(p) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) {
            let _ = kill_process(p, sig);
        }
    }

    /// Fast shutdown (SIGINT: checkpoint, disconnect clients), then immediate (SIGQUIT) after
    /// `timeout`, then kill everything left.
    pub async fn stop(mut self, data: &Path, timeout: Duration) {
        self.signal(Signal::INT);
        if tokio::time::timeout(timeout, self.child.wait()).await.is_ok() {
            return;
        }
        self.signal(Signal::QUIT);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_ok() {
            return;
        }
        kill_instance(data, Some(self.pid));
        let _ = self.child.wait().await;
    }

    /// Kills the instance now (fencing) and reaps the postmaster.
    pub async fn kill(mut self, data: &Path) {
        kill_instance(data, Some(self.pid));
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}
