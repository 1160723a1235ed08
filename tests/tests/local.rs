//! End-to-end tests of `pgquorumctl local`: real agents and Postgres started by the real
//! `pgquorumctl local up` in a temporary directory under /tmp, driven the way a newcomer would
//! (the printed psql command, `local status --output json`, `local kill`/`start`/`down`).
//! Every test stops what it started even when it fails (`LocalDir`'s Drop).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgquorum_tests::{bins, procs, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

fn ctl_path() -> PathBuf {
    let p = bins::bin_dir().join("pgquorumctl");
    assert!(p.exists(), "{} not found: build first (cargo build --workspace --bins)", p.display());
    p
}

/// Reads `pipe` to its end on a thread of its own.
fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Runs `cmd`, killing it after `limit`. Its output is read while it runs: a child writing more
/// than a pipe holds (a completion script) would otherwise block until killed.
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().expect("wait");
    Output { status, stdout: out.join().expect("stdout reader"), stderr: err.join().expect("stderr reader") }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A base port whose whole layout (base+i, base+100+i, base+200+i) is free now, and below the
/// kernel's ephemeral range (`ip_local_port_range`, 32768 and up by default): there, any
/// outgoing connection of a parallel test may take one of the ports as its source port while
/// the cluster starts, and that member's Postgres then cannot listen.
fn free_base(members: u16) -> u16 {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()))
        .unwrap_or(32768);
    let span = ephemeral.saturating_sub(20000 + 300).max(1000);
    let seed = std::process::id();
    for k in 0..500u32 {
        let base = 20000 + ((seed.wrapping_mul(7919) + k * 331) % span) as u16;
        let free = (0..members)
            .flat_map(|i| [base + i, base + 100 + i, base + 200 + i])
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free port range found");
}

/// A temporary directory holding one local cluster; dropping it stops everything in it.
struct LocalDir {
    tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    base: u16,
}

impl LocalDir {
    fn new() -> LocalDir {
        // The agents may run as the postgres user (when the tests are root): let it in.
        LocalDir::with_mode(0o755)
    }

    /// The cluster goes in `cluster` inside a temporary directory with permissions `mode`.
    fn with_mode(mode: u32) -> LocalDir {
        let tmp = tempfile::Builder::new().prefix("pgq-local-").tempdir_in("/tmp").expect("tempdir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).expect("chmod");
        let dir = tmp.path().join("cluster");
        LocalDir { tmp: Some(tmp), dir, base: free_base(3) }
    }

    /// `pgquorumctl local <args> --dir DIR`.
    fn ctl(&self, args: &[&str], limit: Duration) -> Output {
        let mut cmd = Command::new(ctl_path());
        cmd.arg("local").args(args).arg("--dir").arg(&self.dir);
        cmd.env_remove("PGQUORUM_OUTPUT").env_remove("PGQUORUM_ENDPOINT");
        run_bounded(cmd, limit)
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args, T + Duration::from_secs(60));
        assert!(o.status.success(), "pgquorumctl local {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn up(&self) -> String {
        let base = self.base.to_string();
        self.ok(&["up", "--base-port", &base, "--timeout", "120s"])
    }

    fn status(&self) -> Value {
        let mut cmd = Command::new(ctl_path());
        cmd.args(["--output", "json", "local", "status", "--dir"]).arg(&self.dir);
        let o = run_bounded(cmd, Duration::from_secs(30));
        assert!(o.status.success(), "local status: {}", text(&o));
        serde_json::from_slice(&o.stdout).expect("local status prints JSON")
    }

    fn state(&self) -> Value {
        let t = std::fs::read_to_string(self.dir.join("local.json")).expect("local.json");
        serde_json::from_str(&t).expect("local.json is JSON")
    }

    /// Every PID `local` recorded or Postgres wrote, and every process whose working directory
    /// is DIR, a member's directory or its Postgres data directory (or that guards one).
    fn processes(&self) -> Vec<u32> {
        let mut pids = procs::pids_of(&self.dir);
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                pids.extend(procs::pids_of(&p));
                pids.extend(procs::pids_of(&p.join("pgdata")));
                pids.extend(procs::postmaster_pid(&p.join("pgdata")));
            }
        }
        if let Ok(st) = std::fs::read_to_string(self.dir.join("local.json")) {
            let st: Value = serde_json::from_str(&st).unwrap_or_default();
            for m in st["members"].as_array().into_iter().flatten() {
                // Only if that PID is still an agent (PIDs are reused).
                let agent = m["agent_pid"].as_u64().map(|p| p as u32).filter(|p| {
                    std::fs::read(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("pgquorum-agent"))
                });
                pids.extend(agent);
            }
        }
        pids.retain(|p| alive(*p));
        pids.sort();
        pids.dedup();
        pids
    }
}

impl Drop for LocalDir {
    fn drop(&mut self) {
        if self.dir.join("local.json").exists() {
            let _ = self.ctl(&["down", "--timeout", "20s"], Duration::from_secs(60));
        }
        // Bounded: kill -9 whatever is left until nothing is (a postmaster may fork meanwhile).
        for _ in 0..50 {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            for pid in left {
                procs::signal(pid, rustix::process::Signal::KILL);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if std::thread::panicking() {
            for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                let p = entry.path();
                if p.extension().is_some_and(|e| e == "log") {
                    let t = std::fs::read_to_string(&p).unwrap_or_default();
                    let lines: Vec<&str> = t.lines().collect();
                    eprintln!("----- last lines of {} -----", p.display());
                    for l in &lines[lines.len().saturating_sub(30)..] {
                        eprintln!("{l}");
                    }
                }
            }
            if std::env::var_os("PGQUORUM_KEEP_TEST_DIR").is_some()
                && let Some(t) = self.tmp.take()
            {
                eprintln!("kept test directory {}", t.keep().display());
            }
        }
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()))
        .is_some_and(|st| st != 'Z' && st != 'X')
}

/// The psql line `local up` printed, run with extra arguments through a shell.
fn psql(up_output: &str, extra: &str) -> Result<String, String> {
    let line = up_output
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("PGPASSFILE=") && l.contains(" psql "))
        .unwrap_or_else(|| panic!("local up prints a psql command:\n{up_output}"));
    assert!(!line.contains("password="), "no password on the command line: {line}");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("{line} -X -A -t {extra}"));
    let o = run_bounded(cmd, Duration::from_secs(30));
    if o.status.success() { Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()) } else { Err(text(&o)) }
}

/// The value of `export NAME=VALUE` in what `local up` printed.
fn exported(up_output: &str, name: &str) -> String {
    let prefix = format!("export {name}=");
    let line = up_output.lines().map(str::trim).find(|l| l.starts_with(&prefix));
    let value = line.unwrap_or_else(|| panic!("local up prints `export {name}=...`:\n{up_output}"));
    value[prefix.len()..].trim_matches('\'').to_string()
}

/// pgquorumctl with the environment `local up` told the user to export (`with_token`: all of
/// it; otherwise only the endpoint).
fn ctl_as_told(up_output: &str, with_token: bool, args: &[&str]) -> Output {
    let mut cmd = Command::new(ctl_path());
    cmd.args(args)
        .env_remove("PGQUORUM_OUTPUT")
        .env_remove("PGQUORUM_TOKEN")
        .env_remove("PGQUORUM_TOKEN_FILE");
    cmd.env("PGQUORUM_ENDPOINT", exported(up_output, "PGQUORUM_ENDPOINT"));
    if with_token {
        cmd.env("PGQUORUM_TOKEN_FILE", exported(up_output, "PGQUORUM_TOKEN_FILE"));
    }
    run_bounded(cmd, Duration::from_secs(60))
}

fn primary(st: &Value) -> Option<String> {
    let p = st["primary"].as_str()?;
    let m = st["members"].as_array()?.iter().find(|m| m["name"] == p)?;
    (m["role"] == "primary").then(|| p.to_string())
}

#[test]
fn local_up_prints_a_psql_command_that_reaches_a_writable_primary_and_down_stops_everything() {
    let l = LocalDir::new();
    let out = l.up();
    assert_eq!(psql(&out, "-c 'select 1'").expect("psql select 1"), "1");
    psql(&out, "-c 'create table local_t (x int); insert into local_t values (42)'").expect("a write");

    let st = l.status();
    let members = st["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{st}");
    for m in members {
        for key in [
            "name",
            "role",
            "state",
            "alive",
            "agent_pid",
            "postgres_pid",
            "ports",
            "endpoint",
            "data_dir",
            "pgdata",
            "config",
            "log",
        ] {
            assert!(m.get(key).is_some_and(|v| !v.is_null()), "{key} missing in {m}");
        }
        for key in ["postgres", "grpc"] {
            assert!(m["ports"][key].is_u64(), "ports.{key} in {m}");
        }
        assert!(m["ports"].get("http").is_some(), "ports.http (null when unsupported) in {m}");
        assert_eq!(m["alive"], true, "{m}");
        for pid in ["agent_pid", "postgres_pid"] {
            let p = m[pid].as_u64().expect("pid") as u32;
            assert!(alive(p), "{pid} {p} of {} is alive", m["name"]);
        }
    }
    let roles: Vec<&str> = members.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "primary").count(), 1, "{st}");

    // The README's flow: export what `local up` printed, then change the cluster. The token
    // file is private, and a change without it is refused with what to set.
    use std::os::unix::fs::PermissionsExt;
    let token = PathBuf::from(exported(&out, "PGQUORUM_TOKEN_FILE"));
    assert!(token.starts_with(&l.dir), "the token lives in the cluster's directory: {}", token.display());
    let mode = std::fs::metadata(&token).expect("token file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token file mode {mode:o}");
    let o = ctl_as_told(&out, false, &["switchover"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("requires a token: set PGQUORUM_TOKEN_FILE"),
        "{}",
        text(&o)
    );
    let old = primary(&st).expect("a primary");
    let o = ctl_as_told(&out, true, &["switchover"]);
    assert!(o.status.success(), "switchover with the printed exports: {}", text(&o));
    wait_for("the switchover's new primary", T, || Ok(primary(&l.status()).filter(|p| *p != old)));

    let again = l.up();
    assert!(again.contains("already running"), "{again}");

    let before = l.processes();
    assert!(before.len() >= 6, "agents and postmasters found: {before:?}");
    let last_primary = primary(&l.status()).expect("a primary before down");
    let started = Instant::now();
    let down = l.ok(&["down"]);
    assert!(down.contains("stopped cleanly"), "{down}");
    // Replicas stop first; the primary then has nobody to hand over to and no Raft majority
    // to wait for: it shuts Postgres down cleanly at once instead of being fenced.
    let took = started.elapsed();
    let agent_log = std::fs::read_to_string(l.dir.join(format!("{last_primary}.log"))).expect("agent log");
    assert!(took < Duration::from_secs(6), "local down took {took:?}:\n{agent_log}");
    assert!(!agent_log.contains("fencing"), "the primary was fenced on the way down:\n{agent_log}");
    let pg_log =
        std::fs::read_to_string(l.dir.join(&last_primary).join("postgres.log")).expect("Postgres log");
    let last_start = pg_log.rfind("database system is ready to accept connections").unwrap_or(0);
    assert!(
        pg_log[last_start..].contains("database system is shut down"),
        "the primary's Postgres did not shut down cleanly:\n{}",
        &pg_log[last_start..]
    );
    let left: Vec<u32> = before.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "still running after down: {left:?}");
    assert!(l.processes().is_empty(), "processes in member directories: {:?}", l.processes());
    let st = l.status();
    assert!(st["members"].as_array().expect("members").iter().all(|m| m["alive"] == false), "{st}");
    let rec = l.state();
    assert!(rec["members"].as_array().expect("members").iter().all(|m| m["agent_pid"].is_null()), "{rec}");

    let out = l.up();
    assert_eq!(psql(&out, "-c 'select x from local_t'").expect("data kept across down/up"), "42");
    l.ok(&["down"]);
    assert!(l.processes().is_empty(), "{:?}", l.processes());
}

#[test]
fn killed_primary_is_replaced_and_local_start_brings_it_back_streaming() {
    let l = LocalDir::new();
    let out = l.up();
    let st = l.status();
    let old = primary(&st).expect("a primary");
    let m = st["members"].as_array().expect("members").iter().find(|m| m["name"] == old.as_str()).cloned();
    let m = m.expect("primary listed");
    let pids: Vec<u32> =
        ["agent_pid", "postgres_pid"].iter().map(|k| m[k].as_u64().expect("pid") as u32).collect();

    l.ok(&["kill", &old]);
    wait_for("the killed agent and postmaster to be gone", Duration::from_secs(10), || {
        Ok(pids.iter().all(|p| !alive(*p)).then_some(()))
    });
    let new = wait_for("a new primary", T, || {
        let st = l.status();
        Ok(primary(&st).filter(|p| *p != old))
    });
    assert_ne!(new, old);
    wait_for("writes through the printed psql command", T, || {
        Ok(psql(&out, "-c 'create table if not exists after_kill (x int)'").ok())
    });

    l.ok(&["start", &old]);
    wait_for(&format!("{old} streaming"), T, || {
        let st = l.status();
        let m =
            st["members"].as_array().and_then(|ms| ms.iter().find(|m| m["name"] == old.as_str()).cloned());
        Ok(m.filter(|m| m["role"] == "replica" && m["state"] == "streaming" && m["alive"] == true))
    });
    l.ok(&["down"]);
    assert!(l.processes().is_empty(), "{:?}", l.processes());
}

#[test]
fn missing_agent_binary_is_reported_with_how_to_build_it() {
    let tmp = tempfile::Builder::new().prefix("pgq-local-noagent-").tempdir_in("/tmp").expect("tempdir");
    let lone = tmp.path().join("pgquorumctl");
    std::fs::copy(ctl_path(), &lone).expect("copy pgquorumctl");
    let path = "/usr/local/bin:/usr/bin:/bin";
    assert!(
        std::env::split_paths(path).all(|d| !d.join("pgquorum-agent").exists()),
        "this test needs a PATH without pgquorum-agent"
    );
    let dir = tmp.path().join("cluster");
    let mut cmd = Command::new(&lone);
    cmd.args(["local", "up", "--dir"]).arg(&dir).env("PATH", path);
    let o = run_bounded(cmd, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err.contains("pgquorum-agent not found"), "{err}");
    assert!(err.contains("cargo build --release"), "{err}");
    assert!(!dir.exists(), "nothing is created when a prerequisite is missing");
}

#[test]
fn busy_port_is_named_with_a_hint_to_choose_another_base_port() {
    let l = LocalDir::new();
    let grpc_m1 = l.base + 100;
    let _holder = std::net::TcpListener::bind(("127.0.0.1", grpc_m1)).expect("hold the port");
    let base = l.base.to_string();
    let o = l.ctl(&["up", "--base-port", &base], Duration::from_secs(30));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err.contains(&format!("port {grpc_m1} (gRPC of m1)")), "{err}");
    assert!(err.contains("--base-port"), "{err}");
    assert!(!l.dir.exists(), "nothing is created when a port is busy");
}

#[test]
fn a_directory_the_postgres_user_cannot_enter_is_named_when_root() {
    if !bins::is_root() {
        eprintln!("skipped: only root runs the agents as another user");
        return;
    }
    let l = LocalDir::with_mode(0o700);
    let parent = l.dir.parent().expect("has a parent").to_path_buf();
    let base = l.base.to_string();
    let o = l.ctl(&["up", "--base-port", &base], Duration::from_secs(30));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err.contains(&format!("cannot enter {}", parent.display())), "{err}");
    assert!(err.contains("--dir /tmp/pgquorum-local"), "{err}");
    assert!(!l.dir.exists());
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let mut cmd = Command::new(ctl_path());
        cmd.args(["completions", shell]);
        let o = run_bounded(cmd, Duration::from_secs(10));
        assert!(o.status.success(), "{shell}: {}", text(&o));
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(s.contains("pgquorumctl") && s.contains("local"), "{shell}: {s}");
    }
}

/// `pgquorumctl status --output json` the way `local up` told the user, parsed.
fn ctl_status(up_output: &str) -> Value {
    let o = ctl_as_told(up_output, false, &["--output", "json", "status"]);
    assert!(o.status.success(), "status: {}", text(&o));
    serde_json::from_slice(&o.stdout).expect("status prints JSON")
}

fn member_of<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["members"].as_array().and_then(|ms| ms.iter().find(|m| m["name"] == name)).expect("member listed")
}

#[test]
fn a_dead_member_shows_unreachable_and_local_start_fails_with_the_agents_own_error() {
    let l = LocalDir::new();
    // A token variable left from a deleted cluster does not stop `local up`; it is mentioned.
    let base = l.base.to_string();
    let mut cmd = Command::new(ctl_path());
    cmd.args(["local", "up", "--base-port", &base, "--timeout", "120s", "--dir"]).arg(&l.dir);
    cmd.env_remove("PGQUORUM_OUTPUT").env_remove("PGQUORUM_ENDPOINT");
    cmd.env("PGQUORUM_TOKEN_FILE", "/nonexistent/pgq-deleted-cluster/token");
    let o = run_bounded(cmd, T + Duration::from_secs(60));
    assert!(o.status.success(), "local up with a stale PGQUORUM_TOKEN_FILE: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ignoring PGQUORUM_TOKEN_FILE") && !err.contains("--token-file"), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();

    let st = l.status();
    let p = primary(&st).expect("a primary");
    // Not m1: it is the endpoint `local up` exported, which the status calls below go through.
    // Not the Raft leader either: what its death costs is the subject of other tests (a kill
    // of the leader right after it confirmed the primary, followed by a split vote, can cost
    // the primary its lease; then this member comes back as primary, not as a replica).
    let leader =
        wait_for("a Raft leader", T, || Ok(ctl_status(&out)["raft"]["leader"].as_str().map(str::to_string)));
    let victim = ["m2", "m3"]
        .into_iter()
        .find(|m| *m != p && *m != leader)
        .unwrap_or(if p == "m2" { "m3" } else { "m2" })
        .to_string();
    let config = PathBuf::from(member_of(&st, &victim)["config"].as_str().expect("config path"));
    l.ok(&["kill", &victim]);

    // Status, /cluster and /metrics tell the truth within a few seconds.
    let row = wait_for(&format!("{victim} shown unreachable"), Duration::from_secs(10), || {
        let st = ctl_status(&out);
        let m = member_of(&st, &victim).clone();
        Ok((m["role"] == "unknown" && m["state"] == "unreachable").then_some(m))
    });
    assert!(row["report_age_ms"].as_u64().is_some_and(|a| a > 1000), "{row}");
    let table = ctl_as_told(&out, false, &["status"]);
    let line = String::from_utf8_lossy(&table.stdout)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(victim.as_str()))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains("unreachable") && !line.contains("streaming"), "table row: {line:?}");
    let http = member_of(&l.status(), &p)["ports"]["http"].as_u64().expect("an HTTP port");
    let addr = format!("127.0.0.1:{http}");
    let cluster: Value = serde_json::from_str(
        &pgquorum_tests::http::request(&addr, "GET", "/cluster").expect("/cluster").body,
    )
    .expect("/cluster is JSON");
    assert_eq!(member_of(&cluster, &victim)["state"], "unreachable", "{cluster}");
    let metrics = pgquorum_tests::http::request(&addr, "GET", "/metrics").expect("/metrics").body;
    let series = format!("pgquorum_peer_unreachable{{cluster=\"local\",member=\"{p}\",peer=\"{victim}\"}} 1");
    assert!(metrics.lines().any(|l| l == series), "{series} in\n{metrics}");

    // pgquorumctl pointed at the HTTP port says which port is the gRPC one (exit 3).
    let mut cmd = Command::new(ctl_path());
    cmd.args(["--endpoint", &addr, "status"]).env_remove("PGQUORUM_OUTPUT");
    let o = run_bounded(cmd, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("HTTP port") && err.contains("the gRPC port is 127.0.0.1:"), "{}", text(&o));

    // An agent that exits at once (a misspelt key: exit 64) is not reported started.
    let good = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{good}bootstrap.durabilty = \"protection\"\n")).expect("write config");
    let o = l.ctl(&["start", &victim], T);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("exit status: 64") && err.contains("bad configuration"), "{}", text(&o));
    assert!(err.contains("did you mean bootstrap.durability"), "the agent's own words: {}", text(&o));

    std::fs::write(&config, &good).expect("restore config");
    l.ok(&["start", &victim]);
    wait_for(&format!("{victim} streaming again"), T, || {
        let m = member_of(&ctl_status(&out), &victim).clone();
        Ok((m["role"] == "replica" && m["state"] == "streaming").then_some(()))
    });
    l.ok(&["down"]);
    assert!(l.processes().is_empty(), "{:?}", l.processes());
}

#[test]
fn local_up_archives_by_default_and_from_backup_restores_another_local_cluster() {
    let a = LocalDir::new();
    let out = a.up();
    psql(&out, "-c 'CREATE TABLE t (id serial PRIMARY KEY, v text)'").expect("create");
    psql(&out, "-c \"INSERT INTO t (v) VALUES ('before')\"").expect("insert");
    let b = ctl_as_told(&out, true, &["--output", "json", "backup", "create"]);
    assert!(b.status.success(), "backup create: {}", text(&b));
    psql(&out, "-c \"INSERT INTO t (v) VALUES ('after')\"").expect("insert");
    let segment = psql(&out, "-c 'SELECT pg_walfile_name(pg_switch_wal())'").expect("switch");
    wait_for("the local archive to hold the switched segment", T, || {
        let found = std::fs::read_dir(a.dir.join("archive/local"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|sys| sys.path().join("wal").join(&segment).exists());
        Ok(found.then_some(()))
    });

    let drill = LocalDir::new();
    let base = free_base(3).to_string();
    let from = a.dir.display().to_string();
    let out2 = drill.ok(&["up", "--base-port", &base, "--timeout", "120s", "--from-backup", &from]);
    let rows = psql(&out2, "-c 'SELECT v FROM t ORDER BY id'").expect("rows");
    assert_eq!(rows, "before\nafter", "the drill cluster holds every archived row");
    let again = drill.ctl(&["up", "--from-backup", &from], T);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a restore into an existing cluster is refused: {}",
        text(&again)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("only goes into a new one"), "{}", text(&again));
}

#[test]
fn a_one_member_cluster_is_primary_again_after_local_down_and_up() {
    let d = LocalDir::new();
    let base = d.base.to_string();
    let out = d.ok(&["up", "--members", "1", "--base-port", &base, "--timeout", "120s"]);
    psql(&out, "-c 'CREATE TABLE kept (v int); INSERT INTO kept VALUES (1)'").expect("write");
    d.ok(&["down"]);
    // Its only member released the role on the way down; nobody else can take it.
    let again = d.ok(&["up", "--timeout", "60s"]);
    assert_eq!(psql(&again, "-c 'SELECT v FROM kept'").expect("read"), "1");
    psql(&again, "-c 'INSERT INTO kept VALUES (2)'").expect("writable again");
}

#[test]
fn an_agent_whose_pid_was_never_recorded_is_found_and_stopped_by_down() {
    let d = LocalDir::new();
    d.up();
    // As if `local up` had been stopped right after starting m1's agent, before it wrote the PID
    // down (it now records each at once; a kill -9 can still land in between).
    let mut st = d.state();
    let pid = st["members"][0]["agent_pid"].as_u64().expect("m1's agent PID") as u32;
    st["members"][0]["agent_pid"] = Value::Null;
    std::fs::write(d.dir.join("local.json"), serde_json::to_vec_pretty(&st).expect("JSON")).expect("write");
    let running = &d.status()["members"][0];
    assert_eq!(running["agent_pid"].as_u64(), Some(u64::from(pid)), "local status finds it: {running}");
    d.ok(&["down"]);
    assert!(!alive(pid), "local down left m1's agent (PID {pid}) running because local.json did not name it");
}
