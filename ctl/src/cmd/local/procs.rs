//! Finding and signalling the processes of a local cluster by PID: agents by the PID recorded
//! in local.json (checked against their command line, so a reused PID is never signalled), or
//! by that command line (`pgquorum-agent` and the member's configuration file) when none is,
//! Postgres by `postmaster.pid`, and anything else whose working directory is a member's data
//! directory or that guards it (fence guards), by scanning /proc.
//!
//! Never signals a process by name.

use std::path::Path;

use rustix::process::{Pid, Signal, kill_process};

pub use pgquorum_chaos::procs::{alive, cmdline};

/// Whether `pid` is alive and is the agent started with configuration file `config`.
pub fn is_agent(pid: u32, config: &Path) -> bool {
    alive(pid)
        && cmdline(pid)
            .is_some_and(|c| c.contains("pgquorum-agent") && c.contains(&config.display().to_string()))
}

/// The live agent of the member with configuration file `config`: the PID recorded in
/// local.json while it is still that agent, else one found by its command line in /proc (an
/// agent whose `local up` was interrupted before it recorded the PID).
pub fn agent_of(recorded: Option<u32>, config: &Path) -> Option<u32> {
    recorded.filter(|p| is_agent(*p, config)).or_else(|| {
        let me = std::process::id();
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|&pid| pid != me && is_agent(pid, config))
    })
}

/// The live postmaster of `pgdata`, from `postmaster.pid`.
pub fn postmaster(pgdata: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    (alive(pid) && cmdline(pid).is_some_and(|c| c.contains("postgres"))).then_some(pid)
}

/// Live processes whose working directory is `pgdata` (Postgres and its children) or whose
/// command line is a fence guard for it.
pub fn in_pgdata(pgdata: &Path) -> Vec<u32> {
    pgquorum_chaos::procs::scan(pgdata, true)
}

/// Live Postgres processes of `pgdata` (working directory `pgdata`), fence guards excluded.
pub fn postgres_in(pgdata: &Path) -> Vec<u32> {
    pgquorum_chaos::procs::scan(pgdata, false)
}

/// Sends `sig` to `pid`; false when there was no such process.
pub fn signal(pid: u32, sig: Signal) -> bool {
    match i32::try_from(pid).ok().and_then(Pid::from_raw) {
        Some(p) => kill_process(p, sig).is_ok(),
        None => false,
    }
}

/// kill -9 of `pid`.
pub fn kill9(pid: u32) -> bool {
    signal(pid, Signal::KILL)
}

/// SIGTERM to `pid`.
pub fn term(pid: u32) -> bool {
    signal(pid, Signal::TERM)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        assert!(super::alive(std::process::id()));
        assert!(!super::alive(u32::MAX - 1));
        assert!(super::cmdline(std::process::id()).is_some());
    }
}
