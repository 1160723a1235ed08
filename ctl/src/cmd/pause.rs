//! `pgquorumctl pause` / `resume`: maintenance mode (agents leave Postgres alone and nobody
//! fails over automatically; fencing stays in force).

use std::time::Duration;

use pgquorum_proto::management::PauseRequest;

use super::wait;
use crate::{Failure, Output, client};

/// Runs `pause` (`paused = true`) or `resume`.
pub async fn run(endpoint: &str, output: Output, paused: bool) -> Result<(), Failure> {
    let mut c = client::connect(endpoint).await?;
    c.pause(PauseRequest { paused }).await.map_err(client::failure)?;
    wait::until(&mut c, Duration::from_secs(10), "the change to apply", |d| {
        Ok((d.paused == paused).then_some(()))
    })
    .await?;
    let msg = if paused { "maintenance mode on: no automatic failover" } else { "maintenance mode off" };
    match output {
        Output::Table => println!("{msg}"),
        Output::Json => println!("{}", serde_json::json!({ "paused": paused })),
    }
    Ok(())
}
