//! `pgquorumctl member list | remove NAME`.

use pgquorum_proto::management::{AddMemberRequest, RemoveMemberRequest, StatusRequest};

use crate::{Failure, Output, client, table};

/// Subcommands of `member`.
#[derive(clap::Subcommand)]
pub enum Args {
    /// List members with their Raft roles.
    List,
    /// Add a member whose agent runs at ADDRESS and waits to be added (its `join` is manual).
    Add {
        /// The member's name.
        name: String,
        /// Its gRPC address, host:port.
        address: String,
    },
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
        Args::Add { name, address } => {
            let r = c
                .add_member(AddMemberRequest { name: name.clone(), address })
                .await
                .map_err(client::failure)?
                .into_inner();
            match output {
                Output::Json => println!("{}", serde_json::json!({ "added": name, "voters": r.voters })),
                Output::Table => println!("added {name}; voters now: {}", r.voters.join(", ")),
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
