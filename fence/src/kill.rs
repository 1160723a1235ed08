//! Killing a Postgres instance at once: every process whose working directory is its data
//! directory (postmaster children call setsid(), so a process-group kill would miss them, and
//! a backend outliving its postmaster can still answer a client).
//!
//! Order: freeze the postmaster (no new backends), kill every other process of the instance,
//! kill the postmaster, look once more. All by PID.

use std::path::{Path, PathBuf};

use rustix::process::{Pid, Signal, kill_process};

fn pid_of(raw: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(raw).ok()?)
}

/// PIDs of processes whose current directory is `data` (other users' processes are unreadable
/// and skipped).
pub fn instance_pids(data: &Path) -> Vec<u32> {
    let target = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return out };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        if let Ok(cwd) = std::fs::read_link(e.path().join("cwd"))
            && cwd == target
        {
            out.push(pid);
        }
    }
    out
}

/// The postmaster PID recorded in `data/postmaster.pid`, if that process is alive.
pub fn recorded_postmaster(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    let alive = Path::new(&format!("/proc/{pid}")).exists();
    alive.then_some(pid)
}

/// Kills the instance running in `data`; returns how many processes were signalled.
pub fn kill_instance(data: &Path, postmaster: Option<u32>) -> usize {
    let postmaster = postmaster.or_else(|| recorded_postmaster(data));
    if let Some(pm) = postmaster.and_then(pid_of) {
        let _ = kill_process(pm, Signal::STOP);
    }
    let mut n = 0;
    for _ in 0..2 {
        for pid in instance_pids(data) {
            if Some(pid) != postmaster
                && let Some(p) = pid_of(pid)
                && kill_process(p, Signal::KILL).is_ok()
            {
                n += 1;
            }
        }
        if let Some(pm) = postmaster.and_then(pid_of)
            && kill_process(pm, Signal::KILL).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// The canonical form of a data directory path, for comparing with /proc/<pid>/cwd.
pub fn canonical(data: &Path) -> PathBuf {
    std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf())
}
