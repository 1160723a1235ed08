//! `pgquorumctl restart [MEMBER...] [--pending]` and `reload [MEMBER...]`: restart or reload
//! Postgres, one member at a time (replicas first, the primary last).

use std::time::Duration;

use pgquorum_proto::management::{ReloadRequest, RestartRequest};

use super::status::StatusDoc;
use super::{switchover::parse_duration, wait};
use crate::{Failure, Output, client};

/// Arguments of `restart`.
#[derive(clap::Args)]
pub struct RestartArgs {
    /// Members to restart (default: all with Postgres).
    pub members: Vec<String>,
    /// Only members whose Postgres reports parameters waiting for a restart.
    #[arg(long)]
    pub pending: bool,
    /// How long to wait for each member to come back.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Arguments of `reload`.
#[derive(clap::Args)]
pub struct ReloadArgs {
    /// Members to reload (default: all with Postgres).
    pub members: Vec<String>,
}

/// The members to act on, replicas before the primary.
fn targets(d: &StatusDoc, asked: &[String]) -> Result<Vec<String>, Failure> {
    for a in asked {
        if !d.members.iter().any(|m| &m.name == a) {
            return Err(Failure::usage(format!("no member named {a}; see pgquorumctl member list")));
        }
    }
    let mut out: Vec<String> = d
        .members
        .iter()
        .filter(|m| m.role != "witness" && (asked.is_empty() || asked.contains(&m.name)))
        .map(|m| m.name.clone())
        .collect();
    out.sort_by_key(|m| d.primary.as_deref() == Some(m.as_str()));
    Ok(out)
}

async fn status(c: &mut client::Client) -> Result<StatusDoc, Failure> {
    let r = c
        .status(pgquorum_proto::management::StatusRequest { local_only: false })
        .await
        .map_err(client::failure)?;
    Ok(super::status::doc(r.into_inner()))
}

/// Runs `restart`.
pub async fn restart(endpoint: &str, output: Output, args: RestartArgs) -> Result<(), Failure> {
    let mut c = client::connect(endpoint).await?;
    let d = status(&mut c).await?;
    let mut done = Vec::new();
    for m in targets(&d, &args.members)? {
        let before = d.members.iter().find(|x| x.name == m).expect("target is a member");
        if args.pending && before.pending_restart.is_empty() {
            continue;
        }
        let role = before.role.clone();
        eprintln!("restarting {m} ({role})");
        c.restart(RestartRequest { member: m.clone() }).await.map_err(client::failure)?;
        // First see it go down (or a new Postgres start), then come back in its role.
        let started = before.report_age_ms;
        let _ = started;
        tokio::time::sleep(Duration::from_millis(300)).await;
        wait::until(&mut c, args.timeout, &format!("{m} to come back"), |d| {
            let back = d.members.iter().find(|x| x.name == m).is_some_and(|x| {
                x.role == role
                    && matches!(x.state.as_str(), "running" | "streaming")
                    && x.pending_restart.is_empty()
            });
            Ok(back.then_some(()))
        })
        .await?;
        done.push(m);
    }
    match output {
        Output::Table if done.is_empty() => println!("nothing to restart"),
        Output::Table => println!("restarted {}", done.join(", ")),
        Output::Json => println!("{}", serde_json::json!({ "restarted": done })),
    }
    Ok(())
}

/// Runs `reload`.
pub async fn reload(endpoint: &str, output: Output, args: ReloadArgs) -> Result<(), Failure> {
    let mut c = client::connect(endpoint).await?;
    let d = status(&mut c).await?;
    let members = targets(&d, &args.members)?;
    for m in &members {
        c.reload(ReloadRequest { member: m.clone() }).await.map_err(client::failure)?;
    }
    match output {
        Output::Table => println!("reloaded {}", members.join(", ")),
        Output::Json => println!("{}", serde_json::json!({ "reloaded": members })),
    }
    Ok(())
}
