//! Every health endpoint against every member situation, as one table: each row a request, each
//! column the expected code in one situation.

use std::collections::BTreeMap;
use std::time::Duration;

use pgquorum_core::Lsn;

use super::*;

const MB: u64 = 1 << 20;

/// The situations, in column order.
const COLUMNS: [&str; 14] = [
    "primary with lease",
    "replica streaming, sync set",
    "replica streaming, async",
    "replica lagging 100MB",
    "replica in archive recovery",
    "replica tagged noloadbalance",
    "witness",
    "postgres stopped",
    "paused, primary, loop idle 10s",
    "replica, loop stuck 5s",
    "writable without lease",
    "replica being promoted",
    "own report 10s old",
    "primary lease within fence lead",
];

fn situation(name: &str) -> Situation {
    let ms = Duration::from_millis;
    let tags = |zone: &str, noloadbalance: bool| -> BTreeMap<String, String> {
        [
            ("nofailover", "false"),
            ("nosync", "false"),
            ("noloadbalance", if noloadbalance { "true" } else { "false" }),
            ("failover_priority", "1"),
            ("zone", zone),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let replica = Situation {
        pg: Pg::Recovery { streaming: true },
        report_age: ms(50),
        lease_left: None,
        granted: false,
        in_sync_set: false,
        receive_lsn: Some(Lsn(200 * MB)),
        replay_lsn: Some(Lsn(200 * MB)),
        primary_lsn: Some(Lsn(200 * MB)),
        tags: tags("a", false),
        maximum_lag_on_failover: MB,
        ttl: ms(1500),
        paused: false,
        since_tick: Some(ms(50)),
    };
    let primary = Situation {
        pg: Pg::Writable,
        lease_left: Some(ms(1200)),
        granted: true,
        receive_lsn: None,
        replay_lsn: None,
        ..replica.clone()
    };
    match name {
        "primary with lease" => primary,
        "replica streaming, sync set" => Situation { in_sync_set: true, ..replica },
        "replica streaming, async" => Situation { tags: tags("b", false), ..replica },
        // Received everything, replayed 100MB less: behind by replay, not by receipt.
        "replica lagging 100MB" => Situation { replay_lsn: Some(Lsn(100 * MB)), ..replica },
        "replica in archive recovery" => Situation { pg: Pg::Recovery { streaming: false }, ..replica },
        "replica tagged noloadbalance" => Situation { tags: tags("a", true), ..replica },
        "witness" => Situation { pg: Pg::Disabled, receive_lsn: None, replay_lsn: None, ..replica },
        "postgres stopped" => {
            Situation { pg: Pg::NotRunning, receive_lsn: None, replay_lsn: None, ..replica }
        }
        "paused, primary, loop idle 10s" => {
            Situation { paused: true, since_tick: Some(ms(10_000)), ..primary }
        }
        "replica, loop stuck 5s" => Situation { since_tick: Some(ms(5000)), ..replica },
        "writable without lease" => Situation { lease_left: None, granted: false, ..primary },
        "replica being promoted" => Situation { granted: true, ..replica },
        "own report 10s old" => Situation { report_age: ms(10_000), since_tick: Some(ms(10_000)), ..primary },
        "primary lease within fence lead" => Situation { lease_left: Some(ms(100)), ..primary },
        other => panic!("no situation {other}"),
    }
}

/// (request, expected code per column).
#[rustfmt::skip]
const TABLE: &[(&str, [u16; 14])] = &[
    //                                                     P    SY   AS   LAG  ARC  NLB  WIT  STOP PAUS STCK NOLS PROM OLD  FENC
    ("/",                                                 [200, 503, 503, 503, 503, 503, 503, 503, 200, 503, 503, 503, 503, 503]),
    ("/primary",                                          [200, 503, 503, 503, 503, 503, 503, 503, 200, 503, 503, 503, 503, 503]),
    ("/read-write",                                       [200, 503, 503, 503, 503, 503, 503, 503, 200, 503, 503, 503, 503, 503]),
    ("/leader",                                           [200, 503, 503, 503, 503, 503, 503, 503, 200, 503, 503, 503, 503, 503]),
    ("/master",                                           [200, 503, 503, 503, 503, 503, 503, 503, 200, 503, 503, 503, 503, 503]),
    ("/primary?tag_zone=nowhere",                         [200, 503, 503, 503, 503, 503, 503, 503, 200, 503, 503, 503, 503, 503]),
    ("/standby-leader",                                   [503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503]),
    ("/standby_leader",                                   [503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503]),
    ("/replica",                                          [503, 200, 200, 200, 200, 503, 503, 503, 503, 200, 503, 503, 503, 503]),
    ("/replica?lag=16MB",                                 [503, 200, 200, 503, 200, 503, 503, 503, 503, 200, 503, 503, 503, 503]),
    ("/replica?lag=104857600",                            [503, 200, 200, 200, 200, 503, 503, 503, 503, 200, 503, 503, 503, 503]),
    ("/replica?lag=lots",                                 [503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503]),
    ("/replica?replication_state=streaming",              [503, 200, 200, 200, 503, 503, 503, 503, 503, 200, 503, 503, 503, 503]),
    ("/replica?replication_state=in%20archive%20recovery",[503, 503, 503, 503, 200, 503, 503, 503, 503, 503, 503, 503, 503, 503]),
    ("/replica?replication_state=in+archive+recovery",    [503, 503, 503, 503, 200, 503, 503, 503, 503, 503, 503, 503, 503, 503]),
    ("/replica?tag_zone=b",                               [503, 503, 200, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503]),
    ("/replica?tag_nosync=false&tag_failover_priority=1", [503, 200, 200, 200, 200, 503, 503, 503, 503, 200, 503, 503, 503, 503]),
    ("/replica?tag_rack=7",                               [503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503]),
    ("/read-only",                                        [200, 200, 200, 200, 200, 503, 503, 503, 200, 200, 503, 503, 503, 503]),
    ("/read-only?tag_zone=a",                             [200, 200, 503, 200, 200, 503, 503, 503, 200, 200, 503, 503, 503, 503]),
    ("/read-only?lag=16MB",                               [200, 200, 200, 503, 200, 503, 503, 503, 200, 200, 503, 503, 503, 503]),
    ("/synchronous",                                      [503, 200, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503]),
    ("/sync",                                             [503, 200, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503]),
    ("/quorum",                                           [503, 200, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503]),
    ("/read-only-sync",                                   [200, 200, 503, 503, 503, 503, 503, 503, 200, 503, 503, 503, 503, 503]),
    ("/read-only-synchronous",                            [200, 200, 503, 503, 503, 503, 503, 503, 200, 503, 503, 503, 503, 503]),
    ("/read-only-quorum",                                 [200, 200, 503, 503, 503, 503, 503, 503, 200, 503, 503, 503, 503, 503]),
    ("/asynchronous",                                     [503, 503, 200, 200, 200, 503, 503, 503, 503, 200, 503, 503, 503, 503]),
    ("/async",                                            [503, 503, 200, 200, 200, 503, 503, 503, 503, 200, 503, 503, 503, 503]),
    ("/async?lag=1MB",                                    [503, 503, 200, 503, 200, 503, 503, 503, 503, 200, 503, 503, 503, 503]),
    ("/health",                                           [200, 200, 200, 200, 200, 200, 503, 503, 200, 200, 200, 200, 503, 200]),
    ("/health?tag_zone=b",                                [503, 503, 200, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503]),
    ("/liveness",                                         [200, 200, 200, 200, 200, 200, 200, 200, 200, 503, 200, 200, 503, 200]),
    ("/readiness",                                        [200, 200, 200, 503, 503, 200, 503, 503, 200, 200, 503, 200, 503, 503]),
    ("/readiness?lag=200MB",                              [200, 200, 200, 200, 503, 200, 503, 503, 200, 200, 503, 200, 503, 503]),
    ("/readiness?mode=write",                             [200, 200, 200, 200, 503, 200, 503, 503, 200, 200, 503, 200, 503, 503]),
];

#[test]
fn every_endpoint_answers_as_patroni_does_in_every_member_situation() {
    let mut wrong = Vec::new();
    for (request, codes) in TABLE {
        let (path, query) = request.split_once('?').unwrap_or((request, ""));
        let endpoint = Endpoint::from_path(path).unwrap_or_else(|| panic!("{path} is an endpoint"));
        let q = Query::parse(query);
        for (column, want) in COLUMNS.iter().zip(codes) {
            let verdict = check(endpoint, &q, &situation(column));
            if verdict.code() != *want {
                wrong.push(format!(
                    "{request} on {column}: got {} ({:?}), want {want}",
                    verdict.code(),
                    verdict.0
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{} wrong answers:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn unknown_paths_are_no_endpoint_and_trailing_slashes_are_ignored() {
    assert_eq!(Endpoint::from_path("/replica/"), Some(Endpoint::Replica));
    assert_eq!(Endpoint::from_path("/"), Some(Endpoint::Primary));
    for p in ["/replicas", "/foo", "/patroni", "/metrics", "/primary/x"] {
        assert_eq!(Endpoint::from_path(p), None, "{p}");
    }
}

#[test]
fn queries_decode_units_escapes_and_keep_the_first_of_repeated_keys() {
    let q = Query::parse(
        "lag=64MB&lag=1&replication_state=in%20archive+recovery&tag_zone=eu%2Dwest&mode=write&x=1",
    );
    assert_eq!(q.lag, Some(Ok(64 * MB)));
    assert_eq!(q.replication_state.as_deref(), Some("in archive recovery"));
    assert_eq!(q.tags, vec![("zone".to_string(), "eu-west".to_string())]);
    assert_eq!(q.mode, LagMode::Write);
    assert_eq!(Query::parse("lag=16kB").lag, Some(Ok(16 << 10)));
    assert_eq!(Query::parse("lag=1GB").lag, Some(Ok(1 << 30)));
    assert_eq!(Query::parse("lag=%zz").lag, Some(Err("%zz".to_string())));
    assert_eq!(Query::parse(""), Query::default());
}

#[test]
fn refusals_say_why() {
    let q = Query::parse("lag=16MB");
    let v = check(Endpoint::Replica, &q, &situation("replica lagging 100MB"));
    assert_eq!(v.0, Err(format!("replay lag {} bytes exceeds {}", 100 * MB, 16 * MB)));
    let v = check(Endpoint::Primary, &Query::default(), &situation("writable without lease"));
    assert_eq!(v.0, Err("writable but holds no valid lease for the current grant".into()));
}
