//! One request's view of this member, taken from memory: the applied cluster state, this
//! member's last report and the primary's (as the HA loop and the peer poller left them). Turned
//! here into the health checks' `Situation`; the JSON documents and the metrics read it too.
//!
//! Must not query Postgres or the network: a health check costs a few lock acquisitions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pgquorum_core::MemberName;
use pgquorum_core::ha::observation::{Postgres, Report, Running, Seen};
use pgquorum_core::state::ClusterState;

use super::health::{Pg, Situation};
use crate::cluster::Cluster;
use crate::ha::Shared;
use crate::raft::Applied;

/// This member and the cluster as one request sees them.
pub struct View {
    /// This member.
    pub me: MemberName,
    /// The cluster's name (Patroni's scope).
    pub scope: String,
    /// The applied replicated state.
    pub applied: Arc<Applied>,
    /// This member's last report and when it was published.
    pub own: Option<Seen>,
    /// The granted primary's last report (this member's own when it is the primary).
    pub primary: Option<Seen>,
    /// The HA loop's monotonic now.
    pub now: Duration,
    /// Since the HA loop last finished a tick.
    pub since_tick: Option<Duration>,
    /// Every other member, and whether its last report is missing or stale (unreachable).
    pub peers_unreachable: Vec<(MemberName, bool)>,
    /// Long-poll requests this member has sent to its peers.
    pub peer_polls: u64,
    /// Lease renewals this member carried on Raft replies, and renewal calls it made.
    pub renewals: (u64, u64),
}

impl View {
    /// Reads everything a request needs from memory.
    pub fn gather(cluster: &Cluster, shared: &Shared) -> View {
        let applied = cluster.applied();
        let me = cluster.node.ident.member.clone();
        let primary_name = applied.state.primary.as_ref().map(|p| p.member.clone());
        let mut seen = shared.reports.for_members(std::iter::once(me.clone()).chain(primary_name.clone()));
        let own = seen.get(&me).cloned().flatten();
        let primary = primary_name.and_then(|p| seen.remove(&p).flatten());
        let now = shared.now();
        let others = cluster.membership().nodes.into_values().map(|n| n.name).filter(|n| *n != me);
        let peers_unreachable = shared
            .reports
            .for_members(others)
            .into_iter()
            .map(|(name, seen)| {
                let unreachable = seen.as_ref().is_none_or(|s| crate::api::status::is_stale(s, now));
                (name, unreachable)
            })
            .collect();
        View {
            me,
            scope: cluster.node.ident.cluster_name.to_string(),
            applied,
            own,
            primary,
            now,
            since_tick: shared.since_last_tick(),
            peers_unreachable,
            peer_polls: shared.reports.polls(),
            renewals: (
                cluster.node.mail.carried(),
                shared.renewal_calls.load(std::sync::atomic::Ordering::Relaxed),
            ),
        }
    }

    /// The applied cluster state.
    pub fn state(&self) -> &ClusterState {
        &self.applied.state
    }

    /// This member's last report.
    pub fn report(&self) -> Option<&Report> {
        self.own.as_ref().map(|s| &s.report)
    }

    /// This member's running Postgres, as last reported.
    pub fn running(&self) -> Option<&Running> {
        self.report().and_then(|r| r.postgres.running())
    }

    /// How old this member's last report is.
    pub fn report_age(&self) -> Duration {
        self.own.as_ref().map_or(self.now, |s| self.now.saturating_sub(s.received))
    }

    /// Lease time left for the current, unexpired grant of the primary role to this member.
    pub fn lease_left(&self) -> Option<Duration> {
        let grant = self.state().primary.as_ref().filter(|p| p.member == self.me && !p.expired)?;
        let (epoch, left) = self.report()?.lease?;
        (epoch == grant.epoch).then(|| left.saturating_sub(self.report_age()))
    }

    /// Whether this member is in the cluster's synchronous target set.
    pub fn in_sync_set(&self) -> bool {
        let target = &self.state().sync.target;
        !target.is_async() && target.members.contains(&self.me)
    }

    /// The member's tags as text, the way health-check queries compare them.
    pub fn tags(&self) -> BTreeMap<String, String> {
        let Some(r) = self.report() else { return BTreeMap::new() };
        let mut tags = r.tags.custom.clone();
        tags.insert("nofailover".into(), r.tags.nofailover.to_string());
        tags.insert("nosync".into(), r.tags.nosync.to_string());
        tags.insert("failover_priority".into(), r.tags.failover_priority.to_string());
        tags.entry("noloadbalance".into()).or_insert_with(|| "false".into());
        tags
    }

    /// What the local Postgres is doing, for the health checks.
    pub fn pg(&self) -> Pg {
        let Some(r) = self.report() else { return Pg::NotRunning };
        if r.task.is_some() {
            return Pg::NotRunning;
        }
        match &r.postgres {
            Postgres::Disabled => Pg::Disabled,
            Postgres::Running(run) if !run.in_recovery => Pg::Writable,
            Postgres::Running(run) => Pg::Recovery { streaming: run.streaming },
            _ => Pg::NotRunning,
        }
    }

    /// The health checks' input.
    pub fn situation(&self) -> Situation {
        let state = self.state();
        let running = self.running().filter(|r| r.in_recovery);
        Situation {
            pg: self.pg(),
            report_age: self.report_age(),
            lease_left: self.lease_left(),
            granted: state.primary.as_ref().is_some_and(|p| p.member == self.me),
            in_sync_set: self.in_sync_set(),
            receive_lsn: running.and_then(|r| r.receive_lsn),
            replay_lsn: running.and_then(|r| r.replay_lsn),
            primary_lsn: self.primary.as_ref().and_then(|s| s.report.postgres.running()).and_then(|r| r.lsn),
            tags: self.tags(),
            maximum_lag_on_failover: state.config.maximum_lag_on_failover,
            ttl: state.config.ttl,
            paused: state.paused,
            since_tick: self.since_tick,
        }
    }
}

/// The URL of an agent's HTTP endpoint from its advertised host:port ("" when unknown).
pub fn api_url(http: &str) -> String {
    if http.is_empty() { String::new() } else { format!("http://{http}") }
}
