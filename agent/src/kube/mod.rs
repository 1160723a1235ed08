//! Kubernetes as an effect of HA: the pod's role label (`pgquorum.io/role=primary|replica`),
//! its cluster label, the epoch annotation, and events on the pod.
//!
//! Fed from this member's published reports and the replicated state; what the pod should say
//! is decided by the core (`pgquorum_core::ha::pod`). Must never feed anything back into HA:
//! losing the API server delays labels and events, nothing else (the status says so).

mod client;
mod events;
mod labels;
pub mod settings;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use pgquorum_core::ha::observation::Report;
use pgquorum_core::ha::pod::{PodRole, pod_events, pod_role};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use settings::KubeSettings;

use crate::cluster::Cluster;
use crate::ha::Shared;
use labels::Labeller;

/// How often the labels are checked against the API server when nothing changed (another
/// writer, or a lost patch, is corrected within this).
const RESYNC: Duration = Duration::from_secs(10);
/// Longest wait between retries after API errors.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Keeps the pod's labels in line with this member's reports until `cancel`; then drops the
/// role label (best effort, bounded) so a stopping member is never selected.
pub async fn run(
    settings: KubeSettings,
    cluster: Cluster,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    status::activate();
    let mut reports = shared.published.subscribe();
    let mut backoff = Duration::from_millis(100);
    let mut labeller: Option<Labeller> = None;
    let mut events = events::Queue::default();
    let mut prev: Option<(Report, PodRole)> = None;
    let mut lease_until: Option<Instant> = None;
    let mut dirty = true;
    let mut next_check = Instant::now();
    loop {
        let report = reports.borrow_and_update().clone();
        if let Some(report) = report {
            let state = cluster.node.sm.current();
            let role = pod_role(&report, &state.state);
            let new = pod_events(prev.as_ref().map(|(r, p)| (r, *p)), &report, role, &state.state);
            events.extend(new);
            if prev.as_ref().is_none_or(|(_, p)| (p.role, p.epoch) != (role.role, role.epoch)) {
                dirty = true;
            }
            lease_until = role.lease_left.map(|left| Instant::now() + left);
            prev = Some((report, role));
        }
        if (dirty || Instant::now() >= next_check)
            && let Some((_, role)) = &prev
        {
            let role = *role;
            let outcome = match labeller.as_mut() {
                Some(l) => l.apply(role, lease_until).await.map(|()| true),
                None => match client::connect(&settings).await {
                    Ok(c) => {
                        labeller = Some(Labeller::new(c, &settings));
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            let sent = match labeller.as_ref() {
                Some(l) => events.flush(l).await,
                None => Ok(()),
            };
            match outcome.and(sent.map(|()| true)) {
                Ok(_) => {
                    status::synced(role);
                    dirty = false;
                    backoff = Duration::from_millis(100);
                    next_check = Instant::now() + RESYNC;
                }
                Err(e) => {
                    status::failed(role, &e);
                    tracing::warn!(
                        "pod labels are delayed (HA is not affected): {e}; retrying in {backoff:?}"
                    );
                    next_check = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    dirty = false;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = reports.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep_until(next_check) => {}
        }
    }
    if let Some(l) = labeller.as_mut() {
        let epoch = prev.as_ref().map(|(_, p)| p.epoch).unwrap_or_default();
        let gone = PodRole { role: None, epoch, lease_left: None };
        match tokio::time::timeout(Duration::from_secs(2), l.apply(gone, None)).await {
            Ok(Ok(())) => tracing::info!("removed the role label of pod {} before stopping", settings.pod),
            Ok(Err(e)) => tracing::warn!("could not remove the role label before stopping: {e}"),
            Err(_) => tracing::warn!("removing the role label before stopping took longer than 2s"),
        }
    }
    Ok(())
}

/// The StatefulSet revision (`controller-revision-hash`) of each pod of this cluster, by
/// member name (= pod name). Empty when the API server cannot be asked.
pub async fn revisions(
    settings: &KubeSettings,
) -> std::collections::BTreeMap<pgquorum_core::MemberName, String> {
    match labels::revisions(settings).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!("pod revisions unknown ({e:#}); the handover does not prefer updated pods");
            Default::default()
        }
    }
}
