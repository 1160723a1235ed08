//! `pgquorumctl failover --to MEMBER [--force]`: promote a member when there is no healthy
//! primary (a planned hand-over is `switchover`).

use std::time::{Duration, Instant};

use pgquorum_proto::management::FailoverRequest;

use super::{switchover::parse_duration, wait};
use crate::{Failure, Output, client};

/// Arguments of `failover`.
#[derive(clap::Args)]
pub struct Args {
    /// The member to promote.
    #[arg(long, required = true)]
    pub to: String,
    /// Promote it even if it cannot be shown to hold every acknowledged commit (may lose data).
    #[arg(long)]
    pub force: bool,
    /// How long to wait for it to complete.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Runs `failover`.
pub async fn run(endpoint: &str, output: Output, args: Args) -> Result<(), Failure> {
    let mut c = client::connect(endpoint).await?;
    let started = Instant::now();
    let r = c
        .failover(FailoverRequest { to: args.to.clone(), force: args.force })
        .await
        .map_err(client::failure)?
        .into_inner();
    let to = args.to.clone();
    // The agent answering status may apply the request a moment after it was committed: judge
    // it lapsed only once it has been seen pending.
    let mut seen = false;
    wait::until(&mut c, args.timeout, &format!("{to} to become primary"), |d| {
        if d.primary.as_deref() == Some(to.as_str()) && wait::role(d, &to) == Some("primary") {
            return Ok(Some(()));
        }
        seen |= d.failover.is_some();
        if seen && d.failover.is_none() && d.primary.as_deref() != Some(to.as_str()) {
            let why = d.coordinator.clone().unwrap_or_default();
            return Err(format!("the failover request lapsed without promoting {to} ({why})"));
        }
        Ok(None)
    })
    .await?;
    let msg = format!(
        "{to} is primary (was {}) after {:.1}s",
        if r.from.is_empty() { "none" } else { &r.from },
        started.elapsed().as_secs_f64()
    );
    match output {
        Output::Table => println!("{msg}"),
        Output::Json => println!("{}", serde_json::json!({ "from": r.from, "to": to, "message": msg })),
    }
    Ok(())
}
