//! Message handling and the coordinator's side of the lease: reports land in the receiver's
//! cache, renewals are confirmed by the Raft leader only if `rules::lease::may_confirm` passes
//! before and after a quorum round trip, answers set the requester's lease, stop-streaming
//! requests stop a standby's WAL receiver at once.
//!
//! Owns the coordinator's memory upkeep too (reset on election, grace on a new epoch, the
//! primary's last LSN). A frozen or crashed agent handles nothing: its messages are lost.

use pgquorum_core::ha::observation::{Lease, Postgres, Seen};
use pgquorum_core::ha::rules::lease::may_confirm;

use super::agent::Confirming;
use super::network::{Id, Msg};
use super::world::World;

/// Delivers every message due now.
pub fn deliver(w: &mut World) {
    let now = w.clock.now;
    for env in w.net.due(now) {
        let to = env.to;
        if !w.agents[to].active() {
            continue;
        }
        match env.msg {
            Msg::Report(report) => {
                w.agents[to].peers.insert(env.from, Seen { report: *report, received: now });
            }
            Msg::RenewRequest { epoch, sent } => {
                if w.raft.leader != Some(to) {
                    continue;
                }
                let term = w.raft.term;
                let Some(mem) = &mut w.agents[to].coord else { continue };
                match may_confirm(&w.raft.states[to], mem.expired_epoch, &w.names[env.from], epoch) {
                    Ok(()) => {
                        // A prompt round (a heartbeat sent at once), or, as often, one that
                        // waits for the next periodic heartbeat: up to an interval and a
                        // timer slot (256 + 64 ms).
                        let round = if w.rng.chance(0.5) { w.rng.ms(2, 10) } else { w.rng.ms(2, 320) };
                        let (arrived, done_at) = (now, now + round);
                        mem.confirming.push(Confirming {
                            from: env.from,
                            epoch,
                            sent,
                            arrived,
                            done_at,
                            term,
                        });
                    }
                    Err(_) => w.send(to, env.from, Msg::RenewAnswer { epoch, sent, ttl: None }),
                }
            }
            Msg::RenewAnswer { epoch, sent, ttl } => {
                // As the agent does: a confirmation counts only for the epoch still granted here
                // and never for one this member fenced itself for.
                let granted =
                    w.raft.states[to].primary.as_ref().filter(|p| p.member == w.names[to]).map(|p| p.epoch);
                let a = &mut w.agents[to];
                if a.inflight == Some(sent) {
                    a.inflight = None;
                    if let Some(ttl) = ttl.filter(|_| Some(epoch) == granted && a.fenced_epoch != Some(epoch))
                    {
                        a.lease = Some(Lease { epoch, renewed_at: sent, deadline: sent + ttl });
                    }
                }
            }
            Msg::StopStreaming { epoch } => {
                let a = &mut w.agents[to];
                a.stop_streaming_for = a.stop_streaming_for.max(Some(epoch));
                let pg = &mut w.pgs[to];
                if pg.standby() {
                    pg.upstream = None;
                    pg.streaming = false;
                }
            }
        }
    }
}

/// The leader finishes the quorum round trips of renewals it is confirming.
pub fn confirmations(w: &mut World) {
    let now = w.clock.now;
    let up = w.raft_up();
    for l in 0..w.agents.len() {
        let Some(mem) = &mut w.agents[l].coord else { continue };
        let (due, rest): (Vec<Confirming>, Vec<Confirming>) =
            mem.confirming.drain(..).partition(|c| c.done_at <= now);
        mem.confirming = rest;
        for c in due {
            let leads =
                w.raft.leads_with_quorum(l, &up, &w.net) && w.raft.term == c.term && w.agents[l].active();
            let state = &w.raft.states[l];
            let Some(mem) = &mut w.agents[l].coord else { continue };
            let ok = leads && may_confirm(state, mem.expired_epoch, &w.names[c.from], c.epoch).is_ok();
            let ttl = state.config.ttl;
            if ok {
                // As `Coord::confirm`: from the request's arrival, never moving back.
                mem.last_confirmed = Some(mem.last_confirmed.map_or(c.arrived, |t| t.max(c.arrived)));
                mem.granted_ttl = Some(mem.granted_ttl.unwrap_or(ttl).max(ttl));
            }
            w.send(l, c.from, Msg::RenewAnswer { epoch: c.epoch, sent: c.sent, ttl: ok.then_some(ttl) });
        }
    }
}

/// Keeps the leader's memory in step with the applied state before it decides.
pub fn coordinator_upkeep(w: &mut World, l: Id) {
    let now = w.clock.now;
    let state = &w.raft.states[l];
    let primary = state.primary.as_ref().and_then(|p| w.names.iter().position(|n| *n == p.member));
    let epoch = state.epoch;
    let primary_lsn = primary.and_then(|p| {
        let fresh_writable = |r: &pgquorum_core::ha::observation::Report| match &r.postgres {
            Postgres::Running(run) if !run.in_recovery => run.lsn,
            _ => None,
        };
        if p == l {
            w.pgs[p].writable().then(|| w.pgs[p].lsn())
        } else {
            w.agents[l]
                .peers
                .get(&p)
                .filter(|s| now.saturating_sub(s.received) <= w.cfg.report_stale_after)
                .and_then(|s| fresh_writable(&s.report))
        }
    });
    let Some(mem) = &mut w.agents[l].coord else { return };
    if mem.seen_epoch != epoch {
        mem.seen_epoch = epoch;
        mem.epoch_since = now;
        mem.last_confirmed = Some(now);
        mem.granted_ttl = None;
        mem.expired_epoch = None;
        mem.stop_requested = None;
        mem.last_primary_lsn = None;
    }
    if primary_lsn.is_some() {
        mem.last_primary_lsn = primary_lsn;
    }
}
