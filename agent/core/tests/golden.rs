//! Golden tests of `decide`: every case in `tests/testdata/*.txt` describes one observation and
//! the plan expected for it (syntax in `tests/testdata/README.txt`).
//!
//! Run with `UPDATE_GOLDEN=1` to rewrite the expected parts from what `decide` returns now;
//! review the diff before keeping it. `testdata/regressions.txt` keeps plans the core once got
//! wrong.

mod golden_lang;
mod support;

use std::path::{Path, PathBuf};

use pgquorum_core::ha::decide;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("testdata directory exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "txt") && p.file_name().is_some_and(|n| n != "README.txt")
        })
        .collect();
    out.sort();
    out
}

/// Runs every case of every file in `dir`; returns (cases run, failures as text).
fn run_dir(dir: &Path, update: bool) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut count = 0;
    for path in files(dir) {
        let text = std::fs::read_to_string(&path).expect("readable golden file");
        let cases = golden_lang::cases(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut actual = Vec::new();
        for c in &cases {
            count += 1;
            let (obs, cfg) = golden_lang::parse::observation(&c.input)
                .unwrap_or_else(|e| panic!("{}:{} case {}: {e}", path.display(), c.line, c.name));
            let plan = decide(&obs, &cfg);
            assert_eq!(plan, decide(&obs, &cfg), "decide is deterministic");
            let got = support::plan(&plan);
            if got != c.expected {
                failures.push(format!(
                    "{}:{} case {}\n--- expected\n{}\n--- actual\n{}\n",
                    path.display(),
                    c.line,
                    c.name,
                    c.expected.join("\n"),
                    got.join("\n")
                ));
            }
            actual.push(got);
        }
        if update {
            std::fs::write(&path, golden_lang::rewrite(&text, &cases, &actual))
                .expect("writable golden file");
        }
    }
    (count, failures)
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata")
}

fn update() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

#[test]
fn golden_cases_match_the_decisions() {
    let (count, failures) = run_dir(&testdata(), update());
    assert!(count >= 40, "expected at least 40 golden cases, found {count}");
    assert!(
        failures.is_empty(),
        "{} of {count} golden cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The status cadence (`cadence::settled`): across every golden case, a plan that does any work
/// (an action other than renewing, a coordinator action) never counts as settled, so the agent
/// keeps reading Postgres every tick while anything changes; the steady primary does count.
#[test]
fn only_plans_without_work_let_the_agent_read_postgres_slowly() {
    use pgquorum_core::ha::cadence::settled;
    use pgquorum_core::ha::plan::Action;
    let mut calm = Vec::new();
    for path in files(&testdata()) {
        let text = std::fs::read_to_string(&path).expect("readable golden file");
        for c in golden_lang::cases(&text).expect("parsable golden file") {
            let (obs, cfg) = golden_lang::parse::observation(&c.input).expect("parsable case");
            let plan = decide(&obs, &cfg);
            if settled(&obs, &plan) {
                assert!(
                    plan.member.actions.iter().all(|a| matches!(a, Action::Renew { .. }))
                        && plan.coordinator.as_ref().is_none_or(|d| d.actions.is_empty())
                        && obs.local.task.is_none()
                        && obs.cluster.switchover.is_none(),
                    "case {} does work but counts as settled",
                    c.name
                );
                calm.push(c.name.clone());
            }
        }
    }
    assert!(calm.iter().any(|n| n == "steady_primary_does_nothing"), "settled cases: {calm:?}");
    assert!(!calm.iter().any(|n| n == "primary_applies_the_recorded_target"), "settled cases: {calm:?}");
}
