//! The local channel between Postgres's `archive_command` / `restore_command` and the running
//! agent: a Unix socket in Postgres's socket directory (mode 0700, so only the Postgres OS
//! user reaches it). One request line per connection, one answer line:
//!
//! ```text
//! push\t<absolute path>            ->  ok | error\t<message>
//! fetch\t<name>\t<absolute dest>   ->  ok | missing | error\t<message> | corrupt\t<message>
//! ```
//! `pgquorum-agent wal-push` / `wal-fetch` are the clients. Must not decide anything.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use super::fetch::{FetchError, Fetched};
use super::push::Archive;

/// The socket's file name in the socket directory.
pub const SOCKET_NAME: &str = ".pgquorum-archive.sock";

/// How long the agent works on one fetch before answering "try later" (a promotion asks for
/// history files and must not wait on an unreachable store).
const FETCH_DEADLINE: Duration = Duration::from_secs(10);

/// Binds the socket at `path` (replacing a stale one), private to this user.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves requests until `cancel`.
pub async fn serve(
    listener: UnixListener,
    archive: Arc<Archive>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            a = listener.accept() => a?,
        };
        let archive = archive.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut r = tokio::io::BufReader::new(r);
            if r.read_line(&mut line).await.is_err() {
                return;
            }
            let answer = answer(&archive, line.trim_end_matches('\n')).await;
            let _ = w.write_all(format!("{answer}\n").as_bytes()).await;
        });
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

async fn answer(archive: &Arc<Archive>, line: &str) -> String {
    let parts: Vec<&str> = line.split('\t').collect();
    match parts[..] {
        ["push", path] => match archive.push(Path::new(path)).await {
            Ok(()) => "ok".into(),
            Err(e) => format!("error\t{}", one_line(&e.msg)),
        },
        ["fetch", name, dest] => {
            match tokio::time::timeout(FETCH_DEADLINE, archive.fetch(name, Path::new(dest))).await {
                Ok(Ok(Fetched::Restored)) => "ok".into(),
                Ok(Ok(Fetched::Missing)) => "missing".into(),
                Ok(Err(FetchError::Corrupt(m))) => format!("corrupt\t{}", one_line(&m)),
                Ok(Err(FetchError::Unavailable(m))) => format!("error\t{}", one_line(&m)),
                Err(_) => format!("error\tfetching {name} took longer than {FETCH_DEADLINE:?}; try again"),
            }
        }
        _ => format!("error\tunknown request {:?}", one_line(line)),
    }
}

/// What the agent answered a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Done.
    Ok,
    /// Not in the archive.
    Missing,
    /// Failed; try again later.
    Error(String),
    /// The archived file is damaged.
    Corrupt(String),
}

/// Sends one request to the agent at `socket` and waits for its answer (client side; blocking).
pub fn request(socket: &Path, line: &str, timeout: Duration) -> Answer {
    let run = || -> std::io::Result<String> {
        let mut s = std::os::unix::net::UnixStream::connect(socket)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(format!("{line}\n").as_bytes())?;
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer)?;
        Ok(answer)
    };
    match run() {
        Ok(a) => {
            let a = a.trim_end_matches('\n');
            match a.split_once('\t') {
                None if a == "ok" => Answer::Ok,
                None if a == "missing" => Answer::Missing,
                Some(("corrupt", m)) => Answer::Corrupt(m.to_string()),
                Some(("error", m)) => Answer::Error(m.to_string()),
                _ if a.is_empty() => {
                    Answer::Error("the agent closed the connection without answering".into())
                }
                _ => Answer::Error(format!("unexpected answer {a:?}")),
            }
        }
        Err(e) => Answer::Error(format!(
            "cannot reach the pgquorum agent at {}: {e} (is the agent running?)",
            socket.display()
        )),
    }
}

/// `path` made absolute against the current directory (Postgres runs the commands in the data
/// directory and passes relative paths).
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}
