//! Cluster-wide dynamic configuration, stored in Raft so every agent uses the same values.
//!
//! Owns the keys, their defaults and validation (a bad value is refused before it is stored,
//! with a message naming the key, the value and what is allowed). Per-agent settings (addresses,
//! Raft timers, directories) are the agent's config module's business, not this file's.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::serde_human;

/// How replication trades durability for availability (Oracle Data Guard's names).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Asynchronous; a failover may lose up to `maximum_lag_on_failover`.
    Performance,
    /// Synchronous while a standby is available, asynchronous when none is.
    #[default]
    Availability,
    /// Always synchronous: commits wait when no standby is available; nothing acknowledged is
    /// ever lost.
    Protection,
}

impl fmt::Display for DurabilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DurabilityMode::Performance => "performance",
            DurabilityMode::Availability => "availability",
            DurabilityMode::Protection => "protection",
        })
    }
}

impl FromStr for DurabilityMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "performance" => Ok(DurabilityMode::Performance),
            "availability" => Ok(DurabilityMode::Availability),
            "protection" => Ok(DurabilityMode::Protection),
            _ => Err(format!("invalid durability {s:?}: use performance, availability or protection")),
        }
    }
}

/// Settings every agent must agree on. Changed with `pgquorumctl config set`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicConfig {
    /// How long a primary lease lasts after a renewal is sent. Renewed every `ttl/3`.
    #[serde(with = "serde_human")]
    pub ttl: Duration,
    /// Extra time the coordinator waits past `ttl` before granting a new epoch, covering clock
    /// rate differences and the old primary's fencing.
    #[serde(with = "serde_human")]
    pub lease_margin: Duration,
    /// Durability mode.
    pub durability: DurabilityMode,
    /// How many synchronous standbys acknowledge each commit (`k` in `ANY k (...)`).
    pub synchronous_node_count: u32,
    /// In performance mode, a replica further behind than this many bytes is not promoted.
    pub maximum_lag_on_failover: u64,
    /// How long a crashed primary Postgres may take to restart in place before the primary
    /// gives up its lease and the cluster fails over.
    #[serde(with = "serde_human")]
    pub primary_start_timeout: Duration,
    /// Rejoin a diverged former primary with `pg_rewind`.
    pub use_pg_rewind: bool,
    /// When `pg_rewind` fails (or is off), clone the member again from the primary.
    pub reclone_on_rewind_failure: bool,
    /// Postgres parameters applied on every member (`postgresql.conf` syntax values).
    pub postgres_parameters: BTreeMap<String, String>,
    /// Base backups: schedule and retention.
    pub backup: BackupPolicy,
}

/// When base backups are taken and how long they are kept (`backup.schedule`,
/// `backup.retention`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupPolicy {
    /// Cron expression, UTC (`0 0 * * *`); empty: no scheduled backups.
    pub schedule: String,
    /// `forever` (empty), a count of backups (`7`) or a recovery window (`90d`).
    pub retention: String,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            ttl: Duration::from_millis(1500),
            lease_margin: Duration::from_millis(100),
            durability: DurabilityMode::default(),
            synchronous_node_count: 1,
            maximum_lag_on_failover: 1 << 20,
            primary_start_timeout: Duration::from_secs(30),
            use_pg_rewind: true,
            reclone_on_rewind_failure: true,
            postgres_parameters: BTreeMap::new(),
            backup: BackupPolicy::default(),
        }
    }
}

/// Parameters the agent manages itself; setting them through configuration would break HA.
pub const RESERVED_POSTGRES_PARAMETERS: &[&str] = &[
    "synchronous_standby_names",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_target_timeline",
    "restore_command",
    "archive_command",
    "port",
    "listen_addresses",
    "unix_socket_directories",
    "hba_file",
    "data_directory",
    "config_file",
    "hot_standby",
    "wal_log_hints",
    "restart_after_crash",
    "cluster_name",
];

/// The shortest ttl a member with this `raft.election_timeout_max` allows: three of them, so a
/// Raft election never outlasts the primary's lease (the primary renews with the new leader).
pub fn min_ttl_for(election_timeout_max: Duration) -> Duration {
    election_timeout_max * 3
}

impl DynamicConfig {
    /// Checks the ttl against each member's `raft.election_timeout_max` (`None`: that member
    /// has not said, e.g. it was never reachable since this agent started). Lowering the ttl
    /// needs every member's timing; raising it never shortens what an election may take. The
    /// message names the member that needs the longest ttl and what would do.
    pub fn validate_timing(
        &self,
        old_ttl: Duration,
        members: &[(crate::MemberName, Option<Duration>)],
    ) -> Result<(), String> {
        let unknown: Vec<&str> =
            members.iter().filter(|(_, t)| t.is_none()).map(|(m, _)| m.as_str()).collect();
        if self.ttl < old_ttl && !unknown.is_empty() {
            return Err(format!(
                "cannot lower ttl to {}: member {} has not reported its raft.election_timeout_max \
                 (unreachable?), and the ttl must be at least 3 × it on every member; lower it when \
                 every member is up (pgquorumctl status), or remove the member",
                crate::duration::format(self.ttl),
                unknown.join(", ")
            ));
        }
        let known = members.iter().filter_map(|(m, t)| Some((m, (*t)?)));
        let Some((who, longest)) = known.max_by_key(|(m, d)| (*d, std::cmp::Reverse((*m).clone()))) else {
            return Ok(());
        };
        let min = min_ttl_for(longest);
        if self.ttl >= min {
            return Ok(());
        }
        Err(format!(
            "ttl ({}) must be at least 3 × raft.election_timeout_max of member {who} ({}) = {}, so a Raft \
             election never outlasts the primary's lease; set ttl={} or more, or first lower \
             raft.election_timeout_max on that member",
            crate::duration::format(self.ttl),
            crate::duration::format(longest),
            crate::duration::format(min),
            crate::duration::format(min),
        ))
    }

    /// Checks every key; returns one message per problem.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if self.ttl < Duration::from_millis(300) || self.ttl > Duration::from_secs(600) {
            errs.push(format!("ttl ({}) must be between 300ms and 10m", crate::duration::format(self.ttl)));
        }
        if self.lease_margin >= self.ttl {
            errs.push(format!(
                "lease_margin ({}) must be shorter than ttl ({})",
                crate::duration::format(self.lease_margin),
                crate::duration::format(self.ttl)
            ));
        }
        if self.synchronous_node_count == 0 && self.durability != DurabilityMode::Performance {
            errs.push(format!(
                "synchronous_node_count (0) must be at least 1 in {} mode; use durability \
                 performance for asynchronous replication",
                self.durability
            ));
        }
        if self.synchronous_node_count > 16 {
            errs.push(format!("synchronous_node_count ({}) must be at most 16", self.synchronous_node_count));
        }
        if self.primary_start_timeout < self.ttl {
            errs.push(format!(
                "primary_start_timeout ({}) must be at least ttl ({})",
                crate::duration::format(self.primary_start_timeout),
                crate::duration::format(self.ttl)
            ));
        }
        for (k, v) in &self.postgres_parameters {
            let valid_name =
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !valid_name {
                errs.push(format!(
                    "postgres_parameters: {k:?} is not a Postgres parameter name (letters, digits, '_' and '.')"
                ));
            } else if RESERVED_POSTGRES_PARAMETERS.contains(&k.as_str()) {
                errs.push(format!(
                    "postgres_parameters: {k} is managed by pgquorum and cannot be set; remove it"
                ));
            }
            if v.contains('\n') || v.contains('\0') {
                errs.push(format!("postgres_parameters: value of {k} must be a single line"));
            }
        }
        if !self.backup.schedule.is_empty()
            && let Err(e) = crate::cron::Schedule::parse(&self.backup.schedule)
        {
            errs.push(format!("backup.schedule: {e}"));
        }
        if let Err(e) = crate::backup::Retention::parse(&self.backup.retention) {
            errs.push(format!("backup.retention: {e}"));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// Sets one key from text, as `pgquorumctl config set KEY=VALUE` does. Keys of Postgres
    /// parameters are written `postgres_parameters.NAME`; an empty value removes one.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        if let Some(param) = key.strip_prefix("postgres_parameters.") {
            if value.is_empty() {
                self.postgres_parameters.remove(param);
            } else {
                self.postgres_parameters.insert(param.to_string(), value.to_string());
            }
            return Ok(());
        }
        let dur = |v: &str| crate::duration::parse(v).map_err(|e| format!("{key}: {e}"));
        let num = |v: &str| v.parse::<u64>().map_err(|_| format!("{key}: {v:?} is not a whole number"));
        let boolean = |v: &str| match v {
            "true" | "on" | "yes" => Ok(true),
            "false" | "off" | "no" => Ok(false),
            _ => Err(format!("{key}: {v:?} is not true or false")),
        };
        match key {
            "ttl" => self.ttl = dur(value)?,
            "lease_margin" => self.lease_margin = dur(value)?,
            "durability" => self.durability = value.parse()?,
            "synchronous_node_count" => {
                self.synchronous_node_count =
                    u32::try_from(num(value)?).map_err(|_| format!("{key}: {value} is too large"))?
            }
            "maximum_lag_on_failover" => {
                self.maximum_lag_on_failover = parse_bytes(value).map_err(|e| format!("{key}: {e}"))?
            }
            "primary_start_timeout" => self.primary_start_timeout = dur(value)?,
            "use_pg_rewind" => self.use_pg_rewind = boolean(value)?,
            "reclone_on_rewind_failure" => self.reclone_on_rewind_failure = boolean(value)?,
            "backup.schedule" => {
                if !value.trim().is_empty() {
                    crate::cron::Schedule::parse(value).map_err(|e| format!("{key}: {e}"))?;
                }
                self.backup.schedule = value.trim().to_string()
            }
            "backup.retention" => {
                crate::backup::Retention::parse(value).map_err(|e| format!("{key}: {e}"))?;
                self.backup.retention = value.trim().to_string()
            }
            _ => {
                return Err(format!(
                    "unknown key {key:?}: use one of {} or postgres_parameters.NAME",
                    Self::KEYS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The scalar keys `set` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "ttl",
        "lease_margin",
        "durability",
        "synchronous_node_count",
        "maximum_lag_on_failover",
        "primary_start_timeout",
        "use_pg_rewind",
        "reclone_on_rewind_failure",
        "backup.schedule",
        "backup.retention",
    ];
}

/// Parses a byte count: a plain number or one with a unit `kB`, `MB`, `GB` (powers of 1024,
/// as Postgres and Patroni use them).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("invalid size {s:?}: write bytes, or a number with kB, MB, GB or TB (16MB)");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1 << 10,
        "mb" | "m" => 1 << 20,
        "gb" | "g" => 1 << 30,
        "tb" | "t" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, max_ms: Option<u64>) -> (crate::MemberName, Option<Duration>) {
        (crate::MemberName::new(name).expect("valid name"), max_ms.map(Duration::from_millis))
    }

    #[test]
    fn ttl_below_three_election_timeouts_of_any_member_is_refused_naming_it() {
        let mut c = DynamicConfig::default();
        c.set("ttl", "800ms").expect("parses");
        let members = [member("m1", Some(300)), member("m2", Some(200)), member("m3", Some(500))];
        let err = c.validate_timing(Duration::from_millis(1500), &members).expect_err("refused");
        assert!(
            err.starts_with(
                "ttl (800ms) must be at least 3 × raft.election_timeout_max of member m3 (500ms) = 1500ms"
            ),
            "{err}"
        );
        assert!(err.contains("set ttl=1500ms or more"), "{err}");
        c.set("ttl", "1500ms").expect("parses");
        c.validate_timing(Duration::from_secs(5), &members)
            .expect("exactly three election timeouts is enough");
    }

    #[test]
    fn lowering_ttl_needs_every_members_timing_raising_does_not() {
        let mut c = DynamicConfig::default();
        let members = [member("m1", Some(300)), member("m2", None)];
        c.set("ttl", "1s").expect("parses");
        let err = c.validate_timing(Duration::from_millis(1500), &members).expect_err("refused");
        assert!(err.contains("member m2 has not reported"), "{err}");
        c.validate_timing(Duration::from_millis(900), &members).expect("raising is fine");
    }

    #[test]
    fn defaults_are_valid() {
        DynamicConfig::default().validate().expect("defaults valid");
    }

    #[test]
    fn validation_names_the_key_and_the_limit() {
        let mut c = DynamicConfig::default();
        c.set("ttl", "100ms").expect("parses");
        c.postgres_parameters.insert("synchronous_standby_names".into(), "x".into());
        let errs = c.validate().expect_err("invalid");
        assert!(errs.iter().any(|e| e.starts_with("ttl (100ms) must be between")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("managed by pgquorum")), "{errs:?}");
    }

    #[test]
    fn set_parses_each_kind_of_value() {
        let mut c = DynamicConfig::default();
        c.set("durability", "protection").expect("ok");
        c.set("maximum_lag_on_failover", "16MB").expect("ok");
        c.set("postgres_parameters.work_mem", "64MB").expect("ok");
        assert_eq!(c.durability, DurabilityMode::Protection);
        assert_eq!(c.maximum_lag_on_failover, 16 << 20);
        assert_eq!(c.postgres_parameters["work_mem"], "64MB");
        assert!(c.set("nope", "1").expect_err("unknown").contains("unknown key"));
        assert!(c.set("use_pg_rewind", "maybe").is_err());
    }
}
