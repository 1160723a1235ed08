//! `pgquorumctl status`: the cluster's Raft leader and term and its members.
//!
//! The JSON document (`--output json`) is a stable interface; see docs/ctl.md.

use pgquorum_proto::management::{StatusReply, StatusRequest};
use serde::Serialize;

use crate::{Failure, Output, client, table};

/// Arguments of `status`.
#[derive(clap::Args)]
pub struct Args {
    /// Show the answering agent's own view instead of asking the leader.
    #[arg(long)]
    pub local: bool,
}

/// The JSON form of `status`.
#[derive(Serialize)]
pub struct StatusDoc {
    pub cluster: String,
    pub cluster_id: String,
    pub raft: RaftDoc,
    pub members: Vec<MemberDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

#[derive(Serialize)]
pub struct RaftDoc {
    pub leader: Option<String>,
    pub leader_id: Option<String>,
    pub term: u64,
    pub commit_index: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub answered_by: String,
}

#[derive(Serialize)]
pub struct MemberDoc {
    pub name: String,
    pub node_id: String,
    pub address: String,
    pub raft_role: String,
    pub voter: bool,
    pub last_contact_ms: Option<u64>,
    pub matched_index: Option<u64>,
}

/// Converts the API answer into the stable document.
pub fn doc(r: StatusReply) -> StatusDoc {
    let raft = r.raft.unwrap_or_default();
    StatusDoc {
        cluster: r.cluster_name,
        cluster_id: r.cluster_id,
        raft: RaftDoc {
            leader: (!raft.leader_name.is_empty()).then_some(raft.leader_name),
            leader_id: (raft.leader_id != 0).then(|| format!("{:016x}", raft.leader_id)),
            term: raft.term,
            commit_index: raft.commit_index,
            last_log_index: raft.last_log_index,
            applied_index: raft.applied_index,
            answered_by: raft.answered_by,
        },
        members: r
            .members
            .into_iter()
            .map(|m| MemberDoc {
                name: m.name,
                node_id: format!("{:016x}", m.node_id),
                address: m.address,
                raft_role: m.raft_role,
                voter: m.voter,
                last_contact_ms: m.last_contact_ms,
                matched_index: m.matched_index,
            })
            .collect(),
        warning: (!r.warning.is_empty()).then_some(r.warning),
    }
}

/// Runs `status`.
pub async fn run(endpoint: &str, output: Output, args: Args) -> Result<(), Failure> {
    let mut c = client::connect(endpoint).await?;
    let reply =
        c.status(StatusRequest { local_only: args.local }).await.map_err(client::failure)?.into_inner();
    let d = doc(reply);
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&d).expect("serialisable")),
        Output::Table => print!("{}", render(&d)),
    }
    Ok(())
}

fn render(d: &StatusDoc) -> String {
    let mut out = String::new();
    let id = if d.cluster_id.is_empty() { "not initialised".to_string() } else { d.cluster_id.clone() };
    out.push_str(&format!("Cluster:      {} ({id})\n", d.cluster));
    out.push_str(&format!(
        "Raft leader:  {}   term {}   commit index {}\n\n",
        d.raft.leader.as_deref().unwrap_or("none"),
        d.raft.term,
        d.raft.commit_index
    ));
    let rows: Vec<Vec<String>> = d
        .members
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.address.clone(),
                m.raft_role.clone(),
                if m.voter { "yes" } else { "no" }.into(),
                m.last_contact_ms.map_or("-".into(), |ms| format!("{ms} ms")),
                m.matched_index.map_or("-".into(), |i| i.to_string()),
                m.node_id.clone(),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &["Member", "Address", "Raft role", "Voter", "Last contact", "Log index", "Node id"],
        &rows,
    ));
    if let Some(w) = &d.warning {
        out.push_str(&format!("\nwarning: {w}\n"));
    }
    out
}
