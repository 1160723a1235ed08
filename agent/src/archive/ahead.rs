//! Read-ahead: while this member archives, look at `pg_wal/archive_status/*.ready` (every
//! 200 ms while files wait; when Postgres pushes one, or every 2 s, while none does) and start
//! uploading those files before Postgres asks, up to `archive.parallel` at once, so a busy
//! primary's `wal-push` usually finds its file already stored. Also measures the backlog
//! (files ready, age of the oldest) for status and metrics.
//!
//! Must not acknowledge anything to Postgres: only `wal-push` answers it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::layout::wal_kind;
use super::push::Archive;

/// The WAL files Postgres marked ready to archive, oldest first, with their ages.
pub fn ready_files(pg_wal: &Path) -> Vec<(String, Duration)> {
    let Ok(rd) = std::fs::read_dir(pg_wal.join("archive_status")) else { return Vec::new() };
    let now = SystemTime::now();
    let mut out: Vec<(String, Duration)> = rd
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let name = file.strip_suffix(".ready")?.to_string();
            wal_kind(&name)?;
            let age = e.metadata().ok()?.modified().ok().and_then(|m| now.duration_since(m).ok());
            Some((name, age.unwrap_or_default()))
        })
        .collect();
    // History files first (a new timeline's history before its segments), then by name.
    out.sort_by(|a, b| (!a.0.ends_with(".history"), &a.0).cmp(&(!b.0.ends_with(".history"), &b.0)));
    out
}

/// Runs the read-ahead for the data directory's `pg_wal` until `cancel`.
pub async fn run(archive: Arc<Archive>, pg_wal: PathBuf, every: Duration, cancel: CancellationToken) {
    loop {
        let active = archive.role.archives();
        let ready = if active { ready_files(&pg_wal) } else { Vec::new() };
        archive.status.update(|s| {
            s.active = active;
            s.pending_files = ready.len() as u64;
            s.lag_seconds = ready.iter().map(|(_, age)| age.as_secs_f64()).fold(0.0, f64::max);
        });
        {
            // Forget stored files Postgres no longer lists as ready (it renamed them .done).
            let mut stored = archive.stored.lock().expect("lock is never poisoned");
            let keep_for = Duration::from_secs(600);
            stored.retain(|name, at| ready.iter().any(|(n, _)| n == name) || at.elapsed() < keep_for);
        }
        // After a failure, leave retries to Postgres's own pace for a while.
        let unix_now =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let failed_lately =
            archive.status.snapshot().last_failure.is_some_and(|(_, _, at)| unix_now - at < 5.0);
        if active && !failed_lately && archive.layout().is_some() {
            let stored = archive.stored.lock().expect("lock is never poisoned").clone();
            let todo = ready.iter().filter(|(n, _)| !stored.contains_key(n) && !archive.in_flight(n));
            for (name, _) in todo.take(archive.parallel) {
                let upload = archive.upload(name.clone(), pg_wal.join(name));
                let (archive, name) = (archive.clone(), name.clone());
                tokio::spawn(async move {
                    if let Err(e) = upload.await
                        && let Some(kind) = e.kind
                    {
                        archive.status.failed(kind, &format!("{name}: {}", e.msg));
                    }
                });
            }
        }
        // Nothing waiting: look again when Postgres asks to archive something, or after
        // `IDLE_EVERY` (an idle member does not list pg_wal five times a second), with the first
        // Raft message after that (no wake-up of its own: `timer::at_beat`).
        let now = tokio::time::Instant::now();
        let next = async {
            if ready.is_empty() {
                crate::timer::at_beat(now + IDLE_EVERY).await
            } else {
                tokio::time::sleep_until(now + every).await
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = next => {}
            _ = archive.activity.notified() => {}
        }
    }
}

/// How often the read-ahead looks while nothing is waiting (Postgres's own push wakes it).
const IDLE_EVERY: Duration = Duration::from_secs(2);
