//! Carries out a plan the way the real agent does: local Postgres actions, the lease, Raft
//! proposals, and the coordinator's actions. Long actions start a task that `tasks.rs` finishes
//! later; StartPrimary and Promote re-check the lease at execution time and arm the fence guard.
//!
//! Owns the meaning of each `Action` in the model. Must not decide: it only refuses what the
//! real executor refuses (starting a primary without a lease, copying from an absent source).

use pgquorum_core::ha::config::fence_lead;
use pgquorum_core::ha::observation::{Observation, Task};
use pgquorum_core::ha::rules::lease::{expired_for, granted_epoch, holds_lease};
use pgquorum_core::ha::{Action, Plan};

use super::agent::RunningTask;
use super::network::{Id, Msg};
use super::postgres::Proc;
use super::world::World;

/// Executes member `i`'s plan, decided on `obs`.
pub fn execute(w: &mut World, i: Id, obs: &Observation, plan: &Plan) {
    for a in &plan.member.actions {
        member_action(w, i, obs, a);
    }
    if let Some(c) = &plan.coordinator {
        for a in &c.actions {
            if !coordinator_action(w, i, obs, a) {
                break;
            }
        }
    }
}

fn start_task(w: &mut World, i: Id, task: Task, lo: u64, hi: u64) {
    let done_at = w.clock.now + w.rng.ms(lo, hi);
    w.agents[i].task = Some(RunningTask { task, done_at, sync: Default::default() });
}

fn id_of(w: &World, name: &pgquorum_core::MemberName) -> Id {
    w.names.iter().position(|n| n == name).expect("actions name members of the cluster")
}

fn start_postgres(w: &mut World, i: Id, primary: bool, upstream: Option<Id>) {
    let now = w.clock.now;
    let pg = &mut w.pgs[i];
    if !pg.has_data || matches!(pg.proc, Proc::Running { .. } | Proc::Starting { .. }) {
        return;
    }
    pg.proc = Proc::Starting { ready_at: now + w.rng.ms(50, 200), since: now, primary };
    pg.upstream = upstream;
    pg.streaming = false;
}

fn stop_clean(w: &mut World, i: Id) {
    let pg = &mut w.pgs[i];
    if matches!(pg.proc, Proc::Running { .. } | Proc::Starting { .. }) {
        pg.proc = Proc::Stopped;
        pg.clean = true;
        pg.streaming = false;
    }
}

fn member_action(w: &mut World, i: Id, obs: &Observation, a: &Action) {
    let now = w.clock.now;
    match a {
        Action::Initdb => start_task(w, i, Task::Initdb, 200, 400),
        Action::Clone { from } => start_task(w, i, Task::Clone(from.clone()), 300, 800),
        Action::Rewind { from } => start_task(w, i, Task::Rewind(from.clone()), 200, 500),
        Action::DiscardData => {
            let pg = &mut w.pgs[i];
            if !matches!(pg.proc, Proc::Running { .. } | Proc::Starting { .. }) {
                *pg = super::postgres::Pg::empty();
                w.log(format!("{} discards its data", w.names[i]));
            }
        }
        Action::StartPrimary => {
            if holds_lease(obs) {
                w.agents[i].guard_armed = true;
                start_postgres(w, i, true, None);
            }
        }
        Action::StartReplica { upstream } => {
            let up = upstream.as_ref().map(|u| id_of(w, u));
            start_postgres(w, i, false, up);
        }
        Action::Follow { upstream } => {
            let up = upstream.as_ref().map(|u| id_of(w, u));
            let pg = &mut w.pgs[i];
            if pg.standby() {
                pg.upstream = up;
                pg.streaming = false;
            }
        }
        Action::Promote { sync } => {
            if holds_lease(obs) && w.pgs[i].standby() {
                w.agents[i].guard_armed = true;
                start_task(w, i, Task::Promote, 50, 150);
                if let Some(t) = &mut w.agents[i].task {
                    t.sync = sync.clone();
                }
            }
        }
        Action::ApplySync { sync } => {
            let pg = &mut w.pgs[i];
            if pg.writable() {
                pg.sync = sync.clone();
                pg.sync_applied_at = Some((sync.clone(), pg.lsn()));
            }
        }
        Action::Slots { members } => w.pgs[i].slots = members.iter().map(|m| m.slot_name()).collect(),
        Action::Stop => stop_clean(w, i),
        Action::StopForSwitchover => {
            w.agents[i].fenced_epoch = granted_epoch(obs).or(w.agents[i].fenced_epoch);
            stop_clean(w, i);
            w.log(format!("{} stops cleanly for a switchover", w.names[i]));
        }
        Action::RestartPostgres => stop_clean(w, i),
        Action::Fence => {
            w.pgs[i].kill(now);
            w.agents[i].fenced_epoch = granted_epoch(obs).or(w.agents[i].fenced_epoch);
            w.stats.fences += 1;
            w.log(format!("{} fences ({})", w.names[i], plan_reason(obs)));
        }
        Action::Renew { epoch } => {
            w.agents[i].inflight = Some(now);
            w.agents[i].last_sent = Some(now);
            if let Some(l) = w.raft.leader {
                w.send(i, l, Msg::RenewRequest { epoch: *epoch, sent: now });
            }
        }
        Action::DropLease => {
            w.agents[i].lease = None;
            w.agents[i].guard_armed = false;
        }
        Action::Propose(cmd) => w.propose(i, cmd.clone()),
        _ => panic!("coordinator action {a:?} in a member plan"),
    }
}

fn plan_reason(obs: &Observation) -> String {
    match obs.local.lease {
        Some(l) => format!(
            "lease {} deadline {:?}, now {:?}, lead {:?}",
            l.epoch,
            l.deadline,
            obs.now,
            fence_lead(l.ttl())
        ),
        None => "no lease".into(),
    }
}

/// Carries out one coordinator action; false when the rest of the plan must be skipped (an
/// expiry the executor's re-check refused).
fn coordinator_action(w: &mut World, i: Id, obs: &Observation, a: &Action) -> bool {
    let now = w.clock.now;
    match a {
        Action::Propose(cmd) => w.propose(i, cmd.clone()),
        Action::Expire { epoch } => {
            let Some(c) = &obs.coordinator else { return false };
            let Some(mem) = w.agents[i].coord.as_mut().filter(|_| expired_for(obs, c).is_some()) else {
                return false;
            };
            mem.expired_epoch = Some(*epoch);
            w.log(format!("{} declares epoch {epoch} expired", w.names[i]));
        }
        Action::StopStreaming { epoch, members } => {
            if let Some(mem) = &mut w.agents[i].coord
                && mem.stop_requested.is_none_or(|(e, _)| e != *epoch)
            {
                mem.stop_requested = Some((*epoch, now));
            }
            for m in members {
                let j = id_of(w, m);
                w.send(i, j, Msg::StopStreaming { epoch: *epoch });
            }
        }
        Action::TransferLeadership { to } => {
            if let Some(mem) = &mut w.agents[i].coord {
                mem.last_transfer = Some(now);
            }
            let j = id_of(w, to);
            let up = w.raft_up();
            if w.raft.transfer(j, &up, &w.net) {
                w.new_leader(j);
                w.log(format!("leadership moves from {} to {to}", w.names[i]));
            }
        }
        _ => panic!("member action {a:?} in a coordinator plan"),
    }
    true
}
