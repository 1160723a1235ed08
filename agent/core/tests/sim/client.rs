//! The client: writes commits to whichever member is writable and records which were
//! acknowledged. A commit is acknowledged at once under an asynchronous setting, or when `k`
//! members of the primary's applied `ANY k (...)` set, streaming from it, hold it; a commit
//! whose primary died or restarted before that is never acknowledged.
//!
//! Owns the set of acknowledged commits the durability invariant checks against.

use std::collections::BTreeMap;
use std::time::Duration;

use super::network::Id;
use super::postgres::Entry;
use super::world::World;

struct Pending {
    member: Id,
    incarnation: u64,
    pos: usize,
    entry: Entry,
}

/// One acknowledged commit.
#[derive(Clone, Debug)]
pub struct Ack {
    /// When the client got the acknowledgement.
    pub at: Duration,
    /// Which primary acknowledged it.
    pub member: Id,
}

/// The client's bookkeeping.
pub struct Client {
    next_id: u64,
    pending: Vec<Pending>,
    /// Acknowledged commits that must survive (those lost where allowed are removed).
    pub acked: BTreeMap<u64, Ack>,
    /// Acknowledged commits in total.
    pub acked_total: u64,
    /// Probability of a write per step.
    pub rate: f64,
}

impl Client {
    /// A client that writes on about half the steps.
    pub fn new() -> Client {
        Client { next_id: 1, pending: Vec::new(), acked: BTreeMap::new(), acked_total: 0, rate: 0.5 }
    }
}

/// Writes (maybe) and collects acknowledgements.
pub fn step(w: &mut World) {
    let now = w.clock.now;
    let writable: Vec<Id> = (0..w.pgs.len()).filter(|&i| w.pgs[i].writable()).collect();
    if !writable.is_empty() && w.rng.chance(w.client.rate) {
        let i = w.rng.pick(&writable);
        let id = w.client.next_id;
        w.client.next_id += 1;
        let entry = Entry { tl: w.pgs[i].timeline, id };
        w.pgs[i].wal.push(entry);
        let pos = w.pgs[i].wal.len() - 1;
        w.client.pending.push(Pending { member: i, incarnation: w.pgs[i].incarnation, pos, entry });
    }
    let pending = std::mem::take(&mut w.client.pending);
    for p in pending {
        let pg = &w.pgs[p.member];
        if !pg.writable() || pg.incarnation != p.incarnation {
            continue;
        }
        let holders = (0..w.pgs.len())
            .filter(|&j| {
                let s = &w.pgs[j];
                j != p.member
                    && pg.sync.members.contains(&w.names[j])
                    && s.standby()
                    && s.streaming
                    && s.upstream == Some(p.member)
                    && w.net.connected(j, p.member)
                    && s.has(p.pos, p.entry)
            })
            .count();
        let synchronous = pg.sync.k > 0 && !pg.sync.members.is_empty();
        if !synchronous || holders >= pg.sync.k as usize {
            w.client.acked.insert(p.entry.id, Ack { at: now, member: p.member });
            w.client.acked_total += 1;
        } else {
            w.client.pending.push(p);
        }
    }
}
