//! `pgquorumctl local up`: check prerequisites, create the cluster's files under DIR (or find
//! an existing cluster there), start every agent that is not running, wait until there is a
//! primary and every other member streams, then print how to connect.
//!
//! Port layout from `--base-port B` for member i (0-based): Postgres B+i, gRPC B+100+i, HTTP
//! B+200+i (HTTP only when the agent has the `http.listen` key).

use std::time::Duration;

use clap::ValueEnum;

use super::prereq::{self, RunAs};
use super::state::{self, Layout, LocalState, Ports, shell_quote};
use super::{DirArg, health, procs, setup};
use crate::progress::Progress;
use crate::{Failure, Output};

/// Default first port.
pub const DEFAULT_BASE_PORT: u16 = 15432;

/// Durability mode seeded at bootstrap (see DESIGN.md).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// Asynchronous replication; failover may lose up to the configured lag.
    Performance,
    /// Synchronous while a standby is available.
    Availability,
    /// Always synchronous: commits wait for a standby; zero loss.
    Protection,
}

impl Durability {
    fn name(self) -> String {
        self.to_possible_value().expect("no skipped variants").get_name().to_string()
    }
}

/// Arguments of `local up`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub dir: DirArg,
    /// Number of members (agents, each with its Postgres) [default: 3].
    #[arg(long, value_name = "N")]
    pub members: Option<usize>,
    /// First port: Postgres on BASE+i, gRPC on BASE+100+i, HTTP on BASE+200+i [default: 15432].
    #[arg(long, value_name = "BASE")]
    pub base_port: Option<u16>,
    /// Durability mode the cluster starts with [default: availability].
    #[arg(long, value_enum, value_name = "MODE")]
    pub durability: Option<Durability>,
    /// Give up waiting for a healthy cluster after this long (the agents keep running).
    #[arg(long, default_value = "120s", value_parser = super::parse_timeout)]
    pub timeout: Duration,
    /// Bootstrap from a base backup instead of initdb (a restore drill): another local
    /// cluster's DIR/archive, any archive directory, or s3://bucket/prefix (with the
    /// PGQUORUM_ARCHIVE_S3_* settings in the environment). The new cluster archives into its own
    /// DIR/archive.
    #[arg(long, value_name = "SOURCE")]
    pub from_backup: Option<String>,
    /// With --from-backup: the source cluster's name [default: local].
    #[arg(long, value_name = "NAME", requires = "from_backup")]
    pub source_cluster: Option<String>,
    /// With --from-backup: the backup id to start from [default: the newest before the target].
    #[arg(long, value_name = "ID", requires = "from_backup")]
    pub backup: Option<String>,
    /// With --from-backup: recover up to this UTC time (2026-12-06T10:00:00Z).
    #[arg(long, value_name = "TIME", requires = "from_backup", conflicts_with_all = ["target_lsn", "target_name"])]
    pub target_time: Option<String>,
    /// With --from-backup: recover up to this WAL position.
    #[arg(long, value_name = "LSN", requires = "from_backup", conflicts_with = "target_name")]
    pub target_lsn: Option<String>,
    /// With --from-backup: recover up to this restore point (`pgquorumctl backup restore-point`).
    #[arg(long, value_name = "NAME", requires = "from_backup")]
    pub target_name: Option<String>,
    /// For `chaos run` as root: each member's network namespace and address, in order
    /// (NS=IP,NS=IP,...). The namespaces must exist and reach each other.
    #[arg(long, hide = true, value_name = "NS=IP", value_delimiter = ',')]
    pub netns: Vec<String>,
}

/// Runs `local up`.
pub async fn run(output: Output, args: Args) -> Result<(), Failure> {
    let dir = args.dir.absolute()?;
    let agent = prereq::find_agent()?;
    let keys = prereq::agent_keys(&agent)?;
    prereq::postgres_bin_dir()?;
    prereq::tool("setsid")?;
    let run_as = prereq::run_as()?;
    if let Some(user) = &run_as {
        prereq::tool("setpriv")?;
        prereq::check_reachable(&dir, user)?;
    }
    let (st, fresh) = match LocalState::load(&dir)? {
        Some(st) => (existing(st, &args)?, false),
        None => {
            let has = |key: &str| keys.iter().any(|k| k == key);
            (create(&dir, &args, has("http.listen"), has("auth.token_file"), run_as.as_ref())?, true)
        }
    };
    let progress = Progress::start("local up");
    let mut st = st;
    // An agent started by an interrupted `local up` runs without its PID recorded: adopt it.
    let mut adopted = false;
    for m in &mut st.members {
        let found = procs::agent_of(m.agent_pid, &m.config);
        adopted |= found.is_some() && found != m.agent_pid;
        m.agent_pid = found;
    }
    if adopted {
        st.save()?;
    }
    let dead: Vec<usize> = (0..st.members.len()).filter(|&i| st.members[i].agent_pid.is_none()).collect();
    if dead.is_empty() {
        progress.finish();
        return report(output, &st, None, true, 0.0);
    }
    if !fresh {
        let ports = dead.iter().flat_map(|&i| named_ports(&st.members[i])).collect::<Vec<_>>();
        let hint = format!(
            "A process left from this cluster may hold it: `pgquorumctl local down --dir {}` stops everything \
             the cluster started; otherwise stop what holds the port",
            shell_quote(&dir.display().to_string())
        );
        prereq::check_ports(&ports, &hint)?;
        let names: Vec<&str> = dead.iter().map(|&i| st.members[i].name.as_str()).collect();
        progress.note(&format!("restarting {} in {} (data kept)", names.join(", "), dir.display()));
    } else {
        let (first, last) = (&st.members[0].ports, &st.members[st.members.len() - 1].ports);
        let http = match (first.http, last.http) {
            (Some(a), Some(b)) => format!(", HTTP {a}-{b}"),
            _ => String::new(),
        };
        progress.note(&format!(
            "creating a {}-member cluster in {} (ports: Postgres {}-{}, gRPC {}-{}{http})",
            st.members.len(),
            dir.display(),
            first.postgres,
            last.postgres,
            first.grpc,
            last.grpc
        ));
    }
    let launcher = super::launcher_for(&st, &agent)?;
    let mut children = Vec::new();
    for &i in &dead {
        progress.phase(&format!("starting the agent of {}", st.members[i].name));
        let child = launcher.start(&st.members[i])?;
        st.members[i].agent_pid = Some(child.id());
        children.push((st.members[i].name.clone(), child));
        // Recorded at once: `local down` must find it even if this command is stopped now.
        st.save()?;
    }
    let names: Vec<String> = st.members.iter().map(|m| m.name.clone()).collect();
    let primary = health::wait_healthy(&st, &names, &mut children, args.timeout, &progress).await?;
    let secs = progress.elapsed().as_secs_f64();
    progress.finish();
    report(output, &st, Some(&primary), false, secs)
}

fn named_ports(m: &state::MemberState) -> Vec<(u16, String)> {
    m.ports.named().into_iter().map(|(p, what)| (p, format!("{what} of {}", m.name))).collect()
}

/// Checks that flags given for an existing cluster agree with it.
fn existing(st: LocalState, args: &Args) -> Result<LocalState, Failure> {
    let dir = shell_quote(&st.dir.display().to_string());
    let start_over = format!(
        "that cluster keeps its layout; to start over: `pgquorumctl local down --dir {dir} && rm -rf {dir}`, \
         or choose another --dir"
    );
    if let Some(from) = &args.from_backup {
        return Err(Failure::usage(format!(
            "--from-backup {from}: {} already holds a cluster, and a restore only goes into a new one; \
             choose another --dir, or {start_over}",
            st.dir.display()
        )));
    }
    if let Some(n) = args.members.filter(|n| *n != st.members.len()) {
        return Err(Failure::usage(format!(
            "--members {n}: {} already holds a cluster of {} members; {start_over}",
            st.dir.display(),
            st.members.len()
        )));
    }
    if let Some(b) = args.base_port.filter(|b| *b != st.base_port) {
        return Err(Failure::usage(format!(
            "--base-port {b}: {} already holds a cluster on base port {}; {start_over}",
            st.dir.display(),
            st.base_port
        )));
    }
    if let Some(d) = args.durability.map(Durability::name).filter(|d| *d != st.durability) {
        eprintln!(
            "warning: --durability {d} ignored: the cluster was created with {}; change it with \
             `pgquorumctl config set durability={d}`",
            st.durability
        );
    }
    Ok(st)
}

/// Lays out and writes a new cluster under `dir`; `http` and `token` say whether the agent
/// binary has the `http.listen` and `auth.token_file` keys.
fn create(
    dir: &std::path::Path,
    args: &Args,
    http: bool,
    token: bool,
    run_as: Option<&RunAs>,
) -> Result<LocalState, Failure> {
    let members = args.members.unwrap_or(3);
    let base = args.base_port.unwrap_or(DEFAULT_BASE_PORT);
    state::check_base_port(base, members)?;
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Failure::failed(format!(
            "{} exists, is not empty and holds no {}: choose a new or empty --dir",
            dir.display(),
            state::STATE_FILE
        )));
    }
    let layout = Layout { dir: dir.to_path_buf() };
    let st = LocalState {
        version: 1,
        cluster: state::CLUSTER.into(),
        dir: dir.to_path_buf(),
        base_port: base,
        durability: args.durability.unwrap_or(Durability::Availability).name(),
        run_as: run_as.map(|u| u.name.clone()),
        pgpass: layout.pgpass(),
        token_file: token.then(|| layout.token()),
        archive: Some(layout.archive()),
        restore: restore_keys(args)?,
        members: (0..members)
            .map(|i| layout.member(&format!("m{}", i + 1), Ports::for_member(base, i, http)))
            .collect(),
    };
    let mut st = st;
    place_in_namespaces(&mut st, &args.netns)?;
    let ports: Vec<(u16, String)> = st.members.iter().flat_map(named_ports).collect();
    let last = base + if http { state::HTTP_OFFSET } else { state::GRPC_OFFSET } + members as u16 - 1;
    prereq::check_ports(
        &ports,
        &format!(
            "This layout uses ports {base}-{last}; choose another range with --base-port (for example \
             --base-port {})",
            suggest_base(base)
        ),
    )?;
    setup::make_dir(dir, 0o755, run_as)?;
    setup::create(&st, &layout, run_as)?;
    st.save()?;
    Ok(st)
}

/// The `restore.*` keys of `--from-backup` and its companions.
fn restore_keys(args: &Args) -> Result<Vec<(String, String)>, Failure> {
    let Some(from) = &args.from_backup else { return Ok(Vec::new()) };
    let from = if from.starts_with("s3://") {
        from.clone()
    } else {
        let p = std::path::Path::new(from);
        let abs = std::path::absolute(p).map_err(|e| Failure::usage(format!("--from-backup {from}: {e}")))?;
        // Another local cluster's DIR: its archive is DIR/archive.
        let abs = if abs.join(state::STATE_FILE).exists() { abs.join("archive") } else { abs };
        if !abs.is_dir() {
            return Err(Failure::usage(format!(
                "--from-backup {from}: no such directory; give another local cluster's --dir, its archive \
                 directory, or s3://bucket/prefix"
            )));
        }
        abs.display().to_string()
    };
    let mut keys = vec![
        ("restore.from".to_string(), from),
        ("restore.cluster".to_string(), args.source_cluster.clone().unwrap_or_else(|| state::CLUSTER.into())),
    ];
    let opt = [
        ("restore.backup", &args.backup),
        ("restore.target_time", &args.target_time),
        ("restore.target_lsn", &args.target_lsn),
        ("restore.target_name", &args.target_name),
    ];
    keys.extend(opt.into_iter().filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v))));
    Ok(keys)
}

/// Puts member i in the i-th `NS=IP` of `--netns` (none given: all stay on loopback).
fn place_in_namespaces(st: &mut LocalState, netns: &[String]) -> Result<(), Failure> {
    if netns.is_empty() {
        return Ok(());
    }
    if netns.len() != st.members.len() {
        return Err(Failure::usage(format!(
            "--netns names {} namespaces for {} members: give one NS=IP per member",
            netns.len(),
            st.members.len()
        )));
    }
    for (m, spec) in st.members.iter_mut().zip(netns) {
        let Some((ns, ip)) =
            spec.split_once('=').filter(|(n, ip)| !n.is_empty() && ip.parse::<std::net::Ipv4Addr>().is_ok())
        else {
            return Err(Failure::usage(format!("--netns {spec:?}: write NS=IPv4, e.g. pgq1m0=10.101.0.10")));
        };
        m.netns = Some(ns.to_string());
        m.host = ip.to_string();
    }
    Ok(())
}

fn suggest_base(base: u16) -> u16 {
    if base < 40000 { base + 1000 } else { 20000 }
}

fn report(
    output: Output,
    st: &LocalState,
    primary: Option<&str>,
    already: bool,
    secs: f64,
) -> Result<(), Failure> {
    match output {
        Output::Json => println!("{}", super::connect_json(st, primary, already, secs)),
        Output::Table => {
            if already {
                let pids: Vec<String> = st
                    .members
                    .iter()
                    .map(|m| format!("{} (agent PID {})", m.name, m.agent_pid.unwrap_or_default()))
                    .collect();
                println!(
                    "The local cluster in {} is already running: {}.\n",
                    st.dir.display(),
                    pids.join(", ")
                );
            } else {
                let others: Vec<&str> =
                    st.members.iter().map(|m| m.name.as_str()).filter(|n| Some(*n) != primary).collect();
                let replicas = if others.is_empty() {
                    String::new()
                } else {
                    format!(", {} streaming", others.join(", "))
                };
                println!(
                    "Local cluster {:?} is up in {} ({secs:.1}s): primary {}{replicas}.\n",
                    st.cluster,
                    st.dir.display(),
                    primary.unwrap_or("?")
                );
            }
            print!("{}", super::connect_text(st));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::state::LocalState;

    fn three() -> LocalState {
        LocalState::for_tests(3, false)
    }

    #[test]
    fn netns_places_each_member_in_its_namespace_or_says_what_is_wrong() {
        let mut st = three();
        super::place_in_namespaces(&mut st, &[]).expect("none: loopback");
        assert_eq!(st.members[0].host, "127.0.0.1");
        let specs: Vec<String> = (0..3).map(|i| format!("n{i}=10.9.0.{}", 10 + i)).collect();
        super::place_in_namespaces(&mut st, &specs).expect("placed");
        assert_eq!((st.members[2].host.as_str(), st.members[2].netns.as_deref()), ("10.9.0.12", Some("n2")));
        assert_eq!(st.members[2].endpoint(), "10.9.0.12:15534");
        let err = super::place_in_namespaces(&mut three(), &specs[..2]).expect_err("too few");
        assert!(err.message.contains("one NS=IP per member"), "{}", err.message);
        let bad = vec!["n0=10.9.0.10".into(), "n1=nowhere".into(), "=10.9.0.12".into()];
        let err = super::place_in_namespaces(&mut three(), &bad).expect_err("bad address");
        assert!(err.message.contains("n1=nowhere"), "{}", err.message);
    }
}
