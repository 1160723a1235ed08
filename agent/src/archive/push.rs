//! WAL push: store one WAL file (compressed, checksummed) and answer only once it is durable.
//! A file already stored with the same content is success (a retry after a crash, a new
//! primary re-pushing); different content under the same name is a loud failure and is never
//! overwritten. Uploads of one name are shared: Postgres's request joins an upload the
//! read-ahead loop (`ahead.rs`) already started.
//!
//! Must not decide who archives: it asks `Role`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::codec::{self, Compression};
use super::layout::{Layout, wal_kind};
use super::role::Role;
use super::status::{FailureKind, Tracker};
use super::store::{Put, Store, StoreError};

/// A failure to archive, with its kind (for status and metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushError {
    /// What went wrong.
    pub kind: Option<FailureKind>,
    /// The message for Postgres's log and status.
    pub msg: String,
}

impl PushError {
    fn new(kind: FailureKind, msg: String) -> PushError {
        PushError { kind: Some(kind), msg }
    }

    /// Not a failure of the archive: this member does not archive now, or was asked wrongly.
    fn refused(msg: String) -> PushError {
        PushError { kind: None, msg }
    }
}

impl From<StoreError> for PushError {
    fn from(e: StoreError) -> PushError {
        let kind = if e.is_permanent() { FailureKind::Refused } else { FailureKind::Unavailable };
        PushError::new(kind, e.to_string())
    }
}

type Upload = Shared<BoxFuture<'static, Result<(), PushError>>>;

/// The archive of one agent: its store, its settings and its memory of uploads.
pub struct Archive {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The cluster name (first part of every key).
    pub cluster: String,
    /// Compression of new objects.
    pub compression: Compression,
    /// Uploads at once.
    pub parallel: usize,
    /// Who may archive.
    pub role: Arc<dyn Role>,
    /// Status for `pgquorumctl status` and `/metrics`.
    pub status: Tracker,
    /// Uploads in flight, by WAL file name.
    inflight: Mutex<HashMap<String, Upload>>,
    /// Files stored since start that Postgres may still ask about (pruned by `ahead`).
    pub(super) stored: Mutex<HashMap<String, tokio::time::Instant>>,
    /// The system identifier whose prefix was checked for foreign WAL.
    checked: tokio::sync::Mutex<Option<pgquorum_core::SystemId>>,
    limit: tokio::sync::Semaphore,
    /// Segments fetched ahead for `restore_command`.
    pub(super) prefetch: super::fetch::Prefetch,
    /// Postgres asked to archive a file (wakes an idle read-ahead).
    pub(super) activity: tokio::sync::Notify,
}

impl Archive {
    /// An archive writing into `store`.
    pub fn new(
        store: Arc<dyn Store>,
        cluster: String,
        compression: Compression,
        parallel: usize,
        role: Arc<dyn Role>,
    ) -> Arc<Archive> {
        let parallel = parallel.max(1);
        Arc::new(Archive {
            status: Tracker::new(store.describe()),
            store,
            cluster,
            compression,
            parallel,
            role,
            inflight: Mutex::new(HashMap::new()),
            stored: Mutex::new(HashMap::new()),
            checked: tokio::sync::Mutex::new(None),
            limit: tokio::sync::Semaphore::new(parallel),
            prefetch: Default::default(),
            activity: tokio::sync::Notify::new(),
        })
    }

    /// The layout, once the cluster's system identifier is known.
    pub fn layout(&self) -> Option<Layout> {
        self.role.system().map(|system| Layout { cluster: self.cluster.clone(), system })
    }

    /// Archives the WAL file at `path` (Postgres's `%p`, made absolute). `Ok` only once it is
    /// durably stored, or already stored with the same content.
    pub async fn push(self: &Arc<Self>, path: &Path) -> Result<(), PushError> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if wal_kind(&name).is_none() {
            return Err(PushError::refused(format!("{name:?} is not a WAL file name Postgres archives")));
        }
        self.activity.notify_one();
        if !self.role.archives() {
            return self.confirm_stored(&name, path).await;
        }
        if self.stored.lock().expect("lock is never poisoned").contains_key(&name) {
            return Ok(());
        }
        let res = self.upload(name.clone(), path.to_path_buf()).await;
        if let Err(e) = &res
            && let Some(kind) = e.kind
        {
            self.status.failed(kind, &format!("{name}: {}", e.msg));
        }
        res
    }

    /// A standby's push (`archive_mode = always`): success only when the archive already holds
    /// this very file, so a standby keeps what the primary has not archived yet and archives it
    /// itself once promoted. It never writes. One exception: the last segment of a timeline
    /// that ended (a switchover or failover) is never archived whole; the new primary archived
    /// it as `<name>.partial` when it was promoted and the history goes on on its timeline.
    /// Once that `.partial` is stored, the standby's copy is confirmed too, or Postgres would
    /// keep it, and every segment after it, in `pg_wal` for good.
    async fn confirm_stored(&self, name: &str, path: &Path) -> Result<(), PushError> {
        let not_yet = || {
            PushError::refused(format!(
                "{name} is not in the archive yet; this member does not hold the primary lease, so it keeps the \
                 file until the primary has archived it (or until it is promoted and archives it itself)"
            ))
        };
        let layout = self.layout().ok_or_else(not_yet)?;
        let key = layout.wal(name);
        // Only the header is compared: a ranged read, not the whole object (each standby
        // confirms every segment the primary archives).
        let Some(existing) = self.store.get_head(&key, codec::HEADER_MAX).await.map_err(|_| not_yet())?
        else {
            let partial = layout.wal(&format!("{name}.partial"));
            let listed = self.store.list(&partial).await.map_err(|_| not_yet())?;
            return if listed.iter().any(|e| e.key == partial) { Ok(()) } else { Err(not_yet()) };
        };
        let file = path.to_path_buf();
        let (sha, len) = tokio::task::spawn_blocking(move || codec::sha256_from(std::fs::File::open(&file)?))
            .await
            .map_err(|e| PushError::refused(format!("reading {}: {e}", path.display())))?
            .map_err(|e| PushError::refused(format!("reading {}: {e}", path.display())))?;
        match codec::header(&existing) {
            Ok((h, _)) if h.len == len && h.sha256 == sha => Ok(()),
            _ => Err(PushError::new(
                FailureKind::Conflict,
                format!("{key} holds different content than this member's {name} (a diverged history?)"),
            )),
        }
    }

    /// Whether `name` is being uploaded.
    pub(super) fn in_flight(&self, name: &str) -> bool {
        self.inflight.lock().expect("lock is never poisoned").contains_key(name)
    }

    /// Starts (or joins) the upload of `name` from `path`.
    pub(super) fn upload(self: &Arc<Self>, name: String, path: std::path::PathBuf) -> Upload {
        let mut inflight = self.inflight.lock().expect("lock is never poisoned");
        if let Some(u) = inflight.get(&name) {
            return u.clone();
        }
        let me = self.clone();
        let key = name.clone();
        let fut = async move {
            let res = me.store_file(&key, &path).await;
            me.inflight.lock().expect("lock is never poisoned").remove(&key);
            if res.is_ok() {
                me.stored
                    .lock()
                    .expect("lock is never poisoned")
                    .insert(key.clone(), tokio::time::Instant::now());
                me.status.archived(&key);
            }
            res
        }
        .boxed()
        .shared();
        // Run it even if the asker goes away (Postgres's wal-push timed out): the next ask
        // then finds it done.
        tokio::spawn(fut.clone());
        inflight.insert(name, fut.clone());
        fut
    }

    async fn store_file(&self, name: &str, path: &Path) -> Result<(), PushError> {
        let _permit = self.limit.acquire().await.expect("the semaphore is never closed");
        let layout = self.checked_layout().await?;
        // Read and compressed in pieces: only the compressed object is held whole.
        let (compression, file) = (self.compression, path.to_path_buf());
        let object =
            tokio::task::spawn_blocking(move || codec::encode_from(std::fs::File::open(&file)?, compression))
                .await
                .map_err(|e| PushError::new(FailureKind::LocalFile, format!("compressing: {e}")))?
                .map_err(|e| {
                    PushError::new(
                        FailureKind::LocalFile,
                        format!("reading and compressing {}: {e}", path.display()),
                    )
                })?;
        let (header, _) = codec::header(&object).expect("encode writes a header");
        let key = layout.wal(name);
        match self.store.put_new(&key, object).await? {
            Put::Stored => Ok(()),
            Put::Exists => {
                let existing = self.store.get_head(&key, codec::HEADER_MAX).await?.ok_or_else(|| {
                    PushError::new(FailureKind::Unavailable, format!("{key} vanished while being compared"))
                })?;
                match codec::header(&existing) {
                    Ok((h, _)) if h.sha256 == header.sha256 && h.len == header.len => Ok(()),
                    Ok((h, _)) => Err(PushError::new(
                        FailureKind::Conflict,
                        format!(
                            "{key} already holds different content (SHA-256 {}, this file {}); it is never \
                             overwritten: find out which primary wrote it (two clusters sharing a prefix?)",
                            h.sha256, header.sha256
                        ),
                    )),
                    Err(e) => Err(PushError::new(
                        FailureKind::Conflict,
                        format!(
                            "{key} already exists and is not a readable pgquorum object ({e}); not overwritten"
                        ),
                    )),
                }
            }
        }
    }

    /// The layout, after checking once per system identifier that no other system's WAL is
    /// stored under this cluster's name.
    async fn checked_layout(&self) -> Result<Layout, PushError> {
        let layout = self
            .layout()
            .ok_or_else(|| PushError::refused("the cluster's system identifier is not known yet".into()))?;
        let mut checked = self.checked.lock().await;
        if *checked == Some(layout.system) {
            return Ok(layout);
        }
        let prefix = layout.cluster_prefix();
        let listing = self.store.list(&prefix).await?;
        let foreign = layout.foreign_systems(listing.iter().map(|e| e.key.as_str()));
        if !foreign.is_empty() {
            return Err(PushError::new(
                FailureKind::ForeignSystem,
                format!(
                    "{}/{prefix} holds WAL of system identifier {} but this cluster's is {}: another cluster \
                     archives there; give this cluster its own archive.prefix (or cluster name), or move the \
                     old archive away",
                    self.store.describe().trim_end_matches('/'),
                    foreign.join(", "),
                    layout.system
                ),
            ));
        }
        *checked = Some(layout.system);
        Ok(layout)
    }
}
