//! Finding Postgres's server binaries (Debian keeps them off PATH, in
//! /usr/lib/postgresql/<version>/bin).

use std::path::{Path, PathBuf};

const NEEDED: &[&str] = &["postgres", "initdb", "pg_controldata", "pg_basebackup", "pg_rewind"];

fn complete(dir: &Path) -> bool {
    NEEDED.iter().all(|b| dir.join(b).is_file())
}

/// The configured directory (checked), or the first of: PATH, the newest
/// /usr/lib/postgresql/<version>/bin, `pg_config --bindir`.
pub fn find(configured: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(d) = configured {
        let missing: Vec<&str> = NEEDED.iter().filter(|b| !d.join(b).is_file()).copied().collect();
        if missing.is_empty() {
            return Ok(d.to_path_buf());
        }
        return Err(format!(
            "postgres.bin_dir ({}) lacks {}; point it at the directory holding the Postgres server binaries",
            d.display(),
            missing.join(", ")
        ));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if complete(&d) {
                return Ok(d);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            complete(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Ok(out) = std::process::Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if complete(&d) {
            return Ok(d);
        }
    }
    Err("Postgres server binaries not found (looked in PATH, /usr/lib/postgresql/*/bin and pg_config --bindir): \
         install them (Debian: apt-get install postgresql-15) or set postgres.bin_dir"
        .into())
}
