//! The registry of agent configuration keys: name, default, meaning and parser.
//!
//! Every key is settable from the file, a `PGQUORUM_*` environment variable and `--set`; this
//! table is the single list all three go through, and the one `docs/configuration.md` is checked
//! against. Must not hold cross-key rules; those live in `validate.rs`.

use std::path::PathBuf;
use std::time::Duration;

use pgquorum_core::MemberName;
use pgquorum_core::duration;

use super::AgentConfig;

/// One configuration key.
pub struct KeyDef {
    /// Dotted key as written in the file. A trailing `*` matches any suffix (maps).
    pub key: &'static str,
    /// Default, as text ("" when there is none).
    pub default: &'static str,
    /// What the key means.
    pub help: &'static str,
    /// Parses `value` into the config; the error says what is allowed.
    pub set: fn(&mut AgentConfig, &str, &str) -> Result<(), String>,
}

impl KeyDef {
    /// The environment variable for this key (`raft.heartbeat_interval` →
    /// `PGQUORUM_RAFT_HEARTBEAT_INTERVAL`; maps use the prefix, `PGQUORUM_POSTGRES_PARAMETERS_`).
    pub fn env(&self) -> String {
        let base = self.key.trim_end_matches('*').trim_end_matches('.');
        let mut env = format!("PGQUORUM_{}", base.replace(['.', '-'], "_").to_ascii_uppercase());
        if self.key.ends_with('*') {
            env.push('_');
        }
        env
    }

    /// Whether `key` is this key (or, for a map, one of its entries).
    pub fn matches(&self, key: &str) -> bool {
        match self.key.strip_suffix('*') {
            Some(prefix) => key.len() > prefix.len() && key.starts_with(prefix),
            None => key == self.key,
        }
    }
}

fn dur(key: &str, v: &str) -> Result<Duration, String> {
    duration::parse(v).map_err(|e| format!("{key}: {e}"))
}

fn num(key: &str, v: &str) -> Result<u64, String> {
    v.trim().parse().map_err(|_| format!("{key}: {v:?} is not a whole number"))
}

fn addr(key: &str, v: &str) -> Result<String, String> {
    let v = v.trim();
    let ok = v.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!("{key}: {v:?} is not host:port (for example 10.0.0.5:7000)"))
    }
}

fn bootstrap(c: &mut AgentConfig, key: &str, v: &str) -> Result<(), String> {
    let sub = key.strip_prefix("bootstrap.").expect("registry only routes bootstrap.* here");
    c.bootstrap.set(sub, v).map_err(|e| format!("bootstrap.{e}"))
}

/// The agent's own keys (Postgres, tags and HA-loop keys are in `keys_postgres.rs`).
pub const AGENT_KEYS: &[KeyDef] = &[
    KeyDef {
        key: "name",
        default: "",
        help: "This member's name, unique in the cluster (lower-case letters, digits, '-'). Required.",
        set: |c, k, v| {
            c.name = MemberName::new(v.trim()).map_err(|e| format!("{k}: {e}"))?;
            Ok(())
        },
    },
    KeyDef {
        key: "cluster",
        default: "pgquorum",
        help: "Name of the cluster; agents refuse peers and data of another cluster.",
        set: |c, k, v| {
            let v = v.trim();
            if v.is_empty()
                || v.len() > 63
                || !v.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return Err(format!("{k}: {v:?} must be 1 to 63 letters, digits, '-' or '_'"));
            }
            c.cluster = v.to_string();
            Ok(())
        },
    },
    KeyDef {
        key: "data_dir",
        default: "",
        help: "Directory for the agent's state (Raft log, snapshots) and, from the HA issue on, Postgres. Required.",
        set: |c, k, v| {
            if v.trim().is_empty() {
                return Err(format!("{k}: must not be empty"));
            }
            c.data_dir = PathBuf::from(v.trim());
            Ok(())
        },
    },
    KeyDef {
        key: "grpc.listen",
        default: "0.0.0.0:7000",
        help: "Address the gRPC endpoint (Raft, peer and management services) listens on.",
        set: |c, k, v| {
            c.grpc_listen = addr(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "grpc.advertise",
        default: "",
        help: "Address other members use to reach this agent's gRPC endpoint. Defaults to this member's \
               entry in peers, else grpc.listen when that is not a wildcard address.",
        set: |c, k, v| {
            c.grpc_advertise = if v.trim().is_empty() { String::new() } else { addr(k, v)? };
            Ok(())
        },
    },
    KeyDef {
        key: "peers",
        default: "",
        help: "The initial members, name=host:port of their gRPC endpoints, comma-separated (a list in \
               the file), this member included. The same list on every member. Empty: a single-member \
               cluster, or the statefulset.* keys.",
        set: |c, k, v| {
            c.peers.clear();
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (name, address) = item.split_once('=').ok_or_else(|| {
                    format!("{k}: {item:?} must be name=host:port (for example pg-0=10.0.0.5:7000)")
                })?;
                let name = MemberName::new(name.trim()).map_err(|e| format!("{k}: {e}"))?;
                c.peers.push((name, addr(k, address)?));
            }
            Ok(())
        },
    },
    KeyDef {
        key: "join",
        default: "auto",
        help: "How a new agent whose peers already form a cluster becomes a member: auto (asks to join) or \
               manual (waits for `pgquorumctl member add NAME ADDRESS`).",
        set: |c, k, v| {
            c.auto_join = match v.trim() {
                "auto" => true,
                "manual" => false,
                other => return Err(format!("{k}: {other:?} must be auto or manual")),
            };
            Ok(())
        },
    },
    KeyDef {
        key: "statefulset.replicas",
        default: "0",
        help: "With a StatefulSet: how many replicas it has. The peers are then <base>-0 .. <base>-(N-1), \
               where name is <base>-<ordinal>, reached at <member>.<statefulset.domain>:<statefulset.port>.",
        set: |c, k, v| {
            c.statefulset_replicas = num(k, v)? as usize;
            Ok(())
        },
    },
    KeyDef {
        key: "statefulset.domain",
        default: "",
        help: "With a StatefulSet: the headless Service's domain, e.g. pg.default.svc.cluster.local.",
        set: |c, _, v| {
            c.statefulset_domain = v.trim().to_string();
            Ok(())
        },
    },
    KeyDef {
        key: "statefulset.port",
        default: "7000",
        help: "With a StatefulSet: the gRPC port every member listens on.",
        set: |c, k, v| {
            c.statefulset_port = u16::try_from(num(k, v)?).map_err(|_| format!("{k}: {v} is not a port"))?;
            Ok(())
        },
    },
    KeyDef {
        key: "raft.heartbeat_interval",
        default: "256ms",
        help: "How often the Raft leader sends heartbeats.",
        set: |c, k, v| {
            c.raft.heartbeat_interval = dur(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "raft.election_timeout_min",
        default: "300ms",
        help: "Lower bound of the randomised Raft election timeout.",
        set: |c, k, v| {
            c.raft.election_timeout_min = dur(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "raft.election_timeout_max",
        default: "400ms",
        help: "Upper bound of the randomised Raft election timeout. The lease ttl must be at least 3 times this.",
        set: |c, k, v| {
            c.raft.election_timeout_max = dur(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "raft.snapshot_every",
        default: "1000",
        help: "Raft log entries between snapshots; older entries are purged, keeping the log bounded.",
        set: |c, k, v| {
            c.raft.snapshot_every = num(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "log.level",
        default: "info",
        help: "Log filter: a level (error, warn, info, debug, trace) or tracing directives like info,pgquorum_agent=debug.",
        set: |c, _, v| {
            c.log_level = v.trim().to_string();
            Ok(())
        },
    },
    KeyDef {
        key: "log.format",
        default: "text",
        help: "Log format: text or json.",
        set: |c, k, v| {
            c.log_json = match v.trim() {
                "text" => false,
                "json" => true,
                other => return Err(format!("{k}: {other:?} must be text or json")),
            };
            Ok(())
        },
    },
    KeyDef {
        key: "bootstrap.ttl",
        default: "1500ms",
        help: "Dynamic setting seeded at initialisation: primary lease duration.",
        set: bootstrap,
    },
    KeyDef {
        key: "bootstrap.lease_margin",
        default: "100ms",
        help: "Dynamic setting seeded at initialisation: extra wait past ttl before a new primary is granted.",
        set: bootstrap,
    },
    KeyDef {
        key: "bootstrap.durability",
        default: "availability",
        help: "Dynamic setting seeded at initialisation: performance, availability or protection.",
        set: bootstrap,
    },
    KeyDef {
        key: "bootstrap.synchronous_node_count",
        default: "1",
        help: "Dynamic setting seeded at initialisation: standbys that acknowledge each commit.",
        set: bootstrap,
    },
    KeyDef {
        key: "bootstrap.maximum_lag_on_failover",
        default: "1MB",
        help: "Dynamic setting seeded at initialisation: in performance mode, replicas further behind are not promoted.",
        set: bootstrap,
    },
    KeyDef {
        key: "bootstrap.primary_start_timeout",
        default: "30s",
        help: "Dynamic setting seeded at initialisation: how long a crashed primary may take to restart in place.",
        set: bootstrap,
    },
    KeyDef {
        key: "bootstrap.use_pg_rewind",
        default: "true",
        help: "Dynamic setting seeded at initialisation: rejoin diverged members with pg_rewind.",
        set: bootstrap,
    },
    KeyDef {
        key: "bootstrap.reclone_on_rewind_failure",
        default: "true",
        help: "Dynamic setting seeded at initialisation: clone again from the primary when pg_rewind fails.",
        set: bootstrap,
    },
    KeyDef {
        key: "bootstrap.backup.schedule",
        default: "",
        help: "Dynamic setting seeded at initialisation: scheduled base backups, a cron expression in UTC (0 0 * * *).",
        set: bootstrap,
    },
    KeyDef {
        key: "bootstrap.backup.retention",
        default: "",
        help: "Dynamic setting seeded at initialisation: backups kept, a count (7) or a recovery window (90d).",
        set: bootstrap,
    },
    KeyDef {
        key: "bootstrap.postgres_parameters.*",
        default: "",
        help: "Dynamic setting seeded at initialisation: Postgres parameters for every member.",
        set: bootstrap,
    },
];

/// Every key the agent accepts.
pub fn all() -> impl Iterator<Item = &'static KeyDef> {
    AGENT_KEYS
        .iter()
        .chain(super::keys_postgres::POSTGRES_KEYS.iter())
        .chain(super::keys_http::HTTP_KEYS.iter())
        .chain(super::keys_security::SECURITY_KEYS.iter())
        .chain(super::keys_kube::KUBE_KEYS.iter())
        .chain(super::keys_archive::ARCHIVE_KEYS.iter())
        .chain(super::keys_restore::RESTORE_KEYS.iter())
}

/// The definition of `key`, if it is one (exact keys win over `prefix.*` ones).
pub fn find(key: &str) -> Option<&'static KeyDef> {
    all().find(|d| !d.key.ends_with('*') && d.key == key).or_else(|| all().find(|d| d.matches(key)))
}

/// Up to three known keys that look like `key`, for "did you mean" hints: the closest by edit
/// distance (a typo like `grpc.lisen`), then keys whose last part starts with what was typed
/// (`heartbeat` for `raft.heartbeat_interval`).
pub fn similar(key: &str) -> Vec<&'static str> {
    let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    let typed = last(key);
    let mut scored: Vec<(usize, usize, &'static str)> = all()
        .filter_map(|d| {
            let known = d.key.trim_end_matches('*').trim_end_matches('.');
            // A whole-key typo, or a typo in the last part only (`lisen` for `grpc.listen`).
            let whole = edit_distance(key, known);
            let part = edit_distance(&typed, &last(known));
            let allowed = |len: usize| (len / 4).max(1);
            let typo = [(whole, known.len()), (part, last(known).len())]
                .into_iter()
                .filter(|(dist, len)| *dist <= allowed(*len))
                .map(|(dist, _)| dist)
                .min();
            let prefix = typed.len() >= 4 && last(known).starts_with(&typed);
            match (typo, prefix) {
                (Some(dist), _) => Some((dist, whole, d.key)),
                (None, true) => Some((usize::MAX, whole, d.key)),
                (None, false) => None,
            }
        })
        .collect();
    scored.sort();
    // Closest first; between equal typos, the key closest as a whole (`grpc.listen` before
    // `http.listen` for `grpc.lisen`).
    scored.into_iter().map(|(_, _, k)| k).take(3).collect()
}

/// Levenshtein distance between `a` and `b` (insertions, deletions, substitutions), in chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
