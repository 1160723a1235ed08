//! `pgquorumctl member list | remove NAME`.

use pgquorum_proto::management::{RemoveMemberRequest, StatusRequest};

use crate::{Failure, Output, client, table};

/// Subcommands of `member`.
#[derive(clap::Subcommand)]
pub enum Args {
    /// List members with their Raft roles.
    List,
    /// Remove a member from the cluster; it no longer counts toward quorum.
    Remove {
        /// The member's name.
        name: String,
    },
}

/// Runs `member`.
pub async fn run(endpoint: &str, output: Output, args: Args) -> Result<(), Failure> {
    let mut c = client::connect(endpoint).await?;
    match args {
        Args::List => {
            let r =
                c.status(StatusRequest { local_only: false }).await.map_err(client::failure)?.into_inner();
            let d = super::status::doc(r);
            match output {
                Output::Json => {
                    println!("{}", serde_json::to_string_pretty(&d.members).expect("serialisable"))
                }
                Output::Table => {
                    let rows: Vec<Vec<String>> = d
                        .members
                        .iter()
                        .map(|m| {
                            vec![m.name.clone(), m.raft.address.clone(), m.raft.role.clone(), m.role.clone()]
                        })
                        .collect();
                    print!("{}", table::render(&["Member", "Address", "Raft role", "Role"], &rows));
                }
            }
        }
        Args::Remove { name } => {
            let r = c
                .remove_member(RemoveMemberRequest { name: name.clone() })
                .await
                .map_err(client::failure)?
                .into_inner();
            match output {
                Output::Json => println!("{}", serde_json::json!({ "removed": name, "voters": r.voters })),
                Output::Table => println!("removed {name}; voters now: {}", r.voters.join(", ")),
            }
        }
    }
    Ok(())
}
