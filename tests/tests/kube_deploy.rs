//! deploy/kubernetes: every rendering (base, overlays, pooler) renders with `kubectl kustomize`,
//! validates strictly with `kubernetes-validate`, and is accepted by a real kube-apiserver; the
//! Role stays namespaced and away from secrets, and its ServiceAccount's token proves it.

use pgquorum_tests::deploy::{RENDERINGS, objects, rbac_problems, render, validator};
use pgquorum_tests::kube::{KubeApi, kubectl_with};

#[test]
fn every_rendering_validates_strictly_against_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().expect("tempdir");
    for which in RENDERINGS {
        let text = render(which);
        assert!(!objects(&text).is_empty(), "{which} renders no object");
        let file = dir.path().join(format!("{}.yaml", which.replace(['/', '+'], "-")));
        std::fs::write(&file, &text).expect("write rendering");
        let out = std::process::Command::new(validator())
            .args(["--strict", "--quiet", "-k", "1.33.0"])
            .arg(&file)
            .output()
            .expect("run kubernetes-validate");
        assert!(
            out.status.success(),
            "{which} fails strict validation:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_role_is_namespaced_and_grants_only_pod_labelling_and_events() {
    for which in RENDERINGS {
        let objs = objects(&render(which));
        assert_eq!(rbac_problems(&objs), Vec::<String>::new(), "{which}");
    }
    // The check itself catches what it must: a ClusterRole, secrets, and a wildcard.
    let base = objects(&render("base"));
    let mut widened = base.clone();
    for o in &mut widened {
        if o["kind"] == "Role" {
            o["rules"].as_array_mut().expect("rules").push(serde_json::json!({
                "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]
            }));
        }
    }
    assert!(rbac_problems(&widened).iter().any(|p| p.contains("secrets")));
    let mut cluster = base.clone();
    for o in &mut cluster {
        if o["kind"] == "Role" {
            o["kind"] = "ClusterRole".into();
        }
    }
    assert!(rbac_problems(&cluster).iter().any(|p| p.contains("cluster-scoped")));
    let mut star = base;
    for o in &mut star {
        if o["kind"] == "Role" {
            o["rules"][0]["verbs"] = serde_json::json!(["*"]);
        }
    }
    assert!(rbac_problems(&star).iter().any(|p| p.contains("grants * on pods")));
}

#[test]
fn the_api_server_accepts_every_object_and_the_service_account_is_confined_to_its_namespace() {
    let k = KubeApi::start();
    k.create_namespace("pgq");
    k.create_namespace("other");
    for which in RENDERINGS {
        let out =
            k.kubectl_output(&["apply", "--dry-run=server", "-n", "pgq", "-f", "-"], Some(&render(which)));
        assert!(
            out.status.success(),
            "the API server refuses {which}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = k.kubectl_output(&["apply", "-n", "pgq", "-f", "-"], Some(&render("base")));
    assert!(out.status.success(), "apply base: {}", String::from_utf8_lossy(&out.stderr));
    k.kubectl(&[
        "-n",
        "pgq",
        "create",
        "secret",
        "generic",
        "pgquorum-credentials",
        "--from-literal=token=t",
    ])
    .expect("create secret");
    k.create_pod("pgq", "pgquorum-0", "pgquorum", &[("pgquorum.io/cluster", "pgquorum")]);
    k.create_pod("other", "elsewhere", "default", &[]);

    let dir = tempfile::tempdir().expect("tempdir");
    let sa = dir.path().join("sa.kubeconfig");
    std::fs::write(&sa, k.service_account_kubeconfig("pgq", "pgquorum")).expect("write kubeconfig");
    let run = |args: &[&str]| {
        let out = kubectl_with(&sa, args, None);
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let allowed: &[&[&str]] = &[
        &["-n", "pgq", "get", "pods"],
        &["-n", "pgq", "get", "pod", "pgquorum-0", "-o", "name"],
        &["-n", "pgq", "label", "pod", "pgquorum-0", "pgquorum.io/role=primary", "--overwrite"],
        &["-n", "pgq", "annotate", "pod", "pgquorum-0", "pgquorum.io/epoch=1", "--overwrite"],
    ];
    for args in allowed {
        let (ok, out) = run(args);
        assert!(ok, "the Role must allow kubectl {}: {out}", args.join(" "));
    }
    let event = r#"{"apiVersion":"v1","kind":"Event","metadata":{"generateName":"pgquorum-0."},
        "involvedObject":{"kind":"Pod","name":"pgquorum-0","namespace":"pgq"},"reason":"Test","message":"m","type":"Normal"}"#;
    let out = kubectl_with(&sa, &["-n", "pgq", "create", "-f", "-"], Some(event));
    assert!(
        out.status.success(),
        "the Role must allow creating events: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused: &[&[&str]] = &[
        &["-n", "pgq", "get", "secrets"],
        &["-n", "pgq", "get", "secret", "pgquorum-credentials"],
        &["-n", "other", "get", "pods"],
        &["-n", "other", "label", "pod", "elsewhere", "x=y"],
        &["get", "pods", "--all-namespaces"],
        &["get", "nodes"],
        &["-n", "pgq", "delete", "pod", "pgquorum-0", "--wait=false"],
        &["-n", "pgq", "get", "statefulsets"],
    ];
    for args in refused {
        let (ok, out) = run(args);
        assert!(!ok && out.contains("Forbidden"), "the Role must refuse kubectl {}: {out}", args.join(" "));
    }
}

/// The postgres container's environment from the rendered StatefulSet, `$(VAR)` references
/// expanded as the kubelet does, for pod `pod` in namespace `ns`.
fn container_env(pod: &str, ns: &str) -> Vec<(String, String)> {
    container_env_of("base", pod, ns)
}

/// The postgres container's environment in rendering `which`, with `$(VAR)` references
/// expanded; values from a Secret read `(secret NAME/KEY)`.
fn container_env_of(which: &str, pod: &str, ns: &str) -> Vec<(String, String)> {
    let objs = objects(&render(which));
    let sts = objs.iter().find(|o| o["kind"] == "StatefulSet").expect("a StatefulSet");
    let volumes = sts["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes");
    let secrets = volumes.iter().find(|v| v["name"] == "secrets").expect("the secrets volume");
    let mode = secrets["secret"]["defaultMode"].as_u64().expect("the secrets volume sets defaultMode");
    let containers = sts["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
    let pg = containers.iter().find(|c| c["name"] == "postgres").expect("the postgres container");
    let mut env: Vec<(String, String)> = Vec::new();
    for e in pg["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("name").to_string();
        let value = match name.as_str() {
            "POD_NAME" => pod.to_string(),
            "POD_NAMESPACE" => ns.to_string(),
            _ if e["valueFrom"]["secretKeyRef"].is_object() => {
                let r = &e["valueFrom"]["secretKeyRef"];
                format!("(secret {}/{})", r["name"].as_str().unwrap_or("?"), r["key"].as_str().unwrap_or("?"))
            }
            _ => {
                let mut v =
                    e["value"].as_str().unwrap_or_else(|| panic!("{name} has no plain value")).to_string();
                for (k, val) in &env {
                    v = v.replace(&format!("$({k})"), val);
                }
                assert!(!v.contains("$("), "{name}={v}: a reference to a variable not defined before it");
                v
            }
        };
        env.push((name, value));
    }
    env.push(("(secrets mode)".into(), mode.to_string()));
    env
}

#[test]
fn kubectl_exec_pgquorumctl_finds_its_agent_and_token_from_the_pods_environment() {
    let env = container_env("pgquorum-1", "db");
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    // pgquorumctl's endpoint is this pod's own agent, on the port the agent listens on; its
    // token file is the one the agent checks.
    let listen_port = get("PGQUORUM_GRPC_LISTEN").rsplit_once(':').map(|(_, p)| p.to_string());
    assert_eq!(get("PGQUORUM_ENDPOINT"), format!("127.0.0.1:{}", listen_port.expect("grpc.listen port")));
    assert!(!get("PGQUORUM_TOKEN_FILE").is_empty());
    assert_eq!(get("PGQUORUM_TOKEN_FILE"), get("PGQUORUM_AUTH_TOKEN_FILE"));
    assert!(get("PATH").split(':').next() == Some("/pgquorum/bin"), "pgquorumctl on PATH first");

    // The same environment is a valid agent configuration (paths moved into a scratch directory,
    // as the volumes would provide them): the agent reports where each key came from.
    let (ok, text) = check_config(&env);
    assert!(ok, "the container's environment is not a valid configuration:\n{text}");
    for key in
        ["name", "grpc.listen", "auth.token_file", "kube.pod", "kube.namespace", "statefulset.replicas"]
    {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(key));
        assert!(line.is_some_and(|l| l.contains("(env ")), "{key} not set from the environment:\n{text}");
    }
}

#[test]
fn the_s3_backup_component_archives_with_secret_credentials_and_seeds_a_daily_90_day_schedule() {
    let env = container_env_of("base+s3-backup", "pgquorum-0", "db");
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(get("PGQUORUM_ARCHIVE_ENABLED"), "true");
    assert_eq!(get("PGQUORUM_ARCHIVE_S3_PREFIX"), "db", "objects under the namespace");
    assert_eq!(get("PGQUORUM_ARCHIVE_S3_SECRET_ACCESS_KEY"), "(secret pgquorum-s3/secret-access-key)");
    assert_eq!(get("PGQUORUM_BOOTSTRAP_BACKUP_SCHEDULE"), "0 0 * * *");
    assert_eq!(get("PGQUORUM_BOOTSTRAP_BACKUP_RETENTION"), "90d");

    // With the Secret's values in place, the environment is a valid agent configuration.
    let (ok, text) = check_config(&env);
    assert!(ok, "the component's environment is not a valid configuration:\n{text}");
    for key in
        ["archive.enabled", "archive.s3.bucket", "bootstrap.backup.schedule", "bootstrap.backup.retention"]
    {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(key));
        assert!(line.is_some_and(|l| l.contains("(env ")), "{key} not set from the environment:\n{text}");
    }
}

/// Runs `pgquorum-agent check-config` with the container environment `env`: secret files at
/// the volume's mode and data paths moved into a scratch directory, as the volumes would
/// provide them, and values from a Secret replaced by a stand-in. Returns success and output.
fn check_config(env: &[(String, String)]) -> (bool, String) {
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let scratch = tempfile::tempdir().expect("tempdir");
    let secrets = scratch.path().join("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets dir");
    let mode: u32 = get("(secrets mode)").parse().expect("mode");
    for f in ["superuser-password", "replication-password", "application-password", "token"] {
        use std::os::unix::fs::PermissionsExt;
        let path = secrets.join(f);
        std::fs::write(&path, "a-secret-of-thirty-two-characters!!\n").expect("secret");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let data = scratch.path().join("data");
    let mut cmd = std::process::Command::new(pgquorum_tests::bins::bin_dir().join("pgquorum-agent"));
    cmd.env_clear().arg("check-config");
    for (k, v) in env.iter().filter(|(k, _)| !k.starts_with('(')) {
        let v = if v.starts_with("(secret ") { "from-the-secret".to_string() } else { v.clone() };
        let v = v
            .replace("/etc/pgquorum/secrets", &secrets.display().to_string())
            .replace("/var/lib/pgquorum", &data.display().to_string());
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run pgquorum-agent check-config");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
