//! End-to-end lease tests (issue 11 items 1, 2, 9, 10): ttl and lease_margin changes under a
//! writer never fence or fail over the primary; a dynamic ttl a member's Raft timing cannot
//! support is refused; an isolated primary whose status query hangs is fenced by its agent, not
//! its guard; short cuts of the primary's network, or a Raft leader frozen right after
//! confirming its lease, do not fail it over.

use std::time::Duration;

use pgquorum_tests::lease::{
    Rng, cut_off, epoch, epoch_and_fencings, fencings, random_change, wait_fresh_lease,
};
use pgquorum_tests::pg::{CREATE_TABLE, Writer, conninfo, lost_writes};
use pgquorum_tests::{Cluster, ClusterOptions, wait_for};

const T: Duration = Duration::from_secs(90);

/// The Raft term, as the leader's status reports it.
fn raft_term(c: &mut Cluster) -> u64 {
    let st = c.status().expect("status");
    st["raft"]["term"].as_u64().unwrap_or_else(|| panic!("no Raft term in {st}"))
}

fn others(c: &Cluster, not: &str) -> Vec<String> {
    c.agents.iter().map(|a| a.name.clone()).filter(|n| n != not).collect()
}

use pgquorum_tests::bins::netns_available;

#[test]
fn ttl_and_lease_margin_changes_under_a_writer_never_fence_or_fail_over_the_primary() {
    let mut c = Cluster::start(ClusterOptions::default());
    let p = c.wait_for_primary(T);
    let rest = others(&c, &p);
    c.wait_for_streaming(&[&rest[0], &rest[1]], T);
    c.pg(&p).query(CREATE_TABLE).expect("table");
    let before = epoch(&mut c).expect("epoch");
    for a in &c.agents {
        a.mark_log("ttl changes start");
    }
    let writer = Writer::start(conninfo(&c.postgres_addresses(), true), Duration::from_millis(20), 1, T);
    // The changes of the report first (1.5 s → 5 s, then down to the minimum and back up),
    // then random ones within the allowed range (3 × the default 400 ms election timeout).
    let mut changes: Vec<Vec<String>> = vec![
        vec!["ttl=5s".into()],
        vec!["ttl=1200ms".into(), "lease_margin=50ms".into()],
        vec!["ttl=3s".into()],
    ];
    let mut rng = Rng::new(0x11);
    let mut ttl = Duration::from_secs(3);
    for _ in 0..5 {
        let change = random_change(&mut rng, Duration::from_millis(1200), ttl);
        if let Some(t) = change.iter().find_map(|s| s.strip_prefix("ttl=")) {
            ttl = pgquorum_core_duration(t);
        }
        changes.push(change);
    }
    for (i, change) in changes.iter().enumerate() {
        let mut args = vec!["config", "set"];
        args.extend(change.iter().map(String::as_str));
        c.agent(&rest[i % 2]).ctl_json(&args).unwrap_or_else(|e| panic!("{change:?}: {e}"));
        // Two renewal periods of the longer ttl at most, and at least one of the new one.
        let pause = 400 + rng.range(0, 1200);
        std::thread::sleep(Duration::from_millis(pause));
    }
    // One more full ttl so a late fence would show.
    std::thread::sleep(ttl);
    let writes = writer.stop();
    let after = epoch(&mut c).expect("epoch");
    assert_eq!(after, before, "a configuration change caused a failover (epoch {before} → {after})");
    for a in &c.agents {
        let (agent, guard) = fencings(&c, &a.name, "ttl changes start");
        assert_eq!((agent, guard), (0, 0), "{} fenced during ttl changes (agent, guard)", a.name);
    }
    let lost = lost_writes(&c.pg(&p), &writes).expect("read back");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let acked = writes.iter().filter(|w| w.ok).count();
    assert!(acked * 10 >= writes.len() * 9, "most writes were acknowledged ({acked} of {})", writes.len());
    c.check_logs(&[]);
}

/// `1500ms` or `5s` as a duration (the test's own settings only).
fn pgquorum_core_duration(text: &str) -> Duration {
    match text.strip_suffix("ms") {
        Some(ms) => Duration::from_millis(ms.parse().expect("ms")),
        None => Duration::from_secs(text.trim_end_matches('s').parse().expect("s")),
    }
}

#[test]
fn dynamic_ttl_below_three_election_timeouts_of_any_member_is_refused() {
    // m3 waits longer for elections than the others (400 ms): the cluster's ttl must be at
    // least 3 × 700 ms.
    let mut opts = ClusterOptions::raft_only(3);
    opts.settings.push("bootstrap.ttl=3s".into());
    opts.member_settings = vec![
        ("m3".into(), "raft.election_timeout_min=600ms".into()),
        ("m3".into(), "raft.election_timeout_max=700ms".into()),
    ];
    let mut c = Cluster::start(opts);
    c.wait_for_leader(T);
    // Every member's report (with its timing) reaches the agent asked.
    wait_for("reports from every member", T, || {
        let st = c.agent("m1").ctl_json(&["status"])?;
        let n = st["members"].as_array().map_or(0, |m| m.iter().filter(|m| m["state"] == "running").count());
        Ok((n == 3).then_some(()))
    });
    for ttl in ["400ms", "1500ms", "2s"] {
        let out = c.agent("m1").ctl(&["config", "set", &format!("ttl={ttl}")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "ttl={ttl} was accepted");
        assert!(
            err.contains("raft.election_timeout_max of member m3 (700ms) = 2100ms")
                && err.contains("set ttl=2100ms or more"),
            "ttl={ttl}: {err}"
        );
    }
    let cfg = c.agent("m2").ctl_json(&["config", "show"]).expect("config");
    assert_eq!(cfg["config"]["ttl"], "3s", "nothing was stored: {cfg}");
    c.agent("m2").ctl_json(&["config", "set", "ttl=2100ms"]).expect("3 × 700 ms is enough");
    c.check_logs(&[]);
}

/// Stops (SIGSTOP) the backend serving the agent's status query on `name`'s Postgres, so every
/// status query of that agent hangs until its timeout, as a stuck server would make it.
fn freeze_status_backend(c: &Cluster, name: &str) -> u32 {
    let pg = c.pg(name);
    let pid = wait_for("the agent's status query backend", T, || {
        let v = pg.value(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' \
             AND pid <> pg_backend_pid() AND query LIKE '%pg_stat_wal_receiver%' LIMIT 1",
        )?;
        Ok(v.and_then(|p| p.parse::<u32>().ok()))
    });
    pgquorum_tests::procs::signal(pid, rustix::process::Signal::STOP);
    pid
}

#[test]
fn isolated_primary_with_a_hanging_status_query_is_fenced_by_its_agent_not_its_guard() {
    if !netns_available() {
        return;
    }
    let mut c = Cluster::start(ClusterOptions { netns: true, ..Default::default() });
    for trial in 0..2 {
        let old = c.wait_for_primary(T);
        let rest = others(&c, &old);
        c.wait_for_streaming(&[&rest[0], &rest[1]], T);
        let mark = format!("isolation trial {trial}");
        c.agent(&old).mark_log(&mark);
        freeze_status_backend(&c, &old);
        let lab = c.lab.as_ref().expect("lab");
        let i = c.agents.iter().position(|a| a.name == old).expect("member");
        lab.partition(&[i]);
        // The old primary fences itself (the agent, not the guard) within its lease.
        wait_for("the isolated primary fenced", T, || {
            let (agent, guard) = fencings(&c, &old, &mark);
            Ok((agent + guard > 0).then_some(()))
        });
        // Let the guard's moment pass too: it must have nothing left to kill.
        std::thread::sleep(Duration::from_millis(500));
        let (agent, guard) = fencings(&c, &old, &mark);
        c.lab.as_ref().expect("lab").heal();
        assert_eq!((agent, guard), (1, 0), "trial {trial}: fencing by (agent, guard) on {old}");
        let new = c.wait_for_primary(T);
        assert_ne!(new, old, "trial {trial}");
        c.wait_for_streaming(&[&old], T);
    }
    c.check_logs(&[]);
}

#[test]
fn cuts_of_the_primary_for_half_its_lease_never_fail_it_over() {
    if !netns_available() {
        return;
    }
    let mut c = Cluster::start(ClusterOptions { netns: true, ..Default::default() });
    let p = c.wait_for_primary(T);
    let rest = others(&c, &p);
    c.wait_for_streaming(&[&rest[0], &rest[1]], T);
    let before = epoch(&mut c).expect("epoch");
    let ttl = Duration::from_millis(1500);
    for trial in 0..4 {
        let mark = format!("cut trial {trial}");
        c.agent(&p).mark_log(&mark);
        // Start just after a renewal was confirmed: the lease has 1.5 s - 0.256 s - 0.15 s left
        // or more.
        assert!(wait_fresh_lease(&c, &p, ttl, Duration::from_millis(150), T), "no fresh lease on {p}");
        let took = cut_off(&c, &p, Duration::from_millis(750));
        // Long enough for a failover to show: the old lease plus margin and a promotion.
        wait_for("the primary back in status", T, || {
            let st = c.status()?;
            Ok(st["members"].as_array().and_then(|m| m.iter().find(|m| m["name"] == p.as_str()).cloned()))
        });
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            epoch_and_fencings(&mut c, &p, &mark),
            (before, 0, 0),
            "trial {trial}: a {took:?} cut (epoch, agent fence, guard fence)"
        );
    }
    c.check_logs(&[]);
}

/// A Raft leader that freezes (SIGSTOP: its connections hang rather than being refused) right
/// after confirming the primary's lease, or a little later. The other two elect a new leader
/// and the primary renews with it before its fence point, every time (DESIGN invariant 7: losing a replica,
/// even the Raft leader, never interrupts writes). With 256 ms heartbeats a renewal after a
/// failed one that waited for a periodic heartbeat tried again only after the fence point
/// (`renew::urgent`).
#[test]
fn a_raft_leader_frozen_right_after_confirming_the_lease_never_fails_over_the_primary() {
    let mut c = Cluster::start(ClusterOptions::default());
    let p = c.wait_for_primary(T);
    let rest = others(&c, &p);
    c.wait_for_streaming(&[&rest[0], &rest[1]], T);
    let before = epoch(&mut c).expect("epoch");
    let ttl = Duration::from_millis(1500);
    for trial in 0..6 {
        // A leader elected on the primary's member hands leadership to a replica soon.
        let leader = wait_for("a Raft leader on a replica", T, || {
            let l = c.wait_for_leader(T);
            Ok((l != p).then_some(l))
        });
        let mark = format!("frozen leader trial {trial}");
        c.agent(&p).mark_log(&mark);
        let term = raft_term(&mut c);
        // Just after a confirmation (the leader's last heartbeat confirmed it), or, every other
        // trial, 100 ms later, still before the primary sends its next renewal, so that the new
        // leader comes only after that renewal failed. The member learns of a confirmation 256
        // ms after it sent the renewal (`CONFIRMED_AFTER`) and renews 512 ms after it: the
        // freeze comes 356-456 ms after the send, where 300 ms after the confirmation came
        // before renewals rode heartbeats (when a confirmation arrived up to 100 ms after the
        // send). Freezing after the next renewal went out, just before the heartbeat that
        // would confirm it, is the worst case and is tighter: docs/decisions.md, "A quiet
        // primary's renewal rides on a heartbeat too".
        assert!(
            wait_fresh_lease(&c, &p, ttl, Duration::from_millis(100), T),
            "trial {trial}: no fresh lease on {p}"
        );
        if trial % 2 == 1 {
            // Part of the fault: where in the renewal cycle the leader freezes.
            std::thread::sleep(Duration::from_millis(100));
        }
        c.agent(&leader).sigstop();
        // The fault itself: a whole lease and more, so the primary must renew elsewhere.
        std::thread::sleep(Duration::from_millis(2500));
        c.agent(&leader).sigcont();
        // Long enough for what the thawed leader does on its stale memory (an expiry of the
        // lease it last confirmed: ttl and margin after that) to show before the check.
        std::thread::sleep(Duration::from_millis(2000));
        c.wait_for_leader(T);
        assert!(raft_term(&mut c) > term, "trial {trial}: no election while {leader} was frozen");
        assert_eq!(
            epoch_and_fencings(&mut c, &p, &mark),
            (before, 0, 0),
            "trial {trial}: {leader} frozen after confirming {p}'s lease (epoch, agent fence, guard fence)"
        );
    }
    c.check_logs(&[]);
}
