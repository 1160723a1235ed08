//! Where configuration values come from: the file (YAML or TOML), `PGQUORUM_*` environment
//! variables and `--set` flags, flattened into (dotted key, text value, origin) triples.
//!
//! Owns parsing of the file format and the environment naming scheme. Must not interpret
//! values; `keys.rs` does.

use std::fmt;
use std::path::Path;

use serde_json::Value;

use super::keys;

/// Where a value came from, reported by `check-config` and in errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The configuration file.
    File(String),
    /// An environment variable.
    Env(String),
    /// A `--set` flag.
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(p) => write!(f, "file {p}"),
            Origin::Env(v) => write!(f, "env {v}"),
            Origin::Flag => f.write_str("flag --set"),
        }
    }
}

/// One value to apply.
#[derive(Clone, Debug)]
pub struct Setting {
    /// Dotted key.
    pub key: String,
    /// Value as text.
    pub value: String,
    /// Where it came from.
    pub origin: Origin,
}

/// Reads and flattens a YAML (`.yaml`, `.yml`) or TOML (`.toml`) file.
pub fn from_file(path: &Path) -> Result<Vec<Setting>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let value: Value = match ext {
        "toml" => toml::from_str(&text)
            .map_err(|e| format!("config file {} is not valid TOML: {e}", path.display()))?,
        "yaml" | "yml" | "" => serde_saphyr::from_str(&text)
            .map_err(|e| format!("config file {} is not valid YAML: {e}", path.display()))?,
        other => {
            return Err(format!(
                "config file {}: unknown extension .{other}; use .yaml, .yml or .toml",
                path.display()
            ));
        }
    };
    let origin = Origin::File(path.display().to_string());
    let mut out = Vec::new();
    match value {
        Value::Object(_) => flatten("", &value, &origin, &mut out)?,
        Value::Null => {}
        _ => return Err(format!("config file {} must hold a mapping of keys at the top", path.display())),
    }
    Ok(out)
}

fn flatten(prefix: &str, v: &Value, origin: &Origin, out: &mut Vec<Setting>) -> Result<(), String> {
    let text = |s: String| Setting { key: prefix.to_string(), value: s, origin: origin.clone() };
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, child, origin, out)?;
            }
        }
        Value::Array(items) => {
            let mut parts = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => parts.push(s.clone()),
                    Value::Number(n) => parts.push(n.to_string()),
                    _ => return Err(format!("{prefix}: list items must be plain values")),
                }
            }
            out.push(text(parts.join(",")));
        }
        Value::String(s) => out.push(text(s.clone())),
        Value::Number(n) => out.push(text(n.to_string())),
        Value::Bool(b) => out.push(text(b.to_string())),
        Value::Null => {}
    }
    Ok(())
}

/// Environment variables naming configuration keys. Variables with the `PGQUORUM_` prefix that
/// match no key are returned in the second list so the caller can warn about typos.
pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> (Vec<Setting>, Vec<String>) {
    /// Variables read by other parts of pgquorum, not configuration keys.
    const OTHER: &[&str] = &["PGQUORUM_CONFIG", "PGQUORUM_ENDPOINT", "PGQUORUM_OUTPUT"];
    let mut settings = Vec::new();
    let mut unknown = Vec::new();
    for (name, value) in vars {
        // The downward API's usual names for the pod (deploy/kubernetes sets them).
        let downward = match name.as_str() {
            "POD_NAME" => Some("kube.pod"),
            "POD_NAMESPACE" => Some("kube.namespace"),
            _ => None,
        };
        if let Some(key) = downward {
            settings.push(Setting { key: key.to_string(), value, origin: Origin::Env(name) });
            continue;
        }
        if !name.starts_with("PGQUORUM_")
            || OTHER.contains(&name.as_str())
            || pgquorum_proto::auth::CTL_CREDENTIAL_VARIABLES.contains(&name.as_str())
        {
            continue;
        }
        let found = keys::all().find_map(|d| {
            let env = d.env();
            if d.key.ends_with('*') {
                let rest = name.strip_prefix(&env)?;
                (!rest.is_empty())
                    .then(|| format!("{}{}", d.key.trim_end_matches('*'), rest.to_ascii_lowercase()))
            } else {
                (name == env).then(|| d.key.to_string())
            }
        });
        match found {
            Some(key) => settings.push(Setting { key, value, origin: Origin::Env(name) }),
            None => unknown.push(name),
        }
    }
    // Same key from POD_* and PGQUORUM_*: the explicit PGQUORUM_* one is applied last and wins.
    settings
        .sort_by_key(|s| (s.key.clone(), matches!(&s.origin, Origin::Env(n) if n.starts_with("PGQUORUM_"))));
    (settings, unknown)
}

/// `--set KEY=VALUE` flags.
pub fn from_flags(flags: &[String]) -> Result<Vec<Setting>, String> {
    flags
        .iter()
        .map(|f| {
            let (k, v) = f.split_once('=').ok_or_else(|| {
                format!("--set {f:?}: write KEY=VALUE, like --set raft.heartbeat_interval=100ms")
            })?;
            Ok(Setting { key: k.trim().to_string(), value: v.to_string(), origin: Origin::Flag })
        })
        .collect()
}
