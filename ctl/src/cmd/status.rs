//! `pgquorumctl status`: the cluster summary (primary, epoch, timeline, durability, Raft) and a
//! members table like `patronictl list`. `--output json` prints the stable document described
//! in docs/ctl.md; `--watch` refreshes.

use std::time::Duration;

use pgquorum_proto::management::{StatusReply, StatusRequest};
use serde::Serialize;

use crate::{Failure, Output, client, table, time};

/// Arguments of `status`.
#[derive(clap::Args)]
pub struct Args {
    /// Show the answering agent's own view instead of asking the leader.
    #[arg(long)]
    pub local: bool,
    /// Refresh every N seconds until interrupted.
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<f64>,
}

/// The JSON form of `status`.
#[derive(Serialize)]
pub struct StatusDoc {
    pub cluster: String,
    pub cluster_id: String,
    pub system_identifier: Option<String>,
    pub primary: Option<String>,
    pub primary_since: Option<String>,
    pub epoch: u64,
    pub timeline: Option<u32>,
    pub durability: String,
    pub synchronous: SyncDoc,
    pub paused: bool,
    pub switchover: Option<String>,
    pub failover: Option<String>,
    /// The Raft leader's latest decision about the cluster.
    pub coordinator: Option<String>,
    /// The primary's `pg_stat_archiver`; absent when archiving is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archiver: Option<ArchiverDoc>,
    /// Scheduled base backups; absent when none is scheduled and none was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupDoc>,
    pub raft: RaftDoc,
    pub members: Vec<MemberDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

#[derive(Serialize)]
pub struct SyncDoc {
    pub recorded: String,
    pub target: String,
}

#[derive(Serialize)]
pub struct ArchiverDoc {
    pub archived_count: u64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<String>,
    pub failed_count: u64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<String>,
    /// The agent's archive (`archive.enabled`); absent when the agent does not archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// WAL files waiting to be archived.
    pub pending_files: u64,
    /// Age of the oldest of them, seconds.
    pub lag_seconds: f64,
    /// The agent's last archive failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Serialize)]
pub struct BackupDoc {
    pub schedule: Option<String>,
    pub retention: Option<String>,
    /// The latest scheduled backup's due time, member and outcome (`running`, `ok ID`,
    /// `failed: why`).
    pub last_due: Option<String>,
    pub last_member: Option<String>,
    pub last_outcome: Option<String>,
    pub next_due: Option<String>,
    /// The newest backup stored (scheduled or not): id, member and end time.
    pub last_backup: Option<String>,
    pub last_backup_member: Option<String>,
    pub last_backup_at: Option<String>,
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
    pub role: String,
    pub state: String,
    pub timeline: Option<u32>,
    pub lsn: Option<String>,
    pub receive_lsn: Option<String>,
    pub replay_lsn: Option<String>,
    pub lag_bytes: Option<u64>,
    pub sync_state: Option<String>,
    pub api_url: Option<String>,
    pub postgres: Option<String>,
    pub tags: std::collections::BTreeMap<String, String>,
    pub pending_restart: Vec<String>,
    pub problem: Option<ProblemDoc>,
    pub report_age_ms: Option<u64>,
    pub raft: MemberRaftDoc,
}

/// Why a member's Postgres does not work, in Postgres's own words.
#[derive(Serialize)]
pub struct ProblemDoc {
    /// "start" or "replication".
    pub kind: String,
    /// The line(s) Postgres logged.
    pub message: String,
    /// Consecutive failed starts (start problems).
    pub failed_starts: u32,
}

#[derive(Serialize)]
pub struct MemberRaftDoc {
    pub node_id: String,
    pub address: String,
    pub role: String,
    pub voter: bool,
    pub last_contact_ms: Option<u64>,
    pub matched_index: Option<u64>,
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Converts the API answer into the stable document.
pub fn doc(r: StatusReply) -> StatusDoc {
    let raft = r.raft.unwrap_or_default();
    let ha = r.ha.unwrap_or_default();
    StatusDoc {
        cluster: r.cluster_name,
        cluster_id: r.cluster_id,
        system_identifier: (ha.system_identifier != 0).then(|| ha.system_identifier.to_string()),
        primary: opt(ha.primary),
        primary_since: (ha.primary_since_ms != 0).then(|| time::utc(ha.primary_since_ms)),
        epoch: ha.epoch,
        timeline: (ha.timeline != 0).then_some(ha.timeline),
        durability: ha.durability,
        synchronous: SyncDoc { recorded: ha.sync_recorded, target: ha.sync_target },
        paused: ha.paused,
        switchover: opt(ha.switchover),
        failover: opt(ha.failover),
        coordinator: opt(ha.coordinator),
        archiver: ha.archiver.map(|a| ArchiverDoc {
            archived_count: a.archived_count,
            last_archived_wal: opt(a.last_archived_wal),
            last_archived_time: opt(a.last_archived_time),
            failed_count: a.failed_count,
            last_failed_wal: opt(a.last_failed_wal),
            last_failed_time: opt(a.last_failed_time),
            store: opt(a.store),
            pending_files: a.pending_files,
            lag_seconds: a.lag_ms as f64 / 1000.0,
            last_error: opt(a.last_error),
        }),
        backup: ha.backup.map(|b| BackupDoc {
            schedule: opt(b.schedule),
            retention: opt(b.retention),
            last_due: (b.last_due_ms != 0).then(|| time::utc(b.last_due_ms)),
            last_member: opt(b.last_member),
            last_outcome: opt(b.last_outcome),
            next_due: (b.next_due_ms != 0).then(|| time::utc(b.next_due_ms)),
            last_backup: opt(b.last_backup_id),
            last_backup_member: opt(b.last_backup_member),
            last_backup_at: (b.last_backup_ms != 0).then(|| time::utc(b.last_backup_ms)),
        }),
        raft: RaftDoc {
            leader: opt(raft.leader_name),
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
                role: m.role,
                state: m.state,
                timeline: (m.timeline != 0).then_some(m.timeline),
                lsn: opt(m.lsn),
                receive_lsn: opt(m.receive_lsn),
                replay_lsn: opt(m.replay_lsn),
                lag_bytes: m.lag_bytes,
                sync_state: opt(m.sync_state),
                api_url: opt(m.api_url),
                postgres: opt(m.postgres),
                tags: m.tags.into_iter().collect(),
                pending_restart: m.pending_restart,
                problem: (!m.problem.is_empty()).then_some(ProblemDoc {
                    kind: m.problem_kind,
                    message: m.problem,
                    failed_starts: m.failed_starts,
                }),
                report_age_ms: m.report_age_ms,
                raft: MemberRaftDoc {
                    node_id: format!("{:016x}", m.node_id),
                    address: m.address,
                    role: m.raft_role,
                    voter: m.voter,
                    last_contact_ms: m.last_contact_ms,
                    matched_index: m.matched_index,
                },
            })
            .collect(),
        warning: opt(r.warning),
    }
}

/// Runs `status`.
pub async fn run(endpoint: &str, output: Output, args: Args) -> Result<(), Failure> {
    let mut c = client::connect(endpoint).await?;
    loop {
        let reply =
            c.status(StatusRequest { local_only: args.local }).await.map_err(client::failure)?.into_inner();
        let d = doc(reply);
        match output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&d).expect("serialisable")),
            Output::Table => {
                if args.watch.is_some() {
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", render(&d));
            }
        }
        let Some(every) = args.watch else { return Ok(()) };
        tokio::time::sleep(Duration::from_secs_f64(every.max(0.2))).await;
    }
}

/// `Archiving:` with Postgres's counters, the last archived file and the last failure.
fn archiver_line(a: &ArchiverDoc) -> String {
    let last = match (&a.last_archived_wal, &a.last_archived_time) {
        (Some(w), Some(t)) => format!(", last {w} at {t}"),
        _ => String::new(),
    };
    let failed = match (&a.last_failed_wal, &a.last_failed_time) {
        (Some(w), Some(t)) if a.failed_count > 0 => format!(", last failure {w} at {t}"),
        _ => String::new(),
    };
    let mut out =
        format!("Archiving:     {} archived{last}; {} failed{failed}\n", a.archived_count, a.failed_count);
    if let Some(store) = &a.store {
        out.push_str(&format!(
            "Archive:       {store}: {} files waiting, lag {:.1}s{}\n",
            a.pending_files,
            a.lag_seconds,
            a.last_error.as_ref().map(|e| format!("; last error {e}")).unwrap_or_default()
        ));
    }
    out
}

fn render(d: &StatusDoc) -> String {
    let mut out = String::new();
    let sysid = d.system_identifier.as_deref().unwrap_or("not initialised");
    out.push_str(&format!("Cluster:       {} (system identifier {sysid})\n", d.cluster));
    match &d.primary {
        Some(p) => out.push_str(&format!(
            "Primary:       {p} since {} (epoch {}, timeline {})\n",
            d.primary_since.as_deref().unwrap_or("?"),
            d.epoch,
            d.timeline.map_or("?".into(), |t| t.to_string())
        )),
        None => out.push_str(&format!("Primary:       none (epoch {})\n", d.epoch)),
    }
    out.push_str(&format!("Durability:    {}, synchronous {}", d.durability, d.synchronous.target));
    if d.synchronous.recorded != d.synchronous.target {
        out.push_str(&format!(" (recorded bound {})", d.synchronous.recorded));
    }
    out.push('\n');
    out.push_str(&format!(
        "Maintenance:   {}\n",
        if d.paused { "on (paused: no automatic failover)" } else { "off" }
    ));
    if let Some(s) = &d.switchover {
        out.push_str(&format!("Switchover:    pending, {s}\n"));
    }
    if let Some(f) = &d.failover {
        out.push_str(&format!("Failover:      requested, {f}\n"));
    }
    if let Some(c) = d.coordinator.as_ref().filter(|c| c.as_str() != "Steady") {
        out.push_str(&format!("Coordinator:   {c}\n"));
    }
    if let Some(a) = &d.archiver {
        out.push_str(&archiver_line(a));
    }
    if let Some(b) = &d.backup {
        let last = match (&b.last_due, &b.last_member, &b.last_outcome) {
            (Some(due), Some(m), Some(o)) => format!("; last due {due} on {m}: {o}"),
            _ => String::new(),
        };
        let newest = match (&b.last_backup, &b.last_backup_member, &b.last_backup_at) {
            (Some(id), Some(m), Some(at)) => format!("newest {id} from {m} at {at}; "),
            _ => String::new(),
        };
        out.push_str(&format!(
            "Backups:       {newest}schedule {}, retention {}{last}; next {}\n",
            b.schedule.as_deref().map_or("none".to_string(), |s| format!("{s:?} UTC")),
            b.retention.as_deref().unwrap_or("forever"),
            b.next_due.as_deref().unwrap_or("none")
        ));
    }
    out.push_str(&format!(
        "Raft:          leader {}, term {}, commit index {}\n\n",
        d.raft.leader.as_deref().unwrap_or("none"),
        d.raft.term,
        d.raft.commit_index
    ));
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = d
        .members
        .iter()
        .map(|m| {
            let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                m.name.clone(),
                dash(&m.postgres),
                m.role.clone(),
                m.state.clone(),
                m.timeline.map_or("-".into(), |t| t.to_string()),
                dash(&m.receive_lsn.clone().or(m.lsn.clone())),
                dash(&m.replay_lsn),
                m.lag_bytes.map_or("-".into(), time::bytes),
                dash(&m.sync_state),
                m.raft.role.clone(),
                if tags.is_empty() { "-".into() } else { tags.join(",") },
            ]
        })
        .collect();
    out.push_str(&table::render(
        &[
            "Member",
            "Host",
            "Role",
            "State",
            "TL",
            "Receive LSN",
            "Replay LSN",
            "Lag",
            "Sync",
            "Raft",
            "Tags",
        ],
        &rows,
    ));
    let pending: Vec<String> = d
        .members
        .iter()
        .filter(|m| !m.pending_restart.is_empty())
        .map(|m| format!("{} ({})", m.name, m.pending_restart.join(", ")))
        .collect();
    if !pending.is_empty() {
        out.push_str(&format!(
            "\npending restart: {} — apply with `pgquorumctl restart --pending`\n",
            pending.join("; ")
        ));
    }
    for m in &d.members {
        if let Some(p) = &m.problem {
            out.push_str(&problem_line(&m.name, p));
        }
    }
    if let Some(w) = &d.warning {
        out.push_str(&format!("\nwarning: {w}\n"));
    }
    out
}

/// `m2: Postgres cannot start (5 failed starts in a row): FATAL: ...`.
fn problem_line(member: &str, p: &ProblemDoc) -> String {
    let what = match p.kind.as_str() {
        "start" if p.failed_starts > 1 => {
            format!("Postgres cannot start ({} failed starts in a row)", p.failed_starts)
        }
        "start" => "Postgres exited".to_string(),
        "replication" => "cannot stream from its upstream".to_string(),
        other => other.to_string(),
    };
    format!("\n{member}: {what}: {}\n", p.message)
}
