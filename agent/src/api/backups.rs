//! The backup calls of the management API: which member takes a base backup (forwarded there),
//! its progress as a stream, listing and deleting stored backups, and restore points on the
//! primary. The work itself is `archive::backup`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use pgquorum_core::MemberName;
use pgquorum_core::ha::observation::Postgres;
use pgquorum_proto::management as pb;
use tonic::Status;

use super::ManagementApi;
use super::management::forwarded;
use crate::archive::Archive;
use crate::archive::backup;
use crate::postgres::sql::Sql;

/// The progress stream of `CreateBackup`.
pub type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::BackupProgress, Status>> + Send>>;

fn precondition(msg: impl Into<String>) -> Status {
    Status::failed_precondition(msg.into())
}

impl ManagementApi {
    fn archive(&self) -> Result<Arc<Archive>, Status> {
        self.shared.archive.get().cloned().ok_or_else(|| {
            precondition(format!(
                "{} does not archive: backups go to the WAL archive's store; set archive.enabled=true with \
                 archive.dir or archive.s3.bucket on every member",
                self.cluster.me.name
            ))
        })
    }

    fn layout(&self) -> Result<(Arc<Archive>, crate::archive::layout::Layout), Status> {
        let a = self.archive()?;
        let l = a.layout().ok_or_else(|| Status::unavailable("the cluster has not bootstrapped yet"))?;
        Ok((a, l))
    }

    /// The primary, if a grant is current.
    fn primary(&self) -> Option<MemberName> {
        self.cluster.applied().state.primary.as_ref().filter(|p| !p.expired).map(|p| p.member.clone())
    }

    /// Who takes a backup asked for with `req`: the member named, the primary when asked, else a
    /// streaming replica whose report is fresh, else the primary.
    fn backup_source(&self, req: &pb::CreateBackupRequest) -> Result<MemberName, Status> {
        if !req.member.is_empty() {
            return MemberName::new(&req.member).map_err(Status::invalid_argument);
        }
        let primary = self.primary();
        if req.primary {
            return primary
                .ok_or_else(|| Status::unavailable("no primary right now; see pgquorumctl status"));
        }
        let now = self.shared.now();
        let replica = self.shared.reports.all().into_iter().find(|s| {
            now.saturating_sub(s.received) < Duration::from_secs(2)
                && matches!(&s.report.postgres, Postgres::Running(p) if p.in_recovery && p.streaming)
        });
        replica
            .map(|s| s.report.member)
            .or(primary)
            .ok_or_else(|| Status::unavailable("no member runs Postgres right now; see pgquorumctl status"))
    }

    /// `CreateBackup`.
    pub(super) async fn create_backup_call(
        &self,
        req: pb::CreateBackupRequest,
    ) -> Result<ProgressStream, Status> {
        let source = self.backup_source(&req)?;
        if source != self.cluster.me.name {
            let mut client = self.member_client(source.as_str())?;
            let fwd = pb::CreateBackupRequest { member: source.to_string(), primary: req.primary };
            let stream = client.create_backup(fwd).await.map_err(forwarded)?.into_inner();
            return Ok(Box::pin(futures::StreamExt::map(stream, |r| r.map_err(forwarded))));
        }
        let policy = self.cluster.applied().state.config.backup.retention.clone();
        let (job, rx) = backup::start(&self.shared, self.cluster.clone(), policy)
            .map_err(|(code, msg)| Status::new(code, msg))?;
        let member = source.to_string();
        Ok(progress_stream(member, job, rx))
    }

    /// `ListBackups`.
    pub(super) async fn list_backups_call(&self) -> Result<pb::ListBackupsReply, Status> {
        let (a, layout) = self.layout()?;
        let all = backup::list(a.store.as_ref(), &layout).await.map_err(Status::unavailable)?;
        let manifest_json =
            all.iter().map(|m| serde_json::to_string(m).expect("manifests serialize")).collect();
        Ok(pb::ListBackupsReply { manifest_json })
    }

    /// `DeleteBackup`.
    pub(super) async fn delete_backup_call(
        &self,
        req: pb::DeleteBackupRequest,
    ) -> Result<pb::DeleteBackupReply, Status> {
        let (a, layout) = self.layout()?;
        backup::delete(a.store.as_ref(), &layout, &req.id).await.map_err(Status::not_found)?;
        Ok(pb::DeleteBackupReply {})
    }

    /// `CreateRestorePoint`: on the primary.
    pub(super) async fn restore_point_call(
        &self,
        req: pb::RestorePointRequest,
    ) -> Result<pb::RestorePointReply, Status> {
        let name = req.name.trim();
        if name.is_empty() || name.len() > 63 {
            return Err(Status::invalid_argument("a restore point name must be 1 to 63 characters"));
        }
        let primary = self
            .primary()
            .ok_or_else(|| Status::unavailable("no primary right now; see pgquorumctl status"))?;
        if primary != self.cluster.me.name {
            let mut client = self.member_client(primary.as_str())?;
            return client.create_restore_point(req).await.map(|r| r.into_inner()).map_err(forwarded);
        }
        let pg = self.shared.pg.get().ok_or_else(|| precondition("this member has no Postgres"))?;
        let mut sql = Sql::new(&pg.socket_dir, pg.port, &pg.superuser, &pg.secrets.superuser);
        let lsn = sql
            .restore_point(name)
            .await
            .map_err(|e| precondition(format!("pg_create_restore_point: {e}")))?;
        tracing::info!(name, %lsn, "restore point created");
        Ok(pb::RestorePointReply { lsn, member: primary.to_string() })
    }
}

/// Progress messages (at most two a second) until `job` ends, then one with the manifest (or
/// the error).
fn progress_stream(
    member: String,
    job: tokio::task::JoinHandle<Result<pgquorum_core::backup::Manifest, String>>,
    rx: tokio::sync::watch::Receiver<backup::Progress>,
) -> ProgressStream {
    let state = (Some(job), rx, member);
    Box::pin(futures::stream::unfold(state, |(job, mut rx, member)| async move {
        let mut job = job?;
        if job.is_finished() {
            let msg = match (&mut job).await {
                Ok(Ok(m)) => Ok(pb::BackupProgress {
                    done: m.size,
                    total: m.size,
                    manifest_json: serde_json::to_string(&m).expect("manifests serialize"),
                    member: member.clone(),
                }),
                Ok(Err(e)) => Err(precondition(format!("backup on {member} failed: {e}"))),
                Err(e) => Err(Status::internal(format!("backup task failed: {e}"))),
            };
            return Some((msg, (None, rx, member)));
        }
        for _ in 0..10 {
            if job.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let last = *rx.borrow_and_update();
        let msg = pb::BackupProgress {
            done: last.done,
            total: last.total,
            manifest_json: String::new(),
            member: member.clone(),
        };
        Some((Ok(msg), (Some(job), rx, member)))
    }))
}
