//! Golden files in the style of raft-rs's datadriven tests: a file holds cases; each case is
//! `case NAME`, description lines, a `----` line, then the expected plan up to a blank line.
//!
//! Owns splitting files into cases and rewriting the expected parts (`UPDATE_GOLDEN=1`). The
//! description syntax lives in `parse.rs` and `values.rs`; rendering of plans in `support`.

pub mod parse;
mod values;

/// One case of a golden file.
pub struct Case {
    /// The name after `case`.
    pub name: String,
    /// 1-based line of the `case` line, for messages.
    pub line: usize,
    /// Description lines (comments dropped, indentation kept).
    pub input: Vec<String>,
    /// Expected output lines.
    pub expected: Vec<String>,
    /// Line indexes (0-based, end exclusive) of the expected block.
    expected_span: (usize, usize),
}

/// Splits a golden file into cases.
pub fn cases(text: &str) -> Result<Vec<Case>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.trim().is_empty() || l.starts_with('#') {
            i += 1;
            continue;
        }
        let name = l.strip_prefix("case ").ok_or_else(|| format!("line {}: expected `case NAME`", i + 1))?;
        let start = i;
        i += 1;
        let mut input = Vec::new();
        while i < lines.len() && lines[i] != "----" {
            let t = lines[i];
            if !(t.trim().is_empty() || t.trim_start().starts_with('#')) {
                input.push(t.to_string());
            }
            i += 1;
        }
        if i == lines.len() {
            return Err(format!("line {}: case {name} has no `----` line", start + 1));
        }
        i += 1;
        let from = i;
        while i < lines.len() && !lines[i].trim().is_empty() {
            i += 1;
        }
        let expected = lines[from..i].iter().map(|s| s.to_string()).collect();
        out.push(Case {
            name: name.trim().into(),
            line: start + 1,
            input,
            expected,
            expected_span: (from, i),
        });
    }
    Ok(out)
}

/// The file with each case's expected block replaced by `actual[i]`.
pub fn rewrite(text: &str, cases: &[Case], actual: &[Vec<String>]) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut at = 0;
    for (c, got) in cases.iter().zip(actual) {
        out.extend(lines[at..c.expected_span.0].iter().map(|s| s.to_string()));
        out.extend(got.iter().cloned());
        at = c.expected_span.1;
    }
    out.extend(lines[at..].iter().map(|s| s.to_string()));
    let mut s = out.join("\n");
    s.push('\n');
    s
}
