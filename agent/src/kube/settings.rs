//! Where the agent finds its pod and the API server (`kube.*` keys, or the downward API's
//! `POD_NAME` / `POD_NAMESPACE`). Must not connect to anything.

use std::path::PathBuf;

/// The Kubernetes side of one agent; labelling is on when `pod` and `namespace` are known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeSettings {
    /// `kube.enabled`: `Some(false)` turns labelling off even inside a pod; `Some(true)`
    /// requires the pod and namespace; `None` (auto) labels when both are known.
    pub enabled: Option<bool>,
    /// This member's pod.
    pub pod: String,
    /// Its namespace.
    pub namespace: String,
    /// A kubeconfig file; empty: the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// The value of the `pgquorum.io/cluster` label (the cluster's name).
    pub cluster: String,
}

impl KubeSettings {
    /// Whether the agent labels its pod.
    pub fn active(&self) -> bool {
        self.enabled != Some(false) && !self.pod.is_empty() && !self.namespace.is_empty()
    }

    /// Problems with the settings, as configuration errors.
    pub fn check(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.enabled == Some(true) && (self.pod.is_empty() || self.namespace.is_empty()) {
            errs.push(
                "kube.enabled is true but kube.pod or kube.namespace is empty: set them, or pass POD_NAME and \
                 POD_NAMESPACE through the downward API (deploy/kubernetes does)"
                    .to_string(),
            );
        }
        for (key, v) in [("kube.pod", &self.pod), ("kube.namespace", &self.namespace)] {
            let ok = v.len() <= 253
                && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !ok {
                errs.push(format!(
                    "{key}: {v:?} is not a Kubernetes object name (lower-case letters, digits, '-' and '.')"
                ));
            }
        }
        if let Some(p) = &self.kubeconfig
            && !p.is_file()
        {
            errs.push(format!(
                "kube.kubeconfig: {} is not a readable file; point it at a kubeconfig or leave it empty to use the \
                 pod's service account",
                p.display()
            ));
        }
        errs
    }
}
