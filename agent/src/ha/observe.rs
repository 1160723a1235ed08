//! Gathering one observation: finished tasks and renewals, the postmaster's fate, one status
//! query (or the control file when Postgres is down), peers' reports and, on the leader, the
//! coordinator's memory. Also publishing this member's own report.

use std::time::Duration;

use pgquorum_core::ha::cadence;
use pgquorum_core::ha::observation::{Data, Lease, Observation, Report};
use pgquorum_core::{Lsn, Timeline, UnixMillis};

use super::Ha;
use crate::postgres::controldata;

/// Wall clock in milliseconds (display and history only).
pub fn wall() -> UnixMillis {
    UnixMillis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

impl Ha {
    /// Keeps a watch on the data directory's entries while this agent's Postgres runs
    /// (`postgres::watch`); one that could not be set up is tried again
    /// `cadence::WATCH_RETRY` later, and meanwhile the status is read every second.
    pub(super) fn keep_data_watch(&mut self, now: Duration) {
        let Some(pg) = self.pg.as_ref().filter(|_| self.local.postmaster.is_some()) else {
            self.data_watch = (None, None);
            return;
        };
        let retry = self.data_watch.1.is_none_or(|at| now >= at + cadence::WATCH_RETRY);
        if self.data_watch.0.is_some() || !retry {
            return;
        }
        match crate::postgres::watch::DataDirWatch::new(&pg.data) {
            Ok(w) => self.data_watch = (Some(w), None),
            Err(e) => {
                if self.data_watch.1.is_none() {
                    tracing::warn!(
                        "cannot watch {} ({e}); until it can, the status is read every second to notice a promotion from outside the agent",
                        pg.data.display()
                    );
                }
                self.data_watch.1 = Some(now);
            }
        }
    }

    /// The data directory's entries changed (or its watch ended): read the status now and for
    /// a while (`cadence::data_recently_changed`).
    pub(super) fn data_changed(&mut self, change: std::io::Result<crate::postgres::watch::Change>) {
        use crate::postgres::watch::Change;
        let now = self.shared.now();
        match change {
            Ok(Change::Entries(names)) => tracing::debug!("data directory entries changed: {names:?}"),
            Ok(Change::Gone) => self.data_watch.0 = None,
            Err(e) => {
                tracing::warn!(
                    "watching the data directory: {e}; the status is read every second until it is watched again"
                );
                self.data_watch = (None, Some(now));
            }
        }
        self.local.status_due = true;
        self.local.data_changed_at = Some(now);
    }

    /// Collects finished work and notices a dead postmaster.
    pub(super) async fn reap(&mut self, now: Duration) {
        if self.local.renewal.as_ref().is_some_and(|(_, h)| h.is_finished()) {
            let (sent, handle) = self.local.renewal.take().expect("checked");
            let granted = self
                .cluster
                .applied()
                .state
                .primary
                .clone()
                .filter(|p| p.member == self.cfg.name)
                .map(|p| p.epoch);
            match handle.await {
                Ok(Ok(c)) if Some(c.epoch) == granted && self.local.fenced_epoch != Some(c.epoch) => {
                    // Counted from the confirmed attempt's send time (never before the first).
                    let at = c.sent.max(sent);
                    self.local.lease = Some(Lease { epoch: c.epoch, renewed_at: at, deadline: at + c.ttl });
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    let left = self.local.lease.map(|l| l.deadline.saturating_sub(now));
                    match left {
                        Some(left) => tracing::warn!("lease renewal failed ({e}); {left:?} of lease left"),
                        None => tracing::debug!("lease request failed: {e}"),
                    }
                }
                Err(e) => tracing::warn!("lease renewal task: {e}"),
            }
        }
        if self.local.task.as_ref().is_some_and(|(_, h)| h.is_finished()) {
            let (task, handle) = self.local.task.take().expect("checked");
            self.local.status_due = true;
            let res = handle.await.unwrap_or_else(|e| Err(format!("task panicked: {e}")));
            match res {
                Ok(pm) => {
                    tracing::info!("{task:?} done");
                    if let Some(pm) = pm {
                        self.local.postmaster = Some(pm);
                    }
                    self.local.last_failure = None;
                }
                Err(e) => {
                    tracing::warn!("{task:?} failed: {e}");
                    self.local.last_failure = Some((task, e, now));
                }
            }
            self.local.data_stale = true;
        }
        if let Some(pm) = self.local.postmaster.as_mut()
            && let Some(status) = pm.exited()
        {
            let output = pm.output.read_new().unwrap_or_default();
            self.postgres_exited(status, &output, now);
            crate::fence::kill::kill_instance(&self.pg().data, None);
            self.local.postmaster = None;
            self.local.crashed_at = Some(now);
            self.local.status = None;
            self.local.data_stale = true;
            self.sql().reset();
            if let Some(g) = self.guard.as_mut() {
                let _ = g.disarm().await;
            }
            let primary =
                self.cluster.applied().state.primary.as_ref().is_some_and(|p| p.member == self.cfg.name);
            if primary && self.local.down_since.is_none() {
                self.local.down_since = Some(now);
            }
        }
    }

    /// Reads Postgres's status (or the control file when it is down): every tick while anything
    /// changes, every `ha.status_interval` while the member is settled (`cadence`; at most a
    /// second while the data directory is not watched).
    pub(super) async fn refresh_postgres(&mut self, now: Duration) {
        if self.pg.is_none() {
            return;
        }
        if self.local.postmaster.is_some() {
            let forced = self.local.status_due || self.local.status.is_none();
            if !cadence::status_due(now, self.local.status_at, forced, self.status_interval()) {
                return;
            }
            self.local.status_due = false;
            self.local.status_at = Some(now);
            match tokio::time::timeout(Duration::from_millis(500), self.sql().status()).await {
                Ok(Ok(mut s)) => {
                    // A standby's timeline: the highest of what its receiver last reported, its
                    // minimum recovery point's and its checkpoint's (they only grow, and the
                    // receiver's view disappears when it stops).
                    if s.in_recovery {
                        let seen = s
                            .min_recovery
                            .map(|(t, _)| t)
                            .into_iter()
                            .chain(s.timeline)
                            .chain(self.local.standby_tli)
                            .max();
                        if s.receiver.is_some() || seen > self.local.standby_tli {
                            self.local.standby_tli = seen;
                        }
                        s.timeline = self.local.standby_tli.max(s.timeline);
                    } else {
                        self.local.standby_tli = None;
                    }
                    if !s.in_recovery {
                        self.local.down_since = None;
                        if s.synchronous_standby_names == self.local.conf_sync
                            && let (Some(lsn), Some(target)) = (s.current_lsn, self.sync_target_from_conf())
                            && self.local.sync_applied_at.as_ref().is_none_or(|(set, _)| set != &target)
                        {
                            self.local.sync_applied_at = Some((target, lsn));
                        }
                    }
                    self.check_streaming(&s);
                    self.local.status = Some(s);
                }
                Ok(Err(e)) => {
                    if self.local.status.is_some() {
                        tracing::debug!("status query failed: {e}");
                    }
                    self.local.status = None;
                }
                Err(_) => self.local.status = None,
            }
        } else if self.local.data_stale && self.local.task.is_none() {
            let pg = self.pg().clone();
            self.local.data = controldata::read(&pg.bin, &pg.data).await;
            self.local.data_stale = false;
        }
    }

    /// The synchronous set the written configuration stands for (it came from the cluster's target).
    fn sync_target_from_conf(&self) -> Option<pgquorum_core::state::SyncSet> {
        let target = self.cluster.applied().state.sync.target.clone();
        (target.to_postgres() == self.local.conf_sync).then_some(target)
    }

    /// Builds the observation.
    pub(super) fn observe(&mut self, now: Duration) -> Observation {
        let applied = self.cluster.applied();
        let state = applied.state.clone();
        let membership = self.cluster.membership();
        let names: Vec<_> = membership.nodes.values().map(|n| n.name.clone()).collect();
        let peers = self.shared.reports.for_members(names);
        let (term, last, replication) =
            self.cluster.with_metrics(|m| (m.current_term, m.last_log_index, m.replication.clone()));
        let leader = self.cluster.is_leader();
        self.shared.coord.refresh(term, leader, state.epoch, now);
        // The term this tick's coordinator decisions are taken in (`Cluster::propose_as_leader`).
        self.local.coord_term = if leader { term } else { 0 };
        if let Some(p) = &state.primary
            && let Some(Some(seen)) = peers.get(&p.member)
            && seen.report.postgres.is_writable()
            && let Some(lsn) = seen.report.postgres.running().and_then(|r| r.lsn)
        {
            self.shared.coord.note_primary_lsn(lsn);
        }
        let coordinator = self.shared.coord.view(term).filter(|_| leader).map(|c| {
            let voters = membership
                .voters
                .iter()
                .filter_map(|id| membership.nodes.get(id))
                .map(|n| n.name.clone())
                .collect();
            let caught_up = replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .filter(|(_, m)| m.as_ref().map(|l| l.index) == last)
                        .filter_map(|(id, _)| membership.nodes.get(id).map(|n| n.name.clone()))
                        .collect()
                })
                .unwrap_or_default();
            c.to_view(voters, caught_up)
        });
        Observation {
            now,
            wall: wall(),
            me: self.cfg.name.clone(),
            cluster: state,
            local: self.local.view(
                self.shared.stop_streaming_for(),
                &self.cfg.tags,
                self.shared.restart_requested.load(std::sync::atomic::Ordering::SeqCst),
            ),
            peers,
            coordinator,
        }
    }

    /// Publishes this member's report (served to peers, and stored with theirs).
    pub(super) fn publish(&mut self, obs: &Observation, now: Duration) {
        let mut postgres = self.local.postgres_view();
        if let (Some(a), pgquorum_core::ha::observation::Postgres::Running(r)) =
            (self.shared.archive.get(), &mut postgres)
            && let Some(arch) = r.archiver.as_deref_mut()
        {
            crate::archive::status::summarize(&a.status.snapshot(), arch);
        }
        let history = match postgres.running() {
            Some(r) if !r.in_recovery => r.timeline.map(|t| self.timeline_history(t)).unwrap_or_default(),
            _ => Vec::new(),
        };
        let report = Report {
            member: obs.me.clone(),
            address: self.pg.as_ref().map(|p| p.advertise.clone()).unwrap_or_default(),
            epoch: obs.cluster.epoch,
            postgres,
            data: self.local.data.clone(),
            lease: self.local.lease.map(|l| (l.epoch, l.deadline.saturating_sub(now))),
            fenced_epoch: self.local.fenced_epoch,
            stop_streaming_for: self.shared.stop_streaming_for(),
            task: self.local.task.as_ref().map(|(t, _)| t.clone()),
            tags: self.cfg.tags.clone(),
            timeline_history: history,
            sync_applied_at: self.local.sync_applied_at.clone(),
            at: wall(),
            election_timeout_max: Some(self.cfg.raft.election_timeout_max),
            problem: self.local.problem.clone(),
            roles_pending: self.local.roles_pending(),
            stopping: self.local.stopping,
        };
        self.shared.reports.put(report.clone(), now);
        self.shared.set_report(report);
    }

    /// Timeline switches from `pg_wal/<tli>.history` (cached per timeline).
    fn timeline_history(&mut self, tli: Timeline) -> Vec<(Timeline, Lsn)> {
        if let Some((t, h)) = &self.history_cache
            && *t == tli
        {
            return h.clone();
        }
        let path = self.pg().data.join(format!("pg_wal/{:08X}.history", tli.0));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let h: Vec<(Timeline, Lsn)> = text
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let t = parts.next()?.parse().ok()?;
                let lsn = parts.next()?.parse().ok()?;
                Some((Timeline(t), lsn))
            })
            .collect();
        tracing::info!(timeline = %tli, "timeline history: {h:?}");
        if h.is_empty() && tli.0 > 1 {
            // The file must exist on a primary past timeline 1; do not cache a failed read.
            return h;
        }
        self.history_cache = Some((tli, h.clone()));
        h
    }

    /// Whether the data directory belongs to a different Postgres cluster than the one recorded.
    pub(super) fn foreign_data(&self) -> Option<String> {
        let recorded = self.cluster.applied().state.system_identifier?;
        let pg = self.pg.as_ref()?;
        match &self.local.data {
            Data::Present(d) if d.system_identifier != recorded => Some(format!(
                "data directory {} holds Postgres system identifier {}, but this cluster's is {recorded}: it belongs to \
                 another cluster. Move it aside (or point postgres.data_dir elsewhere) and start the agent again; it \
                 will clone this member from the primary",
                pg.data.display(),
                d.system_identifier
            )),
            _ => None,
        }
    }
}
