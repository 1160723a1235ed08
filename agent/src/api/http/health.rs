//! Which status a health check answers: Patroni's contract (`/primary`, `/replica?lag=16MB`,
//! `/sync`, `/liveness`, ...) as one pure function, `check(endpoint, query, situation)`.
//!
//! Owns the endpoint vocabulary, the query parameters and the 200/503 rule of each. Must not
//! read anything: the server gathers a `Situation` from memory and calls `check`.

use std::collections::BTreeMap;
use std::time::Duration;

use pgquorum_core::Lsn;
use pgquorum_core::ha::config::fence_lead;

/// A health-check endpoint (several paths may name one).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/`, `/primary`, `/read-write`, `/leader`, `/master`: the writable primary.
    Primary,
    /// `/standby-leader`, `/standby_leader`: never (pgquorum has no standby clusters).
    StandbyLeader,
    /// `/replica`: a running standby that takes read load.
    Replica,
    /// `/read-only`: the primary or a replica.
    ReadOnly,
    /// `/synchronous`, `/sync`, `/quorum`: a replica in the synchronous set.
    Sync,
    /// `/read-only-sync`, `/read-only-synchronous`, `/read-only-quorum`: primary or sync replica.
    ReadOnlySync,
    /// `/asynchronous`, `/async`: a replica outside the synchronous set.
    Async,
    /// `/health`: Postgres runs, in any role.
    Health,
    /// `/liveness`: the HA loop is not stuck.
    Liveness,
    /// `/readiness`: the primary, or a replica streaming within the lag limit.
    Readiness,
}

impl Endpoint {
    /// Whether a balancer asking this routes reads to replicas only (never to a primary).
    pub fn routes_reads_to_replicas(self) -> bool {
        matches!(self, Endpoint::Replica | Endpoint::Sync | Endpoint::Async)
    }

    /// The endpoint a path names (a trailing `/` is ignored), if any.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        let p = if path.len() > 1 { path.trim_end_matches('/') } else { path };
        Some(match p {
            "" | "/" | "/primary" | "/read-write" | "/leader" | "/master" => Endpoint::Primary,
            "/standby-leader" | "/standby_leader" => Endpoint::StandbyLeader,
            "/replica" => Endpoint::Replica,
            "/read-only" => Endpoint::ReadOnly,
            "/synchronous" | "/sync" | "/quorum" => Endpoint::Sync,
            "/read-only-sync" | "/read-only-synchronous" | "/read-only-quorum" => Endpoint::ReadOnlySync,
            "/asynchronous" | "/async" => Endpoint::Async,
            "/health" => Endpoint::Health,
            "/liveness" => Endpoint::Liveness,
            "/readiness" => Endpoint::Readiness,
            _ => return None,
        })
    }

    /// Whether `tag_KEY=VALUE` parameters apply (Patroni ignores them for the primary family).
    fn checks_tags(self) -> bool {
        !matches!(
            self,
            Endpoint::Primary | Endpoint::StandbyLeader | Endpoint::Liveness | Endpoint::Readiness
        )
    }
}

/// Which WAL position `/readiness` measures lag by.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum LagMode {
    /// Replayed WAL (`mode=apply`, the default).
    #[default]
    Apply,
    /// Received WAL (`mode=write`).
    Write,
}

/// The query parameters of a health check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// `lag=`: the most bytes a replica may be behind. Err holds the unparsable text.
    pub lag: Option<Result<u64, String>>,
    /// `replication_state=`: `streaming` or `in archive recovery`.
    pub replication_state: Option<String>,
    /// `tag_KEY=VALUE`, each of which must equal the member's tag.
    pub tags: Vec<(String, String)>,
    /// `mode=` of `/readiness`.
    pub mode: LagMode,
}

impl Query {
    /// Parses a URL query string (`lag=16MB&tag_zone=a`). Unknown parameters are ignored, as
    /// Patroni does; the first of repeated ones counts.
    pub fn parse(raw: &str) -> Query {
        let mut q = Query::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(k), decode(v));
            match k.as_str() {
                "lag" if q.lag.is_none() => {
                    q.lag = Some(pgquorum_core::state::parse_bytes(&v).map_err(|_| v.clone()))
                }
                "replication_state" if q.replication_state.is_none() => q.replication_state = Some(v),
                "mode" => q.mode = if v == "write" { LagMode::Write } else { LagMode::Apply },
                _ => {
                    if let Some(tag) = k.strip_prefix("tag_")
                        && !q.tags.iter().any(|(t, _)| t == tag)
                    {
                        q.tags.push((tag.to_string(), v));
                    }
                }
            }
        }
        q
    }
}

/// Percent-decoding of one query component (`+` is a space).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |j: usize| b.get(j).and_then(|c| char::from(*c).to_digit(16));
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What this member's Postgres is doing, as its last report says.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Pg {
    /// No Postgres on this member (a witness).
    Disabled,
    /// Not running: stopped, starting, crashed, or busy with a long action (clone, rewind,
    /// promotion, restart).
    NotRunning,
    /// Running and writable.
    Writable,
    /// Running in recovery.
    Recovery {
        /// The WAL receiver is streaming (else: in archive recovery).
        streaming: bool,
    },
}

/// Everything a health check looks at, gathered from memory once per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Situation {
    /// The local Postgres.
    pub pg: Pg,
    /// Age of the member's own last report; older than twice the ttl, it is not trusted and
    /// Postgres counts as not running.
    pub report_age: Duration,
    /// Lease time left for the current primary grant (None: not granted to this member, the
    /// grant expired, or no lease for its epoch).
    pub lease_left: Option<Duration>,
    /// The applied state names this member primary (a standby then is being promoted).
    pub granted: bool,
    /// In the cluster's synchronous target set.
    pub in_sync_set: bool,
    /// Standby: last received WAL position.
    pub receive_lsn: Option<Lsn>,
    /// Standby: last replayed WAL position.
    pub replay_lsn: Option<Lsn>,
    /// The primary's last reported WAL position.
    pub primary_lsn: Option<Lsn>,
    /// The member's tags as text (custom ones and nofailover, nosync, noloadbalance, ...).
    pub tags: BTreeMap<String, String>,
    /// Dynamic `maximum_lag_on_failover`: `/readiness`'s default lag limit.
    pub maximum_lag_on_failover: u64,
    /// Dynamic `ttl`.
    pub ttl: Duration,
    /// Maintenance mode.
    pub paused: bool,
    /// Since the HA loop last finished a tick (None: not yet).
    pub since_tick: Option<Duration>,
}

impl Situation {
    fn pg(&self) -> Pg {
        if self.report_age > self.ttl * 2 && self.pg != Pg::Disabled { Pg::NotRunning } else { self.pg }
    }

    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    /// Writable and holding the lease of the current grant past the point where it would fence.
    fn is_primary(&self) -> bool {
        self.pg() == Pg::Writable && self.lease_left.is_some_and(|l| l > fence_lead(self.ttl))
    }

    /// Bytes behind the primary by `mode`: against the furthest of the primary's last reported
    /// position and what this standby received. None when unknown.
    fn lag(&self, mode: LagMode) -> Option<u64> {
        let reference = self.primary_lsn.max(self.receive_lsn)?;
        let at = match mode {
            LagMode::Apply => self.replay_lsn,
            LagMode::Write => self.receive_lsn,
        }?;
        Some(reference.saturating_sub(at))
    }

    fn replication_state(&self) -> Option<&'static str> {
        match self.pg() {
            Pg::Recovery { streaming: true } => Some("streaming"),
            Pg::Recovery { streaming: false } => Some("in archive recovery"),
            _ => None,
        }
    }

    /// Patroni's "replica status": a running standby, not being promoted, not excluded from
    /// load balancing, within `lag=` and in the asked replication state.
    fn replica(&self, q: &Query) -> Result<(), String> {
        let Pg::Recovery { .. } = self.pg() else {
            return Err(format!("not a running replica ({})", describe(self.pg())));
        };
        if self.granted {
            return Err("being promoted".into());
        }
        if self.tag("noloadbalance") == Some("true") {
            return Err("tagged noloadbalance".into());
        }
        match &q.lag {
            Some(Err(bad)) => return Err(format!("invalid lag {bad:?}: write bytes or 16kB, 64MB, 1GB")),
            Some(Ok(max)) => {
                if let Some(lag) = self.lag(LagMode::Apply).filter(|l| l > max) {
                    return Err(format!("replay lag {lag} bytes exceeds {max}"));
                }
            }
            None => {}
        }
        if let Some(want) = &q.replication_state
            && self.replication_state() != Some(want.as_str())
        {
            return Err(format!(
                "replication state is {}, not {want}",
                self.replication_state().unwrap_or("-")
            ));
        }
        Ok(())
    }

    fn sync_replica(&self, q: &Query) -> Result<(), String> {
        if !self.in_sync_set {
            return Err("not in the synchronous set".into());
        }
        if self.pg() != (Pg::Recovery { streaming: true }) {
            return Err("not streaming".into());
        }
        self.replica(q)
    }

    fn primary(&self) -> Result<(), String> {
        match self.pg() {
            _ if self.is_primary() => Ok(()),
            Pg::Writable => Err("writable but holds no valid lease for the current grant".into()),
            pg => Err(format!("not the primary ({})", describe(pg))),
        }
    }

    fn tags_match(&self, q: &Query) -> Result<(), String> {
        for (k, want) in &q.tags {
            match self.tag(k) {
                Some(have) if have == want => {}
                Some(have) => return Err(format!("tag {k} is {have:?}, not {want:?}")),
                None => return Err(format!("no tag {k}")),
            }
        }
        Ok(())
    }

    fn liveness(&self) -> Result<(), String> {
        let limit = if self.pg() == Pg::Writable { self.ttl } else { self.ttl * 2 };
        match self.since_tick {
            _ if self.paused => Ok(()),
            Some(t) if t < limit => Ok(()),
            Some(t) => Err(format!(
                "the HA loop last ticked {}ms ago (limit {}ms)",
                t.as_millis(),
                limit.as_millis()
            )),
            None => Err("the HA loop has not ticked yet".into()),
        }
    }

    fn readiness(&self, q: &Query) -> Result<(), String> {
        if self.is_primary() {
            return Ok(());
        }
        if self.pg() != (Pg::Recovery { streaming: true }) {
            return Err(format!("not the primary and not a streaming replica ({})", describe(self.pg())));
        }
        let max = match &q.lag {
            Some(Ok(max)) => *max,
            Some(Err(bad)) => return Err(format!("invalid lag {bad:?}: write bytes or 16kB, 64MB, 1GB")),
            None => self.maximum_lag_on_failover,
        };
        match self.lag(q.mode) {
            Some(lag) if lag <= max => Ok(()),
            Some(lag) => Err(format!("{:?} lag {lag} bytes exceeds {max}", q.mode)),
            None => Err("lag unknown".into()),
        }
    }
}

fn describe(pg: Pg) -> &'static str {
    match pg {
        Pg::Disabled => "witness without Postgres",
        Pg::NotRunning => "Postgres not running",
        Pg::Writable => "writable",
        Pg::Recovery { .. } => "in recovery",
    }
}

/// A health check's answer: 200, or 503 with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict(pub Result<(), String>);

impl Verdict {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        if self.0.is_ok() { 200 } else { 503 }
    }
}

/// The answer of `endpoint` with query `q` on a member in situation `s`.
pub fn check(endpoint: Endpoint, q: &Query, s: &Situation) -> Verdict {
    let res = match endpoint {
        Endpoint::Primary => s.primary(),
        Endpoint::StandbyLeader => Err("pgquorum has no standby clusters".into()),
        Endpoint::Replica => s.replica(q),
        Endpoint::ReadOnly => s.primary().or_else(|_| s.replica(q)),
        Endpoint::Sync => s.sync_replica(q),
        Endpoint::ReadOnlySync => s.primary().or_else(|_| s.sync_replica(q)),
        Endpoint::Async if s.in_sync_set => Err("in the synchronous set".into()),
        Endpoint::Async => s.replica(q),
        Endpoint::Health => match s.pg() {
            Pg::Writable | Pg::Recovery { .. } => Ok(()),
            pg => Err(describe(pg).into()),
        },
        Endpoint::Liveness => s.liveness(),
        Endpoint::Readiness => s.readiness(q),
    };
    let res = match res {
        Ok(()) if endpoint.checks_tags() => s.tags_match(q),
        other => other,
    };
    Verdict(res)
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
