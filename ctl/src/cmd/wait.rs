//! Waiting for the cluster to reach a state, by polling `status` with a deadline.

use std::time::{Duration, Instant};

use pgquorum_proto::management::StatusRequest;

use super::status::{StatusDoc, doc};
use crate::progress::Progress;
use crate::{Failure, client};

/// Polls status until `done` returns `Some`, `Err` stops early; fails after `timeout`.
pub async fn until<T>(
    c: &mut client::Client,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&StatusDoc) -> Result<Option<T>, String>,
) -> Result<T, Failure> {
    let start = Instant::now();
    let progress = Progress::start(what);
    loop {
        let last = match c.status(StatusRequest { local_only: false }).await {
            Ok(r) => {
                let d = doc(r.into_inner());
                match done(&d) {
                    Ok(Some(v)) => {
                        progress.finish();
                        return Ok(v);
                    }
                    Ok(None) => d.coordinator.clone().unwrap_or_default(),
                    Err(e) => return Err(Failure::failed(e)),
                }
            }
            Err(s) => client::failure(s).message,
        };
        progress.phase(&phase_text(&last));
        if start.elapsed() > timeout {
            let why = if last.is_empty() { String::new() } else { format!(" (last: {last})") };
            return Err(Failure::failed(format!("timed out after {timeout:?} waiting for {what}{why}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The role of `name` in the document.
pub fn role<'a>(d: &'a StatusDoc, name: &str) -> Option<&'a str> {
    d.members.iter().find(|m| m.name == name).map(|m| m.role.as_str())
}

/// The coordinator's state as a progress phase ("waiting" when it has nothing to say).
fn phase_text(coordinator: &str) -> String {
    match coordinator {
        "" | "Steady" => "waiting".to_string(),
        c => c.to_string(),
    }
}
