//! `pgquorumctl local start MEMBER`: start one member's agent again with its configuration
//! (after `local kill`, or a crash), then wait until every running member is healthy again.

use std::time::Duration;

use super::{DirArg, health, prereq, procs, state::shell_quote};
use crate::progress::Progress;
use crate::{Failure, Output};

/// Arguments of `local start`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub dir: DirArg,
    /// The member to start (m1, m2, ...).
    pub member: String,
    /// Return once the agent is started, without waiting for it to be healthy.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting for the member to be healthy after this long (it keeps running).
    #[arg(long, default_value = "120s", value_parser = super::parse_timeout)]
    pub timeout: Duration,
}

/// Runs `local start`.
pub async fn run(output: Output, args: Args) -> Result<(), Failure> {
    let mut st = args.dir.load()?;
    let i = st.member_index(&args.member)?;
    let m = st.members[i].clone();
    if let Some(pid) = procs::agent_of(m.agent_pid, &m.config) {
        match output {
            Output::Json => {
                println!(
                    "{}",
                    serde_json::json!({ "member": m.name, "agent_pid": pid, "already_running": true })
                )
            }
            Output::Table => println!("{} is already running (agent PID {pid})", m.name),
        }
        return Ok(());
    }
    let ports: Vec<(u16, String)> =
        m.ports.named().into_iter().map(|(p, what)| (p, format!("{what} of {}", m.name))).collect();
    let hint = format!(
        "A leftover process of {} may hold it (its Postgres, if only the agent died): `pgquorumctl local kill {} \
         --dir {}` stops both",
        m.name,
        m.name,
        shell_quote(&st.dir.display().to_string())
    );
    prereq::check_ports(&ports, &hint)?;
    let agent = prereq::find_agent()?;
    let launcher = super::launcher_for(&st, &agent)?;
    let progress = Progress::start("local start");
    progress.phase(&format!("starting the agent of {}", m.name));
    let child = launcher.start(&m)?;
    let pid = child.id();
    st.members[i].agent_pid = Some(pid);
    st.save()?;
    let mut children = vec![(m.name.clone(), child)];
    let primary = if args.no_wait {
        None
    } else {
        let running: Vec<String> = st
            .members
            .iter()
            .filter(|x| procs::agent_of(x.agent_pid, &x.config).is_some())
            .map(|x| x.name.clone())
            .collect();
        Some(health::wait_healthy(&st, &running, &mut children, args.timeout, &progress).await?)
    };
    let secs = progress.elapsed().as_secs_f64();
    progress.finish();
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({ "member": m.name, "agent_pid": pid, "already_running": false, "primary": primary })
        ),
        Output::Table => match &primary {
            Some(p) if *p == m.name => {
                println!("{} started (agent PID {pid}) and is the primary ({secs:.1}s)", m.name)
            }
            Some(p) => println!("{} started (agent PID {pid}) and streams from {p} ({secs:.1}s)", m.name),
            None => println!("{} started (agent PID {pid})", m.name),
        },
    }
    Ok(())
}
