//! `pgquorumctl local kill MEMBER`: kill -9 of one member's agent and its postmaster, for crash
//! drills (the others then fail over if it was the primary). `local start MEMBER` brings it back.

use std::time::{Duration, Instant};

use super::{DirArg, procs};
use crate::{Failure, Output};

/// Arguments of `local kill`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub dir: DirArg,
    /// The member to kill (m1, m2, ...).
    pub member: String,
}

/// Runs `local kill`.
pub fn run(output: Output, args: Args) -> Result<(), Failure> {
    let mut st = args.dir.load()?;
    let i = st.member_index(&args.member)?;
    let m = &st.members[i];
    // Read the postmaster's PID before the agent dies: it may not be findable afterwards.
    let postmaster = procs::postmaster(&m.pgdata);
    let agent = procs::agent_of(m.agent_pid, &m.config);
    if agent.is_none() && postmaster.is_none() {
        return Err(Failure::failed(format!(
            "{} is not running: neither its agent nor its Postgres; start it with `pgquorumctl local start {}`",
            m.name, m.name
        )));
    }
    let agent = agent.filter(|p| procs::kill9(*p));
    let postmaster = postmaster.filter(|p| procs::kill9(*p));
    // Postgres's children exit on their own once the postmaster is gone; wait (bounded) so the
    // member's ports are free for `local start` when this returns.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && (agent.is_some_and(procs::alive)
            || postmaster.is_some_and(procs::alive)
            || !procs::postgres_in(&m.pgdata).is_empty())
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    st.members[i].agent_pid = None;
    st.save()?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({ "member": args.member, "agent_pid": agent, "postgres_pid": postmaster })
        ),
        Output::Table => {
            let what =
                |p: Option<u32>| p.map_or_else(|| "not running".to_string(), |p| format!("killed {p}"));
            println!("{}: agent {}, postmaster {}", args.member, what(agent), what(postmaster));
        }
    }
    Ok(())
}
