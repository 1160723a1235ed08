//! Carrying out the member's actions. Long ones (initdb, clone, rewind, promote, stop) run as
//! tasks and show up in the next observation; nothing here waits on the network for long.
//! Before anything that makes Postgres writable, the lease is checked again here.

use std::time::Duration;

use pgquorum_core::MemberName;
use pgquorum_core::ha::config::fence_lead;
use pgquorum_core::ha::observation::{Data, Observation, Task};
use pgquorum_core::ha::plan::Action;
use pgquorum_core::ha::rules::rejoin;

use super::Ha;
use super::pg::split_addr;
use crate::postgres::{controldata, process, sql::Sql, tools};

/// How often the upkeep reads the configuration files back while nothing it writes changed (an
/// operator's hand edit of `pgquorum.conf` is undone within this long).
const CONF_RECHECK: Duration = Duration::from_secs(10);

/// A digest of everything the written configuration depends on besides the member's own
/// settings (fixed for the agent's life).
fn conf_key(
    upstream: &Option<String>,
    sync: &str,
    dynamic: &std::collections::BTreeMap<String, String>,
    standby: bool,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (upstream, sync, dynamic, standby).hash(&mut h);
    h.finish()
}

impl Ha {
    /// Where `member`'s Postgres listens, from its report or its membership entry.
    pub(super) fn address_of(&self, obs: &Observation, member: &MemberName) -> Option<String> {
        let from_report = obs.peers.get(member).and_then(|s| s.as_ref()).map(|s| s.report.address.clone());
        from_report.filter(|a| !a.is_empty()).or_else(|| {
            self.cluster.membership().nodes.values().find(|n| &n.name == member).map(|n| n.postgres.clone())
        })
    }

    fn lease_ok(&self, obs: &Observation) -> bool {
        let now = self.shared.now();
        let granted = obs.cluster.primary.as_ref().filter(|p| p.member == obs.me).map(|p| p.epoch);
        self.local.lease.is_some_and(|l| Some(l.epoch) == granted && now < l.fence_at())
    }

    /// Writes the configuration for the current role; reloads a running server if it changed.
    /// With `only_if_due` (the per-tick upkeep), files written from the same inputs for the
    /// same postmaster less than [`CONF_RECHECK`] ago are not read again.
    pub(super) async fn write_conf(&mut self, obs: &Observation, only_if_due: bool) -> Result<(), String> {
        let addr = match &self.local.upstream {
            Some(m) if self.local.conf_standby => {
                Some(self.address_of(obs, m).ok_or_else(|| format!("no address known for {m}"))?)
            }
            _ => None,
        };
        let upstream = addr.as_deref().and_then(split_addr);
        let key = conf_key(
            &addr,
            &self.local.conf_sync,
            &obs.cluster.config.postgres_parameters,
            self.local.conf_standby,
        );
        let pid = self.local.postmaster.as_ref().map(|p| p.pid);
        if only_if_due
            && self.local.conf_written.is_some_and(|(k, p, at)| {
                k == key && p == pid && self.shared.now().saturating_sub(at) < CONF_RECHECK
            })
        {
            return Ok(());
        }
        let changed = self
            .pg()
            .write_files(
                upstream,
                &self.local.conf_sync,
                &obs.cluster.config.postgres_parameters,
                self.local.conf_standby,
            )
            .map_err(|e| format!("writing Postgres configuration in {}: {e}", self.pg().data.display()))?;
        self.local.conf_written = Some((key, pid, self.shared.now()));
        if changed && self.local.postmaster.is_some() {
            self.local.status_due = true;
            self.sql().reload().await?;
        }
        Ok(())
    }

    fn start_postmaster(&mut self) -> Result<(), String> {
        let pm = process::start(&self.pg().bin, &self.pg().data, &self.pg().log)
            .map_err(|e| format!("starting postgres: {e}"))?;
        tracing::info!(pid = pm.pid, "started Postgres");
        self.local.postmaster = Some(pm);
        self.local.started_at = Some(self.shared.now());
        self.local.crashed_at = None;
        self.local.status = None;
        self.local.roles_checked = false;
        self.local.standby_tli = None;
        self.sql().reset();
        Ok(())
    }

    fn spawn_task(
        &mut self,
        task: Task,
        fut: impl std::future::Future<Output = super::local::TaskResult> + Send + 'static,
    ) {
        let shared = self.shared.clone();
        self.local.task = Some((
            task,
            tokio::spawn(async move {
                let res = fut.await;
                shared.wake.notify_one();
                res
            }),
        ));
    }

    /// Executes one member action.
    pub(super) async fn exec(&mut self, obs: &Observation, action: &Action) -> Result<(), String> {
        match action {
            Action::Initdb => {
                let pg = self.pg().clone();
                self.spawn_task(Task::Initdb, async move {
                    if let Some((restore, archive)) = &pg.restore {
                        let agent = std::env::current_exe()
                            .map_err(|e| format!("restore: cannot find the agent's own binary: {e}"))?;
                        return crate::archive::restore::run(restore, archive, &pg, &agent)
                            .await
                            .map(|_| None);
                    }
                    let (enc, locale, checksums) = &pg.initdb;
                    let o = tools::InitdbOptions {
                        superuser: &pg.superuser,
                        password: &pg.secrets.superuser,
                        encoding: enc,
                        locale,
                        checksums: *checksums,
                    };
                    tools::initdb(&pg.bin, &pg.data, &pg.scratch, &o).await.map(|_| None)
                });
            }
            Action::Clone { from } => {
                let addr =
                    self.address_of(obs, from).ok_or_else(|| format!("no address known for {from}"))?;
                let (host, port) = split_addr(&addr).ok_or_else(|| format!("bad address {addr}"))?;
                let (host, pg, slot) = (host.to_string(), self.pg().clone(), obs.me.slot_name());
                self.spawn_task(Task::Clone(from.clone()), async move {
                    tools::basebackup(
                        &pg.bin,
                        &pg.data,
                        &pg.passfile,
                        &host,
                        port,
                        &pg.replication_user,
                        &slot,
                    )
                    .await
                    .map(|_| None)
                });
            }
            Action::Rewind { from } => {
                let addr =
                    self.address_of(obs, from).ok_or_else(|| format!("no address known for {from}"))?;
                let (host, port) = split_addr(&addr).ok_or_else(|| format!("bad address {addr}"))?;
                let (host, pg) = (host.to_string(), self.pg().clone());
                // What the data must follow afterwards: the primary's timeline and history.
                let primary = obs.peers.get(from).and_then(|s| s.as_ref()).and_then(|s| {
                    let tli = pgquorum_core::ha::rules::member::primary_timeline(&s.report)?;
                    Some((tli, s.report.timeline_history.clone()))
                });
                self.spawn_task(Task::Rewind(from.clone()), async move {
                    let out =
                        tools::rewind(&pg.bin, &pg.data, &pg.passfile, &host, port, &pg.superuser).await?;
                    tracing::info!("pg_rewind: {}", out.lines().last().unwrap_or(""));
                    // "No rewind required" can leave a standby on a timeline of its own: a
                    // failure, so the core re-clones instead of rewinding again and again.
                    if let Some((tli, history)) = primary
                        && let Data::Present(d) = controldata::read(&pg.bin, &pg.data).await
                    {
                        rejoin::after_rewind(&d, tli, &history)?;
                    }
                    Ok(None)
                });
            }
            Action::DiscardData => {
                let aside = self.pg().data.with_extension("discarded");
                let _ = std::fs::remove_dir_all(&aside);
                std::fs::rename(&self.pg().data, &aside)
                    .map_err(|e| format!("moving {} aside: {e}", self.pg().data.display()))?;
                tracing::warn!("moved the diverged data directory to {} to clone it again", aside.display());
                self.local.data_stale = true;
            }
            Action::StartPrimary => {
                if !self.lease_ok(obs) {
                    return Err("not starting as primary: the lease is not held".into());
                }
                self.local.upstream = None;
                self.local.conf_standby = false;
                self.local.conf_sync = obs.cluster.sync.target.to_postgres();
                self.write_conf(obs, false).await?;
                self.start_postmaster()?;
                self.arm_guard(obs).await;
            }
            Action::StartReplica { upstream } => {
                self.local.upstream = upstream.clone();
                self.local.conf_standby = true;
                self.local.conf_sync = String::new();
                self.write_conf(obs, false).await?;
                self.start_postmaster()?;
            }
            Action::Follow { upstream } => {
                tracing::info!(
                    "streaming from {}",
                    upstream.as_ref().map_or("nobody".to_string(), |u| u.to_string())
                );
                self.local.upstream = upstream.clone();
                self.write_conf(obs, false).await?;
            }
            Action::Promote { sync } => {
                if !self.lease_ok(obs) {
                    return Err("not promoting: the lease is not held".into());
                }
                if let Some((task, _)) = &self.local.task {
                    return Err(format!("not promoting while {task:?} runs"));
                }
                self.arm_guard(obs).await;
                // Synchronous settings first (a standby ignores them), then promote.
                self.local.upstream = None;
                self.local.conf_sync = sync.to_postgres();
                self.write_conf(obs, false).await?;
                self.local.conf_standby = false;
                let pg = self.pg().clone();
                tracing::info!(epoch = %obs.cluster.epoch, "promoting with synchronous_standby_names = {:?}", self.local.conf_sync);
                let shared = self.shared.clone();
                self.spawn_task(Task::Promote, async move {
                    // Load balancers that route reads here learn it is no replica first (it
                    // answers 503 since the grant): reads never reach the new primary.
                    let left = shared.read_balancers.drained(|| shared.now()).await;
                    if !left.is_empty() {
                        tracing::warn!(
                            "promoting although {left:?} asked /replica recently and has not asked since the grant: it may route reads to the new primary until its next check"
                        );
                    }
                    let mut sql = Sql::new(&pg.socket_dir, pg.port, &pg.superuser, &pg.secrets.superuser);
                    sql.promote().await.map(|_| None)
                });
            }
            Action::ApplySync { sync } => {
                tracing::info!("synchronous_standby_names = {:?}", sync.to_postgres());
                self.local.conf_sync = sync.to_postgres();
                self.write_conf(obs, false).await?;
            }
            Action::Slots { members } => {
                let names: Vec<String> = members.iter().map(MemberName::slot_name).collect();
                self.sql().sync_slots(&names).await?;
            }
            Action::StopForSwitchover => {
                if let Some(p) = obs.cluster.primary.as_ref().filter(|p| p.member == obs.me) {
                    self.local.fenced_epoch = Some(p.epoch);
                }
                let pm = self.local.postmaster.take().ok_or("Postgres is not running")?;
                let (data, pg) = (self.pg().data.clone(), self.pg().clone());
                self.local.data_stale = true;
                self.local.status = None;
                self.sql().reset();
                tracing::info!("switchover: checkpointing and shutting down cleanly");
                self.spawn_task(Task::Restart, async move {
                    let mut sql = Sql::new(&pg.socket_dir, pg.port, &pg.superuser, &pg.secrets.superuser);
                    if let Err(e) = tokio::time::timeout(Duration::from_secs(30), sql.checkpoint())
                        .await
                        .unwrap_or(Err("timed out".into()))
                    {
                        tracing::warn!("checkpoint before the switchover: {e}");
                    }
                    pm.stop(&data, Duration::from_secs(30)).await;
                    Ok(None)
                });
            }
            Action::RestartPostgres | Action::Stop => {
                if matches!(action, Action::RestartPostgres) {
                    self.shared.restart_requested.store(false, std::sync::atomic::Ordering::SeqCst);
                    tracing::info!("restarting Postgres as asked");
                }
                let pm = self.local.postmaster.take().ok_or("Postgres is not running")?;
                let data = self.pg().data.clone();
                self.local.data_stale = true;
                self.local.status = None;
                self.sql().reset();
                self.spawn_task(Task::Restart, async move {
                    pm.stop(&data, Duration::from_secs(30)).await;
                    Ok(None)
                });
            }
            Action::Fence => self.fence(obs).await,
            Action::Renew { epoch } => self.renew(obs, *epoch),
            Action::DropLease => {
                self.local.lease = None;
                if let Some(g) = self.guard.as_mut() {
                    let _ = g.disarm().await;
                }
            }
            Action::Propose(cmd) => {
                if self.local.proposal.as_ref().is_some_and(|h| !h.is_finished()) {
                    return Ok(());
                }
                let (cluster, cmd) = (self.cluster.clone(), cmd.clone());
                tracing::info!("proposing: {cmd}");
                self.local.proposal = Some(tokio::spawn(async move {
                    match cluster.propose(cmd.clone()).await {
                        Ok((Ok(_), _)) => {}
                        Ok((Err(e), _)) => tracing::warn!("{cmd}: refused: {e}"),
                        Err(e) => tracing::warn!("{cmd}: {e}"),
                    }
                }));
            }
            other => return Err(format!("{other:?} is not a member action")),
        }
        Ok(())
    }

    /// Kills Postgres now and never renews the granted epoch again.
    pub(super) async fn fence(&mut self, obs: &Observation) {
        if let Some(p) = obs.cluster.primary.as_ref().filter(|p| p.member == obs.me) {
            self.local.fenced_epoch = Some(p.epoch);
        }
        if let Some(pm) = self.local.postmaster.take() {
            // How far before the deadline: the agent's fence must come before the guard's.
            let left = self.local.lease.map(|l| l.deadline.saturating_sub(self.shared.now()));
            tracing::warn!(epoch = %obs.cluster.epoch, lease_left = ?left, "fencing: the agent kills Postgres (no valid lease)");
            // Kill first, then disarm the guard (it has nothing left to do), then reap: the
            // guard must not fire at the dying instance while the postmaster is reaped.
            crate::fence::kill::kill_instance(&self.pg().data, Some(pm.pid));
            if let Some(g) = self.guard.as_mut() {
                let _ = g.disarm().await;
            }
            pm.kill(&self.pg().data).await;
        } else {
            crate::fence::kill::kill_instance(&self.pg().data, None);
        }
        if let Some(g) = self.guard.as_mut() {
            let _ = g.disarm().await;
        }
        self.local.status = None;
        self.local.data_stale = true;
        self.sql().reset();
    }

    fn renew(&mut self, obs: &Observation, epoch: pgquorum_core::Epoch) {
        self.start_renewal(obs.cluster.config.ttl, obs.me.clone(), epoch, None);
    }

    /// The lease of `epoch` this member holds and renews on schedule: its last renewal was
    /// not a failed one (`Lease::last_renewal_failed`).
    pub(super) fn lease_on_schedule(
        &self,
        epoch: pgquorum_core::Epoch,
    ) -> Option<pgquorum_core::ha::observation::Lease> {
        let sent = self.local.last_renewal_sent;
        self.local.lease.filter(|l| l.epoch == epoch && !l.last_renewal_failed(sent))
    }

    /// Starts renewing `epoch`: its first attempt `carried` on Raft's traffic already, or a
    /// call now.
    pub(super) fn start_renewal(
        &mut self,
        ttl: Duration,
        me: pgquorum_core::MemberName,
        epoch: pgquorum_core::Epoch,
        carried: Option<super::renew::Carried>,
    ) {
        let sent = carried.as_ref().map_or_else(|| self.shared.now(), |c| c.sent);
        // Not holding this epoch's lease yet (a new primary), or the last renewal of the one
        // held was not confirmed (its Raft leader may be gone): confirmed at once
        // (`renew::urgent`).
        let held = self.local.lease.filter(|l| l.epoch == epoch);
        let on_schedule = self.lease_on_schedule(epoch);
        let failed_before = held.is_some() && on_schedule.is_none();
        let urgent = super::renew::urgent(held.is_none(), failed_before);
        self.local.last_renewal_sent = Some(sent);
        let (cluster, shared) = (self.cluster.clone(), self.shared.clone());
        // A renewal on schedule tries until a renewal interval after it was due
        // (`Lease::renewal_gives_up_at`); a new primary's or one after a failed renewal, for a
        // renewal interval from now.
        let gives_up = match on_schedule {
            Some(l) => l.renewal_gives_up_at(ttl),
            None => sent + ttl / 3,
        };
        let budget = gives_up.saturating_sub(sent).max(Duration::from_millis(100));
        let heartbeat = self.cfg.raft.heartbeat_interval;
        let handle = tokio::spawn(async move {
            let (first, every) = super::renew::schedule(ttl, heartbeat, urgent);
            let timing = (first, every);
            let res =
                super::renew::renew(cluster, shared.clone(), me, epoch, timing, budget, urgent, carried)
                    .await;
            shared.wake.notify_one();
            res
        });
        self.local.renewal = Some((sent, handle));
    }

    /// Keeps the guard armed while this member holds a lease and runs Postgres.
    pub(super) async fn arm_guard(&mut self, obs: &Observation) {
        // Half the lease's own fence lead before its deadline: after the agent's fence point.
        let fire = match (&self.local.lease, &self.local.postmaster) {
            (Some(l), Some(pm)) => {
                let lead = fence_lead(l.ttl());
                Some((pm.pid, self.shared.start + l.deadline.saturating_sub(lead / 2)))
            }
            _ => None,
        };
        let Some(guard) = self.guard.as_mut() else { return };
        let armed = match fire {
            Some((pid, at)) => guard.arm(pid, at).await,
            None => guard.disarm().await,
        };
        if let Err(e) = armed {
            tracing::error!("the fence guard is not reachable ({e}); fencing now to stay safe");
            self.fence(obs).await;
        }
    }
}
