//! Base backups: `pg_basebackup` of the local Postgres streamed as a tar, compressed and
//! uploaded in parts (never a full local copy), then a manifest written last — a backup is
//! listed only once its data is stored. The WAL it needs to be consistent travels inside the
//! tar (`-X fetch`); what a restore needs after it comes from the continuous archive. Listing,
//! deletion and retention (through `pgquorum_core::backup`) live here too.
//!
//! Must not decide who takes a backup; the management API and the schedule do.

use std::process::Stdio;
use std::sync::Arc;

use pgquorum_core::backup::{Manifest, Retention, backup_id, expired, parse_wal_range, wal_unneeded};
use tokio::io::AsyncReadExt;

use super::Compression;
use super::layout::Layout;
use super::push::Archive;
use super::store::{PART_BYTES, Store, Upload};
use crate::ha::PgCtx;
use crate::postgres::sql::Sql;
use crate::postgres::tools::clean_env;

/// How far a backup is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Tar bytes read from pg_basebackup.
    pub done: u64,
    /// The databases' size when it started (an estimate of the tar's).
    pub total: u64,
}

/// The folder of backups in a layout.
pub fn backups_prefix(layout: &Layout) -> String {
    format!("{}/backups/", layout.base())
}

fn manifest_key(layout: &Layout, id: &str) -> String {
    format!("{}{id}/backup.json", backups_prefix(layout))
}

/// A streaming compressor writing into a buffer drained part by part.
enum Encoder {
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    None(Vec<u8>),
}

impl Encoder {
    fn new(c: Compression) -> std::io::Result<Encoder> {
        Ok(match c {
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3)?),
            Compression::Gzip => {
                Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6)))
            }
            Compression::None => Encoder::None(Vec::new()),
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            Encoder::Zstd(e) => e.write_all(data),
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::None(v) => {
                v.extend_from_slice(data);
                Ok(())
            }
        }
    }

    fn buffered(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Zstd(e) => e.get_mut(),
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::None(v) => v,
        }
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::None(v) => Ok(v),
        }
    }
}

/// File name of the stored tar for a compression.
fn data_name(c: Compression) -> &'static str {
    match c {
        Compression::Zstd => "base.tar.zst",
        Compression::Gzip => "base.tar.gz",
        Compression::None => "base.tar",
    }
}

/// Takes a base backup of this member's running Postgres into the archive.
pub async fn create(
    archive: &Arc<Archive>,
    pg: &PgCtx,
    from_primary: bool,
    progress: tokio::sync::watch::Sender<Progress>,
) -> Result<Manifest, String> {
    let layout = archive.layout().ok_or("the cluster's system identifier is not known yet")?;
    let mut sql = Sql::new(&pg.socket_dir, pg.port, &pg.superuser, &pg.secrets.superuser);
    let total = sql.database_bytes().await.map_err(|e| format!("cannot reach the local Postgres: {e}"))?;
    progress.send_replace(Progress { done: 0, total });
    let start_ms = crate::ha::observe::wall().0;
    let id = backup_id(start_ms);
    if archive.store.get(&manifest_key(&layout, &id)).await.map_err(|e| e.to_string())?.is_some() {
        return Err(format!("a backup {id} exists already; wait a second and try again"));
    }
    let data_key = format!("backups/{id}/{}", data_name(archive.compression));
    let full_key = format!("{}/{data_key}", layout.base());
    let mut upload = archive.store.upload(&full_key).await.map_err(|e| e.to_string())?;
    match stream(archive, pg, &mut upload, &progress).await {
        Ok((size, stored_size, sha256, stderr)) => {
            // Understood before the data is made visible: nothing is left without a manifest.
            let range = match parse_wal_range(&stderr) {
                Ok(r) => r,
                Err(e) => {
                    upload.abort().await;
                    return Err(e);
                }
            };
            upload.finish().await.map_err(|e| format!("storing {full_key}: {e}"))?;
            let m = Manifest {
                id: id.clone(),
                cluster: layout.cluster.clone(),
                system_identifier: layout.system.0,
                member: pg.member.to_string(),
                from_primary,
                timeline: range.timeline,
                start_lsn: range.start.to_string(),
                end_lsn: range.end.to_string(),
                start_ms,
                end_ms: crate::ha::observe::wall().0,
                size,
                stored_size,
                compression: archive.compression.name().to_string(),
                sha256,
                data_key,
            };
            let json = serde_json::to_vec_pretty(&m).expect("a manifest serializes");
            archive
                .store
                .put(&manifest_key(&layout, &id), json)
                .await
                .map_err(|e| format!("storing the manifest of {id}: {e}"))?;
            tracing::info!(id, size, stored_size, start = %m.start_lsn, end = %m.end_lsn, "base backup stored");
            Ok(m)
        }
        Err(e) => {
            upload.abort().await;
            Err(e)
        }
    }
}

/// A backup running on this member: its result and its progress.
pub type Job = (tokio::task::JoinHandle<Result<Manifest, String>>, tokio::sync::watch::Receiver<Progress>);

/// Starts a base backup of this member's Postgres (one at a time), then applies retention
/// `policy`. Refusals carry the gRPC code that fits them.
pub fn start(
    shared: &Arc<crate::ha::Shared>,
    cluster: crate::cluster::Cluster,
    policy: String,
) -> Result<Job, (tonic::Code, String)> {
    use std::sync::atomic::Ordering;
    let me = || {
        shared
            .report
            .lock()
            .expect("lock is never poisoned")
            .as_ref()
            .map(|r| r.member.to_string())
            .unwrap_or_default()
    };
    let archive = shared.archive.get().cloned().ok_or_else(|| {
        (
            tonic::Code::FailedPrecondition,
            format!(
                "{} does not archive: backups go to the WAL archive's store; set archive.enabled=true with \
                 archive.dir or archive.s3.bucket on every member",
                me()
            ),
        )
    })?;
    let pg =
        shared.pg.get().cloned().ok_or_else(|| {
            (tonic::Code::FailedPrecondition, format!("{} is a witness (no Postgres)", me()))
        })?;
    let running = shared
        .report
        .lock()
        .expect("lock is never poisoned")
        .as_ref()
        .and_then(|r| r.postgres.running().cloned());
    let Some(state) = running else {
        return Err((
            tonic::Code::FailedPrecondition,
            format!("Postgres on {} is not running; see pgquorumctl status", me()),
        ));
    };
    if shared.backup_running.swap(true, Ordering::SeqCst) {
        return Err((tonic::Code::AlreadyExists, format!("{} is taking a backup already", me())));
    }
    let (tx, rx) = tokio::sync::watch::channel(Progress::default());
    let shared = shared.clone();
    let job = tokio::spawn(async move {
        let res = create(&archive, &pg, !state.in_recovery, tx).await;
        shared.backup_running.store(false, Ordering::SeqCst);
        if res.is_ok()
            && let (Ok(policy), Some(layout)) = (Retention::parse(&policy), archive.layout())
            && let Err(e) = prune(archive.store.as_ref(), &layout, policy, crate::ha::observe::wall().0).await
        {
            tracing::warn!("backup retention: {e}");
        }
        match &res {
            Ok(m) => {
                let record = pgquorum_core::state::BackupRecord {
                    id: m.id.clone(),
                    member: cluster.me.name.clone(),
                    at: pgquorum_core::UnixMillis(m.end_ms),
                };
                // For status only: a lost proposal leaves an older record, nothing else.
                if let Err(e) = cluster.propose(pgquorum_core::state::Command::RecordBackup(record)).await {
                    tracing::info!("recording backup {} for status: {e}", m.id);
                }
            }
            Err(e) => tracing::warn!("base backup failed: {e}"),
        }
        res
    });
    Ok((job, rx))
}

/// Runs pg_basebackup and streams its tar into `upload`; returns the tar's size, the stored
/// size, the tar's SHA-256 and pg_basebackup's stderr.
async fn stream(
    archive: &Archive,
    pg: &PgCtx,
    upload: &mut Box<dyn Upload>,
    progress: &tokio::sync::watch::Sender<Progress>,
) -> Result<(u64, u64, String, String), String> {
    let mut cmd = tokio::process::Command::new(pg.bin.join("pg_basebackup"));
    clean_env(&mut cmd)
        .args(["-D", "-", "-F", "tar", "-X", "fetch", "-c", "fast", "--verbose", "--no-password"])
        .arg("-h")
        .arg(&pg.socket_dir)
        .args(["-p", &pg.port.to_string(), "-U", &pg.replication_user])
        .env("PGPASSFILE", &pg.passfile)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run pg_basebackup: {e}"))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let stderr = tokio::spawn(async move {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s).await;
        s
    });
    let mut enc = Encoder::new(archive.compression).map_err(|e| format!("compressor: {e}"))?;
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let (mut size, mut stored) = (0u64, 0u64);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = out.read(&mut buf).await.map_err(|e| format!("reading pg_basebackup's output: {e}"))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        size += n as u64;
        enc.write(&buf[..n]).map_err(|e| format!("compressing: {e}"))?;
        if enc.buffered().len() >= PART_BYTES {
            let part = std::mem::take(enc.buffered());
            stored += part.len() as u64;
            upload.part(part).await.map_err(|e| format!("uploading: {e}"))?;
        }
        progress.send_modify(|p| p.done = size);
    }
    let status = child.wait().await.map_err(|e| format!("waiting for pg_basebackup: {e}"))?;
    let stderr = stderr.await.unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(format!("pg_basebackup failed ({status}): {}", tail.join(" | ")));
    }
    let last = enc.finish().map_err(|e| format!("compressing: {e}"))?;
    stored += last.len() as u64;
    upload.part(last).await.map_err(|e| format!("uploading: {e}"))?;
    Ok((size, stored, super::codec::hex(sha.finish()), stderr))
}

/// Every backup stored for `layout`, oldest first (unreadable manifests are logged and skipped).
pub async fn list(store: &dyn Store, layout: &Layout) -> Result<Vec<Manifest>, String> {
    let entries = store.list(&backups_prefix(layout)).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.key.ends_with("/backup.json")) {
        let Some(bytes) = store.get(&e.key).await.map_err(|e| e.to_string())? else { continue };
        match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(m) => out.push(m),
            Err(err) => tracing::warn!("skipping backup manifest {}: {err}", e.key),
        }
    }
    out.sort_by(|a, b| (a.start_ms, &a.id).cmp(&(b.start_ms, &b.id)));
    Ok(out)
}

/// Removes backup `id`: the manifest first (it is no longer listed), then its data.
pub async fn delete(store: &dyn Store, layout: &Layout, id: &str) -> Result<(), String> {
    let all = list(store, layout).await?;
    let m = all.iter().find(|m| m.id == id).ok_or_else(|| {
        let known: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
        format!(
            "no backup {id:?}; stored backups: {}",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        )
    })?;
    store.delete(&manifest_key(layout, id)).await.map_err(|e| e.to_string())?;
    store.delete(&format!("{}/{}", layout.base(), m.data_key)).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// What retention removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Backups removed.
    pub backups: Vec<String>,
    /// WAL files removed.
    pub wal_files: usize,
}

/// Applies `policy`: removes expired backups, then the archived WAL that only they needed.
/// WAL is only ever removed below the start of the oldest backup kept.
pub async fn prune(
    store: &dyn Store,
    layout: &Layout,
    policy: Retention,
    now_ms: u64,
) -> Result<Pruned, String> {
    if policy == Retention::Forever {
        return Ok(Pruned::default());
    }
    let all = list(store, layout).await?;
    let gone = expired(&all, policy, now_ms);
    for id in &gone {
        delete(store, layout, id).await?;
    }
    let kept: Vec<&Manifest> = all.iter().filter(|m| !gone.contains(&m.id)).collect();
    let Some(oldest) = kept.iter().filter_map(|m| m.start()).min() else {
        return Ok(Pruned { backups: gone, wal_files: 0 });
    };
    let mut wal_files = 0;
    for e in store.list(&layout.wal_prefix()).await.map_err(|e| e.to_string())? {
        let name = e.key.rsplit('/').next().unwrap_or_default();
        if wal_unneeded(name, oldest) {
            store.delete(&e.key).await.map_err(|e| e.to_string())?;
            wal_files += 1;
        }
    }
    if !gone.is_empty() || wal_files > 0 {
        tracing::info!(backups = ?gone, wal_files, "retention removed expired backups and the WAL only they needed");
    }
    Ok(Pruned { backups: gone, wal_files })
}
