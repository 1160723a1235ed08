//! A real Kubernetes API server for the tests: upstream `kube-apiserver` (built and cached by
//! `scripts/kube-apiserver`) with Debian's `etcd`, both on 127.0.0.1 free ports in a temporary
//! directory, driven with the real `kubectl`.
//!
//! Owns both processes: started here, stopped by PID when dropped (the API server can also be
//! stopped and started again on the same port, etcd keeping the state). Must not fake any API.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::bins::free_port;
use crate::wait::wait_for;

/// The Kubernetes release `scripts/kube-apiserver` builds by default.
pub const KUBE_VERSION: &str = "v1.36.2";
/// Debian's etcd.
pub const ETCD: &str = "/usr/bin/etcd";
/// The static admin token (group system:masters) of the test API server.
const ADMIN_TOKEN: &str = "pgquorum-test-admin-token-0123456789abcdef";

/// The kube-apiserver binary: `PGQUORUM_KUBE_APISERVER`, else the cache of
/// `scripts/kube-apiserver`. Panics with the fix when it is missing.
pub fn apiserver_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PGQUORUM_KUBE_APISERVER") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    let p = home.join(".cache/pgquorum-kube").join(KUBE_VERSION).join("kube-apiserver");
    assert!(
        p.exists(),
        "{} not found: run scripts/kube-apiserver (it builds kube-apiserver {KUBE_VERSION} from the Go module \
         proxy, about 10 minutes once; .ci/run does it), or set PGQUORUM_KUBE_APISERVER",
        p.display()
    );
    p
}

/// etcd and kube-apiserver, running.
pub struct KubeApi {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// A kubeconfig with the admin token (for kubectl).
    pub admin_kubeconfig: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    etcd_url: String,
    etcd: Option<Child>,
    apiserver: Option<Child>,
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> Child {
    let out = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log handle"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()))
}

impl KubeApi {
    /// Starts etcd and kube-apiserver and waits until `/readyz` answers ok.
    pub fn start() -> KubeApi {
        apiserver_binary(); // fails early, with the fix, when it was not built
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} not found: install Debian's etcd-server (scripts/kube-apiserver does)"
        );
        let dir = tempfile::Builder::new().prefix("pgq-kube-").tempdir().expect("tempdir");
        let d = dir.path();
        let (client, peer, port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let etcd_args: Vec<String> = vec![
            "--name=test".into(),
            format!("--data-dir={}", d.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=test={peer_url}"),
            "--log-level=warn".into(),
        ];
        let etcd = spawn(Path::new(ETCD), &etcd_args, &d.join("etcd.log"));
        let key = d.join("sa.key");
        let out = Command::new("openssl")
            .arg("genrsa")
            .arg("-out")
            .arg(&key)
            .arg("2048")
            .output()
            .expect("run openssl genrsa (openssl is needed for the service-account key)");
        assert!(out.status.success(), "openssl genrsa: {}", String::from_utf8_lossy(&out.stderr));
        let out = Command::new("openssl")
            .arg("rsa")
            .arg("-in")
            .arg(&key)
            .arg("-pubout")
            .arg("-out")
            .arg(d.join("sa.pub"))
            .output()
            .expect("run openssl rsa");
        assert!(out.status.success(), "openssl rsa -pubout: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(d.join("tokens.csv"), format!("{ADMIN_TOKEN},admin,admin-uid,system:masters\n"))
            .expect("write tokens.csv");
        let admin_kubeconfig = d.join("admin.kubeconfig");
        let url = format!("https://127.0.0.1:{port}");
        std::fs::write(&admin_kubeconfig, kubeconfig(&url, None, ADMIN_TOKEN))
            .expect("write admin kubeconfig");
        let mut k = KubeApi { url, admin_kubeconfig, dir, port, etcd_url, etcd: Some(etcd), apiserver: None };
        wait_for("etcd listening", Duration::from_secs(30), || {
            Ok(std::net::TcpStream::connect(("127.0.0.1", client)).is_ok().then_some(()))
        });
        k.start_apiserver();
        k
    }

    fn apiserver_args(&self) -> Vec<String> {
        let d = self.dir.path();
        vec![
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.port),
            format!("--cert-dir={}", d.join("certs").display()),
            format!("--etcd-servers={}", self.etcd_url),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", d.join("sa.pub").display()),
            format!("--service-account-signing-key-file={}", d.join("sa.key").display()),
            format!("--token-auth-file={}", d.join("tokens.csv").display()),
            "--authorization-mode=RBAC".into(),
            "--endpoint-reconciler-type=none".into(),
            "--profiling=false".into(),
            "--v=0".into(),
        ]
    }

    /// Starts (or starts again) the API server on its port and waits for `/readyz`.
    pub fn start_apiserver(&mut self) {
        if self.apiserver.is_some() {
            return;
        }
        let n = std::fs::read_dir(self.dir.path()).map(|r| r.count()).unwrap_or(0);
        let log = self.dir.path().join(format!("kube-apiserver.{n}.log"));
        self.apiserver = Some(spawn(&apiserver_binary(), &self.apiserver_args(), &log));
        wait_for("kube-apiserver /readyz", Duration::from_secs(90), || {
            if let Some(c) = self.apiserver.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("kube-apiserver exited ({st}):\n{text}");
            }
            match self.kubectl(&["get", "--raw", "/readyz"]) {
                Ok(out) if out.trim() == "ok" => Ok(Some(())),
                Ok(out) => Err(out),
                Err(e) => Err(e),
            }
        });
    }

    /// Stops the API server (etcd keeps running).
    pub fn stop_apiserver(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            crate::procs::stop_child(&mut c, Duration::from_secs(5));
        }
    }

    /// The API server's serving certificate chain (PEM), for `certificate-authority-data`.
    pub fn ca_pem(&self) -> String {
        let p = self.dir.path().join("certs").join("apiserver.crt");
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    }

    /// Runs kubectl with the admin kubeconfig; stdout on success, stderr otherwise.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = self.kubectl_output(args, None);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Runs kubectl with the admin kubeconfig, `stdin` piped in when given.
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        kubectl_with(&self.admin_kubeconfig, args, stdin)
    }

    /// Creates namespace `ns` and its `default` ServiceAccount (no controller-manager runs to
    /// create it).
    pub fn create_namespace(&self, ns: &str) {
        self.kubectl(&["create", "namespace", ns]).expect("create namespace");
        self.kubectl(&["-n", ns, "create", "serviceaccount", "default"])
            .expect("create default serviceaccount");
    }

    /// A kubeconfig for ServiceAccount `sa` of `ns` (a fresh token), verifying the server with its
    /// own certificate: what an agent in a pod of that ServiceAccount holds.
    pub fn service_account_kubeconfig(&self, ns: &str, sa: &str) -> String {
        let token = self.kubectl(&["-n", ns, "create", "token", sa, "--duration=24h"]).expect("create token");
        kubeconfig(&self.url, Some(&self.ca_pem()), token.trim())
    }

    /// Creates a Pending pod `name` in `ns` (no kubelet runs it) with `labels`.
    pub fn create_pod(&self, ns: &str, name: &str, sa: &str, labels: &[(&str, &str)]) {
        let labels: serde_json::Map<String, serde_json::Value> =
            labels.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": ns, "labels": labels },
            "spec": {
                "serviceAccountName": sa,
                "containers": [{ "name": "postgres", "image": "postgres:15" }],
            }
        });
        let out = self.kubectl_output(&["apply", "-f", "-"], Some(&pod.to_string()));
        assert!(out.status.success(), "creating pod {name}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The temporary directory (logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs kubectl with `kubeconfig`.
pub fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("run kubectl (Debian's kubernetes-client)");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(input.as_bytes()).expect("write kubectl stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

/// A kubeconfig for `url` with a bearer `token`; without `ca` the server is not verified (the
/// harness's own kubectl only).
pub fn kubeconfig(url: &str, ca: Option<&str>, token: &str) -> String {
    use base64::Engine;
    let cluster = match ca {
        Some(pem) => format!(
            "certificate-authority-data: {}",
            base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())
        ),
        None => "insecure-skip-tls-verify: true".to_string(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    {cluster}\n\
         users:\n- name: test\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    \
         user: test\ncurrent-context: test\n"
    )
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop_apiserver();
        if let Some(mut c) = self.etcd.take() {
            crate::procs::stop_child(&mut c, Duration::from_secs(5));
        }
        if std::thread::panicking() {
            for entry in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".log") {
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    eprintln!("----- last lines of {name} -----");
                    for l in &lines[lines.len().saturating_sub(20)..] {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}
