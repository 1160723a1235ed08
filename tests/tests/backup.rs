//! End-to-end tests of base backups and restore with real agents and Postgres: a backup taken
//! from a replica, then new clusters restored from it to a time, a named restore point, an LSN
//! and the latest point after a switchover — each holding exactly the rows written before its
//! target. The restored cluster's second member clones from the first, and it archives under
//! its own name, never into its source's folder.

use std::path::Path;
use std::time::Duration;

use pgquorum_tests::secrets::give_to_agents;
use pgquorum_tests::{Cluster, ClusterOptions, wait_for};

const T: Duration = Duration::from_secs(120);

fn archive_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("pgq-backup-").tempdir().expect("tempdir");
    give_to_agents(d.path());
    d
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
