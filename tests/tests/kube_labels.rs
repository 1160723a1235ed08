//! Pod role labels against a real kube-apiserver, the agents holding the token of the
//! deploy/kubernetes ServiceAccount: under kill -9 failover, switchover, SIGTERM of the
//! primary's agent and an API server stopped during a failover, a watcher (watch stream and a
//! 50 ms poll) never sees two pods labelled primary, and sees the new primary labelled.

use std::time::{Duration, Instant};

use pgquorum_tests::kube_cluster::{KubeCluster, NS, Watcher};
use pgquorum_tests::pg::{CREATE_TABLE, Writer, conninfo, longest_gap_us, lost_writes};
use pgquorum_tests::{ClusterOptions, wait_for};
use rustix::process::Signal;

const T: Duration = Duration::from_secs(90);

/// A lease long enough for a machine loaded by parallel builds (the labels are what is tested).
fn opts() -> ClusterOptions {
    ClusterOptions { settings: vec!["bootstrap.ttl=5s".into()], ..ClusterOptions::default() }
}

fn epoch_annotation(k: &KubeCluster, pod: &str) -> String {
    k.api
        .kubectl(&["-n", NS, "get", "pod", pod, "-o", r"jsonpath={.metadata.annotations.pgquorum\.io/epoch}"])
        .expect("read annotation")
}

/// Waits until `primary` is labelled primary and `unlabelled` carries no role.
fn wait_primary_and_unlabelled(k: &KubeCluster, primary: &str, unlabelled: &str) {
    wait_for(&format!("{primary} labelled primary and {unlabelled} unlabelled"), T, || {
        let roles = k.roles()?;
        let ok = roles.get(primary).map(String::as_str) == Some("primary")
            && roles.get(unlabelled).map(String::as_str) == Some("");
        if ok { Ok(Some(())) } else { Err(format!("{roles:?}")) }
    });
}

/// A 3-member cluster bound to its pods, a watcher running, the labels settled: (cluster,
/// watcher, primary, replicas).
fn labelled_cluster() -> (KubeCluster, Watcher, String, Vec<String>) {
    let mut k = KubeCluster::start(opts());
    let (first, rest) = k.settle(Duration::from_secs(240));
    // Watching from here: the watch stream's initial list, then every change.
    let watcher = k.watch();
    (k, watcher, first, rest)
}

#[test]
fn pod_labels_follow_kill9_failover_and_switchover_and_never_show_two_primaries() {
    let (mut k, watcher, first, rest) = labelled_cluster();
    let epoch = |k: &mut KubeCluster| k.cluster.status().expect("status")["epoch"].to_string();
    let e1 = epoch(&mut k);
    assert_eq!(epoch_annotation(&k, &first), e1);

    // kill -9 of the primary's agent and Postgres: the new primary strips the dead pod's label.
    let killed = Instant::now();
    k.cluster.agent_mut(&first).kill9_with_postgres();
    let second = k.cluster.wait_for_primary(T);
    assert_ne!(second, first);
    wait_primary_and_unlabelled(&k, &second, &first);
    assert!(watcher.saw(&second, "primary", killed).is_some(), "the watch stream saw {second} labelled");
    let e2 = epoch(&mut k);
    assert_ne!(e2, e1);
    assert_eq!(epoch_annotation(&k, &second), e2);
    assert_eq!(epoch_annotation(&k, &first), e2, "the new primary marked the old pod with its epoch");

    // The old primary comes back as a replica and is labelled so.
    k.cluster.agent_mut(&first).start();
    let third_member = rest.iter().find(|n| **n != second).expect("other replica").clone();
    k.cluster.wait_for_streaming(&[&first, &third_member], T);
    k.wait_labels(&second, &[&first, &third_member], T);

    // A switchover moves the label with it.
    let switched = Instant::now();
    let out = k.cluster.agent(&second).ctl_json(&["switchover", "--to", &third_member]).expect("switchover");
    assert_eq!(out["to"], third_member.as_str());
    assert_eq!(k.cluster.wait_for_primary(T), third_member);
    k.cluster.wait_for_streaming(&[&first, &second], T);
    k.wait_labels(&third_member, &[&first, &second], T);
    assert!(watcher.saw(&third_member, "primary", switched).is_some());

    let seen = watcher.stop();
    assert!(seen.violations.is_empty(), "two primaries seen: {:?}", seen.violations);
    assert!(seen.polls > 20, "the poll ran ({} polls)", seen.polls);
    let ev = k.event_reasons(&second);
    for reason in ["Promoted", "Failover", "Demoted"] {
        assert!(ev.iter().any(|r| r == reason), "{second} has a {reason} event: {ev:?}");
    }
    let ev = k.event_reasons(&third_member);
    assert!(ev.iter().any(|r| r == "Switchover"), "{third_member} has a Switchover event: {ev:?}");
    k.cluster.check_logs(&[]);
}

#[test]
fn api_server_stopped_during_a_failover_delays_labels_but_not_the_failover() {
    let (mut k, watcher, first, _) = labelled_cluster();

    k.api.stop_apiserver();
    k.cluster.agent_mut(&first).kill9_with_postgres();
    let second = k.cluster.wait_for_primary(T);
    assert_ne!(second, first, "HA fails over without the API server");
    wait_for("the new primary to say its labels are delayed", T, || {
        let text = k.cluster.agent(&second).log_text();
        Ok(text.contains("pod labels are delayed (HA is not affected)").then_some(()))
    });
    let metrics = k.cluster.agent(&second).http("GET", "/metrics").expect("metrics");
    let in_sync = metrics.body.lines().find(|l| l.starts_with("pgquorum_kube_labels_in_sync{"));
    assert!(in_sync.is_some_and(|l| l.ends_with(" 0")), "{}", metrics.body);

    k.api.start_apiserver();
    wait_primary_and_unlabelled(&k, &second, &first);
    let seen = watcher.stop();
    assert!(seen.violations.is_empty(), "two primaries seen: {:?}", seen.violations);
    // kube-client logs its own failed connections at ERROR while the API server is down.
    k.cluster.check_logs(&["kube_client::client::builder: failed with error client error (Connect)"]);
}

#[test]
fn sigterm_of_the_primary_agent_hands_over_without_losing_a_write() {
    let (mut k, watcher, first, _) = labelled_cluster();
    k.cluster.pg(&first).query(CREATE_TABLE).expect("table");
    let writer =
        Writer::start(conninfo(&k.cluster.postgres_addresses(), true), Duration::from_millis(10), 1, T);
    let first_port = k.cluster.agent(&first).postgres_port().expect("first's Postgres port");
    assert!(writer.wait_acked_on(first_port, T), "no write reached {first}");

    let stopped = Instant::now();
    k.cluster.agent(&first).signal(Signal::TERM);
    let exit = k.cluster.agent_mut(&first).wait_exit(Duration::from_secs(45));
    assert!(exit.is_some_and(|s| s.success()), "the agent stopped cleanly within the grace period: {exit:?}");
    let took = stopped.elapsed();
    let second = k.cluster.wait_for_primary(T);
    assert_ne!(second, first);
    wait_primary_and_unlabelled(&k, &second, &first);
    let second_port = k.cluster.agent(&second).postgres_port().expect("second's Postgres port");
    assert!(writer.wait_acked_on(second_port, T), "no write reached {second} after the handover");
    let writes = writer.stop();
    let lost = lost_writes(&k.cluster.pg(&second), &writes).expect("read");
    assert!(lost.is_empty(), "acknowledged writes lost in the handover: {lost:?}");
    let pause = longest_gap_us(&writes, writes[0].sent_us);
    eprintln!("SIGTERM handover: agent stopped after {took:?}, writes paused {pause} µs");
    assert!(pause < 5_000_000, "writes paused for {pause} µs");
    let log = k.cluster.agent(&first).log_text();
    assert!(log.contains("handing the primary over to"), "{log}");
    let ev = k.event_reasons(&second);
    assert!(ev.iter().any(|r| r == "Switchover"), "{second} has a Switchover event: {ev:?}");
    let seen = watcher.stop();
    assert!(seen.violations.is_empty(), "two primaries seen: {:?}", seen.violations);
    k.cluster.check_logs(&[]);
}

#[test]
fn sigterm_of_a_primary_without_replicas_still_stops_within_the_grace_period() {
    let mut c = pgquorum_tests::Cluster::start(ClusterOptions { members: 1, ..ClusterOptions::default() });
    let only = c.wait_for_primary(T);
    let stopped = Instant::now();
    c.agent(&only).signal(Signal::TERM);
    let exit = c.agent_mut(&only).wait_exit(Duration::from_secs(30));
    assert!(exit.is_some(), "the agent stopped");
    assert!(stopped.elapsed() < Duration::from_secs(15), "stopped after {:?}", stopped.elapsed());
    let log = c.agent(&only).log_text();
    assert!(log.contains("no replica able to take over"), "{log}");
}

#[test]
fn scaling_three_to_five_members_join_by_themselves_clone_and_are_labelled_replica() {
    let (mut k, watcher, _, _) = labelled_cluster();
    let added = [k.add_member(), k.add_member()];
    // Each joins as a learner, becomes a voter, clones from the primary and streams.
    let voters = wait_for("five voters", Duration::from_secs(240), || {
        let st = k.cluster.status()?;
        let members = st["members"].as_array().cloned().unwrap_or_default();
        let voters = members.iter().filter(|m| m["raft"]["voter"] == true).count();
        Ok((voters == 5).then_some(voters))
    });
    assert_eq!(voters, 5);
    let (primary, replicas) = k.settle(Duration::from_secs(240));
    assert_eq!(replicas.len(), 4, "four replicas streaming and labelled: {replicas:?}");
    for m in &added {
        assert!(replicas.contains(m) || primary == *m, "{m} is part of the cluster");
        let ev = k.event_reasons(m);
        assert!(ev.iter().any(|r| r == "Cloning"), "{m} has a Cloning event: {ev:?}");
    }
    let seen = watcher.stop();
    assert!(seen.violations.is_empty(), "two primaries seen: {:?}", seen.violations);
    k.cluster.check_logs(&[]);
}
