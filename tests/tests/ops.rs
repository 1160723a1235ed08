//! End-to-end tests of the operator interface: `pgquorumctl` driving a real cluster — status,
//! switchover (named, any, scheduled), pause/resume, manual failover, dynamic configuration
//! with reload and restart, history, member add/remove.

use std::time::{Duration, Instant};

use pgquorum_tests::pg::{CREATE_TABLE, Writer, conninfo, longest_gap_us, lost_writes};
use pgquorum_tests::{Cluster, ClusterOptions, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn others(c: &Cluster, not: &str) -> Vec<String> {
    c.agents.iter().map(|a| a.name.clone()).filter(|n| n != not).collect()
}

/// Runs pgquorumctl through `via`; returns (exit code, stdout, stderr).
fn ctl(c: &Cluster, via: &str, args: &[&str]) -> (i32, String, String) {
    let out = c.agent(via).ctl(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn healthy(c: &mut Cluster) -> (String, Vec<String>) {
    let p = c.wait_for_primary(T);
    let rest = others(c, &p);
    let names: Vec<&str> = rest.iter().map(String::as_str).collect();
    c.wait_for_streaming(&names, T);
    (p, rest)
}

fn show(pg: &pgquorum_tests::Pg, param: &str) -> String {
    pg.value(&format!("SHOW {param}")).expect("SHOW").unwrap_or_default()
}

#[test]
fn status_switchover_to_a_named_member_and_to_any_keeps_every_write_and_records_history() {
    let mut c = Cluster::start(ClusterOptions::default());
    let (first, rest) = healthy(&mut c);

    let (code, table, err) = ctl(&c, &rest[0], &["status"]);
    assert_eq!(code, 0, "{err}");
    for want in
        ["Cluster:", "e2e", "Primary:", &first, "Durability:", "Raft:", "Member", "Replay LSN", "streaming"]
    {
        assert!(table.contains(want), "status table lacks {want:?}:\n{table}");
    }
    // A settled primary reads its replication state about once a second (issue 10), so a
    // replica's sync state may appear shortly after it streams.
    let st = wait_for("every replica's sync state in status", T, || {
        let st = c.agent(&rest[0]).ctl_json(&["status"])?;
        let members = st["members"].as_array().cloned().unwrap_or_default();
        let known = members.iter().filter(|m| m["role"] == "replica").all(|m| m["sync_state"].is_string());
        Ok(known.then_some(st))
    });
    for key in ["cluster", "system_identifier", "primary", "epoch", "timeline", "durability", "paused"] {
        assert!(!st[key].is_null(), "status JSON lacks {key}: {st}");
    }
    assert!(st["raft"]["leader"].is_string() && st["raft"]["term"].as_u64().is_some(), "{st}");
    for m in st["members"].as_array().expect("members") {
        for key in ["name", "role", "state", "timeline", "postgres", "api_url"] {
            assert!(!m[key].is_null(), "member lacks {key}: {m}");
        }
        for key in ["receive_lsn", "replay_lsn", "lag_bytes", "sync_state"] {
            assert!(m.get(key).is_some(), "member lacks {key}: {m}");
        }
        if m["role"] == "replica" {
            assert!(m["lag_bytes"].as_u64().is_some() && m["sync_state"].is_string(), "{m}");
            assert!(m["receive_lsn"].is_string() && m["replay_lsn"].is_string(), "{m}");
        }
    }

    c.pg(&first).query(CREATE_TABLE).expect("table");
    let writer = Writer::start(conninfo(&c.postgres_addresses(), true), Duration::from_millis(10), 1, T);
    std::thread::sleep(Duration::from_millis(500));

    // To a named member.
    let target = rest[1].clone();
    let started = Instant::now();
    let out = c.agent(&rest[0]).ctl_json(&["switchover", "--to", &target]).expect("switchover --to");
    assert_eq!(out["from"], first.as_str());
    assert_eq!(out["to"], target.as_str());
    assert!(started.elapsed() < Duration::from_secs(10), "switchover took {:?}", started.elapsed());
    assert_eq!(c.wait_for_primary(T), target);
    c.wait_for_streaming(&[&first, &rest[0]], T);

    // To any: the coordinator picks a replica.
    let out = c.agent(&first).ctl_json(&["switchover"]).expect("switchover");
    let third = out["to"].as_str().expect("new primary named").to_string();
    assert_ne!(third, target);
    assert_eq!(c.wait_for_primary(T), third);
    let rest_now = others(&c, &third);
    c.wait_for_streaming(&[&rest_now[0], &rest_now[1]], T);
    std::thread::sleep(Duration::from_millis(300));

    let writes = writer.stop();
    let lost = lost_writes(&c.pg(&third), &writes).expect("read");
    assert!(lost.is_empty(), "acknowledged writes lost across switchovers: {lost:?}");
    let pause = longest_gap_us(&writes, writes[0].sent_us);
    assert!(pause < 5_000_000, "writes paused for {pause} µs");

    let h = c.agent(&first).ctl_json(&["history"]).expect("history");
    let h = h.as_array().expect("list");
    assert_eq!(h.len(), 3, "{h:?}");
    assert_eq!(h[1]["primary"], target.as_str());
    assert_eq!(h[1]["previous"], first.as_str());
    assert_eq!(h[1]["reason"], "switchover");
    assert_eq!(h[2]["primary"], third.as_str());
    let (code, table, _) = ctl(&c, &first, &["history"]);
    assert!(code == 0 && table.contains("Epoch") && table.contains("switchover"), "{table}");

    // A switchover to a member that does not exist is refused with the fix.
    let (code, _, err) = ctl(&c, &first, &["switchover", "--to", "nosuch"]);
    assert_eq!(code, 2, "an unknown member is a usage error");
    assert!(err.contains("nosuch") && err.contains("members are"), "{err}");
    c.check_logs(&[]);
}

#[test]
fn scheduled_switchover_waits_for_its_time_then_happens() {
    let mut c = Cluster::start(ClusterOptions::default());
    let (first, rest) = healthy(&mut c);
    let (code, out, err) = ctl(&c, &rest[0], &["switchover", "--to", &rest[0], "--at", "+6s"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("scheduled at"), "{out}");
    let (code, _, err) = ctl(&c, &rest[0], &["switchover", "--at", "tomorrow"]);
    assert_eq!(code, 2, "bad --at is a usage error");
    assert!(err.contains("RFC 3339"), "{err}");

    std::thread::sleep(Duration::from_secs(3));
    let st = c.status().expect("status");
    assert_eq!(st["primary"], first.as_str(), "not before its time");
    assert!(st["switchover"].is_string(), "the pending switchover is shown: {st}");
    let (_, table, _) = ctl(&c, &first, &["status"]);
    assert!(table.contains("Switchover:    pending"), "{table}");

    wait_for(
        "the scheduled switchover",
        T,
        || Ok((c.status()?["primary"] == rest[0].as_str()).then_some(())),
    );
    assert_eq!(c.wait_for_primary(T), rest[0]);
    let st = c.status().expect("status");
    assert!(st["switchover"].is_null(), "done and cleared: {st}");
    c.wait_for_streaming(&[&first, &rest[1]], T);
    c.check_logs(&[]);
}

#[test]
fn paused_cluster_leaves_a_killed_primary_alone_until_manual_failover() {
    let mut c = Cluster::start(ClusterOptions::default());
    let (old, rest) = healthy(&mut c);

    // With a healthy primary, failover is refused: that is what switchover is for.
    let (code, _, err) = ctl(&c, &rest[0], &["failover", "--to", &rest[0]]);
    assert_eq!(code, 1);
    assert!(err.contains("switchover"), "{err}");

    let (code, _, err) = ctl(&c, &rest[0], &["pause"]);
    assert_eq!(code, 0, "{err}");
    wait_for("paused in status", T, || Ok((c.status()?["paused"] == true).then_some(())));
    let epoch = c.status().expect("status")["epoch"].clone();
    c.agent_mut(&old).kill9_with_postgres();
    std::thread::sleep(Duration::from_secs(8));
    let st = c.status().expect("status");
    assert_eq!(st["epoch"], epoch, "no failover while paused: {st}");
    for r in &rest {
        assert_eq!(c.pg(r).value("SELECT pg_is_in_recovery()").expect("query").as_deref(), Some("t"), "{r}");
    }

    let started = Instant::now();
    let (code, out, err) = ctl(&c, &rest[1], &["failover", "--to", &rest[1]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{} is primary", rest[1])), "{out}");
    assert_eq!(c.wait_for_primary(T), rest[1]);
    assert!(started.elapsed() < Duration::from_secs(15));

    let (code, _, err) = ctl(&c, &rest[0], &["resume"]);
    assert_eq!(code, 0, "{err}");
    c.agent_mut(&old).start();
    c.wait_for_streaming(&[&old, &rest[0]], T);
    let h = c.agent(&rest[0]).ctl_json(&["history"]).expect("history");
    assert_eq!(
        h.as_array().and_then(|h| h.last()).map(|e| e["reason"].clone()),
        Some("manual failover".into())
    );
    c.check_logs(&[]);
}

fn pending_restart(st: &Value, name: &str) -> Vec<String> {
    st["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == name))
        .and_then(|m| m["pending_restart"].as_array())
        .map(|p| p.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[test]
fn config_set_reloads_or_asks_for_a_restart_and_restart_pending_applies_it() {
    let mut c = Cluster::start(ClusterOptions::default());
    let (p, rest) = healthy(&mut c);
    let all: Vec<String> = c.agents.iter().map(|a| a.name.clone()).collect();

    // A bad value is refused, names the key, and stores nothing.
    let before = c.agent(&p).ctl_json(&["config", "show"]).expect("config show");
    let (code, _, err) = ctl(&c, &p, &["config", "set", "ttl=fast"]);
    assert_eq!(code, 2, "a bad value is a usage error");
    assert!(err.contains("ttl"), "{err}");
    let after = c.agent(&p).ctl_json(&["config", "show"]).expect("config show");
    assert_eq!(before["version"], after["version"]);

    // Reloadable: every member picks it up without a restart.
    let (code, out, err) = ctl(&c, &rest[0], &["config", "set", "postgres_parameters.work_mem=7MB"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("work_mem"), "the change is shown: {out}");
    for m in &all {
        let pg = c.pg(m);
        wait_for(&format!("work_mem on {m}"), T, || Ok((show(&pg, "work_mem") == "7MB").then_some(())));
    }

    // Needs a restart: Postgres reports it pending; `restart --pending` applies it. With
    // archiving on, status also shows Postgres's archiver (its counters stay 0 until the WAL
    // archive sets `archive_command`, which the agent reserves for itself).
    let st = c.status().expect("status");
    assert!(st.get("archiver").is_none(), "no archiver while archiving is off: {st}");
    let (code, _, err) = ctl(
        &c,
        &rest[0],
        &["config", "set", "postgres_parameters.shared_buffers=48MB", "postgres_parameters.archive_mode=on"],
    );
    assert_eq!(code, 0, "{err}");
    wait_for("shared_buffers pending restart everywhere", T, || {
        let st = c.status()?;
        Ok(all.iter().all(|m| pending_restart(&st, m).contains(&"shared_buffers".to_string())).then_some(()))
    });
    let (_, table, _) = ctl(&c, &p, &["status"]);
    assert!(table.contains("pending restart") && table.contains("shared_buffers"), "{table}");
    let (code, out, err) = ctl(&c, &p, &["restart", "--pending"]);
    assert_eq!(code, 0, "{err}\n{out}");
    for m in &all {
        assert_eq!(show(&c.pg(m), "shared_buffers"), "48MB", "{m}");
    }
    assert_eq!(c.wait_for_primary(T), p, "restarting keeps the primary where it was");
    let st = c.status().expect("status");
    assert!(all.iter().all(|m| pending_restart(&st, m).is_empty()), "{st}");

    let archiver = wait_for("the archiver in status", T, || {
        let st = c.status()?;
        Ok(st.get("archiver").filter(|a| a.is_object()).cloned())
    });
    assert_eq!(archiver["archived_count"], 0, "{archiver}");
    assert_eq!(archiver["failed_count"], 0, "{archiver}");
    assert!(archiver["last_archived_wal"].is_null(), "{archiver}");
    let (_, table, _) = ctl(&c, &p, &["status"]);
    assert!(table.contains("Archiving:     0 archived; 0 failed"), "{table}");
    let metrics = c.agent(&p).http("GET", "/metrics").expect("metrics").body;
    assert!(metrics.contains("pgquorum_postgres_archived_wal_total{"), "{metrics}");
    c.check_logs(&[]);
}

#[test]
fn member_added_by_hand_joins_and_a_removed_member_leaves_with_its_slot() {
    let mut c = Cluster::start(ClusterOptions::default());
    let (p, _) = healthy(&mut c);
    let grpc = c.add_agent_with(&["join=manual"]).grpc.clone();
    let name = c.agents.last().expect("added").name.clone();
    std::thread::sleep(Duration::from_secs(3));
    let st = c.status().expect("status");
    let listed = st["members"].as_array().expect("members").iter().any(|m| m["name"] == name.as_str());
    assert!(!listed, "{name} waits to be added by hand: {st}");
    assert!(c.agent(&name).log_text().contains("member add"), "it says how to add it");

    let (code, out, err) = ctl(&c, &p, &["member", "add", &name, &grpc]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&name), "{out}");
    c.wait_for_streaming(&[&name], T);
    let (_, list, _) = ctl(&c, &p, &["member", "list"]);
    assert!(list.contains(&name) && !list.contains("learner"), "a voter: {list}");
    let slot = format!("pgquorum_{name}");
    let primary_pg = c.pg(&p);
    wait_for("a slot for the new member", T, || {
        let n = primary_pg
            .value(&format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"))?;
        Ok((n.as_deref() == Some("1")).then_some(()))
    });

    let (code, _, err) = ctl(&c, &p, &["member", "remove", &name]);
    assert_eq!(code, 0, "{err}");
    c.agent_mut(&name).kill9_with_postgres();
    wait_for("the slot dropped", T, || {
        let n = primary_pg
            .value(&format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"))?;
        Ok((n.as_deref() == Some("0")).then_some(()))
    });
    let st = wait_for("the synchronous set without the removed member", T, || {
        let st = c.status()?;
        Ok((!st["synchronous"]["recorded"].as_str().unwrap_or(&name).contains(&name)).then_some(st))
    });
    assert_eq!(st["members"].as_array().map(Vec::len), Some(3), "{st}");
    // Three voters left: losing the primary still leaves a majority that fails over (once the
    // synchronous set has left the removed member behind: until then an acknowledged commit
    // could be on it alone, and failover would wait for it).
    c.agent_mut(&p).kill9_with_postgres();
    let new = c.wait_for_primary(T);
    assert_ne!(new, p);
    c.check_logs(&[]);
}
