//! SQL to the local Postgres over its Unix socket: one status query per tick, promotion,
//! slots, roles.

use std::path::Path;
use std::time::Duration;

use pgquorum_core::Lsn;
use pgquorum_core::Timeline;
use pgquorum_core::ha::observation::{Archiver, ReplicaConnection};
use tokio_postgres::{Client, Config, NoTls};

/// One status reading.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// Primary: current WAL position.
    pub current_lsn: Option<Lsn>,
    /// Standby: last received.
    pub receive_lsn: Option<Lsn>,
    /// Standby: last replayed.
    pub replay_lsn: Option<Lsn>,
    /// WAL receiver status (streaming, ...), if one runs.
    pub receiver: Option<String>,
    /// Current timeline (primary: of its insert position; standby: received, else checkpoint).
    pub timeline: Option<Timeline>,
    /// `synchronous_standby_names`.
    pub synchronous_standby_names: String,
    /// `pg_stat_replication`.
    pub replicas: Vec<ReplicaConnection>,
    /// Physical slots.
    pub slots: Vec<String>,
    /// Parameters waiting for a restart.
    pub pending_restart: Vec<String>,
    /// Standby: minimum recovery point and its timeline.
    pub min_recovery: Option<(Timeline, Lsn)>,
    /// `pg_stat_archiver`, when `archive_mode` is not `off`.
    pub archiver: Option<Box<Archiver>>,
}

const STATUS: &str = "
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
       pg_last_wal_receive_lsn()::text,
       pg_last_wal_replay_lsn()::text,
       (SELECT status FROM pg_stat_wal_receiver LIMIT 1),
       CASE WHEN pg_is_in_recovery() THEN
              coalesce((SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1),
                       (SELECT timeline_id FROM pg_control_checkpoint()))
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
       current_setting('synchronous_standby_names'),
       (SELECT coalesce(json_agg(json_build_object('name', application_name, 'state', state,
               'sync_state', sync_state, 'flush', flush_lsn::text, 'replay', replay_lsn::text)), '[]')
          FROM pg_stat_replication)::text,
       (SELECT coalesce(json_agg(slot_name), '[]') FROM pg_replication_slots WHERE slot_type = 'physical')::text,
       pg_conf_load_time()::text,
       (SELECT min_recovery_end_lsn::text FROM pg_control_recovery()),
       (SELECT min_recovery_end_timeline FROM pg_control_recovery()),
       CASE WHEN current_setting('archive_mode') <> 'off' THEN
              (SELECT json_build_object('archived_count', archived_count,
                      'last_archived_wal', coalesce(last_archived_wal, ''),
                      'last_archived_time', coalesce(last_archived_time::text, ''),
                      'failed_count', failed_count,
                      'last_failed_wal', coalesce(last_failed_wal, ''),
                      'last_failed_time', coalesce(last_failed_time::text, ''))
                 FROM pg_stat_archiver)::text END";

/// Parameters waiting for a restart. Scanning `pg_settings` is half the cost of [`STATUS`], and
/// the answer changes only when this session loads the configuration again (a reload or a
/// restart), so it is read once per `pg_conf_load_time()`.
const PENDING_RESTART: &str =
    "SELECT coalesce(json_agg(name), '[]')::text FROM pg_settings WHERE pending_restart";

fn lsn(v: Option<String>) -> Option<Lsn> {
    v.and_then(|s| s.parse().ok())
}

/// A connection to the local Postgres, re-established when lost.
pub struct Sql {
    config: Config,
    client: Option<Client>,
    /// The status query, prepared once per connection (parsed and planned once, not every
    /// reading).
    status_stmt: Option<tokio_postgres::Statement>,
    /// `pending_restart` as read at a configuration load time (`pg_conf_load_time()`).
    pending_restart: Option<(String, Vec<String>)>,
}

impl Sql {
    /// Connects as `user` through the socket in `socket_dir`.
    pub fn new(socket_dir: &Path, port: u16, user: &str, password: &str) -> Sql {
        let mut config = Config::new();
        config
            .host_path(socket_dir)
            .port(port)
            .user(user)
            .password(password)
            .dbname("postgres")
            .application_name("pgquorum-agent")
            .connect_timeout(Duration::from_secs(2));
        Sql { config, client: None, status_stmt: None, pending_restart: None }
    }

    /// Commits of this connection wait for the local WAL flush only, never for synchronous
    /// standbys (`synchronous_commit = local`, set at connection start so a reconnect keeps it).
    /// For the roles standbys need before they can connect at all: waiting for a standby's
    /// acknowledgement of them could never end.
    pub fn commit_locally(mut self) -> Sql {
        self.config.options("-c synchronous_commit=local");
        self
    }

    /// Forgets the connection (after Postgres stopped).
    pub fn reset(&mut self) {
        self.client = None;
        self.status_stmt = None;
        self.pending_restart = None;
    }

    async fn client(&mut self) -> Result<&Client, String> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.status_stmt = None;
            self.pending_restart = None;
            let (client, conn) = self.config.connect(NoTls).await.map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("just connected"))
    }

    async fn run<T>(
        &mut self,
        f: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, String> {
        let client = self.client().await?;
        let res = f(client).await;
        if res.is_err() {
            self.reset();
        }
        res.map_err(|e| match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        })
    }

    /// Reads the status.
    pub async fn status(&mut self) -> Result<Status, String> {
        let stmt = match self.status_stmt.clone() {
            Some(stmt) if self.client.as_ref().is_some_and(|c| !c.is_closed()) => stmt,
            _ => {
                let stmt = self.run(async |c| c.prepare(STATUS).await).await?;
                self.status_stmt = Some(stmt.clone());
                stmt
            }
        };
        let row = self.run(async |c| c.query_one(&stmt, &[]).await).await?;
        #[derive(serde::Deserialize)]
        struct Rep {
            name: Option<String>,
            state: Option<String>,
            sync_state: Option<String>,
            flush: Option<String>,
            replay: Option<String>,
        }
        let reps: Vec<Rep> = serde_json::from_str(row.get::<_, &str>(7)).map_err(|e| e.to_string())?;
        let tli: Option<i32> = row.get(5);
        let loaded: String = row.get::<_, Option<String>>(9).unwrap_or_default();
        let pending_restart = match &self.pending_restart {
            Some((at, names)) if *at == loaded => names.clone(),
            _ => {
                let text: String = self.run(async |c| c.query_one(PENDING_RESTART, &[]).await).await?.get(0);
                let names: Vec<String> = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                self.pending_restart = Some((loaded, names.clone()));
                names
            }
        };
        Ok(Status {
            in_recovery: row.get(0),
            current_lsn: lsn(row.get(1)),
            receive_lsn: lsn(row.get(2)),
            replay_lsn: lsn(row.get(3)),
            receiver: row.get(4),
            timeline: tli.and_then(|t| u32::try_from(t).ok()).map(Timeline),
            synchronous_standby_names: row.get(6),
            replicas: reps
                .into_iter()
                .map(|r| ReplicaConnection {
                    name: r.name.unwrap_or_default(),
                    state: r.state.unwrap_or_default(),
                    flush_lsn: lsn(r.flush),
                    replay_lsn: lsn(r.replay),
                    sync_state: r.sync_state.unwrap_or_default(),
                })
                .collect(),
            slots: serde_json::from_str(row.get::<_, &str>(8)).map_err(|e| e.to_string())?,
            pending_restart,
            min_recovery: match (lsn(row.get(10)), row.get::<_, Option<i32>>(11)) {
                (Some(l), Some(t)) if l.0 != 0 && t > 0 => Some((Timeline(t as u32), l)),
                _ => None,
            },
            archiver: match row.get::<_, Option<&str>>(12) {
                Some(text) => Some(serde_json::from_str(text).map_err(|e| format!("pg_stat_archiver: {e}"))?),
                None => None,
            },
        })
    }

    /// Promotes and waits for the end of recovery, then checkpoints so pg_rewind of the old
    /// primary sees the new timeline in the control file.
    pub async fn promote(&mut self) -> Result<(), String> {
        // pg_promote(wait => true) polls every 100 ms; poll more often ourselves.
        self.run(async |c| c.query_one("SELECT pg_promote(false)", &[]).await).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let recovering: bool =
                self.run(async |c| c.query_one("SELECT pg_is_in_recovery()", &[]).await).await?.get(0);
            if !recovering {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err("promotion did not finish within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.run(async |c| c.batch_execute("CHECKPOINT").await).await
    }

    /// Runs a checkpoint.
    pub async fn checkpoint(&mut self) -> Result<(), String> {
        self.run(async |c| c.batch_execute("CHECKPOINT").await).await
    }

    /// Reloads the configuration files.
    pub async fn reload(&mut self) -> Result<(), String> {
        self.run(async |c| c.batch_execute("SELECT pg_reload_conf()").await).await
    }

    /// Creates the missing `pgquorum_` slots of `wanted` and drops inactive ones not wanted.
    pub async fn sync_slots(&mut self, wanted: &[String]) -> Result<(), String> {
        let existing: Vec<(String, bool)> = self
            .run(async |c| {
                c.query(
                    "SELECT slot_name::text, active FROM pg_replication_slots WHERE slot_type = 'physical'",
                    &[],
                )
                .await
            })
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for w in wanted {
            if !existing.iter().any(|(n, _)| n == w) {
                let w = w.clone();
                self.run(async |c| {
                    c.execute("SELECT pg_create_physical_replication_slot($1, true)", &[&w]).await
                })
                .await?;
            }
        }
        for (name, active) in existing {
            if name.starts_with("pgquorum_") && !active && !wanted.contains(&name) {
                self.run(async |c| c.execute("SELECT pg_drop_replication_slot($1)", &[&name]).await).await?;
            }
        }
        Ok(())
    }

    /// Creates `role` (LOGIN, and REPLICATION when asked) if it does not exist. An existing
    /// role is left alone: a write here could wait on a synchronous standby.
    pub async fn ensure_role(&mut self, role: &str, password: &str, replication: bool) -> Result<(), String> {
        let exists: bool = self
            .run(async |c| {
                c.query_one("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", &[&role]).await
            })
            .await?
            .get(0);
        if exists {
            return Ok(());
        }
        let verb = "CREATE";
        let attrs = if replication { "LOGIN REPLICATION" } else { "LOGIN" };
        // format() quotes the name and the password on the server; nothing is spliced here.
        let stmt: String = self
            .run(async |c| {
                c.query_one(
                    &format!("SELECT format('{verb} ROLE %I WITH {attrs} PASSWORD %L', $1::text, $2::text)"),
                    &[&role, &password],
                )
                .await
            })
            .await?
            .get(0);
        self.run(async |c| c.batch_execute(&stmt).await).await
    }

    /// The size of every database together, in bytes (a base backup's progress estimate).
    pub async fn database_bytes(&mut self) -> Result<u64, String> {
        let n: i64 = self
            .run(async |c| {
                c.query_one("SELECT sum(pg_database_size(oid))::bigint FROM pg_database", &[]).await
            })
            .await?
            .get(0);
        Ok(n.max(0) as u64)
    }

    /// Creates a named restore point (`pg_create_restore_point`); returns its position.
    pub async fn restore_point(&mut self, name: &str) -> Result<String, String> {
        self.run(async |c| c.query_one("SELECT pg_create_restore_point($1)::text", &[&name]).await)
            .await
            .map(|r| r.get(0))
    }

    /// Makes `role` log in with `password` and `attrs` (`SUPERUSER`, `REPLICATION`), creating
    /// it when missing (a restored cluster keeps its source's roles and passwords; its agents
    /// must log in with their own).
    pub async fn ensure_login(&mut self, role: &str, password: &str, attrs: &str) -> Result<(), String> {
        let exists: bool = self
            .run(async |c| {
                c.query_one("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", &[&role]).await
            })
            .await?
            .get(0);
        let verb = if exists { "ALTER" } else { "CREATE" };
        let stmt: String = self
            .run(async |c| {
                c.query_one(
                    &format!(
                        "SELECT format('{verb} ROLE %I WITH {attrs} LOGIN PASSWORD %L', $1::text, $2::text)"
                    ),
                    &[&role, &password],
                )
                .await
            })
            .await?
            .get(0);
        self.run(async |c| c.batch_execute(&stmt).await).await
    }

    /// Whether the server is in recovery.
    pub async fn in_recovery(&mut self) -> Result<bool, String> {
        Ok(self.run(async |c| c.query_one("SELECT pg_is_in_recovery()", &[]).await).await?.get(0))
    }

    /// Creates database `db` owned by `owner` if missing.
    pub async fn ensure_database(&mut self, db: &str, owner: &str) -> Result<(), String> {
        let exists: bool = self
            .run(async |c| {
                c.query_one("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", &[&db]).await
            })
            .await?
            .get(0);
        if exists {
            return Ok(());
        }
        let stmt: String = self
            .run(async |c| {
                c.query_one(
                    "SELECT format('CREATE DATABASE %I OWNER %I', $1::text, $2::text)",
                    &[&db, &owner],
                )
                .await
            })
            .await?
            .get(0);
        self.run(async |c| c.batch_execute(&stmt).await).await
    }
}
