//! Configuration keys of the Kubernetes side (pod labels and events): `kube.*`; and how a
//! stopping agent hands over first (`shutdown.*`, for pods and systemd alike).
//!
//! `POD_NAME` and `POD_NAMESPACE` (the downward API's usual names) set `kube.pod` and
//! `kube.namespace` too (see `source::from_env`). Must not connect to anything.

use std::path::PathBuf;

use super::keys::KeyDef;

/// Keys under `kube.`.
pub const KUBE_KEYS: &[KeyDef] = &[
    KeyDef {
        key: "kube.enabled",
        default: "auto",
        help: "Label this member's pod with its role (pgquorum.io/role=primary|replica) and record events on it. \
               auto: when kube.pod and kube.namespace are known; true: required (an error when they are not); \
               false: never.",
        set: |c, k, v| {
            c.kube.enabled = match v.trim() {
                "auto" | "" => None,
                "true" => Some(true),
                "false" => Some(false),
                other => return Err(format!("{k}: {other:?} must be auto, true or false")),
            };
            Ok(())
        },
    },
    KeyDef {
        key: "kube.pod",
        default: "",
        help: "Name of this member's pod. Defaults to the POD_NAME environment variable (downward API).",
        set: |c, _, v| {
            c.kube.pod = v.trim().to_string();
            Ok(())
        },
    },
    KeyDef {
        key: "kube.namespace",
        default: "",
        help: "Namespace of this member's pod. Defaults to the POD_NAMESPACE environment variable (downward API).",
        set: |c, _, v| {
            c.kube.namespace = v.trim().to_string();
            Ok(())
        },
    },
    KeyDef {
        key: "kube.kubeconfig",
        default: "",
        help: "A kubeconfig file to reach the API server with. Empty: the pod's service account (in-cluster).",
        set: |c, _, v| {
            c.kube.kubeconfig = Some(PathBuf::from(v.trim())).filter(|p| !p.as_os_str().is_empty());
            Ok(())
        },
    },
    KeyDef {
        key: "shutdown.handover_timeout",
        default: "30s",
        help: "On SIGTERM, how long the primary's agent may spend handing the primary to a replica (a \
               switchover) and a Raft leader handing over leadership, before stopping regardless. Keep it below the \
               pod's terminationGracePeriodSeconds (or systemd's TimeoutStopSec) minus the time Postgres needs to \
               stop. 0 disables the handover.",
        set: |c, k, v| {
            c.handover_timeout = pgquorum_core::duration::parse(v).map_err(|e| format!("{k}: {e}"))?;
            Ok(())
        },
    },
];
