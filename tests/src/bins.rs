//! Finding the binaries under test and free ports.

use std::net::TcpListener;
use std::path::PathBuf;

/// The directory holding `pgquorum-agent` and `pgquorumctl` (`PGQUORUM_BIN_DIR`, else the
/// cargo target directory this test binary was built into).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PGQUORUM_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut dir = exe.parent().expect("test binary has a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of one of the workspace's binaries; panics with the fix when it was not built. When
/// the harness is root, agents run as another user who may not reach the build directory (under
/// a 0700 home): the binary is then linked (or copied) into a world-readable directory.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first (cargo build --workspace --bins), or set PGQUORUM_BIN_DIR",
        p.display()
    );
    if !is_root() {
        return p;
    }
    shared_copy(&p).unwrap_or_else(|e| panic!("making {} reachable for the agents' user: {e}", p.display()))
}

fn shared_copy(p: &std::path::Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(p)?;
    let dir = std::env::temp_dir().join("pgquorum-test-bin").join(format!(
        "{}-{}-{}",
        meta.dev(),
        meta.ino(),
        meta.mtime()
    ));
    std::fs::create_dir_all(&dir)?;
    for d in [dir.parent().expect("has a parent"), dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
    }
    // Marked as in use (a long run that keeps starting agents keeps its copy), then the others
    // pruned.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.set_modified(std::time::SystemTime::now());
    }
    prune_old_copies(dir.parent().expect("has a parent"), &dir);
    // The agent starts its fence guard from its own directory: it goes along.
    let guard = p.with_file_name("pgquorum-fence-guard");
    if p.file_name().is_some_and(|n| n == "pgquorum-agent") && guard.exists() {
        place(&guard, &dir)?;
    }
    place(p, &dir)
}

/// Removes the copies of earlier builds (each rebuild makes a new directory, and a hard link
/// keeps the old binary's ~100 MB alive: a day of test runs filled the disk). A directory not
/// used for 3 hours (every lookup marks its own) belongs to no run still going; errors are
/// ignored (another process may be pruning too).
fn prune_old_copies(root: &std::path::Path, keep: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    let old = std::time::Duration::from_secs(3 * 3600);
    for e in entries.flatten() {
        let path = e.path();
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|a| a > old);
        if path != keep && stale {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Hard-links (or copies) `p` into `dir` under its own name, once.
fn place(p: &std::path::Path, dir: &std::path::Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let target = dir.join(p.file_name().expect("binary has a name"));
    if target.exists() {
        return Ok(target);
    }
    let tmp = dir.join(format!(
        ".{}.{}",
        std::process::id(),
        target.file_name().and_then(|f| f.to_str()).unwrap_or("bin")
    ));
    if std::fs::hard_link(p, &tmp).is_err() {
        std::fs::copy(p, &tmp)?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &target)?;
    Ok(target)
}

/// A TCP port free on 127.0.0.1 right now, and never handed out before by this process: the
/// kernel may offer a port again as soon as its probe is closed, and two members of one
/// cluster must not both get it (one Postgres then cannot listen).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no loopback port this process has not handed out already");
}

/// Whether tests that cut the network can run (network namespaces need root); without them
/// the test says so and passes, unless the run requires them (`PGQUORUM_REQUIRE_NETNS`, set by
/// `.ci/run` as root).
pub fn netns_available() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("PGQUORUM_REQUIRE_NETNS").is_none(),
        "this run requires network-namespace tests"
    );
    eprintln!("SKIPPED: cutting the network needs root (network namespaces)");
    false
}

/// Whether this process runs as root (network namespaces need it).
pub fn is_root() -> bool {
    pgquorum_chaos::is_root()
}

/// A Postgres binary from the directory the agent itself would use (`pgquorum-pgbin`).
pub fn postgres_bin(name: &str) -> PathBuf {
    let dir = pgquorum_pgbin::find(None).unwrap_or_else(|e| panic!("{e}"));
    let p = dir.join(name);
    assert!(p.is_file(), "{name} not found in {}", dir.display());
    p
}
