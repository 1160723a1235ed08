//! Connecting to an agent's management API (with the operator's credentials: a token, and
//! client certificates when the agents run mutual TLS) and turning gRPC errors into operator
//! messages.

use std::sync::OnceLock;
use std::time::Duration;

use pgquorum_proto::auth::AttachToken;
use pgquorum_proto::management::management_client::ManagementClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::Failure;
use crate::credentials::Credentials;

/// A connected management client; every call carries the token, if one was given.
pub type Client = ManagementClient<InterceptedService<Channel, AttachToken>>;

/// The credentials from the global flags and environment, set once by `main`.
static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();

/// Records the credentials every connection uses.
pub fn set_credentials(c: Credentials) {
    let _ = CREDENTIALS.set(c);
}

fn credentials() -> &'static Credentials {
    CREDENTIALS.get_or_init(Credentials::default)
}

/// `e` with its causes: tonic's own `Display` says only "transport error".
fn chain(e: &dyn std::error::Error) -> String {
    with_causes(e.to_string(), e.source())
}

/// `text`, then each cause not already in it.
fn with_causes(text: String, mut src: Option<&dyn std::error::Error>) -> String {
    let mut out = text;
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

/// What to check when the connection fails, depending on whether TLS was asked for.
fn tls_hint() -> &'static str {
    if credentials().tls.is_some() {
        " If the agents do not run TLS, drop --ca-file/--cert-file/--key-file (and PGQUORUM_CA_FILE, ...); if they \
         do, check that --ca-file is the agents' tls.ca_file and that --cert-file was signed by it"
    } else {
        " If the agents run mutual TLS (tls.* in their configuration), pass --ca-file (and --cert-file, --key-file \
         to change anything), or set PGQUORUM_CA_FILE"
    }
}

/// Connects to the management API at `endpoint` (host:port).
pub async fn connect(endpoint: &str) -> Result<Client, Failure> {
    let creds = credentials();
    let scheme = if creds.tls.is_some() { "https" } else { "http" };
    let url = if endpoint.contains("://") { endpoint.to_string() } else { format!("{scheme}://{endpoint}") };
    if url.starts_with("https://") && creds.tls.is_none() {
        return Err(Failure::usage(format!(
            "--endpoint {endpoint} asks for TLS: pass --ca-file (and --cert-file, --key-file) too"
        )));
    }
    let mut ep = Endpoint::from_shared(url)
        .map_err(|e| Failure::usage(format!("--endpoint {endpoint:?} is not host:port: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    if let Some(tls) = &creds.tls {
        ep =
            ep.tls_config(tls.clone()).map_err(|e| Failure::usage(format!("TLS settings: {}", chain(&e))))?;
    }
    let channel = ep.connect().await.map_err(|e| Failure {
        code: 3,
        message: format!(
            "cannot reach an agent at {endpoint}: {}. Is the agent running, and is this its grpc.listen address? \
             Set --endpoint or PGQUORUM_ENDPOINT.{}",
            chain(&e),
            tls_hint()
        ),
    })?;
    let token =
        AttachToken::new(creds.token.as_deref()).map_err(|e| Failure::usage(format!("the token: {e}")))?;
    Ok(ManagementClient::with_interceptor(channel, token))
}

/// An operator message for a failed call.
pub fn failure(status: tonic::Status) -> Failure {
    match status.code() {
        // The connection failed under the call (for TLS, only once the first call is made; a
        // plain connection to a TLS agent ends in a transport or an HTTP/2 protocol error).
        _ if status.message().contains("transport error")
            || status.message().starts_with("h2 protocol error") =>
        {
            Failure {
                code: 3,
                message: format!(
                    "the agent stopped answering: {}.{}",
                    with_causes(status.message().to_string(), std::error::Error::source(&status)),
                    tls_hint()
                ),
            }
        }
        // The cluster refused: exit 1, like any refusal (docs/ctl.md), with what to set.
        tonic::Code::Unauthenticated => {
            let creds = credentials();
            match &creds.token_source {
                None => Failure::failed(format!(
                    "this command changes the cluster and requires a token: set PGQUORUM_TOKEN_FILE or \
                     --token-file to a file holding the token the agents have in auth.token_file (or set \
                     PGQUORUM_TOKEN){}",
                    if creds.tls.is_some() {
                        "; or pass --cert-file and --key-file, a certificate signed by the agents' CA"
                    } else {
                        ""
                    }
                )),
                Some(src) => Failure::failed(format!(
                    "the agents refused the token from {src}: it must be the token they have in auth.token_file or \
                     PGQUORUM_AUTH_TOKEN (the agent said: {})",
                    status.message()
                )),
            }
        }
        tonic::Code::InvalidArgument => Failure::usage(status.message()),
        _ => Failure::failed(status.message()),
    }
}

/// When `endpoint` turns out to be an agent's HTTP port (health checks, metrics) rather than its
/// gRPC port, the failure says so and names the gRPC port (exit 3: no agent reachable there);
/// otherwise `f` unchanged. Asked only after a call failed, with short timeouts.
pub async fn explain_http_port(endpoint: &str, f: Failure) -> Failure {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if f.code == 2 {
        return f;
    }
    let host_port = endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest).trim_end_matches('/');
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(host_port).await.ok()?;
        let req = format!("GET /liveness HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 4096];
        let mut len = 0;
        while len < buf.len() {
            match s.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        Some(String::from_utf8_lossy(&buf[..len]).into_owned())
    };
    let Ok(Some(answer)) = tokio::time::timeout(Duration::from_secs(2), probe).await else { return f };
    http_port_failure(endpoint, &answer).unwrap_or(f)
}

/// The failure for an `answer` to an HTTP/1.1 request, if it came from an HTTP server.
fn http_port_failure(endpoint: &str, answer: &str) -> Option<Failure> {
    if !answer.starts_with("HTTP/1.") {
        return None;
    }
    let grpc = answer.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("x-pgquorum-grpc-address").then(|| value.trim().to_string())
    });
    let message = match grpc {
        Some(g) => format!(
            "{endpoint} is this agent's HTTP port (health checks, metrics); the gRPC port is {g}: use --endpoint {g} \
             (or set PGQUORUM_ENDPOINT)"
        ),
        None => format!(
            "{endpoint} answers HTTP/1.1, not gRPC: it is an HTTP port, not an agent's gRPC endpoint; use the address \
             in the agent's grpc.listen (--endpoint or PGQUORUM_ENDPOINT)"
        ),
    };
    Some(Failure { code: 3, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_answer_names_the_grpc_port() {
        let agent = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nX-Pgquorum-Grpc-Address: 127.0.0.1:7001\r\n\r\n";
        let f = http_port_failure("127.0.0.1:8001", agent).expect("an HTTP port");
        assert_eq!(f.code, 3);
        assert!(
            f.message.contains("HTTP port") && f.message.contains("the gRPC port is 127.0.0.1:7001"),
            "{}",
            f.message
        );
        let other =
            http_port_failure("127.0.0.1:80", "HTTP/1.0 404 Not Found\r\n\r\n").expect("an HTTP port");
        assert!(other.message.contains("answers HTTP/1.1, not gRPC"), "{}", other.message);
        assert!(
            http_port_failure("127.0.0.1:7001", "\0\0\x12\x04").is_none(),
            "an HTTP/2 server is not HTTP/1"
        );
    }
}
