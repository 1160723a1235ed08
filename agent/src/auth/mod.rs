//! Who may change the cluster. Reading is open (status, configuration, history, health checks,
//! metrics); every call that changes something, and all agent-to-agent traffic, needs a token
//! or, with mutual TLS, a client certificate signed by the cluster's CA.
//!
//! Owns the decision (`Guard::check`, pure) and its wording, the token and TLS material, and the
//! gRPC layer that enforces it. The HTTP endpoint calls `Guard::check` itself. Must not know
//! what the calls do.

pub mod grpc;
pub mod tls;
mod token;

use std::path::PathBuf;

pub use token::{MIN_LEN, Tokens, ct_eq};

/// Authentication settings as configured (resolved by config validation).
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    /// `auth.token`: a token given in the configuration file or `PGQUORUM_AUTH_TOKEN`.
    pub token: Option<String>,
    /// `auth.token_file`: a file holding the token(s), one per line.
    pub token_file: Option<PathBuf>,
    /// `auth.allow_unauthenticated`: accept changes without credentials on a non-loopback listener.
    pub allow_unauthenticated: bool,
    /// The accepted tokens, loaded from one of the two above.
    pub tokens: Tokens,
}

impl AuthSettings {
    /// Loads the tokens; the error names the key and says what to do.
    pub fn resolve(&mut self) -> Result<(), String> {
        self.tokens = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err("auth.token and auth.token_file are both set; keep one of them".into());
            }
            (Some(t), None) => Tokens::single("auth.token", t)?,
            (None, Some(f)) => Tokens::from_file("auth.token_file", f)?,
            (None, None) => Tokens::default(),
        };
        // The token now lives in `tokens` only.
        self.token = None;
        Ok(())
    }
}

/// Which endpoint a guard protects; the wording of refusals depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// gRPC (pgquorumctl, other agents).
    Grpc,
    /// HTTP (Patroni-style clients, curl).
    Http,
}

/// Why a call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No token and no client certificate came with the call.
    Missing,
    /// A token came, but it is not one of this agent's.
    Wrong,
    /// This agent has no credentials configured and listens beyond loopback: changes are off.
    Disabled,
}

/// What one listener accepts for calls that change something.
#[derive(Clone, Debug)]
pub struct Guard {
    /// gRPC or HTTP.
    pub surface: Surface,
    /// Accepted tokens (empty: none configured).
    pub tokens: Tokens,
    /// Client certificates are verified on this listener (mutual TLS).
    pub client_certs: bool,
    /// With no credentials configured: accept anyone (loopback listener, or allowed explicitly).
    pub open: bool,
    /// The listen address, for messages.
    pub listen: String,
    /// This member's name, for messages.
    pub member: String,
}

/// Whether `host` (from host:port) is a loopback address.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Guard {
    /// The guard of a listener at `listen`.
    pub fn new(
        surface: Surface,
        auth: &AuthSettings,
        client_certs: bool,
        listen: &str,
        member: &str,
    ) -> Guard {
        let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
        Guard {
            surface,
            tokens: auth.tokens.clone(),
            client_certs,
            open: auth.allow_unauthenticated || is_loopback(host),
            listen: listen.to_string(),
            member: member.to_string(),
        }
    }

    /// Whether a call that changes something may go ahead, given the token it carries and
    /// whether its connection presented a verified client certificate.
    pub fn check(&self, token: Option<&str>, verified_cert: bool) -> Result<(), Denied> {
        if verified_cert && self.client_certs {
            return Ok(());
        }
        if !self.tokens.is_empty() {
            return match token {
                Some(t) if self.tokens.accepts(t) => Ok(()),
                Some(_) => Err(Denied::Wrong),
                None => Err(Denied::Missing),
            };
        }
        if self.client_certs {
            return Err(Denied::Missing);
        }
        if self.open { Ok(()) } else { Err(Denied::Disabled) }
    }

    /// `check` for a gRPC call to `path` (`/package.Service/Method`). Reading methods are open.
    /// With no credentials configured at all, members cannot prove anything to each other, so
    /// their Raft and peer traffic flows as it must; only operator changes are then refused.
    pub fn check_call(&self, path: &str, token: Option<&str>, verified_cert: bool) -> Result<(), Denied> {
        if !pgquorum_proto::auth::needs_credentials(path) {
            return Ok(());
        }
        match self.check(token, verified_cert) {
            Err(Denied::Disabled) if !path.starts_with("/pgquorum.management.") => Ok(()),
            other => other,
        }
    }

    /// What to tell the caller: what was wrong and how to fix it. `operator` is false for
    /// member-to-member calls (Raft, peer service), whose fix is in the agents' configuration.
    pub fn message(&self, d: Denied, operator: bool) -> String {
        let member = &self.member;
        if !operator {
            let certs = if self.client_certs { " or a certificate signed by tls.ca_file" } else { "" };
            return match d {
                Denied::Missing => format!(
                    "{member} refuses member-to-member calls without the cluster's token{certs}: give every member \
                     the same auth.token_file (or PGQUORUM_AUTH_TOKEN)"
                ),
                Denied::Wrong => format!(
                    "{member} refused the token of a member-to-member call: every member needs the same token in \
                     auth.token_file (to rotate, add the new token as a second line everywhere first; \
                     docs/security.md)"
                ),
                Denied::Disabled => {
                    format!("{member} refuses member-to-member calls: no credentials configured")
                }
            };
        }
        let how = match self.surface {
            Surface::Grpc => {
                let certs = if self.client_certs {
                    " or a client certificate signed by the cluster's CA (--ca-file, --cert-file, --key-file)"
                } else {
                    ""
                };
                format!(
                    "pgquorumctl sends the token from --token-file PATH, PGQUORUM_TOKEN_FILE or PGQUORUM_TOKEN{certs}"
                )
            }
            Surface::Http => {
                "send the header Authorization: Bearer <token> (or Basic auth with the token as the \
                              password)"
                    .to_string()
            }
        };
        match d {
            Denied::Missing => format!(
                "this call changes the cluster and requires the cluster's token: {how} (the agents read theirs from \
                 auth.token_file or PGQUORUM_AUTH_TOKEN)"
            ),
            Denied::Wrong => format!(
                "the token was refused: it is not one of {member}'s tokens (auth.token_file or \
                 PGQUORUM_AUTH_TOKEN); {how}, with the token the agents are configured with"
            ),
            Denied::Disabled => format!(
                "changes are refused: {member} has no token configured and listens on {}, beyond loopback. Set \
                 auth.token_file (or PGQUORUM_AUTH_TOKEN) on every agent{}; or set auth.allow_unauthenticated=true \
                 to let anyone who reaches this address change the cluster",
                self.listen,
                if self.surface == Surface::Grpc {
                    ", or mutual TLS (tls.cert_file, tls.key_file, tls.ca_file)"
                } else {
                    ""
                }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(tokens: &[&str], certs: bool, listen: &str, allow: bool) -> Guard {
        let mut auth = AuthSettings { allow_unauthenticated: allow, ..Default::default() };
        if !tokens.is_empty() {
            auth.tokens = Tokens::parse("t", &tokens.join("\n")).expect("valid tokens");
        }
        Guard::new(Surface::Grpc, &auth, certs, listen, "m1")
    }

    const TOKEN: &str = "correct-horse-battery-staple";

    #[test]
    fn a_configured_token_is_required_and_compared() {
        let g = guard(&[TOKEN], false, "127.0.0.1:7000", true);
        assert_eq!(g.check(Some(TOKEN), false), Ok(()));
        assert_eq!(g.check(None, false), Err(Denied::Missing), "loopback does not bypass a configured token");
        assert_eq!(g.check(Some("correct-horse-battery-stapl"), false), Err(Denied::Wrong));
        assert_eq!(g.check(None, true), Err(Denied::Missing), "a certificate counts only under mutual TLS");
    }

    #[test]
    fn with_mutual_tls_a_verified_certificate_or_the_token_is_enough() {
        let g = guard(&[TOKEN], true, "10.0.0.5:7000", false);
        assert_eq!(g.check(None, true), Ok(()));
        assert_eq!(g.check(Some(TOKEN), false), Ok(()));
        let g = guard(&[], true, "10.0.0.5:7000", false);
        assert_eq!(g.check(None, true), Ok(()));
        assert_eq!(g.check(None, false), Err(Denied::Missing));
    }

    #[test]
    fn without_credentials_only_loopback_or_an_explicit_opt_in_is_open() {
        assert_eq!(guard(&[], false, "127.0.0.1:7000", false).check(None, false), Ok(()));
        assert_eq!(guard(&[], false, "[::1]:7000", false).check(None, false), Ok(()));
        assert_eq!(guard(&[], false, "localhost:7000", false).check(None, false), Ok(()));
        let closed = guard(&[], false, "0.0.0.0:7000", false);
        assert_eq!(closed.check(Some("anything-at-all-here"), false), Err(Denied::Disabled));
        let msg = closed.message(Denied::Disabled, true);
        assert!(msg.contains("listens on 0.0.0.0:7000") && msg.contains("auth.token_file"), "{msg}");
        assert!(msg.contains("auth.allow_unauthenticated=true"), "{msg}");
        assert_eq!(guard(&[], false, "10.0.0.5:7000", true).check(None, false), Ok(()));
    }

    #[test]
    fn grpc_calls_reading_pass_and_peer_traffic_flows_when_no_credentials_exist() {
        let closed = guard(&[], false, "10.0.0.5:7000", false);
        assert_eq!(closed.check_call("/pgquorum.management.v1.Management/Status", None, false), Ok(()));
        assert_eq!(closed.check_call("/pgquorum.raft.v1.RaftService/AppendEntries", None, false), Ok(()));
        assert_eq!(closed.check_call("/pgquorum.peer.v1.PeerService/Propose", None, false), Ok(()));
        assert_eq!(
            closed.check_call("/pgquorum.management.v1.Management/Pause", None, false),
            Err(Denied::Disabled)
        );
        let guarded = guard(&[TOKEN], false, "10.0.0.5:7000", false);
        assert_eq!(guarded.check_call("/pgquorum.management.v1.Management/History", None, false), Ok(()));
        assert_eq!(
            guarded.check_call("/pgquorum.peer.v1.PeerService/Propose", None, false),
            Err(Denied::Missing),
            "with a token, a peer must carry it too"
        );
        assert_eq!(guarded.check_call("/pgquorum.raft.v1.RaftService/Vote", Some(TOKEN), false), Ok(()));
    }

    #[test]
    fn refusals_say_how_to_send_credentials() {
        let g = guard(&[TOKEN], false, "127.0.0.1:7000", false);
        let m = g.message(Denied::Missing, true);
        assert!(
            m.contains("--token-file") && m.contains("PGQUORUM_TOKEN") && m.contains("PGQUORUM_AUTH_TOKEN"),
            "{m}"
        );
        let peer = g.message(Denied::Wrong, false);
        assert!(
            peer.contains("member-to-member") && peer.contains("same token in auth.token_file"),
            "{peer}"
        );
        assert!(!peer.contains("pgquorumctl"), "a peer's refusal is about agent configuration: {peer}");
        let h = Guard { surface: Surface::Http, ..g };
        let m = h.message(Denied::Wrong, true);
        assert!(m.contains("Authorization: Bearer <token>"), "{m}");
    }
}
