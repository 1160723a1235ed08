//! Finding processes by what they are (by scanning /proc), so a test or a chaos run can signal
//! exactly the processes it means, by PID: Postgres instances by their data directory, fence
//! guards by their argument. Never by name.

use std::path::Path;

use rustix::process::{Pid, Signal, kill_process};

/// Whether `pid` is a live process (a zombie counts as dead: it only waits to be reaped).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z') | Some('X'))
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " ").trim_end().to_string())
}

/// Live processes whose current directory is `dir` (Postgres and its children, for a data
/// directory) and, when `guards`, those whose command line is a fence guard for it.
pub fn scan(dir: &Path, guards: bool) -> Vec<u32> {
    let target = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let needle = target.display().to_string();
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return out };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me || !alive(pid) {
            continue;
        }
        let cwd = std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c == target);
        let guard =
            || guards && cmdline(pid).is_some_and(|c| c.contains("fence-guard") && c.contains(&needle));
        if cwd || guard() {
            out.push(pid);
        }
    }
    out
}

/// Live PIDs whose current directory is `dir` or whose command line is a fence guard for it.
pub fn pids_of(dir: &Path) -> Vec<u32> {
    scan(dir, true)
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: Signal) {
    if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(p, sig);
    }
}

/// kill -9 of everything `pids_of(dir)` finds, twice (a postmaster may fork meanwhile).
pub fn kill_all_in(dir: &Path) {
    for _ in 0..2 {
        for pid in pids_of(dir) {
            signal(pid, Signal::KILL);
        }
    }
}

/// Ends the Postgres instance in `data` and its fence guard without leaving shared memory
/// behind. A postmaster killed with kill -9 leaves its System V segment and its
/// /dev/shm/PostgreSQL.* segments until a Postgres starts again in the same directory; a test
/// that then deletes the directory leaks them, and after 4096 such leaks (kernel.shmmni) no
/// Postgres on the machine can start. So: the guards are killed first (none fires meanwhile),
/// the postmaster gets an immediate shutdown (SIGQUIT: it removes its segments as it exits),
/// whatever is still alive after 5 s is killed, and the segments of a postmaster that died
/// by kill -9 earlier are released ([`release_leftover_ipc`]).
pub fn stop_instance(data: &Path) {
    let instance = scan(data, false);
    for pid in scan(data, true).into_iter().filter(|p| !instance.contains(p)) {
        signal(pid, Signal::KILL); // a fence guard
    }
    for &pid in &instance {
        signal(pid, Signal::CONT); // a test may have frozen it
    }
    let mapped = mapped_postgres_shm(&instance);
    if let Some(pm) = postmaster_pid(data).filter(|pm| instance.contains(pm)) {
        signal(pm, Signal::QUIT);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive(pm) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    kill_all_in(data);
    release_leftover_ipc(data);
    for f in mapped {
        let _ = std::fs::remove_file(f);
    }
}

/// The /dev/shm/PostgreSQL.* files that `pids` map (Postgres's dynamic shared memory).
pub fn mapped_postgres_shm(pids: &[u32]) -> Vec<String> {
    let mut out: Vec<String> = pids
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/maps")).ok())
        .flat_map(|maps| {
            maps.lines()
                .filter_map(|l| l.split_whitespace().nth(5).map(str::to_string))
                .filter(|f| f.starts_with("/dev/shm/PostgreSQL."))
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The System V segment named in `data/postmaster.pid` (its seventh line): its key (written as
/// an unsigned long, listed by the kernel as a signed int) and its id.
pub fn postmaster_segment(data: &Path) -> Option<(i32, String)> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let mut it = text.lines().nth(6)?.split_whitespace();
    let key = it.next()?.parse::<u64>().ok()? as u32 as i32;
    Some((key, it.next()?.to_string()))
}

/// Removes the System V segment named in `data/postmaster.pid` when no process is attached to
/// it any more and its key still matches, i.e. when the postmaster that made it is gone without
/// removing it.
pub fn release_leftover_ipc(data: &Path) {
    let Some((key, id)) = postmaster_segment(data) else { return };
    let id = id.as_str();
    let Ok(table) = std::fs::read_to_string("/proc/sysvipc/shm") else { return };
    // Columns: key shmid perms size cpid lpid nattch ...
    let orphan = table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 6 && f[0].parse::<i32>().ok() == Some(key) && f[1] == id && f[6] == "0"
    });
    if orphan {
        let _ = std::process::Command::new("ipcrm")
            .args(["-m", id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The postmaster PID from `data/postmaster.pid`, if that process is alive.
pub fn postmaster_pid(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// uid and gid of a local user (from /etc/passwd).
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

/// SIGTERM to a child this harness started, then SIGKILL after `grace`; reaps it.
pub fn stop_child(child: &mut std::process::Child, grace: std::time::Duration) {
    signal(child.id(), Signal::TERM);
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    signal(child.id(), Signal::KILL);
    let _ = child.wait();
}
