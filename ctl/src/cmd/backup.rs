//! `pgquorumctl backup create | list | delete ID | restore-point NAME`: base backups in the WAL
//! archive's store, and named restore points to recover to.

use pgquorum_core::backup::Manifest;
use pgquorum_proto::management::{
    CreateBackupRequest, DeleteBackupRequest, ListBackupsRequest, RestorePointRequest,
};

use crate::progress::Progress;
use crate::{Failure, Output, client, table, time};

/// Subcommands of `backup`.
#[derive(clap::Subcommand)]
pub enum Args {
    /// Take a base backup now (from a streaming replica unless told otherwise) and wait for it.
    Create {
        /// The member to take it from.
        #[arg(long = "from", conflicts_with = "primary")]
        member: Option<String>,
        /// Take it from the primary.
        #[arg(long)]
        primary: bool,
    },
    /// List stored backups, oldest first.
    List,
    /// Delete a stored backup (the WAL it alone needed goes with the next retention run).
    Delete {
        /// Its id, from `backup list`.
        id: String,
    },
    /// Mark the current WAL position with a name to restore to (restore.target_name).
    RestorePoint {
        /// The name (1 to 63 characters).
        name: String,
    },
}

fn size(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

fn manifest(json: &str) -> Result<Manifest, Failure> {
    serde_json::from_str(json)
        .map_err(|e| Failure::failed(format!("the agent sent an unreadable manifest: {e}")))
}

/// Runs `backup`.
pub async fn run(endpoint: &str, output: Output, args: Args) -> Result<(), Failure> {
    let mut c = client::connect(endpoint).await?;
    match args {
        Args::Create { member, primary } => {
            let req = CreateBackupRequest { member: member.unwrap_or_default(), primary };
            let mut stream = c.create_backup(req).await.map_err(client::failure)?.into_inner();
            let progress = Progress::start("backup");
            let mut done = None;
            while let Some(msg) = stream.message().await.map_err(client::failure)? {
                if !msg.manifest_json.is_empty() {
                    done = Some(manifest(&msg.manifest_json)?);
                    break;
                }
                let pct = (msg.done * 100)
                    .checked_div(msg.total)
                    .map(|p| format!(" ({}%)", p.min(100)))
                    .unwrap_or_default();
                progress.phase(&format!(
                    "{}: {} of about {}{pct}",
                    msg.member,
                    size(msg.done),
                    size(msg.total)
                ));
            }
            progress.finish();
            let m = done
                .ok_or_else(|| Failure::failed("the agent ended the backup without a result; see its log"))?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&m).expect("serialisable")),
                Output::Table => println!(
                    "backup {} stored from {} ({} → {} stored), WAL {}..{} on timeline {}",
                    m.id,
                    m.member,
                    size(m.size),
                    size(m.stored_size),
                    m.start_lsn,
                    m.end_lsn,
                    m.timeline
                ),
            }
        }
        Args::List => {
            let r = c.list_backups(ListBackupsRequest {}).await.map_err(client::failure)?.into_inner();
            let all: Vec<Manifest> = r.manifest_json.iter().map(|j| manifest(j)).collect::<Result<_, _>>()?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&all).expect("serialisable")),
                Output::Table => {
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|m| {
                            vec![
                                m.id.clone(),
                                time::utc(m.start_ms),
                                time::utc(m.end_ms),
                                m.start_lsn.clone(),
                                m.end_lsn.clone(),
                                m.timeline.to_string(),
                                size(m.stored_size),
                                m.member.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table::render(
                            &["ID", "Started", "Ended", "Start LSN", "End LSN", "TL", "Size", "Member"],
                            &rows
                        )
                    );
                }
            }
        }
        Args::Delete { id } => {
            c.delete_backup(DeleteBackupRequest { id: id.clone() }).await.map_err(client::failure)?;
            eprintln!("deleted backup {id}");
        }
        Args::RestorePoint { name } => {
            let r = c
                .create_restore_point(RestorePointRequest { name: name.clone() })
                .await
                .map_err(client::failure)?
                .into_inner();
            match output {
                Output::Json => {
                    println!("{}", serde_json::json!({"name": name, "lsn": r.lsn, "member": r.member}))
                }
                Output::Table => println!("restore point {name} at {} on {}", r.lsn, r.member),
            }
        }
    }
    Ok(())
}
