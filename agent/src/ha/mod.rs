//! The HA loop: every tick, gather one observation, call the core's `decide`, carry out the
//! plan. Long actions run as tasks and show up in a later observation, so lease renewal never
//! waits on them.
//!
//! Owns the local member's runtime state and the state shared with the peer RPC handlers
//! (`Shared`). Must not decide anything itself: every "whether" is the core's.

mod carry;
mod coord;
mod execute;
pub mod handover;
mod lead;
mod local;
pub(crate) mod observe;
pub mod peers;
mod pg;
mod problems;
pub mod read_balancers;
mod renew;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgquorum_core::ha::observation::Report;
use pgquorum_core::ha::plan::{Action, Reason};
use pgquorum_core::ha::{HaConfig, Plan, cadence, decide};
use pgquorum_core::{Epoch, Lsn, Timeline};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use coord::Coord;
pub use pg::PgCtx;

use crate::cluster::Cluster;
use crate::config::AgentConfig;
use crate::fence::Guard;
use crate::postgres::watch::DataDirWatch;
use crate::postgres::{controldata, sql::Sql};
use local::LocalState;
use peers::Reports;

/// State shared between the HA loop and the peer RPC handlers.
pub struct Shared {
    /// The zero of the loop's monotonic clock.
    pub start: Instant,
    /// Coordinator memory (used by lease renewals arriving over RPC).
    pub coord: Coord,
    /// Every member's last report.
    pub reports: Arc<Reports>,
    /// This member's last report (served by `MemberStatus`).
    pub report: Mutex<Option<Report>>,
    /// Every newly published report of this member.
    pub published: tokio::sync::watch::Sender<Option<Report>>,
    /// The digest of this member's report apart from its timestamps (`report_digest`); changes
    /// only when its content does (peers' long polls wait on it).
    pub digest: tokio::sync::watch::Sender<u64>,
    stop_streaming: Mutex<Option<Epoch>>,
    /// When the loop last finished a tick (the `/liveness` check; no SQL involved).
    last_tick: Mutex<Option<Duration>>,
    /// Wakes the loop before its next tick.
    pub wake: Notify,
    /// An operator asked to restart this member's Postgres.
    pub restart_requested: std::sync::atomic::AtomicBool,
    /// An operator asked to reload this member's Postgres configuration.
    pub reload_requested: std::sync::atomic::AtomicBool,
    /// The agent was asked to stop; the loop's next tick takes it (`request_stop`).
    stop_requested: std::sync::atomic::AtomicBool,
    /// The coordinator's latest decision, for status (empty unless this agent leads).
    pub coordinator_reason: Mutex<String>,
    /// This member's Postgres context (unset on a witness): the management API checks Postgres
    /// parameters with its binaries and takes base backups with it.
    pub pg: std::sync::OnceLock<Arc<PgCtx>>,
    /// The WAL archive, when `archive.enabled` (status and metrics read it).
    pub archive: std::sync::OnceLock<Arc<crate::archive::Archive>>,
    /// A base backup is being taken on this member.
    pub backup_running: std::sync::atomic::AtomicBool,
    /// Load balancers that route reads here (promotion waits until they were told otherwise).
    pub read_balancers: read_balancers::ReadBalancers,
    /// Lease renewal attempts this member sent as calls of their own (those carried on Raft
    /// replies are counted by `raft::LeaseMail::carried`).
    pub renewal_calls: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// A fresh shared state.
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            start: Instant::now(),
            coord: Coord::default(),
            reports: Arc::new(Reports::default()),
            report: Mutex::new(None),
            published: tokio::sync::watch::Sender::new(None),
            digest: tokio::sync::watch::Sender::new(0),
            stop_streaming: Mutex::new(None),
            last_tick: Mutex::new(None),
            wake: Notify::new(),
            restart_requested: std::sync::atomic::AtomicBool::new(false),
            reload_requested: std::sync::atomic::AtomicBool::new(false),
            stop_requested: std::sync::atomic::AtomicBool::new(false),
            coordinator_reason: Mutex::new(String::new()),
            pg: std::sync::OnceLock::new(),
            backup_running: Default::default(),
            archive: std::sync::OnceLock::new(),
            read_balancers: read_balancers::ReadBalancers::default(),
            renewal_calls: Default::default(),
        })
    }

    /// This member's last report and its digest (0 before the first).
    pub fn current_report(&self) -> (Option<Report>, u64) {
        let report = self.report.lock().expect("report lock is never poisoned");
        (report.clone(), *self.digest.borrow())
    }

    /// Stores a newly published report of this member (and its digest, with it).
    fn set_report(&self, report: Report) {
        let digest = report_digest(&report);
        let mut current = self.report.lock().expect("report lock is never poisoned");
        *current = Some(report.clone());
        self.digest.send_if_modified(|d| std::mem::replace(d, digest) != digest);
        drop(current);
        self.published.send_replace(Some(report));
    }

    /// Asks the loop to restart Postgres.
    pub fn request_restart(&self) {
        self.restart_requested.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Tells the loop the agent is stopping: its next tick reads Postgres's status afresh and
    /// publishes a report that says `stopping`.
    pub fn request_stop(&self) {
        self.stop_requested.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Asks the loop to reload Postgres's configuration.
    pub fn request_reload(&self) {
        self.reload_requested.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The loop's monotonic now.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records a coordinator's request to stop streaming for `epoch` and wakes the loop.
    pub fn stop_streaming(&self, epoch: Epoch) {
        let mut s = self.stop_streaming.lock().expect("lock is never poisoned");
        if s.is_none_or(|e| e < epoch) {
            *s = Some(epoch);
        }
        drop(s);
        self.wake.notify_one();
    }

    /// Records that the loop finished a tick now.
    pub fn ticked(&self) {
        *self.last_tick.lock().expect("lock is never poisoned") = Some(self.now());
    }

    /// How long ago the loop last finished a tick (`None`: not yet).
    pub fn since_last_tick(&self) -> Option<Duration> {
        let at = (*self.last_tick.lock().expect("lock is never poisoned"))?;
        Some(self.now().saturating_sub(at))
    }

    /// The epoch streaming was stopped for.
    pub fn stop_streaming_for(&self) -> Option<Epoch> {
        *self.stop_streaming.lock().expect("lock is never poisoned")
    }
}

/// A digest of `report` apart from when it was made and how much lease it had left (never 0).
pub fn report_digest(report: &Report) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut content = report.clone();
    content.at = pgquorum_core::UnixMillis(0);
    content.lease = content.lease.map(|(epoch, _)| (epoch, Duration::ZERO));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(&content).unwrap_or_default().hash(&mut h);
    h.finish().max(1)
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The data directory holds another cluster's Postgres: an operator must act.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ForeignData(pub String);

/// The HA loop of one agent.
pub struct Ha {
    cfg: Arc<AgentConfig>,
    cluster: Cluster,
    shared: Arc<Shared>,
    pg: Option<Arc<PgCtx>>,
    sql: Option<Sql>,
    local: LocalState,
    guard: Option<Guard>,
    hacfg: HaConfig,
    history_cache: Option<(Timeline, Vec<(Timeline, Lsn)>)>,
    last_logged: Option<(Reason, Vec<Action>, Option<Reason>)>,
    /// Set while quiet: the loop time of the next tick (otherwise every loop interval), and
    /// the next moment it must tick on its own timer, if any (`cadence::next_exact_deadline`).
    quiet_until: Option<(Duration, Option<Duration>)>,
    /// The watch on the data directory's entries while Postgres runs, and when setting it up
    /// last failed (loop time; tried again `cadence::WATCH_RETRY` later; `postgres::watch`).
    data_watch: (Option<DataDirWatch>, Option<Duration>),
}

impl Ha {
    /// Prepares the loop: kills a Postgres left over from a previous run, starts the fence
    /// guard, reads the data directory. Without `pg` this member is a witness: it reports and,
    /// when it leads Raft, coordinates.
    pub async fn new(
        cfg: Arc<AgentConfig>,
        cluster: Cluster,
        shared: Arc<Shared>,
        pg: Option<PgCtx>,
    ) -> anyhow::Result<Ha> {
        let mut local = LocalState::new(pgquorum_core::ha::observation::Data::Missing);
        let (mut sql, mut guard) = (None, None);
        if let Some(pg) = &pg {
            pg.prepare().map_err(|e| anyhow::anyhow!("preparing {}: {e}", pg.scratch.display()))?;
            let leftover = crate::fence::kill::kill_instance(&pg.data, None);
            if leftover > 0 {
                tracing::warn!(
                    "stopped {leftover} Postgres processes left from a previous run of this agent"
                );
            }
            guard =
                Some(Guard::spawn(&pg.data).map_err(|e| anyhow::anyhow!("starting the fence guard: {e}"))?);
            local.data = controldata::read(&pg.bin, &pg.data).await;
            sql = Some(Sql::new(&pg.socket_dir, pg.port, &pg.superuser, &pg.secrets.superuser));
        } else {
            local.witness = true;
        }
        let pg = pg.map(Arc::new);
        if let Some(p) = &pg {
            let _ = shared.pg.set(p.clone());
        }
        Ok(Ha {
            cfg,
            cluster,
            shared,
            pg,
            sql,
            local,
            guard,
            hacfg: HaConfig::default(),
            history_cache: None,
            last_logged: None,
            quiet_until: None,
            data_watch: (None, None),
        })
    }

    /// Runs until `cancel`, then stops Postgres (and gives up the primary role, if held).
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        use openraft::async_runtime::watch::WatchReceiver;
        let every = self.cfg.loop_interval;
        let mut applied = self.cluster.node.sm.subscribe();
        let mut server = self.cluster.node.raft.server_metrics();
        // Raft's metrics close when Raft stops (the daemon then ends the agent): stop watching.
        let mut raft_running = true;
        while !cancel.is_cancelled() {
            self.tick().await?;
            // Tick every loop interval, or, while quiet, at the next deadline only (`cadence`).
            // At once when the replicated state, Raft leadership or a peer's report changes, a
            // renewal, task or peer request finished, or Postgres exited. A new replicated
            // state is a change worth a fresh Postgres status. And at the fence point of the
            // lease held, so fencing never waits for a tick.
            let (quiet, start) = (self.quiet_until, self.shared.start);
            let next = async move {
                match quiet {
                    // A deadline a decision depends on comes first: met exactly.
                    Some((at, Some(exact))) if exact <= at => tokio::time::sleep_until(start + exact).await,
                    // Otherwise with the first Raft message after `at` (the status read, the
                    // report's freshness, a renewal due), no wake-up of its own
                    // (`timer::at_beat`), but never past the next exact deadline.
                    Some((at, exact)) => tokio::select! {
                        _ = crate::timer::at_beat(start + at) => {}
                        _ = sleep_until_some(exact.map(|e| start + e)) => {}
                    },
                    None => tokio::time::sleep_until(Instant::now() + every).await,
                }
            };
            let fence_at = self.fence_point().filter(|at| *at > Instant::now());
            let postmaster_exit = async {
                match self.local.postmaster.as_mut() {
                    Some(pm) => pm.wait_exit().await,
                    None => std::future::pending().await,
                }
            };
            let data_change = async {
                match self.data_watch.0.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            };
            let (mut new_state, mut data_changed) = (false, None);
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = next => {}
                _ = sleep_until_some(fence_at) => {}
                _ = self.shared.wake.notified() => {}
                _ = applied.changed() => new_state = true,
                changed = server.changed(), if raft_running => raft_running = changed.is_ok(),
                _ = postmaster_exit => {}
                change = data_change => data_changed = Some(change),
            }
            self.local.status_due |= new_state;
            if let Some(change) = data_changed {
                self.data_changed(change);
            }
        }
        self.shutdown().await;
        Ok(())
    }

    async fn tick(&mut self) -> anyhow::Result<()> {
        let now = self.shared.now();
        if self.shared.stop_requested.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.local.stopping = true;
            self.local.status_due = true;
        }
        // Before anything that waits: a renewal left for Raft's traffic goes out no more.
        self.collect_carried();
        self.reap(now).await;
        self.keep_data_watch(now);
        // The status query may be slow (up to its timeout): give up on it at the fence point.
        let fence_at = self.fence_point();
        tokio::select! {
            _ = self.refresh_postgres(now) => {}
            _ = sleep_until_some(fence_at) => {
                tracing::debug!("status query abandoned at the fence point");
                self.local.status_due = true;
            }
        }
        if let Some(msg) = self.foreign_data() {
            return Err(ForeignData(msg).into());
        }
        // The clock is read at decision time, after the status query.
        let now = self.shared.now();
        let obs = self.observe(now);
        let plan = decide(&obs, &self.hacfg);
        self.log_plan(&plan);
        *self.shared.coordinator_reason.lock().expect("lock is never poisoned") =
            plan.coordinator.as_ref().map(|c| c.reason.to_string()).unwrap_or_default();
        if self.shared.reload_requested.swap(false, std::sync::atomic::Ordering::SeqCst)
            && self.local.status.is_some()
            && let Err(e) = self.sql().reload().await
        {
            tracing::warn!("reloading Postgres configuration: {e}");
        }
        for a in &plan.member.actions {
            if let Err(e) = self.exec(&obs, a).await {
                tracing::warn!("{a:?}: {e}");
                break;
            }
        }
        if let Some(c) = &plan.coordinator {
            for a in &c.actions {
                if let Err(e) = self.exec_coord(&obs, a).await {
                    tracing::debug!("coordinator {a:?}: {e}");
                    break;
                }
            }
        }
        self.upkeep(&obs).await;
        // For a while after the data directory changed (a promotion from outside may take a
        // moment to end), read the status every tick.
        self.local.status_due |= cadence::data_recently_changed(now, self.local.data_changed_at);
        self.quiet_until = self.quiet_until(&obs, &plan);
        if self.quiet_until.is_some() {
            self.leave_carried(&obs, &plan);
        }
        let settled = pgquorum_core::ha::cadence::settled(&obs, &plan);
        self.local.status_due |= !settled;
        self.publish(&obs, now);
        self.shared.ticked();
        Ok(())
    }

    /// Keeps the guard armed, the configuration current, and the primary's roles present.
    async fn upkeep(&mut self, obs: &pgquorum_core::ha::Observation) {
        self.arm_guard(obs).await;
        self.election_delay(obs);
        if self.local.postmaster.is_some() && self.local.task.is_none() && self.local.status.is_some() {
            if let Err(e) = self.write_conf(obs, true).await {
                tracing::warn!("{e}");
            }
            let writable = self.local.status.as_ref().is_some_and(|s| !s.in_recovery);
            let busy = self.local.roles.as_ref().is_some_and(|h| !h.is_finished());
            if writable && !self.local.roles_checked && !busy {
                self.spawn_ensure_roles();
            }
        }
    }

    /// Sets the Raft election delay the core decides (`rules::lease::election_delay`) when it
    /// changes.
    fn election_delay(&mut self, obs: &pgquorum_core::ha::Observation) {
        let r = &self.cfg.raft;
        let delay = pgquorum_core::ha::rules::lease::election_delay(
            obs,
            (r.election_timeout_min, r.election_timeout_max),
        );
        if delay != self.local.election_delay {
            self.cluster.node.raft.runtime_config().election_delay(delay);
            self.local.election_delay = delay;
        }
    }

    /// Creates missing roles on the new primary, in the background: the tick never waits on
    /// SQL that could block (a write waits for synchronous standbys).
    /// A failed attempt (Postgres fenced or restarted meanwhile) is tried again.
    fn spawn_ensure_roles(&mut self) {
        if let Some(h) = self.local.roles.take()
            && h.is_finished()
            && matches!(futures::FutureExt::now_or_never(h), Some(Ok(true)))
        {
            self.local.roles_checked = true;
            return;
        }
        let pg = self.pg().clone();
        let shared = self.shared.clone();
        self.local.roles = Some(tokio::spawn(async move {
            // In protection mode the coordinator may name synchronous standbys before any could
            // clone: the replication role must not wait for them.
            let mut sql =
                Sql::new(&pg.socket_dir, pg.port, &pg.superuser, &pg.secrets.superuser).commit_locally();
            let res = async {
                sql.ensure_role(&pg.replication_user, &pg.secrets.replication, true).await?;
                if let (Some((user, db)), Some(pw)) = (&pg.application, &pg.secrets.application) {
                    sql.ensure_role(user, pw, false).await?;
                    sql.ensure_database(db, user).await?;
                }
                Ok::<(), String>(())
            };
            match tokio::time::timeout(Duration::from_secs(30), res).await {
                Ok(Ok(())) => {
                    // Tick at once: the report says the roles are ready, and replicas clone.
                    shared.wake.notify_one();
                    true
                }
                Ok(Err(e)) => {
                    tracing::warn!("creating roles: {e}; will retry");
                    false
                }
                Err(_) => {
                    tracing::warn!("creating roles did not finish within 30s; will retry");
                    false
                }
            }
        }));
    }

    /// While quiet, when the loop next ticks (`cadence::quiet_until`; `None`: every interval),
    /// and the next moment it must tick even without a Raft message
    /// (`cadence::next_exact_deadline`: a lease running out on the coordinator, exactly; a
    /// renewal a little after it is due, rounded up to the runtime's timer slot: a deadline
    /// more than a slot away wakes the runtime at the start of its slot to move it down
    /// tokio's wheel, and that came a few milliseconds before the heartbeat the renewal
    /// waits for, a wake-up for nothing every renewal; on the slot boundary itself it costs
    /// nothing when the heartbeat comes first (`timer::coarse`)).
    fn quiet_until(
        &self,
        obs: &pgquorum_core::ha::Observation,
        plan: &Plan,
    ) -> Option<(Duration, Option<Duration>)> {
        use pgquorum_core::ha::cadence;
        let next_status = (!self.local.status_due)
            .then(|| self.local.status_at.unwrap_or(obs.now) + self.status_interval());
        let at = cadence::quiet_until(obs, plan, &self.hacfg, next_status, self.cfg.loop_interval)?;
        let on_slot = |d: Duration| crate::timer::coarse(self.shared.start + d) - self.shared.start;
        let renewal = cadence::renewal_beat_deadline(obs).map(on_slot);
        let exact = renewal.into_iter().chain(cadence::coordinator_deadline(obs, &self.hacfg)).min();
        Some((at, exact))
    }

    /// How often a quiet member reads its status (`cadence::status_interval`): the configured
    /// interval while the data directory is watched, at most a second while it is not.
    fn status_interval(&self) -> Duration {
        cadence::status_interval(self.cfg.status_interval, self.data_watch.0.is_some())
    }

    /// When this member must fence itself if no renewal lands first (`None`: no lease held).
    fn fence_point(&self) -> Option<Instant> {
        self.local.lease.map(|l| self.shared.start + l.fence_at())
    }

    fn pg(&self) -> &Arc<PgCtx> {
        self.pg
            .as_ref()
            .expect("only members with Postgres act on it (a witness's plans hold no member actions)")
    }

    fn sql(&mut self) -> &mut Sql {
        self.sql.as_mut().expect("only members with Postgres query it")
    }

    fn log_plan(&mut self, plan: &Plan) {
        let coord_reason = plan.coordinator.as_ref().map(|c| c.reason.clone());
        let key = (plan.member.reason.clone(), plan.member.actions.clone(), coord_reason.clone());
        if self.last_logged.as_ref() == Some(&key) {
            return;
        }
        let quiet = plan.member.actions.iter().all(|a| matches!(a, Action::Renew { .. }))
            && plan.coordinator.as_ref().is_none_or(|c| c.actions.is_empty());
        if !quiet || self.last_logged.as_ref().is_none_or(|(r, _, c)| *r != key.0 || *c != key.2) {
            tracing::info!(member = %plan.member.reason, coordinator = ?coord_reason.map(|r| r.to_string()), "decision");
        }
        self.last_logged = Some(key);
    }

    async fn shutdown(mut self) {
        let obs = self.observe(self.shared.now());
        let epoch = obs.cluster.primary.as_ref().filter(|p| p.member == obs.me).map(|p| p.epoch);
        if let Some(pm) = self.local.postmaster.take() {
            tracing::info!("stopping Postgres");
            let data = self.pg().data.clone();
            pm.stop(&data, Duration::from_secs(20)).await;
        }
        if let Some(g) = self.guard.as_mut() {
            let _ = g.disarm().await;
        }
        // A release is worth waiting for only while the lease holds: after it the others take
        // over all the same (and a Raft group without a majority, as when every member stops,
        // would keep the agent waiting for nothing).
        let left = self.local.lease.map_or(Duration::ZERO, |l| l.deadline.saturating_sub(self.shared.now()));
        if epoch.is_some() && left.is_zero() {
            tracing::info!("the lease has run out: the others take over without a release");
        }
        if let Some(epoch) = epoch.filter(|_| !left.is_zero()) {
            let release = pgquorum_core::state::Command::ReleasePrimary { epoch };
            match tokio::time::timeout(left.min(Duration::from_secs(3)), self.cluster.propose(release)).await
            {
                Ok(Ok(_)) => tracing::info!(
                    "gave up the primary role of epoch {epoch} so another member can take over at once"
                ),
                _ => tracing::warn!(
                    "could not give up the primary role; the others take over when the lease runs out"
                ),
            }
        }
        if let Some(g) = self.guard.take() {
            g.shutdown().await;
        }
    }
}
