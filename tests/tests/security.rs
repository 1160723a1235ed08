//! End-to-end tests of authentication: a cluster token guarding changes over gRPC
//! (`pgquorumctl`) and HTTP (Patroni's `POST /switchover`) while reads, health checks and metrics
//! stay open; mutual TLS between agents with certificates from a test CA; and bad credential
//! files stopping an agent at start with exit code 64 and the fix.

use std::process::Output;
use std::time::Duration;

use pgquorum_tests::certs::Ca;
use pgquorum_tests::secrets::SecretDir;
use pgquorum_tests::{Cluster, ClusterOptions, wait_for};

const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "e2e-security-token-0123456789abcdef";
const REFUSED: &str = "requires a token: set PGQUORUM_TOKEN_FILE or --token-file";

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A member that is neither the Raft leader nor `not`: calls through it are forwarded.
fn follower(c: &mut Cluster, not: &str) -> String {
    let st = c.status().expect("status");
    let leader = st["raft"]["leader"].as_str().unwrap_or_default().to_string();
    c.agents.iter().map(|a| a.name.clone()).find(|n| *n != leader && n != not).expect("a follower")
}

#[test]
fn a_token_guards_changes_over_grpc_and_http_while_reads_and_health_checks_stay_open() {
    let mut c = Cluster::start(ClusterOptions { token: Some(TOKEN.into()), ..Default::default() });
    let first = c.wait_for_primary(T);
    let rest: Vec<String> = c.agents.iter().map(|a| a.name.clone()).filter(|n| *n != first).collect();
    c.wait_for_streaming(&[&rest[0], &rest[1]], T);
    let via = follower(&mut c, &first);

    // Reading needs nothing; changing needs the token, and the refusal says what to set.
    for args in [&["status"][..], &["history"], &["config", "show"]] {
        let o = c.agent(&via).ctl_as(&[], args);
        assert!(o.status.success(), "{args:?} without a token: {}", text(&o));
    }
    for args in [&["pause"][..], &["switchover"], &["config", "set", "ttl=3s"]] {
        let o = c.agent(&via).ctl_as(&[], args);
        assert_eq!(o.status.code(), Some(1), "{args:?} without a token: {}", text(&o));
        assert!(stderr(&o).contains(REFUSED), "{args:?}: {}", text(&o));
    }
    let o = c.agent(&via).ctl_as(&[("PGQUORUM_TOKEN", "not-the-cluster-token-0123456789")], &["pause"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("the agents refused the token from PGQUORUM_TOKEN"), "{}", text(&o));
    let st = c.status().expect("status");
    assert_eq!(st["paused"], false, "refused calls changed nothing: {st}");

    // With the token (PGQUORUM_TOKEN_FILE, as the harness passes it), through a follower that
    // forwards to the Raft leader with its own token.
    let o = c.agent(&via).ctl(&["pause"]);
    assert!(o.status.success(), "pause with the token: {}", text(&o));
    assert_eq!(c.status().expect("status")["paused"], true);
    let o = c.agent(&via).ctl_as(&[("PGQUORUM_TOKEN", TOKEN)], &["resume"]);
    assert!(o.status.success(), "resume with PGQUORUM_TOKEN: {}", text(&o));
    let o = c.agent(&via).ctl(&["switchover", "--at", "+10m"]);
    assert!(o.status.success(), "a scheduled switchover: {}", text(&o));
    let o = c.agent(&via).ctl_as(&[], &["switchover", "--cancel"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains(REFUSED), "{}", text(&o));
    let o = c.agent(&via).ctl(&["switchover", "--cancel"]);
    assert!(o.status.success(), "cancel with the token: {}", text(&o));
    assert!(c.status().expect("status")["switchover"].is_null(), "the scheduled switchover is gone");
    let out = c.agent(&via).ctl_json(&["switchover", "--to", &rest[1]]).expect("switchover with the token");
    assert_eq!(out["to"], rest[1].as_str());
    let second = c.wait_for_primary(T);
    assert_eq!(second, rest[1]);
    c.wait_for_streaming(&[&rest[0]], T);

    // HTTP: health checks and metrics are open, POST needs `Authorization: Bearer <token>`.
    let replica = rest[0].clone();
    assert_eq!(c.agent(&second).http("GET", "/primary").expect("GET /primary").status, 200);
    assert_eq!(c.agent(&replica).http("GET", "/replica").expect("GET /replica").status, 200);
    let metrics = c.agent(&replica).http("GET", "/metrics").expect("GET /metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("pgquorum_"), "{}", metrics.body);
    let body = format!(r#"{{"leader": "{second}", "candidate": "{replica}"}}"#);
    let post = |c: &Cluster, headers: &[(&str, &str)]| {
        c.agent(&replica).http_with("POST", "/switchover", headers, &body).expect("POST /switchover")
    };
    let bearer = format!("Bearer {TOKEN}");
    let a = c.agent(&replica).http("DELETE", "/switchover").expect("DELETE without credentials");
    assert_eq!(a.status, 401, "{a:?}");
    let a = c.agent(&replica).http_with("DELETE", "/switchover", &[("Authorization", &bearer)], "");
    assert_eq!(a.expect("DELETE").status, 404, "nothing is scheduled");
    let a = post(&c, &[]);
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.header("www-authenticate").is_some_and(|h| h.contains("Bearer")), "{a:?}");
    assert!(a.body.contains("Authorization: Bearer <token>"), "{}", a.body);
    let a = post(&c, &[("Authorization", "Bearer not-the-cluster-token-0123456789")]);
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.body.contains("the token was refused"), "{}", a.body);
    assert_eq!(c.status().expect("status")["primary"], second.as_str(), "refused calls changed nothing");
    let a = post(&c, &[("Authorization", &bearer)]);
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.contains(&format!("Successfully switched over to \"{replica}\"")), "{}", a.body);
    wait_for("GET /primary on the new primary", T, || {
        let a = c.agent(&replica).http("GET", "/primary")?;
        Ok((a.status == 200).then_some(()))
    });
    c.check_logs(&[]);
}

/// A Raft-only cluster of `n` agents running mutual TLS with certificates `ca` signed (valid for
/// 127.0.0.1); pgquorumctl gets the CA and an operator certificate.
fn tls_cluster(n: usize, ca: &Ca, files: &SecretDir) -> Cluster {
    let mut opts = ClusterOptions::raft_only(n);
    let ca_file = files.write("ca.crt", &ca.pem());
    opts.settings.push(format!("tls.ca_file={}", ca_file.display()));
    for i in 1..=n {
        let name = format!("m{i}");
        let issued = ca.issue(&name, &["127.0.0.1", "localhost"]);
        let cert = files.write(&format!("{name}.crt"), &issued.cert);
        let key = files.write(&format!("{name}.key"), &issued.key);
        opts.member_settings.push((name.clone(), format!("tls.cert_file={}", cert.display())));
        opts.member_settings.push((name, format!("tls.key_file={}", key.display())));
    }
    let operator = ca.issue("operator", &["operator.example"]);
    opts.ctl_env = vec![
        ("PGQUORUM_CA_FILE".into(), ca_file.display().to_string()),
        ("PGQUORUM_CERT_FILE".into(), files.write("operator.crt", &operator.cert).display().to_string()),
        ("PGQUORUM_KEY_FILE".into(), files.write("operator.key", &operator.key).display().to_string()),
    ];
    Cluster::start(opts)
}

#[test]
fn mutual_tls_members_elect_and_commit_and_ctl_changes_only_with_a_certificate() {
    let (ca, files) = (Ca::new("pgquorum e2e CA"), SecretDir::new());
    let mut c = tls_cluster(3, &ca, &files);
    let leader = c.wait_for_leader(T);
    let via = c.agents.iter().map(|a| a.name.clone()).find(|n| *n != leader).expect("a follower");

    // A change with the operator's certificate, forwarded to the leader over mutual TLS.
    let v = c.agent(&via).ctl_json(&["config", "set", "postgres_parameters.pgq.tls=on"]).expect("config set");
    assert!(v["version"].as_u64().is_some(), "{v}");
    for a in &c.agents {
        wait_for(&format!("{} to apply the change", a.name), T, || {
            let cfg = a.ctl_json(&["config", "show"])?;
            Ok((cfg["config"]["postgres_parameters"]["pgq.tls"] == "on").then_some(()))
        });
    }

    // The CA alone lets pgquorumctl read, not change; without TLS it cannot connect at all.
    let ca_only = [("PGQUORUM_CA_FILE", c.agent(&via).ctl_env[0].1.as_str())];
    let o = c.agent(&via).ctl_as(&ca_only, &["status"]);
    assert!(o.status.success(), "status with the CA only: {}", text(&o));
    let o = c.agent(&via).ctl_as(&ca_only, &["config", "set", "postgres_parameters.pgq.tls=off"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stderr(&o).contains(REFUSED) && stderr(&o).contains("--cert-file and --key-file"),
        "{}",
        text(&o)
    );
    let o = c.agent(&via).ctl_as(&[], &["status"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(stderr(&o).contains("--ca-file"), "{}", text(&o));
    c.check_logs(&[]);
}

#[test]
fn an_agent_with_a_certificate_from_another_ca_cannot_join_and_its_log_says_why() {
    let (ca, files) = (Ca::new("pgquorum e2e CA"), SecretDir::new());
    let mut c = tls_cluster(3, &ca, &files);
    c.wait_for_leader(T);

    // m4 trusts the cluster's CA too (a bundle), so it is the members that refuse its certificate.
    let rogue_ca = Ca::new("someone else's CA");
    let rogue = rogue_ca.issue("m4", &["127.0.0.1"]);
    let bundle = format!("{}{}", rogue_ca.pem(), ca.pem());
    let settings = [
        format!("tls.ca_file={}", files.write("rogue-ca.crt", &bundle).display()),
        format!("tls.cert_file={}", files.write("rogue.crt", &rogue.cert).display()),
        format!("tls.key_file={}", files.write("rogue.key", &rogue.key).display()),
    ];
    let refs: Vec<&str> = settings.iter().map(String::as_str).collect();
    c.add_agent_with(&refs);
    let line = wait_for("m4's log to say why no member answers", T, || {
        let log = c.agent("m4").log_text();
        Ok(log
            .lines()
            .find(|l| l.contains("no answer from") && l.contains("certificate"))
            .map(str::to_string))
    });
    assert!(line.contains("UnknownCA"), "the members' refusal of its certificate: {line}");
    assert!(line.contains("must be signed by the CA in every member's tls.ca_file"), "{line}");

    let st = c.status().expect("status");
    let mut names: Vec<&str> =
        st["members"].as_array().expect("members").iter().filter_map(|m| m["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["m1", "m2", "m3"], "m4 never joined: {st}");
    c.agent("m1").ctl_json(&["config", "set", "postgres_parameters.pgq.after=1"]).expect("still commits");
    c.check_logs(&[]);
}

#[test]
fn bad_credential_files_stop_the_agent_with_exit_64_and_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let files = SecretDir::new();
    let check = |extra: &[String]| {
        let mut cmd = std::process::Command::new(pgquorum_tests::bins::bin("pgquorum-agent"));
        cmd.arg("check-config").env_remove("PGQUORUM_CONFIG");
        for s in ["name=m1", "data_dir=/nonexistent", "grpc.listen=127.0.0.1:1", "postgres.enabled=false"] {
            cmd.arg("--set").arg(s);
        }
        for s in extra {
            cmd.arg("--set").arg(s);
        }
        cmd.output().expect("run pgquorum-agent check-config")
    };
    let token = files.write("token", &format!("{TOKEN}\n"));
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let o = check(&[format!("auth.token_file={}", token.display())]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(stderr(&o).contains(&format!("chmod 600 {}", token.display())), "{}", text(&o));
    let o = check(&[format!("auth.token={TOKEN}")]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(stderr(&o).contains("never pass a token on the command line"), "{}", text(&o));

    let (ca, other) = (Ca::new("cluster CA"), Ca::new("another CA"));
    let foreign = other.issue("m1", &["127.0.0.1"]);
    let o = check(&[
        format!("tls.ca_file={}", files.write("ca.crt", &ca.pem()).display()),
        format!("tls.cert_file={}", files.write("m1.crt", &foreign.cert).display()),
        format!("tls.key_file={}", files.write("m1.key", &foreign.key).display()),
    ]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(stderr(&o).contains("does not verify against tls.ca_file"), "{}", text(&o));
}
