//! Files the agents read that hold secrets (tokens, private keys) or certificates: mode 0600,
//! owned by the agents' user when the harness runs as root (agents then run as `postgres`), in
//! a directory removed when the test ends.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::agent::RUN_AS;

/// Gives `path` to the agents' user when the harness is root (nothing otherwise).
pub fn give_to_agents(path: &Path) {
    if !crate::bins::is_root() {
        return;
    }
    let (uid, gid) = crate::procs::user_ids(RUN_AS)
        .unwrap_or_else(|| panic!("user {RUN_AS} not found: install postgresql (Debian creates it)"));
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} to {RUN_AS}: {e}", path.display()));
}

/// Writes `contents` to `path` with mode 0600, readable by the agents.
pub fn write_private(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    give_to_agents(path);
}

/// A private directory for such files.
pub struct SecretDir {
    dir: tempfile::TempDir,
}

impl SecretDir {
    /// A new directory (0700, the agents' when the harness is root).
    pub fn new() -> SecretDir {
        let dir = tempfile::Builder::new().prefix("pgq-secrets-").tempdir().expect("tempdir");
        give_to_agents(dir.path());
        SecretDir { dir }
    }

    /// Writes `name` in the directory (mode 0600); returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        write_private(&path, contents);
        path
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for SecretDir {
    fn default() -> Self {
        SecretDir::new()
    }
}

/// A temporary directory the agents' OS user may write (an archive directory shared by every
/// member), removed when dropped.
pub fn agents_tempdir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix(prefix).tempdir().expect("tempdir");
    give_to_agents(d.path());
    d
}
