//! A strict reader of the Prometheus / OpenMetrics text format, enough to check what `/metrics`
//! serves: every line is a comment (`# HELP`, `# TYPE`, `# UNIT`, `# EOF` last) or a
//! well-formed sample of a declared family.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or_else(|| format!("bad label in {{{s}}}"))?;
        if !valid_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("unterminated escape in {{{s}}}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated label value in {{{s}}}")),
            }
        };
        if out.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(out)
}

/// Parses a whole exposition; errors name the offending line.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut families = BTreeSet::new();
    let mut samples = Vec::new();
    let mut eof = false;
    for (i, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", i + 1);
        if eof {
            return Err(at("content after # EOF".into()));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(c) = line.strip_prefix("# ") {
            let mut parts = c.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !valid_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            match kind {
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown",
                        "untyped",
                    ];
                    if !known.contains(&t) {
                        return Err(at(format!("unknown type {t:?}")));
                    }
                    families.insert(name.to_string());
                }
                "HELP" | "UNIT" => {}
                other => return Err(at(format!("unknown comment {other:?}"))),
            }
            continue;
        }
        if line.trim().is_empty() {
            return Err(at("empty line".into()));
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value".into()))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| at(format!("bad value {v:?}")))?,
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let l = l.strip_suffix('}').ok_or_else(|| at("unclosed labels".into()))?;
                (n, parse_labels(l).map_err(at)?)
            }
            None => (series, BTreeMap::new()),
        };
        if !valid_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let family = ["_total", "_info", "_created", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| families.contains(*f)))
            .unwrap_or(name);
        if !families.contains(family) {
            return Err(at(format!("sample of undeclared family {name}")));
        }
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    Ok(samples)
}

/// The value of the one sample called `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_expositions_parse_and_malformed_ones_are_refused() {
        let ok =
            "# HELP a_total x\n# TYPE a counter\na_total{m=\"x\\\"y\"} 3\n# TYPE b gauge\nb 1.5\n# EOF\n";
        let s = parse(ok).expect("parses");
        assert_eq!(value(&s, "a_total", &[("m", "x\"y")]), Some(3.0));
        assert_eq!(value(&s, "b", &[]), Some(1.5));
        for bad in
            ["c 1\n", "# TYPE a gauge\na one\n", "# TYPE a gauge\na{x=1} 1\n", "# EOF\n# TYPE a gauge\n"]
        {
            assert!(parse(bad).is_err(), "{bad:?} is refused");
        }
    }
}
