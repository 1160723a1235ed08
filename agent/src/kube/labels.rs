//! The role label and epoch annotation on pods, patched conditionally.
//!
//! Every patch carries the `resourceVersion` it was computed from, so a concurrent writer
//! makes it fail with 409 (then it is recomputed) rather than overwrite. The epoch annotation
//! orders writers: nobody patches a pod that already carries a higher epoch than it knows, so
//! an agent of an older epoch never relabels after a newer one. Before labelling itself
//! primary, an agent strips the label from every other pod of its cluster still carrying it.

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use pgquorum_core::Epoch;
use pgquorum_core::ha::pod::{PodRole, Role};
use serde_json::json;
use tokio::time::Instant;

use super::client::api_code;
use super::{KubeSettings, status};

/// The label naming the cluster a pod belongs to.
pub const CLUSTER_LABEL: &str = "pgquorum.io/cluster";
/// The label carrying the role (`primary`, `replica`), absent when neither.
pub const ROLE_LABEL: &str = "pgquorum.io/role";
/// The annotation carrying the highest epoch that set the pod's role label.
pub const EPOCH_ANNOTATION: &str = "pgquorum.io/epoch";

/// Attempts at one conditional patch before giving up until the next round.
const CONFLICT_RETRIES: usize = 5;

/// Patches this agent's pod (and, for a new primary, stale primaries).
pub struct Labeller {
    pods: Api<Pod>,
    /// Needed by the event recorder.
    pub client: kube::Client,
    /// This agent's pod.
    pub pod: String,
    /// Its namespace.
    pub namespace: String,
    cluster: String,
}

/// The epoch annotation of a pod (0 when absent or unreadable).
fn epoch_of(pod: &Pod) -> Epoch {
    let v = pod.metadata.annotations.as_ref().and_then(|a| a.get(EPOCH_ANNOTATION));
    Epoch(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn label_of<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str)
}

impl Labeller {
    /// A labeller for the pod the settings name.
    pub fn new(client: kube::Client, s: &KubeSettings) -> Labeller {
        Labeller {
            pods: Api::namespaced(client.clone(), &s.namespace),
            client,
            pod: s.pod.clone(),
            namespace: s.namespace.clone(),
            cluster: s.cluster.clone(),
        }
    }

    /// Makes the pods say `want`. A primary label is only applied while `lease_until` lies
    /// ahead, and only after no other pod of the cluster carries it.
    pub async fn apply(&mut self, want: PodRole, lease_until: Option<Instant>) -> anyhow::Result<()> {
        if want.role == Some(Role::Primary) {
            self.strip_other_primaries(want.epoch).await?;
            if lease_until.is_none_or(|t| Instant::now() >= t) {
                bail!("not labelling {} primary: the lease ran out meanwhile", self.pod);
            }
        }
        let name = self.pod.clone();
        let role = want.role.map(Role::as_str);
        self.patch_pod(
            &name,
            want.epoch,
            |pod| label_of(pod, ROLE_LABEL) == role && label_of(pod, CLUSTER_LABEL).is_some(),
            json!({ CLUSTER_LABEL: self.cluster, ROLE_LABEL: role }),
        )
        .await
        .with_context(|| format!("labelling pod {name}"))
    }

    /// Drops the primary label of every other pod of this cluster.
    async fn strip_other_primaries(&mut self, epoch: Epoch) -> anyhow::Result<()> {
        let selector = format!("{CLUSTER_LABEL}={},{ROLE_LABEL}={}", self.cluster, Role::Primary.as_str());
        let list = self.pods.list(&ListParams::default().labels(&selector)).await.map_err(|e| {
            status_error(&e);
            anyhow::Error::new(e).context("listing pods labelled primary")
        })?;
        for pod in list.items {
            let Some(name) = pod.metadata.name.clone() else { continue };
            if name == self.pod {
                continue;
            }
            tracing::info!("removing the primary label from pod {name} (epoch {epoch} is ours)");
            self.patch_pod(
                &name,
                epoch,
                |p| label_of(p, ROLE_LABEL) != Some("primary"),
                json!({ ROLE_LABEL: null }),
            )
            .await
            .with_context(|| format!("removing the primary label of pod {name}"))?;
        }
        Ok(())
    }

    /// Reads `name`, and unless `done` already holds, merge-patches `labels` and the epoch
    /// annotation conditionally on the resourceVersion read; retries on 409.
    async fn patch_pod(
        &mut self,
        name: &str,
        epoch: Epoch,
        done: impl Fn(&Pod) -> bool,
        labels: serde_json::Value,
    ) -> anyhow::Result<()> {
        for _ in 0..CONFLICT_RETRIES {
            let pod = self.pods.get(name).await.map_err(|e| {
                status_error(&e);
                anyhow::Error::new(e).context("reading the pod")
            })?;
            let theirs = epoch_of(&pod);
            if done(&pod) && theirs >= epoch {
                return Ok(());
            }
            if theirs > epoch {
                bail!(
                    "pod {name} carries epoch {theirs}, newer than the epoch {epoch} this agent knows: leaving it \
                     alone until this agent catches up"
                );
            }
            let rv = pod.metadata.resource_version.clone().unwrap_or_default();
            let patch = json!({
                "metadata": {
                    "resourceVersion": rv,
                    "labels": labels,
                    "annotations": { EPOCH_ANNOTATION: epoch.0.to_string() },
                }
            });
            match self.pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    status::patched();
                    return Ok(());
                }
                Err(e) if api_code(&e) == Some(409) => continue,
                Err(e) => {
                    status_error(&e);
                    return Err(anyhow::Error::new(e).context("patching the pod"));
                }
            }
        }
        bail!("pod {name} kept changing under us ({CONFLICT_RETRIES} conflicts in a row)")
    }
}

fn status_error(e: &kube::Error) {
    if api_code(e) == Some(403) {
        // A warning, not an error: an API server that just restarted refuses until its RBAC
        // caches fill; a lasting refusal shows as labels delayed in /metrics.
        tracing::warn!(
            "the API server refused this agent's service account ({e}); the Role in deploy/kubernetes grants pods \
             get/list/watch/patch and events create"
        );
    }
}

/// The `controller-revision-hash` of every pod of the cluster, by member (pod) name.
pub async fn revisions(
    s: &KubeSettings,
) -> anyhow::Result<std::collections::BTreeMap<pgquorum_core::MemberName, String>> {
    let client = super::client::connect(s).await?;
    let pods: Api<Pod> = Api::namespaced(client, &s.namespace);
    let list = pods.list(&ListParams::default().labels(&format!("{CLUSTER_LABEL}={}", s.cluster))).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|p| {
            let name = pgquorum_core::MemberName::new(p.metadata.name.clone()?).ok()?;
            Some((name, label_of(p, "controller-revision-hash")?.to_string()))
        })
        .collect())
}
