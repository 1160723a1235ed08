//! The agent's lifetime: start Raft and the servers, run the background tasks, stop cleanly.
//!
//! Every long-lived task is spawned by name into one `TaskTracker`; if a critical one ends, the
//! rest are cancelled and the agent exits non-zero (its supervisor restarts it). Must not hold
//! cluster logic; it only wires parts together.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use pgquorum_core::state::MemberNode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Guard, Surface};
use crate::cluster::{self, Cluster};
use crate::config::AgentConfig;
use crate::ha::{Ha, PgCtx, Shared, peers};
use crate::raft::{Channels, RaftNode, StartError};

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Raft could not start (damaged or foreign data, bad settings): needs an operator.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Runs the agent until `shutdown` completes or a critical task fails.
pub async fn run(cfg: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    if cfg.pg.enabled && rustix::process::geteuid().is_root() {
        return Err(StartError::Settings(
            "pgquorum-agent runs Postgres, and Postgres refuses to run as root: start the agent as the user that \
             owns the data directory, for example `runuser -u postgres -- pgquorum-agent ...` (or set \
             postgres.enabled=false for a witness member)"
                .into(),
        )
        .into());
    }
    let pg = if cfg.pg.enabled { Some(PgCtx::new(&cfg).map_err(StartError::Settings)?) } else { None };
    let listener = TcpListener::bind(&cfg.grpc_listen)
        .await
        .with_context(|| format!("binding grpc.listen {}", cfg.grpc_listen))?;
    let http_listener = match cfg.http_listen.as_str() {
        "" => None,
        addr => Some(TcpListener::bind(addr).await.with_context(|| format!("binding http.listen {addr}"))?),
    };
    let channels =
        Channels::new(cfg.auth.tokens.own(), cfg.tls.material.clone()).map_err(StartError::Settings)?;
    let (grpc_guard, http_guard) = guards(&cfg);
    let node = RaftNode::open(&cfg.data_dir, &cfg.name, &cfg.cluster, &cfg.raft, channels).await?;
    tracing::info!(
        member = %cfg.name, node_id = %format!("{:016x}", node.ident.node_id), grpc = %cfg.grpc_advertise,
        http = %cfg.http_advertise, "agent started"
    );
    let me = MemberNode {
        name: cfg.name.clone(),
        grpc: cfg.grpc_advertise.clone(),
        http: cfg.http_advertise.clone(),
        postgres: if cfg.pg.enabled { cfg.pg.advertise.clone() } else { String::new() },
    };
    let cluster = Cluster::new(node.clone(), me);
    let shared = Shared::new();
    // The coordinator answers renewals carried on AppendEntries replies (`raft::lease_mail`).
    let (coord_cluster, coord_shared) = (cluster.clone(), shared.clone());
    cluster.node.mail.set_confirmer(Box::new(move |peer, arrived, vote| {
        let (cluster, shared) = (coord_cluster.clone(), coord_shared.clone());
        Box::pin(async move {
            let member = pgquorum_core::MemberName::new(arrived.renewal.member)?;
            let epoch = pgquorum_core::Epoch(arrived.renewal.epoch);
            let at = arrived.at.saturating_duration_since(shared.start);
            let now = || shared.now();
            shared.coord.confirm_carried(&cluster, peer, (&member, epoch), vote, (at, now)).await
        })
    }));
    let cfg = std::sync::Arc::new(cfg);
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (fail_tx, mut fail_rx) = tokio::sync::mpsc::channel::<(String, anyhow::Error)>(4);

    let spawn = |name: &'static str,
                 critical: bool,
                 fut: std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>| {
        let fail_tx = fail_tx.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let res = fut.await;
            match res {
                Err(e) => {
                    let _ = fail_tx.send((name.to_string(), e)).await;
                }
                Ok(()) if critical && !cancel.is_cancelled() => {
                    let _ = fail_tx.send((name.to_string(), anyhow::anyhow!("stopped unexpectedly"))).await;
                }
                Ok(()) => {}
            }
        });
    };
    spawn(
        "grpc",
        true,
        Box::pin(crate::api::serve_grpc(
            listener,
            cluster.clone(),
            shared.clone(),
            grpc_guard,
            cfg.tls.material.clone(),
            cancel.clone(),
        )),
    );
    if let Some(listener) = http_listener {
        spawn(
            "http",
            true,
            Box::pin(crate::api::serve_http(
                listener,
                cluster.clone(),
                shared.clone(),
                http_guard,
                cancel.clone(),
            )),
        );
    }
    let clock = shared.clone();
    spawn(
        "peers",
        true,
        Box::pin(peers::poll(
            cluster.clone(),
            shared.clone(),
            cfg.loop_interval,
            move || clock.now(),
            cancel.clone(),
        )),
    );
    // The archive serves Postgres's `archive_command` until the HA loop has stopped Postgres:
    // on the way down Postgres archives its last segments, and against a closed socket it
    // retries for seconds (and a primary's lease runs out meanwhile).
    let archive_cancel = CancellationToken::new();
    if cfg.archive.enabled {
        let started = crate::archive::open(&cfg, cluster.clone()).await?;
        let _ = shared.archive.set(started.archive.clone());
        let (role, published, c) = (started.role, shared.published.subscribe(), cancel.clone());
        spawn(
            "archive-role",
            true,
            Box::pin(async move {
                role.follow(published, c).await;
                Ok(())
            }),
        );
        spawn(
            "archive-socket",
            true,
            Box::pin(crate::archive::socket::serve(
                started.listener,
                started.archive.clone(),
                archive_cancel.clone(),
            )),
        );
        let (a, pg_wal, c) =
            (started.archive, cfg.pg.data_dir(&cfg.data_dir).join("pg_wal"), archive_cancel.clone());
        spawn(
            "archive-ahead",
            true,
            Box::pin(async move {
                crate::archive::ahead::run(a, pg_wal, Duration::from_millis(200), c).await;
                Ok(())
            }),
        );
    }
    if cfg.pg.enabled {
        let schedule = crate::archive::schedule::run(cluster.clone(), shared.clone(), cancel.clone());
        spawn("backup-schedule", false, Box::pin(schedule));
    }
    let ha = Ha::new(cfg.clone(), cluster.clone(), shared.clone(), pg).await?;
    let (ha_cancel, ha_done) = (cancel.clone(), archive_cancel.clone());
    spawn(
        "ha",
        true,
        Box::pin(async move {
            let outcome = ha.run(ha_cancel).await;
            ha_done.cancel();
            outcome
        }),
    );
    if cfg.kube.active() {
        let kube = crate::kube::run(cfg.kube.clone(), cluster.clone(), shared.clone(), cancel.clone());
        spawn("kube", false, Box::pin(kube));
    }
    spawn(
        "bootstrap",
        false,
        Box::pin(cluster::form_or_join(
            cluster.clone(),
            cfg.initial_members(),
            cfg.auto_join,
            cancel.clone(),
        )),
    );
    spawn(
        "cluster-id",
        false,
        Box::pin(cluster::refuse_foreign_data(
            cluster.clone(),
            cfg.initial_members(),
            cfg.data_dir.clone(),
            cancel.clone(),
        )),
    );
    spawn(
        "seed",
        false,
        Box::pin(cluster::seed_cluster_state(cluster.clone(), cfg.bootstrap.clone(), cancel.clone())),
    );
    spawn("raft-watch", true, Box::pin(watch_raft(node.clone(), cancel.clone())));
    spawn("raft-log", false, Box::pin(cluster::log_transitions(cluster.clone(), cancel.clone())));
    tracker.close();

    let outcome = tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down");
            // The HA loop still runs: it carries out the handover's switchover.
            crate::ha::handover::before_stop(&cluster, &shared, &cfg.name, &cfg.kube, cfg.handover_timeout).await;
            Ok(())
        }
        Some((name, err)) = fail_rx.recv() => Err(err.context(format!("task {name} failed"))),
    };
    // Tasks (the gRPC servers among them) stop first, so that nothing reaches Raft after it
    // stopped.
    cancel.cancel();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await.is_err() {
        tracing::warn!("some tasks did not stop within 10s");
    }
    if let Err(e) = node.raft.shutdown().await {
        tracing::warn!("Raft shutdown: {e}");
    }
    outcome.map_err(|e| match e.downcast::<crate::ha::ForeignData>() {
        Ok(f) => RunError::Start(StartError::Data(f.0)),
        Err(e) => RunError::Other(e),
    })
}

/// The guards of the gRPC and HTTP endpoints; says loudly at start-up what is unprotected.
fn guards(cfg: &AgentConfig) -> (Guard, Guard) {
    let tls = cfg.tls.material.is_some();
    let grpc = Guard::new(Surface::Grpc, &cfg.auth, tls, &cfg.grpc_listen, cfg.name.as_str());
    let http = Guard::new(Surface::Http, &cfg.auth, false, &cfg.http_listen, cfg.name.as_str());
    let no_token = cfg.auth.tokens.is_empty();
    if no_token && !tls {
        if grpc.open && !crate::auth::is_loopback(cfg.grpc_listen.rsplit_once(':').map_or("", |(h, _)| h)) {
            tracing::warn!(
                "auth.allow_unauthenticated is on and no token or TLS is configured: anyone who reaches {} can \
                 change the cluster",
                cfg.grpc_listen
            );
        } else if !grpc.open {
            tracing::warn!(
                "no auth.token and no tls.* configured: changes through {} are refused (it listens beyond \
                 loopback) and agent-to-agent traffic is not authenticated; set auth.token_file on every member \
                 (docs/security.md)",
                cfg.grpc_listen
            );
        }
    } else if !no_token && !tls && !grpc.open {
        tracing::info!(
            "the token travels unencrypted on {}; configure tls.* on untrusted networks (docs/security.md)",
            cfg.grpc_listen
        );
    }
    if no_token && !cfg.http_listen.is_empty() && !http.open {
        tracing::info!(
            "HTTP changes (POST /switchover, ...) are refused on {}: no auth.token is configured",
            cfg.http_listen
        );
    }
    (grpc, http)
}

/// Ends with an error when Raft stops on its own (a storage failure is fatal by design).
/// Watches the server metrics, which change only with Raft's state (the full metrics are sent
/// on every heartbeat); they close when the Raft core ends.
async fn watch_raft(node: RaftNode, cancel: CancellationToken) -> anyhow::Result<()> {
    use openraft::async_runtime::watch::WatchReceiver;
    let mut server = node.raft.server_metrics();
    let stopped = || node.raft.metrics().borrow_watched().running_state.clone().err();
    loop {
        if let Some(e) = stopped() {
            anyhow::bail!("Raft stopped: {e}");
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            changed = server.changed() => {
                if changed.is_err() && !cancel.is_cancelled() {
                    anyhow::bail!("Raft stopped: {}", stopped().map_or("its core ended".to_string(), |e| e.to_string()));
                }
            }
        }
    }
}
