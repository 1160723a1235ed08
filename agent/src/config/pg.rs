//! Settings of the local Postgres as configured, and the secrets they need.
//!
//! Owns resolution of defaults that depend on other keys (paths under `data_dir`) and of
//! passwords (environment or file; never a command line). Must not start Postgres.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A role and where its password comes from.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Role name.
    pub username: String,
    /// Password given directly (file or environment).
    pub password: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

impl Credentials {
    /// The password: the direct value, else the first line of the file.
    pub fn resolve(&self, key: &str) -> Result<String, String> {
        if let Some(p) = &self.password {
            if p.is_empty() {
                return Err(format!("{key}.password: must not be empty"));
            }
            return Ok(p.clone());
        }
        match &self.password_file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| format!("{key}.password_file: cannot read {}: {e}", f.display()))?;
                let line = text.lines().next().unwrap_or("").to_string();
                if line.is_empty() {
                    return Err(format!("{key}.password_file: {} is empty", f.display()));
                }
                Ok(line)
            }
            None => {
                let env = format!("PGQUORUM_{}_PASSWORD", key.replace('.', "_").to_ascii_uppercase());
                Err(format!(
                    "{key}.password: required; set the environment variable {env} or {key}.password_file"
                ))
            }
        }
    }
}

/// Configured Postgres settings.
#[derive(Clone, Debug, Default)]
pub struct PgConfig {
    /// Manage Postgres (false: witness member).
    pub enabled: bool,
    /// Binaries directory; discovered when `None`.
    pub bin_dir: Option<PathBuf>,
    /// Data directory; `<data_dir>/pgdata` when `None`.
    pub data_dir: Option<PathBuf>,
    /// listen host:port.
    pub listen: String,
    /// Advertised host:port (resolved by validation).
    pub advertise: String,
    /// Socket directory; `<data_dir>/run` when `None`.
    pub socket_dir: Option<PathBuf>,
    /// The superuser.
    pub superuser: Credentials,
    /// The replication role.
    pub replication: Credentials,
    /// The application role (username empty: none).
    pub application: Credentials,
    /// The application database (empty: the application username).
    pub application_database: String,
    /// initdb encoding.
    pub initdb_encoding: String,
    /// initdb locale.
    pub initdb_locale: String,
    /// initdb data checksums.
    pub initdb_checksums: bool,
    /// pg_hba.conf lines replacing the generated ones.
    pub hba: Vec<String>,
    /// Method of generated pg_hba.conf rules.
    pub auth_method: String,
    /// Member-local Postgres parameters.
    pub parameters: BTreeMap<String, String>,
}

impl PgConfig {
    /// The data directory.
    pub fn data_dir(&self, agent_dir: &Path) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| agent_dir.join("pgdata"))
    }

    /// The socket directory.
    pub fn socket_dir(&self, agent_dir: &Path) -> PathBuf {
        self.socket_dir.clone().unwrap_or_else(|| agent_dir.join("run"))
    }

    /// (listen_addresses, port).
    pub fn listen_parts(&self) -> (String, u16) {
        let (h, p) = self.listen.rsplit_once(':').expect("validated host:port");
        (h.to_string(), p.parse().expect("validated port"))
    }
}
