//! End-to-end tests of base backups and restore with real agents and Postgres: a backup taken
//! from a replica, then new clusters restored from it to a time, a named restore point, an LSN
//! and the latest point after a switchover — each holding exactly the rows written before its
//! target. The restored cluster's second member clones from the first, and it archives under
//! its own name, never into its source's folder.

use std::path::Path;
use std::time::Duration;

use pgquorum_tests::{Cluster, ClusterOptions, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

fn archive_dir() -> tempfile::TempDir {
    pgquorum_tests::secrets::agents_tempdir("pgq-backup-")
}

fn healthy(c: &mut Cluster) -> String {
    let p = c.wait_for_primary(T);
    let rest: Vec<String> = c.agents.iter().map(|a| a.name.clone()).filter(|n| *n != p).collect();
    let names: Vec<&str> = rest.iter().map(String::as_str).collect();
    c.wait_for_streaming(&names, T);
    p
}

/// The rows of table `t` on `c`'s primary, in order.
fn rows(c: &mut Cluster) -> Vec<String> {
    let p = c.wait_for_primary(T);
    let pg = c.pg(&p);
    wait_for("the restored primary to answer", T, || Ok(pg.value("SELECT 1").ok().map(|_| ())));
    pg.query("SELECT v FROM t ORDER BY id").expect("rows").into_iter().filter_map(|r| r[0].clone()).collect()
}

fn insert(c: &Cluster, p: &str, v: &str) {
    c.pg(p).query(&format!("INSERT INTO t (v) VALUES ('{v}')")).expect("insert");
}

/// Ends the current segment on `p` and waits until the archive holds everything finished.
fn archive_everything(c: &Cluster, p: &str) {
    c.pg(p).query("SELECT pg_switch_wal()").expect("switch");
    let status = c.agent(p).pgdata().join("pg_wal/archive_status");
    wait_for(&format!("{p} to archive every finished WAL file"), Duration::from_secs(180), || {
        let left = std::fs::read_dir(&status)
            .map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".ready")).count())
            .unwrap_or(0);
        Ok((left == 0).then_some(()))
    });
}

/// Starts a cluster restored from `archive` (cluster `e2e`) with the extra `settings`.
fn restored(name: &str, members: usize, archive: &Path, settings: &[String]) -> Cluster {
    let mut s = vec![format!("restore.from={}", archive.display()), "restore.cluster=e2e".to_string()];
    s.extend(settings.iter().cloned());
    Cluster::start(ClusterOptions { members, cluster: name.into(), settings: s, ..Default::default() })
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).expect("under").display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn restores_to_a_time_a_restore_point_an_lsn_and_the_latest_point_after_a_switchover() {
    let archive = archive_dir();
    let opts = ClusterOptions {
        settings: vec!["archive.enabled=true".into(), format!("archive.dir={}", archive.path().display())],
        ..Default::default()
    };
    let mut c = Cluster::start(opts);
    let first = healthy(&mut c);
    c.pg(&first).query("CREATE TABLE t (id serial PRIMARY KEY, v text)").expect("table");

    // A backup from a replica, by default.
    let b = c.agent(&first).ctl_json(&["backup", "create"]).expect("backup create");
    assert_ne!(b["member"], first.as_str(), "the backup should come from a replica: {b}");
    assert!(b["size"].as_u64().unwrap_or(0) > 1 << 20, "{b}");
    let list = c.agent(&first).ctl_json(&["backup", "list"]).expect("backup list");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], b["id"]);
    wait_for("status to show the newest backup", T, || {
        let st = c.agent(&first).ctl_json(&["status"]).map_err(|e| e.to_string())?;
        Ok((st["backup"]["last_backup"] == b["id"] && st["backup"]["last_backup_member"] == b["member"])
            .then_some(()))
    });

    insert(&c, &first, "A");
    let at = c
        .pg(&first)
        .value("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        .expect("time")
        .expect("a time");
    std::thread::sleep(Duration::from_millis(50));
    insert(&c, &first, "B");
    let point = c.agent(&first).ctl_json(&["backup", "restore-point", "before-c"]).expect("restore point");
    assert_eq!(point["member"], first.as_str(), "{point}");
    insert(&c, &first, "C");
    let lsn = c.pg(&first).value("SELECT pg_current_wal_lsn()").expect("lsn").expect("an lsn");
    insert(&c, &first, "D");

    // A switchover, then a row on the new primary.
    let target = c.agents.iter().map(|a| a.name.clone()).find(|n| *n != first).expect("a replica");
    c.agent(&target).ctl_json(&["switchover", "--to", &target]).expect("switchover");
    assert_eq!(healthy(&mut c), target);
    insert(&c, &target, "E");
    archive_everything(&c, &target);
    let source_files = files_under(&archive.path().join("e2e"));

    let mut r = restored("r-time", 1, archive.path(), &[format!("restore.target_time={at}")]);
    assert_eq!(rows(&mut r), ["A"], "restore to {at}");
    drop(r);
    let mut r = restored("r-name", 1, archive.path(), &["restore.target_name=before-c".into()]);
    assert_eq!(rows(&mut r), ["A", "B"], "restore to the restore point before-c");
    drop(r);
    let mut r = restored("r-lsn", 1, archive.path(), &[format!("restore.target_lsn={lsn}")]);
    assert_eq!(rows(&mut r), ["A", "B", "C"], "restore to {lsn}");
    drop(r);

    // The latest point, into a two-member cluster that archives into the same directory under
    // its own name: the second member clones from the restored one.
    let own = ["archive.enabled=true".to_string(), format!("archive.dir={}", archive.path().display())];
    let mut r = restored("r-latest", 2, archive.path(), &own);
    assert_eq!(rows(&mut r), ["A", "B", "C", "D", "E"], "restore to the latest point");
    let p = healthy(&mut r);
    let other = r.agents.iter().map(|a| a.name.clone()).find(|n| *n != p).expect("second member");
    wait_for("the clone to have every row", T, || {
        let got = r.pg(&other).value("SELECT count(*) FROM t").ok().flatten();
        Ok((got.as_deref() == Some("5")).then_some(()))
    });
    insert(&r, &p, "F");
    archive_everything(&r, &p);
    let new_files = files_under(&archive.path().join("r-latest"));
    assert!(
        new_files.iter().any(|f| f.ends_with(".history")),
        "the restored cluster archives its timeline: {new_files:?}"
    );
    assert_eq!(
        files_under(&archive.path().join("e2e")),
        source_files,
        "the restored cluster wrote into its source"
    );
}

#[test]
fn a_restore_that_would_archive_into_its_source_is_refused_before_anything_starts() {
    let archive = archive_dir();
    // Same directory, same cluster name: refused before anything starts.
    let out = std::process::Command::new(pgquorum_tests::bins::bin("pgquorum-agent"))
        .args(["check-config", "--set", "name=m1", "--set", "cluster=e2e", "--set", "peers=m1=127.0.0.1:1"])
        .arg("--set")
        .arg(format!("data_dir={}", archive.path().join("m1").display()))
        .args(["--set", "archive.enabled=true", "--set"])
        .arg(format!("archive.dir={}", archive.path().display()))
        .arg("--set")
        .arg(format!("restore.from={}", archive.path().display()))
        .output()
        .expect("run check-config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {err}");
    assert!(err.contains("must never write into its source"), "{err}");
}

/// The backup ids `backup list` shows on `agent`.
fn backup_ids(c: &Cluster, agent: &str) -> Vec<String> {
    let list = c.agent(agent).ctl_json(&["backup", "list"]).expect("backup list");
    list.as_array().expect("a list").iter().map(|m| m["id"].as_str().expect("id").to_string()).collect()
}

#[test]
fn s3_retention_keeps_a_window_whole_then_the_newest_two_with_their_wal_and_the_oldest_kept_restores() {
    let Some(moto) = pgquorum_tests::moto::Moto::start() else { return };
    moto.create_bucket("bkp");
    let secrets = pgquorum_tests::secrets::SecretDir::new();
    let secret = secrets.write("s3-secret", &format!("{}\n", pgquorum_tests::moto::SECRET_KEY));
    let mut settings = moto.agent_settings("bkp", &secret);
    settings.push("archive.s3.prefix=prod".into());
    settings.push("bootstrap.backup.retention=1h".into());
    let mut c =
        Cluster::start(ClusterOptions { members: 1, settings: settings.clone(), ..Default::default() });
    let p = c.wait_for_primary(T);
    c.pg(&p).query("CREATE TABLE t (id serial PRIMARY KEY, v text)").expect("table");
    let mut made = Vec::new();
    for v in ["one", "two", "three"] {
        made.push(backup_after_a_row(&c, &p, v));
    }
    let ids =
        |made: &[Value]| made.iter().map(|b| b["id"].as_str().expect("id").to_string()).collect::<Vec<_>>();
    assert_eq!(backup_ids(&c, &p), ids(&made), "a 1h window keeps every backup of the last hour");
    let wal_before = moto.keys("bkp", "prod/e2e/").iter().filter(|k| k.contains("/wal/")).count();

    c.agent(&p).ctl_json(&["config", "set", "backup.retention=2"]).expect("config set");
    made.push(backup_after_a_row(&c, &p, "four"));
    let all = ids(&made);
    assert_eq!(backup_ids(&c, &p), all[2..], "retention 2 keeps the newest two");
    let keys = moto.keys("bkp", "prod/e2e/");
    for gone in &all[..2] {
        assert!(!keys.iter().any(|k| k.contains(gone.as_str())), "backup {gone}'s objects remain: {keys:?}");
    }
    // No WAL segment before the oldest kept backup's start remains; everything after it does.
    let start: u64 = {
        let l = made[2]["start_lsn"].as_str().expect("lsn");
        let (hi, lo) = l.split_once('/').expect("X/Y");
        (u64::from_str_radix(hi, 16).expect("hex") << 32 | u64::from_str_radix(lo, 16).expect("hex")) >> 24
    };
    let segments: Vec<u64> = keys
        .iter()
        .filter_map(|k| k.split("/wal/").nth(1))
        .filter(|n| n.len() == 24)
        .map(|n| {
            u64::from_str_radix(&n[8..16], 16).expect("hex") * 256
                + u64::from_str_radix(&n[16..24], 16).expect("hex")
        })
        .collect();
    assert!(segments.len() < wal_before, "no WAL was removed with the expired backups");
    assert!(segments.iter().all(|s| *s >= start), "WAL before segment {start:X} remains: {segments:X?}");
    assert!(segments.contains(&start), "the oldest kept backup's own start segment is gone: {segments:X?}");

    // A new cluster from the oldest kept backup, to its end (the LSN it names).
    let end = made[2]["end_lsn"].as_str().expect("lsn").to_string();
    let mut r = restored_s3(&settings, &all[2], &end);
    assert_eq!(rows(&mut r), ["one", "two", "three"], "restore from {} to {end}", all[2]);
}

/// Inserts `v`, archives it, and takes a backup on the primary `p` (one member).
fn backup_after_a_row(c: &Cluster, p: &str, v: &str) -> Value {
    insert(c, p, v);
    archive_everything(c, p);
    // Ids are start times in whole seconds.
    std::thread::sleep(Duration::from_millis(1100));
    let b = c.agent(p).ctl_json(&["backup", "create"]).expect("backup create");
    assert_eq!(b["member"], p, "one member: the primary takes it");
    b
}

fn restored_s3(settings: &[String], backup: &str, lsn: &str) -> Cluster {
    let mut s: Vec<String> =
        settings.iter().filter(|s| !s.starts_with("archive.s3.prefix")).cloned().collect();
    s.push("archive.s3.prefix=restored".into());
    s.push("restore.from=s3://bkp/prod".into());
    s.push("restore.cluster=e2e".into());
    s.push(format!("restore.backup={backup}"));
    s.push(format!("restore.target_lsn={lsn}"));
    Cluster::start(ClusterOptions { members: 1, cluster: "r-s3".into(), settings: s, ..Default::default() })
}

#[test]
fn a_damaged_wal_file_or_backup_stops_the_restore_naming_it_and_leaves_no_data_directory() {
    let archive = archive_dir();
    let opts = ClusterOptions {
        members: 1,
        settings: vec!["archive.enabled=true".into(), format!("archive.dir={}", archive.path().display())],
        ..Default::default()
    };
    let mut c = Cluster::start(opts);
    let p = c.wait_for_primary(T);
    c.pg(&p).query("CREATE TABLE t (id serial PRIMARY KEY, v text)").expect("table");
    let b = c.agent(&p).ctl_json(&["backup", "create"]).expect("backup create");
    insert(&c, &p, "after");
    archive_everything(&c, &p);

    // A flipped byte in the first WAL segment after the backup's end.
    let end = b["end_lsn"].as_str().expect("lsn").to_string();
    let wal_dir = archive.path().join(format!("e2e/{}/wal", b["system_identifier"]));
    let mut names: Vec<String> = std::fs::read_dir(&wal_dir)
        .expect("wal dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect();
    names.sort();
    let end_seg = {
        let (hi, lo) = end.split_once('/').expect("X/Y");
        (u64::from_str_radix(hi, 16).expect("hex") << 32 | u64::from_str_radix(lo, 16).expect("hex")) >> 24
    };
    let victim = names
        .iter()
        .find(|n| u64::from_str_radix(&n[16..24], 16).expect("hex") > end_seg)
        .expect("a segment after the backup")
        .clone();
    flip_a_byte(&wal_dir.join(&victim));
    let mut r = restored("r-bad-wal", 1, archive.path(), &[]);
    let agent = r.agents[0].name.clone();
    wait_for("the restore to stop naming the damaged segment", T, || {
        let log = r.agent(&agent).log_text();
        Ok((log.contains(&victim) && log.contains("damaged")).then_some(()))
    });
    assert!(!r.agent(&agent).pgdata().exists(), "a failed restore left a data directory");
    r.agent_mut(&agent).kill9();
    drop(r);

    // A flipped byte in the backup itself.
    let data = archive.path().join(format!(
        "e2e/{}/{}",
        b["system_identifier"],
        b["data_key"].as_str().expect("key")
    ));
    flip_a_byte(&data);
    let mut r = restored("r-bad-backup", 1, archive.path(), &[]);
    let agent = r.agents[0].name.clone();
    let id = b["id"].as_str().expect("id").to_string();
    wait_for("the restore to stop naming the damaged backup", T, || {
        let log = r.agent(&agent).log_text();
        Ok(log.contains(&format!("backup {id} is damaged")).then_some(()))
    });
    assert!(!r.agent(&agent).pgdata().exists(), "a failed restore left a data directory");
    r.agent_mut(&agent).kill9();
}

fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(path, bytes).expect("write back");
}

/// The status's `backup` section: (last due, member, outcome).
fn last_scheduled(c: &Cluster, via: &str) -> Option<(String, String, String)> {
    let s = c.agent(via).ctl_json(&["status"]).ok()?;
    let b = &s["backup"];
    Some((
        b["last_due"].as_str()?.to_string(),
        b["last_member"].as_str()?.to_string(),
        b["last_outcome"].as_str()?.to_string(),
    ))
}

#[test]
fn a_scheduled_backup_runs_once_per_due_time_across_a_raft_leader_failover() {
    let archive = archive_dir();
    let opts = ClusterOptions {
        settings: vec![
            "archive.enabled=true".into(),
            format!("archive.dir={}", archive.path().display()),
            "bootstrap.backup.schedule=* * * * *".into(),
        ],
        ..Default::default()
    };
    let mut c = Cluster::start(opts);
    let p = healthy(&mut c);
    let minute = Duration::from_secs(150);
    let (due1, taker1, _) = wait_for("a scheduled backup to be taken", minute, || {
        Ok(last_scheduled(&c, &p).filter(|(_, _, o)| o.starts_with("ok")))
    });
    // Between two due times the coordinator that claimed it dies (agent and Postgres, kill -9).
    // Its successor finds due1 inside its catch-up window: only the claim in Raft keeps it from
    // taking due1 again.
    let leader = c.wait_for_leader(T);
    c.agent_mut(&leader).kill9_with_postgres();
    let alive: Vec<String> = c.agents.iter().map(|a| a.name.clone()).filter(|n| *n != leader).collect();
    let via = alive[0].clone();
    let (due2, _, _) = wait_for("the next due backup, under the new coordinator", minute, || {
        Ok(last_scheduled(&c, &via).filter(|(d, _, o)| *d != due1 && o.starts_with("ok")))
    });
    let metrics = c.agent(&via).http("GET", "/metrics").expect("metrics").body;
    assert!(metrics.contains("pgquorum_backup_last_scheduled_succeeded 1"), "{metrics}");
    assert!(metrics.contains("pgquorum_backup_next_scheduled_seconds "), "{metrics}");
    let ids = backup_ids(&c, &via);
    // Ids are start times (YYYYMMDDTHHMMSSZ): one backup per due minute, never two.
    let mut minutes: Vec<String> = ids.iter().map(|i| i[..13].to_string()).collect();
    let n = minutes.len();
    minutes.dedup();
    assert_eq!(
        minutes.len(),
        n,
        "two backups in one due minute: {ids:?} (due {due1} by {taker1}, then {due2})"
    );
    assert!(n >= 2, "expected the backups of {due1} and {due2}: {ids:?}");
    c.agent_mut(&leader).start();
}
