//! `pgquorumctl local down`: SIGTERM to every agent `local` started (replicas first, the
//! primary last, so stopping causes no failover; the primary at most half a second after
//! them, so it stops its Postgres cleanly before its lease, which a Raft group without its
//! replicas cannot renew, runs out), wait for them to stop cleanly, then kill -9
//! whatever is left: agents past the deadline, and Postgres processes and fence guards found by
//! PID (postmaster.pid, /proc). The data stays; `local up` starts the cluster again.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::health::Clients;
use super::state::LocalState;
use super::{DirArg, procs};
use crate::progress::Progress;
use crate::{Failure, Output};

/// Arguments of `local down`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub dir: DirArg,
    /// How long the agents get to stop cleanly before they are killed.
    #[arg(long, default_value = "30s", value_parser = super::parse_timeout)]
    pub timeout: Duration,
}

/// What happened to one member.
#[derive(Serialize)]
struct Stopped {
    name: String,
    agent_pid: Option<u32>,
    /// "clean" (exited after SIGTERM), "killed" (kill -9 after the deadline) or "not running".
    agent: &'static str,
    /// Leftover Postgres or fence-guard processes killed with -9.
    killed: Vec<u32>,
}

/// How long the replicas get to stop before the primary is asked to: its lease can be renewed
/// only while they run (a Raft majority), and it lasts 1.35 s after its last renewal at the
/// defaults; an agent that is not Raft leader stops in about 0.3 s.
const REPLICAS_FIRST_FOR: Duration = Duration::from_millis(500);

/// Runs `local down`.
pub async fn run(output: Output, args: Args) -> Result<(), Failure> {
    let mut st = args.dir.load()?;
    let progress = Progress::start("local down");
    let running: Vec<(usize, u32)> = st
        .members
        .iter()
        .enumerate()
        .filter_map(|(i, m)| procs::agent_of(m.agent_pid, &m.config).map(|p| (i, p)))
        .collect();
    let primary = primary_of(&st, &running).await;
    let (first, last): (Vec<_>, Vec<_>) =
        running.iter().partition(|(i, _)| primary.as_deref() != Some(st.members[*i].name.as_str()));
    let deadline = Instant::now() + args.timeout;
    let mut outcome: Vec<Stopped> = st
        .members
        .iter()
        .map(|m| Stopped { name: m.name.clone(), agent_pid: None, agent: "not running", killed: Vec::new() })
        .collect();
    let replicas_deadline = deadline.min(Instant::now() + REPLICAS_FIRST_FOR);
    for (group, until) in [(&first, replicas_deadline), (&last, deadline)] {
        for &(i, pid) in group {
            procs::term(pid);
            outcome[i].agent_pid = Some(pid);
            outcome[i].agent = "clean";
        }
        wait_gone(&st, group, until, &progress).await;
    }
    wait_gone(&st, &running, deadline, &progress).await;
    for &(i, pid) in &running {
        if procs::alive(pid) {
            procs::kill9(pid);
            outcome[i].agent = "killed";
        }
    }
    progress.phase("looking for leftover Postgres and fence-guard processes");
    for (i, m) in st.members.iter().enumerate() {
        // Twice: a postmaster may fork a child between the scan and the kill.
        for _ in 0..2 {
            let mut pids = procs::in_pgdata(&m.pgdata);
            pids.extend(procs::postmaster(&m.pgdata));
            for pid in pids {
                if procs::kill9(pid) && !outcome[i].killed.contains(&pid) {
                    outcome[i].killed.push(pid);
                }
            }
        }
    }
    for m in &mut st.members {
        m.agent_pid = None;
    }
    st.save()?;
    progress.finish();
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "dir": st.dir, "members": outcome }))
                .expect("serialisable")
        ),
        Output::Table => {
            for o in &outcome {
                let agent = match (o.agent, o.agent_pid) {
                    ("clean", Some(p)) => format!("agent {p} stopped cleanly"),
                    ("killed", Some(p)) => {
                        format!("agent {p} did not stop within {}s: killed", args.timeout.as_secs())
                    }
                    _ => "agent not running".to_string(),
                };
                let extra = if o.killed.is_empty() {
                    String::new()
                } else {
                    let pids: Vec<String> = o.killed.iter().map(u32::to_string).collect();
                    format!("; killed leftover processes {}", pids.join(", "))
                };
                println!("{}: {agent}{extra}", o.name);
            }
            println!(
                "The data stays in {}; `pgquorumctl local up --dir {}` starts it again.",
                st.dir.display(),
                st.dir.display()
            );
        }
    }
    Ok(())
}

/// The primary's name, asked of a running agent (None when none answers quickly).
async fn primary_of(st: &LocalState, running: &[(usize, u32)]) -> Option<String> {
    let names: Vec<String> = running.iter().map(|(i, _)| st.members[*i].name.clone()).collect();
    if names.is_empty() {
        return None;
    }
    let reply =
        tokio::time::timeout(Duration::from_secs(3), Clients::new(st).status(&names)).await.ok()?.ok()?;
    reply.ha.map(|h| h.primary).filter(|p| !p.is_empty())
}

async fn wait_gone(st: &LocalState, group: &[(usize, u32)], deadline: Instant, progress: &Progress) {
    loop {
        let left: Vec<&str> = group
            .iter()
            .filter(|(_, p)| procs::alive(*p))
            .map(|(i, _)| st.members[*i].name.as_str())
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return;
        }
        progress.phase(&format!("waiting for {} to stop", left.join(", ")));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
