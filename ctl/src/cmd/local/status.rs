//! `pgquorumctl local status`: each member of the local cluster with its role and state (from
//! the agents' management API, when one answers), its agent and Postgres PIDs, ports, paths,
//! and whether its agent is alive. `--output json` prints the document in docs/ctl.md.

use serde::Serialize;

use super::health::Clients;
use super::state::{LocalState, Ports};
use super::{DirArg, procs};
use crate::{Failure, Output, table};

/// Arguments of `local status`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub dir: DirArg,
}

/// The JSON form of `local status`.
#[derive(Serialize)]
pub struct LocalStatusDoc {
    pub dir: String,
    pub cluster: String,
    /// The primary as the answering agent reports it (null: none, or no agent answered).
    pub primary: Option<String>,
    pub endpoint: String,
    pub psql: String,
    pub members: Vec<LocalMemberDoc>,
}

/// One member in `local status`.
#[derive(Serialize)]
pub struct LocalMemberDoc {
    pub name: String,
    /// primary, replica, ... as the cluster reports it; null when no agent answered.
    pub role: Option<String>,
    /// streaming, running, ... as the cluster reports it; null when no agent answered.
    pub state: Option<String>,
    /// Whether the agent process `local` started is running.
    pub alive: bool,
    pub agent_pid: Option<u32>,
    /// The postmaster's PID from postmaster.pid, when that process runs.
    pub postgres_pid: Option<u32>,
    pub ports: Ports,
    pub endpoint: String,
    pub data_dir: String,
    pub pgdata: String,
    pub config: String,
    pub log: String,
}

/// Builds the document: local facts from /proc, roles from whichever agent answers.
pub async fn doc(st: &LocalState) -> LocalStatusDoc {
    let agents: Vec<Option<u32>> =
        st.members.iter().map(|m| procs::agent_of(m.agent_pid, &m.config)).collect();
    let running: Vec<String> =
        st.members.iter().zip(&agents).filter(|(_, a)| a.is_some()).map(|(m, _)| m.name.clone()).collect();
    let reply = if running.is_empty() { None } else { Clients::new(st).status(&running).await.ok() };
    let primary =
        reply.as_ref().and_then(|r| r.ha.as_ref()).map(|h| h.primary.clone()).filter(|p| !p.is_empty());
    let members = st
        .members
        .iter()
        .zip(agents)
        .map(|(m, agent)| {
            let seen = reply.as_ref().and_then(|r| r.members.iter().find(|x| x.name == m.name));
            LocalMemberDoc {
                name: m.name.clone(),
                role: seen.map(|x| x.role.clone()),
                state: seen.map(|x| x.state.clone()),
                alive: agent.is_some(),
                agent_pid: agent,
                postgres_pid: procs::postmaster(&m.pgdata),
                ports: m.ports,
                endpoint: m.endpoint(),
                data_dir: m.data_dir.display().to_string(),
                pgdata: m.pgdata.display().to_string(),
                config: m.config.display().to_string(),
                log: m.log.display().to_string(),
            }
        })
        .collect();
    LocalStatusDoc {
        dir: st.dir.display().to_string(),
        cluster: st.cluster.clone(),
        primary,
        endpoint: st.endpoint(),
        psql: st.psql_command(),
        members,
    }
}

/// Runs `local status`.
pub async fn run(output: Output, args: Args) -> Result<(), Failure> {
    let st = args.dir.load()?;
    let d = doc(&st).await;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&d).expect("serialisable")),
        Output::Table => print!("{}", render(&d)),
    }
    Ok(())
}

fn render(d: &LocalStatusDoc) -> String {
    let dash = |o: Option<String>| o.unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = d
        .members
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                if m.alive { "yes".into() } else { "no".into() },
                dash(m.role.clone()),
                dash(m.state.clone()),
                dash(m.agent_pid.map(|p| p.to_string())),
                dash(m.postgres_pid.map(|p| p.to_string())),
                m.ports.postgres.to_string(),
                m.ports.grpc.to_string(),
                dash(m.ports.http.map(|p| p.to_string())),
                m.log.clone(),
            ]
        })
        .collect();
    let mut out = format!(
        "Local cluster {:?} in {}, primary {}\n\n",
        d.cluster,
        d.dir,
        d.primary.as_deref().unwrap_or("none")
    );
    out.push_str(&table::render(
        &["Member", "Alive", "Role", "State", "Agent PID", "PG PID", "Postgres", "gRPC", "HTTP", "Log"],
        &rows,
    ));
    out.push_str(&format!("\nConnect: {}\nEndpoint: {}\n", d.psql, d.endpoint));
    out
}
