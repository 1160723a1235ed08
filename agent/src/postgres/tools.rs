//! initdb, pg_basebackup and pg_rewind, run as child processes with passwords in files (never
//! on command lines) and their output kept for error messages.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

/// libpq and server environment variables that would override what the agent passes
/// explicitly (a stray PGPASSWORD beats the password file).
pub const PG_ENV: &[&str] = &[
    "PGPASSWORD",
    "PGPASSFILE",
    "PGUSER",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGTARGETSESSIONATTRS",
    "PGDATA",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
];

/// Removes `PG_ENV` from a command's environment.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for v in PG_ENV {
        cmd.env_remove(v);
    }
    cmd
}

/// Runs `cmd`; on failure returns the last lines of its output.
async fn run(what: &str, mut cmd: Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .env("LC_ALL", "C")
        .output()
        .await
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        return Ok(text);
    }
    let tail: Vec<&str> = text.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
    Err(format!("{what} failed ({}): {}", out.status, tail.join(" | ")))
}

/// What initdb needs.
pub struct InitdbOptions<'a> {
    /// Superuser name.
    pub superuser: &'a str,
    /// Its password (written to a 0600 file for `--pwfile`, then removed).
    pub password: &'a str,
    /// Encoding.
    pub encoding: &'a str,
    /// Locale.
    pub locale: &'a str,
    /// Data checksums.
    pub checksums: bool,
}

/// Runs initdb into `data` (which must not exist or be empty); `scratch` holds the password
/// file while it runs.
pub async fn initdb(bin: &Path, data: &Path, scratch: &Path, o: &InitdbOptions<'_>) -> Result<(), String> {
    let pwfile = scratch.join(".initdb-pw");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&pwfile)
            .map_err(|e| format!("cannot write {}: {e}", pwfile.display()))?;
        writeln!(f, "{}", o.password).map_err(|e| e.to_string())?;
    }
    let mut cmd = Command::new(bin.join("initdb"));
    clean_env(&mut cmd)
        .arg("-D")
        .arg(data)
        .arg("--username")
        .arg(o.superuser)
        .arg(format!("--pwfile={}", pwfile.display()))
        .arg("--auth-local=scram-sha-256")
        .arg("--auth-host=scram-sha-256")
        .arg(format!("--encoding={}", o.encoding))
        .arg(format!("--locale={}", o.locale))
        .current_dir(scratch);
    if o.checksums {
        cmd.arg("--data-checksums");
    }
    let res = run("initdb", cmd).await;
    let _ = std::fs::remove_file(&pwfile);
    res.map(|_| ())
}

/// Clones `host:port` into `data` with pg_basebackup through slot `slot`, via a temporary
/// directory renamed into place only when complete.
pub async fn basebackup(
    bin: &Path,
    data: &Path,
    passfile: &Path,
    host: &str,
    port: u16,
    user: &str,
    slot: &str,
) -> Result<(), String> {
    let tmp = data.with_extension("cloning");
    let _ = std::fs::remove_dir_all(&tmp);
    let mut cmd = Command::new(bin.join("pg_basebackup"));
    clean_env(&mut cmd)
        .arg("-D")
        .arg(&tmp)
        .args(["-h", host, "-p", &port.to_string(), "-U", user])
        .args(["-X", "stream", "-c", "fast", "--no-password", "-S", slot])
        .env("PGPASSFILE", passfile)
        .env("PGCONNECT_TIMEOUT", "5")
        .current_dir(data.parent().unwrap_or(Path::new("/")));
    match run("pg_basebackup", cmd).await {
        Ok(_) => {
            let _ = std::fs::remove_dir(data);
            std::fs::rename(&tmp, data)
                .map_err(|e| format!("cannot move the clone into {}: {e}", data.display()))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Rewinds `data` from the running server at `host:port` (connecting as `user`).
pub async fn rewind(
    bin: &Path,
    data: &Path,
    passfile: &Path,
    host: &str,
    port: u16,
    user: &str,
) -> Result<String, String> {
    let mut cmd = Command::new(bin.join("pg_rewind"));
    clean_env(&mut cmd)
        .arg("-D")
        .arg(data)
        .arg(format!("--source-server=host={host} port={port} user={user} dbname=postgres connect_timeout=5"))
        .env("PGPASSFILE", passfile)
        .current_dir(data.parent().unwrap_or(Path::new("/")));
    run("pg_rewind", cmd).await
}
