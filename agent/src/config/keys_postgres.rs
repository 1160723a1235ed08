//! Configuration keys for the local Postgres, its roles, tags and the HA loop.
//!
//! Password keys accept values from the file or the environment only, never from `--set`
//! (a command line is visible in `ps` and shell history); `*_file` keys name a file instead.

use std::path::PathBuf;
use std::time::Duration;

use pgquorum_core::duration;

use super::keys::KeyDef;

pub(super) fn boolean(key: &str, v: &str) -> Result<bool, String> {
    match v.trim() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        other => Err(format!("{key}: {other:?} must be true or false")),
    }
}

fn hostport(key: &str, v: &str) -> Result<String, String> {
    let v = v.trim();
    match v.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => Ok(v.to_string()),
        _ => Err(format!("{key}: {v:?} is not host:port (for example 127.0.0.1:5432)")),
    }
}

fn name(key: &str, v: &str) -> Result<String, String> {
    let v = v.trim();
    let ok = !v.is_empty() && v.len() <= 63 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok { Ok(v.to_string()) } else { Err(format!("{key}: {v:?} must be 1 to 63 letters, digits or '_'")) }
}

/// Keys under `postgres.`, `tags.` and `ha.`.
pub const POSTGRES_KEYS: &[KeyDef] = &[
    KeyDef {
        key: "postgres.enabled",
        default: "true",
        help: "Manage a Postgres instance. false makes this member a witness: it votes in Raft but holds no data.",
        set: |c, k, v| {
            c.pg.enabled = boolean(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.bin_dir",
        default: "",
        help: "Directory with initdb, postgres, pg_ctl, pg_basebackup, pg_rewind. Empty: found from PATH, \
               then /usr/lib/postgresql/<newest>/bin, then pg_config --bindir.",
        set: |c, _, v| {
            c.pg.bin_dir = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.data_dir",
        default: "",
        help: "Postgres data directory. Empty: <data_dir>/pgdata.",
        set: |c, _, v| {
            c.pg.data_dir = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.listen",
        default: "127.0.0.1:5432",
        help: "listen_addresses and port of Postgres, as host:port (host may be * or a comma-separated list).",
        set: |c, k, v| {
            c.pg.listen = hostport(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.advertise",
        default: "",
        help: "host:port other members and clients use to reach this Postgres. Empty: postgres.listen when it names one host.",
        set: |c, k, v| {
            c.pg.advertise = if v.trim().is_empty() { String::new() } else { hostport(k, v)? };
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.socket_dir",
        default: "",
        help: "Directory for Postgres's Unix socket (the agent connects through it). Empty: <data_dir>/run.",
        set: |c, _, v| {
            c.pg.socket_dir = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.superuser.username",
        default: "postgres",
        help: "Superuser the agent connects as (also used for pg_rewind).",
        set: |c, k, v| {
            c.pg.superuser.username = name(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.superuser.password",
        default: "",
        help: "Superuser password. From the file or PGQUORUM_POSTGRES_SUPERUSER_PASSWORD only, never --set.",
        set: |c, _, v| {
            c.pg.superuser.password = Some(v.to_string());
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.superuser.password_file",
        default: "",
        help: "File holding the superuser password (first line).",
        set: |c, _, v| {
            c.pg.superuser.password_file = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.replication.username",
        default: "replicator",
        help: "Role standbys stream as (created at bootstrap with REPLICATION).",
        set: |c, k, v| {
            c.pg.replication.username = name(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.replication.password",
        default: "",
        help: "Replication password. From the file or PGQUORUM_POSTGRES_REPLICATION_PASSWORD only, never --set.",
        set: |c, _, v| {
            c.pg.replication.password = Some(v.to_string());
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.replication.password_file",
        default: "",
        help: "File holding the replication password (first line).",
        set: |c, _, v| {
            c.pg.replication.password_file = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.application.username",
        default: "",
        help: "Application role created at bootstrap (LOGIN), owner of postgres.application.database. Empty: none.",
        set: |c, k, v| {
            c.pg.application.username = if v.trim().is_empty() { String::new() } else { name(k, v)? };
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.application.password",
        default: "",
        help: "Application role password. From the file or PGQUORUM_POSTGRES_APPLICATION_PASSWORD only, never --set.",
        set: |c, _, v| {
            c.pg.application.password = Some(v.to_string());
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.application.password_file",
        default: "",
        help: "File holding the application role's password (first line).",
        set: |c, _, v| {
            c.pg.application.password_file = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.application.database",
        default: "",
        help: "Database created at bootstrap for the application role. Empty: same as its username.",
        set: |c, k, v| {
            c.pg.application_database = if v.trim().is_empty() { String::new() } else { name(k, v)? };
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.initdb.encoding",
        default: "UTF8",
        help: "initdb --encoding.",
        set: |c, k, v| {
            c.pg.initdb_encoding = name(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.initdb.locale",
        default: "C.UTF-8",
        help: "initdb --locale.",
        set: |c, k, v| {
            let v = v.trim();
            if v.is_empty() || !v.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-@".contains(ch)) {
                return Err(format!("{k}: {v:?} is not a locale name (for example C.UTF-8 or en_US.UTF-8)"));
            }
            c.pg.initdb_locale = v.to_string();
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.initdb.data_checksums",
        default: "true",
        help: "initdb --data-checksums (pg_rewind needs checksums or wal_log_hints, which is always on).",
        set: |c, k, v| {
            c.pg.initdb_checksums = boolean(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.hba",
        default: "",
        help: "pg_hba.conf lines (a list); replaces the generated rules. Empty: local and host connections with \
               postgres.auth_method for all users and for replication.",
        set: |c, _, v| {
            c.pg.hba = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.auth_method",
        default: "scram-sha-256",
        help: "Authentication method of the generated pg_hba.conf rules: scram-sha-256, md5, cert or trust.",
        set: |c, k, v| {
            match v.trim() {
                m @ ("scram-sha-256" | "md5" | "cert" | "trust") => c.pg.auth_method = m.to_string(),
                other => return Err(format!("{k}: {other:?} must be scram-sha-256, md5, cert or trust")),
            }
            Ok(())
        },
    },
    KeyDef {
        key: "postgres.parameters.*",
        default: "",
        help: "Postgres parameters for this member only; they override the cluster-wide dynamic ones.",
        set: |c, k, v| {
            let p = k
                .strip_prefix("postgres.parameters.")
                .expect("registry routes only postgres.parameters.* here");
            c.pg.parameters.insert(p.to_string(), v.to_string());
            Ok(())
        },
    },
    KeyDef {
        key: "tags.nofailover",
        default: "false",
        help: "Never promote this member.",
        set: |c, k, v| {
            c.tags.nofailover = boolean(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "tags.nosync",
        default: "false",
        help: "Never make this member a synchronous standby.",
        set: |c, k, v| {
            c.tags.nosync = boolean(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "tags.failover_priority",
        default: "1",
        help: "Among equally advanced candidates the higher priority wins.",
        set: |c, k, v| {
            c.tags.failover_priority =
                v.trim().parse().map_err(|_| format!("{k}: {v:?} is not a whole number"))?;
            Ok(())
        },
    },
    KeyDef {
        key: "tags.noloadbalance",
        default: "false",
        help: "Health check /replica answers 503 for this member (keep it out of read load balancing).",
        set: |c, k, v| {
            // Shown among the member's tags only when set (the HTTP view fills in false).
            if boolean(k, v)? {
                c.tags.custom.insert("noloadbalance".into(), "true".into());
            } else {
                c.tags.custom.remove("noloadbalance");
            }
            Ok(())
        },
    },
    KeyDef {
        key: "tags.*",
        default: "",
        help: "Custom tags, matched by health-check queries like /replica?tag_zone=a.",
        set: |c, k, v| {
            let t = k.strip_prefix("tags.").expect("registry routes only tags.* here");
            c.tags.custom.insert(t.to_string(), v.to_string());
            Ok(())
        },
    },
    KeyDef {
        key: "ha.loop_interval",
        default: "100ms",
        help: "How often the HA loop observes and decides while anything changes (a quiet member \
               sleeps until its next deadline).",
        set: |c, k, v| {
            let d: Duration = duration::parse(v).map_err(|e| format!("{k}: {e}"))?;
            c.loop_interval = d;
            Ok(())
        },
    },
    KeyDef {
        key: "ha.status_interval",
        default: "2s",
        help: "How often a quiet member queries its Postgres's status over SQL (every loop tick while \
               anything is changing; a postmaster that exits, or a file appearing in or leaving the \
               data directory's top level, such as the `promote` file, wakes the agent at once).",
        set: |c, k, v| {
            let d: Duration = duration::parse(v).map_err(|e| format!("{k}: {e}"))?;
            c.status_interval = d;
            Ok(())
        },
    },
];
