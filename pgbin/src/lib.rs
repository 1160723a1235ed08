//! Finding PostgreSQL's server binaries: one search that the agent (at start-up),
//! `pgquorumctl local` (its prerequisite check) and the end-to-end tests all use, so they
//! never disagree about which Postgres runs. Debian keeps the binaries off PATH, in
//! /usr/lib/postgresql/<version>/bin.
//!
//! Owns the search order and the error that says what is missing; must not start anything but
//! `pg_config --bindir`.

#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};

/// The server binaries the agent runs; a directory counts only if it holds all of them.
pub const NEEDED: &[&str] = &["postgres", "initdb", "pg_controldata", "pg_basebackup", "pg_rewind"];

/// Why no directory was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    /// The configured directory lacks these binaries.
    Incomplete {
        /// The configured directory.
        dir: PathBuf,
        /// The binaries it lacks.
        missing: Vec<&'static str>,
    },
    /// Nothing configured, and no complete directory anywhere searched.
    Nowhere,
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotFound::Incomplete { dir, missing } => write!(
                f,
                "postgres.bin_dir ({}) lacks {}; point it at the directory holding the Postgres server binaries",
                dir.display(),
                missing.join(", ")
            ),
            NotFound::Nowhere => write!(
                f,
                "PostgreSQL server binaries ({}) not found on PATH, under /usr/lib/postgresql/<version>/bin or via \
                 pg_config --bindir. Install them: on Debian or Ubuntu `apt-get install postgresql-15`; elsewhere \
                 your distribution's PostgreSQL server package, with its bin directory on PATH (or set \
                 postgres.bin_dir)",
                NEEDED.join(", ")
            ),
        }
    }
}

impl std::error::Error for NotFound {}

/// The binaries of [`NEEDED`] that `dir` lacks.
pub fn missing(dir: &Path) -> Vec<&'static str> {
    NEEDED.iter().filter(|b| !dir.join(b).is_file()).copied().collect()
}

fn complete(dir: &Path) -> bool {
    missing(dir).is_empty()
}

/// The configured directory (checked), or the first complete one of: PATH, the newest
/// /usr/lib/postgresql/<version>/bin, `pg_config --bindir`.
pub fn find(configured: Option<&Path>) -> Result<PathBuf, NotFound> {
    find_in(configured, std::env::var_os("PATH").as_deref(), Path::new("/usr/lib/postgresql"))
}

/// [`find`] with the search path and the versioned root given (what tests vary).
pub fn find_in(
    configured: Option<&Path>,
    path: Option<&std::ffi::OsStr>,
    versioned_root: &Path,
) -> Result<PathBuf, NotFound> {
    if let Some(d) = configured {
        let missing = missing(d);
        return if missing.is_empty() {
            Ok(d.to_path_buf())
        } else {
            Err(NotFound::Incomplete { dir: d.to_path_buf(), missing })
        };
    }
    if let Some(d) = path.and_then(|p| std::env::split_paths(p).find(|d| complete(d))) {
        return Ok(d);
    }
    if let Some(d) = newest_versioned(versioned_root) {
        return Ok(d);
    }
    if let Ok(out) = std::process::Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if complete(&d) {
            return Ok(d);
        }
    }
    Err(NotFound::Nowhere)
}

/// The complete `<root>/<version>/bin` with the highest numeric version.
fn newest_versioned(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| complete(bin))
        .max_by_key(|(v, _)| *v)
        .map(|(_, bin)| bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bin(dir: &Path, names: &[&str]) {
        std::fs::create_dir_all(dir).expect("mkdir");
        for n in names {
            std::fs::write(dir.join(n), "").expect("touch");
        }
    }

    #[test]
    fn configured_directory_missing_binaries_names_them() {
        let t = tempfile::tempdir().expect("tempdir");
        fake_bin(t.path(), &["postgres", "initdb"]);
        let err = find_in(Some(t.path()), None, t.path()).expect_err("incomplete");
        assert_eq!(
            err,
            NotFound::Incomplete {
                dir: t.path().into(),
                missing: vec!["pg_controldata", "pg_basebackup", "pg_rewind"]
            }
        );
        assert!(err.to_string().contains("lacks pg_controldata, pg_basebackup, pg_rewind"), "{err}");
    }

    #[test]
    fn newest_complete_version_wins_numerically_over_incomplete_ones() {
        let t = tempfile::tempdir().expect("tempdir");
        fake_bin(&t.path().join("9/bin"), NEEDED);
        fake_bin(&t.path().join("15/bin"), NEEDED);
        fake_bin(&t.path().join("16/bin"), &["postgres"]);
        let found = find_in(None, Some(std::ffi::OsStr::new("")), t.path());
        // pg_config may exist on the machine, but the versioned root is searched first.
        assert_eq!(found, Ok(t.path().join("15/bin")));
    }

    #[test]
    fn path_is_searched_before_the_versioned_root() {
        let t = tempfile::tempdir().expect("tempdir");
        fake_bin(&t.path().join("onpath"), NEEDED);
        fake_bin(&t.path().join("root/15/bin"), NEEDED);
        let path = std::env::join_paths([t.path().join("empty"), t.path().join("onpath")]).expect("join");
        assert_eq!(find_in(None, Some(&path), &t.path().join("root")), Ok(t.path().join("onpath")));
    }
}
