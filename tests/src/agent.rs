//! One agent process under test: start, kill -9, SIGSTOP/SIGCONT, restart, query.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

use crate::bins::bin;

/// An agent process and everything needed to restart it the same way.
pub struct Agent {
    /// Member name.
    pub name: String,
    /// The agent's data_dir.
    pub dir: PathBuf,
    /// gRPC address (host:port) other members and pgquorumctl use.
    pub grpc: String,
    /// Network namespace it runs in, if any.
    pub netns: Option<String>,
    /// `--set KEY=VALUE` flags it is started with.
    pub settings: Vec<String>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// Its Postgres host:port (None for a witness).
    pub postgres: Option<String>,
    /// Its HTTP endpoint's host:port (health checks, metrics), when enabled.
    pub http: Option<String>,
    /// Run as the `postgres` user (the harness runs as root).
    pub as_user: bool,
    /// Environment of every pgquorumctl `ctl` runs (the cluster's token, TLS files).
    pub ctl_env: Vec<(String, String)>,
    child: Option<Child>,
}

/// Superuser password the harness gives every agent (by environment, never a flag).
pub const SUPERUSER_PASSWORD: &str = "e2e-superuser-secret";
/// Replication password.
pub const REPLICATION_PASSWORD: &str = "e2e-replication-secret";

/// The OS user agents run as when the harness is root (Postgres refuses root).
pub const RUN_AS: &str = "postgres";

fn command_in(netns: &Option<String>, program: PathBuf, as_user: bool) -> Command {
    let mut parts: Vec<String> = Vec::new();
    if let Some(ns) = netns {
        parts.extend(["ip", "netns", "exec", ns.as_str()].map(String::from));
    }
    if as_user {
        // setpriv execs: the PID the test holds is the agent's own.
        parts.extend(
            ["setpriv", "--reuid", RUN_AS, "--regid", RUN_AS, "--init-groups", "--"].map(String::from),
        );
    }
    match parts.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl Agent {
    /// The port of its Postgres (None for a witness).
    pub fn postgres_port(&self) -> Option<u16> {
        self.postgres.as_deref().and_then(|a| a.rsplit_once(':')?.1.parse().ok())
    }

    /// Describes an agent; nothing starts until `start`.
    pub fn new(
        name: &str,
        dir: PathBuf,
        grpc: String,
        netns: Option<String>,
        settings: Vec<String>,
    ) -> Agent {
        let log = dir.with_extension("log");
        let as_user = crate::bins::is_root();
        Agent {
            name: name.to_string(),
            dir,
            grpc,
            netns,
            settings,
            log,
            postgres: None,
            http: None,
            as_user,
            ctl_env: Vec::new(),
            child: None,
        }
    }

    /// The Postgres data directory.
    pub fn pgdata(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    /// The running postmaster's PID.
    pub fn postmaster_pid(&self) -> Option<u32> {
        crate::procs::postmaster_pid(&self.pgdata())
    }

    /// kill -9 of the postmaster only (a Postgres crash; the agent lives on).
    pub fn kill9_postgres(&self) {
        if let Some(pid) = self.postmaster_pid() {
            crate::procs::signal(pid, Signal::KILL);
        }
    }

    /// kill -9 of the agent and its Postgres (the postmaster; its backends then exit).
    pub fn kill9_with_postgres(&mut self) {
        let pm = self.postmaster_pid();
        self.kill9();
        if let Some(pid) = pm {
            crate::procs::signal(pid, Signal::KILL);
        }
    }

    /// Starts the process (appending to its log).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = OpenOptions::new().create(true).append(true).open(&self.log).expect("agent log");
        let mut cmd = command_in(&self.netns, bin("pgquorum-agent"), self.as_user);
        for s in &self.settings {
            cmd.arg("--set").arg(s);
        }
        cmd.env("PGQUORUM_POSTGRES_SUPERUSER_PASSWORD", SUPERUSER_PASSWORD)
            .env("PGQUORUM_POSTGRES_REPLICATION_PASSWORD", REPLICATION_PASSWORD)
            .env_remove("PGQUORUM_CONFIG")
            .env_remove("PGQUORUM_KEEP_TEST_DIR")
            .env_remove("PGQUORUM_REQUIRE_NETNS")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn pgquorum-agent"));
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends `sig` to the agent process.
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid().and_then(|p| Pid::from_raw(p as i32)) {
            let _ = kill_process(pid, sig);
        }
    }

    /// kill -9, then reap.
    pub fn kill9(&mut self) {
        self.signal(Signal::KILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait up to 10 s (then SIGKILL).
    pub fn stop(&mut self) {
        self.signal(Signal::TERM);
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            self.kill9();
        }
    }

    /// Freezes the process (SIGSTOP).
    pub fn sigstop(&self) {
        self.signal(Signal::STOP);
    }

    /// Thaws the process (SIGCONT).
    pub fn sigcont(&self) {
        self.signal(Signal::CONT);
    }

    /// Waits for the process to exit on its own; returns its status, or `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Runs pgquorumctl against this agent (from its network namespace, if any), with the
    /// cluster's credentials (`ctl_env`).
    pub fn ctl(&self, args: &[&str]) -> Output {
        let env: Vec<(&str, &str)> = self.ctl_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.ctl_as(&env, args)
    }

    /// Runs pgquorumctl with exactly the credentials in `env` (none when empty).
    pub fn ctl_as(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = command_in(&self.netns, bin("pgquorumctl"), false);
        cmd.arg("--endpoint").arg(&self.grpc).args(args).env_remove("PGQUORUM_OUTPUT");
        // Only the credentials in `env`, none the test process happens to have.
        for v in pgquorum_proto::auth::CTL_CREDENTIAL_VARIABLES {
            cmd.env_remove(v);
        }
        cmd.envs(env.iter().copied());
        cmd.output().expect("run pgquorumctl")
    }

    /// pgquorumctl with `--output json`, parsed; errors carry stderr.
    pub fn ctl_json(&self, args: &[&str]) -> Result<Value, String> {
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(args);
        let out = self.ctl(&full);
        if !out.status.success() {
            return Err(format!(
                "pgquorumctl {args:?} on {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("pgquorumctl output is not JSON: {e}"))
    }

    /// This agent's own view (`status --local`).
    pub fn local_status(&self) -> Result<Value, String> {
        self.ctl_json(&["status", "--local"])
    }

    /// `method path` on this agent's HTTP endpoint.
    pub fn http(&self, method: &str, path: &str) -> Result<crate::http::Answer, String> {
        let addr = self.http.as_deref().ok_or_else(|| format!("{} has no HTTP endpoint", self.name))?;
        crate::http::request(addr, method, path)
    }

    /// `method path` with header lines and a body on this agent's HTTP endpoint.
    pub fn http_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<crate::http::Answer, String> {
        let addr = self.http.as_deref().ok_or_else(|| format!("{} has no HTTP endpoint", self.name))?;
        crate::http::request_with(addr, method, path, headers, body)
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Appends a marker line to the log (to find what happened after a point in a test).
    pub fn mark_log(&self, text: &str) {
        use std::io::Write;
        if let Ok(mut f) = OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(f, "=== test: {text}");
        }
    }

    /// Creates an empty log file (so `mark_log` works before the first start).
    pub fn touch_log(&self) {
        let _ = File::create(&self.log);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.sigcont();
        self.kill9();
        // Postgres and the fence guard outlive a killed agent: stop them by PID too, without
        // leaking Postgres's shared memory.
        crate::procs::stop_instance(&self.pgdata());
    }
}
