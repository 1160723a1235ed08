//! The report of a chaos run: the checker's verdict with what was run (scenario, seed, mode),
//! per-kind failover-time statistics, and its human summary with a text histogram of the time
//! each fault left the cluster without a writable primary. Pure: rendering only.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::checker::{FaultTiming, Verdict};

/// Median and p99 of the times after one kind of fault.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KindStats {
    /// How many faults of this kind.
    pub count: usize,
    /// Seconds not writable after the fault (`FaultTiming::writable_after`): median.
    pub writable_median: Option<f64>,
    /// Seconds not writable: 99th percentile (nearest rank).
    pub writable_p99: Option<f64>,
    /// Seconds to convergence: median.
    pub converged_median: Option<f64>,
    /// Seconds to convergence: 99th percentile.
    pub converged_p99: Option<f64>,
}

/// A whole run's report (`--report FILE` holds it as JSON).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The scenario file.
    pub scenario: String,
    /// The seed (replays the same schedule).
    pub seed: u64,
    /// Durability mode of the cluster.
    pub durability: String,
    /// "network namespaces" or "loopback (no partition faults)".
    pub network: String,
    /// Scheduled faults left out, and why.
    pub skipped: Vec<String>,
    /// Wall-clock length of the run, seconds.
    pub seconds: f64,
    /// Statistics per fault kind.
    pub per_kind: BTreeMap<String, KindStats>,
    /// The checker's verdict (violations included).
    pub verdict: Verdict,
}

/// The `q` quantile (0..=1) of `v` by nearest rank.
pub fn quantile(v: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Statistics per fault kind.
pub fn per_kind(faults: &[FaultTiming]) -> BTreeMap<String, KindStats> {
    let mut by: BTreeMap<String, Vec<&FaultTiming>> = BTreeMap::new();
    for f in faults {
        by.entry(f.kind.clone()).or_default().push(f);
    }
    by.into_iter()
        .map(|(k, fs)| {
            let w: Vec<f64> = fs.iter().filter_map(|f| f.writable_after).collect();
            let c: Vec<f64> = fs.iter().filter_map(|f| f.converged_after).collect();
            let stats = KindStats {
                count: fs.len(),
                writable_median: quantile(&w, 0.5),
                writable_p99: quantile(&w, 0.99),
                converged_median: quantile(&c, 0.5),
                converged_p99: quantile(&c, 0.99),
            };
            (k, stats)
        })
        .collect()
}

/// Bucket upper bounds (seconds) of the histogram.
const BUCKETS: [f64; 8] = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, f64::INFINITY];

/// A text histogram of `values` (seconds), one line per bucket.
pub fn histogram(values: &[f64]) -> String {
    let mut counts = [0usize; BUCKETS.len()];
    for v in values {
        let i = BUCKETS.iter().position(|b| v <= b).unwrap_or(BUCKETS.len() - 1);
        counts[i] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(0).max(1);
    let mut out = String::new();
    let mut low = 0.0;
    for (b, n) in BUCKETS.iter().zip(counts) {
        let label = if b.is_finite() { format!("{low}-{b}s") } else { format!("{low}s+") };
        let bar = "#".repeat((n * 40).div_ceil(most));
        out.push_str(&format!("  {label:>9} {n:>5} {bar}\n"));
        low = *b;
    }
    out
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |s| format!("{s:.2}s"))
}

impl Report {
    /// The human summary printed after a run.
    pub fn summary(&self) -> String {
        let v = &self.verdict;
        let mut out = format!(
            "chaos run: {} (seed {}), {} mode, {}, {:.0}s\n",
            self.scenario, self.seed, self.durability, self.network, self.seconds
        );
        for s in &self.skipped {
            out.push_str(&format!("  skipped: {s}\n"));
        }
        let allowed = v.lost.iter().filter(|l| l.allowed).count();
        out.push_str(&format!(
            "writes: {} sent, {} acknowledged, {} acknowledged writes lost ({} within the allowed lag), \
             {} split-brain windows, {} stale reads, worst replica staleness {}\n",
            v.writes,
            v.acknowledged,
            v.lost.len(),
            allowed,
            v.split_brain.len(),
            v.stale_reads.len(),
            secs(v.max_replica_staleness)
        ));
        out.push_str(&format!(
            "\n{:<28} {:>5} {:>10} {:>10} {:>12} {:>12}\n",
            "fault", "count", "unwritable", "p99", "converged", "p99"
        ));
        for (k, s) in &self.per_kind {
            out.push_str(&format!(
                "{k:<28} {:>5} {:>10} {:>10} {:>12} {:>12}\n",
                s.count,
                secs(s.writable_median),
                secs(s.writable_p99),
                secs(s.converged_median),
                secs(s.converged_p99)
            ));
        }
        let all: Vec<f64> = v.faults.iter().filter_map(|f| f.writable_after).collect();
        out.push_str("\ntime without acknowledged writes after each fault (all faults):\n");
        out.push_str(&histogram(&all));
        if v.violations.is_empty() {
            out.push_str("\nPASS: no violation\n");
        } else {
            out.push_str(&format!("\nFAIL: {} violations\n", v.violations.len()));
            for s in v.violations.iter().take(20) {
                out.push_str(&format!("  - {s}\n"));
            }
            if v.violations.len() > 20 {
                out.push_str(&format!("  ... and {} more in the JSON report\n", v.violations.len() - 20));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&[3.0], 0.99), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn the_histogram_counts_each_value_in_its_bucket() {
        let h = histogram(&[0.2, 0.7, 1.5, 1.6, 100.0]);
        let counts: Vec<usize> = h
            .lines()
            .map(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
            .map(|n| n.expect("a count"))
            .collect();
        assert_eq!(counts, [1, 1, 2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn per_kind_statistics_group_by_fault_kind() {
        let t = |kind: &str, w: Option<f64>| FaultTiming {
            kind: kind.into(),
            target: "m1".into(),
            writable_after: w,
            converged_after: Some(5.0),
        };
        let s = per_kind(&[t("kill-node", Some(2.0)), t("kill-node", Some(4.0)), t("switchover", None)]);
        assert_eq!(s["kill-node"].count, 2);
        assert_eq!(s["kill-node"].writable_median, Some(2.0));
        assert_eq!(s["kill-node"].writable_p99, Some(4.0));
        assert_eq!(s["switchover"].writable_median, None);
    }
}
