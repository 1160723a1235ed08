//! Tests of the archive over real stores: the directory backend always, S3 against a real moto
//! server (skipped with a message outside CI when moto is not installed). One conformance check
//! serves both backends; push and fetch run against a fake role.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use pgquorum_core::SystemId;

use super::dir::DirStore;
use super::fetch::{FetchError, Fetched};
use super::role::Role;
use super::s3::{S3Settings, S3Store};
use super::status::FailureKind;
use super::store::{Download, Entry, Put, Store, StoreError, Upload};
use super::{Archive, Compression};

/// What every store must do.
async fn conforms(s: &dyn Store) {
    assert_eq!(s.get("c/1/wal/a").await.expect("get"), None);
    assert_eq!(s.put_new("c/1/wal/a", b"one".to_vec()).await.expect("put"), Put::Stored);
    assert_eq!(s.put_new("c/1/wal/a", b"two".to_vec()).await.expect("put"), Put::Exists);
    assert_eq!(s.get("c/1/wal/a").await.expect("get").as_deref(), Some(&b"one"[..]), "overwritten");
    // The head of an object: its first bytes, all of a shorter one, nothing of a missing one.
    assert_eq!(s.get_head("c/1/wal/a", 2).await.expect("head").as_deref(), Some(&b"on"[..]));
    assert_eq!(s.get_head("c/1/wal/a", 256).await.expect("head").as_deref(), Some(&b"one"[..]));
    assert_eq!(s.get_head("c/1/wal/none", 2).await.expect("head"), None);
    s.put("c/3/empty", Vec::new()).await.expect("put empty");
    assert_eq!(s.get_head("c/3/empty", 2).await.expect("head of an empty object").as_deref(), Some(&b""[..]));
    s.delete("c/3/empty").await.expect("delete");
    s.put("c/1/backups/b", b"m".to_vec()).await.expect("put");
    s.put("c/1/backups/b", b"m2".to_vec()).await.expect("replace");
    assert_eq!(s.get("c/1/backups/b").await.expect("get").as_deref(), Some(&b"m2"[..]));
    let keys: Vec<String> = s.list("c/1/").await.expect("list").into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["c/1/backups/b", "c/1/wal/a"]);
    assert_eq!(s.list("c/1/wal/").await.expect("list")[0].size, 3);
    assert!(s.list("c/2/").await.expect("list").is_empty());
    s.delete("c/1/wal/a").await.expect("delete");
    s.delete("c/1/wal/a").await.expect("delete twice");
    assert_eq!(s.get("c/1/wal/a").await.expect("get"), None);
}

#[tokio::test]
async fn directory_store_conforms_and_refuses_keys_that_escape_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = DirStore::new(tmp.path().join("archive"));
    conforms(&s).await;
    assert!(s.put_new("../escape", vec![]).await.is_err_and(|e| e.is_permanent()));
}

fn moto_settings(m: &pgquorum_tests::moto::Moto, bucket: &str, when_required: bool) -> S3Settings {
    S3Settings {
        bucket: bucket.into(),
        region: "us-east-1".into(),
        endpoint: m.endpoint.clone(),
        path_style: true,
        access_key_id: Some(pgquorum_tests::moto::ACCESS_KEY.into()),
        secret_access_key: Some(pgquorum_tests::moto::SECRET_KEY.into()),
        checksum_when_required: when_required,
        sse: String::new(),
        timeout: std::time::Duration::from_secs(20),
    }
}

#[tokio::test]
async fn s3_store_conforms_against_moto_with_either_checksum_mode_and_prefixes_isolate() {
    let Some(m) = pgquorum_tests::moto::Moto::start() else { return };
    m.create_bucket("bucket-a");
    m.create_bucket("bucket-b");
    let a = S3Store::new(&moto_settings(&m, "bucket-a", false), "team/pg").await;
    conforms(&a).await;
    let b = S3Store::new(&moto_settings(&m, "bucket-b", true), "team/pg").await;
    conforms(&b).await;
    // A second prefix in the same bucket sees none of the first's objects.
    a.put("c/1/x", b"x".to_vec()).await.expect("put");
    let other = S3Store::new(&moto_settings(&m, "bucket-a", false), "other").await;
    assert!(other.list("").await.expect("list").is_empty());
    assert!(a.describe().starts_with("s3://bucket-a/team/pg"));
    // A missing bucket is a permanent error, not "not found".
    let missing = S3Store::new(&moto_settings(&m, "no-such-bucket", false), "").await;
    assert!(missing.get("c/1/x").await.is_err_and(|e| e.is_permanent()));
}

struct FakeRole {
    system: SystemId,
    primary: AtomicBool,
}

impl Role for FakeRole {
    fn system(&self) -> Option<SystemId> {
        Some(self.system)
    }
    fn archives(&self) -> bool {
        self.primary.load(Ordering::SeqCst)
    }
}

fn archive(store: Arc<dyn Store>, system: u64, compression: Compression) -> (Arc<Archive>, Arc<FakeRole>) {
    let role = Arc::new(FakeRole { system: SystemId(system), primary: AtomicBool::new(true) });
    (Archive::new(store, "demo".into(), compression, 2, role.clone()), role)
}

fn segment(dir: &Path, name: &str, fill: u8) -> std::path::PathBuf {
    let p = dir.join(name);
    let data: Vec<u8> =
        (0..16 * 1024 * 1024u32).map(|i| if i % 4096 < 64 { fill } else { (i % 7) as u8 }).collect();
    std::fs::write(&p, data).expect("write segment");
    p
}

#[tokio::test]
async fn push_is_idempotent_refuses_different_content_and_only_the_lease_holder_archives() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(DirStore::new(tmp.path().join("archive")));
    let (a, role) = archive(store.clone(), 42, Compression::Zstd);
    let wal = tmp.path().join("pg_wal");
    std::fs::create_dir_all(&wal).expect("mkdir");
    let name = "000000010000000000000001";
    let p = segment(&wal, name, 1);
    a.push(&p).await.expect("push");
    let stored = store.get(&format!("demo/42/wal/{name}")).await.expect("get").expect("stored");
    assert!(stored.len() < 2 * 1024 * 1024, "zstd did not compress: {}", stored.len());
    // Re-push of the same content (a new archive, as after an agent restart) succeeds.
    let (again, _) = archive(store.clone(), 42, Compression::Gzip);
    again.push(&p).await.expect("identical re-push");
    // Different content under the same name fails loudly and leaves the object alone.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    let p2 = segment(&other, name, 2);
    let (third, _) = archive(store.clone(), 42, Compression::Zstd);
    let e = third.push(&p2).await.expect_err("conflict");
    assert_eq!(e.kind, Some(FailureKind::Conflict), "{e:?}");
    assert!(e.msg.contains("never overwritten"), "{}", e.msg);
    assert_eq!(store.get(&format!("demo/42/wal/{name}")).await.expect("get").expect("kept"), stored);
    assert_eq!(third.status.snapshot().last_failure.map(|f| f.0), Some(FailureKind::Conflict));
    // Not the lease holder (a standby): refused until the primary stored that very file, and
    // nothing is written.
    role.primary.store(false, Ordering::SeqCst);
    let p3 = segment(&wal, "000000010000000000000002", 3);
    let e = a.push(&p3).await.expect_err("not primary");
    assert!(e.msg.contains("primary lease") && e.kind.is_none(), "{e:?}");
    assert_eq!(store.get("demo/42/wal/000000010000000000000002").await.expect("get"), None);
    a.push(&p).await.expect("a standby confirms a file the primary stored");
    let e = a.push(&p2).await.expect_err("a standby's diverged copy");
    assert_eq!(e.kind, Some(FailureKind::Conflict));
    // The last segment of an ended timeline: once the new primary stored it as `.partial`,
    // a standby's whole copy is confirmed (nobody archives it whole), and still not written.
    let last = segment(&wal, "000000010000000000000003", 4);
    assert!(a.push(&last).await.is_err(), "not before the .partial is stored");
    role.primary.store(true, Ordering::SeqCst);
    let partial = segment(&other, "000000010000000000000003.partial", 4);
    a.push(&partial).await.expect("the new primary archives the .partial");
    role.primary.store(false, Ordering::SeqCst);
    a.push(&last).await.expect("a standby confirms the ended timeline's last segment");
    assert_eq!(store.get("demo/42/wal/000000010000000000000003").await.expect("get"), None);
    // Names Postgres never archives are refused.
    assert!(a.push(&tmp.path().join("postgresql.conf")).await.is_err());
}

#[tokio::test]
async fn a_prefix_holding_another_systems_wal_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(DirStore::new(tmp.path().join("archive")));
    let (first, _) = archive(store.clone(), 1, Compression::None);
    let p = segment(tmp.path(), "000000010000000000000001", 1);
    first.push(&p).await.expect("push");
    let (second, _) = archive(store.clone(), 2, Compression::None);
    let e = second.push(&p).await.expect_err("foreign");
    assert_eq!(e.kind, Some(FailureKind::ForeignSystem));
    assert!(e.msg.contains("system identifier 1") && e.msg.contains("archive.prefix"), "{}", e.msg);
}

#[tokio::test]
async fn fetch_restores_verified_files_reports_missing_and_stops_on_a_flipped_byte() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("archive");
    let store: Arc<dyn Store> = Arc::new(DirStore::new(&root));
    let (a, _) = archive(store.clone(), 7, Compression::Zstd);
    let names = ["000000010000000000000001", "000000010000000000000002", "000000010000000000000003"];
    for (i, n) in names.iter().enumerate() {
        a.push(&segment(tmp.path(), n, i as u8)).await.expect("push");
    }
    let out = tmp.path().join("restore");
    std::fs::create_dir_all(&out).expect("mkdir");
    let dest = out.join("RECOVERYXLOG");
    assert_eq!(a.fetch(names[0], &dest).await.expect("fetch"), Fetched::Restored);
    assert_eq!(std::fs::read(&dest).expect("read"), std::fs::read(tmp.path().join(names[0])).expect("orig"));
    // The next segments were fetched ahead; serving them still verifies them.
    assert!(a.prefetch.pending.lock().expect("lock").contains_key(names[1]));
    assert_eq!(a.fetch(names[1], &dest).await.expect("fetch"), Fetched::Restored);
    assert_eq!(std::fs::read(&dest).expect("read"), std::fs::read(tmp.path().join(names[1])).expect("orig"));
    assert_eq!(a.fetch("000000010000000000000009", &dest).await.expect("fetch"), Fetched::Missing);
    // Flip one byte of the third object: the fetch names the segment and writes nothing.
    let key = root.join(format!("demo/7/wal/{}", names[2]));
    let mut bytes = std::fs::read(&key).expect("object");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&key, bytes).expect("corrupt");
    let (fresh, _) = archive(store, 7, Compression::Zstd);
    let fresh_dest = out.join("fresh");
    match fresh.fetch(names[2], &fresh_dest).await {
        Err(FetchError::Corrupt(m)) => assert!(m.contains(names[2]) && m.contains("damaged"), "{m}"),
        other => panic!("expected a corrupt error, got {other:?}"),
    }
    assert!(!fresh_dest.exists(), "a damaged file reached Postgres's path");
    assert!(
        std::fs::read_dir(&out).expect("ls").all(|e| !e
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .ends_with("tmp"))
    );
}

/// A store that counts the bytes its reads hand back (a mock around the directory store).
struct Counting {
    inner: DirStore,
    read: std::sync::atomic::AtomicUsize,
}

impl Counting {
    fn count(&self, got: &Option<Vec<u8>>) {
        self.read.fetch_add(got.as_ref().map_or(0, Vec::len), Ordering::SeqCst);
    }
}

impl Store for Counting {
    fn put_new<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<Put, StoreError>> {
        self.inner.put_new(key, bytes)
    }
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.put(key, bytes)
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        self.inner.get(key).inspect(|r| r.iter().for_each(|g| self.count(g))).boxed()
    }
    fn get_head<'a>(&'a self, key: &'a str, n: usize) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        self.inner.get_head(key, n).inspect(|r| r.iter().for_each(|g| self.count(g))).boxed()
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Entry>, StoreError>> {
        self.inner.list(prefix)
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.delete(key)
    }
    fn upload<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn Upload>, StoreError>> {
        self.inner.upload(key)
    }
    fn download<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Box<dyn Download>>, StoreError>> {
        self.inner.download(key)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[tokio::test]
async fn confirming_a_stored_segment_reads_only_its_header() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let counting =
        Arc::new(Counting { inner: DirStore::new(tmp.path().join("archive")), read: Default::default() });
    let store: Arc<dyn Store> = counting.clone();
    // Stored uncompressed, so reading the whole object would be 16 MiB.
    let (a, role) = archive(store, 42, Compression::None);
    let p = segment(tmp.path(), "000000010000000000000001", 1);
    a.push(&p).await.expect("the primary archives");
    let (again, _) = archive(counting.clone(), 42, Compression::None);
    again.push(&p).await.expect("a new primary re-pushes the same file");
    role.primary.store(false, Ordering::SeqCst);
    a.push(&p).await.expect("a standby confirms the stored file");
    let read = counting.read.load(Ordering::SeqCst);
    assert!(
        read <= 2 * super::codec::HEADER_MAX,
        "{read} bytes read from the store to compare two headers: is the whole object fetched again?"
    );
}
