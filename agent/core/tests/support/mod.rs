//! Helpers shared by the golden, property and simulation tests: short constructors for names,
//! synchronous sets and durations, and the one-line text rendering of actions and plans.
//!
//! Owns only notation. Must not decide anything: tests compare what `decide` returns, so this
//! module never interprets a plan beyond printing it.
#![allow(dead_code)]

use std::time::Duration;

use pgquorum_core::MemberName;
use pgquorum_core::ha::{Action, Decision, Plan};
use pgquorum_core::state::{Command, SyncSet};

/// A member name that is known to be valid.
pub fn m(name: &str) -> MemberName {
    MemberName::new(name).expect("test member names are valid")
}

/// Parses `async` or `anyK(a,b,...)`.
pub fn parse_sync(s: &str) -> Result<SyncSet, String> {
    if s == "async" || s.is_empty() {
        return Ok(SyncSet::none());
    }
    let bad = || format!("invalid sync set {s:?}: write async or anyK(a,b)");
    let rest = s.strip_prefix("any").ok_or_else(bad)?;
    let (k, names) = rest.split_once('(').ok_or_else(bad)?;
    let names = names.strip_suffix(')').ok_or_else(bad)?;
    let k: u32 = k.parse().map_err(|_| bad())?;
    let mut members = Vec::new();
    for n in names.split(',').filter(|n| !n.is_empty()) {
        members.push(MemberName::new(n)?);
    }
    Ok(SyncSet::any(k, members))
}

/// Renders a synchronous set the way `parse_sync` reads it.
pub fn sync(s: &SyncSet) -> String {
    if s.k == 0 && s.members.is_empty() {
        return "async".into();
    }
    let names: Vec<&str> = s.members.iter().map(|m| m.as_str()).collect();
    format!("any{}({})", s.k, names.join(","))
}

/// Parses `1.5s`, `100ms`, `0s`.
pub fn parse_dur(s: &str) -> Result<Duration, String> {
    pgquorum_core::duration::parse(s)
}

/// Renders a duration as seconds with up to three decimals (`1.5s`, `0.01s`).
pub fn dur(d: Duration) -> String {
    let ms = d.as_millis();
    let (secs, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        return format!("{secs}s");
    }
    let frac = format!("{frac:03}");
    format!("{secs}.{}s", frac.trim_end_matches('0'))
}

fn names(ms: &[MemberName]) -> String {
    if ms.is_empty() {
        return "-".into();
    }
    ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
}

fn opt_name(m: &Option<MemberName>) -> String {
    m.as_ref().map_or("none".into(), |m| m.to_string())
}

/// Renders a Raft command on one line.
pub fn command(c: &Command) -> String {
    match c {
        Command::GrantPrimary { expected_epoch, member, reason, sync: s, lsn, timeline, floor, .. } => {
            let mut out = format!(
                "grant-primary expected={expected_epoch} member={member} reason={} sync={}",
                format!("{reason:?}").to_lowercase(),
                sync(s)
            );
            if let Some(l) = lsn {
                out.push_str(&format!(" lsn={l}"));
            }
            if let Some(t) = timeline {
                out.push_str(&format!(" tl={t}"));
            }
            if let Some(f) = floor {
                out.push_str(&format!(" floor={f}"));
            }
            out
        }
        Command::RecordSystemIdentifier { system_identifier, member } => {
            format!("record-sysid {system_identifier} member={member}")
        }
        Command::ReleasePrimary { epoch } => format!("release-primary epoch={epoch}"),
        Command::ExpirePrimary { epoch } => format!("expire-primary epoch={epoch}"),
        Command::SetSync { epoch, recorded, target } => {
            format!("set-sync epoch={epoch} recorded={} target={}", sync(recorded), sync(target))
        }
        other => other.to_string(),
    }
}

/// Renders one action on one line.
pub fn action(a: &Action) -> String {
    match a {
        Action::Initdb => "initdb".into(),
        Action::Clone { from } => format!("clone from={from}"),
        Action::Rewind { from } => format!("rewind from={from}"),
        Action::DiscardData => "discard-data".into(),
        Action::StartPrimary => "start-primary".into(),
        Action::StartReplica { upstream } => format!("start-replica upstream={}", opt_name(upstream)),
        Action::Follow { upstream } => format!("follow upstream={}", opt_name(upstream)),
        Action::Promote { sync: s } => format!("promote sync={}", sync(s)),
        Action::ApplySync { sync: s } => format!("apply-sync {}", sync(s)),
        Action::Slots { members } => format!("slots {}", names(members)),
        Action::Stop => "stop".into(),
        Action::Fence => "fence".into(),
        Action::Renew { epoch } => format!("renew epoch={epoch}"),
        Action::DropLease => "drop-lease".into(),
        Action::Propose(c) => format!("propose {}", command(c)),
        Action::Expire { epoch } => format!("expire epoch={epoch}"),
        Action::StopStreaming { epoch, members } => {
            format!("stop-streaming epoch={epoch} members={}", names(members))
        }
        Action::TransferLeadership { to } => format!("transfer-leadership to={to}"),
        Action::StopForSwitchover => "stop-for-switchover".into(),
        Action::RestartPostgres => "restart-postgres".into(),
    }
}

fn decision(label: &str, d: &Decision, out: &mut Vec<String>) {
    out.push(format!("{label}: {}", d.reason));
    out.extend(d.actions.iter().map(|a| format!("  {}", action(a))));
}

/// Renders a plan: `member: <reason>` then its actions indented, then the same for the
/// coordinator when this agent leads.
pub fn plan(p: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    decision("member", &p.member, &mut out);
    if let Some(c) = &p.coordinator {
        decision("coordinator", c, &mut out);
    }
    out
}

/// A report with nothing in it yet: Postgres stopped, no data, no lease.
pub fn empty_report(
    member: &MemberName,
    epoch: pgquorum_core::Epoch,
) -> pgquorum_core::ha::observation::Report {
    use pgquorum_core::ha::observation::{Data, Postgres, Report, Tags};
    Report {
        member: member.clone(),
        address: format!("{member}:5432"),
        epoch,
        postgres: Postgres::Stopped,
        data: Data::Missing,
        lease: None,
        fenced_epoch: None,
        stop_streaming_for: None,
        task: None,
        tags: Tags::default(),
        timeline_history: Vec::new(),
        sync_applied_at: None,
        at: pgquorum_core::UnixMillis(0),
        election_timeout_max: None,
        problem: None,
        roles_pending: false,
        stopping: false,
    }
}

/// A member's own state with nothing in it yet: Postgres stopped, no data, no lease.
pub fn empty_local() -> pgquorum_core::ha::observation::Local {
    use pgquorum_core::ha::observation::{Data, Local, Postgres, Tags};
    Local {
        postgres: Postgres::Stopped,
        data: Data::Missing,
        lease: None,
        renewal_in_flight_since: None,
        last_renewal_sent: None,
        fenced_epoch: None,
        stop_streaming_for: None,
        task: None,
        last_failure: None,
        down_since: None,
        tags: Tags::default(),
        sync_applied_at: None,
        restart_requested: false,
    }
}

/// A running Postgres with nothing known yet (no position, no standbys): tests fill in what
/// they look at.
pub fn running(in_recovery: bool) -> pgquorum_core::ha::observation::Running {
    pgquorum_core::ha::observation::Running {
        in_recovery,
        timeline: None,
        lsn: None,
        receive_lsn: None,
        replay_lsn: None,
        streaming: false,
        min_recovery: None,
        upstream: None,
        synchronous_standby_names: String::new(),
        replicas: Vec::new(),
        slots: Vec::new(),
        pending_restart: Vec::new(),
        archiver: None,
    }
}

/// The grant of `epoch` to `member`, decided at wall clock 0.
pub fn grant(
    member: MemberName,
    epoch: pgquorum_core::Epoch,
    expired: bool,
    floor: Option<pgquorum_core::Lsn>,
) -> pgquorum_core::state::PrimaryGrant {
    pgquorum_core::state::PrimaryGrant {
        member,
        epoch,
        since: pgquorum_core::UnixMillis(0),
        expired,
        floor,
        longest_ttl_ms: None,
    }
}
