//! The local Postgres as the HA loop uses it: paths, roles, and writing the files the agent owns
//! before every start and role change.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use pgquorum_core::MemberName;

use crate::config::{AgentConfig, Secrets};
use crate::postgres::conf;

/// Everything needed to drive the local Postgres.
pub struct PgCtx {
    /// Server binaries.
    pub bin: PathBuf,
    /// Data directory.
    pub data: PathBuf,
    /// Socket directory.
    pub socket_dir: PathBuf,
    /// The agent's own directory (password files, logs, scratch).
    pub scratch: PathBuf,
    /// listen_addresses.
    pub listen_addresses: String,
    /// Port.
    pub port: u16,
    /// host:port others use.
    pub advertise: String,
    /// libpq password file.
    pub passfile: PathBuf,
    /// Postgres's output.
    pub log: PathBuf,
    /// Superuser name.
    pub superuser: String,
    /// Replication role name.
    pub replication_user: String,
    /// Passwords.
    pub secrets: Secrets,
    /// Configured pg_hba lines.
    pub hba: Vec<String>,
    /// Method of generated pg_hba lines.
    pub auth_method: String,
    /// Member-local parameters.
    pub local_params: BTreeMap<String, String>,
    /// Cluster name.
    pub cluster: String,
    /// This member.
    pub member: MemberName,
    /// Application role and database, when configured.
    pub application: Option<(String, String)>,
    /// initdb encoding, locale, checksums.
    pub initdb: (String, String, bool),
    /// archive_mode, archive_command, restore_command (empty when the agent does not archive).
    pub archive_params: Vec<(String, String)>,
    /// Bootstrap from a backup (`restore.*`), with the archive settings its S3 source shares.
    pub restore: Option<(crate::archive::restore::RestoreSettings, crate::archive::ArchiveSettings)>,
}

impl PgCtx {
    /// Builds the context from configuration (finds the binaries).
    pub fn new(cfg: &AgentConfig) -> Result<PgCtx, String> {
        let bin = pgquorum_pgbin::find(cfg.pg.bin_dir.as_deref()).map_err(|e| e.to_string())?;
        let secrets = cfg.secrets.clone().ok_or("postgres passwords were not resolved")?;
        let (listen_addresses, port) = cfg.pg.listen_parts();
        let application = (!cfg.pg.application.username.is_empty()).then(|| {
            let db = if cfg.pg.application_database.is_empty() {
                cfg.pg.application.username.clone()
            } else {
                cfg.pg.application_database.clone()
            };
            (cfg.pg.application.username.clone(), db)
        });
        Ok(PgCtx {
            bin,
            data: cfg.pg.data_dir(&cfg.data_dir),
            socket_dir: cfg.pg.socket_dir(&cfg.data_dir),
            scratch: cfg.data_dir.clone(),
            listen_addresses,
            port,
            advertise: cfg.pg.advertise.clone(),
            passfile: cfg.data_dir.join("pgpass"),
            log: cfg.data_dir.join("postgres.log"),
            superuser: cfg.pg.superuser.username.clone(),
            replication_user: cfg.pg.replication.username.clone(),
            secrets,
            hba: cfg.pg.hba.clone(),
            auth_method: cfg.pg.auth_method.clone(),
            local_params: cfg.pg.parameters.clone(),
            cluster: cfg.cluster.clone(),
            member: cfg.name.clone(),
            application,
            initdb: (cfg.pg.initdb_encoding.clone(), cfg.pg.initdb_locale.clone(), cfg.pg.initdb_checksums),
            archive_params: crate::archive::postgres_settings_for(cfg)?,
            restore: cfg.restore.enabled().then(|| (cfg.restore.clone(), cfg.archive.clone())),
        })
    }

    /// Writes the password file and creates the socket directory (both private to the agent's user).
    pub fn prepare(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.socket_dir)?;
        std::fs::set_permissions(&self.socket_dir, std::fs::Permissions::from_mode(0o700))?;
        let pass = conf::render_pgpass(&[
            (&self.superuser, &self.secrets.superuser),
            (&self.replication_user, &self.secrets.replication),
        ]);
        conf::write_if_changed(&self.passfile, &pass)?;
        Ok(())
    }

    /// Writes `pgquorum.conf`, `pg_hba.conf`, the include line and `standby.signal`. Returns
    /// whether `pgquorum.conf` changed (a running server then needs a reload).
    pub fn write_files(
        &self,
        upstream: Option<(&str, u16)>,
        sync: &str,
        dynamic: &BTreeMap<String, String>,
        standby: bool,
    ) -> std::io::Result<bool> {
        conf::ensure_include(&self.data)?;
        let params = conf::ConfParams {
            cluster: &self.cluster,
            member: self.member.as_str(),
            listen_addresses: &self.listen_addresses,
            port: self.port,
            socket_dir: &self.socket_dir,
            passfile: &self.passfile,
            replication_user: &self.replication_user,
            upstream,
            synchronous_standby_names: sync,
            dynamic,
            local: &self.local_params,
            archive: &self.archive_params,
        };
        let changed = conf::write_if_changed(&self.data.join(conf::CONF_FILE), &conf::render(&params))?;
        conf::write_if_changed(
            &self.data.join("pg_hba.conf"),
            &conf::render_hba(&self.hba, &self.auth_method),
        )?;
        conf::set_standby_signal(&self.data, standby)?;
        Ok(changed)
    }
}

/// Splits `host:port`.
pub fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (h, p) = addr.rsplit_once(':')?;
    Some((h.trim_start_matches('[').trim_end_matches(']'), p.parse().ok()?))
}
