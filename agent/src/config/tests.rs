//! Tests of loading, precedence and error messages.

use std::io::Write;

use super::*;

fn file(ext: &str, text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(ext).tempfile().expect("tempfile");
    f.write_all(text.as_bytes()).expect("write");
    f
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

const YAML: &str = "
postgres:
  enabled: false
name: pg-0
cluster: demo
data_dir: /tmp/pgq-test
peers: [pg-0=127.0.0.1:7000, pg-1=127.0.0.1:7001, pg-2=127.0.0.1:7002]
raft:
  heartbeat_interval: 40ms
bootstrap:
  durability: protection
  postgres_parameters:
    work_mem: 64MB
";

#[test]
fn file_then_env_then_flags_take_precedence() {
    let f = file(".yaml", YAML);
    let (c, warnings) = AgentConfig::load(
        Some(f.path()),
        env(&[
            ("PGQUORUM_RAFT_HEARTBEAT_INTERVAL", "60ms"),
            ("PGQUORUM_CLUSTER", "from-env"),
            ("HOME", "/root"),
        ]),
        &["cluster=from-flag".to_string()],
    )
    .expect("valid");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.cluster, "from-flag");
    assert_eq!(c.raft.heartbeat_interval.as_millis(), 60);
    assert_eq!(c.bootstrap.durability.to_string(), "protection");
    assert_eq!(c.bootstrap.postgres_parameters["work_mem"], "64MB");
    assert_eq!(c.grpc_advertise, "127.0.0.1:7000", "advertise defaults to this member's peers entry");
    assert_eq!(c.peers.len(), 3);
    let origin = |k: &str| c.origins.iter().find(|(key, _)| key == k).map(|(_, o)| o.to_string());
    assert_eq!(origin("cluster").as_deref(), Some("flag --set"));
    assert_eq!(origin("raft.heartbeat_interval").as_deref(), Some("env PGQUORUM_RAFT_HEARTBEAT_INTERVAL"));
}

#[test]
fn toml_files_work_too_and_map_keys_come_from_env() {
    let f = file(
        ".toml",
        "postgres = { enabled = false }\nname = \"solo\"\ndata_dir = \"/tmp/x\"\ngrpc = { listen = \"127.0.0.1:7100\" }\n",
    );
    let (c, _) = AgentConfig::load(
        Some(f.path()),
        env(&[("PGQUORUM_BOOTSTRAP_POSTGRES_PARAMETERS_SHARED_BUFFERS", "1GB")]),
        &[],
    )
    .expect("valid");
    assert_eq!(
        c.initial_members(),
        vec![(MemberName::new("solo").expect("name"), "127.0.0.1:7100".to_string())]
    );
    assert_eq!(c.bootstrap.postgres_parameters["shared_buffers"], "1GB");
}

#[test]
fn every_problem_is_reported_with_key_value_and_fix() {
    let f = file(
        ".yaml",
        "postgres: {enabled: false}\nname: Bad_Name\ndata_dir: /x\nraft:\n  heartbeat_interval: soon\nheartbeat: 1\n",
    );
    let err = AgentConfig::load(Some(f.path()), env(&[]), &[]).expect_err("invalid").to_string();
    assert!(err.contains("config: name: invalid member name \"Bad_Name\""), "{err}");
    assert!(err.contains("raft.heartbeat_interval: invalid duration \"soon\""), "{err}");
    assert!(err.contains("unknown key \"heartbeat\""), "{err}");
    assert!(err.contains("did you mean raft.heartbeat_interval"), "{err}");
}

#[test]
fn lease_must_outlast_an_election() {
    let err = AgentConfig::load(
        None,
        env(&[]),
        &[
            "name=a".into(),
            "data_dir=/x".into(),
            "grpc.listen=127.0.0.1:1".into(),
            "raft.election_timeout_max=1s".into(),
        ],
    )
    .expect_err("ttl too short")
    .to_string();
    assert!(
        err.contains("bootstrap.ttl (1500ms) must be at least 3 × raft.election_timeout_max (1s)"),
        "{err}"
    );
}

#[test]
fn the_heartbeat_must_leave_two_gaps_before_an_election() {
    let load = |extra: &[String]| {
        let base = ["name=a", "postgres.enabled=false", "data_dir=/x", "grpc.listen=127.0.0.1:1"];
        let sets: Vec<String> = base.iter().map(|s| s.to_string()).chain(extra.iter().cloned()).collect();
        AgentConfig::load(None, env(&[]), &sets)
    };
    let hb = |v: &str| vec![format!("raft.heartbeat_interval={v}")];
    // Defaults 300-400 ms: a follower waits at least 700 ms; two gaps of 285 + 64 ms are shorter.
    assert_eq!(load(&hb("285ms")).expect("fits").0.raft.heartbeat_interval.as_millis(), 285);
    assert_eq!(load(&[]).expect("defaults").0.raft.heartbeat_interval.as_millis(), 256);
    for v in ["286ms", "300ms", "0s"] {
        let err = load(&hb(v)).expect_err(v).to_string();
        assert!(
            err.contains(&format!(
                "raft.heartbeat_interval ({v}) must be positive, less than raft.election_timeout_min (300ms)"
            )),
            "{err}"
        );
        assert!(err.contains("election_timeout_min + election_timeout_max = 700ms"), "{err}");
    }
}

#[test]
fn peers_must_list_this_member_and_wildcard_listen_needs_advertise() {
    let err = AgentConfig::load(
        None,
        env(&[]),
        &["postgres.enabled=false".into(), "name=c".into(), "data_dir=/x".into(), "peers=a=h:1,b=h:2".into()],
    )
    .expect_err("self missing")
    .to_string();
    assert!(err.contains("peers (a, b) must include this member (c)"), "{err}");
    let err = AgentConfig::load(
        None,
        env(&[]),
        &["postgres.enabled=false".into(), "name=c".into(), "data_dir=/x".into()],
    )
    .expect_err("wildcard")
    .to_string();
    assert!(err.contains("grpc.advertise: required when grpc.listen (0.0.0.0:7000) is a wildcard"), "{err}");
}

#[test]
fn statefulset_ordinals_expand_to_peers() {
    let (c, _) = AgentConfig::load(
        None,
        env(&[
            ("PGQUORUM_NAME", "pg-1"),
            ("PGQUORUM_DATA_DIR", "/x"),
            ("PGQUORUM_STATEFULSET_REPLICAS", "3"),
        ]),
        &["statefulset.domain=pg.ns.svc.cluster.local".into(), "postgres.enabled=false".into()],
    )
    .expect("valid");
    let peers: Vec<String> = c.peers.iter().map(|(n, a)| format!("{n}={a}")).collect();
    assert_eq!(
        peers,
        [
            "pg-0=pg-0.pg.ns.svc.cluster.local:7000",
            "pg-1=pg-1.pg.ns.svc.cluster.local:7000",
            "pg-2=pg-2.pg.ns.svc.cluster.local:7000"
        ]
    );
    assert_eq!(c.grpc_advertise, "pg-1.pg.ns.svc.cluster.local:7000");
}

#[test]
fn unknown_environment_variables_are_warned_about() {
    let (_, warnings) = AgentConfig::load(
        None,
        env(&[
            ("PGQUORUM_NAEM", "x"),
            ("PGQUORUM_ENDPOINT", "h:1"),
            ("PGQUORUM_TOKEN_FILE", "/ops/token"),
            ("PGQUORUM_CA_FILE", "/ops/ca.pem"),
        ]),
        &[
            "postgres.enabled=false".into(),
            "name=a".into(),
            "data_dir=/x".into(),
            "grpc.listen=127.0.0.1:1".into(),
        ],
    )
    .expect("valid");
    assert_eq!(warnings, ["environment variable PGQUORUM_NAEM matches no configuration key and is ignored"]);
}

#[test]
fn every_key_has_help_and_a_distinct_environment_variable() {
    let mut envs = std::collections::BTreeSet::new();
    for k in keys::all() {
        assert!(!k.help.is_empty(), "{} has no help", k.key);
        assert!(envs.insert(k.env()), "{} shares its env var", k.key);
    }
}

#[test]
fn passwords_come_from_env_or_file_never_from_flags() {
    let base = ["name=a".to_string(), "data_dir=/x".into(), "grpc.listen=127.0.0.1:1".into()];
    let mut flags = base.to_vec();
    flags.push("postgres.superuser.password=hunter2".into());
    let err = AgentConfig::load(None, env(&[]), &flags).expect_err("refused").to_string();
    assert!(err.contains("postgres.superuser.password: never pass a password on the command line"), "{err}");
    assert!(err.contains("PGQUORUM_POSTGRES_SUPERUSER_PASSWORD"), "{err}");
    let err = AgentConfig::load(None, env(&[]), &base).expect_err("missing").to_string();
    assert!(err.contains("postgres.replication.password: required; set the environment variable PGQUORUM_POSTGRES_REPLICATION_PASSWORD"), "{err}");
    let pw = file("", "s3cret\n");
    let mut flags = base.to_vec();
    flags.push(format!("postgres.replication.password_file={}", pw.path().display()));
    let (c, _) = AgentConfig::load(None, env(&[("PGQUORUM_POSTGRES_SUPERUSER_PASSWORD", "root-pw")]), &flags)
        .expect("valid");
    let s = c.secrets.expect("resolved");
    assert_eq!((s.superuser.as_str(), s.replication.as_str()), ("root-pw", "s3cret"));
    assert_eq!(c.pg.advertise, "127.0.0.1:5432");
    assert!(!format!("{:?}", c.pg).contains("root-pw"), "passwords never appear in debug output");
}

#[test]
fn the_token_comes_from_env_or_a_private_file_never_from_flags() {
    use std::os::unix::fs::PermissionsExt;
    let base = [
        "postgres.enabled=false".to_string(),
        "name=a".into(),
        "data_dir=/x".into(),
        "grpc.listen=127.0.0.1:1".into(),
    ];
    let with = |extra: &[String], vars: &[(&str, &str)]| {
        let mut flags = base.to_vec();
        flags.extend_from_slice(extra);
        AgentConfig::load(None, env(vars), &flags)
    };
    let err = with(&["auth.token=flag-token-0123456789".into()], &[]).expect_err("flag").to_string();
    assert!(err.contains("auth.token: never pass a token on the command line"), "{err}");
    assert!(err.contains("PGQUORUM_AUTH_TOKEN or auth.token_file"), "{err}");

    let (c, _) = with(&[], &[("PGQUORUM_AUTH_TOKEN", "env-token-0123456789")]).expect("from env");
    assert!(c.auth.tokens.accepts("env-token-0123456789") && c.auth.token.is_none());
    assert!(!format!("{c:?}").contains("env-token"), "the token never shows in debug output");

    let f = file("", "file-token-0123456789\n");
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let flag = format!("auth.token_file={}", f.path().display());
    let err = with(std::slice::from_ref(&flag), &[]).expect_err("world-readable").to_string();
    assert!(err.contains("config: auth.token_file: ") && err.contains("readable by every user"), "{err}");
    assert!(err.contains(&format!("chmod 600 {}", f.path().display())), "{err}");
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (c, _) = with(&[], &[("PGQUORUM_AUTH_TOKEN_FILE", &f.path().display().to_string())]).expect("file");
    assert_eq!(c.auth.tokens.own(), Some("file-token-0123456789"));
    let err =
        with(&[flag], &[("PGQUORUM_AUTH_TOKEN", "env-token-0123456789")]).expect_err("both").to_string();
    assert!(err.contains("auth.token and auth.token_file are both set; keep one of them"), "{err}");
    let err = with(&["auth.token_file=/nonexistent/token".into()], &[]).expect_err("missing").to_string();
    assert!(err.contains("auth.token_file: cannot read /nonexistent/token"), "{err}");
}

#[test]
fn tls_files_go_together() {
    let err = AgentConfig::load(
        None,
        env(&[]),
        &[
            "postgres.enabled=false".into(),
            "name=a".into(),
            "data_dir=/x".into(),
            "tls.cert_file=/c.pem".into(),
        ],
    )
    .expect_err("partial")
    .to_string();
    assert!(
        err.contains(
            "tls.cert_file, tls.key_file and tls.ca_file go together: set tls.key_file and tls.ca_file too"
        ),
        "{err}"
    );
}

/// docs/configuration.md documents every agent key (with its environment variable and default)
/// and every dynamic setting.
#[test]
fn configuration_doc_lists_every_key() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let doc = std::fs::read_to_string(path).expect("docs/configuration.md exists");
    let row = |key: &str| doc.lines().find(|l| l.starts_with(&format!("| `{key}` |"))).map(str::to_string);
    let mut missing = Vec::new();
    for k in keys::all() {
        match row(k.key) {
            None => missing.push(format!("{} (no table row)", k.key)),
            Some(r) => {
                if !r.contains(&format!("`{}`", k.env())) {
                    missing.push(format!("{}: environment variable {}", k.key, k.env()));
                }
                if !k.default.is_empty() && !r.contains(&format!("`{}`", k.default)) {
                    missing.push(format!("{}: default {}", k.key, k.default));
                }
            }
        }
    }
    for k in pgquorum_core::state::DynamicConfig::KEYS.iter().chain(&["postgres_parameters.*"]) {
        if row(k).is_none() {
            missing.push(format!("dynamic setting {k}"));
        }
    }
    assert!(missing.is_empty(), "docs/configuration.md lacks: {}", missing.join("; "));
}

/// The hint for an unknown key comes from an edit distance, so a typo anywhere in the key finds
/// the key meant (substrings alone found nothing for these).
#[test]
fn a_misspelt_key_gets_a_did_you_mean_hint() {
    for (typo, meant) in [
        ("bootstrap.durabilty", "bootstrap.durability"),
        ("grpc.lisen", "grpc.listen"),
        ("raft.heartbeat_intreval", "raft.heartbeat_interval"),
    ] {
        let err = AgentConfig::load(
            None,
            env(&[]),
            &["name=a".into(), "data_dir=/x".into(), "postgres.enabled=false".into(), format!("{typo}=1")],
        )
        .expect_err("unknown key")
        .to_string();
        assert!(err.contains(&format!("unknown key {typo:?}")), "{err}");
        assert!(err.contains(&format!("(did you mean {meant}")), "{typo}: {err}");
    }
    assert_eq!(keys::similar("grpc.lisen").first(), Some(&"grpc.listen"));
    assert!(keys::similar("zzzzzz").is_empty(), "{:?}", keys::similar("zzzzzz"));
    assert_eq!(keys::edit_distance("durabilty", "durability"), 1);
    assert_eq!(keys::edit_distance("", "abc"), 3);
    assert_eq!(keys::edit_distance("kitten", "sitting"), 3);
}

/// Two members at one address would leave the agent waiting forever for a quorum it cannot
/// form; check-config (which loads the same way) refuses it.
#[test]
fn two_peers_with_the_same_address_are_refused() {
    let err = AgentConfig::load(
        None,
        env(&[]),
        &[
            "name=a".into(),
            "data_dir=/x".into(),
            "postgres.enabled=false".into(),
            "peers=a=127.0.0.1:7000,b=127.0.0.1:7001,c=127.0.0.1:7001".into(),
        ],
    )
    .expect_err("duplicate address")
    .to_string();
    assert!(err.contains("peers: b and c have the same address 127.0.0.1:7001"), "{err}");
}

#[test]
fn archive_needs_a_destination_and_its_secret_key_never_comes_from_flags() {
    let pw = [("PGQUORUM_POSTGRES_SUPERUSER_PASSWORD", "a"), ("PGQUORUM_POSTGRES_REPLICATION_PASSWORD", "b")];
    let base = ["name=a".to_string(), "data_dir=/x".into(), "grpc.listen=127.0.0.1:1".into()];
    let mut flags = base.to_vec();
    flags.push("archive.enabled=true".into());
    let err = AgentConfig::load(None, env(&pw), &flags).expect_err("no destination").to_string();
    assert!(err.contains("neither archive.s3.bucket nor archive.dir"), "{err}");
    flags.push("archive.s3.secret_access_key=hunter2".into());
    let err = AgentConfig::load(None, env(&pw), &flags).expect_err("refused").to_string();
    assert!(err.contains("never pass a secret key"), "{err}");
    let secret = file("", "s3cret\n");
    let mut flags = base.to_vec();
    flags.extend([
        "archive.enabled=true".to_string(),
        "archive.s3.bucket=b".into(),
        "archive.s3.access_key_id=k".into(),
        format!("archive.s3.secret_access_key_file={}", secret.path().display()),
        "archive.compression=gzip".into(),
    ]);
    let (c, _) = AgentConfig::load(None, env(&pw), &flags).expect("valid");
    assert_eq!(c.archive.s3.secret_access_key.as_deref(), Some("s3cret"));
    assert_eq!((c.archive.parallel, c.archive.s3.region.as_str()), (4, "us-east-1"));
    assert!(!format!("{:?}", c.archive).contains("s3cret"), "the secret key never appears in debug output");
    let err =
        AgentConfig::load(None, env(&pw), &[base.to_vec(), vec!["archive.compression=lz4".into()]].concat())
            .expect_err("bad compression")
            .to_string();
    assert!(err.contains("archive.compression: \"lz4\" must be zstd, gzip or none"), "{err}");
}
