//! End-to-end tests of the HTTP endpoint on real clusters: every health check's code on the
//! primary, a synchronous and an asynchronous replica with GET, HEAD and OPTIONS; `/metrics` as
//! Prometheus reads it; and a real HAProxy configured Patroni's way that follows a switchover
//! and a kill -9 failover.

use std::time::{Duration, Instant};

use pgquorum_tests::haproxy::Haproxy;
use pgquorum_tests::pg::{CREATE_TABLE, Readers, Writer, conninfo};
use pgquorum_tests::{Cluster, ClusterOptions, prom, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// m1 and m2 may become primary; m3 never does and never is synchronous (the asynchronous
/// replica). Zones tell them apart in tag queries.
fn options() -> ClusterOptions {
    let set = |m: &str, s: &str| (m.to_string(), s.to_string());
    ClusterOptions {
        member_settings: vec![
            set("m1", "tags.zone=a"),
            set("m2", "tags.zone=a"),
            set("m3", "tags.zone=b"),
            set("m3", "tags.nosync=true"),
            set("m3", "tags.nofailover=true"),
        ],
        ..Default::default()
    }
}

/// Starts the cluster and waits for a primary, two streaming replicas, and the other of m1/m2
/// in the synchronous target; returns (primary, sync replica, async replica).
fn start() -> (Cluster, String, String, String) {
    let mut c = Cluster::start(options());
    let p = c.wait_for_primary(T);
    let s = if p == "m1" { "m2" } else { "m1" }.to_string();
    c.wait_for_streaming(&[&s, "m3"], T);
    wait_for(&format!("{s} in the synchronous target"), T, || {
        let st = c.status()?;
        let target = st["synchronous"]["target"].as_str().unwrap_or_default();
        if target.contains(&s) && !target.contains("m3") {
            Ok(Some(()))
        } else {
            Err(format!("synchronous target {target:?}"))
        }
    });
    (c, p, s, "m3".to_string())
}

/// (request, expected code on the primary, the sync replica, the async replica).
#[rustfmt::skip]
const TABLE: &[(&str, [u16; 3])] = &[
    ("/",                                              [200, 503, 503]),
    ("/primary",                                       [200, 503, 503]),
    ("/read-write",                                    [200, 503, 503]),
    ("/leader",                                        [200, 503, 503]),
    ("/master",                                        [200, 503, 503]),
    ("/standby-leader",                                [503, 503, 503]),
    ("/standby_leader",                                [503, 503, 503]),
    ("/replica",                                       [503, 200, 200]),
    ("/replica?lag=1GB",                               [503, 200, 200]),
    ("/replica?replication_state=streaming",           [503, 200, 200]),
    ("/replica?replication_state=in%20archive%20recovery", [503, 503, 503]),
    ("/replica?tag_zone=b",                            [503, 503, 200]),
    ("/replica?tag_nosync=true",                       [503, 503, 200]),
    ("/replica?tag_rack=1",                            [503, 503, 503]),
    ("/read-only",                                     [200, 200, 200]),
    ("/read-only?tag_zone=a",                          [200, 200, 503]),
    ("/synchronous",                                   [503, 200, 503]),
    ("/sync",                                          [503, 200, 503]),
    ("/quorum",                                        [503, 200, 503]),
    ("/read-only-sync",                                [200, 200, 503]),
    ("/read-only-synchronous",                         [200, 200, 503]),
    ("/read-only-quorum",                              [200, 200, 503]),
    ("/asynchronous",                                  [503, 503, 200]),
    ("/async",                                         [503, 503, 200]),
    ("/health",                                        [200, 200, 200]),
    ("/liveness",                                      [200, 200, 200]),
    ("/readiness",                                     [200, 200, 200]),
    ("/readiness?lag=16MB&mode=write",                 [200, 200, 200]),
    ("/patroni",                                       [200, 200, 200]),
    ("/cluster",                                       [200, 200, 200]),
    ("/history",                                       [200, 200, 200]),
    ("/config",                                        [200, 200, 200]),
    ("/metrics",                                       [200, 200, 200]),
    ("/no-such-endpoint",                              [503, 503, 503]),
];

/// Every mismatch between the table and what the members answer.
fn mismatches(c: &Cluster, members: &[&str; 3]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (request, codes) in TABLE {
        for (member, want) in members.iter().zip(codes) {
            for method in ["GET", "HEAD", "OPTIONS"] {
                let a = match c.agent(member).http(method, request) {
                    Ok(a) => a,
                    Err(e) => {
                        wrong.push(format!("{method} {request} on {member}: {e}"));
                        continue;
                    }
                };
                if a.status != *want {
                    wrong.push(format!(
                        "{method} {request} on {member}: {} (want {want}) {}",
                        a.status, a.body
                    ));
                }
                let body_ok = match method {
                    "GET" if *request == "/metrics" => a.body.ends_with("# EOF\n"),
                    "GET" => a.json().is_ok(),
                    _ => a.body.is_empty(),
                };
                if !body_ok {
                    wrong.push(format!("{method} {request} on {member}: unexpected body {:?}", a.body));
                }
            }
        }
    }
    wrong
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[test]
fn every_health_check_answers_patronis_codes_by_role_with_get_head_and_options() {
    let (mut c, p, s, a) = start();
    wait_for("every endpoint answering as the table says", Duration::from_secs(30), || {
        let wrong = mismatches(&c, &[&p, &s, &a]);
        if wrong.is_empty() { Ok(Some(())) } else { Err(wrong.join("\n")) }
    });

    // The documents carry what load balancers and dashboards read.
    let doc = c.agent(&p).http("GET", "/patroni").expect("patroni").json().expect("json");
    assert_eq!((doc["role"].as_str(), doc["state"].as_str()), (Some("primary"), Some("running")), "{doc}");
    assert!(doc["xlog"]["location"].as_u64().is_some_and(|l| l > 0), "{doc}");
    assert_eq!(doc["replication"].as_array().map(Vec::len), Some(2), "{doc}");
    assert_eq!(
        (doc["patroni"]["scope"].as_str(), doc["patroni"]["name"].as_str()),
        (Some("e2e"), Some(p.as_str()))
    );
    let doc = c.agent(&a).http("GET", "/patroni").expect("patroni").json().expect("json");
    assert_eq!(doc["replication_state"], "streaming", "{doc}");
    assert!(doc["xlog"]["replayed_location"].as_u64().is_some(), "{doc}");
    assert_eq!(doc["tags"]["zone"], "b", "{doc}");

    let cluster = c.agent(&a).http("GET", "/cluster").expect("cluster").json().expect("json");
    let members = cluster["members"].as_array().expect("members").clone();
    let row = |n: &str| members.iter().find(|m| m["name"] == n).cloned().unwrap_or(Value::Null);
    assert_eq!(row(&p)["role"], "leader", "{cluster}");
    assert_eq!(row(&s)["role"], "sync_standby", "{cluster}");
    assert_eq!(row(&a)["role"], "replica", "{cluster}");
    let st = c.status().expect("status");
    for agent in &c.agents {
        let url = format!("http://{}", agent.http.as_deref().expect("http"));
        assert_eq!(row(&agent.name)["api_url"], url.as_str(), "{cluster}");
        let status_row =
            st["members"].as_array().and_then(|m| m.iter().find(|m| m["name"] == agent.name.as_str()));
        assert_eq!(status_row.map(|r| r["api_url"].clone()), Some(Value::from(url)), "{st}");
    }
    assert_eq!(
        c.agent(&s).http("GET", "/history").expect("history").json().expect("json"),
        Value::Array(vec![])
    );
    let config = c.agent(&s).http("GET", "/config").expect("config").json().expect("json");
    assert_eq!(config["durability"], "availability", "{config}");

    // Latency of a health check as HAProxy does it: a new connection per request.
    for method in ["GET", "HEAD"] {
        let mut took: Vec<Duration> = (0..500)
            .map(|_| {
                let t = Instant::now();
                let answer = c.agent(&p).http(method, "/primary").expect("answer");
                assert_eq!(answer.status, 200);
                t.elapsed()
            })
            .collect();
        took.sort();
        let (p50, p99) = (percentile(&took, 0.5), percentile(&took, 0.99));
        eprintln!(
            "{method} /primary over a new connection, 500 requests: p50 {p50:?}, p99 {p99:?}, max {:?}",
            took[499]
        );
        assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    }
    c.check_logs(&[]);
}

#[test]
fn metrics_parse_as_prometheus_text_with_each_members_role_and_positions() {
    let (c, p, s, a) = start();
    let scrape = |m: &str| {
        let answer = c.agent(m).http("GET", "/metrics").expect("metrics");
        assert_eq!(answer.status, 200);
        assert!(answer.header("content-type").is_some_and(|t| t.contains("openmetrics-text")), "{answer:?}");
        prom::parse(&answer.body)
            .unwrap_or_else(|e| panic!("{m}'s /metrics does not parse: {e}\n{}", answer.body))
    };
    wait_for("positions reported on every member", T, || {
        let ok = [&p, &s, &a].iter().all(|m| {
            let samples = scrape(m);
            let name =
                if *m == &p { "pgquorum_wal_position_bytes" } else { "pgquorum_replay_position_bytes" };
            prom::value(&samples, name, &[]).is_some_and(|v| v > 0.0)
        });
        Ok(ok.then_some(()))
    });
    let mut leaders = 0.0;
    for m in [&p, &s, &a] {
        let samples = scrape(m);
        let v = |name: &str| prom::value(&samples, name, &[("cluster", "e2e"), ("member", m.as_str())]);
        let primary = m == &p;
        assert_eq!(v("pgquorum_primary"), Some(if primary { 1.0 } else { 0.0 }), "{m}");
        let role = if primary { "primary" } else { "replica" };
        assert_eq!(prom::value(&samples, "pgquorum_role", &[("role", role)]), Some(1.0), "{m}");
        assert_eq!(v("pgquorum_postgres_running"), Some(1.0), "{m}");
        assert_eq!(v("pgquorum_epoch"), Some(1.0), "{m}");
        assert_eq!(v("pgquorum_timeline"), Some(1.0), "{m}");
        assert_eq!(v("pgquorum_failovers_total"), Some(0.0), "{m}");
        assert_eq!(v("pgquorum_switchovers_total"), Some(0.0), "{m}");
        assert!(v("pgquorum_raft_term").is_some_and(|t| t >= 1.0), "{m}");
        assert!(v("pgquorum_raft_commit_index").is_some_and(|i| i >= 1.0), "{m}");
        leaders += v("pgquorum_raft_leader").expect("raft_leader");
        let lease = v("pgquorum_lease_remaining_seconds").expect("lease");
        if primary {
            assert!(lease > 0.0 && lease <= 1.5, "{m}: lease {lease}");
            assert_eq!(v("pgquorum_lag_bytes"), Some(0.0), "{m}");
            assert!(v("pgquorum_receive_position_bytes").is_none(), "{m}");
        } else {
            assert_eq!(lease, 0.0, "{m}");
            assert!(v("pgquorum_receive_position_bytes").is_some_and(|b| b > 0.0), "{m}");
            assert!(v("pgquorum_lag_bytes").is_some_and(|l| l < (16 << 20) as f64), "{m}");
            assert!(v("pgquorum_wal_position_bytes").is_none(), "{m}");
        }
    }
    assert_eq!(leaders, 1.0, "exactly one member leads Raft");
    c.check_logs(&[]);
}

/// The ports that acknowledged writes, in order, with repeats folded: the primaries a client
/// of the load balancer wrote to.
fn primaries_written_to(writes: &[pgquorum_tests::pg::Write]) -> Vec<Option<u16>> {
    let mut seq: Vec<Option<u16>> = writes.iter().filter(|w| w.ok).map(|w| w.port).collect();
    seq.dedup();
    seq
}

#[test]
fn haproxy_checking_primary_follows_a_switchover_and_a_kill9_failover() {
    let (mut c, first, second, _) = start();
    let haproxy = Haproxy::shipped(&c, None, "shipped");
    assert_eq!(haproxy.wait_routes_to_primary(&mut c, T), first);
    c.pg(&first).query(CREATE_TABLE).expect("table");
    // A client of the load balancer only: it reconnects through HAProxy after every error.
    let writer = Writer::start(
        conninfo(std::slice::from_ref(&haproxy.addr), false),
        Duration::from_millis(20),
        1,
        Duration::from_secs(300),
    );
    let (first_port, second_port) = (
        c.agent(&first).postgres_port().expect("first's Postgres port"),
        c.agent(&second).postgres_port().expect("second's Postgres port"),
    );
    assert!(writer.wait_acked_on(first_port, T), "no write through HAProxy reached {first}");

    // Planned: a switchover to the synchronous replica.
    let out = c.agent(&second).ctl_json(&["switchover", "--to", &second]).expect("switchover");
    assert_eq!(out["to"], second.as_str());
    let switched_at = Instant::now();
    assert_eq!(haproxy.wait_routes_to_primary(&mut c, T), second);
    let routed_after_switchover = switched_at.elapsed();
    c.wait_for_streaming(&[&first], T);
    assert!(
        writer.wait_acked_on(second_port, T),
        "no write through HAProxy reached {second} after the switchover"
    );

    // Readers on long-lived sessions through the replicas listener (leastconn puts one on each
    // replica, so one sits on the member about to be promoted).
    wait_for(&format!("{first} back in the replicas listener's pool"), T, || {
        Ok(haproxy.routed_replica(&c).is_ok_and(|r| r.member == first).then_some(()))
    });
    let readers = Readers::start(&haproxy.replicas, 2, Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(500));

    // Unplanned: kill -9 of the new primary; m3 is nofailover, so the first one comes back.
    let killed_at = Instant::now();
    c.agent_mut(&second).kill9_with_postgres();
    let third = haproxy.wait_routes_to_primary(&mut c, T);
    let routed_after_kill = killed_at.elapsed();
    assert_eq!(third, first);
    // The replicas listener never hands out the new primary: every new session lands on a
    // member in recovery (the only one left is m3 until the killed member is back).
    // (m3 may be out of the pool for a moment while it follows the new primary.)
    let mut served = 0;
    wait_for("10 sessions through the replicas listener", T, || {
        if let Ok(r) = haproxy.routed_replica(&c) {
            assert!(r.in_recovery && r.member != first, "the replicas listener routed to {r:?}");
            served += 1;
        }
        Ok((served >= 10).then_some(()))
    });
    assert!(writer.wait_acked_on(first_port, T), "no write through HAProxy reached {first} after the kill");
    let writes = writer.stop();
    std::thread::sleep(Duration::from_millis(500));
    let reads = readers.stop();
    assert!(
        reads.iter().any(|r| r.port == Some(first_port)),
        "a reader sat on {first} before its promotion: {} reads",
        reads.len()
    );
    let on_primary: Vec<_> = reads.iter().filter(|r| r.primary).collect();
    assert!(on_primary.is_empty(), "the replicas listener served reads from a primary: {on_primary:?}");

    let misrouted: Vec<_> =
        writes.iter().filter(|w| w.error.as_deref().is_some_and(|e| e.contains("read-only"))).collect();
    assert!(misrouted.is_empty(), "HAProxy sent writes to a replica: {misrouted:?}");
    assert_eq!(
        primaries_written_to(&writes),
        vec![Some(first_port), Some(second_port), Some(first_port)],
        "writes went to each primary in turn, never back to a former one"
    );
    let lost = pgquorum_tests::pg::lost_writes(&c.pg(&third), &writes).expect("read");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    eprintln!(
        "HAProxy routed to the new primary {routed_after_switchover:?} after the switchover, \
         {routed_after_kill:?} after the kill"
    );
    assert!(routed_after_kill < Duration::from_secs(15), "{routed_after_kill:?}");

    // The killed primary rejoins as a replica: HAProxy keeps it out of rotation.
    c.agent_mut(&second).start();
    c.wait_for_streaming(&[&second], T);
    for _ in 0..10 {
        let r = haproxy.routed(&c).expect("routed");
        assert_eq!((r.member.as_str(), r.in_recovery), (third.as_str(), false));
        std::thread::sleep(Duration::from_millis(100));
    }
    let history = c.agent(&third).http("GET", "/history").expect("history").json().expect("json");
    let lines = history.as_array().expect("list");
    let reasons: Vec<(&str, &str)> =
        lines.iter().filter_map(|l| Some((l[2].as_str()?, l[4].as_str()?))).collect();
    assert_eq!(reasons, vec![("switchover", second.as_str()), ("failover", third.as_str())], "{history}");
    let samples =
        prom::parse(&c.agent(&third).http("GET", "/metrics").expect("metrics").body).expect("parses");
    assert_eq!(prom::value(&samples, "pgquorum_failovers_total", &[]), Some(1.0));
    assert_eq!(prom::value(&samples, "pgquorum_switchovers_total", &[]), Some(1.0));
    assert_eq!(prom::value(&samples, "pgquorum_epoch", &[]), Some(3.0));
    assert!(haproxy.log_text().contains("is DOWN"), "haproxy noticed: {}", haproxy.log_text());
    c.check_logs(&[]);
}
