//! How a caller proves who it is to an agent's gRPC endpoint: the token travels as
//! `authorization: Bearer <token>` metadata on every call (a client certificate, when the agents
//! run mutual TLS, proves it at the connection instead).
//!
//! Owns the wire convention only, shared by the agent (which checks it and attaches it when it
//! forwards), `pgquorumctl` and the tests. Must not decide who is allowed what; the agent does.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata key (and HTTP header) carrying the credentials.
pub const HEADER: &str = "authorization";

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
    fn the_interceptor_sets_the_header_only_with_a_token() {
        let mut with = AttachToken::new(Some("s3cret-token")).expect("valid");
        let req = with.call(Request::new(())).expect("passes");
        assert_eq!(req.metadata().get(HEADER).and_then(|v| v.to_str().ok()), Some("Bearer s3cret-token"));
        let mut without = AttachToken::new(None).expect("valid");
        assert!(without.call(Request::new(())).expect("passes").metadata().get(HEADER).is_none());
        assert!(AttachToken::new(Some("with\nnewline")).is_err());
    }
}
