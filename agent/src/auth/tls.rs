//! Mutual TLS on the agents' gRPC endpoint, with rustls and the ring provider (no OpenSSL, no
//! aws-lc): this agent's certificate and key and the cluster's CA as PEM files, checked at
//! start-up, and the server and client configurations built from them.
//!
//! Start-up checks catch what would otherwise surface as an agent peers silently refuse: a
//! missing or unreadable file, a key that does not belong to the certificate, a certificate the
//! CA did not sign (or expired), a certificate not valid for the name other members dial.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{InconsistentKeys, RootCertStore};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// TLS settings as configured (`tls.*`), resolved by config validation.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// `tls.cert_file`: this agent's certificate (PEM, the chain up to the CA).
    pub cert_file: Option<PathBuf>,
    /// `tls.key_file`: its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// `tls.ca_file`: the CA that signs every member's and operator's certificate (PEM).
    pub ca_file: Option<PathBuf>,
    /// `tls.server_name`: the name certificates are checked against ("" = the host dialled).
    pub server_name: String,
    /// The loaded material; `None` when TLS is off.
    pub material: Option<TlsMaterial>,
}

/// Checked PEM material, ready to build configurations from.
#[derive(Clone)]
pub struct TlsMaterial {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
    server_name: Option<String>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

/// The crypto provider everywhere: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &str, path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key}: cannot read {}: {e}; set it to {what}", path.display()))
}

fn certs(key: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{key}: {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key}: {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

impl TlsSettings {
    /// Checks the files and loads them; `dialled_host` is the host other members use to reach
    /// this agent (from grpc.advertise), which its certificate must be valid for.
    pub fn resolve(&mut self, dialled_host: &str) -> Result<(), String> {
        let set = [
            ("tls.cert_file", &self.cert_file),
            ("tls.key_file", &self.key_file),
            ("tls.ca_file", &self.ca_file),
        ];
        let missing: Vec<&str> = set.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| *k).collect();
        if missing.len() == 3 {
            if !self.server_name.is_empty() {
                return Err(
                    "tls.server_name is set but TLS is off; set tls.cert_file, tls.key_file and tls.ca_file"
                        .into(),
                );
            }
            return Ok(());
        }
        if !missing.is_empty() {
            return Err(format!(
                "tls.cert_file, tls.key_file and tls.ca_file go together: set {} too (or none of them for plain gRPC)",
                missing.join(" and ")
            ));
        }
        let (cert_path, key_path, ca_path) = (
            self.cert_file.clone().expect("checked above"),
            self.key_file.clone().expect("checked above"),
            self.ca_file.clone().expect("checked above"),
        );
        let cert = read("tls.cert_file", &cert_path, "this agent's certificate (PEM)")?;
        let key = pgquorum_proto::auth::read_secret(&key_path)
            .map_err(|e| format!("tls.key_file: {e}; set it to the private key of tls.cert_file (PEM)"))?;
        let ca = read("tls.ca_file", &ca_path, "the cluster CA's certificate (PEM)")?;
        let name =
            if self.server_name.is_empty() { dialled_host.to_string() } else { self.server_name.clone() };
        check(&cert_path, &cert, &key_path, &key, &ca_path, &ca, &name)?;
        self.material = Some(TlsMaterial {
            cert,
            key,
            ca,
            server_name: (!self.server_name.is_empty()).then(|| self.server_name.clone()),
        });
        Ok(())
    }
}

fn check(
    cert_path: &Path,
    cert: &[u8],
    key_path: &Path,
    key: &[u8],
    ca_path: &Path,
    ca: &[u8],
    name: &str,
) -> Result<(), String> {
    let chain = certs("tls.cert_file", cert_path, cert)?;
    let key_der = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
        format!(
            "tls.key_file: {} holds no usable private key ({e}); expected a PEM key (BEGIN PRIVATE KEY, RSA or EC)",
            key_path.display()
        )
    })?;
    let provider = provider();
    let signing = provider.key_provider.load_private_key(key_der).map_err(|e| {
        format!(
            "tls.key_file: {}: unsupported private key ({e}); use an ECDSA P-256/P-384, Ed25519 or RSA key",
            key_path.display()
        )
    })?;
    match rustls::sign::CertifiedKey::new(chain.clone(), signing).keys_match() {
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(format!(
                "tls.key_file ({}) does not belong to tls.cert_file ({}): their public keys differ; use the key the \
                 certificate was issued for",
                key_path.display(),
                cert_path.display()
            ));
        }
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) | Ok(()) => {}
        Err(e) => return Err(format!("tls.cert_file: {}: {e}", cert_path.display())),
    }
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs("tls.ca_file", ca_path, ca)?);
    if added == 0 {
        return Err(format!("tls.ca_file: {} holds no usable CA certificate", ca_path.display()));
    }
    let roots = Arc::new(roots);
    let now = UnixTime::now();
    let as_client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| format!("tls.ca_file: {}: {e}", ca_path.display()))?;
    as_client.verify_client_cert(&chain[0], &chain[1..], now).map_err(|e| {
        format!(
            "tls.cert_file ({}) does not verify against tls.ca_file ({}): {e}; other members would refuse this agent. \
             Use a certificate the cluster's CA signed, still valid, for client and server use",
            cert_path.display(),
            ca_path.display()
        )
    })?;
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|_| format!("tls.server_name: {name:?} is not a DNS name or IP address"))?;
    let as_server = WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| format!("tls.ca_file: {}: {e}", ca_path.display()))?;
    as_server.verify_server_cert(&chain[0], &chain[1..], &server_name, &[], now).map_err(|e| {
        format!(
            "tls.cert_file ({}) is not valid for {name}, the name other members check it against ({e}): add {name} \
             to the certificate's subject alternative names, or set tls.server_name to a name every member's \
             certificate carries",
            cert_path.display()
        )
    })?;
    Ok(())
}

impl TlsMaterial {
    /// The gRPC server's configuration: this agent's identity, and client certificates checked
    /// against the CA. A certificate the CA did not sign fails the handshake; a client without
    /// one may connect (to read status, or to send the token) and `Guard` decides per call.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
            .client_auth_optional(true)
            .timeout(std::time::Duration::from_secs(5))
    }

    /// The configuration of channels to other members: the CA to trust, this agent's identity.
    pub fn client(&self) -> ClientTlsConfig {
        let c = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key));
        match &self.server_name {
            Some(n) => c.domain_name(n.clone()),
            None => c,
        }
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
