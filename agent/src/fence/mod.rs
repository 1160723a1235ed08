//! Fencing: making sure a primary that lost its lease stops acknowledging writes before its
//! deadline, even if the agent hangs or dies.
//!
//! The agent fences itself `fence_lead` before the deadline; the guard process (a child: the
//! small `pgquorum-fence-guard` executable next to the agent's, else this same binary) kills
//! Postgres at half that lead before the deadline as a backstop. Both use
//! `kill::kill_instance` (crate `pgquorum-fence`).

pub use pgquorum_fence::{guard, kill};

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;

/// The guard executable's file name, looked for next to the agent's binary.
pub const GUARD_BINARY: &str = "pgquorum-fence-guard";

/// The agent's handle on its guard process.
pub struct Guard {
    child: Child,
    stdin: ChildStdin,
    armed: Option<(u32, Instant)>,
}

impl Guard {
    /// Starts the guard for the instance in `data`: `pgquorum-fence-guard` from the agent's own
    /// directory (a few hundred kB resident), else the agent binary itself (several MB).
    pub fn spawn(data: &Path) -> std::io::Result<Guard> {
        let exe = std::env::current_exe()?;
        let small = exe.with_file_name(GUARD_BINARY);
        let mut cmd = if small.is_file() {
            Command::new(small)
        } else {
            tracing::info!(
                "{GUARD_BINARY} is not next to {}: the agent binary runs the fence guard",
                exe.display()
            );
            let mut c = Command::new(exe);
            c.arg("fence-guard");
            c
        };
        let mut child = cmd
            .arg("--data")
            .arg(kill::canonical(data))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(false)
            .spawn()?;
        let stdin = child.stdin.take().expect("stdin was piped");
        Ok(Guard { child, stdin, armed: None })
    }

    /// Arms (or re-arms) the guard to kill the instance with postmaster `pid` at `fire_at`.
    pub async fn arm(&mut self, pid: u32, fire_at: Instant) -> std::io::Result<()> {
        if self.armed == Some((pid, fire_at)) {
            return Ok(());
        }
        // Convert to CLOCK_MONOTONIC: read it first, so the result can only be early, not late.
        let mono = guard::monotonic_ns();
        let left = fire_at.saturating_duration_since(Instant::now());
        let at = mono + u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
        self.stdin.write_all(format!("arm {pid} {at}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        self.armed = Some((pid, fire_at));
        Ok(())
    }

    /// Disarms the guard.
    pub async fn disarm(&mut self) -> std::io::Result<()> {
        if self.armed.is_none() {
            return Ok(());
        }
        self.stdin.write_all(b"disarm\n").await?;
        self.stdin.flush().await?;
        self.armed = None;
        Ok(())
    }

    /// Whether the guard process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Disarms and stops the guard (clean agent shutdown).
    pub async fn shutdown(mut self) {
        let _ = self.disarm().await;
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
    }
}
