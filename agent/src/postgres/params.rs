//! Checking Postgres parameters before they are stored, with Postgres itself: the settings are
//! written to a scratch `postgresql.conf` and read by this member's own `postgres` binary
//! (`postgres -D <scratch> -C ...`), which parses every setting exactly as a start of the same
//! major version would (name, type, unit, range, enum values) and refuses what a start would
//! refuse. Its words are handed back to the operator. Runs only on a configuration change.
//!
//! `postgres --describe-config` then says which of the settings take effect only after a
//! restart (context `postmaster`).

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::process::Command;

use crate::postgres::conf;

/// How long `postgres -C` may take.
const TIMEOUT: Duration = Duration::from_secs(15);

async fn output(mut cmd: Command, what: &str) -> Result<std::process::Output, String> {
    crate::postgres::tools::clean_env(&mut cmd);
    cmd.env("LC_MESSAGES", "C").stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("cannot run {what}: {e}")),
        Err(_) => Err(format!("{what} did not answer within {TIMEOUT:?}")),
    }
}

/// Whether Postgres (binaries in `bin`) accepts `params`; the error is what Postgres said.
/// `scratch` is a directory of the agent's own where a temporary directory can be made.
pub async fn check(bin: &Path, scratch: &Path, params: &BTreeMap<String, String>) -> Result<(), String> {
    let dir = ScratchDir::new(scratch).map_err(|e| {
        format!("cannot check the parameters: creating a directory in {}: {e}", scratch.display())
    })?;
    let file = dir.path().join("postgresql.conf");
    std::fs::write(&file, conf::render_settings(params))
        .and_then(|()| std::fs::write(dir.path().join("postgresql.auto.conf"), ""))
        .map_err(|e| format!("cannot check the parameters: writing {}: {e}", file.display()))?;
    let mut cmd = Command::new(bin.join("postgres"));
    // -C first: Postgres then skips its refusal to run as root (it only reads files).
    cmd.arg("-C").arg("config_file").arg("-D").arg(dir.path());
    let out = output(cmd, "postgres -C").await?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    Err(refusal(&text, &dir.path().display().to_string())
        .unwrap_or_else(|| format!("Postgres refused the parameters ({}): {}", out.status, text.trim())))
}

/// A private directory for one check, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(parent: &Path) -> std::io::Result<ScratchDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("parameter-check-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(ScratchDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Postgres's own reasons from its output: each message (with its hints), without the line
/// prefix, the scratch file's name and the closing "configuration file ... contains errors".
fn refusal(stderr: &str, scratch: &str) -> Option<String> {
    let mut reasons: Vec<String> = Vec::new();
    for line in stderr.lines() {
        let Some((sev, at)) = ["LOG:  ", "ERROR:  ", "FATAL:  ", "DETAIL:  ", "HINT:  "]
            .iter()
            .find_map(|t| line.find(t).map(|i| (*t, i)))
        else {
            continue;
        };
        let msg = line[at + sev.len()..].trim();
        let msg = match msg.find(" in file \"") {
            Some(i) if msg[i..].contains(scratch) => &msg[..i],
            _ => msg,
        };
        let noise = (msg.starts_with("configuration file") && msg.contains("contains errors"))
            || msg.starts_with("skipping missing configuration file");
        if noise {
            continue;
        }
        match sev.trim_end() {
            "DETAIL:" | "HINT:" => match reasons.last_mut() {
                Some(last) => last.push_str(&format!(" ({msg})")),
                None => reasons.push(msg.to_string()),
            },
            _ => reasons.push(msg.to_string()),
        }
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// Which of `names` take effect only after a Postgres restart (context `postmaster`), as
/// `postgres --describe-config` describes them. Empty when that cannot be told.
pub async fn needing_restart(bin: &Path, names: &[String]) -> Vec<String> {
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("--describe-config");
    let Ok(out) = output(cmd, "postgres --describe-config").await else { return Vec::new() };
    let text = String::from_utf8_lossy(&out.stdout);
    let restart: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('\t');
            let name = cols.next()?;
            (cols.next()? == "postmaster").then_some(name)
        })
        .collect();
    names.iter().filter(|n| restart.contains(&n.as_str())).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::refusal;

    #[test]
    fn postgres_words_are_kept_and_the_scratch_file_is_not_named() {
        let err = "\
2026-12-06 00:10:00.001 UTC [9] LOG:  invalid value for parameter \"shared_buffers\": \"banana\"
2026-12-06 00:10:00.001 UTC [9] HINT:  Valid units for this parameter are \"B\", \"kB\", \"MB\", \"GB\", and \"TB\".
2026-12-06 00:10:00.001 UTC [9] LOG:  unrecognized configuration parameter \"shared_bufers\" in file \"/s/parameter-check-x/postgresql.conf\" line 2
2026-12-06 00:10:00.001 UTC [9] FATAL:  configuration file \"/s/parameter-check-x/postgresql.conf\" contains errors
";
        assert_eq!(
            refusal(err, "/s/parameter-check-x").as_deref(),
            Some(
                "invalid value for parameter \"shared_buffers\": \"banana\" (Valid units for this parameter are \
                 \"B\", \"kB\", \"MB\", \"GB\", and \"TB\".); unrecognized configuration parameter \"shared_bufers\""
            )
        );
        assert_eq!(refusal("nothing useful\n", "/s"), None);
    }
}
