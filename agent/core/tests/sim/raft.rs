//! An idealised Raft: one replicated log of `Command`s, a leader only on a connected majority of
//! running agents (a new one after an election delay), proposals committed through the leader
//! and its majority, and followers applying committed entries after a delay that varies per
//! member over time (a slow disk makes a follower's applied state lag behind what it reports).
//!
//! Owns the log, leadership and each member's applied `ClusterState` (durable: it survives a
//! crash). Must not model message-level Raft: the core only relies on its guarantees.

use std::time::Duration;

use pgquorum_core::state::{ClusterState, Command, CommandOk};

use super::clock::Rng;
use super::network::{Id, Network};

struct Pending {
    term: u64,
    commit_at: Duration,
    from: Id,
    cmd: Command,
}

/// A committed grant, with the synchronous bound it replaced (for the durability invariant).
#[derive(Clone, Debug)]
pub struct GrantInfo {
    /// Epoch granted.
    pub epoch: pgquorum_core::Epoch,
    /// Recorded synchronous set of the epoch before, at the moment of the grant.
    pub prev_recorded: pgquorum_core::state::SyncSet,
    /// When it committed.
    pub at: Duration,
}

/// The replicated log and who leads it.
pub struct Raft {
    /// Committed entries with their commit time.
    pub log: Vec<(Duration, Command)>,
    pending: Vec<Pending>,
    /// The current leader, if a majority elected one.
    pub leader: Option<Id>,
    /// Bumped on every leadership change.
    pub term: u64,
    election_at: Option<Duration>,
    /// How many entries each member applied, and the state they produced.
    pub applied: Vec<usize>,
    /// Each member's applied state.
    pub states: Vec<ClusterState>,
    /// Every grant that committed, in order.
    pub grants: Vec<GrantInfo>,
    /// How long after a commit each follower applies it (its disk: SD cards are slow), redrawn
    /// now and then.
    apply_lag: Vec<Duration>,
}

impl Raft {
    /// A log holding only `init`, applied everywhere.
    pub fn new(n: usize, init: Command) -> Raft {
        let mut s = ClusterState::default();
        s.apply(init.clone()).expect("the initial configuration is valid");
        Raft {
            log: vec![(Duration::ZERO, init)],
            pending: Vec::new(),
            leader: None,
            term: 0,
            election_at: Some(Duration::from_millis(200)),
            applied: vec![1; n],
            states: vec![s; n],
            grants: Vec::new(),
            apply_lag: vec![Duration::from_millis(15); n],
        }
    }

    fn quorum(&self) -> usize {
        self.states.len() / 2 + 1
    }

    /// Members reachable from `a` among the running ones (itself included).
    fn component(&self, a: Id, up: &[bool], net: &Network) -> usize {
        (0..up.len()).filter(|&b| up[b] && net.connected(a, b)).count()
    }

    /// Whether `l` leads and still reaches a majority.
    pub fn leads_with_quorum(&self, l: Id, up: &[bool], net: &Network) -> bool {
        self.leader == Some(l) && up[l] && self.component(l, up, net) >= self.quorum()
    }

    fn catch_up(&mut self, i: Id, upto: usize) {
        while self.applied[i] < upto {
            let _ = self.states[i].apply(self.log[self.applied[i]].1.clone());
            self.applied[i] += 1;
        }
    }

    /// One step: lose or elect a leader, commit due proposals, let followers apply. Returns the
    /// new leader when leadership changed to someone this step.
    pub fn step(&mut self, now: Duration, rng: &mut Rng, up: &[bool], net: &Network) -> Option<Id> {
        if let Some(l) = self.leader
            && !self.leads_with_quorum(l, up, net)
        {
            self.leader = None;
            self.term += 1;
            self.election_at = Some(now + rng.ms(150, 300));
        }
        let mut elected = None;
        if self.leader.is_none() && self.election_at.is_some_and(|t| now >= t) {
            let able: Vec<Id> =
                (0..up.len()).filter(|&i| up[i] && self.component(i, up, net) >= self.quorum()).collect();
            if able.is_empty() {
                self.election_at = Some(now + rng.ms(150, 300));
            } else {
                let l = rng.pick(&able);
                self.set_leader(l);
                elected = Some(l);
            }
        }
        let mut due: Vec<Pending> = Vec::new();
        let mut rest = Vec::new();
        for p in self.pending.drain(..) {
            if p.commit_at <= now { due.push(p) } else { rest.push(p) }
        }
        self.pending = rest;
        for p in due {
            if p.term == self.term && self.leader.is_some() {
                self.commit(now, p.cmd);
            }
        }
        for lag in self.apply_lag.iter_mut() {
            if rng.chance(0.01) {
                *lag = if rng.chance(0.3) { rng.ms(50, 400) } else { rng.ms(5, 30) };
            }
        }
        if let Some(l) = self.leader {
            for (i, running) in up.iter().enumerate() {
                if i != l && *running && net.connected(i, l) {
                    let lag = self.apply_lag[i];
                    let upto = self.log.iter().take_while(|(at, _)| *at + lag <= now).count();
                    self.catch_up(i, upto.max(self.applied[i]));
                }
            }
        }
        elected
    }

    fn commit(&mut self, now: Duration, cmd: Command) {
        let l = self.leader.expect("commits happen on a leader");
        let before = self.states[l].sync.recorded.clone();
        self.log.push((now, cmd.clone()));
        let upto = self.log.len();
        self.catch_up(l, upto - 1);
        let res = self.states[l].apply(cmd.clone());
        self.applied[l] = upto;
        if let Ok(CommandOk::Granted { epoch }) = res {
            self.grants.push(GrantInfo { epoch, prev_recorded: before, at: now });
        }
    }

    fn set_leader(&mut self, l: Id) {
        self.leader = Some(l);
        self.term += 1;
        self.election_at = None;
        let upto = self.log.len();
        self.catch_up(l, upto);
    }

    /// A proposal from `from`: accepted when it reaches the leader, committed after a quorum
    /// round trip if the leader still leads then. One proposal in flight per member.
    pub fn propose(
        &mut self,
        now: Duration,
        rng: &mut Rng,
        from: Id,
        cmd: Command,
        up: &[bool],
        net: &Network,
    ) {
        let Some(l) = self.leader else { return };
        if !up[from] || !net.connected(from, l) || self.pending.iter().any(|p| p.from == from) {
            return;
        }
        self.pending.push(Pending { term: self.term, commit_at: now + rng.ms(2, 10), from, cmd });
    }

    /// Hands leadership to `to` when it is running and reachable from the leader.
    pub fn transfer(&mut self, to: Id, up: &[bool], net: &Network) -> bool {
        match self.leader {
            Some(l) if l != to && up[to] && net.connected(l, to) && self.leads_with_quorum(l, up, net) => {
                self.set_leader(to);
                true
            }
            _ => false,
        }
    }
}
