//! A local cluster of agents bound to pod objects of a real API server: the rendered
//! `deploy/kubernetes` base applied to a fresh namespace, one Pending pod per member, every
//! agent holding a token of the base's ServiceAccount (so the Role is exercised as written).
//!
//! And a watcher that checks, all the time, that no two pods are labelled primary: a watch
//! stream (`kubectl get -w`) and a poll (`kubectl get pods -l ...role=primary` every 50 ms).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::cluster::{Cluster, ClusterOptions};
use crate::kube::KubeApi;
use crate::secrets::SecretDir;
use crate::wait::wait_for;

/// The namespace the tests use.
pub const NS: &str = "pgq";
/// The cluster name the base's labels and Services use.
pub const CLUSTER: &str = "pgquorum";
const SELECTOR: &str = "pgquorum.io/cluster=pgquorum";

/// The API server, the namespace with the base applied, and the agents.
pub struct KubeCluster {
    /// The agents (dropped first).
    pub cluster: Cluster,
    /// The API server.
    pub api: KubeApi,
    _secrets: SecretDir,
}

impl KubeCluster {
    /// Starts the API server, applies the base, creates a pod per member, starts the agents
    /// with `opts` (its cluster name is replaced by the base's).
    pub fn start(mut opts: ClusterOptions) -> KubeCluster {
        let api = KubeApi::start();
        api.create_namespace(NS);
        let out = api.kubectl_output(&["apply", "-n", NS, "-f", "-"], Some(&crate::deploy::render("base")));
        assert!(out.status.success(), "applying the base: {}", String::from_utf8_lossy(&out.stderr));
        for i in 0..opts.members {
            api.create_pod(NS, &format!("m{}", i + 1), "pgquorum", &[("pgquorum.io/cluster", CLUSTER)]);
        }
        let secrets = SecretDir::new();
        let kubeconfig = secrets.write("kubeconfig", &api.service_account_kubeconfig(NS, "pgquorum"));
        opts.cluster = CLUSTER.into();
        opts.settings.push(format!("kube.namespace={NS}"));
        opts.settings.push(format!("kube.kubeconfig={}", kubeconfig.display()));
        opts.settings.push("kube.enabled=true".into());
        for i in 0..opts.members {
            let m = format!("m{}", i + 1);
            opts.member_settings.push((m.clone(), format!("kube.pod={m}")));
        }
        let cluster = Cluster::start(opts);
        KubeCluster { cluster, api, _secrets: secrets }
    }

    /// Scales up by one: a new pod object and an agent bound to it, started with the cluster's
    /// settings and every existing member as a peer (as a StatefulSet's next ordinal gets them);
    /// it joins by itself. Returns its name.
    pub fn add_member(&mut self) -> String {
        let name = format!("m{}", self.cluster.agents.len() + 1);
        self.api.create_pod(NS, &name, "pgquorum", &[("pgquorum.io/cluster", CLUSTER)]);
        let pod = format!("kube.pod={name}");
        self.cluster.add_agent_with(&[&pod]).name.clone()
    }

    /// Pod name → role label ("" when unlabelled), or an error while the API server is away.
    pub fn roles(&self) -> Result<BTreeMap<String, String>, String> {
        let out = self.api.kubectl(&[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            SELECTOR,
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}={.metadata.labels.pgquorum\.io/role}{"\n"}{end}"#,
        ])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('=').map(|(n, r)| (n.to_string(), r.to_string())))
            .collect())
    }

    /// Waits until `primary` is labelled primary and every other member in `replicas` replica.
    pub fn wait_labels(&self, primary: &str, replicas: &[&str], timeout: Duration) {
        wait_for(&format!("{primary} labelled primary, {replicas:?} replica"), timeout, || {
            let roles = self.roles()?;
            let ok = roles.get(primary).map(String::as_str) == Some("primary")
                && replicas.iter().all(|r| roles.get(*r).map(String::as_str) == Some("replica"));
            if ok { Ok(Some(())) } else { Err(format!("{roles:?}")) }
        })
    }

    /// Waits until the cluster is settled: one writable primary, every other member streaming,
    /// and the pods labelled so. Returns (primary, replicas). Tolerates a failover meanwhile (a
    /// loaded machine can cost the first primary its lease): it waits for whoever is primary.
    pub fn settle(&mut self, timeout: Duration) -> (String, Vec<String>) {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            let p = self.cluster.wait_for_primary(left);
            let rest: Vec<String> =
                self.cluster.agents.iter().map(|a| a.name.clone()).filter(|n| *n != p).collect();
            let settled = wait_for_opt(left.min(Duration::from_secs(30)), || {
                let st = self.cluster.status()?;
                let members = st["members"].as_array().cloned().unwrap_or_default();
                let state = |n: &str| members.iter().find(|m| m["name"] == n).map(|m| m["state"].to_string());
                if st["primary"] != p.as_str() {
                    return Ok(Some(false));
                }
                let streaming = rest.iter().all(|r| state(r).as_deref() == Some("\"streaming\""));
                let roles = self.roles()?;
                let labelled = roles.get(&p).map(String::as_str) == Some("primary")
                    && rest.iter().all(|r| roles.get(r).map(String::as_str) == Some("replica"));
                Ok((streaming && labelled).then_some(true))
            });
            if settled == Some(true) {
                return (p, rest);
            }
            assert!(start.elapsed() < timeout, "the cluster did not settle within {timeout:?}");
        }
    }

    /// The reasons of the events recorded on pod `pod`.
    pub fn event_reasons(&self, pod: &str) -> Vec<String> {
        let sel = format!("involvedObject.name={pod}");
        let out = self
            .api
            .kubectl(&[
                "-n",
                NS,
                "get",
                "events",
                "--field-selector",
                &sel,
                "-o",
                "jsonpath={.items[*].reason}",
            ])
            .unwrap_or_default();
        out.split_whitespace().map(String::from).collect()
    }

    /// Starts a watcher of the primary labels.
    pub fn watch(&self) -> Watcher {
        Watcher::start(self.api.admin_kubeconfig.clone())
    }
}

/// What the watcher saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Moments two or more pods were labelled primary, described.
    pub violations: Vec<String>,
    /// Every role change from the watch stream: when, pod, new role ("" for none).
    pub changes: Vec<(Instant, String, String)>,
    /// Polls done.
    pub polls: u64,
}

/// Watches the primary labels until stopped (threads, bounded by the stop flag).
pub struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    child: Arc<Mutex<Option<u32>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Watcher {
    fn start(kubeconfig: std::path::PathBuf) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let child = Arc::new(Mutex::new(None));
        let mut threads = Vec::new();
        {
            let (stop, seen, child, kc) = (stop.clone(), seen.clone(), child.clone(), kubeconfig.clone());
            threads.push(std::thread::spawn(move || stream(&kc, &stop, &seen, &child)));
        }
        {
            let (stop, seen) = (stop.clone(), seen.clone());
            threads.push(std::thread::spawn(move || poll(&kubeconfig, &stop, &seen)));
        }
        Watcher { stop, seen, child, threads }
    }

    /// Whether the stream has seen `pod` labelled `role` ("" for none) since `since`.
    pub fn saw(&self, pod: &str, role: &str, since: Instant) -> Option<Instant> {
        let s = self.seen.lock().expect("watcher lock");
        s.changes.iter().find(|(t, p, r)| *t >= since && p == pod && r == role).map(|(t, _, _)| *t)
    }

    /// Stops the threads and returns what was seen.
    pub fn stop(mut self) -> Seen {
        self.halt();
        std::mem::take(&mut *self.seen.lock().expect("watcher lock"))
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(pid) = *self.child.lock().expect("watcher lock") {
            crate::procs::signal(pid, Signal::KILL);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The watch stream: one line per pod event; the state after each event must hold at most one
/// primary. Restarted when it ends (the API server went away), until stopped.
fn stream(kubeconfig: &std::path::Path, stop: &AtomicBool, seen: &Mutex<Seen>, child: &Mutex<Option<u32>>) {
    let template = r#"jsonpath={.metadata.name}={.metadata.labels.pgquorum\.io/role}{"\n"}"#;
    while !stop.load(Ordering::SeqCst) {
        let spawned = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["-n", NS, "get", "pods", "-l", SELECTOR, "-w", "-o", template])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut proc) = spawned else { return };
        *child.lock().expect("watcher lock") = Some(proc.id());
        let mut roles: BTreeMap<String, String> = BTreeMap::new();
        let out = proc.stdout.take().expect("stdout piped");
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let Some((pod, role)) = line.split_once('=') else { continue };
            let now = Instant::now();
            let changed = roles.get(pod).map(String::as_str) != Some(role);
            roles.insert(pod.to_string(), role.to_string());
            let primaries: Vec<&String> =
                roles.iter().filter(|(_, r)| *r == "primary").map(|(p, _)| p).collect();
            let mut s = seen.lock().expect("watcher lock");
            if changed {
                s.changes.push((now, pod.to_string(), role.to_string()));
            }
            if primaries.len() > 1 {
                s.violations.push(format!("watch stream: pods {primaries:?} labelled primary at once"));
            }
        }
        let _ = proc.kill();
        let _ = proc.wait();
        *child.lock().expect("watcher lock") = None;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `kubectl get pods -l ...role=primary` every 50 ms.
fn poll(kubeconfig: &std::path::Path, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let sel = format!("{SELECTOR},pgquorum.io/role=primary");
    while !stop.load(Ordering::SeqCst) {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["-n", NS, "get", "pods", "-l", &sel, "-o", "name", "--request-timeout=2s"])
            .stderr(Stdio::null())
            .output();
        if let Ok(out) = out
            && out.status.success()
        {
            let names: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
            let mut s = seen.lock().expect("watcher lock");
            s.polls += 1;
            if names.len() > 1 {
                s.violations.push(format!("poll: {names:?} labelled primary at once"));
            }
        }
        // 50 ms between polls (kubectl itself takes longer on a loaded machine).
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` every 50 ms until it answers `Some`, or `None` after `timeout`.
fn wait_for_opt<T>(timeout: Duration, mut check: impl FnMut() -> Result<Option<T>, String>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(v)) = check() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
