//! Configuration keys of authentication (`auth.*`: the token that guards changes) and mutual TLS
//! (`tls.*`: certificates for the gRPC endpoint), and their resolution once the addresses are
//! known. A token is never accepted from a command line flag (see `load`).
//!
//! Must not start anything; the daemon builds the guards and TLS configurations from the result.

use std::path::PathBuf;

use super::AgentConfig;
use super::keys::KeyDef;

fn path(v: &str) -> Option<PathBuf> {
    (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()))
}

/// Keys under `auth.` and `tls.`.
pub const SECURITY_KEYS: &[KeyDef] = &[
    KeyDef {
        key: "auth.token",
        default: "",
        help: "The cluster's token: calls that change the cluster (gRPC and HTTP) and agent-to-agent calls must \
               carry it. The same on every member, at least 16 printable characters. From the configuration file or \
               PGQUORUM_AUTH_TOKEN, never --set; prefer auth.token_file.",
        set: |c, _, v| {
            c.auth.token = (!v.trim().is_empty()).then(|| v.trim().to_string());
            Ok(())
        },
    },
    KeyDef {
        key: "auth.token_file",
        default: "",
        help: "File holding the token, mode 600 (or 640): other users must not read it. The first line is the \
               token this agent sends; every line is accepted, for rotation (docs/security.md). Use this or \
               auth.token.",
        set: |c, _, v| {
            c.auth.token_file = path(v);
            Ok(())
        },
    },
    KeyDef {
        key: "auth.allow_unauthenticated",
        default: "false",
        help: "With no token and no TLS: accept changes from anyone who reaches this agent even when it listens \
               beyond loopback. Off: such an agent refuses changes (reading stays open).",
        set: |c, k, v| {
            c.auth.allow_unauthenticated = match v.trim() {
                "true" => true,
                "false" => false,
                other => return Err(format!("{k}: {other:?} must be true or false")),
            };
            Ok(())
        },
    },
    KeyDef {
        key: "tls.cert_file",
        default: "",
        help: "This agent's certificate (PEM), signed by tls.ca_file, valid for the host in grpc.advertise (or \
               tls.server_name), for server and client use. With tls.key_file and tls.ca_file: gRPC runs mutual TLS.",
        set: |c, _, v| {
            c.tls.cert_file = path(v);
            Ok(())
        },
    },
    KeyDef {
        key: "tls.key_file",
        default: "",
        help: "The private key of tls.cert_file (PEM), mode 600 (or 640).",
        set: |c, _, v| {
            c.tls.key_file = path(v);
            Ok(())
        },
    },
    KeyDef {
        key: "tls.ca_file",
        default: "",
        help: "The cluster's CA certificate (PEM; several for a CA rotation). Members must present a certificate \
               it signed; pgquorumctl needs one, or the token, to change anything.",
        set: |c, _, v| {
            c.tls.ca_file = path(v);
            Ok(())
        },
    },
    KeyDef {
        key: "tls.server_name",
        default: "",
        help: "Name the members' certificates are checked against. Empty: the host each member is dialled at, so \
               each certificate must carry its own host.",
        set: |c, _, v| {
            c.tls.server_name = v.trim().to_string();
            Ok(())
        },
    },
];

/// Loads the token and the TLS files once `grpc.advertise` is resolved.
pub(super) fn resolve(c: &mut AgentConfig, errs: &mut Vec<String>) {
    if let Err(e) = c.auth.resolve() {
        errs.push(e);
    }
    let host = c.grpc_advertise.rsplit_once(':').map_or(c.grpc_advertise.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    if let Err(e) = c.tls.resolve(&host) {
        errs.push(e);
    }
}
