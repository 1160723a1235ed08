//! Values of the golden mini-language: tokens (`key=value` or flags), LSNs, epochs, tasks,
//! and the `pg` and `data` descriptions that become `Postgres` and `Data`.
//!
//! Owns the syntax of single values (documented in `tests/testdata/README.txt`). Must not know
//! about whole cases; `parse.rs` assembles those.

use std::time::Duration;

use pgquorum_core::ha::observation::{Data, DataDir, Postgres, ReplicaConnection, Running, Tags, Task};
use pgquorum_core::state::SyncSet;
use pgquorum_core::{Epoch, Lsn, MemberName, SystemId, Timeline};

use crate::support::{parse_dur, parse_sync};

pub(super) type R<T> = Result<T, String>;

/// One `key=value` or bare-flag token.
pub(super) struct Tok<'a> {
    pub(super) key: &'a str,
    pub(super) val: Option<&'a str>,
}

impl Tok<'_> {
    pub(super) fn val(&self) -> R<&str> {
        self.val.ok_or_else(|| format!("{} needs a value ({}=...)", self.key, self.key))
    }
}

pub(super) fn toks(rest: &str) -> Vec<Tok<'_>> {
    rest.split_whitespace()
        .map(|t| match t.split_once('=') {
            Some((k, v)) => Tok { key: k, val: Some(v) },
            None => Tok { key: t, val: None },
        })
        .collect()
}

pub(super) fn epoch(s: &str) -> R<Epoch> {
    s.parse().map(Epoch).map_err(|_| format!("invalid epoch {s:?}"))
}

pub(super) fn lsn(s: &str) -> R<Lsn> {
    s.parse()
}

pub(super) fn tl(s: &str) -> R<Timeline> {
    s.parse().map(Timeline).map_err(|_| format!("invalid timeline {s:?}"))
}

pub(super) fn names(s: &str) -> R<Vec<MemberName>> {
    s.split(',').filter(|n| !n.is_empty() && *n != "-").map(MemberName::new).collect()
}

pub(super) fn task(s: &str) -> R<Task> {
    Ok(match s.split_once(':') {
        Some(("clone", from)) => Task::Clone(MemberName::new(from)?),
        Some(("rewind", from)) => Task::Rewind(MemberName::new(from)?),
        None if s == "initdb" => Task::Initdb,
        None if s == "promote" => Task::Promote,
        None if s == "restart" => Task::Restart,
        _ => return Err(format!("invalid task {s:?}: initdb, clone:NAME, rewind:NAME, promote, restart")),
    })
}

/// `any1(a,b)@0/3000000`.
pub(super) fn applied(s: &str) -> R<(SyncSet, Lsn)> {
    let (set, at) = s.split_once('@').ok_or_else(|| format!("invalid applied {s:?}: SET@LSN"))?;
    Ok((parse_sync(set)?, lsn(at)?))
}

pub(super) fn history(s: &str) -> R<Vec<(Timeline, Lsn)>> {
    s.split(',')
        .map(|e| {
            let (t, l) = e.split_once('@').ok_or_else(|| format!("invalid history entry {e:?}: TL@LSN"))?;
            Ok((tl(t)?, lsn(l)?))
        })
        .collect()
}

/// `TL@LSN`, or `LSN` on timeline `tli`.
pub(super) fn recovery_point(s: &str, tli: Timeline) -> R<(Timeline, Lsn)> {
    match s.split_once('@') {
        Some((t, l)) => Ok((tl(t)?, lsn(l)?)),
        None => Ok((tli, lsn(s)?)),
    }
}

/// `pg-1@0/3000000,pg-2@0/2000000` as connections in `state`.
pub(super) fn connections(s: &str, state: &str) -> R<Vec<ReplicaConnection>> {
    s.split(',')
        .map(|e| {
            let (n, l) = e.split_once('@').ok_or_else(|| format!("invalid replica {e:?}: NAME@LSN"))?;
            let at = lsn(l)?;
            Ok(ReplicaConnection {
                name: n.to_string(),
                state: state.to_string(),
                flush_lsn: Some(at),
                replay_lsn: Some(at),
                sync_state: "async".into(),
            })
        })
        .collect()
}

/// A `pg` description: the process state and, for a running one, its timeline history.
pub(super) fn postgres(rest: &str) -> R<(Postgres, Vec<(Timeline, Lsn)>)> {
    let ts = toks(rest);
    let kind = ts.first().map(|t| t.key).ok_or("pg needs a state")?;
    let mut hist = Vec::new();
    let mut r = Running { timeline: Some(Timeline(1)), ..crate::support::running(kind == "replica") };
    let mut at = Duration::ZERO;
    let mut failures = 0;
    let mut minrec = None;
    for t in &ts[1..] {
        match t.key {
            "lsn" => {
                let l = lsn(t.val()?)?;
                r.lsn = Some(l);
                if r.in_recovery {
                    r.receive_lsn = Some(l);
                    r.replay_lsn = Some(l);
                }
            }
            "replay" => r.replay_lsn = Some(lsn(t.val()?)?),
            "minrec" => minrec = Some(t.val()?.to_string()),
            "tl" if t.val == Some("none") => r.timeline = None,
            "tl" => r.timeline = Some(tl(t.val()?)?),
            "upstream" => r.upstream = Some(MemberName::new(t.val()?)?),
            "streaming" => r.streaming = true,
            "sync" => r.synchronous_standby_names = parse_sync(t.val()?)?.to_postgres(),
            "slots" => r.slots = names(t.val()?)?.iter().map(MemberName::slot_name).collect(),
            "replicas" => r.replicas.extend(connections(t.val()?, "streaming")?),
            "catchup" => r.replicas.extend(connections(t.val()?, "catchup")?),
            "history" => hist = history(t.val()?)?,
            "since" | "at" => at = parse_dur(t.val()?)?,
            "failures" => failures = t.val()?.parse().map_err(|e| format!("failures: {e}"))?,
            k => return Err(format!("unknown pg key {k:?}")),
        }
    }
    r.min_recovery = minrec.map(|v| recovery_point(&v, r.timeline.unwrap_or(Timeline(1)))).transpose()?;
    let pg = match kind {
        "stopped" => Postgres::Stopped,
        "disabled" => Postgres::Disabled,
        "starting" => Postgres::Starting { since: at },
        "crashed" => Postgres::Crashed { at, failures },
        "primary" | "replica" => Postgres::Running(r),
        k => {
            return Err(format!(
                "unknown pg state {k:?}: stopped, starting, crashed, disabled, primary, replica"
            ));
        }
    };
    Ok((pg, hist))
}

pub(super) fn data(rest: &str, cluster_sysid: SystemId) -> R<Data> {
    let ts = toks(rest);
    match ts.first().map(|t| t.key) {
        Some("missing") => return Ok(Data::Missing),
        Some("unusable") => return Ok(Data::Unusable("unreadable control file".into())),
        _ => {}
    }
    let mut d = DataDir {
        system_identifier: cluster_sysid,
        timeline: Timeline(1),
        was_primary: false,
        clean_shutdown: true,
        checkpoint_lsn: Lsn(0),
        min_recovery: None,
    };
    let mut minrec = None;
    for t in &ts {
        match t.key {
            "primary" => d.was_primary = true,
            "standby" => d.was_primary = false,
            "clean" => d.clean_shutdown = true,
            "crashed" => d.clean_shutdown = false,
            "sysid" => d.system_identifier = SystemId(t.val()?.parse().map_err(|_| "invalid sysid")?),
            "tl" => d.timeline = tl(t.val()?)?,
            "ckpt" => d.checkpoint_lsn = lsn(t.val()?)?,
            "minrec" => minrec = Some(t.val()?.to_string()),
            k => return Err(format!("unknown data key {k:?}")),
        }
    }
    d.min_recovery = minrec.map(|v| recovery_point(&v, d.timeline)).transpose()?;
    Ok(Data::Present(d))
}

/// Data as a running Postgres implies it, when the case does not say.
pub(super) fn default_data(pg: &Postgres, sysid: SystemId) -> Data {
    match pg.running() {
        Some(r) => Data::Present(DataDir {
            system_identifier: sysid,
            timeline: r.timeline.unwrap_or(Timeline(1)),
            was_primary: !r.in_recovery,
            clean_shutdown: false,
            checkpoint_lsn: r.lsn.unwrap_or_default(),
            min_recovery: r.min_recovery,
        }),
        None => Data::Missing,
    }
}

pub(super) fn tag(tags: &mut Tags, t: &Tok) -> R<bool> {
    match t.key {
        "nofailover" => tags.nofailover = true,
        "nosync" => tags.nosync = true,
        "priority" => tags.failover_priority = t.val()?.parse().map_err(|_| "invalid priority")?,
        _ => return Ok(false),
    }
    Ok(true)
}
