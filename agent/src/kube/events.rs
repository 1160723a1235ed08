//! Events on this member's pod (promotion, demotion, fencing, failover, switchover, clone,
//! rewind), so `kubectl describe pod` and `kubectl get events` tell the story.
//!
//! Queued while the API server is away (bounded: the oldest are dropped first) and sent in
//! order once it answers again.

use std::collections::VecDeque;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, PostParams};
use pgquorum_core::ha::pod::PodEvent;
use serde_json::json;

use super::labels::Labeller;

/// Events kept while they cannot be sent.
const MAX_QUEUED: usize = 64;

/// Events waiting to be sent.
#[derive(Default)]
pub struct Queue {
    pending: VecDeque<PodEvent>,
    uid: Option<String>,
}

impl Queue {
    /// Adds events, dropping the oldest beyond the bound.
    pub fn extend(&mut self, events: Vec<PodEvent>) {
        for e in events {
            tracing::info!(reason = e.kind.reason(), "{}", e.message);
            if self.pending.len() == MAX_QUEUED {
                self.pending.pop_front();
            }
            self.pending.push_back(e);
        }
    }

    /// Sends what is queued, in order; stops at the first failure (kept for the next round).
    pub async fn flush(&mut self, l: &Labeller) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.uid.is_none() {
            let pods: Api<Pod> = Api::namespaced(l.client.clone(), &l.namespace);
            let pod = pods.get(&l.pod).await.context("reading the pod to attach events")?;
            self.uid = pod.metadata.uid;
        }
        let events: Api<Event> = Api::namespaced(l.client.clone(), &l.namespace);
        while let Some(e) = self.pending.front() {
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            let body: Event = serde_json::from_value(json!({
                "metadata": { "generateName": format!("{}.", l.pod), "namespace": l.namespace },
                "involvedObject": {
                    "apiVersion": "v1", "kind": "Pod", "name": l.pod, "namespace": l.namespace, "uid": self.uid,
                },
                "reason": e.kind.reason(),
                "message": e.message,
                "type": if e.kind.warning() { "Warning" } else { "Normal" },
                "source": { "component": "pgquorum-agent" },
                "reportingComponent": "pgquorum.io/agent",
                "reportingInstance": l.pod,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }))
            .context("building an event")?;
            events
                .create(&PostParams::default(), &body)
                .await
                .with_context(|| format!("recording event {}", e.kind.reason()))?;
            self.pending.pop_front();
        }
        Ok(())
    }
}
