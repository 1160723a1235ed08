//! `/metrics`: this member's state in the Prometheus (OpenMetrics) text format, built from
//! memory on every scrape with `prometheus-client`. Every name starts with `pgquorum_` and says
//! its unit; every sample carries `cluster` and `member` labels.
//!
//! `Sample` is what is measured (gathered from a `View` and Raft's metrics); `encode` is pure.

use std::borrow::Cow;

use openraft::ServerState;
use pgquorum_core::state::GrantReason;
use prometheus_client::encoding::text::encode as encode_text;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

use super::health::Pg;
use super::view::View;
use crate::api::status::role_and_state;

/// The content type of `encode`'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one scrape reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Cluster name.
    pub cluster: String,
    /// Member name.
    pub member: String,
    /// `role_and_state`'s role: primary, replica, witness, stopped, ...
    pub role: String,
    /// Writable and holding the lease of the current grant.
    pub primary: bool,
    /// Seconds left on the lease of the current grant (0 without one).
    pub lease_remaining_seconds: f64,
    /// Highest epoch granted.
    pub epoch: u64,
    /// Postgres timeline (0 when unknown).
    pub timeline: u64,
    /// Primary: current WAL position in bytes.
    pub wal_position_bytes: Option<u64>,
    /// Standby: last received position.
    pub receive_position_bytes: Option<u64>,
    /// Standby: last replayed position.
    pub replay_position_bytes: Option<u64>,
    /// Standby: bytes replayed behind the primary's last reported position (0 on the primary).
    pub lag_bytes: Option<u64>,
    /// Failovers ever granted (automatic and manual).
    pub failovers: u64,
    /// Switchovers ever granted.
    pub switchovers: u64,
    /// Current Raft term.
    pub raft_term: u64,
    /// This agent leads Raft.
    pub raft_leader: bool,
    /// Raft commit index.
    pub raft_commit_index: u64,
    /// Postgres is running.
    pub postgres_running: bool,
    /// Standby: the WAL receiver streams.
    pub postgres_streaming: bool,
    /// In the synchronous target set.
    pub sync_standby: bool,
    /// Maintenance mode.
    pub paused: bool,
    /// Parameters wait for a restart.
    pub pending_restart: bool,
    /// What keeps Postgres from working ("start", "replication"), and failed starts in a row.
    pub problem: Option<(&'static str, u32)>,
    /// Postgres's archiver (`pg_stat_archiver`): WAL files archived and failed attempts; None
    /// when archiving is off.
    pub archiver: Option<(u64, u64)>,
    /// Every other member and whether it is unreachable (its last report missing or stale).
    pub peers_unreachable: Vec<(String, bool)>,
    /// Long-poll requests for peers' reports this agent has sent.
    pub peer_polls: u64,
    /// Lease renewals carried on replies to the Raft leader's AppendEntries.
    pub lease_renewals_carried: u64,
    /// Lease renewal attempts sent as calls of their own.
    pub lease_renewal_calls: u64,
    /// Pod labelling, when this agent labels a Kubernetes pod.
    pub kube: Option<crate::kube::status::KubeStatus>,
    /// The agent's WAL archive, when `archive.enabled`.
    pub archive: Option<crate::archive::ArchiveStatus>,
    /// Scheduled backups: the latest due time claimed and whether it succeeded (`None` while it
    /// runs), and the next due time (Unix seconds); absent without a schedule or a claim.
    pub backup: Option<BackupSample>,
}

/// Scheduled backups in a sample: the latest due time claimed (Unix seconds) and whether it
/// succeeded (`None` while it runs), and the next due time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupSample {
    /// Latest claimed due time and its outcome.
    pub last: Option<(u64, Option<bool>)>,
    /// Next due time.
    pub next: Option<u64>,
}

impl Sample {
    /// Gathers a sample from a request's view and Raft's metrics.
    pub fn gather(view: &View, raft: &openraft::RaftMetrics<crate::raft::TypeConfig>) -> Sample {
        let state = view.state();
        let situation = view.situation();
        let running = view.running();
        let standby = running.filter(|r| r.in_recovery);
        let count = |want: &[GrantReason]| want.iter().filter_map(|r| state.grants.get(r)).sum::<u64>();
        let primary = super::health::check(
            super::health::Endpoint::Primary,
            &super::health::Query::default(),
            &situation,
        )
        .0
        .is_ok();
        let primary_lsn = view.primary.as_ref().and_then(|s| s.report.postgres.running()).and_then(|r| r.lsn);
        let lag_bytes = match (running, standby) {
            (Some(r), None) if !r.in_recovery => Some(0),
            (_, Some(s)) => match (primary_lsn.max(s.receive_lsn), s.replay_lsn) {
                (Some(p), Some(at)) => Some(p.saturating_sub(at)),
                _ => None,
            },
            _ => None,
        };
        Sample {
            cluster: view.scope.clone(),
            member: view.me.to_string(),
            role: view.report().map_or_else(|| "unknown".to_string(), |r| role_and_state(r, state).0),
            primary,
            lease_remaining_seconds: view.lease_left().map_or(0.0, |d| d.as_secs_f64()),
            epoch: state.epoch.0,
            timeline: running.and_then(|r| r.timeline).map_or(0, |t| u64::from(t.0)),
            wal_position_bytes: running.filter(|r| !r.in_recovery).and_then(|r| r.lsn).map(|l| l.0),
            receive_position_bytes: standby.and_then(|r| r.receive_lsn).map(|l| l.0),
            replay_position_bytes: standby.and_then(|r| r.replay_lsn).map(|l| l.0),
            lag_bytes,
            failovers: count(&[GrantReason::Failover, GrantReason::ManualFailover]),
            switchovers: count(&[GrantReason::Switchover]),
            raft_term: raft.current_term,
            raft_leader: raft.state == ServerState::Leader,
            raft_commit_index: raft.local_committed.or(raft.cluster_committed).map_or(0, |l| l.index),
            postgres_running: matches!(view.pg(), Pg::Writable | Pg::Recovery { .. }),
            postgres_streaming: view.pg() == (Pg::Recovery { streaming: true }),
            sync_standby: view.in_sync_set() && standby.is_some(),
            paused: state.paused,
            pending_restart: running.is_some_and(|r| !r.pending_restart.is_empty()),
            problem: view.report().and_then(|r| r.problem.as_ref()).map(|p| (p.kind.as_str(), p.failures)),
            archiver: running.and_then(|r| r.archiver.as_ref()).map(|a| (a.archived_count, a.failed_count)),
            peers_unreachable: view.peers_unreachable.iter().map(|(n, u)| (n.to_string(), *u)).collect(),
            peer_polls: view.peer_polls,
            lease_renewals_carried: view.renewals.0,
            lease_renewal_calls: view.renewals.1,
            kube: Some(crate::kube::status::get()).filter(|k| k.active),
            archive: None,
            backup: backup_sample(state),
        }
    }
}

fn backup_sample(state: &pgquorum_core::state::ClusterState) -> Option<BackupSample> {
    let schedule = &state.config.backup.schedule;
    if schedule.is_empty() && state.scheduled_backup.is_none() {
        return None;
    }
    let last =
        state.scheduled_backup.as_ref().map(|b| (b.due.0 / 1000, b.outcome.as_ref().map(Result::is_ok)));
    let next = pgquorum_core::cron::Schedule::parse(schedule)
        .ok()
        .and_then(|s| s.next_after(crate::ha::observe::wall().0))
        .map(|ms| ms / 1000);
    Some(BackupSample { last, next })
}

fn flag(b: bool) -> ConstGauge<i64> {
    ConstGauge::new(i64::from(b))
}

fn bytes(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

/// The scrape's text (OpenMetrics, accepted by Prometheus).
pub fn encode(s: &Sample) -> String {
    let labels = [("cluster", s.cluster.clone()), ("member", s.member.clone())]
        .into_iter()
        .map(|(k, v)| (Cow::Borrowed(k), Cow::Owned(v)));
    let mut r = Registry::with_prefix_and_labels("pgquorum", labels);
    r.register("primary", "1 if this member runs the writable primary and holds its lease", flag(s.primary));
    let role: Family<Vec<(String, String)>, Gauge> = Family::default();
    role.get_or_create(&vec![("role".to_string(), s.role.clone())]).set(1);
    r.register(
        "role",
        "This member's role as a label (primary, replica, witness, stopped, ...); value 1",
        role,
    );
    r.register_with_unit(
        "lease_remaining",
        "Time left on this member's primary lease (0 without one)",
        Unit::Seconds,
        ConstGauge::new(s.lease_remaining_seconds),
    );
    r.register("epoch", "Highest primary epoch granted", bytes(s.epoch));
    r.register("timeline", "Postgres timeline (0 when unknown)", bytes(s.timeline));
    let positions = [
        ("wal_position", "Primary: current WAL position", s.wal_position_bytes),
        ("receive_position", "Standby: last WAL position received", s.receive_position_bytes),
        ("replay_position", "Standby: last WAL position replayed", s.replay_position_bytes),
        (
            "lag",
            "Standby: WAL bytes replayed behind the primary's last reported position; 0 on the primary",
            s.lag_bytes,
        ),
    ];
    for (name, help, v) in positions {
        if let Some(v) = v {
            r.register_with_unit(name, help, Unit::Bytes, bytes(v));
        }
    }
    r.register("failovers", "Failovers in the cluster's recorded history", ConstCounter::new(s.failovers));
    r.register(
        "switchovers",
        "Switchovers in the cluster's recorded history",
        ConstCounter::new(s.switchovers),
    );
    r.register("raft_term", "Current Raft term", bytes(s.raft_term));
    r.register("raft_leader", "1 if this agent is the Raft leader (the coordinator)", flag(s.raft_leader));
    r.register("raft_commit_index", "Raft commit index", bytes(s.raft_commit_index));
    r.register("postgres_running", "1 if Postgres is running", flag(s.postgres_running));
    r.register("postgres_streaming", "1 if this standby's WAL receiver streams", flag(s.postgres_streaming));
    r.register("sync_standby", "1 if this standby is in the synchronous set", flag(s.sync_standby));
    r.register("paused", "1 in maintenance mode", flag(s.paused));
    r.register("pending_restart", "1 if Postgres parameters wait for a restart", flag(s.pending_restart));
    let problem: Family<Vec<(String, String)>, Gauge> = Family::default();
    for kind in ["start", "replication"] {
        let on = s.problem.is_some_and(|(k, _)| k == kind);
        problem.get_or_create(&vec![("kind".to_string(), kind.to_string())]).set(i64::from(on));
    }
    r.register(
        "postgres_problem",
        "1 if Postgres cannot start (kind=start) or its WAL receiver cannot stream (kind=replication); \
         the reason is in status",
        problem,
    );
    r.register(
        "postgres_failed_starts",
        "Consecutive failed starts of Postgres (0 when it runs); restarts back off with it",
        bytes(s.problem.map_or(0, |(_, n)| u64::from(n))),
    );
    if let Some((archived, failed)) = s.archiver {
        r.register(
            "postgres_archived_wal",
            "WAL files Postgres's archiver archived (pg_stat_archiver; only when archiving is on)",
            ConstCounter::new(archived),
        );
        r.register(
            "postgres_archive_failed",
            "Failed attempts of Postgres's archiver (pg_stat_archiver; only when archiving is on)",
            ConstCounter::new(failed),
        );
    }
    if let Some(BackupSample { last, next }) = s.backup {
        if let Some((due, ok)) = last {
            r.register_with_unit(
                "backup_last_scheduled",
                "Due time of the latest scheduled base backup, Unix time",
                Unit::Seconds,
                ConstGauge::new(i64::try_from(due).unwrap_or(i64::MAX)),
            );
            r.register(
                "backup_last_scheduled_succeeded",
                "1 if the latest scheduled base backup was stored, 0 if it failed or still runs",
                flag(ok == Some(true)),
            );
        }
        if let Some(next) = next {
            r.register_with_unit(
                "backup_next_scheduled",
                "Next due time of backup.schedule, Unix time",
                Unit::Seconds,
                ConstGauge::new(i64::try_from(next).unwrap_or(i64::MAX)),
            );
        }
    }
    if !s.peers_unreachable.is_empty() {
        let peers: Family<Vec<(String, String)>, Gauge> = Family::default();
        for (peer, unreachable) in &s.peers_unreachable {
            peers.get_or_create(&vec![("peer".to_string(), peer.clone())]).set(i64::from(*unreachable));
        }
        r.register(
            "peer_unreachable",
            "1 if this agent holds no recent report from the peer (killed, exited, cut off); one series per member",
            peers,
        );
    }
    r.register(
        "peer_report_polls",
        "Long-poll requests for peers' reports this agent sent (of two members, the one with the lower node id polls; the other only answers while those requests arrive)",
        ConstCounter::new(s.peer_polls),
    );
    r.register(
        "lease_renewals_carried",
        "Lease renewals this member sent on its replies to the Raft leader's AppendEntries (no call of their own; the leader confirms one in a later AppendEntries, else the renewal goes on by call)",
        ConstCounter::new(s.lease_renewals_carried),
    );
    r.register(
        "lease_renewal_calls",
        "Lease renewal attempts this member sent as calls of their own (a new primary's, after a failed renewal, a renewal no AppendEntries reply carried in time, clusters where the Raft leader and this member are no quorum)",
        ConstCounter::new(s.lease_renewal_calls),
    );
    if let Some(k) = &s.kube {
        r.register(
            "kube_labels_in_sync",
            "1 if this member's pod labels match its role; 0 while the API server cannot be reached or refuses",
            flag(k.in_sync),
        );
        r.register_with_unit(
            "kube_labels_delayed",
            "How long the pod labels have been out of line with the member's role (0 when in sync)",
            Unit::Seconds,
            ConstGauge::new(k.delayed.as_secs_f64()),
        );
        r.register("kube_label_patches", "Pod label patches applied", ConstCounter::new(k.patches));
        r.register(
            "kube_api_errors",
            "Failed calls to the Kubernetes API server",
            ConstCounter::new(k.errors),
        );
    }
    if let Some(a) = &s.archive {
        crate::archive::metrics::register(&mut r, a);
    }
    let mut out = String::with_capacity(4096);
    encode_text(&mut out, &r).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_primary_scrape_names_units_and_labels_every_sample() {
        let s = Sample {
            cluster: "c".into(),
            member: "m1".into(),
            role: "primary".into(),
            primary: true,
            lease_remaining_seconds: 1.25,
            epoch: 3,
            timeline: 2,
            wal_position_bytes: Some(4096),
            lag_bytes: Some(0),
            failovers: 1,
            switchovers: 1,
            raft_term: 7,
            raft_commit_index: 42,
            postgres_running: true,
            peers_unreachable: vec![("m2".into(), false), ("m3".into(), true)],
            peer_polls: 5,
            lease_renewals_carried: 9,
            lease_renewal_calls: 2,
            ..Default::default()
        };
        let text = encode(&s);
        let l = "{cluster=\"c\",member=\"m1\"}";
        for line in [
            format!("pgquorum_primary{l} 1"),
            "pgquorum_role{cluster=\"c\",member=\"m1\",role=\"primary\"} 1".to_string(),
            format!("pgquorum_lease_remaining_seconds{l} 1.25"),
            "# UNIT pgquorum_lease_remaining_seconds seconds".to_string(),
            format!("pgquorum_epoch{l} 3"),
            format!("pgquorum_timeline{l} 2"),
            format!("pgquorum_wal_position_bytes{l} 4096"),
            format!("pgquorum_lag_bytes{l} 0"),
            format!("pgquorum_failovers_total{l} 1"),
            format!("pgquorum_switchovers_total{l} 1"),
            format!("pgquorum_raft_term{l} 7"),
            format!("pgquorum_raft_leader{l} 0"),
            format!("pgquorum_raft_commit_index{l} 42"),
            format!("pgquorum_postgres_running{l} 1"),
            "pgquorum_peer_unreachable{cluster=\"c\",member=\"m1\",peer=\"m2\"} 0".to_string(),
            "pgquorum_peer_unreachable{cluster=\"c\",member=\"m1\",peer=\"m3\"} 1".to_string(),
            format!("pgquorum_peer_report_polls_total{l} 5"),
            format!("pgquorum_lease_renewals_carried_total{l} 9"),
            format!("pgquorum_lease_renewal_calls_total{l} 2"),
        ] {
            assert!(text.lines().any(|x| x == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("receive_position"), "standby-only series are absent on a primary");
        assert_eq!(text.lines().last(), Some("# EOF"));
        assert!(!text.contains("archive"), "archive series only when archiving is on:\n{text}");
    }

    #[test]
    fn kube_series_say_when_labels_are_delayed() {
        let kube = crate::kube::status::KubeStatus {
            active: true,
            in_sync: false,
            delayed: std::time::Duration::from_millis(1500),
            errors: 3,
            ..Default::default()
        };
        let s = Sample { cluster: "c".into(), member: "m1".into(), kube: Some(kube), ..Default::default() };
        let text = encode(&s);
        let l = "{cluster=\"c\",member=\"m1\"}";
        for line in [
            format!("pgquorum_kube_labels_in_sync{l} 0"),
            format!("pgquorum_kube_labels_delayed_seconds{l} 1.5"),
            format!("pgquorum_kube_api_errors_total{l} 3"),
        ] {
            assert!(text.lines().any(|x| x == line), "missing {line:?} in\n{text}");
        }
        assert!(!encode(&Sample::default()).contains("kube"), "no kube series without labelling");
    }

    #[test]
    fn archiver_counters_appear_when_archiving_is_on() {
        let s = Sample {
            cluster: "c".into(),
            member: "m1".into(),
            archiver: Some((12, 2)),
            ..Default::default()
        };
        let text = encode(&s);
        let l = "{cluster=\"c\",member=\"m1\"}";
        for line in [
            format!("pgquorum_postgres_archived_wal_total{l} 12"),
            format!("pgquorum_postgres_archive_failed_total{l} 2"),
        ] {
            assert!(text.lines().any(|x| x == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn a_postgres_problem_is_flagged_by_kind_with_the_failed_starts() {
        let s = Sample {
            cluster: "c".into(),
            member: "m2".into(),
            problem: Some(("start", 4)),
            ..Default::default()
        };
        let text = encode(&s);
        for line in [
            "pgquorum_postgres_problem{cluster=\"c\",member=\"m2\",kind=\"start\"} 1",
            "pgquorum_postgres_problem{cluster=\"c\",member=\"m2\",kind=\"replication\"} 0",
            "pgquorum_postgres_failed_starts{cluster=\"c\",member=\"m2\"} 4",
        ] {
            assert!(text.lines().any(|x| x == line), "missing {line:?} in\n{text}");
        }
    }
}
