//! A real S3 API for tests: `moto_server` (PyPI `moto[server]`) from the venv `.ci/run`
//! creates, on 127.0.0.1 and a free port, stopped by PID when dropped.
//!
//! Without the venv a test skips with a message, except under CI (`CI` set), where it fails:
//! CI must run every S3 test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;

use crate::bins::free_port;
use crate::wait::wait_for;

/// Access key the tests use (moto accepts any).
pub const ACCESS_KEY: &str = "pgquorum-test-key";
/// Secret key the tests use; handed to agents by file or environment, never a flag.
pub const SECRET_KEY: &str = "pgquorum-test-secret";

/// A running moto server.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

/// Where the moto server binary is: `$PGQUORUM_VENV/bin/moto_server`, by default under
/// `$HOME/.cache/pgquorum-venv`.
pub fn moto_bin() -> PathBuf {
    let venv = std::env::var_os("PGQUORUM_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/pgquorum-venv")
    });
    venv.join("bin/moto_server")
}

impl Moto {
    /// Starts moto; `None` (after saying why) when it is not installed and this is not CI.
    pub fn start() -> Option<Moto> {
        let bin = moto_bin();
        if !bin.exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{} is missing: .ci/run installs moto[server] into that venv",
                bin.display()
            );
            eprintln!(
                "SKIPPED: {} is missing (run .ci/run, or pip install 'moto[server]' into it)",
                bin.display()
            );
            return None;
        }
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let addr = format!("127.0.0.1:{port}");
        let m = Moto { child, endpoint: format!("http://{addr}"), addr };
        wait_for("moto to accept connections", Duration::from_secs(60), || {
            Ok(crate::http::get(&m.addr, "/").ok().map(|_| ()))
        });
        Some(m)
    }

    /// Creates a bucket (moto accepts unsigned requests).
    pub fn create_bucket(&self, name: &str) {
        let a = crate::http::request(&self.addr, "PUT", &format!("/{name}")).expect("create bucket");
        assert!(a.status == 200, "creating bucket {name}: {} {}", a.status, a.body);
    }

    /// Keys in `bucket` under `prefix` (up to 1000; moto answers unsigned listings).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let a =
            crate::http::get(&self.addr, &format!("/{bucket}?list-type=2&prefix={prefix}")).expect("list");
        assert!(a.status == 200, "listing {bucket}/{prefix}: {} {}", a.status, a.body);
        a.body
            .split("<Key>")
            .skip(1)
            .filter_map(|k| k.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }

    /// Freezes the server (SIGSTOP): S3 stops answering, nothing stored is lost.
    pub fn freeze(&self) {
        crate::procs::signal(self.child.id(), Signal::STOP);
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) {
        crate::procs::signal(self.child.id(), Signal::CONT);
    }

    /// `--set` lines for an agent archiving into `bucket` (the secret key goes by file).
    pub fn agent_settings(&self, bucket: &str, secret_file: &std::path::Path) -> Vec<String> {
        vec![
            "archive.enabled=true".into(),
            format!("archive.s3.bucket={bucket}"),
            format!("archive.s3.endpoint={}", self.endpoint),
            "archive.s3.path_style=true".into(),
            format!("archive.s3.access_key_id={ACCESS_KEY}"),
            format!("archive.s3.secret_access_key_file={}", secret_file.display()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        crate::procs::signal(self.child.id(), Signal::CONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
