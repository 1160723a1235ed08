//! WAL fetch: hand Postgres (`restore_command`) a WAL file from the archive, verified against
//! its checksum, written to a temporary name and renamed into `%p`, so Postgres never sees a
//! partial or corrupt file. After a segment, the next ones are fetched ahead in parallel.
//!
//! Must not write anything into the store.

use std::collections::BTreeMap;
use std::io::Write;
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
            None => self.clone().get_verified(layout.clone(), name.to_string()).await,
        };
        let data = match got {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(Fetched::Missing),
            Err(e) => {
                let kind = if matches!(e, FetchError::Corrupt(_)) {
                    FailureKind::Corrupt
                } else {
                    FailureKind::Unavailable
                };
                self.status.failed(kind, &e.to_string());
                return Err(e);
            }
        };
        write_atomically(dest, &data)
            .map_err(|e| FetchError::Unavailable(format!("writing {}: {e}", dest.display())))?;
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
                let fut = self.clone().get_verified(layout.clone(), n.clone()).boxed().shared();
                tokio::spawn(fut.clone());
                p.insert(n.clone(), fut);
            }
            next = n;
        }
    }

    /// The decoded, verified content of `name`; `None` when the archive lacks it.
    async fn get_verified(
        self: Arc<Self>,
        layout: Layout,
        name: String,
    ) -> Result<Option<Arc<Vec<u8>>>, FetchError> {
        let key = layout.wal(&name);
        let Some(object) = self.store.get(&key).await.map_err(|e| FetchError::Unavailable(e.to_string()))?
        else {
            return Ok(None);
        };
        let data = tokio::task::spawn_blocking(move || codec::decode(&object))
            .await
            .map_err(|e| FetchError::Unavailable(format!("decompressing {name}: {e}")))?
            .map_err(|e| {
                FetchError::Corrupt(format!(
                    "archived WAL file {name} ({}/{key}) is damaged: {e}; recovery stops here rather than \
                     replay it",
                    self.store.describe().trim_end_matches('/')
                ))
            })?;
        Ok(Some(Arc::new(data)))
    }
}

/// Writes `data` to a temporary file beside `dest`, fsyncs it and renames it into place.
pub fn write_atomically(dest: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".pgquorum-tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
