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

/// Path of one of the workspace's binaries; panics with the fix when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first (cargo build --workspace --bins), or set PGQUORUM_BIN_DIR",
        p.display()
    );
    p
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether this process runs as root (network namespaces need it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
