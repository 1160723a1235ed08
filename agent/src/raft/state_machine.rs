//! The Raft state machine: applies committed commands to `ClusterState`, builds, persists and
//! installs snapshots, and publishes every applied state on a watch channel.
//!
//! The state lives in memory; durability comes from the log plus snapshots (`raft/snapshot`,
//! CRC framed, replaced atomically), which is why openraft's leader restore is turned off.
//! Must not interpret commands itself: `ClusterState::apply` (in the core) does.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use pgquorum_core::state::{ClusterState, CommandOk};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::record;
use super::types::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};

/// What the rest of the agent sees: the applied cluster state and membership.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// The replicated cluster state.
    pub state: ClusterState,
    /// The membership as of `last_applied`.
    pub membership: StoredMembership,
    /// The last applied log id.
    pub last_applied: Option<LogId>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    /// JSON of `ClusterState`.
    data: Vec<u8>,
}

struct Inner {
    applied: Applied,
    current: Option<StoredSnapshot>,
}

/// The state machine. Clones share state (openraft takes one, the snapshot builder another).
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    path: Arc<PathBuf>,
    tx: Arc<watch::Sender<Arc<Applied>>>,
}

impl StateMachine {
    /// Opens the state machine, restoring from `dir/snapshot` when present.
    pub fn open(dir: &Path) -> Result<StateMachine, String> {
        let path = dir.join("snapshot");
        let mut applied = Applied::default();
        let mut current = None;
        match std::fs::read(&path) {
            Ok(buf) => {
                let snap = decode_snapshot(&buf).map_err(|e| {
                    format!(
                        "Raft snapshot {} is damaged ({e}). Stop this agent, move {} aside and start it again: \
                         it rejoins as a new node and copies the state from the leader",
                        path.display(),
                        dir.display()
                    )
                })?;
                applied.state = serde_json::from_slice(&snap.data).map_err(|e| {
                    format!("Raft snapshot {} holds an unreadable state: {e}", path.display())
                })?;
                applied.membership = snap.meta.last_membership.clone();
                applied.last_applied = snap.meta.last_log_id;
                current = Some(snap);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read Raft snapshot {}: {e}", path.display())),
        }
        let (tx, _) = watch::channel(Arc::new(applied.clone()));
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(Inner { applied, current })),
            path: Arc::new(path),
            tx: Arc::new(tx),
        })
    }

    /// A receiver that sees every newly applied state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Applied>> {
        self.tx.subscribe()
    }

    /// The latest applied state.
    pub fn current(&self) -> Arc<Applied> {
        self.tx.borrow().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("state machine lock is never poisoned: no panics while held")
    }

    fn publish(&self, applied: &Applied) {
        self.tx.send_replace(Arc::new(applied.clone()));
    }

    async fn persist(&self, snap: &StoredSnapshot) -> io::Result<()> {
        let bytes = record::frame(&serde_json::to_vec(snap)?);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || record::replace_durable(&path, &bytes))
            .await
            .map_err(io::Error::other)?
    }
}

fn decode_snapshot(buf: &[u8]) -> Result<StoredSnapshot, String> {
    let scan = record::scan(buf);
    match (scan.records.as_slice(), scan.damage) {
        ([one], None) => serde_json::from_slice(one).map_err(|e| format!("undecodable: {e}")),
        (_, Some(d)) => Err(format!("{} at byte {}", d.what, d.offset)),
        _ => Err("expected exactly one record".into()),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let snap = {
            let inner = self.lock();
            let a = &inner.applied;
            let meta = SnapshotMeta { last_log_id: a.last_applied, last_membership: a.membership.clone() };
            StoredSnapshot { meta, data: serde_json::to_vec(&a.state)? }
        };
        self.persist(&snap).await?;
        let out = Snapshot { meta: snap.meta.clone(), snapshot: snap.data.clone() };
        self.lock().current = Some(snap);
        Ok(out)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let inner = self.lock();
        Ok((inner.applied.last_applied, inner.applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let result = {
                let mut inner = self.lock();
                inner.applied.last_applied = Some(entry.log_id);
                let result = match entry.payload {
                    EntryPayload::Blank => Ok(CommandOk::Done),
                    EntryPayload::Normal(cmd) => inner.applied.state.apply(cmd),
                    EntryPayload::Membership(m) => {
                        inner.applied.membership = StoredMembership::new(Some(entry.log_id), m);
                        Ok(CommandOk::Done)
                    }
                };
                self.publish(&inner.applied);
                result
            };
            if let Some(r) = responder {
                r.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Vec<u8>) -> Result<(), io::Error> {
        let state: ClusterState = serde_json::from_slice(&snapshot)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("snapshot from leader: {e}")))?;
        let snap = StoredSnapshot { meta: meta.clone(), data: snapshot };
        self.persist(&snap).await?;
        let mut inner = self.lock();
        inner.applied =
            Applied { state, membership: meta.last_membership.clone(), last_applied: meta.last_log_id };
        inner.current = Some(snap);
        self.publish(&inner.applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.lock().current.as_ref().map(|s| Snapshot { meta: s.meta.clone(), snapshot: s.data.clone() }))
    }
}
