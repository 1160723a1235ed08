//! `pgquorumctl switchover [--to MEMBER] [--at TIME]`: a planned hand-over of the primary role;
//! `switchover --cancel` drops one scheduled for later.

use std::time::{Duration, Instant};

use pgquorum_proto::management::{CancelSwitchoverRequest, SwitchoverRequest};

use super::wait;
use crate::{Failure, Output, client, time};

/// Arguments of `switchover`.
#[derive(clap::Args)]
pub struct Args {
    /// The member to hand over to; by default the coordinator picks the best replica.
    #[arg(long)]
    pub to: Option<String>,
    /// When: an RFC 3339 time (2026-11-21T15:00:00Z) or from now (+10m, +30s).
    #[arg(long)]
    pub at: Option<String>,
    /// Cancel a switchover scheduled with --at that has not started.
    #[arg(long, conflicts_with_all = ["to", "at", "no_wait"])]
    pub cancel: bool,
    /// Return once the switchover is requested instead of waiting for it.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for it to complete.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 30s or 5m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?} is not a duration like 30s or 5m")),
    }
}

/// Parses `--at`: RFC 3339 UTC (`Z`) or with an offset, or `+DURATION`.
pub(crate) fn parse_at(s: &str, now_ms: u64) -> Result<u64, String> {
    if let Some(rel) = s.strip_prefix('+') {
        return Ok(now_ms + parse_duration(rel)?.as_millis() as u64);
    }
    time::parse_rfc3339(s)
        .ok_or_else(|| format!("--at {s:?}: write an RFC 3339 time like 2026-11-21T15:00:00Z, or +10m"))
}

/// Runs `switchover`.
pub async fn run(endpoint: &str, output: Output, args: Args) -> Result<(), Failure> {
    let mut c = client::connect(endpoint).await?;
    if args.cancel {
        let r = c.cancel_switchover(CancelSwitchoverRequest {}).await.map_err(client::failure)?.into_inner();
        let to = if r.to.is_empty() { "the best replica".to_string() } else { r.to.clone() };
        print(
            output,
            &format!("scheduled switchover from {} to {to} cancelled", r.from),
            &r.from,
            None,
            None,
        );
        return Ok(());
    }
    let now = time::now_ms();
    let at_ms = match &args.at {
        Some(a) => parse_at(a, now).map_err(Failure::usage)?,
        None => 0,
    };
    let started = Instant::now();
    let req = SwitchoverRequest { to: args.to.clone().unwrap_or_default(), at_ms };
    let r = c.switchover(req).await.map_err(client::failure)?.into_inner();
    let to = if r.to.is_empty() { "the best replica".to_string() } else { r.to.clone() };
    if at_ms > now + 1000 {
        let msg = format!("switchover from {} to {to} scheduled at {}", r.from, time::utc(at_ms));
        print(output, &msg, &r.from, None, None);
        return Ok(());
    }
    if args.no_wait {
        print(output, &format!("switchover from {} to {to} requested", r.from), &r.from, None, None);
        return Ok(());
    }
    let from = r.from.clone();
    // Judge it cancelled only once it has been seen pending (see `failover`).
    let mut seen = false;
    let new = wait::until(&mut c, args.timeout, "the switchover", |d| {
        match &d.primary {
            Some(p) if *p != from && wait::role(d, p) == Some("primary") => return Ok(Some(p.clone())),
            _ => {}
        }
        seen |= d.switchover.is_some();
        if seen && d.switchover.is_none() && d.primary.as_deref() == Some(from.as_str()) {
            let why = d.coordinator.clone().unwrap_or_default();
            return Err(format!("the switchover was cancelled; {from} is still primary ({why})"));
        }
        Ok(None)
    })
    .await?;
    let took = started.elapsed();
    print(
        output,
        &format!("switched over from {from} to {new} in {:.1}s", took.as_secs_f64()),
        &from,
        Some(&new),
        Some(took),
    );
    Ok(())
}

fn print(output: Output, msg: &str, from: &str, to: Option<&str>, took: Option<Duration>) {
    match output {
        Output::Table => println!("{msg}"),
        Output::Json => println!(
            "{}",
            serde_json::json!({ "from": from, "to": to, "seconds": took.map(|t| t.as_secs_f64()), "message": msg })
        ),
    }
}
