//! The operator's credentials: a token (from `--token-file`, `PGQUORUM_TOKEN_FILE` or
//! `PGQUORUM_TOKEN`; never a command line value, which would show in `ps` and shell history) and,
//! for agents running mutual TLS, a CA and a client certificate and key.
//!
//! Owns reading and checking them; bad input is a usage error naming the flag and the fix. The
//! variables differ from the agent's `PGQUORUM_TLS_*` keys on purpose: an operator's shell on an
//! agent's machine must not pick up the agent's own certificate by accident.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::Failure;

/// The global flags that carry credentials.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Args {
    /// File holding the cluster's token (first line; mode 600): the agents' auth.token_file. Or set PGQUORUM_TOKEN.
    #[arg(long, env = "PGQUORUM_TOKEN_FILE", value_name = "PATH", global = true)]
    pub token_file: Option<PathBuf>,
    /// The agents' CA certificate (PEM), when they run mutual TLS; connects with https.
    #[arg(long, env = "PGQUORUM_CA_FILE", value_name = "PATH", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) signed by the agents' CA.
    #[arg(long, env = "PGQUORUM_CERT_FILE", value_name = "PATH", global = true)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM; mode 600).
    #[arg(long, env = "PGQUORUM_KEY_FILE", value_name = "PATH", global = true)]
    pub key_file: Option<PathBuf>,
    /// Name to check the agent's certificate against (the agents' tls.server_name); default: the endpoint's host.
    #[arg(long, env = "PGQUORUM_SERVER_NAME", value_name = "NAME", global = true)]
    pub server_name: Option<String>,
}

/// Resolved credentials.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// The token to send.
    pub token: Option<String>,
    /// Where the token came from, for messages.
    pub token_source: Option<String>,
    /// TLS settings, when a CA was given.
    pub tls: Option<ClientTlsConfig>,
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::usage(format!("{flag} {}: cannot read it: {e}", path.display())))
}

impl Args {
    /// Reads the files; `token_env` is `PGQUORUM_TOKEN`'s value.
    pub fn resolve(&self, token_env: Option<String>) -> Result<Credentials, Failure> {
        let mut c = Credentials::default();
        if let Some(path) = &self.token_file {
            let bytes = pgquorum_proto::auth::read_secret(path)
                .map_err(|e| Failure::usage(format!("--token-file: {e}")))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| Failure::usage(format!("--token-file {}: not text", path.display())))?;
            let token = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
            let token = token.ok_or_else(|| {
                Failure::usage(format!(
                    "--token-file {}: the file holds no token; write it on the first line",
                    path.display()
                ))
            })?;
            c.token = Some(token.to_string());
            c.token_source = Some(format!("--token-file {}", path.display()));
        } else if let Some(t) = token_env.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
            c.token = Some(t);
            c.token_source = Some("PGQUORUM_TOKEN".into());
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(Failure::usage("--cert-file and --key-file go together: pass both (or neither)"));
            }
            (Some(_), Some(_)) if self.ca_file.is_none() => {
                return Err(Failure::usage(
                    "--cert-file needs --ca-file: the CA that signed the agents' certificates (their tls.ca_file)",
                ));
            }
            _ => {}
        }
        if self.server_name.is_some() && self.ca_file.is_none() {
            return Err(Failure::usage(
                "--server-name needs --ca-file: it names the agents' certificates, which only TLS checks",
            ));
        }
        if let Some(ca) = &self.ca_file {
            let mut tls =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--ca-file", ca)?));
            if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
                let key = pgquorum_proto::auth::read_secret(key)
                    .map_err(|e| Failure::usage(format!("--key-file: {e}")))?;
                tls = tls.identity(Identity::from_pem(read("--cert-file", cert)?, key));
            }
            if let Some(name) = &self.server_name {
                tls = tls.domain_name(name.clone());
            }
            c.tls = Some(tls);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_file_first_then_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("token");
        std::fs::write(&f, "# ops token\nfile-token-0123456789\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let args = Args { token_file: Some(f.clone()), ..Default::default() };
        let c = args.resolve(Some("env-token".into())).expect("valid");
        assert_eq!(c.token.as_deref(), Some("file-token-0123456789"));
        assert!(c.token_source.expect("source").contains("--token-file"));
        let c = Args::default().resolve(Some("env-token-0123456789".into())).expect("valid");
        assert_eq!(
            (c.token.as_deref(), c.token_source.as_deref()),
            (Some("env-token-0123456789"), Some("PGQUORUM_TOKEN"))
        );
        assert!(Args::default().resolve(None).expect("valid").token.is_none());
        std::fs::write(&f, "\n").expect("write");
        let err = args.resolve(None).expect_err("empty file");
        assert!(err.message.contains("holds no token") && err.code == 2, "{}", err.message);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = args.resolve(None).expect_err("world-readable");
        assert!(
            err.message.contains("--token-file: ") && err.message.contains("chmod 600"),
            "{}",
            err.message
        );
        assert_eq!(err.code, 2);
        let missing = Args { token_file: Some(dir.path().join("nope")), ..Default::default() };
        let err = missing.resolve(None).expect_err("missing");
        assert!(err.message.starts_with("--token-file: cannot read "), "{}", err.message);
    }

    #[test]
    fn every_credential_variable_is_one_the_agent_ignores() {
        use clap::Args as _;
        let cmd = Args::augment_args(clap::Command::new("t"));
        let mut vars: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        vars.push("PGQUORUM_TOKEN".into()); // read by main, no flag
        for v in &vars {
            assert!(
                pgquorum_proto::auth::CTL_CREDENTIAL_VARIABLES.contains(&v.as_str()),
                "{v} is not listed"
            );
        }
        assert_eq!(vars.len(), pgquorum_proto::auth::CTL_CREDENTIAL_VARIABLES.len(), "{vars:?}");
    }

    #[test]
    fn tls_flags_must_come_together_and_files_must_exist() {
        let p = |s: &str| Some(PathBuf::from(s));
        let err = Args { cert_file: p("/c"), ..Default::default() }.resolve(None).expect_err("no key");
        assert!(err.message.contains("--cert-file and --key-file go together"), "{}", err.message);
        let err = Args { cert_file: p("/c"), key_file: p("/k"), ..Default::default() }
            .resolve(None)
            .expect_err("no ca");
        assert!(err.message.contains("needs --ca-file"), "{}", err.message);
        let err =
            Args { server_name: Some("pg".into()), ..Default::default() }.resolve(None).expect_err("no ca");
        assert!(err.message.contains("--server-name needs --ca-file"), "{}", err.message);
        let err = Args { ca_file: p("/nonexistent/ca.pem"), ..Default::default() }
            .resolve(None)
            .expect_err("missing");
        assert!(err.message.contains("--ca-file /nonexistent/ca.pem: cannot read it"), "{}", err.message);
    }
}
