//! The difference between two configurations as JSON, one `key: old -> new` line per changed
//! key (nested keys joined with dots, `(unset)` for a missing side). Shown by the agent when a
//! change is stored and by `pgquorumctl config edit` before it is sent.

use serde_json::Value;

fn flatten(v: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten(v, &if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, out);
            }
        }
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// Lines `key: old -> new` for every key that differs, sorted by key.
pub fn json_diff(old: &Value, new: &Value) -> Vec<String> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten(old, "", &mut a);
    flatten(new, "", &mut b);
    let mut keys: Vec<&String> = a.iter().chain(b.iter()).map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    let get = |l: &[(String, String)], k: &str| l.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    keys.into_iter()
        .filter_map(|k| {
            let (o, n) = (get(&a, k), get(&b, k));
            (o != n).then(|| {
                format!("{k}: {} -> {}", o.unwrap_or("(unset)".into()), n.unwrap_or("(unset)".into()))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn changed_added_and_removed_keys_are_listed_nested_keys_dotted() {
        let old = json!({"ttl": "1500ms", "postgres_parameters": {"work_mem": "4MB", "gone": "x"}});
        let new = json!({"ttl": "2s", "postgres_parameters": {"work_mem": "4MB", "new": "y"}});
        assert_eq!(
            super::json_diff(&old, &new),
            [
                "postgres_parameters.gone: \"x\" -> (unset)",
                "postgres_parameters.new: (unset) -> \"y\"",
                "ttl: \"1500ms\" -> \"2s\"",
            ]
        );
    }
}
