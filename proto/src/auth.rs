//! How a caller proves who it is to an agent's gRPC endpoint: the token travels as
//! `authorization: Bearer <token>` metadata on every call (a client certificate, when the agents
//! run mutual TLS, proves it at the connection instead).
//!
//! Owns the wire convention, shared by the agent (which checks it and attaches it when it
//! forwards), `pgquorumctl` and the tests, and the one rule both apply to files holding a secret
//! (`read_secret`). Must not decide who is allowed what; the agent does.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata key (and HTTP header) carrying the credentials.
pub const HEADER: &str = "authorization";

/// The environment variables pgquorumctl reads its credentials from. They are not agent
/// configuration keys: the agent ignores them, the test harness clears them.
pub const CTL_CREDENTIAL_VARIABLES: &[&str] = &[
    "PGQUORUM_TOKEN",
    "PGQUORUM_TOKEN_FILE",
    "PGQUORUM_CA_FILE",
    "PGQUORUM_CERT_FILE",
    "PGQUORUM_KEY_FILE",
    "PGQUORUM_SERVER_NAME",
];

/// The management calls anyone may make without credentials: they only read.
pub const OPEN_METHODS: &[&str] = &[
    "/pgquorum.management.v1.Management/Status",
    "/pgquorum.management.v1.Management/GetConfig",
    "/pgquorum.management.v1.Management/History",
];

/// Whether the gRPC method at `path` (`/package.Service/Method`) needs credentials.
pub fn needs_credentials(path: &str) -> bool {
    !OPEN_METHODS.contains(&path)
}

/// The token in an `authorization` value, if it is `Bearer <token>` (scheme case-insensitive).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Mode bits a secret file must not have: written by its group, or anything for other users.
/// Group read stays allowed (`0640` with a group only the agent's user belongs to).
const TOO_OPEN: u32 = 0o027;

/// Reads a file holding a secret (a token, a private key). Refuses a file every user of the
/// machine could read, or others could overwrite, since anyone who reads the token may change the
/// cluster. The error names the path and the fix; callers put the key or flag in front of it.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & TOO_OPEN != 0 {
        let who = if mode & 0o004 != 0 { "readable by every user" } else { "writable by other users" };
        return Err(format!(
            "{} is {who} (mode {mode:03o}): run chmod 600 {} (or 640 with a group only the agent's user is in)",
            path.display(),
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Adds `authorization: Bearer <token>` to every request (nothing when there is no token).
#[derive(Clone, Debug, Default)]
pub struct AttachToken(Option<MetadataValue<Ascii>>);

impl AttachToken {
    /// An interceptor sending `token`; the error says why the token cannot be sent.
    pub fn new(token: Option<&str>) -> Result<AttachToken, String> {
        let Some(token) = token else { return Ok(AttachToken(None)) };
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token must be printable ASCII without spaces".to_string())?;
        Ok(AttachToken(Some(value)))
    }
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(HEADER, v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_status_config_and_history_are_open() {
        assert!(!needs_credentials("/pgquorum.management.v1.Management/Status"));
        assert!(!needs_credentials("/pgquorum.management.v1.Management/History"));
        for m in ["Management/Pause", "Management/SetConfig", "Management/Switchover"] {
            assert!(needs_credentials(&format!("/pgquorum.management.v1.{m}")), "{m}");
        }
        assert!(needs_credentials("/pgquorum.peer.v1.PeerService/Propose"));
        assert!(needs_credentials("/pgquorum.raft.v1.RaftService/AppendEntries"));
    }

    #[test]
    fn bearer_values_parse_and_others_do_not() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn secret_files_other_users_can_read_or_write_are_refused_with_the_chmod() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let f = dir.join("token");
        std::fs::write(&f, "s3cret\n").expect("write");
        let set = |mode| std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).expect("chmod");
        for ok in [0o600, 0o400, 0o640] {
            set(ok);
            assert_eq!(read_secret(&f).as_deref(), Ok(&b"s3cret\n"[..]), "mode {ok:o}");
        }
        set(0o644);
        let err = read_secret(&f).expect_err("world-readable");
        assert!(err.contains("readable by every user (mode 644): run chmod 600"), "{err}");
        set(0o660);
        let err = read_secret(&f).expect_err("group-writable");
        assert!(err.contains("writable by other users (mode 660)"), "{err}");
        let err = read_secret(&dir.join("missing")).expect_err("missing");
        assert!(err.starts_with("cannot read ") && err.contains("missing"), "{err}");
        assert!(read_secret(dir).expect_err("a directory").contains("is not a file"));
    }

    #[test]
    fn the_interceptor_sets_the_header_only_with_a_token() {
        let mut with = AttachToken::new(Some("s3cret-token")).expect("valid");
        let req = with.call(Request::new(())).expect("passes");
        assert_eq!(req.metadata().get(HEADER).and_then(|v| v.to_str().ok()), Some("Bearer s3cret-token"));
        let mut without = AttachToken::new(None).expect("valid");
        assert!(without.call(Request::new(())).expect("passes").metadata().get(HEADER).is_none());
        assert!(AttachToken::new(Some("with\nnewline")).is_err());
    }
}
