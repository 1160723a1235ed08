//! What happens without the agent deciding anything this step: long actions finishing,
//! Postgres finishing its start, standbys streaming WAL from their upstream, and the fence
//! guard killing Postgres at its lease deadline (even while the agent is frozen).
//!
//! Owns the outcome of each long action. Clone and rewind need their source running and
//! reachable; rewind also fails at random (`World::rewind_failure`).

use pgquorum_core::ha::config::fence_lead;
use pgquorum_core::ha::observation::Task;

use super::network::Id;
use super::postgres::{Entry, MARKER, Pg, Proc};
use super::world::World;

/// Finishes member `i`'s task if it is due (the agent must be running to notice).
pub fn complete(w: &mut World, i: Id) {
    let now = w.clock.now;
    let Some(t) = w.agents[i].task.clone() else { return };
    if now < t.done_at {
        return;
    }
    w.agents[i].task = None;
    let ok = match &t.task {
        Task::Initdb => {
            let mut pg = Pg::empty();
            pg.has_data = true;
            pg.sysid = 7_000_000 + w.rng.below(1_000_000);
            pg.was_primary = true;
            pg.wal.push(Entry { tl: 1, id: MARKER | w.marker() });
            w.pgs[i] = pg;
            w.log(format!("{} ran initdb (system {})", w.names[i], w.pgs[i].sysid));
            true
        }
        Task::Clone(from) | Task::Rewind(from) => {
            let src = w.names.iter().position(|n| n == from).expect("a member");
            let reachable = w.pgs[src].standby() || w.pgs[src].writable();
            let reachable =
                reachable && w.net.connected(i, src) && !matches!(w.pgs[i].proc, Proc::Running { .. });
            let failed = matches!(t.task, Task::Rewind(_)) && w.rng.chance(w.rewind_failure);
            if reachable && !failed {
                let copy = w.pgs[src].clone();
                w.pgs[i].copy_from(&copy);
                w.pgs[i].proc = Proc::Stopped;
                w.log(format!("{} copied from {from} ({:?})", w.names[i], t.task));
            }
            reachable && !failed
        }
        Task::Promote => {
            if w.pgs[i].standby() {
                let tl = w.timeline();
                let marker = w.marker();
                let pg = &mut w.pgs[i];
                pg.sync = t.sync.clone();
                pg.promote(tl, marker);
                pg.sync_applied_at = Some((t.sync.clone(), pg.lsn()));
                pg.incarnation += 1;
                w.became_writable(i, "promoted");
            }
            true
        }
        Task::Restart => true,
    };
    if ok {
        w.agents[i].last_failure = None;
    } else {
        w.agents[i].last_failure = Some((t.task.clone(), "failed".into(), now));
    }
}

/// Postgres processes that finished starting.
pub fn starts(w: &mut World) {
    let now = w.clock.now;
    for i in 0..w.pgs.len() {
        if let Proc::Starting { ready_at, primary, .. } = w.pgs[i].proc
            && now >= ready_at
        {
            let pg = &mut w.pgs[i];
            pg.proc = Proc::Running { primary };
            pg.clean = false;
            pg.was_primary = primary;
            if primary {
                pg.incarnation += 1;
                w.became_writable(i, "started as primary");
            }
        }
    }
}

/// Standbys receive WAL from their upstream when connected and their WAL is a prefix of it.
pub fn stream(w: &mut World) {
    for i in 0..w.pgs.len() {
        let Some(u) = w.pgs[i].upstream.filter(|_| w.pgs[i].standby()) else { continue };
        let source_up = w.pgs[u].standby() || w.pgs[u].writable();
        if !source_up || !w.net.connected(i, u) || u == i {
            w.pgs[i].streaming = false;
            continue;
        }
        if !w.pgs[i].is_prefix_of(&w.pgs[u]) {
            if w.pgs[i].streaming || w.rng.chance(0.05) {
                w.stats.refused_streams += 1;
            }
            w.pgs[i].streaming = false;
            continue;
        }
        let batch = 1 + w.rng.below(6) as usize;
        let (have, src_len) = (w.pgs[i].wal.len(), w.pgs[u].wal.len());
        let more: Vec<Entry> = w.pgs[u].wal[have..src_len.min(have + batch)].to_vec();
        let (tl, hist) = (w.pgs[u].timeline, w.pgs[u].history.clone());
        let pg = &mut w.pgs[i];
        pg.streaming = true;
        pg.wal.extend(more);
        if tl != pg.timeline {
            pg.timeline = tl;
            pg.history = hist;
        }
    }
}

/// The fence guard: kills Postgres halfway through the fence lead before the deadline.
pub fn guard(w: &mut World) {
    let now = w.clock.now;
    for i in 0..w.agents.len() {
        let a = &w.agents[i];
        let Some(l) = a.lease.filter(|_| a.up && a.guard_armed) else { continue };
        // Armed from the lease's own ttl, as the agent arms it.
        if now + fence_lead(l.ttl()) / 2 >= l.deadline {
            w.agents[i].guard_armed = false;
            if matches!(w.pgs[i].proc, Proc::Running { .. } | Proc::Starting { .. }) {
                w.pgs[i].kill(now);
                w.postgres_died(i);
                w.stats.guard_fired += 1;
                w.log(format!("fence guard of {} kills Postgres (deadline {:?})", w.names[i], l.deadline));
            }
        }
    }
}
