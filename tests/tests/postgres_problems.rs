//! End-to-end: a member whose Postgres cannot work says why, in Postgres's own words. A
//! parameter value Postgres would refuse is refused by `config set` and never stored; a
//! Postgres that cannot start is restarted with a growing delay and its FATAL line is shown in
//! status, `/cluster` and metrics; a standby whose WAL receiver cannot log in shows the
//! receiver's error and logs it once, not per retry.

use std::time::Duration;

use pgquorum_tests::agent::REPLICATION_PASSWORD;
use pgquorum_tests::{Cluster, ClusterOptions, prom, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

/// Runs pgquorumctl through `via`; returns (exit code, stdout, stderr).
fn ctl(c: &Cluster, via: &str, args: &[&str]) -> (i32, String, String) {
    let out = c.agent(via).ctl(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A two-member cluster with a streaming replica: (primary, replica). Waits for both at once:
/// on a loaded machine the first primary may lose its lease and the roles swap.
fn healthy_pair() -> (Cluster, String, String) {
    healthy(ClusterOptions { members: 2, ..Default::default() })
}

/// A cluster of `opts` with a primary and a streaming replica: (cluster, primary, replica).
fn healthy(opts: ClusterOptions) -> (Cluster, String, String) {
    let mut c = Cluster::start(opts);
    c.wait_for_primary(T);
    let (primary, replica) = wait_for("a primary and a streaming replica", T, || {
        let st = c.status()?;
        let ms = st["members"].as_array().cloned().unwrap_or_default();
        let find = |f: &dyn Fn(&Value) -> bool| {
            ms.iter().find(|m| f(m)).and_then(|m| m["name"].as_str().map(String::from))
        };
        let p = find(&|m| m["role"] == "primary");
        let r = find(&|m| m["role"] == "replica" && m["state"] == "streaming");
        match (p, r) {
            (Some(p), Some(r)) => Ok(Some((p, r))),
            _ => Err(format!("members: {}", st["members"])),
        }
    });
    (c, primary, replica)
}

/// `name`'s row in the leader's status.
fn member(c: &mut Cluster, name: &str) -> Result<Value, String> {
    let st = c.status()?;
    st["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name).cloned())
        .ok_or_else(|| format!("no {name} in {st}"))
}

/// How many lines of `name`'s agent log contain `text`.
fn log_count(c: &Cluster, name: &str, text: &str) -> usize {
    c.agent(name).log_text().lines().filter(|l| l.contains(text)).count()
}

#[test]
fn config_set_refuses_parameter_values_postgres_rejects_with_postgres_words_and_stores_nothing() {
    // m3 is a witness (no Postgres): it has the primary's agent check the parameters.
    let witness = vec![("m3".to_string(), "postgres.enabled=false".to_string())];
    let (c, primary, replica) =
        healthy(ClusterOptions { members: 3, member_settings: witness, ..Default::default() });
    let before = c.agent(&replica).ctl_json(&["config", "show"]).expect("config show");

    let refused = [
        (
            "postgres_parameters.shared_buffers=banana",
            "invalid value for parameter \"shared_buffers\": \"banana\"",
        ),
        (
            "postgres_parameters.max_connections=0",
            "0 is outside the valid range for parameter \"max_connections\"",
        ),
        ("postgres_parameters.shared_bufers=64MB", "unrecognized configuration parameter \"shared_bufers\""),
        ("postgres_parameters.wal_compression=sometimes", "invalid value for parameter \"wal_compression\""),
        ("postgres_parameters.work_mem=64XB", "invalid value for parameter \"work_mem\": \"64XB\""),
    ];
    for (i, (setting, words)) in refused.into_iter().enumerate() {
        let via = if i == 0 { "m3" } else { replica.as_str() };
        let (code, out, err) = ctl(&c, via, &["config", "set", setting]);
        assert_eq!(code, 1, "{setting} via {via} must be refused; stdout {out} stderr {err}");
        assert!(err.contains(words), "{setting}: the refusal lacks Postgres's words {words:?}: {err}");
        assert!(err.contains("Nothing was stored"), "{setting}: {err}");
    }
    let after = c.agent(&primary).ctl_json(&["config", "show"]).expect("config show");
    assert_eq!(before, after, "a refused change stored nothing");

    // Good values are stored, and one that needs a restart says so.
    let (code, out, err) = ctl(
        &c,
        &replica,
        &["config", "set", "postgres_parameters.work_mem=8MB", "postgres_parameters.max_connections=90"],
    );
    assert_eq!(code, 0, "valid values are stored: {out} {err}");
    assert!(out.contains("restart Postgres for max_connections"), "the restart is named: {out}");
    // The change was committed through the Raft leader; the primary applies it a heartbeat later.
    wait_for("the stored work_mem on the primary", T, || {
        let show = c.agent(&primary).ctl_json(&["config", "show"])?;
        Ok((show["config"]["postgres_parameters"]["work_mem"] == "8MB").then_some(()))
    });
    let pg = c.pg(&replica);
    wait_for("work_mem reloaded on the replica", T, || {
        let v = pg.value("SHOW work_mem")?;
        Ok((v.as_deref() == Some("8MB")).then_some(()))
    });
    c.check_logs(&[]);
}

#[test]
fn a_postgres_that_cannot_start_says_why_and_its_restarts_back_off() {
    let (mut c, _primary, replica) = healthy_pair();
    // An operator's bad edit of the member's own configuration (what ALTER SYSTEM writes):
    // Postgres refuses to start with it.
    let auto = c.agent(&replica).pgdata().join("postgresql.auto.conf");
    let good = std::fs::read_to_string(&auto).expect("postgresql.auto.conf");
    std::fs::write(&auto, format!("{good}shared_buffers = 'banana'\n")).expect("append a bad setting");
    c.agent(&replica).kill9_postgres();

    let words = "invalid value for parameter \"shared_buffers\": \"banana\"";
    let row = wait_for("the replica's start problem in status", T, || {
        let m = member(&mut c, &replica)?;
        let p = &m["problem"];
        let shown = p["kind"] == "start"
            && p["message"].as_str().is_some_and(|s| s.contains(words) && s.contains("FATAL"))
            && p["failed_starts"].as_u64().is_some_and(|n| n >= 4);
        if shown { Ok(Some(m)) } else { Err(format!("{m}")) }
    });
    assert!(row["state"] == "crashed" || row["state"] == "starting", "{row}");

    // The table, /cluster and metrics show it too.
    let (code, table, err) = ctl(&c, &replica, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains(&format!("{replica}: Postgres cannot start")) && table.contains(words), "{table}");
    let cluster = c.agent(&replica).http("GET", "/cluster").expect("/cluster").json().expect("json");
    let rows = cluster["members"].as_array().cloned().unwrap_or_default();
    let mine = rows.iter().find(|m| m["name"] == replica.as_str()).expect("replica in /cluster");
    assert!(mine["problem"]["message"].as_str().is_some_and(|s| s.contains(words)), "{cluster}");
    let metrics = c.agent(&replica).http("GET", "/metrics").expect("/metrics");
    let samples = prom::parse(&metrics.body).expect("metrics parse");
    assert_eq!(prom::value(&samples, "pgquorum_postgres_problem", &[("kind", "start")]), Some(1.0));
    assert!(prom::value(&samples, "pgquorum_postgres_failed_starts", &[]).is_some_and(|n| n >= 4.0));

    // Backing off: at 4+ failures the waits are 1 s, 2 s, 4 s, ...; restarting every tick
    // (the old behaviour) would start it dozens of times in this window.
    let starts = log_count(&c, &replica, "started Postgres");
    std::thread::sleep(Duration::from_secs(5)); // a measurement window, not a synchronisation
    let more = log_count(&c, &replica, "started Postgres") - starts;
    assert!(more <= 4, "{more} starts in 5 s: the restarts do not back off");
    // Logged once per change, not per failed start.
    let told = log_count(&c, &replica, words);
    assert!(told <= 2, "the reason was logged {told} times");

    // Fixed: it starts again within the (bounded) backoff and the problem clears.
    std::fs::write(&auto, good).expect("restore postgresql.auto.conf");
    c.wait_for_streaming(&[&replica], T);
    wait_for("the problem to clear", T, || {
        let m = member(&mut c, &replica)?;
        Ok(m["problem"].is_null().then_some(()))
    });
    assert!(c.agent(&replica).log_text().contains("Postgres runs again"));
    c.check_logs(&[]);
}

#[test]
fn a_replica_with_a_wrong_replication_password_says_why_once() {
    let (mut c, primary, replica) = healthy_pair();
    let pg = c.pg(&primary);
    pg.query("ALTER ROLE replicator PASSWORD 'not-the-members-password'").expect("change the password");
    // The running receiver stays logged in; its next connection is refused.
    c.agent(&replica).kill9_postgres();

    let words = "password authentication failed for user \"replicator\"";
    let row = wait_for("the replica's replication problem in status", T, || {
        let m = member(&mut c, &replica)?;
        let p = &m["problem"];
        let shown = p["kind"] == "replication" && p["message"].as_str().is_some_and(|s| s.contains(words));
        if shown { Ok(Some(m)) } else { Err(format!("{m}")) }
    });
    assert_eq!(row["state"], "in archive recovery", "{row}");
    let (_, table, _) = ctl(&c, &replica, &["status"]);
    assert!(
        table.contains(&format!("{replica}: cannot stream from its upstream")) && table.contains(words),
        "{table}"
    );
    let metrics = c.agent(&replica).http("GET", "/metrics").expect("/metrics");
    let samples = prom::parse(&metrics.body).expect("metrics parse");
    assert_eq!(prom::value(&samples, "pgquorum_postgres_problem", &[("kind", "replication")]), Some(1.0));

    // The receiver retries many times a second; the agent says it once. Wait until Postgres
    // has logged a few refusals (a just-cloned replica killed early in its start can take a
    // while to retry), and at least 3 s, a measurement window for the agent's own log.
    let window = std::time::Instant::now() + Duration::from_secs(3);
    wait_for("the receiver to be refused three times", T, || {
        let pg_log = std::fs::read_to_string(c.agent(&replica).dir.join("postgres.log")).unwrap_or_default();
        let refusals = pg_log.lines().filter(|l| l.contains(words)).count();
        let done = refusals >= 3 && std::time::Instant::now() >= window;
        if done { Ok(Some(())) } else { Err(format!("{refusals} refusals in postgres.log")) }
    });
    let told = log_count(&c, &replica, "cannot stream from");
    assert!(
        (1..=2).contains(&told),
        "logged {told} times, not once per change:\n{}",
        c.agent(&replica).log_text()
    );

    let fix = format!("ALTER ROLE replicator PASSWORD '{REPLICATION_PASSWORD}'");
    pg.query(&fix).expect("restore the password");
    c.wait_for_streaming(&[&replica], T);
    wait_for("the problem to clear", T, || {
        let m = member(&mut c, &replica)?;
        Ok(m["problem"].is_null().then_some(()))
    });
    c.check_logs(&[]);
}
