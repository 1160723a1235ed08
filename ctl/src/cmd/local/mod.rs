//! `pgquorumctl local up | status | down | kill | start`: a whole cluster on this machine, for
//! trying pgquorum out and for drills. Everything lives under one directory (default
//! ./pgquorum-local): configurations, data, logs, passwords, the cluster's token and the record
//! `local.json`.
//! No S3, no Kubernetes; loopback addresses only.
//!
//! One file per subcommand; the helpers are `state` (the record and port layout), `prereq`
//! (checks), `setup` (files), `spawn` (starting agents), `procs` (finding and signalling
//! processes by PID) and `health` (waiting for a healthy cluster).

mod down;
pub(crate) mod health;
mod kill;
pub(crate) mod prereq;
pub(crate) mod procs;
mod setup;
pub(crate) mod spawn;
mod start;
pub(crate) mod state;
mod status;
mod up;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Failure, Output};
use state::{LocalState, shell_quote};

/// Default directory of the local cluster.
pub const DEFAULT_DIR: &str = "./pgquorum-local";

/// Subcommands of `local`.
#[derive(clap::Subcommand)]
pub enum Args {
    /// Start a cluster on this machine (or restart a stopped one) and wait until it is healthy.
    Up(up::Args),
    /// Show each member: role, PIDs, ports, paths, whether it runs.
    Status(status::Args),
    /// Stop every agent and Postgres of the cluster (the data stays).
    Down(down::Args),
    /// kill -9 one member's agent and Postgres (a crash drill).
    Kill(kill::Args),
    /// Start one member's agent again with its configuration.
    Start(start::Args),
}

/// The directory argument every `local` subcommand takes.
#[derive(clap::Args, Clone)]
pub struct DirArg {
    /// Directory holding the local cluster.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
}

impl DirArg {
    /// The directory as an absolute path (symbolic links resolved when it exists).
    pub fn absolute(&self) -> Result<PathBuf, Failure> {
        if let Ok(p) = std::fs::canonicalize(&self.dir) {
            return Ok(p);
        }
        std::path::absolute(&self.dir)
            .map_err(|e| Failure::usage(format!("--dir {}: {e}", self.dir.display())))
    }

    /// The existing cluster's record, or a failure saying how to create one.
    pub fn load(&self) -> Result<LocalState, Failure> {
        LocalState::require(&self.absolute()?)
    }
}

/// Parses a timeout: seconds (`90`) or a duration (`2m`, `90s`).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, ""), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 120, 90s or 2m"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?}; use s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Runs `local`.
pub async fn run(output: Output, args: Args) -> Result<(), Failure> {
    match args {
        Args::Up(a) => up::run(output, a).await,
        Args::Status(a) => status::run(output, a).await,
        Args::Down(a) => down::run(output, a).await,
        Args::Kill(a) => kill::run(output, a),
        Args::Start(a) => start::run(output, a).await,
    }
}

/// The launcher for an existing cluster, refusing when this user cannot start its agents the
/// way they were started before.
pub(crate) fn launcher_for(st: &LocalState, agent: &Path) -> Result<spawn::Launcher, Failure> {
    let run_as = prereq::run_as()?;
    let now = run_as.as_ref().map(|u| u.name.clone());
    if now != st.run_as {
        let who = st.run_as.as_deref().unwrap_or("the user who created it");
        return Err(Failure::failed(format!(
            "the agents of the cluster in {} run as {who}; run pgquorumctl {}",
            st.dir.display(),
            if st.run_as.is_some() { "as root" } else { "as that user, not as root" }
        )));
    }
    if run_as.is_none() {
        let owner = std::fs::metadata(&st.dir).map(|m| m.uid()).unwrap_or(0);
        if owner != rustix::process::geteuid().as_raw() {
            return Err(Failure::failed(format!(
                "{} belongs to uid {owner}; run pgquorumctl as that user",
                st.dir.display()
            )));
        }
    }
    let layout = state::Layout { dir: st.dir.clone() };
    spawn::Launcher::new(agent, run_as, &layout)
}

/// How to connect, printed after `up`.
fn connect_text(st: &LocalState) -> String {
    let dir = shell_quote(&st.dir.display().to_string());
    let token = match &st.token_file {
        // Changes (switchover, pause, config set) need the token; reading does not.
        Some(t) => format!("  export PGQUORUM_TOKEN_FILE={}\n", shell_quote(&t.display().to_string())),
        None => String::new(),
    };
    format!(
        "Connect with psql (libpq tries every member and keeps the primary):\n  {}\n\n\
         Manage the cluster:\n  export PGQUORUM_ENDPOINT={}\n{token}  pgquorumctl status\n  \
         pgquorumctl local status --dir {dir}\n  pgquorumctl local down --dir {dir}\n",
        st.psql_command(),
        st.endpoint()
    )
}

/// The JSON every `up` prints with `--output json`.
fn connect_json(
    st: &LocalState,
    primary: Option<&str>,
    already_running: bool,
    secs: f64,
) -> serde_json::Value {
    serde_json::json!({
        "dir": st.dir,
        "cluster": st.cluster,
        "primary": primary,
        "members": st.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        "already_running": already_running,
        "seconds": (secs * 10.0).round() / 10.0,
        "psql": st.psql_command(),
        "endpoint": st.endpoint(),
        "pgpass": st.pgpass,
        "token_file": st.token_file,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn timeouts_read_as_seconds_or_durations() {
        assert_eq!(super::parse_timeout("120"), Ok(Duration::from_secs(120)));
        assert_eq!(super::parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(super::parse_timeout("90s"), Ok(Duration::from_secs(90)));
        assert!(super::parse_timeout("soon").is_err());
        assert!(super::parse_timeout("5d").is_err());
    }
}
