//! The JSON documents of the HTTP endpoint, shaped like Patroni's: `/patroni` (this member),
//! `/cluster` (every member), `/history` (primary changes) and `/config` (dynamic
//! configuration). Built from a `View` and the management status; no SQL.

use pgquorum_core::UnixMillis;
use pgquorum_core::state::{ClusterState, GrantReason};
use pgquorum_proto::management::StatusReply;
use serde_json::{Map, Value, json};

use super::view::View;
use crate::api::status::role_and_state;

/// Wall-clock milliseconds as RFC 3339 (`2026-11-21T14:25:03.123Z`).
pub fn rfc3339(at: UnixMillis) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.0);
    humantime::format_rfc3339_millis(t).to_string()
}

/// `/patroni` (also the body of every health check): this member's status.
pub fn patroni(view: &View) -> Value {
    let mut doc = Map::new();
    let state = view.state();
    match view.report() {
        Some(rep) => {
            let (role, st) = role_and_state(rep, state);
            let running = rep.postgres.running();
            let pg_state = if running.is_some() && rep.task.is_none() { "running".to_string() } else { st };
            doc.insert("state".into(), json!(pg_state));
            doc.insert("role".into(), json!(role));
            if let Some(r) = running {
                let n = |l: Option<pgquorum_core::Lsn>| l.map(|l| l.0);
                let xlog = if r.in_recovery {
                    json!({ "received_location": n(r.receive_lsn), "replayed_location": n(r.replay_lsn) })
                } else {
                    json!({ "location": n(r.lsn) })
                };
                doc.insert("xlog".into(), xlog);
                if let Some(t) = r.timeline {
                    doc.insert("timeline".into(), json!(t.0));
                }
                if r.in_recovery {
                    let rs = if r.streaming { "streaming" } else { "in archive recovery" };
                    doc.insert("replication_state".into(), json!(rs));
                    if let Some(up) = &r.upstream {
                        doc.insert("upstream".into(), json!(up.as_str()));
                    }
                } else {
                    let rows: Vec<Value> = r
                        .replicas
                        .iter()
                        .map(|c| {
                            json!({
                                "application_name": c.name,
                                "state": c.state,
                                "sync_state": c.sync_state,
                                "flush_lsn": c.flush_lsn.map(|l| l.to_string()),
                                "replay_lsn": c.replay_lsn.map(|l| l.to_string()),
                            })
                        })
                        .collect();
                    doc.insert("replication".into(), Value::Array(rows));
                }
                if !r.pending_restart.is_empty() {
                    doc.insert("pending_restart".into(), json!(true));
                    doc.insert("pending_restart_parameters".into(), json!(r.pending_restart));
                }
            }
            if view.in_sync_set() {
                doc.insert("sync_standby".into(), json!(true));
            }
            if let Some((_, left)) = rep.lease {
                let left = left.saturating_sub(view.report_age());
                doc.insert("lease_remaining_seconds".into(), json!(left.as_secs_f64()));
            }
            let sysid = match &rep.data {
                pgquorum_core::ha::observation::Data::Present(d) => Some(d.system_identifier),
                _ => state.system_identifier,
            };
            if let Some(s) = sysid {
                doc.insert("database_system_identifier".into(), json!(s.to_string()));
            }
        }
        None => {
            doc.insert("state".into(), json!("unknown"));
            doc.insert("role".into(), json!("unknown"));
        }
    }
    doc.insert("cluster_unlocked".into(), json!(state.primary.as_ref().is_none_or(|p| p.expired)));
    doc.insert("pause".into(), json!(state.paused));
    doc.insert("epoch".into(), json!(state.epoch.0));
    doc.insert("tags".into(), json!(view.tags()));
    doc.insert(
        "patroni".into(),
        json!({ "version": env!("CARGO_PKG_VERSION"), "scope": view.scope, "name": view.me.as_str() }),
    );
    Value::Object(doc)
}

/// `/cluster`: every member, Patroni's roles (`leader`, `sync_standby`, `replica`, or what the
/// member is doing instead), from the same rows `pgquorumctl status --local` shows.
pub fn cluster(status: &StatusReply, state: &ClusterState) -> Value {
    let sync = &state.sync.target;
    let members: Vec<Value> = status
        .members
        .iter()
        .map(|m| {
            let in_sync = !sync.is_async() && sync.members.iter().any(|s| s.as_str() == m.name);
            let role = match m.role.as_str() {
                "primary" => "leader",
                "replica" if in_sync => "sync_standby",
                other => other,
            };
            let mut row = Map::new();
            row.insert("name".into(), json!(m.name));
            row.insert("role".into(), json!(role));
            row.insert("state".into(), json!(m.state));
            row.insert("api_url".into(), json!(m.api_url));
            if let Some((host, port)) = m.postgres.rsplit_once(':') {
                row.insert("host".into(), json!(host));
                row.insert("port".into(), json!(port.parse::<u16>().ok()));
            }
            if m.timeline > 0 {
                row.insert("timeline".into(), json!(m.timeline));
            }
            if m.role != "primary" && !m.receive_lsn.is_empty() {
                row.insert("lag".into(), m.lag_bytes.map_or(json!("unknown"), |l| json!(l)));
                row.insert("receive_lsn".into(), json!(m.receive_lsn));
                row.insert("replay_lsn".into(), json!(m.replay_lsn));
            }
            if !m.lsn.is_empty() {
                row.insert("lsn".into(), json!(m.lsn));
            }
            if !m.tags.is_empty() {
                row.insert("tags".into(), json!(m.tags));
            }
            if !m.pending_restart.is_empty() {
                row.insert("pending_restart".into(), json!(true));
            }
            if !m.problem.is_empty() {
                row.insert(
                    "problem".into(),
                    json!({"kind": m.problem_kind, "message": m.problem, "failed_starts": m.failed_starts}),
                );
            }
            Value::Object(row)
        })
        .collect();
    let mut doc = Map::new();
    doc.insert("members".into(), Value::Array(members));
    doc.insert("pause".into(), json!(state.paused));
    doc.insert("scope".into(), json!(status.cluster_name));
    if let Some(s) = &state.switchover {
        doc.insert(
            "scheduled_switchover".into(),
            json!({
                "at": rfc3339(s.not_before.unwrap_or(s.requested_at)),
                "from": s.from.as_str(),
                "to": s.to.as_ref().map(|t| t.as_str()),
            }),
        );
    }
    Value::Object(doc)
}

/// `/history`: `[[timeline, lsn, reason, timestamp, new_leader], ...]`, one line per change of
/// primary (the bootstrap grant starts the history and is not a line, as in Patroni). The
/// timeline is the one the new primary left; the LSN its position when chosen.
pub fn history(state: &ClusterState) -> Value {
    let lines: Vec<Value> = state
        .history
        .iter()
        .filter(|h| h.reason != GrantReason::Bootstrap)
        .map(|h| {
            json!([
                h.timeline.map(|t| t.0),
                h.lsn.map(|l| l.0),
                h.reason.to_string(),
                rfc3339(h.at),
                h.member.as_str(),
            ])
        })
        .collect();
    Value::Array(lines)
}

/// `/config`: the dynamic configuration (None before the cluster is initialised).
pub fn config(state: &ClusterState) -> Option<Value> {
    state
        .cluster_id
        .as_ref()
        .map(|_| serde_json::to_value(&state.config).expect("the configuration always serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgquorum_core::state::HistoryEntry;
    use pgquorum_core::{Epoch, Lsn, MemberName, Timeline};

    #[test]
    fn history_lists_changes_of_primary_as_patroni_lines() {
        let m = |n: &str| MemberName::new(n).expect("valid");
        let entry = |reason, member: &str, tl: u32| HistoryEntry {
            epoch: Epoch(1),
            member: m(member),
            previous: None,
            reason,
            at: UnixMillis(1_700_000_000_123),
            lsn: Some(Lsn(0x300_0000)),
            timeline: Some(Timeline(tl)),
            floor: None,
        };
        let state = ClusterState {
            history: vec![entry(GrantReason::Bootstrap, "m1", 1), entry(GrantReason::Failover, "m2", 1)],
            ..Default::default()
        };
        assert_eq!(history(&state), json!([[1, 0x300_0000, "failover", "2023-11-14T22:13:20.123Z", "m2"]]));
    }

    #[test]
    fn config_is_unavailable_before_initialisation() {
        assert_eq!(config(&ClusterState::default()), None);
        let state = ClusterState { cluster_id: Some("x".into()), ..Default::default() };
        assert_eq!(config(&state).expect("initialised")["ttl"], "1500ms");
    }
}
