//! Restore: a new cluster's first member bootstraps from a base backup instead of `initdb`.
//! It unpacks the backup (checksum verified) into a scratch directory, recovers from the source
//! archive up to the target (a time, an LSN, a named restore point, or the end of the archive)
//! with Postgres itself, promotes on a new timeline, gives the agent's roles the new cluster's
//! passwords, stops cleanly and only then moves the result into the data directory. The source
//! store is only ever read.
//!
//! Must not decide when to restore: the HA loop's bootstrap does, through `Action::Initdb`.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pgquorum_core::backup::Manifest;
use pgquorum_core::{Lsn, SystemId};

use super::layout::Layout;
use super::push::Archive;
use super::role::Role;
use super::store::Store;
use super::{Compression, socket};
use crate::ha::PgCtx;
use crate::postgres::{conf, process, sql::Sql};

/// Where recovery stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Target {
    /// The end of the archive.
    #[default]
    Latest,
    /// The last commit at or before this UTC time (`text` as given, `ms` since the epoch).
    Time {
        /// As written in the configuration, normalised to `YYYY-MM-DD HH:MM:SS.ffffff+00`.
        text: String,
        /// Unix milliseconds.
        ms: u64,
    },
    /// This WAL position.
    Lsn(Lsn),
    /// A restore point made with `pgquorumctl backup restore-point NAME`.
    Name(String),
}

impl Target {
    /// Parses a UTC time (`2026-12-06T10:00:00Z`, `2026-12-06 10:00:00.123456+00`).
    pub fn time(v: &str) -> Result<Target, String> {
        let t = v.trim();
        let bare = t.strip_suffix("+00:00").or_else(|| t.strip_suffix("+00")).unwrap_or(t);
        let at = humantime::parse_rfc3339_weak(bare).map_err(|e| {
            format!("{v:?} is not a UTC time ({e}); write it like 2026-12-06T10:00:00Z or 2026-12-06 10:00:00.5+00")
        })?;
        let ms = at.duration_since(std::time::UNIX_EPOCH).map_err(|_| format!("{v:?} is before 1970"))?;
        let text = humantime::format_rfc3339_micros(at).to_string().replace('T', " ").replace('Z', "+00");
        Ok(Target::Time { text, ms: ms.as_millis() as u64 })
    }

    /// The `recovery_target_*` setting.
    fn setting(&self) -> Option<(&'static str, String)> {
        match self {
            Target::Latest => None,
            Target::Time { text, .. } => Some(("recovery_target_time", text.clone())),
            Target::Lsn(l) => Some(("recovery_target_lsn", l.to_string())),
            Target::Name(n) => Some(("recovery_target_name", n.clone())),
        }
    }
}

/// The `restore.*` settings.
#[derive(Clone, Debug, Default)]
pub struct RestoreSettings {
    /// The source store: a directory or `s3://bucket[/prefix]`; empty: bootstrap with initdb.
    pub from: String,
    /// The source cluster's name (empty: this cluster's).
    pub cluster: String,
    /// A backup id, or empty for the newest that ends before the target.
    pub backup: String,
    /// Where recovery stops.
    pub target: Target,
}

impl RestoreSettings {
    /// Whether the first member bootstraps from a backup.
    pub fn enabled(&self) -> bool {
        !self.from.is_empty()
    }

    /// Opens the source store (S3 connection settings other than bucket and prefix come from
    /// `archive.s3.*`).
    pub async fn open_source(&self, archive: &super::ArchiveSettings) -> Arc<dyn Store> {
        match self.from.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let s3 = super::S3Settings { bucket: bucket.to_string(), ..archive.s3.clone() };
                Arc::new(super::s3::S3Store::new(&s3, prefix).await)
            }
            None => Arc::new(super::dir::DirStore::new(&self.from)),
        }
    }
}

/// The source archive's role: its system, never written.
struct Source(SystemId);

impl Role for Source {
    fn system(&self) -> Option<SystemId> {
        Some(self.0)
    }
    fn archives(&self) -> bool {
        false
    }
}

/// Every backup of cluster `name` in `store`, whatever its system identifier, oldest first.
async fn source_backups(store: &dyn Store, name: &str) -> Result<Vec<Manifest>, String> {
    let entries =
        store.list(&format!("{name}/")).await.map_err(|e| format!("listing {}: {e}", store.describe()))?;
    let mut systems: Vec<u64> = entries
        .iter()
        .filter_map(|e| {
            let mut p = e.key.split('/').skip(1);
            let (sys, kind) = (p.next()?, p.next()?);
            (kind == "backups").then(|| sys.parse().ok())?
        })
        .collect();
    systems.dedup();
    let mut out = Vec::new();
    for s in systems {
        let layout = Layout { cluster: name.to_string(), system: SystemId(s) };
        out.extend(super::backup::list(store, &layout).await?);
    }
    out.sort_by(|a, b| (a.start_ms, &a.id).cmp(&(b.start_ms, &b.id)));
    Ok(out)
}

/// Chooses the backup to start from: the one asked for, else the newest that ended before a
/// time or LSN target, else the newest.
pub fn choose<'a>(backups: &'a [Manifest], wanted: &str, target: &Target) -> Result<&'a Manifest, String> {
    let ids = || backups.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(", ");
    if backups.is_empty() {
        return Err(
            "the source holds no backup of that cluster: check restore.from and restore.cluster (`pgquorumctl \
             backup list` on the source shows its backups)"
                .into()
        );
    }
    if !wanted.is_empty() && wanted != "latest" {
        return backups
            .iter()
            .find(|m| m.id == wanted)
            .ok_or_else(|| format!("no backup {wanted:?}; the source has {}", ids()));
    }
    let fits = |m: &&Manifest| match target {
        Target::Time { ms, .. } => m.end_ms <= *ms,
        Target::Lsn(l) => m.end().is_some_and(|e| e <= *l),
        Target::Latest | Target::Name(_) => true,
    };
    backups.iter().rev().find(fits).ok_or_else(|| {
        format!("every backup ({}) ends after the recovery target; a restore cannot go back before a backup's end", ids())
    })
}

/// Restores into `pg.data` (which must not exist or be empty). `agent` is this binary.
pub async fn run(
    settings: &RestoreSettings,
    archive: &super::ArchiveSettings,
    pg: &PgCtx,
    agent: &Path,
) -> Result<(), String> {
    refuse_non_empty(&pg.data)?;
    let store = settings.open_source(archive).await;
    let name = if settings.cluster.is_empty() { pg.cluster.as_str() } else { settings.cluster.as_str() };
    let backups = source_backups(store.as_ref(), name).await?;
    let m = choose(&backups, &settings.backup, &settings.target)
        .map_err(|e| format!("restore from {} (cluster {name}): {e}", store.describe()))?
        .clone();
    tracing::info!(backup = %m.id, source = %store.describe(), target = ?settings.target, "restoring from a base backup");
    let work = pg.data.with_extension("restoring");
    let _ = std::fs::remove_dir_all(&work);
    let layout = Layout { cluster: m.cluster.clone(), system: SystemId(m.system_identifier) };
    let res = match unpack(store.clone(), &layout, &m, &work).await {
        Ok(()) => recover(settings, pg, agent, store, &layout, &work).await,
        Err(e) => Err(e),
    };
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&work);
        return Err(e);
    }
    let _ = std::fs::remove_dir(&pg.data);
    std::fs::rename(&work, &pg.data)
        .map_err(|e| format!("moving the restored data into {}: {e}", pg.data.display()))?;
    tracing::info!(backup = %m.id, "restored and promoted; starting as the new cluster's primary");
    Ok(())
}

/// A restore goes only into a data directory that is missing or empty.
fn refuse_non_empty(data: &Path) -> Result<(), String> {
    if std::fs::read_dir(data).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!(
            "refusing to restore into {}: it is not empty (move it away to restore, or unset restore.from)",
            data.display()
        ));
    }
    Ok(())
}

/// Downloads, decompresses, verifies and unpacks the backup's tar into `dest`.
async fn unpack(store: Arc<dyn Store>, layout: &Layout, m: &Manifest, dest: &Path) -> Result<(), String> {
    let key = format!("{}/{}", layout.base(), m.data_key);
    let mut dl = store
        .download(&key)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("backup data {key} is missing"))?;
    let compression = Compression::parse(&m.compression)?;
    // A bounded async channel: the download waits (without blocking a runtime thread) while
    // the unpacking thread is behind.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let (dest, id, want) = (dest.to_path_buf(), m.id.clone(), m.sha256.clone());
    let worker = tokio::task::spawn_blocking(move || {
        extract(ChannelReader { rx, buf: Vec::new(), at: 0 }, compression, &dest, &id, &want)
    });
    let mut fed = Ok(());
    loop {
        match dl.next().await {
            Ok(Some(chunk)) => {
                if tx.send(chunk).await.is_err() {
                    break; // the worker stopped: its error says why
                }
            }
            Ok(None) => break,
            Err(e) => {
                fed = Err(format!("downloading {key}: {e}"));
                break;
            }
        }
    }
    drop(tx);
    let out = worker.await.map_err(|e| format!("unpacking failed: {e}"))?;
    fed.and(out)
}

/// Bytes arriving over a channel, as a reader.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.buf.len() {
            match self.rx.blocking_recv() {
                Some(b) => (self.buf, self.at) = (b, 0),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Counts and hashes what passes through.
struct Hashing<R> {
    inner: R,
    sha: ring::digest::Context,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.sha.update(&out[..n]);
        Ok(n)
    }
}

fn extract(src: ChannelReader, c: Compression, dest: &Path, id: &str, want: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let plain: Box<dyn Read> = match c {
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(src).map_err(|e| e.to_string())?),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(src)),
        Compression::None => Box::new(src),
    };
    let mut hashed = Hashing { inner: plain, sha: ring::digest::Context::new(&ring::digest::SHA256) };
    std::fs::create_dir_all(dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    let damaged =
        |e: &dyn std::fmt::Display| format!("backup {id} is damaged or unreadable: {e}; restore stopped");
    {
        let mut tar = tar::Archive::new(&mut hashed);
        tar.set_preserve_permissions(true);
        tar.unpack(dest).map_err(|e| damaged(&e))?;
    }
    std::io::copy(&mut hashed, &mut std::io::sink()).map_err(|e| damaged(&e))?;
    let got = super::codec::hex(hashed.sha.finish());
    if got != want {
        return Err(damaged(&format!("its SHA-256 is {got}, the manifest says {want}")));
    }
    Ok(())
}

/// Recovers `work` to the target with Postgres, serving the source archive to its
/// `restore_command`; leaves a cleanly stopped primary on a new timeline.
async fn recover(
    settings: &RestoreSettings,
    pg: &PgCtx,
    agent: &Path,
    store: Arc<dyn Store>,
    layout: &Layout,
    work: &Path,
) -> Result<(), String> {
    std::fs::create_dir_all(&pg.socket_dir).map_err(|e| e.to_string())?;
    let sock = pg.socket_dir.join(".pgquorum-restore.sock");
    let listener = socket::bind(&sock).map_err(|e| format!("binding {}: {e}", sock.display()))?;
    let source =
        Archive::new(store, layout.cluster.clone(), Compression::None, 4, Arc::new(Source(layout.system)));
    let cancel = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(socket::serve(listener, source, cancel.clone()));
    let res = recover_with(settings, pg, agent, &sock, work).await;
    cancel.cancel();
    let _ = server.await;
    let _ = std::fs::remove_file(&sock);
    res
}

fn restore_conf(settings: &RestoreSettings, pg: &PgCtx, agent: &Path, sock: &Path) -> String {
    let fetch = format!(
        "{} wal-fetch --socket {} %f %p",
        super::shell_quote(&agent.display().to_string()),
        super::shell_quote(&sock.display().to_string())
    );
    let port = pg.port.to_string();
    let socket_dir = pg.socket_dir.display().to_string();
    let mut lines: Vec<(&str, String)> = vec![
        ("listen_addresses", String::new()),
        ("port", port),
        ("unix_socket_directories", socket_dir),
        ("restore_command", fetch),
        ("recovery_target_action", "promote".into()),
        ("recovery_target_timeline", "latest".into()),
        // WAL of the new timeline waits (.ready) until the new cluster's agent archives it.
        ("archive_mode", "on".into()),
        ("archive_command", String::new()),
        ("primary_conninfo", String::new()),
        ("primary_slot_name", String::new()),
        ("synchronous_standby_names", String::new()),
        ("hot_standby", "on".into()),
    ];
    if let Some((k, v)) = settings.target.setting() {
        lines.push((k, v));
    }
    let mut out = String::from("\n# pgquorum restore (removed when the restore ends)\n");
    for (k, v) in lines {
        out.push_str(&format!("{k} = '{}'\n", v.replace('\\', "\\\\").replace('\'', "''")));
    }
    out
}

async fn recover_with(
    settings: &RestoreSettings,
    pg: &PgCtx,
    agent: &Path,
    sock: &Path,
    work: &Path,
) -> Result<(), String> {
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    conf::ensure_include(work).map_err(|e| io("writing postgresql.conf in", work, e))?;
    let own = work.join(conf::CONF_FILE);
    let before = std::fs::read_to_string(&own).unwrap_or_default();
    std::fs::write(&own, format!("{before}{}", restore_conf(settings, pg, agent, sock)))
        .map_err(|e| io("writing", &own, e))?;
    // Only this agent's user reaches the private socket directory while recovery runs.
    let hba = work.join("pg_hba.conf");
    std::fs::write(&hba, "local all all trust\n").map_err(|e| io("writing", &hba, e))?;
    for stale in ["standby.signal", "postmaster.pid", "postmaster.opts"] {
        let _ = std::fs::remove_file(work.join(stale));
    }
    std::fs::write(work.join("recovery.signal"), "")
        .map_err(|e| io("writing recovery.signal in", work, e))?;
    let mut pm = process::start(&pg.bin, work, &pg.log)
        .map_err(|e| format!("starting postgres for the restore: {e}"))?;
    let mut sql = Sql::new(&pg.socket_dir, pg.port, &pg.superuser, "");
    loop {
        if let Some(status) = pm.exited() {
            let out = pm.output.read_new().unwrap_or_default();
            let tail: Vec<&str> = out
                .lines()
                .filter(|l| l.contains("FATAL") || l.contains("ERROR") || l.contains("LOG:  restored"))
                .rev()
                .take(4)
                .collect();
            return Err(format!(
                "recovery stopped ({status}): {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        if let Ok(false) = sql.in_recovery().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let res = async {
        sql.ensure_login(&pg.superuser, &pg.secrets.superuser, "SUPERUSER").await?;
        sql.ensure_login(&pg.replication_user, &pg.secrets.replication, "REPLICATION").await?;
        if let (Some((user, _)), Some(pw)) = (&pg.application, &pg.secrets.application) {
            sql.ensure_login(user, pw, "NOSUPERUSER").await?;
        }
        sql.checkpoint().await
    }
    .await;
    pm.stop(work, Duration::from_secs(60)).await;
    res.map_err(|e| format!("setting this cluster's passwords on the restored data: {e}"))?;
    std::fs::write(&own, before).map_err(|e| io("writing", &own, e))?;
    let _ = std::fs::remove_file(work.join("recovery.signal"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, end_ms: u64, end_lsn: &str) -> Manifest {
        Manifest {
            id: id.into(),
            cluster: "c".into(),
            system_identifier: 1,
            member: "m1".into(),
            from_primary: false,
            timeline: 1,
            start_lsn: "0/1000000".into(),
            end_lsn: end_lsn.into(),
            start_ms: end_ms - 10,
            end_ms,
            size: 1,
            stored_size: 1,
            compression: "zstd".into(),
            sha256: String::new(),
            data_key: String::new(),
        }
    }

    #[test]
    fn the_newest_backup_ending_before_the_target_is_chosen() {
        let b = [m("a", 1_000, "0/2000000"), m("b", 2_000, "0/4000000")];
        assert_eq!(choose(&b, "", &Target::Latest).expect("valid").id, "b");
        assert_eq!(choose(&b, "", &Target::Time { text: String::new(), ms: 1_500 }).expect("valid").id, "a");
        assert_eq!(choose(&b, "", &Target::Lsn("0/3000000".parse().expect("valid"))).expect("valid").id, "a");
        assert_eq!(choose(&b, "a", &Target::Latest).expect("valid").id, "a");
        assert!(choose(&b, "zz", &Target::Latest).expect_err("refused").contains("the source has a, b"));
        assert!(
            choose(&b, "", &Target::Time { text: String::new(), ms: 10 })
                .expect_err("refused")
                .contains("ends after")
        );
        assert!(choose(&[], "", &Target::Latest).expect_err("refused").contains("no backup"));
    }

    #[test]
    fn a_restore_into_a_directory_that_is_not_empty_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        refuse_non_empty(&d.path().join("missing")).expect("a missing directory is fine");
        refuse_non_empty(d.path()).expect("an empty directory is fine");
        std::fs::write(d.path().join("PG_VERSION"), "15").expect("write");
        let e = refuse_non_empty(d.path()).expect_err("refused");
        assert!(e.contains("is not empty"), "{e}");
    }

    #[test]
    fn times_are_read_as_utc_and_written_for_postgres() {
        let Target::Time { text, ms } = Target::time("2026-12-06T10:00:00.25Z").expect("valid") else {
            panic!("a time")
        };
        assert_eq!(text, "2026-12-06 10:00:00.250000+00");
        assert_eq!(ms, 1_796_551_200_250);
        assert_eq!(
            Target::time("2026-12-06 10:00:00+00").expect("valid"),
            Target::time("2026-12-06T10:00:00Z").expect("valid")
        );
        assert!(Target::time("yesterday").expect_err("refused").contains("not a UTC time"));
    }
}
