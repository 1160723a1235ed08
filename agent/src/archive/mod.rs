//! Continuous WAL archiving and restore: `archive_command` / `restore_command` hand WAL files
//! to the running agent over a local socket; the agent compresses, checksums and stores them
//! in a directory or an S3 bucket, ahead of Postgres's requests and in parallel, and answers
//! only once a file is durable. See docs/archive.md for the layout and the runbook.
//!
//! Owns the store backends, the object format and layout, push, fetch and their status. Must
//! not decide anything about HA: it archives only while the HA loop reports this member as the
//! lease-holding primary (`role.rs`).

pub mod ahead;
#[cfg(test)]
mod archive_tests;
pub mod backup;
pub mod codec;
pub mod dir;
pub mod fetch;
pub mod layout;
pub mod metrics;
pub mod push;
pub mod restore;
pub mod role;
pub mod s3;
pub mod schedule;
pub mod socket;
pub mod status;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;

pub use codec::Compression;
pub use push::Archive;
pub use s3::S3Settings;
pub use status::ArchiveStatus;
pub use store::Store;

/// The `archive.*` settings.
#[derive(Clone, Debug, Default)]
pub struct ArchiveSettings {
    /// Archive WAL at all.
    pub enabled: bool,
    /// Directory backend root (used when no bucket is set).
    pub dir: Option<PathBuf>,
    /// S3 backend (used when `s3.bucket` is set).
    pub s3: S3Settings,
    /// Key prefix inside the bucket.
    pub s3_prefix: String,
    /// Compression of new objects.
    pub compression: Compression,
    /// Uploads and prefetches at once.
    pub parallel: usize,
    /// Set `restore_command` so standbys and recovery can read the archive.
    pub restore: bool,
}

impl ArchiveSettings {
    /// Opens the configured store (does not contact it).
    pub async fn open_store(&self) -> Arc<dyn Store> {
        if self.s3.bucket.is_empty() {
            let dir = self.dir.clone().expect("validation requires archive.dir without a bucket");
            Arc::new(dir::DirStore::new(dir))
        } else {
            Arc::new(s3::S3Store::new(&self.s3, &self.s3_prefix).await)
        }
    }

    /// The Postgres settings that route archiving through this agent: `archive_mode`,
    /// `archive_command` and (when `restore`) `restore_command`. `agent` is this binary,
    /// `socket` the archive socket.
    pub fn postgres_settings(
        &self,
        agent: &std::path::Path,
        socket: &std::path::Path,
    ) -> Vec<(String, String)> {
        if !self.enabled {
            return Vec::new();
        }
        let q = |p: &std::path::Path| shell_quote(&p.display().to_string());
        let mut out = vec![
            // Standbys run the command too, and keep WAL until the primary has archived it: a
            // promoted standby then archives what a failed primary never did.
            ("archive_mode".to_string(), "always".to_string()),
            ("archive_command".to_string(), format!("{} wal-push --socket {} %p", q(agent), q(socket))),
        ];
        if self.restore {
            out.push((
                "restore_command".to_string(),
                format!("{} wal-fetch --socket {} %f %p", q(agent), q(socket)),
            ));
        }
        out
    }
}

/// A running archive: the archive itself, its socket and the role it follows.
pub struct Started {
    /// The archive (status, push, fetch).
    pub archive: Arc<Archive>,
    /// The bound socket `wal-push` and `wal-fetch` talk to.
    pub listener: tokio::net::UnixListener,
    /// Follows the HA loop's reports.
    pub role: Arc<role::LeaseRole>,
}

/// Opens the store and binds the socket of an agent configured as `cfg`.
pub async fn open(
    cfg: &crate::config::AgentConfig,
    cluster: crate::cluster::Cluster,
) -> anyhow::Result<Started> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    let store = cfg.archive.open_store().await;
    let role = Arc::new(role::LeaseRole::new(cluster));
    let archive = Archive::new(
        store,
        cfg.cluster.clone(),
        cfg.archive.compression,
        cfg.archive.parallel,
        role.clone() as Arc<dyn role::Role>,
    );
    let path = socket_path(cfg);
    let dir = path.parent().expect("the socket is inside the socket directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))?;
    let listener =
        socket::bind(&path).with_context(|| format!("binding the archive socket {}", path.display()))?;
    tracing::info!(store = %archive.store.describe(), compression = cfg.archive.compression.name(), "WAL archiving on");
    Ok(Started { archive, listener, role })
}

/// The archive socket of an agent configured as `cfg`.
pub fn socket_path(cfg: &crate::config::AgentConfig) -> PathBuf {
    cfg.pg.socket_dir(&cfg.data_dir).join(socket::SOCKET_NAME)
}

/// The Postgres settings for an agent configured as `cfg` (this very binary as the command).
pub fn postgres_settings_for(cfg: &crate::config::AgentConfig) -> Result<Vec<(String, String)>, String> {
    if !cfg.archive.enabled {
        return Ok(Vec::new());
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("archive: cannot find the agent's own binary: {e}"))?;
    Ok(cfg.archive.postgres_settings(&exe, &socket_path(cfg)))
}

/// Quotes `s` for /bin/sh (Postgres runs the commands through the shell).
pub(super) fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_runs_the_agent_binary_with_the_socket() {
        let s = ArchiveSettings { enabled: true, restore: true, ..Default::default() };
        let p = s.postgres_settings(
            std::path::Path::new("/usr/bin/pgquorum-agent"),
            std::path::Path::new("/r u/s"),
        );
        assert_eq!(p[0], ("archive_mode".into(), "always".into()));
        assert_eq!(p[1].1, "/usr/bin/pgquorum-agent wal-push --socket '/r u/s' %p");
        assert_eq!(p[2].1, "/usr/bin/pgquorum-agent wal-fetch --socket '/r u/s' %f %p");
        assert!(
            ArchiveSettings::default()
                .postgres_settings(std::path::Path::new("/a"), std::path::Path::new("/b"))
                .is_empty()
        );
    }
}
