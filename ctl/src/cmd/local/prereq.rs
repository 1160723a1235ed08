//! What `local` needs before it starts anything: the agent binary, Postgres's server binaries,
//! util-linux's `setsid` (and `setpriv` as root), the OS user agents run as, a directory that
//! user can reach, and free ports. Each failure says exactly what is missing and how to fix it.
//!
//! Owns these checks only; must not create files or start processes (except running
//! `pgquorum-agent keys`, which only prints).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::Failure;

/// The OS user the agents run as when `local` runs as root (Postgres refuses root).
pub const RUN_AS: &str = "postgres";

/// An OS user agents run as.
#[derive(Clone, Debug)]
pub struct RunAs {
    /// User name (for `setpriv --reuid`).
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Every group it is in, the primary one included.
    pub groups: Vec<u32>,
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// `pgquorum-agent` next to this executable, else on PATH.
pub fn find_agent() -> Result<PathBuf, Failure> {
    let exe = std::env::current_exe().ok();
    let sibling = exe.as_ref().and_then(|e| e.parent()).map(|d| d.join("pgquorum-agent"));
    if let Some(s) = sibling.as_ref().filter(|s| s.is_file()) {
        return Ok(s.clone());
    }
    if let Some(p) = on_path("pgquorum-agent") {
        return Ok(p);
    }
    let beside = sibling
        .as_ref()
        .and_then(|s| s.parent())
        .map_or_else(|| "this executable".to_string(), |d| d.display().to_string());
    Err(Failure::failed(format!(
        "pgquorum-agent not found: it is neither next to pgquorumctl (in {beside}) nor on PATH. Build it \
         with `cargo build --release` in the pgquorum source tree and run target/release/pgquorumctl, or \
         put pgquorum-agent on PATH"
    )))
}

/// The configuration keys `agent` accepts (first column of `pgquorum-agent keys`).
pub fn agent_keys(agent: &Path) -> Result<Vec<String>, Failure> {
    let out = std::process::Command::new(agent)
        .arg("keys")
        .env_remove("PGQUORUM_CONFIG")
        .output()
        .map_err(|e| Failure::failed(format!("cannot run {} keys: {e}", agent.display())))?;
    if !out.status.success() {
        return Err(Failure::failed(format!(
            "{} keys failed ({}): {}; rebuild it with `cargo build --release`",
            agent.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().filter_map(|l| l.split('\t').next()).map(str::to_string).collect())
}

/// Postgres's server binaries, found exactly where the agent looks (`pgquorum-pgbin`).
pub fn postgres_bin_dir() -> Result<PathBuf, Failure> {
    pgquorum_pgbin::find(None).map_err(|e| Failure::failed(e.to_string()))
}

/// A util-linux tool (`setsid`, `setpriv`) on PATH.
pub fn tool(name: &str) -> Result<PathBuf, Failure> {
    on_path(name).ok_or_else(|| {
        Failure::failed(format!(
            "{name} not found on PATH; it comes with util-linux (Debian: `apt-get install util-linux`)"
        ))
    })
}

/// The user agents run as: `None` (the invoking user) unless root, then `postgres`.
pub fn run_as() -> Result<Option<RunAs>, Failure> {
    if !is_root() {
        return Ok(None);
    }
    let missing = || {
        Failure::failed(format!(
            "running as root: Postgres refuses to run as root, so the agents run as the OS user {RUN_AS}, \
             which does not exist. Create it (installing postgresql-15 on Debian does; or `useradd --system \
             --create-home {RUN_AS}`), or run pgquorumctl as an ordinary user"
        ))
    };
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|_| missing())?;
    let (uid, gid) = passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&RUN_AS)).then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
        })
        .ok_or_else(missing)?;
    let mut groups = vec![gid];
    for l in std::fs::read_to_string("/etc/group").unwrap_or_default().lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.get(3).is_some_and(|m| m.split(',').any(|u| u == RUN_AS))
            && let Some(g) = f.get(2).and_then(|g| g.parse().ok())
        {
            groups.push(g);
        }
    }
    Ok(Some(RunAs { name: RUN_AS.into(), uid, gid, groups }))
}

/// Whether `user` may enter directory `meta` (execute permission by owner, group or other).
pub fn can_enter(meta: &std::fs::Metadata, user: &RunAs) -> bool {
    let mode = meta.mode();
    if meta.uid() == user.uid {
        mode & 0o100 != 0
    } else if user.groups.contains(&meta.gid()) {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Fails naming the first directory on the way to `dir` (which need not exist yet) that `user`
/// cannot enter.
pub fn check_reachable(dir: &Path, user: &RunAs) -> Result<(), Failure> {
    let mut ancestors: Vec<&Path> = dir.ancestors().collect();
    ancestors.reverse();
    for a in ancestors {
        let Ok(meta) = std::fs::metadata(a) else { break };
        if !can_enter(&meta, user) {
            return Err(Failure::failed(format!(
                "the agents run as the OS user {} (Postgres refuses root), but {} cannot enter {} (mode {:o}, \
                 owner uid {}), which holds {}. Choose a directory it can reach, e.g. --dir /tmp/pgquorum-local \
                 or --dir /var/tmp/pgquorum-local",
                user.name,
                user.name,
                a.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Fails naming the first port in `ports` that 127.0.0.1 cannot bind.
pub fn check_ports(ports: &[(u16, String)], hint: &str) -> Result<(), Failure> {
    for (port, what) in ports {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", *port)) {
            return Err(Failure::failed(format!(
                "port {port} ({what}) on 127.0.0.1 is not free: {e}. {hint}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entering_follows_owner_group_other_bits() {
        let user = RunAs { name: "postgres".into(), uid: 4242, gid: 4242, groups: vec![4242] };
        let dir = tempfile_dir();
        // Owned by us (not uid 4242): only the "other" bit decides.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(!can_enter(&std::fs::metadata(&dir).expect("metadata"), &user));
        assert!(check_reachable(&dir.join("sub/dir"), &user).is_err());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        assert!(can_enter(&std::fs::metadata(&dir).expect("metadata"), &user));
        let _ = std::fs::remove_dir(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("pgqctl-prereq-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }
}
