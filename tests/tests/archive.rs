//! End-to-end tests of the WAL archive with real agents and Postgres: to a directory and to a
//! real S3 API (moto). Every segment the primaries archived is present and restorable (through
//! `pgquorum-agent wal-fetch`, the restore_command) across a switchover and a kill -9 failover;
//! an unavailable S3 holds WAL back without acknowledging anything, and the backlog drains when
//! it returns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgquorum_tests::bins::bin;
use pgquorum_tests::moto::Moto;
use pgquorum_tests::secrets::{SecretDir, give_to_agents};
use pgquorum_tests::wal::{ready_files, wait_archived, write_and_switch};
use pgquorum_tests::{Cluster, ClusterOptions, wait_for};

const T: Duration = Duration::from_secs(90);
/// Postgres retries a failed archive_command only after up to a minute: draining waits longer.
const DRAIN: Duration = Duration::from_secs(180);

fn others(c: &Cluster, not: &str) -> Vec<String> {
    c.agents.iter().map(|a| a.name.clone()).filter(|n| n != not).collect()
}

fn healthy(c: &mut Cluster) -> String {
    let p = c.wait_for_primary(T);
    let rest = others(c, &p);
    let names: Vec<&str> = rest.iter().map(String::as_str).collect();
    c.wait_for_streaming(&names, T);
    p
}

/// Waits until the primary `p` archived everything it finished.
fn wait_drained(c: &Cluster, p: &str) {
    wait_archived(c, &[p], DRAIN);
}

/// The archive socket of an agent.
fn socket(c: &Cluster, name: &str) -> PathBuf {
    c.agent(name).dir.join("run/.pgquorum-archive.sock")
}

/// Runs `pgquorum-agent wal-fetch` against `via`'s agent; returns its exit code and stderr.
fn wal_fetch(c: &Cluster, via: &str, name: &str, dest: &Path) -> (i32, String) {
    let out = Command::new(bin("pgquorum-agent"))
        .args(["wal-fetch", "--socket"])
        .arg(socket(c, via))
        .arg(name)
        .arg(dest)
        .output()
        .expect("run wal-fetch");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Checks the archived names: a history file for every timeline after the first, and on each
/// timeline an unbroken run of segments.
fn assert_complete(names: &[String], timelines: u32) {
    let mut by_tli: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for n in names {
        let seg = n.strip_suffix(".partial").unwrap_or(n);
        if seg.len() == 24 && seg.bytes().all(|b| b.is_ascii_hexdigit()) {
            let tli = u32::from_str_radix(&seg[..8], 16).expect("hex");
            let no = u64::from_str_radix(&seg[8..16], 16).expect("hex") * 256
                + u64::from_str_radix(&seg[16..], 16).expect("hex");
            by_tli.entry(tli).or_default().push(no);
        }
    }
    for t in 2..=timelines {
        assert!(
            names.contains(&format!("{t:08X}.history")),
            "timeline {t}'s history file is not archived: {names:?}"
        );
    }
    assert!(by_tli.len() as u32 >= timelines, "segments of {timelines} timelines expected: {names:?}");
    for (tli, mut nos) in by_tli {
        nos.sort();
        nos.dedup();
        let (first, last) = (nos[0], nos[nos.len() - 1]);
        assert_eq!(nos.len() as u64, last - first + 1, "timeline {tli} has a gap: {nos:?}");
    }
}

/// The WAL names in a directory archive of cluster `cluster`.
fn dir_archive_names(root: &Path, cluster: &str) -> Vec<String> {
    let mut out = Vec::new();
    for sys in std::fs::read_dir(root.join(cluster)).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(sys.path().join("wal")).into_iter().flatten().flatten() {
            if let Some(n) = f.file_name().to_str()
                && !n.starts_with('.')
            {
                out.push(n.to_string());
            }
        }
    }
    out.sort();
    out
}

/// Restores every name through `via`'s agent and compares it with the copies still in the
/// members' pg_wal; returns how many were compared byte for byte.
fn assert_restorable(c: &Cluster, via: &str, names: &[String]) -> usize {
    let out = tempfile::Builder::new().prefix("pgq-restore-").tempdir().expect("tempdir");
    give_to_agents(out.path());
    let mut compared = 0;
    for n in names {
        let dest = out.path().join("RECOVERYXLOG");
        let (code, err) = wal_fetch(c, via, n, &dest);
        assert_eq!(code, 0, "wal-fetch {n}: {err}");
        let got = std::fs::read(&dest).expect("restored file");
        if n.len() == 24 {
            assert_eq!(got.len(), 16 * 1024 * 1024, "{n} is not a whole segment");
        }
        for a in &c.agents {
            if let Ok(orig) = std::fs::read(a.pgdata().join("pg_wal").join(n))
                && !ready_files(&a.pgdata()).contains(n)
                && a.pgdata().join(format!("pg_wal/archive_status/{n}.done")).exists()
            {
                assert!(orig == got, "{n} restored from the archive differs from {}'s copy", a.name);
                compared += 1;
            }
        }
    }
    let (code, _) = wal_fetch(c, via, "0000000100000000000000FF", &out.path().join("x"));
    assert_eq!(code, 1, "a segment not in the archive is a clean not-found");
    compared
}

fn archive_dir() -> tempfile::TempDir {
    pgquorum_tests::secrets::agents_tempdir("pgq-archive-")
}

#[test]
fn directory_archive_under_pgbench_is_complete_and_restorable_across_switchover_and_kill9_failover() {
    let archive = archive_dir();
    let opts = ClusterOptions {
        settings: vec!["archive.enabled=true".into(), format!("archive.dir={}", archive.path().display())],
        ..Default::default()
    };
    let mut c = Cluster::start(opts);
    let first = healthy(&mut c);
    // pgbench runs through the switchover and the failover (short runs on whichever member is
    // primary): WAL is produced while the archiver changes hands.
    let hosts = c.postgres_addresses();
    pgquorum_tests::pgbench::init(&hosts, 2);
    let load = pgquorum_tests::pgbench::Load::start(hosts, 4, Duration::from_secs(300));
    write_and_switch(&c, &first, 3);
    wait_drained(&c, &first);

    let target = others(&c, &first)[0].clone();
    let out = c.agent(&target).ctl_json(&["switchover", "--to", &target]).expect("switchover");
    assert_eq!(out["to"], target.as_str());
    assert_eq!(healthy(&mut c), target);
    write_and_switch(&c, &target, 3);
    wait_drained(&c, &target);

    c.agent_mut(&target).kill9_with_postgres();
    let third = c.wait_for_primary(T);
    assert_ne!(third, target);
    write_and_switch(&c, &third, 3);
    let transactions = load.stop();
    assert!(transactions > 100, "pgbench did little: {transactions} transactions");
    write_and_switch(&c, &third, 1);
    wait_drained(&c, &third);

    let names = dir_archive_names(archive.path(), "e2e");
    assert_complete(&names, 3);
    let compared = assert_restorable(&c, &third, &names);
    assert!(compared >= 3, "too few archived files could be compared with a local copy ({compared})");
    // Nothing was refused as different content (nothing overwritten or diverged).
    let metrics = c.agent(&third).http("GET", "/metrics").expect("metrics").body;
    assert!(
        metrics.contains("pgquorum_archive_failures{") && metrics.contains("kind=\"conflict\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("pgquorum_archive_active{cluster=\"e2e\",member=\""), "{metrics}");
}

#[test]
fn s3_archive_holds_wal_back_while_s3_is_down_and_drains_the_backlog_when_it_returns() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("wal");
    let secrets = SecretDir::new();
    let secret = secrets.write("s3-secret", &format!("{}\n", pgquorum_tests::moto::SECRET_KEY));
    let mut settings = moto.agent_settings("wal", &secret);
    settings.push("archive.s3.prefix=team/db".into());
    settings.push("archive.s3.timeout=6s".into());
    // One member: the outage is about the store, not about failover.
    let mut c = Cluster::start(ClusterOptions { members: 1, settings, ..Default::default() });
    let p = c.wait_for_primary(T);
    write_and_switch(&c, &p, 2);
    wait_drained(&c, &p);

    moto.freeze();
    write_and_switch(&c, &p, 3);
    // Postgres keeps the files and retries; the agent says what is wrong.
    let data = c.agent(&p).pgdata();
    wait_for("the archive to report the outage", T, || {
        let m = c.agent(&p).http("GET", "/metrics").map_err(|e| e.to_string())?.body;
        let pending = ready_files(&data).len();
        let failing = m.lines().any(|l| {
            l.starts_with("pgquorum_archive_failures{") && l.contains("unavailable") && !l.ends_with(" 0")
        });
        Ok((failing && pending >= 3).then_some(()))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(ready_files(&data).len() >= 3, "files were acknowledged while S3 was down");
    let m = c.agent(&p).http("GET", "/metrics").expect("metrics").body;
    assert!(m.lines().any(|l| l.starts_with("pgquorum_archive_pending_files{") && !l.ends_with(" 0")), "{m}");

    moto.thaw();
    wait_drained(&c, &p);
    let listing =
        pgquorum_tests::http::get(&moto.addr, "/wal?list-type=2&prefix=team/db/e2e/").expect("list").body;
    let names: Vec<String> = listing
        .split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next()?.rsplit('/').next().map(str::to_string))
        .collect();
    assert_complete(&names, 1);
    assert!(names.len() >= 5, "{names:?}");
    let compared = assert_restorable(&c, &p, &names);
    assert!(compared >= 1, "no archived file could be compared with a local copy");
}

#[test]
fn a_replica_away_while_its_wal_was_recycled_catches_up_from_the_archive_without_a_reclone() {
    let archive = archive_dir();
    // Three members: one away leaves a Raft majority.
    let opts = ClusterOptions {
        settings: vec![
            "archive.enabled=true".into(),
            format!("archive.dir={}", archive.path().display()),
            // The primary keeps little WAL for an absent replica: its slot is invalidated.
            "bootstrap.postgres_parameters.wal_keep_size=0".into(),
            "bootstrap.postgres_parameters.max_slot_wal_keep_size=64MB".into(),
        ],
        ..Default::default()
    };
    let mut c = Cluster::start(opts);
    let p = healthy(&mut c);
    let r = others(&c, &p)[0].clone();
    let marker = c.agent(&r).pgdata().join("pgquorum-test-marker");
    std::fs::write(&marker, "a clone would remove this").expect("marker");
    c.agent_mut(&r).stop();

    let pg = c.pg(&p);
    pg.query("CREATE TABLE filler (v text)").expect("table");
    for _ in 0..8 {
        pg.query("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 16000); SELECT pg_switch_wal()")
            .expect("fill");
    }
    pg.query("CHECKPOINT").expect("checkpoint");
    pg.query("CHECKPOINT").expect("checkpoint");
    let slot = format!("pgquorum_{r}");
    let status = pg
        .value(&format!("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'"))
        .expect("slot status");
    assert_eq!(status.as_deref(), Some("lost"), "the replica's slot should have been invalidated");
    write_and_switch(&c, &p, 1);
    wait_drained(&c, &p);

    c.agent_mut(&r).start();
    c.wait_for_streaming(&[r.as_str()], DRAIN);
    let rows = c.pg(&p).value("SELECT count(*) FROM filler").expect("count");
    wait_for("the replica to hold every row", T, || {
        Ok((c.pg(&r).value("SELECT count(*) FROM filler").ok().flatten() == rows).then_some(()))
    });
    assert!(marker.exists(), "the replica was cloned again instead of catching up");
    let log = std::fs::read_to_string(c.agent(&r).dir.join("postgres.log")).unwrap_or_default();
    assert!(log.contains("restored log file"), "the replica did not read the archive");
}
