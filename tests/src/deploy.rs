//! The Kubernetes manifests of `deploy/kubernetes` as the tests see them: rendered with the
//! real `kubectl kustomize`, split into objects, validated with `kubernetes-validate`.
//!
//! Must not edit the manifests; tests render what users apply.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// `deploy/kubernetes` of this repository.
pub fn kube_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every rendering users apply: the base, each overlay, and the base with each component.
pub const RENDERINGS: &[&str] =
    &["base", "overlays/k3s-raspberry-pi", "overlays/eks", "base+pooler", "base+s3-backup"];

/// Renders one of `RENDERINGS` with `kubectl kustomize`.
pub fn render(which: &str) -> String {
    let dir = kube_dir();
    let (target, _tmp) = if let Some(component) = which.strip_prefix("base+") {
        // A component needs a kustomization that includes it: the one a user would write.
        let tmp = tempfile::Builder::new().prefix("pgq-kustomize-").tempdir().expect("tempdir");
        // kustomize takes relative paths only: climb from the temporary directory to `/`.
        let up = "../".repeat(tmp.path().components().count().saturating_sub(1));
        let rel = |p: PathBuf| {
            let abs = std::fs::canonicalize(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            format!("{up}{}", abs.display().to_string().trim_start_matches('/'))
        };
        let k = format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\ncomponents:\n  - {}\n",
            rel(dir.join("base")),
            rel(dir.join("components").join(component))
        );
        std::fs::write(tmp.path().join("kustomization.yaml"), k).expect("write kustomization");
        (tmp.path().to_path_buf(), Some(tmp))
    } else {
        (dir.join(which), None)
    };
    let out = Command::new("kubectl")
        .args(["kustomize", "--load-restrictor=LoadRestrictionsNone"])
        .arg(&target)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {which} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 manifests")
}

/// The objects of a rendering, as JSON values.
pub fn objects(rendered: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in rendered.lines().chain(std::iter::once("---")) {
        if line == "---" {
            if !cur.trim().is_empty() {
                let v: Value = serde_saphyr::from_str(&cur)
                    .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{cur}"));
                docs.push(v);
            }
            cur.clear();
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs
}

/// `kubernetes-validate`: `PGQUORUM_KUBERNETES_VALIDATE`, else the venv `.ci/run` creates.
pub fn validator() -> PathBuf {
    if let Some(p) = std::env::var_os("PGQUORUM_KUBERNETES_VALIDATE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    let p = home.join(".cache/pgquorum-venv/bin/kubernetes-validate");
    assert!(
        p.exists(),
        "{} not found: create the venv as .ci/run does (python3 -m venv ~/.cache/pgquorum-venv && \
         ~/.cache/pgquorum-venv/bin/pip install kubernetes-validate), or set PGQUORUM_KUBERNETES_VALIDATE",
        p.display()
    );
    p
}

/// What is wrong with the Role(s) of a rendering: anything cluster-scoped, any access to
/// secrets, anything beyond pods get/list/watch/patch and events create. Empty when fine.
pub fn rbac_problems(objs: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut roles = 0;
    for o in objs {
        let kind = o["kind"].as_str().unwrap_or("");
        let name = o["metadata"]["name"].as_str().unwrap_or("?");
        match kind {
            "ClusterRole" | "ClusterRoleBinding" => problems.push(format!("{kind} {name} is cluster-scoped")),
            "RoleBinding" if o["roleRef"]["kind"] != "Role" => {
                problems.push(format!("RoleBinding {name} binds a {}", o["roleRef"]["kind"]))
            }
            "Role" => {
                roles += 1;
                for rule in o["rules"].as_array().into_iter().flatten() {
                    let list = |k: &str| -> Vec<String> {
                        rule[k]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    };
                    let (groups, resources, verbs) = (list("apiGroups"), list("resources"), list("verbs"));
                    if rule.get("nonResourceURLs").is_some() {
                        problems.push(format!("Role {name} has non-resource URLs"));
                    }
                    for r in &resources {
                        let allowed: &[&str] = match r.as_str() {
                            "pods" => &["get", "list", "watch", "patch"],
                            "events" => &["create"],
                            _ => &[],
                        };
                        if allowed.is_empty() {
                            problems.push(format!("Role {name} grants access to {r}"));
                        }
                        for v in &verbs {
                            if !allowed.contains(&v.as_str()) {
                                problems.push(format!("Role {name} grants {v} on {r}"));
                            }
                        }
                    }
                    for g in &groups {
                        if !["", "events.k8s.io"].contains(&g.as_str()) {
                            problems.push(format!("Role {name} grants access to API group {g:?}"));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if roles == 0 {
        problems.push("no Role at all".into());
    }
    problems
}
