//! End-to-end tests of the Raft group: real agent processes, real kill -9, real partitions.

use std::time::Duration;

use pgquorum_tests::{Cluster, ClusterOptions, wait_for};

const T: Duration = Duration::from_secs(20);

fn options(members: usize) -> ClusterOptions {
    ClusterOptions::raft_only(members)
}

/// Waits until `name` reports itself caught up: its applied index reached `index`.
fn wait_applied(c: &Cluster, name: &str, index: u64) {
    wait_for(&format!("{name} to apply index {index}"), T, || {
        let st = c.agent(name).local_status()?;
        let applied = st["raft"]["applied_index"].as_u64().unwrap_or(0);
        Ok((applied >= index).then_some(()))
    });
}

fn commit_index(c: &Cluster, via: &str) -> u64 {
    let st = c.agent(via).ctl_json(&["status"]).expect("status");
    st["raft"]["commit_index"].as_u64().expect("commit index")
}

fn set(c: &Cluster, via: &str, kv: &str) -> Result<u64, String> {
    let v = c.agent(via).ctl_json(&["config", "set", kv])?;
    v["version"].as_u64().ok_or_else(|| "no version in reply".into())
}

fn elect_kill_restart(members: usize) {
    let mut c = Cluster::start(options(members));
    let first = c.wait_for_leader(T);
    set(&c, "m1", "postgres_parameters.pgq.before=1").expect("write before the kill");

    c.agent_mut(&first).kill9();
    let second = c.wait_for_leader(T);
    assert_ne!(first, second, "a killed leader cannot still lead");
    let other = c.agents.iter().map(|a| a.name.clone()).find(|n| *n != first).expect("another member");
    set(&c, &other, "postgres_parameters.pgq.after=1").expect("the new leader accepts writes");

    c.agent_mut(&first).start();
    c.wait_for_leader(T);
    let idx = commit_index(&c, &second);
    wait_applied(&c, &first, idx);
    let cfg = c.agent(&first).ctl_json(&["config", "show"]).expect("config from the restarted member");
    assert_eq!(cfg["config"]["postgres_parameters"]["pgq.after"], "1", "restarted member caught up: {cfg}");
    c.check_logs(&[]);
}

#[test]
fn three_agents_elect_one_leader_and_replace_a_killed_one() {
    elect_kill_restart(3);
}

#[test]
fn five_agents_elect_one_leader_and_replace_a_killed_one() {
    elect_kill_restart(5);
}

#[test]
fn learner_joins_catches_up_and_becomes_voter() {
    let mut c = Cluster::start(options(3));
    let leader = c.wait_for_leader(T);
    for i in 0..5 {
        set(&c, "m1", &format!("postgres_parameters.pgq.k{i}={i}")).expect("write");
    }
    let joined = c.add_agent().name.clone();
    wait_for("m4 to be a voter", T, || {
        let st = c.agent("m1").ctl_json(&["status"])?;
        let m4 =
            st["members"].as_array().and_then(|m| m.iter().find(|m| m["name"] == joined.as_str()).cloned());
        Ok(m4.filter(|m| m["raft"]["voter"] == true))
    });
    let log = c.agent(&leader).log_text();
    assert!(log.contains("adding m4") && log.contains("as a learner"), "joined as a learner first:\n{log}");
    let cfg = c.agent(&joined).ctl_json(&["config", "show"]).expect("config from the new member");
    assert_eq!(
        cfg["config"]["postgres_parameters"]["pgq.k4"], "4",
        "the learner caught up with earlier writes"
    );
    c.check_logs(&[]);
}

/// A member stopped alone (SIGTERM) exits promptly: its servers give the calls they hold (the
/// leader's AppendEntries stream, peers' long polls, which never end by themselves) 500 ms.
#[test]
fn a_member_stopped_alone_exits_within_seconds() {
    let mut c = Cluster::start(options(3));
    let leader = c.wait_for_leader(T);
    let follower = c.agents.iter().map(|a| a.name.clone()).find(|n| *n != leader).expect("a follower");
    // The leader's AppendEntries stream to it is open once it has applied what the leader
    // committed (entries travel on that stream); the long polls run from the start.
    wait_applied(&c, &follower, commit_index(&c, &leader));
    let stopped = std::time::Instant::now();
    c.agent(&follower).signal(rustix::process::Signal::TERM);
    let exit = c.agent_mut(&follower).wait_exit(Duration::from_secs(30));
    let took = stopped.elapsed();
    assert!(exit.is_some_and(|s| s.success()), "{follower} stopped cleanly: {exit:?}");
    assert!(took < Duration::from_secs(5), "{follower} exited {took:?} after SIGTERM");
    c.check_logs(&[]);
}

#[test]
fn removed_member_stops_counting_toward_quorum() {
    let mut c = Cluster::start(options(3));
    c.wait_for_leader(T);
    let joined = c.add_agent().name.clone();
    wait_for("four voters", T, || {
        let st = c.agent("m1").ctl_json(&["status"])?;
        let voters = st["members"]
            .as_array()
            .map(|m| m.iter().filter(|m| m["raft"]["voter"] == true).count())
            .unwrap_or(0);
        Ok((voters == 4).then_some(()))
    });
    let out = c.agent("m2").ctl_json(&["member", "remove", &joined]).expect("remove m4");
    assert_eq!(out["voters"].as_array().map(|v| v.len()), Some(3), "{out}");
    c.agent_mut(&joined).kill9();
    // Two of the remaining three are a majority only if m4 no longer counts (2 of 4 is not).
    let victim = if c.wait_for_leader(T) == "m3" { "m2" } else { "m3" };
    c.agent_mut(victim).kill9();
    let alive = if victim == "m2" { "m3" } else { "m2" };
    wait_for(
        "a write with two of three voters",
        T,
        || Ok(set(&c, alive, "postgres_parameters.pgq.q=1").ok()),
    );
    let err = c.agent("m1").ctl(&["member", "remove", "nobody"]);
    assert_eq!(err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&err.stderr).contains("no member named \"nobody\""));
    c.check_logs(&[]);
}

#[test]
fn minority_cut_off_never_elects_and_majority_keeps_working() {
    if !pgquorum_tests::bins::netns_available() {
        return;
    }
    let mut c = Cluster::start(ClusterOptions { netns: true, ..ClusterOptions::raft_only(5) });
    c.wait_for_leader(T);
    let minority = ["m4", "m5"];
    // Keep the minority away from leadership before cutting, so the cut tests an election.
    let lab = c.lab.as_ref().expect("lab");
    lab.partition(&[3, 4]);
    let start = std::time::Instant::now();
    let mut writes = 0;
    while start.elapsed() < Duration::from_secs(6) {
        for m in minority {
            if let Ok(st) = c.agent(m).local_status() {
                let me_leader = st["members"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().any(|x| x["name"] == m && x["raft"]["role"] == "leader"));
                let leader = st["raft"]["leader"].as_str().unwrap_or("");
                assert!(
                    !me_leader && !minority.contains(&leader) || start.elapsed() < Duration::from_secs(1),
                    "{m} sees a minority leader {leader:?} after {:?}: {st}",
                    start.elapsed()
                );
            }
        }
        if set(&c, "m1", &format!("postgres_parameters.pgq.p{writes}=1")).is_ok() {
            writes += 1;
        }
    }
    assert!(writes >= 5, "the majority kept accepting writes ({writes} in 6s)");
    c.lab.as_ref().expect("lab").heal();
    let idx = commit_index(&c, "m1");
    wait_applied(&c, "m4", idx);
    wait_applied(&c, "m5", idx);
    c.check_logs(&[]);
}

#[test]
fn acknowledged_writes_survive_kill9_of_every_agent_mid_burst() {
    let mut c = Cluster::start(options(3));
    c.wait_for_leader(T);
    let mut acked = Vec::new();
    for i in 0..40 {
        if i == 20 {
            // Kill every agent in the middle of the burst; acknowledged writes must survive.
            for a in &mut c.agents {
                a.kill9();
            }
            for a in &mut c.agents {
                a.start();
            }
        }
        if let Ok(v) = set(&c, "m2", &format!("postgres_parameters.pgq.w{i}={i}")) {
            acked.push((i, v));
        }
    }
    c.wait_for_leader(T);
    assert!(acked.len() >= 20, "most writes were acknowledged: {acked:?}");
    for name in ["m1", "m2", "m3"] {
        let idx = commit_index(&c, name);
        wait_applied(&c, name, idx);
        let cfg = c.agent(name).ctl_json(&["config", "show"]).expect("config");
        for (i, _) in &acked {
            assert_eq!(
                cfg["config"]["postgres_parameters"][format!("pgq.w{i}")],
                i.to_string(),
                "{name} lost write {i}"
            );
        }
    }
    c.check_logs(&[]);
}

#[test]
fn torn_log_tail_is_repaired_and_corruption_refuses_start_until_the_member_rejoins() {
    let mut c = Cluster::start(options(3));
    c.wait_for_leader(T);
    set(&c, "m1", "postgres_parameters.pgq.a=1").expect("write");

    // A torn tail: half a record at the end of m3's log, as a crash mid-write leaves it.
    c.agent_mut("m3").kill9();
    let log = c.agent("m3").dir.join("raft/log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).expect("open log");
    std::io::Write::write_all(&mut f, &[200, 0, 0, 0, 1, 2, 3, 4, b'{', b'"']).expect("append garbage");
    drop(f);
    c.agent_mut("m3").start();
    c.wait_for_leader(T);
    wait_for("m3 to report the repair", T, || {
        Ok(c.agent("m3").log_text().contains("Raft log repaired: cut a torn tail").then_some(()))
    });
    wait_applied(&c, "m3", commit_index(&c, "m1"));

    // A flipped bit in the middle: refuse to start, say what to do.
    c.agent_mut("m2").kill9();
    let log = c.agent("m2").dir.join("raft/log");
    let mut buf = std::fs::read(&log).expect("read log");
    let mid = buf.len() / 3;
    buf[mid] ^= 0x20;
    std::fs::write(&log, &buf).expect("write log");
    c.agent_mut("m2").start();
    let status = c.agent_mut("m2").wait_exit(T).expect("m2 exits instead of running on corrupt data");
    assert_eq!(status.code(), Some(65));
    let text = c.agent("m2").log_text();
    assert!(text.contains("is damaged at byte") && text.contains("aside"), "{text}");

    // Following the advice brings it back as a new node under the same name.
    let raft = c.agent("m2").dir.join("raft");
    std::fs::rename(&raft, c.agent("m2").dir.join("raft.damaged")).expect("move aside");
    c.agent_mut("m2").start();
    wait_for("m2 back as a voter", T, || {
        let st = c.agent("m1").ctl_json(&["status"])?;
        let ok = st["members"].as_array().is_some_and(|ms| {
            ms.len() == 3
                && ms.iter().any(|m| {
                    m["name"] == "m2" && m["raft"]["voter"] == true && m["raft"]["role"] != "unknown"
                })
        });
        Ok(ok.then_some(()))
    });
    wait_applied(&c, "m2", commit_index(&c, "m1"));
    let cfg = c.agent("m2").ctl_json(&["config", "show"]).expect("config");
    assert_eq!(cfg["config"]["postgres_parameters"]["pgq.a"], "1");
    c.check_logs(&["is damaged at byte"]);
}

#[test]
fn agent_refuses_data_of_another_cluster_and_bad_configuration() {
    let mut c = Cluster::start(options(1));
    c.wait_for_leader(T);
    c.agent_mut("m1").stop();
    // Same data directory, different cluster name.
    let a = c.agent_mut("m1");
    a.settings.push("cluster=other".into());
    a.start();
    let status = a.wait_exit(T).expect("exits");
    assert_eq!(status.code(), Some(65));
    assert!(
        a.log_text()
            .contains("belongs to cluster \"e2e\", but this agent is configured for cluster \"other\"")
    );
    // A bad value: exit 64 naming the key.
    a.settings.pop();
    a.settings.push("raft.election_timeout_max=forever".into());
    a.start();
    assert_eq!(a.wait_exit(T).expect("exits").code(), Some(64));
    assert!(a.log_text().contains("config: raft.election_timeout_max: invalid duration \"forever\""));
    c.check_logs(&["belongs to cluster"]);
}

/// `cp -a` (ownership kept: the agents may run as another user than the test).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let _ = std::fs::remove_dir_all(to);
    let out = std::process::Command::new("cp").arg("-a").arg(from).arg(to).output().expect("run cp");
    assert!(out.status.success(), "cp -a: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn another_clusters_data_with_the_same_names_is_refused_with_exit_65() {
    // Two clusters with the same cluster and member names, as every `local up` cluster is.
    let mut a = Cluster::start(options(3));
    a.wait_for_leader(T);
    set(&a, "m1", "postgres_parameters.pgq.cluster=a").expect("a write in cluster A");
    let mut b = Cluster::start(options(3));
    b.wait_for_leader(T);
    set(&b, "m1", "postgres_parameters.pgq.cluster=b").expect("a write in cluster B");
    let id = |c: &Cluster| c.agent("m1").ctl_json(&["status"]).expect("status")["cluster_id"].clone();
    assert_ne!(id(&a), id(&b), "two initialisations, two cluster ids");

    // B's m3 gets A's m3 data directory; A is gone, like a deleted local cluster.
    a.agent_mut("m3").kill9();
    b.agent_mut("m3").kill9();
    copy_dir(&a.agent("m3").dir, &b.agent("m3").dir);
    drop(a);
    let m3 = b.agent_mut("m3");
    m3.mark_log("restart on another cluster's data");
    m3.start();
    let status = m3.wait_exit(T).expect("m3 exits instead of running on another cluster's data");
    assert_eq!(status.code(), Some(65), "{}", m3.log_text());
    let text = m3.log_text();
    assert!(
        text.contains("belongs to another cluster")
            && text.contains("aside")
            && text.contains("empty data_dir"),
        "the refusal says what is wrong and what to do:\n{text}"
    );
    // The others were never disturbed.
    set(&b, "m1", "postgres_parameters.pgq.after=1").expect("cluster B keeps working");
    b.check_logs(&["belongs to another cluster"]);
}

#[test]
fn member_whose_log_tail_was_cut_is_caught_up_and_receives_new_settings() {
    let mut c = Cluster::start(options(3));
    let leader = c.wait_for_leader(T);
    let victim = if leader == "m3" { "m2" } else { "m3" }.to_string();
    for i in 0..8 {
        set(&c, &leader, &format!("postgres_parameters.pgq.k{i}={i}")).expect("write");
    }
    wait_applied(&c, &victim, commit_index(&c, &leader));

    // Cut the last third of the follower's log (entries and the committed marker with them):
    // its log goes back, while the leader still believes it holds everything.
    c.agent_mut(&victim).kill9();
    let log = c.agent(&victim).dir.join("raft/log");
    let len = std::fs::metadata(&log).expect("log").len();
    let f = std::fs::OpenOptions::new().write(true).open(&log).expect("open log");
    f.set_len(len * 2 / 3).expect("truncate log");
    drop(f);
    c.agent_mut(&victim).start();
    wait_for(&format!("{victim} to start on its shorter log"), T, || {
        Ok(c.agent(&victim).local_status().ok().filter(|st| st["raft"]["leader"].is_string()).map(|_| ()))
    });

    // A setting made now reaches it within seconds.
    let leader = c.wait_for_leader(T);
    set(&c, &leader, "postgres_parameters.pgq.after_cut=1").expect("write after the cut");
    wait_for(&format!("the new setting to reach {victim}"), Duration::from_secs(15), || {
        // `config show` answers from the asked agent's own applied state.
        let cfg = c.agent(&victim).ctl_json(&["config", "show"])?;
        Ok((cfg["config"]["postgres_parameters"]["pgq.after_cut"] == "1").then_some(()))
    });
    wait_applied(&c, &victim, commit_index(&c, &leader));
    c.check_logs(&[]);
}
