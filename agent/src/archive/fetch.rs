//! WAL fetch: hand Postgres (`restore_command`) a WAL file from the archive, unpacked into a
//! temporary name in pieces, verified against its checksum and only then renamed into `%p`, so
//! Postgres never sees a partial or corrupt file, and a 16 MiB segment is never held whole in
//! memory (glibc would keep the freed block: replicas restoring from the archive sat at 31 MiB).
//! After a segment, the next ones are fetched ahead in parallel (the stored objects, compressed).
//!
//! Must not write anything into the store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::codec;
use super::layout::{Layout, WalKind, next_segment, wal_kind};
use super::push::Archive;
use super::status::FailureKind;

/// What a fetch found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The file is in place.
    Restored,
    /// The archive does not have it (a clean "not found" for Postgres).
    Missing,
}

/// Why a fetch failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Worth retrying later: the store is unreachable, the local disk failed.
    #[error("{0}")]
    Unavailable(String),
    /// The stored object is damaged: recovery must stop rather than replay it.
    #[error("{0}")]
    Corrupt(String),
}

type Pending = Shared<BoxFuture<'static, Result<Option<Arc<Vec<u8>>>, FetchError>>>;

/// Segments being fetched ahead, by name.
#[derive(Default)]
pub struct Prefetch {
    pub(super) pending: Mutex<BTreeMap<String, Pending>>,
}

impl Archive {
    /// Restores WAL file `name` into `dest`.
    pub async fn fetch(self: &Arc<Self>, name: &str, dest: &Path) -> Result<Fetched, FetchError> {
        let kind = wal_kind(name)
            .ok_or_else(|| FetchError::Unavailable(format!("{name:?} is not a WAL file name")))?;
        let layout = self.layout().ok_or_else(|| {
            FetchError::Unavailable("the cluster's system identifier is not known yet".into())
        })?;
        let pending = {
            let mut p = self.prefetch.pending.lock().expect("lock is never poisoned");
            // Anything before the asked segment will not be asked for again.
            let stale: Vec<String> = p.keys().filter(|k| k.as_str() < name).cloned().collect();
            for k in stale {
                p.remove(&k);
            }
            p.remove(name)
        };
        let got = match pending {
            Some(p) => p.await,
            None => self.clone().get_object(layout.clone(), name.to_string()).await,
        };
        let written = match got {
            Ok(Some(object)) => self.unpack(&layout, name, object, dest).await,
            Ok(None) => return Ok(Fetched::Missing),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            let kind = if matches!(e, FetchError::Corrupt(_)) {
                FailureKind::Corrupt
            } else {
                FailureKind::Unavailable
            };
            self.status.failed(kind, &e.to_string());
            return Err(e);
        }
        self.status.update(|s| s.fetched_count += 1);
        if kind == WalKind::Segment {
            self.prefetch_after(&layout, name);
        }
        Ok(Fetched::Restored)
    }

    /// Starts fetching the `parallel` segments after `name`.
    fn prefetch_after(self: &Arc<Self>, layout: &Layout, name: &str) {
        let mut p = self.prefetch.pending.lock().expect("lock is never poisoned");
        let mut next = name.to_string();
        for _ in 0..self.parallel {
            let Some(n) = next_segment(&next) else { break };
            if !p.contains_key(&n) {
                let fut = self.clone().get_object(layout.clone(), n.clone()).boxed().shared();
                tokio::spawn(fut.clone());
                p.insert(n.clone(), fut);
            }
            next = n;
        }
    }

    /// The stored object of `name` (compressed, not yet verified); `None` when the archive
    /// lacks it.
    async fn get_object(
        self: Arc<Self>,
        layout: Layout,
        name: String,
    ) -> Result<Option<Arc<Vec<u8>>>, FetchError> {
        let key = layout.wal(&name);
        let object = self.store.get(&key).await.map_err(|e| FetchError::Unavailable(e.to_string()))?;
        Ok(object.map(Arc::new))
    }

    /// Unpacks `object` (WAL file `name`) into `dest` through a temporary file, verified.
    async fn unpack(
        &self,
        layout: &Layout,
        name: &str,
        object: Arc<Vec<u8>>,
        dest: &Path,
    ) -> Result<(), FetchError> {
        let to = dest.to_path_buf();
        let res = tokio::task::spawn_blocking(move || unpack_atomically(&object, &to))
            .await
            .map_err(|e| FetchError::Unavailable(format!("decompressing {name}: {e}")))?;
        match res {
            Ok(()) => Ok(()),
            Err(codec::DecodeError::Corrupt(e)) => Err(FetchError::Corrupt(format!(
                "archived WAL file {name} ({}/{}) is damaged: {e}; recovery stops here rather than replay it",
                self.store.describe().trim_end_matches('/'),
                layout.wal(name)
            ))),
            Err(codec::DecodeError::Write(e)) => {
                Err(FetchError::Unavailable(format!("writing {}: {e}", dest.display())))
            }
        }
    }
}

/// Unpacks `object` into a temporary file beside `dest`, fsyncs it and renames it into place
/// once verified; removes the temporary file when anything fails.
fn unpack_atomically(object: &[u8], dest: &Path) -> Result<(), codec::DecodeError> {
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".pgquorum-tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let write = codec::DecodeError::Write;
    let res = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(write)?;
        codec::decode_to(object, &mut f)?;
        f.sync_all().map_err(write)?;
        std::fs::rename(&tmp, dest).map_err(write)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
