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
