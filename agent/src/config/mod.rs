//! Agent configuration: load from file, environment and flags, validate, explain.
//!
//! Owns `AgentConfig` and the precedence rule (default < file < `PGQUORUM_*` env < `--set`).
//! Bad input is a `ConfigError` listing every problem with the key, the value and what is
//! allowed; the binary exits with code 64 on it. Must not start anything.

mod keys;
mod keys_archive;
mod keys_http;
mod keys_kube;
mod keys_postgres;
mod keys_restore;
mod keys_security;
mod pg;
mod source;
mod validate;

use std::path::{Path, PathBuf};

use std::time::Duration;

use pgquorum_core::MemberName;
use pgquorum_core::ha::observation::Tags;
use pgquorum_core::state::DynamicConfig;

pub use keys::{KeyDef, all as all_keys};
pub use pg::{Credentials, PgConfig};
pub use source::{Origin, Setting};

use crate::raft::RaftSettings;

/// Exit code for bad configuration (BSD `EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// The validated configuration of one agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// This member's name.
    pub name: MemberName,
    /// The cluster's name.
    pub cluster: String,
    /// Where the agent keeps its state.
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub grpc_listen: String,
    /// gRPC address other members use.
    pub grpc_advertise: String,
    /// HTTP listen address (health checks, metrics); empty when HTTP is disabled.
    pub http_listen: String,
    /// HTTP address other members and tools use (empty when disabled or unknown).
    pub http_advertise: String,
    /// Initial members (name, gRPC address), this member included; empty for a single member.
    pub peers: Vec<(MemberName, String)>,
    /// Join an existing cluster by asking (true) or wait to be added (false).
    pub auto_join: bool,
    /// StatefulSet replica count (0: not a StatefulSet).
    pub statefulset_replicas: usize,
    /// StatefulSet headless Service domain.
    pub statefulset_domain: String,
    /// StatefulSet gRPC port.
    pub statefulset_port: u16,
    /// Raft timers.
    pub raft: RaftSettings,
    /// Log filter.
    pub log_level: String,
    /// JSON logs.
    pub log_json: bool,
    /// Dynamic configuration seeded when this agent initialises the cluster.
    pub bootstrap: DynamicConfig,
    /// The local Postgres.
    pub pg: PgConfig,
    /// Passwords, resolved at load time (None for a witness).
    pub secrets: Option<Secrets>,
    /// This member's tags.
    pub tags: Tags,
    /// HA loop interval.
    pub loop_interval: Duration,
    /// How often a quiet member reads its Postgres's status over SQL (`ha.status_interval`).
    pub status_interval: Duration,
    /// Who may change the cluster (`auth.*`).
    pub auth: crate::auth::AuthSettings,
    /// Mutual TLS on the gRPC endpoint (`tls.*`).
    pub tls: crate::auth::tls::TlsSettings,
    /// On SIGTERM, the time allowed for handing over the primary and Raft leadership.
    pub handover_timeout: Duration,
    /// Pod labels and events (`kube.*`).
    pub kube: crate::kube::KubeSettings,
    /// The WAL archive (`archive.*`).
    pub archive: crate::archive::ArchiveSettings,
    /// Bootstrap from a base backup (`restore.*`).
    pub restore: crate::archive::restore::RestoreSettings,
    /// File holding the archive's S3 secret key (read by validation).
    pub archive_secret_file: Option<PathBuf>,
    /// Where each key's value came from, for `check-config`.
    pub origins: Vec<(String, Origin)>,
}

/// Passwords of the roles the agent manages.
#[derive(Clone)]
pub struct Secrets {
    /// Superuser password.
    pub superuser: String,
    /// Replication role password.
    pub replication: String,
    /// Application role password, when an application role is configured.
    pub application: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

/// Everything wrong with a configuration.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "config: {m}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl AgentConfig {
    fn empty() -> AgentConfig {
        AgentConfig {
            name: MemberName::default(),
            cluster: String::new(),
            data_dir: PathBuf::new(),
            grpc_listen: String::new(),
            grpc_advertise: String::new(),
            http_listen: String::new(),
            http_advertise: String::new(),
            peers: Vec::new(),
            auto_join: true,
            statefulset_replicas: 0,
            statefulset_domain: String::new(),
            statefulset_port: 0,
            raft: RaftSettings::default(),
            log_level: String::new(),
            log_json: false,
            bootstrap: DynamicConfig::default(),
            pg: PgConfig::default(),
            secrets: None,
            tags: Tags::default(),
            loop_interval: Duration::from_millis(100),
            status_interval: Duration::from_secs(2),
            auth: Default::default(),
            tls: Default::default(),
            kube: Default::default(),
            handover_timeout: Duration::from_secs(30),
            archive: Default::default(),
            archive_secret_file: None,
            restore: Default::default(),
            origins: Vec::new(),
        }
    }

    /// Loads the configuration: defaults, then `file`, then `env` (`PGQUORUM_*`), then `flags`
    /// (`KEY=VALUE`). Returns the config and warnings (unknown environment variables).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[String],
    ) -> Result<(AgentConfig, Vec<String>), ConfigError> {
        let mut errs = Vec::new();
        let mut settings: Vec<Setting> = keys::all()
            .filter(|d| !d.key.ends_with('*'))
            .map(|d| Setting {
                key: d.key.to_string(),
                value: d.default.to_string(),
                origin: Origin::Default,
            })
            .collect();
        if let Some(f) = file {
            match source::from_file(f) {
                Ok(s) => settings.extend(s),
                Err(e) => errs.push(e),
            }
        }
        let (env_settings, unknown) = source::from_env(env);
        settings.extend(env_settings);
        match source::from_flags(flags) {
            Ok(s) => settings.extend(s),
            Err(e) => errs.push(e),
        }
        let mut c = AgentConfig::empty();
        for s in settings {
            let Some(def) = keys::find(&s.key) else {
                let hint = keys::similar(&s.key);
                let hint = if hint.is_empty() {
                    String::new()
                } else {
                    format!(" (did you mean {}?)", hint.join(", "))
                };
                errs.push(format!(
                    "unknown key {:?} from {}{hint}; see docs/configuration.md",
                    s.key, s.origin
                ));
                continue;
            };
            if s.origin == Origin::Default && def.default.is_empty() {
                continue;
            }
            if s.origin == Origin::Flag
                && (s.key.ends_with(".password")
                    || s.key == "auth.token"
                    || s.key == "archive.s3.secret_access_key")
            {
                errs.push(format!(
                    "{}: never pass a {} on the command line (it shows in ps and shell history); use the \
                     environment variable {} or {}_file",
                    s.key,
                    match s.key.as_str() {
                        "auth.token" => "token",
                        "archive.s3.secret_access_key" => "secret key",
                        _ => "password",
                    },
                    def.env(),
                    s.key
                ));
                continue;
            }
            match (def.set)(&mut c, &s.key, &s.value) {
                Ok(()) => {
                    c.origins.retain(|(k, _)| k != &s.key);
                    c.origins.push((s.key.clone(), s.origin.clone()));
                }
                Err(e) => errs.push(format!("{e} (from {})", s.origin)),
            }
        }
        if errs.is_empty() {
            errs.extend(validate::validate(&mut c));
        }
        if !errs.is_empty() {
            return Err(ConfigError(errs));
        }
        let warnings = unknown
            .into_iter()
            .map(|v| format!("environment variable {v} matches no configuration key and is ignored"))
            .collect();
        Ok((c, warnings))
    }

    /// The initial members as (name, gRPC address), always including this member.
    pub fn initial_members(&self) -> Vec<(MemberName, String)> {
        if self.peers.is_empty() {
            vec![(self.name.clone(), self.grpc_advertise.clone())]
        } else {
            self.peers.clone()
        }
    }
}

#[cfg(test)]
mod tests;
