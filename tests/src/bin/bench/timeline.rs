//! What the agents logged during one failover, as wall-clock µs: the part of each agent's log
//! after the bench's `=== test: trial N: kill` marker (up to the next marker), searched for the
//! first line of each step. Reads the default `tracing` text format, whose lines start with an
//! RFC 3339 UTC timestamp (`2025-01-02T03:04:05.123456Z`).

use pgquorum_tests::Cluster;

/// First time (µs since the epoch) each failover step was logged, if it was.
#[derive(Default)]
pub(crate) struct Events {
    /// The coordinator declared the old primary's lease expired.
    expired: Option<i64>,
    /// The coordinator proposed the grant of the next epoch.
    granted: Option<i64>,
    /// The new primary started promoting.
    promote: Option<i64>,
    /// Promotion finished.
    promoted: Option<i64>,
    /// The surviving replica was pointed at the new primary.
    follow: Option<i64>,
}

impl Events {
    /// `expired +X / grant +X / ...` in ms after `kill_us`.
    pub(crate) fn summary(&self, kill_us: i64) -> String {
        let at = |t: Option<i64>| t.map_or("?".to_string(), |t| format!("{:+}", (t - kill_us) / 1000));
        format!(
            "expired {} grant {} promote {} promoted {} follow {}",
            at(self.expired),
            at(self.granted),
            at(self.promote),
            at(self.promoted),
            at(self.follow)
        )
    }
}

/// Events of trial `n` (whose new primary is `new`) in every agent's log.
pub(crate) fn events(c: &Cluster, n: usize, new: &str) -> Events {
    let marker = format!("=== test: trial {n}: kill");
    let mut ev = Events::default();
    for a in &c.agents {
        let text = a.log_text();
        let Some(start) = text.rfind(&marker) else { continue };
        let part = &text[start + marker.len()..];
        let part = part.find("=== test: trial ").map_or(part, |end| &part[..end]);
        for line in part.lines() {
            let Some(t) = line.split_whitespace().next().and_then(parse_rfc3339_us) else { continue };
            let first = |slot: &mut Option<i64>, hit: bool| {
                if hit && slot.is_none_or(|s| t < s) {
                    *slot = Some(t);
                }
            };
            first(&mut ev.expired, line.contains("ran out; failing over"));
            first(&mut ev.granted, line.contains(&format!("coordinator proposes: grant primary to {new}")));
            first(&mut ev.promote, a.name == new && line.contains("promoting with"));
            first(&mut ev.promoted, a.name == new && line.contains("Promote done"));
            first(&mut ev.follow, a.name != new && line.contains(&format!("streaming from {new}")));
        }
    }
    ev
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` to µs since the Unix epoch.
fn parse_rfc3339_us(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut h = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    let digits: String = frac.chars().take(6).collect();
    let micros =
        if digits.is_empty() { 0 } else { digits.parse::<i64>().ok()? * 10_i64.pow(6 - digits.len() as u32) };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3_600 + mm * 60 + ss) * 1_000_000) + micros)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_tracing_timestamps() {
        assert_eq!(super::parse_rfc3339_us("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(super::parse_rfc3339_us("2000-03-01T00:00:00.000001Z"), Some(951_868_800_000_001));
        assert_eq!(super::parse_rfc3339_us("INFO"), None);
    }
}
