//! The golden mini-language: turns a case's description lines into an `Observation` and the
//! `HaConfig` to decide with.
//!
//! Owns the line kinds and the defaults (see `tests/testdata/README.txt`); single values are
//! in `values.rs`. Must not second-guess the core: values are taken as written, defaults are
//! the plain ones.

use std::collections::BTreeMap;
use std::time::Duration;

use pgquorum_core::ha::HaConfig;
use pgquorum_core::ha::observation::{Coordinator, Lease, Observation, Report, Seen};
use pgquorum_core::state::{ClusterState, FailoverRequest, GrantReason, HistoryEntry, SwitchoverRequest};
use pgquorum_core::{Epoch, MemberName, SystemId, UnixMillis};

use super::values::{R, applied, data, default_data, epoch, lsn, names, postgres, tag, task, toks};
use crate::support::{empty_local, empty_report, m, parse_dur, parse_sync};

struct PeerSpec {
    name: MemberName,
    seen: Option<(Report, Duration)>,
    explicit_data: bool,
}

/// The wall clock of every case (switchover and failover times are relative to it).
const WALL: UnixMillis = UnixMillis(1_000_000);

/// `+T` or `-T` from the case's wall clock.
fn wall_offset(v: &str) -> R<UnixMillis> {
    let (sign, d) = v.split_at(1);
    let ms = parse_dur(d)?.as_millis() as u64;
    match sign {
        "+" => Ok(UnixMillis(WALL.0 + ms)),
        "-" => Ok(UnixMillis(WALL.0 - ms)),
        _ => Err(format!("{v:?}: write +T or -T (relative to the case's wall clock)")),
    }
}

/// `FROM>TO` (TO `any` lets the coordinator choose).
fn switchover(v: &str) -> R<SwitchoverRequest> {
    let (from, to) = v.split_once('>').ok_or("switchover=FROM>TO")?;
    let to = (to != "any").then(|| m(to));
    Ok(SwitchoverRequest { from: m(from), to, not_before: None, requested_at: WALL })
}

fn cluster(rest: &str, cs: &mut ClusterState) -> R<()> {
    let (mut primary, mut was) = (None, m("pg-0"));
    let (mut target, mut expired, mut floor) = (None, false, None);
    for t in toks(rest) {
        match t.key {
            "epoch" => cs.epoch = epoch(t.val()?)?,
            "primary" if t.val == Some("none") => primary = None,
            "primary" => primary = Some(m(t.val()?)),
            "was" => was = m(t.val()?),
            "expired" => expired = true,
            "floor" => floor = Some(lsn(t.val()?)?),
            "sync" => cs.sync.recorded = parse_sync(t.val()?)?,
            "target" => target = Some(parse_sync(t.val()?)?),
            "sysid" if t.val == Some("none") => cs.system_identifier = None,
            "sysid" => cs.system_identifier = Some(SystemId(t.val()?.parse().map_err(|_| "invalid sysid")?)),
            "paused" => cs.paused = true,
            "switchover" => cs.switchover = Some(switchover(t.val()?)?),
            "switchover-at" => {
                cs.switchover.as_mut().ok_or("switchover-at after switchover=")?.not_before =
                    Some(wall_offset(t.val()?)?)
            }
            "switchover-asked" => {
                cs.switchover.as_mut().ok_or("switchover-asked after switchover=")?.requested_at =
                    wall_offset(t.val()?)?
            }
            "failover" => {
                let v = t.val()?;
                let (to, force) = v.strip_suffix('!').map_or((v, false), |to| (to, true));
                cs.failover = Some(FailoverRequest { to: m(to), force, requested_at: WALL });
            }
            "failover-asked" => {
                cs.failover.as_mut().ok_or("failover-asked after failover=")?.requested_at =
                    wall_offset(t.val()?)?
            }
            "uninit" => cs.cluster_id = None,
            "mode" => cs.config.set("durability", t.val()?)?,
            "k" => cs.config.set("synchronous_node_count", t.val()?)?,
            "ttl" => cs.config.set("ttl", t.val()?)?,
            "margin" => cs.config.set("lease_margin", t.val()?)?,
            "maxlag" => cs.config.set("maximum_lag_on_failover", t.val()?)?,
            "start-timeout" => cs.config.set("primary_start_timeout", t.val()?)?,
            "rewind" => cs.config.set("use_pg_rewind", t.val()?)?,
            "reclone" => cs.config.set("reclone_on_rewind_failure", t.val()?)?,
            // A cron expression with `_` for spaces: backup-schedule=*/5_*_*_*_*
            "backup-schedule" => cs.config.set("backup.schedule", &t.val()?.replace('_', " "))?,
            // backup-claim=MEMBER@DUE/CLAIMED (wall offsets); backup-done marks it finished.
            "backup-claim" => {
                let (who, times) = t.val()?.split_once('@').ok_or("backup-claim=MEMBER@DUE/CLAIMED")?;
                let (due, at) = times.split_once('/').ok_or("backup-claim=MEMBER@DUE/CLAIMED")?;
                cs.scheduled_backup = Some(pgquorum_core::state::ScheduledBackup {
                    due: wall_offset(due)?,
                    member: m(who),
                    claimed_at: wall_offset(at)?,
                    outcome: None,
                });
            }
            "backup-done" => {
                let b = cs.scheduled_backup.as_mut().ok_or("backup-done needs backup-claim first")?;
                b.outcome = Some(Ok("20260101T000000Z".into()));
            }
            k => return Err(format!("unknown cluster key {k:?}")),
        }
    }
    cs.sync.target = target.unwrap_or_else(|| cs.sync.recorded.clone());
    if expired && primary.is_none() {
        return Err("`expired` needs a primary grant (primary=NAME)".into());
    }
    // The grant of the current epoch, as GrantPrimary left it in the history (a released grant
    // keeps its entry, and its floor, after `primary` became none).
    if cs.epoch > Epoch(0) {
        let member = primary.clone().unwrap_or(was);
        let reason = if cs.epoch == Epoch(1) { GrantReason::Bootstrap } else { GrantReason::Failover };
        let at = UnixMillis(0);
        cs.history.push(HistoryEntry {
            epoch: cs.epoch,
            member,
            previous: None,
            reason,
            at,
            lsn: None,
            timeline: None,
            floor,
        });
    } else if floor.is_some() {
        return Err("`floor` needs a granted epoch (epoch=E with E > 0)".into());
    }
    cs.primary = primary.map(|member| crate::support::grant(member, cs.epoch, expired, floor));
    Ok(())
}

fn ha(rest: &str, cfg: &mut HaConfig) -> R<()> {
    for t in toks(rest) {
        let d = parse_dur(t.val()?)?;
        match t.key {
            "report-stale" => cfg.report_stale_after = d,
            "stop-timeout" => cfg.stop_streaming_timeout = d,
            "retry" => cfg.retry_after_failure = d,
            "transfer-interval" => cfg.transfer_interval = d,
            "backoff-first" => cfg.restart_backoff_first = d,
            "backoff-max" => cfg.restart_backoff_max = d,
            "stable-run" => cfg.stable_run = d,
            k => return Err(format!("unknown ha key {k:?}")),
        }
    }
    Ok(())
}

fn coordinator(rest: &str, all: &[MemberName]) -> R<Coordinator> {
    let mut c = Coordinator {
        leader_since: Duration::ZERO,
        epoch_since: Duration::ZERO,
        last_confirmed: None,
        granted_ttl: None,
        expired_epoch: None,
        stop_requested: None,
        voters: all.to_vec(),
        caught_up: all.to_vec(),
        last_primary_lsn: None,
        last_transfer: None,
    };
    for t in toks(rest) {
        match t.key {
            "since" => c.leader_since = parse_dur(t.val()?)?,
            "epoch-since" => c.epoch_since = parse_dur(t.val()?)?,
            "confirmed" => c.last_confirmed = Some(parse_dur(t.val()?)?),
            "ttl" => c.granted_ttl = Some(parse_dur(t.val()?)?),
            "expired" => c.expired_epoch = Some(epoch(t.val()?)?),
            "stop" => {
                let (e, at) = t.val()?.split_once('@').ok_or("stop=EPOCH@TIME")?;
                c.stop_requested = Some((epoch(e)?, parse_dur(at)?));
            }
            "voters" => c.voters = names(t.val()?)?,
            "caught-up" => c.caught_up = names(t.val()?)?,
            "last-lsn" => c.last_primary_lsn = Some(lsn(t.val()?)?),
            "transfer" => c.last_transfer = Some(parse_dur(t.val()?)?),
            k => return Err(format!("unknown coord key {k:?}")),
        }
    }
    Ok(c)
}

/// Builds the observation a case describes. Lines: `cluster`, `ha`, `me`, `pg`, `data`,
/// `lease`, `peer` (with indented `pg`/`data` lines), `coord`.
pub fn observation(lines: &[String]) -> R<(Observation, HaConfig)> {
    let mut cs = ClusterState { cluster_id: Some("c1".into()), config_version: 1, ..Default::default() };
    cs.system_identifier = Some(SystemId(7));
    let mut cfg = HaConfig::default();
    for l in lines {
        match l.split_once(' ').unwrap_or((l.as_str(), "")) {
            ("cluster", rest) => cluster(rest, &mut cs)?,
            ("ha", rest) => ha(rest, &mut cfg)?,
            _ => {}
        }
    }
    let sysid = cs.system_identifier.unwrap_or(SystemId(7));
    let (mut me, mut now) = (None, Duration::ZERO);
    let mut local = empty_local();
    let (mut my_hist, mut my_data) = (Vec::new(), None);
    let mut peers: Vec<PeerSpec> = Vec::new();
    let mut coord_line = None;
    for l in lines {
        let indented = l.starts_with(' ');
        let (kw, rest) = l.trim().split_once(' ').unwrap_or((l.trim(), ""));
        match (indented, kw) {
            (_, "cluster" | "ha") => {}
            (false, "me") => {
                let ts = toks(rest);
                me = Some(MemberName::new(ts.first().map(|t| t.key).ok_or("me needs a name")?)?);
                for t in &ts[1..] {
                    if tag(&mut local.tags, t)? {
                        continue;
                    }
                    match t.key {
                        "now" => now = parse_dur(t.val()?)?,
                        "sent" => local.last_renewal_sent = Some(parse_dur(t.val()?)?),
                        "inflight" => local.renewal_in_flight_since = Some(parse_dur(t.val()?)?),
                        "fenced" => local.fenced_epoch = Some(epoch(t.val()?)?),
                        "stop-streaming" => local.stop_streaming_for = Some(epoch(t.val()?)?),
                        "task" => local.task = Some(task(t.val()?)?),
                        "failed" => {
                            let (tk, at) = t.val()?.split_once('@').ok_or("failed=TASK@TIME")?;
                            local.last_failure = Some((task(tk)?, "failed".into(), parse_dur(at)?));
                        }
                        "down-since" => local.down_since = Some(parse_dur(t.val()?)?),
                        "applied" => local.sync_applied_at = Some(applied(t.val()?)?),
                        "restart" => local.restart_requested = true,
                        k => return Err(format!("unknown me key {k:?}")),
                    }
                }
            }
            (false, "pg") => (local.postgres, my_hist) = postgres(rest)?,
            (false, "data") => my_data = Some(data(rest, sysid)?),
            (false, "lease") => {
                let mut lease =
                    Lease { epoch: cs.epoch, renewed_at: Duration::ZERO, deadline: Duration::ZERO };
                for t in toks(rest) {
                    match t.key {
                        "epoch" => lease.epoch = epoch(t.val()?)?,
                        "renewed" => lease.renewed_at = parse_dur(t.val()?)?,
                        "deadline" => lease.deadline = parse_dur(t.val()?)?,
                        k => return Err(format!("unknown lease key {k:?}")),
                    }
                }
                local.lease = Some(lease);
            }
            (false, "peer") => peers.push(peer(rest, cs.epoch, sysid)?),
            (true, "pg" | "data") => {
                let p = peers.last_mut().ok_or("indented line without a peer")?;
                let (rep, _) = p.seen.as_mut().ok_or("indented line under `peer NAME none`")?;
                if kw == "pg" {
                    (rep.postgres, rep.timeline_history) = postgres(rest)?;
                    if !p.explicit_data {
                        rep.data = default_data(&rep.postgres, sysid);
                    }
                } else {
                    rep.data = data(rest, sysid)?;
                    p.explicit_data = true;
                }
            }
            (false, "coord") => coord_line = Some(rest.to_string()),
            _ => return Err(format!("unknown line {l:?}")),
        }
    }
    let me = me.ok_or("a case needs a `me NAME now=..` line")?;
    local.data = my_data.unwrap_or_else(|| default_data(&local.postgres, sysid));
    let self_report = Report {
        postgres: local.postgres.clone(),
        data: local.data.clone(),
        lease: local.lease.map(|l| (l.epoch, l.deadline.saturating_sub(now))),
        fenced_epoch: local.fenced_epoch,
        stop_streaming_for: local.stop_streaming_for,
        task: local.task.clone(),
        tags: local.tags.clone(),
        timeline_history: my_hist,
        sync_applied_at: local.sync_applied_at.clone(),
        ..empty_report(&me, cs.epoch)
    };
    let mut map = BTreeMap::new();
    map.insert(me.clone(), Some(Seen { report: self_report, received: now }));
    for p in peers {
        map.insert(p.name, p.seen.map(|(report, received)| Seen { report, received }));
    }
    let all: Vec<MemberName> = map.keys().cloned().collect();
    let coordinator = coord_line.map(|c| coordinator(&c, &all)).transpose()?;
    let obs = Observation { now, wall: WALL, me, cluster: cs, local, peers: map, coordinator };
    Ok((obs, cfg))
}

/// `peer NAME none` or `peer NAME recv=.. [epoch= lease=E:LEFT fenced= stop-streaming= task=
/// applied= roles-pending tags] [: <pg description>]`.
fn peer(rest: &str, cluster_epoch: Epoch, sysid: SystemId) -> R<PeerSpec> {
    let (head, pg) = match rest.split_once(" : ") {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let ts = toks(head);
    let name = MemberName::new(ts.first().map(|t| t.key).ok_or("peer needs a name")?)?;
    if ts.get(1).is_some_and(|t| t.key == "none") {
        return Ok(PeerSpec { name, seen: None, explicit_data: false });
    }
    let mut rep = empty_report(&name, cluster_epoch);
    let mut received = Duration::ZERO;
    for t in &ts[1..] {
        if tag(&mut rep.tags, t)? {
            continue;
        }
        match t.key {
            "recv" => received = parse_dur(t.val()?)?,
            "epoch" => rep.epoch = epoch(t.val()?)?,
            "lease" => {
                let (e, left) = t.val()?.split_once(':').ok_or("lease=EPOCH:LEFT")?;
                rep.lease = Some((epoch(e)?, parse_dur(left)?));
            }
            "fenced" => rep.fenced_epoch = Some(epoch(t.val()?)?),
            "stop-streaming" => rep.stop_streaming_for = Some(epoch(t.val()?)?),
            "task" => rep.task = Some(task(t.val()?)?),
            "applied" => rep.sync_applied_at = Some(applied(t.val()?)?),
            "roles-pending" => rep.roles_pending = true,
            k => return Err(format!("unknown peer key {k:?}")),
        }
    }
    if let Some(pg) = pg {
        (rep.postgres, rep.timeline_history) = postgres(pg)?;
        rep.data = default_data(&rep.postgres, sysid);
    }
    Ok(PeerSpec { name, seen: Some((rep, received)), explicit_data: false })
}
