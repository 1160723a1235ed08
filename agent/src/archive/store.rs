//! Where archived objects live: the `Store` trait and its errors. Two backends implement it, a
//! directory (`dir.rs`) and S3 (`s3.rs`); everything above works on keys relative to the
//! store's root and never knows which one it talks to.
//!
//! A store only moves bytes. It must not interpret them (that is `codec.rs`) nor name them
//! (that is `layout.rs`).

use futures::future::BoxFuture;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Worth retrying: the store is unreachable, slow or busy.
    #[error("{0}")]
    Unavailable(String),
    /// Retrying will not help: permissions, a missing bucket, bad credentials, a bad key.
    #[error("{0}")]
    Permanent(String),
}

impl StoreError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, StoreError::Permanent(_))
    }
}

/// The result of `put_new`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// The object is now durably stored.
    Stored,
    /// An object already exists under this key; nothing was written.
    Exists,
}

/// One object in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Key relative to the store's root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A large object written in parts (base backups), never held whole in memory. Nothing is
/// visible under the key until `finish` returns.
pub trait Upload: Send {
    /// Appends `bytes` (every part but the last at least `PART_BYTES`).
    fn part(&mut self, bytes: Vec<u8>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Makes the object durable under its key.
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Gives the parts up.
    fn abort(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// A large object read in chunks.
pub trait Download: Send {
    /// The next chunk; `None` at the end.
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>>;
}

/// The size of every part of an `Upload` but the last (S3 needs at least 5 MiB).
pub const PART_BYTES: usize = 8 << 20;

/// A place objects are stored, addressed by `/`-separated keys.
pub trait Store: Send + Sync {
    /// Stores `bytes` under `key` unless an object already exists there (then `Put::Exists`).
    /// Returns only once the object is durable.
    fn put_new<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<Put, StoreError>>;
    /// Stores `bytes` under `key`, replacing what is there (backup manifests, markers).
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The object under `key`, `None` when there is none.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;
    /// The first `n` bytes of the object under `key` (all of it when shorter), `None` when there
    /// is none: what reading an object's header needs, without fetching its body.
    fn get_head<'a>(&'a self, key: &'a str, n: usize) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;
    /// Every object whose key starts with `prefix`, sorted by key.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Entry>, StoreError>>;
    /// Removes the object under `key` (no error when absent).
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Starts writing a large object under `key` (replacing what is there once finished).
    fn upload<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn Upload>, StoreError>>;
    /// Reads a large object in chunks; `None` when there is none.
    fn download<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Box<dyn Download>>, StoreError>>;
    /// Where the store is, for messages (`/mnt/archive`, `s3://bucket/prefix`).
    fn describe(&self) -> String;
}
