//! End-to-end HA tests on real PostgreSQL 15: bootstrap, failover, fencing of a frozen agent,
//! most advanced replica, crash restart in place, protection mode, foreign data, a replica
//! promoted from outside the agent (fenced at once; killed before its promotion's checkpoint,
//! cloned again).

use std::time::Duration;

use pgquorum_tests::pg::{CREATE_TABLE, Writer, conninfo, lost_writes};
use pgquorum_tests::{Cluster, ClusterOptions, wait_for};

const T: Duration = Duration::from_secs(60);

fn others(c: &Cluster, not: &str) -> Vec<String> {
    c.agents.iter().map(|a| a.name.clone()).filter(|n| n != not).collect()
}

fn history_len(c: &mut Cluster) -> usize {
    let p = c.wait_for_primary(T);
    c.pg(&p).value("SELECT 1").expect("alive");
    let st = c.agent(&p).ctl_json(&["status"]).expect("status");
    st["epoch"].as_u64().expect("epoch") as usize
}

#[test]
fn bootstrap_gives_one_primary_and_two_streaming_replicas_that_see_its_writes() {
    let mut c = Cluster::start(ClusterOptions::default());
    let p = c.wait_for_primary(T);
    let rest = others(&c, &p);
    c.wait_for_streaming(&[&rest[0], &rest[1]], T);
    let pg = c.pg(&p);
    pg.query("CREATE TABLE t (x int); INSERT INTO t VALUES (42)").expect("write on the primary");
    for r in &rest {
        let replica = c.pg(r);
        wait_for(&format!("row on {r}"), T, || {
            Ok(replica.value("SELECT x FROM t").ok().flatten().filter(|v| v == "42"))
        });
        assert_eq!(replica.value("SELECT pg_is_in_recovery()").expect("query").as_deref(), Some("t"));
        let err = replica.query("INSERT INTO t VALUES (1)").expect_err("replicas are read-only");
        assert!(err.contains("read-only"), "{err}");
    }
    let st = c.status().expect("status");
    assert_eq!(st["epoch"], 1);
    assert_eq!(st["durability"], "availability");
    assert!(st["system_identifier"].is_string());
    let roles: Vec<&str> =
        st["members"].as_array().expect("members").iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "primary").count(), 1, "{st}");
    assert_eq!(roles.iter().filter(|r| **r == "replica").count(), 2, "{st}");
    // Replicas wait for the primary's replication role: the first clone is not refused.
    for r in &rest {
        let log = c.agent(r).log_text();
        assert!(
            !log.contains("password authentication failed") && !log.contains("member=BackingOff"),
            "{r} cloned before the primary had created the replication role:\n{log}"
        );
    }
    c.check_logs(&[]);
}

#[test]
fn killed_primary_is_replaced_and_rejoins_through_pg_rewind() {
    let mut c = Cluster::start(ClusterOptions::default());
    let old = c.wait_for_primary(T);
    let rest = others(&c, &old);
    c.wait_for_streaming(&[&rest[0], &rest[1]], T);
    c.pg(&old).query("CREATE TABLE t (x int); INSERT INTO t VALUES (1)").expect("write");
    c.agent_mut(&old).kill9_with_postgres();
    let new = c.wait_for_primary(T);
    assert_ne!(new, old);
    let follower = rest.iter().find(|n| **n != new).expect("the other replica").clone();
    c.wait_for_streaming(&[&follower], T);
    c.pg(&new).query("INSERT INTO t VALUES (2)").expect("write on the new primary");

    c.agent_mut(&old).start();
    c.wait_for_streaming(&[&old, &follower], T);
    let log = c.agent(&old).log_text();
    assert!(
        log.contains("pg_rewind:") && log.contains("Rewind(MemberName(\"") && log.contains("done"),
        "{old} rejoined through pg_rewind:\n{log}"
    );
    let rejoined = c.pg(&old);
    wait_for("the write after failover on the old primary", T, || {
        Ok(rejoined.value("SELECT count(*) FROM t").ok().flatten().filter(|n| n == "2"))
    });
    c.check_logs(&[]);
}

#[test]
fn frozen_primary_agent_is_fenced_before_the_new_primary_accepts_writes() {
    let mut c = Cluster::start(ClusterOptions::default());
    let old = c.wait_for_primary(T);
    let rest = others(&c, &old);
    c.wait_for_streaming(&[&rest[0], &rest[1]], T);
    c.pg(&old).query(CREATE_TABLE).expect("table");
    let old_addr = c.agent(&old).postgres.clone().expect("address");
    // One client keeps an open connection to the old primary; another follows whoever is primary.
    let pinned =
        Writer::start(conninfo(std::slice::from_ref(&old_addr), false), Duration::from_millis(10), 1, T);
    let follow =
        Writer::start(conninfo(&c.postgres_addresses(), true), Duration::from_millis(10), 1_000_000, T);
    std::thread::sleep(Duration::from_millis(500));
    let frozen_at = std::time::Instant::now();
    c.agent(&old).sigstop();
    let new = wait_for("another primary", T, || {
        let st = c.agents.iter().find(|a| a.name != old).expect("other").ctl_json(&["status"])?;
        Ok(st["primary"].as_str().filter(|p| *p != old).map(str::to_string))
    });
    let took = frozen_at.elapsed();
    let new_port: u16 = c
        .agent(&new)
        .postgres
        .as_ref()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .expect("port");
    // Rows the following writer inserted on the new primary itself (`port` defaults to the
    // server's own port; rows replicated from the old primary carry the old one).
    wait_for("writes on the new primary", T, || {
        Ok(c.pg(&new)
            .value(&format!("SELECT count(*) FROM pgq_writes WHERE id >= 1000000 AND port = {new_port}"))
            .ok()
            .flatten()
            .filter(|n| n != "0"))
    });
    std::thread::sleep(Duration::from_millis(300));
    let pinned = pinned.stop();
    let follow = follow.stop();
    let old_port: u16 = old_addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("port");
    let last_old_ack = pinned
        .iter()
        .chain(&follow)
        .filter(|w| w.ok && w.port == Some(old_port))
        .filter_map(|w| w.acked_us)
        .max()
        .expect("writes on the old primary were acknowledged");
    let first_new = follow
        .iter()
        .filter(|w| w.ok && w.port == Some(new_port))
        .filter_map(|w| w.server_us)
        .min()
        .expect("writes on the new primary");
    assert!(
        last_old_ack < first_new,
        "the old primary acknowledged a write ({last_old_ack}) after the new one took its first ({first_new})"
    );
    assert!(took < Duration::from_secs(6), "failover took {took:?}");

    c.agent(&old).sigcont();
    c.wait_for_streaming(&[&old], T);
    let st = c.status().expect("status");
    assert_eq!(st["primary"], new.as_str());
    c.check_logs(&[]);
}

/// PIDs of the WAL receiver of the instance in `pgdata`.
fn walreceiver(pgdata: &std::path::Path) -> Vec<u32> {
    pgquorum_tests::procs::pids_of(pgdata)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("walreceiver"))
        })
        .collect()
}

#[test]
fn most_advanced_replica_is_promoted() {
    let mut c = Cluster::start(ClusterOptions::default());
    let primary = c.wait_for_primary(T);
    let rest = others(&c, &primary);
    c.wait_for_streaming(&[&rest[0], &rest[1]], T);
    let (behind, ahead) = (rest[0].clone(), rest[1].clone());
    let pg = c.pg(&primary);
    pg.query("CREATE TABLE t (x int, pad text); INSERT INTO t VALUES (1, '')").expect("write");
    let receivers = walreceiver(&c.agent(&behind).pgdata());
    assert!(!receivers.is_empty(), "{behind} has a WAL receiver");
    for pid in &receivers {
        pgquorum_tests::procs::signal(*pid, rustix::process::Signal::STOP);
    }
    // The other replica acknowledges these (ANY 1 of the two); the paused one misses most of
    // them: about 60 MB of WAL, more than the socket buffers between them can hold.
    pg.query("INSERT INTO t SELECT g, repeat(md5(g::text), 60) FROM generate_series(2, 30000) g")
        .expect("write while one replica is paused");
    c.agent_mut(&primary).kill9_with_postgres();
    for pid in &receivers {
        pgquorum_tests::procs::signal(*pid, rustix::process::Signal::CONT);
    }
    let new = c.wait_for_primary(T);
    assert_eq!(new, ahead, "the replica that received everything was promoted");
    assert_eq!(c.pg(&new).value("SELECT count(*) FROM t").expect("count").as_deref(), Some("30000"));
    let log = (0..c.agents.len()).map(|i| c.agents[i].log_text()).collect::<String>();
    assert!(log.contains(&format!("failover: chose {ahead} among")), "the coordinator compared positions");
    c.check_logs(&[]);
}

#[test]
fn postgres_crash_on_the_primary_restarts_in_place_without_failover() {
    let mut c = Cluster::start(ClusterOptions::default());
    let p = c.wait_for_primary(T);
    let epoch = history_len(&mut c);
    let tli = c.pg(&p).value("SELECT timeline_id FROM pg_control_checkpoint()").expect("timeline");
    c.agent(&p).kill9_postgres();
    wait_for("Postgres back on the same member", T, || {
        let st = c.status()?;
        let pg =
            pgquorum_tests::Pg::connect(&conninfo(&[c.agent(&p).postgres.clone().unwrap_or_default()], true));
        Ok((st["primary"] == p.as_str() && pg.is_ok()).then_some(()))
    });
    assert_eq!(c.wait_for_primary(T), p, "no failover");
    assert_eq!(history_len(&mut c), epoch, "the epoch did not change");
    assert_eq!(
        c.pg(&p).value("SELECT timeline_id FROM pg_control_checkpoint()").expect("timeline"),
        tli,
        "same timeline"
    );
    assert!(c.agent(&p).log_text().contains("RestartInPlace"));
    c.check_logs(&[]);
}

#[test]
fn protection_mode_loses_no_acknowledged_write_over_20_kill9_failovers() {
    let mut c = Cluster::start(ClusterOptions::with_durability(3, "protection"));
    let first = c.wait_for_primary(T);
    let rest = others(&c, &first);
    c.wait_for_streaming(&[&rest[0], &rest[1]], T);
    c.pg(&first).query(CREATE_TABLE).expect("table");
    let writer = Writer::start(
        conninfo(&c.postgres_addresses(), true),
        Duration::from_millis(15),
        1,
        Duration::from_secs(900),
    );
    let mut acked_before_kill = 0;
    for round in 0..20 {
        let p = c.wait_for_primary(T);
        let rest = others(&c, &p);
        c.wait_for_streaming(&[&rest[0], &rest[1]], T);
        std::thread::sleep(Duration::from_millis(300));
        acked_before_kill += 1;
        c.agent_mut(&p).kill9_with_postgres();
        let new = c.wait_for_primary(T);
        assert_ne!(new, p, "round {round}: a new primary");
        c.agent_mut(&p).start();
    }
    let p = c.wait_for_primary(T);
    std::thread::sleep(Duration::from_millis(500));
    let writes = writer.stop();
    let acked = writes.iter().filter(|w| w.ok).count();
    assert!(acked > 200, "the writer kept writing ({acked} acknowledged)");
    let lost = lost_writes(&c.pg(&p), &writes).expect("read");
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost over {acked_before_kill} failovers: {lost:?}",
        lost.len()
    );
    c.check_logs(&[]);
}

#[test]
fn member_with_another_clusters_postgres_data_refuses_to_join() {
    let mut c = Cluster::start(ClusterOptions::default());
    let p = c.wait_for_primary(T);
    let victim = others(&c, &p)[0].clone();
    c.wait_for_streaming(&[&victim], T);
    c.agent_mut(&victim).kill9_with_postgres();
    pgquorum_tests::procs::kill_all_in(&c.agent(&victim).pgdata());
    std::fs::remove_dir_all(c.agent(&victim).pgdata()).expect("remove data");
    // A stranger's data directory: initdb of a new system (different system identifier).
    let initdb = pgquorum_tests::bins::postgres_bin("initdb");
    let status = std::process::Command::new("setpriv")
        .args(["--reuid", "postgres", "--regid", "postgres", "--init-groups", "--"])
        .arg(initdb)
        .arg("-D")
        .arg(c.agent(&victim).pgdata())
        .arg("-U")
        .arg("postgres")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("initdb");
    assert!(status.success());
    c.agent_mut(&victim).start();
    let exit = c.agent_mut(&victim).wait_exit(T).expect("the agent refuses and exits");
    assert_eq!(exit.code(), Some(65));
    let log = c.agent(&victim).log_text();
    assert!(
        log.contains("holds Postgres system identifier") && log.contains("belongs to another cluster"),
        "{log}"
    );
    c.check_logs(&["holds Postgres system identifier"]);
}

#[test]
fn agent_refuses_to_run_postgres_as_root() {
    if !pgquorum_tests::bins::is_root() {
        eprintln!("SKIPPED: needs root to show the refusal");
        return;
    }
    let mut c = Cluster::start(ClusterOptions { members: 1, ..Default::default() });
    c.agent_mut("m1").kill9();
    let a = c.agent_mut("m1");
    a.as_user = false;
    a.start();
    assert_eq!(a.wait_exit(T).expect("exits").code(), Some(65));
    assert!(
        a.log_text().contains("Postgres refuses to run as root")
            && a.log_text().contains("runuser -u postgres")
    );
    c.check_logs(&["refuses to run as root"]);
}

/// An operator's mistake: a replica promoted from outside the agent (`SELECT pg_promote()`) is
/// writable without a lease. Its agent notices the `promote` file in the data directory, not a
/// status read (this cluster's quiet members read their status only every 10 s), and fences
/// it within a second or so; the primary keeps its role and epoch, and the fenced member comes
/// back as a streaming replica.
#[test]
fn a_replica_promoted_from_outside_the_agent_is_fenced_at_once() {
    let settings = vec!["ha.status_interval=10s".to_string()];
    let mut c = Cluster::start(ClusterOptions { members: 2, settings, ..Default::default() });
    let p = c.wait_for_primary(T);
    let r = others(&c, &p).remove(0);
    c.wait_for_streaming(&[&r], T);
    let epoch = history_len(&mut c);
    // Settled: the replica's loop is quiet, and its last status read is seconds old.
    std::thread::sleep(Duration::from_secs(4));
    let replica = c.pg(&r);
    let promoted = std::time::Instant::now();
    // Returns once the promotion ended, or fails when the agent kills Postgres first.
    let _ = replica.value("SELECT pg_promote(true)");
    let fenced = wait_for(&format!("{r} no longer writable"), T, || {
        let writable =
            pgquorum_tests::pg::Pg::connect(&conninfo(&[c.agent(&r).postgres.clone().expect("pg")], false))
                .and_then(|pg| pg.value("SELECT NOT pg_is_in_recovery()"))
                .is_ok_and(|v| v.as_deref() == Some("t"));
        Ok((!writable).then(|| promoted.elapsed()))
    });
    println!("{r} was writable without a lease for at most {fenced:?}");
    assert!(fenced < Duration::from_millis(2500), "{r} stayed writable without a lease for {fenced:?}");
    let log = c.agent(&r).log_text();
    assert!(log.contains("fencing: the agent kills Postgres"), "{r} was not fenced by its agent:\n{log}");
    c.wait_for_streaming(&[&r], T);
    assert_eq!(c.wait_for_primary(T), p, "the primary kept its role");
    assert_eq!(history_len(&mut c), epoch, "no failover");
}

/// The same mistake, with the agent frozen meanwhile, and its Postgres killed before the
/// promotion's checkpoint (the replica replayed 60 MB first, so that checkpoint takes minutes):
/// its control file still names the primary's timeline, the agent restarts it as a standby,
/// it replays its own promotion and stays on timeline 2, and pg_rewind finds "no rewind
/// required". Before, the agent rewound again every 17 ms and the member never streamed; now
/// that rewind counts as failed and the member is cloned again.
#[test]
fn a_replica_killed_right_after_a_promotion_from_outside_comes_back_streaming() {
    let mut c = Cluster::start(ClusterOptions::default());
    let p = c.wait_for_primary(T);
    let r = others(&c, &p).remove(0);
    c.wait_for_streaming(&[&r], T);
    let epoch = history_len(&mut c);
    let primary = c.pg(&p);
    primary
        .query("CREATE TABLE big AS SELECT g, repeat('x', 150) AS pad FROM generate_series(1, 300000) g")
        .expect("write");
    let lsn = primary.value("SELECT pg_current_wal_lsn()").expect("lsn").expect("an lsn");
    let replica = c.pg(&r);
    wait_for(&format!("{r} replayed {lsn}"), T, || {
        Ok(replica
            .value(&format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'"))
            .ok()
            .flatten()
            .filter(|v| v == "t"))
    });
    c.agent(&r).sigstop();
    let _ = replica.value("SELECT pg_promote(true)");
    let pid_file =
        std::fs::read_to_string(c.agent(&r).pgdata().join("postmaster.pid")).expect("postmaster.pid");
    let pid: i32 = pid_file.lines().next().and_then(|l| l.trim().parse().ok()).expect("postmaster pid");
    // Stopped by its PID: the postmaster of this test's own member.
    let killed = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
    assert!(killed.success());
    c.agent(&r).sigcont();
    c.wait_for_streaming(&[&r], T);
    let log = c.agent(&r).log_text();
    let rewinds = log.lines().filter(|l| l.contains("pg_rewind: ")).count();
    assert!(rewinds <= 3, "{r} ran pg_rewind {rewinds} times");
    assert_eq!(c.wait_for_primary(T), p, "the primary kept its role");
    assert_eq!(history_len(&mut c), epoch, "no failover");
    println!("{r}: {rewinds} rewinds; re-cloned: {}", log.contains("moved the diverged data directory"));
}
