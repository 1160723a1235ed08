//! Whether the pod's labels are in line with the member's role, for status and metrics.
//!
//! One per process (an agent labels exactly one pod). Written only by the kube task.

use std::sync::Mutex;
use std::time::Duration;

use pgquorum_core::ha::pod::PodRole;
use tokio::time::Instant;

/// A snapshot of the labelling state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KubeStatus {
    /// Labelling is configured for this agent.
    pub active: bool,
    /// The role label as last applied ("primary", "replica", "" for none).
    pub applied: String,
    /// The labels match the member's role.
    pub in_sync: bool,
    /// How long the labels have been out of line (zero when in sync).
    pub delayed: Duration,
    /// The last API error, while the labels are delayed.
    pub last_error: String,
    /// Successful label patches.
    pub patches: u64,
    /// Failed API calls.
    pub errors: u64,
}

struct Inner {
    status: KubeStatus,
    since: Option<Instant>,
}

static STATE: Mutex<Option<Inner>> = Mutex::new(None);

fn with(f: impl FnOnce(&mut Inner)) {
    let mut g = STATE.lock().expect("kube status lock is never poisoned");
    let inner = g.get_or_insert_with(|| Inner {
        status: KubeStatus { active: true, ..KubeStatus::default() },
        since: None,
    });
    f(inner);
}

/// Labelling is configured: the status reports it from now on.
pub fn activate() {
    with(|_| {});
}

/// The labels now match `role`.
pub fn synced(role: PodRole) {
    with(|i| {
        i.status.applied = role.role.map(|r| r.as_str().to_string()).unwrap_or_default();
        i.status.in_sync = true;
        i.status.last_error.clear();
        i.since = None;
    });
}

/// A label patch was sent.
pub fn patched() {
    with(|i| i.status.patches += 1);
}

/// Applying `role` failed with `err`.
pub fn failed(_role: PodRole, err: &anyhow::Error) {
    with(|i| {
        i.status.in_sync = false;
        i.status.errors += 1;
        i.status.last_error = format!("{err:#}");
        i.since.get_or_insert_with(Instant::now);
    });
}

/// The current state (`active` false when labelling is not configured).
pub fn get() -> KubeStatus {
    let g = STATE.lock().expect("kube status lock is never poisoned");
    match g.as_ref() {
        Some(i) => {
            let mut s = i.status.clone();
            s.delayed = i.since.map(|t| t.elapsed()).unwrap_or_default();
            s
        }
        None => KubeStatus::default(),
    }
}
