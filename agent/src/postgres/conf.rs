//! The files the agent owns in the data directory: `pgquorum.conf` (included from
//! postgresql.conf), `pg_hba.conf`, `standby.signal`; and the password file outside it.
//!
//! Rendering is pure and tested here; writing replaces a file only when its content changes.
//! Everything else in the data directory is left alone.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The file the agent owns, included at the end of postgresql.conf.
pub const CONF_FILE: &str = "pgquorum.conf";

/// Everything that goes into `pgquorum.conf`.
pub struct ConfParams<'a> {
    /// Cluster name (shown in `ps`).
    pub cluster: &'a str,
    /// This member; `application_name` when streaming, and slot name.
    pub member: &'a str,
    /// listen_addresses.
    pub listen_addresses: &'a str,
    /// port.
    pub port: u16,
    /// unix_socket_directories.
    pub socket_dir: &'a Path,
    /// Password file used by the WAL receiver.
    pub passfile: &'a Path,
    /// Replication role.
    pub replication_user: &'a str,
    /// For a standby: host and port to stream from (None: do not stream).
    pub upstream: Option<(&'a str, u16)>,
    /// synchronous_standby_names.
    pub synchronous_standby_names: &'a str,
    /// Cluster-wide parameters (dynamic configuration).
    pub dynamic: &'a BTreeMap<String, String>,
    /// This member's parameters.
    pub local: &'a BTreeMap<String, String>,
    /// archive_mode, archive_command, restore_command when the agent archives (else empty).
    pub archive: &'a [(String, String)],
}

/// Quotes a value for postgresql.conf.
fn q(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// `name = 'value'` lines of `params`, as `render` writes them.
pub fn render_settings(params: &BTreeMap<String, String>) -> String {
    params.iter().map(|(k, v)| format!("{k} = {}\n", q(v))).collect()
}

/// Quotes a value for a libpq connection string.
fn cq(v: &str) -> String {
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c)) {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// The standby's `primary_conninfo` for streaming from `host:port`.
pub fn primary_conninfo(p: &ConfParams, host: &str, port: u16) -> String {
    format!(
        "host={} port={port} user={} application_name={} passfile={} connect_timeout=2 keepalives=1 \
         keepalives_idle=5 keepalives_interval=2 keepalives_count=3",
        cq(host),
        cq(p.replication_user),
        cq(p.member),
        cq(&p.passfile.display().to_string())
    )
}

/// Renders `pgquorum.conf`.
pub fn render(p: &ConfParams) -> String {
    let mut out = String::from(
        "# Managed by pgquorum: rewritten by the agent. Change settings with `pgquorumctl config set\n\
         # postgres_parameters.NAME=VALUE` (cluster-wide) or postgres.parameters.NAME (this member).\n",
    );
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k} = {}\n", q(v)));
    for (k, v) in [
        ("wal_level", "replica"),
        ("max_wal_senders", "16"),
        ("max_replication_slots", "16"),
        ("wal_receiver_status_interval", "1s"),
        ("wal_sender_timeout", "10s"),
        // pg_rewind needs the target's WAL back to the last common checkpoint.
        ("wal_keep_size", "256MB"),
        // A standby retries its upstream this often (default 5 s); after a failover it must
        // reach the new primary quickly, since synchronous commits wait for it.
        ("wal_retrieve_retry_interval", "100ms"),
    ] {
        line(k, v);
    }
    for (k, v) in p.dynamic.iter().chain(p.local.iter()) {
        line(k, v);
    }
    let conninfo = p.upstream.map(|(h, port)| primary_conninfo(p, h, port)).unwrap_or_default();
    let slot =
        if p.upstream.is_some() { format!("pgquorum_{}", p.member.replace('-', "_")) } else { String::new() };
    let port = p.port.to_string();
    let socket = p.socket_dir.display().to_string();
    for (k, v) in [
        ("listen_addresses", p.listen_addresses),
        ("port", port.as_str()),
        ("unix_socket_directories", socket.as_str()),
        ("cluster_name", p.cluster),
        ("hot_standby", "on"),
        ("wal_log_hints", "on"),
        ("restart_after_crash", "off"),
        ("recovery_target_timeline", "latest"),
        ("synchronous_standby_names", p.synchronous_standby_names),
        ("primary_conninfo", conninfo.as_str()),
        ("primary_slot_name", slot.as_str()),
    ] {
        line(k, v);
    }
    for (k, v) in p.archive {
        line(k, v);
    }
    out
}

/// Renders `pg_hba.conf`: the configured lines, or rules for local and host connections of all
/// users and of replication with `method`.
pub fn render_hba(configured: &[String], method: &str) -> String {
    let mut out = String::from("# Managed by pgquorum (postgres.hba, postgres.auth_method).\n");
    if configured.is_empty() {
        for l in [
            format!("local   all          all                 {method}"),
            format!("local   replication  all                 {method}"),
            format!("host    all          all   0.0.0.0/0     {method}"),
            format!("host    all          all   ::/0          {method}"),
            format!("host    replication  all   0.0.0.0/0     {method}"),
            format!("host    replication  all   ::/0          {method}"),
        ] {
            out.push_str(&l);
            out.push('\n');
        }
    } else {
        for l in configured {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Renders a libpq password file for `(user, password)` pairs, any host, port and database.
pub fn render_pgpass(entries: &[(&str, &str)]) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    entries.iter().map(|(u, p)| format!("*:*:*:{}:{}\n", esc(u), esc(p))).collect()
}

/// Writes `content` to `path` (mode 0600) unless it already holds exactly that; returns whether
/// it wrote.
pub fn write_if_changed(path: &Path, content: &str) -> io::Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    let tmp = path.with_extension("pgquorum-tmp");
    {
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

/// Makes postgresql.conf include `pgquorum.conf` (appends the line once).
pub fn ensure_include(data: &Path) -> io::Result<()> {
    let path = data.join("postgresql.conf");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let line = format!("include_if_exists = '{CONF_FILE}'");
    if text.lines().any(|l| l.trim() == line) {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&path)?;
    writeln!(f, "\n# Added by pgquorum: its settings come last and win.\n{line}")
}

/// Creates or removes `standby.signal`.
pub fn set_standby_signal(data: &Path, standby: bool) -> io::Result<()> {
    let p = data.join("standby.signal");
    if standby {
        if !p.exists() {
            std::fs::write(&p, b"")?;
        }
    } else if p.exists() {
        std::fs::remove_file(&p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(upstream: Option<(&'a str, u16)>, dynamic: &'a BTreeMap<String, String>) -> ConfParams<'a> {
        ConfParams {
            cluster: "demo",
            member: "pg-1",
            listen_addresses: "127.0.0.1",
            port: 5433,
            socket_dir: Path::new("/run/pg"),
            passfile: Path::new("/var/lib/pgq/pgpass"),
            replication_user: "replicator",
            upstream,
            synchronous_standby_names: "ANY 1 (\"pg-2\")",
            dynamic,
            local: dynamic,
            archive: &[],
        }
    }

    #[test]
    fn standby_conf_streams_with_its_slot_and_managed_values_come_last() {
        let mut dynamic = BTreeMap::new();
        dynamic.insert("work_mem".to_string(), "64MB".to_string());
        let text = render(&params(Some(("10.0.0.5", 5432)), &dynamic));
        assert!(text.contains("primary_conninfo = 'host=10.0.0.5 port=5432 user=replicator application_name=pg-1 passfile=/var/lib/pgq/pgpass"));
        assert!(text.contains("primary_slot_name = 'pgquorum_pg_1'"));
        assert!(text.contains("synchronous_standby_names = 'ANY 1 (\"pg-2\")'"));
        assert!(text.find("work_mem").expect("dynamic") < text.find("listen_addresses").expect("managed"));
    }

    #[test]
    fn primary_conf_does_not_stream() {
        let empty = BTreeMap::new();
        let text = render(&params(None, &empty));
        assert!(text.contains("primary_conninfo = ''\n"));
        assert!(text.contains("primary_slot_name = ''\n"));
    }

    #[test]
    fn values_are_quoted_for_both_layers() {
        assert_eq!(q("it's"), "'it''s'");
        assert_eq!(cq("/a b/pgpass"), "'/a b/pgpass'");
        assert_eq!(render_pgpass(&[("u", "p:w\\d")]), "*:*:*:u:p\\:w\\\\d\n");
    }

    #[test]
    fn hba_defaults_to_password_auth_everywhere() {
        let h = render_hba(&[], "scram-sha-256");
        assert!(h.contains("host    replication  all   0.0.0.0/0     scram-sha-256"));
        assert!(!h.contains("trust"));
    }
}
