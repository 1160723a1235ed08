//! A kube-rs client for this agent: from the configured kubeconfig file (tests, bare metal
//! next to a cluster) or the pod's service account (in-cluster). rustls with ring; no OpenSSL.

use anyhow::Context;

use super::KubeSettings;

/// Connects to the API server the settings name.
pub async fn connect(settings: &KubeSettings) -> anyhow::Result<kube::Client> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kube.kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kube.kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster().context(
            "no kube.kubeconfig is set and the in-cluster service account is not available (is the agent running \
             in a pod with a service account token mounted?)",
        )?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// The HTTP status of an API error, if the error is one.
pub fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(resp) => Some(resp.code),
        _ => None,
    }
}
