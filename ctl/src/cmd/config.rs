//! `pgquorumctl config show | set KEY=VALUE...`: the cluster-wide dynamic configuration.

use pgquorum_proto::management::{GetConfigRequest, SetConfigRequest};

use crate::{Failure, Output, client};

/// Subcommands of `config`.
#[derive(clap::Subcommand)]
pub enum Args {
    /// Print the dynamic configuration.
    Show,
    /// Change keys, KEY=VALUE (validated before it is stored; the change is shown).
    Set {
        /// KEY=VALUE pairs, e.g. ttl=2s durability=protection postgres_parameters.work_mem=64MB.
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// Refuse unless the configuration is still at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
}

/// Runs `config`.
pub async fn run(endpoint: &str, output: Output, args: Args) -> Result<(), Failure> {
    let mut c = client::connect(endpoint).await?;
    match args {
        Args::Show => {
            let r = c.get_config(GetConfigRequest {}).await.map_err(client::failure)?.into_inner();
            match output {
                Output::Json => {
                    let cfg: serde_json::Value =
                        serde_json::from_str(&r.config_json).map_err(|e| Failure::failed(e.to_string()))?;
                    println!("{}", serde_json::json!({ "version": r.version, "config": cfg }));
                }
                Output::Table => println!("# version {}\n{}", r.version, r.config_json),
            }
        }
        Args::Set { settings, expected_version } => {
            for s in &settings {
                if !s.contains('=') {
                    return Err(Failure::usage(format!("{s:?}: write KEY=VALUE, for example ttl=2s")));
                }
            }
            let req = SetConfigRequest { settings, expected_version: expected_version.unwrap_or(0) };
            let r = c.set_config(req).await.map_err(client::failure)?.into_inner();
            match output {
                Output::Json => {
                    println!("{}", serde_json::json!({ "version": r.version, "changes": r.changes }))
                }
                Output::Table => {
                    if r.changes.is_empty() {
                        println!("no change (version {})", r.version);
                    }
                    for ch in &r.changes {
                        println!("{ch}");
                    }
                    if !r.changes.is_empty() {
                        println!("stored as version {}", r.version);
                    }
                }
            }
        }
    }
    Ok(())
}
