//! The directory backend: objects are files under a root directory (a second disk, an NFS
//! mount). A new object is written to a temporary file, fsynced, and linked into place, which
//! fails if the name exists: an archived file is never overwritten, even by a racing writer.
//!
//! Must not interpret object contents.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::store::{Download, Entry, Put, Store, StoreError, Upload};

/// A store in a local directory.
#[derive(Clone, Debug)]
pub struct DirStore {
    root: PathBuf,
}

fn err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    let msg = format!("{what} {}: {e}", path.display());
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            StoreError::Permanent(msg)
        }
        _ => StoreError::Unavailable(msg),
    }
}

impl DirStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> DirStore {
        DirStore { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        if key.is_empty() || key.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            return Err(StoreError::Permanent(format!("invalid object key {key:?}")));
        }
        Ok(self.root.join(key))
    }

    /// Writes `bytes` to a fresh temporary file beside `path`, fsynced; returns its path.
    fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let parent = path.parent().expect("object paths are under the root");
        std::fs::create_dir_all(parent).map_err(|e| err("creating", parent, e))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        let tmp = parent.join(format!(".{name}.{}.{}.tmp", std::process::id(), rand::random::<u32>()));
        let mut f = std::fs::File::create(&tmp).map_err(|e| err("creating", &tmp, e))?;
        f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err("writing", &tmp, e)
        })?;
        Ok(tmp)
    }

    fn sync_dir(dir: &Path) -> Result<(), StoreError> {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| err("syncing", dir, e))
    }

    fn put_new_blocking(&self, key: &str, bytes: &[u8]) -> Result<Put, StoreError> {
        let path = self.path(key)?;
        if path.exists() {
            return Ok(Put::Exists);
        }
        let tmp = Self::write_temp(&path, bytes)?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                Self::sync_dir(path.parent().expect("under the root"))?;
                Ok(Put::Stored)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Put::Exists),
            Err(e) => Err(err("linking", &path, e)),
        }
    }

    fn put_blocking(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let tmp = Self::write_temp(&path, bytes)?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err("renaming into", &path, e)
        })?;
        Self::sync_dir(path.parent().expect("under the root"))
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        // Walk the deepest directory the prefix names completely, then filter.
        let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let start = if dir_part.is_empty() { self.root.clone() } else { self.root.join(dir_part) };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err("listing", &dir, e)),
            };
            for item in rd {
                let item = item.map_err(|e| err("listing", &dir, e))?;
                let meta = item.metadata().map_err(|e| err("reading", &item.path(), e))?;
                let p = item.path();
                if meta.is_dir() {
                    stack.push(p);
                    continue;
                }
                let Ok(rel) = p.strip_prefix(&self.root) else { continue };
                let key = rel.to_string_lossy().into_owned();
                let hidden = key.rsplit('/').next().is_some_and(|n| n.starts_with('.'));
                if !hidden && key.starts_with(prefix) {
                    out.push(Entry { key, size: meta.len() });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("file task failed: {e}")))?
}

impl Store for DirStore {
    fn put_new<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<Put, StoreError>> {
        let (me, key) = (self.clone(), key.to_string());
        blocking(move || me.put_new_blocking(&key, &bytes)).boxed()
    }

    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<(), StoreError>> {
        let (me, key) = (self.clone(), key.to_string());
        blocking(move || me.put_blocking(&key, &bytes)).boxed()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        let (me, key) = (self.clone(), key.to_string());
        blocking(move || {
            let path = me.path(&key)?;
            match std::fs::read(&path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(err("reading", &path, e)),
            }
        })
        .boxed()
    }

    fn get_head<'a>(&'a self, key: &'a str, n: usize) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        let (me, key) = (self.clone(), key.to_string());
        blocking(move || {
            let path = me.path(&key)?;
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(err("opening", &path, e)),
            };
            let mut head = Vec::with_capacity(n);
            file.take(n as u64).read_to_end(&mut head).map_err(|e| err("reading", &path, e))?;
            Ok(Some(head))
        })
        .boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Entry>, StoreError>> {
        let (me, prefix) = (self.clone(), prefix.to_string());
        blocking(move || me.list_blocking(&prefix)).boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let (me, key) = (self.clone(), key.to_string());
        blocking(move || {
            let path = me.path(&key)?;
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(err("removing", &path, e)),
            }
        })
        .boxed()
    }

    fn upload<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn Upload>, StoreError>> {
        let (me, key) = (self.clone(), key.to_string());
        blocking(move || {
            let path = me.path(&key)?;
            let tmp = Self::write_temp(&path, &[])?;
            let file =
                std::fs::OpenOptions::new().append(true).open(&tmp).map_err(|e| err("opening", &tmp, e))?;
            Ok(Box::new(DirUpload { file: Some(file), tmp, path }) as Box<dyn Upload>)
        })
        .boxed()
    }

    fn download<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Box<dyn Download>>, StoreError>> {
        let (me, key) = (self.clone(), key.to_string());
        blocking(move || {
            let path = me.path(&key)?;
            match std::fs::File::open(&path) {
                Ok(f) => Ok(Some(Box::new(DirDownload { file: Some(f), path }) as Box<dyn Download>)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(err("opening", &path, e)),
            }
        })
        .boxed()
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// A large object being written to a temporary file beside its final name.
struct DirUpload {
    file: Option<std::fs::File>,
    tmp: PathBuf,
    path: PathBuf,
}

impl Upload for DirUpload {
    fn part(&mut self, bytes: Vec<u8>) -> BoxFuture<'_, Result<(), StoreError>> {
        let (file, tmp) = (self.file.take(), self.tmp.clone());
        async move {
            let mut file = file.ok_or_else(|| StoreError::Permanent("upload already failed".into()))?;
            let file = blocking(move || {
                file.write_all(&bytes).map_err(|e| err("writing", &tmp, e))?;
                Ok(file)
            })
            .await?;
            self.file = Some(file);
            Ok(())
        }
        .boxed()
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        blocking(move || {
            let file = self.file.ok_or_else(|| StoreError::Permanent("upload already failed".into()))?;
            file.sync_all().map_err(|e| err("syncing", &self.tmp, e))?;
            std::fs::rename(&self.tmp, &self.path).map_err(|e| {
                let _ = std::fs::remove_file(&self.tmp);
                err("renaming into", &self.path, e)
            })?;
            DirStore::sync_dir(self.path.parent().expect("under the root"))
        })
        .boxed()
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        let _ = std::fs::remove_file(&self.tmp);
        async {}.boxed()
    }
}

/// A large object read from its file.
struct DirDownload {
    file: Option<std::fs::File>,
    path: PathBuf,
}

impl Download for DirDownload {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        let (file, path) = (self.file.take(), self.path.clone());
        async move {
            let Some(mut file) = file else { return Ok(None) };
            let (file, chunk) = blocking(move || {
                let mut buf = vec![0u8; 1 << 20];
                let n = file.read(&mut buf).map_err(|e| err("reading", &path, e))?;
                buf.truncate(n);
                Ok((file, buf))
            })
            .await?;
            if chunk.is_empty() {
                return Ok(None);
            }
            self.file = Some(file);
            Ok(Some(chunk))
        }
        .boxed()
    }
}
