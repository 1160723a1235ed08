//! The simulated cluster: N agents with their Postgres, the Raft model, the network, the
//! client and the clock, advanced one step at a time. Each step runs, in order: Raft (leader
//! changes), message delivery and lease confirmations, Postgres progress (starts, streaming,
//! the fence guard), the client, and then every running agent's observe-decide-execute loop.
//!
//! Owns the step order and small helpers shared by the other modules. Faults are injected from
//! outside (`scenario.rs`); invariants are checked after each step (`invariants.rs`).

use std::collections::VecDeque;
use std::time::Duration;

use pgquorum_core::MemberName;
use pgquorum_core::ha::observation::Tags;
use pgquorum_core::ha::{HaConfig, decide};
use pgquorum_core::state::{Command, DynamicConfig};
use pgquorum_core::{UnixMillis, state::DurabilityMode};

use super::agent::{self, Agent, CoordMem};
use super::client::Client;
use super::clock::{Clock, Rng};
use super::invariants::Checker;
use super::network::{Id, Msg, Network};
use super::postgres::Pg;
use super::raft::Raft;
use super::{executor, messages, tasks};

/// Counters reported at the end of a run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Fence actions executed.
    pub fences: u64,
    /// Times the fence guard killed Postgres.
    pub guard_fired: u64,
    /// Times a standby could not stream because its WAL diverged from its upstream's.
    pub refused_streams: u64,
    /// Members that became writable.
    pub writable_events: u64,
    /// Acknowledged commits lost where the mode allows it.
    pub allowed_loss: u64,
}

/// The whole simulated cluster.
pub struct World {
    /// Randomness (the seed decides everything).
    pub rng: Rng,
    /// The clock.
    pub clock: Clock,
    /// Links between members.
    pub net: Network,
    /// The replicated log.
    pub raft: Raft,
    /// Member names by index.
    pub names: Vec<MemberName>,
    /// Agents by index.
    pub agents: Vec<Agent>,
    /// Postgres instances by index.
    pub pgs: Vec<Pg>,
    /// The writing client.
    pub client: Client,
    /// Local HA settings every agent uses.
    pub cfg: HaConfig,
    /// Invariant bookkeeping.
    pub checker: Checker,
    /// Counters.
    pub stats: Stats,
    /// Probability that a rewind fails.
    pub rewind_failure: f64,
    /// Recent events, printed when an invariant fails.
    pub trace: VecDeque<String>,
    last_reason: Vec<[String; 2]>,
    next_timeline: u32,
    next_marker: u64,
}

impl World {
    /// `n` members named pg-0.., durability `mode`, tags from the seed.
    pub fn new(seed: u64, n: usize, mode: DurabilityMode) -> World {
        let mut rng = Rng::new(seed);
        let names: Vec<MemberName> =
            (0..n).map(|i| MemberName::new(format!("pg-{i}")).expect("valid")).collect();
        let mut config = DynamicConfig { durability: mode, ..DynamicConfig::default() };
        if mode == DurabilityMode::Performance {
            config.maximum_lag_on_failover = 24 * super::postgres::STEP;
        }
        let init = Command::InitCluster { cluster_id: format!("sim-{seed}"), config, at: UnixMillis(0) };
        let nofailover = (n >= 5).then(|| rng.below(n as u64) as usize);
        let agents = (0..n)
            .map(|i| {
                let priority = rng.below(3) as i32;
                Agent::new(Tags {
                    nofailover: Some(i) == nofailover,
                    failover_priority: priority,
                    ..Tags::default()
                })
            })
            .collect();
        World {
            rewind_failure: 0.2,
            client: Client::new(),
            checker: Checker::new(n),
            net: Network::new(n),
            raft: Raft::new(n, init),
            pgs: vec![Pg::empty(); n],
            agents,
            names,
            rng,
            clock: Clock::default(),
            cfg: HaConfig::default(),
            stats: Stats::default(),
            trace: VecDeque::new(),
            last_reason: vec![Default::default(); n],
            next_timeline: 1,
            next_marker: 0,
        }
    }

    /// Records an event for the failure trace.
    pub fn log(&mut self, event: String) {
        if self.trace.len() == 150 {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{:>9.3}s {event}", self.clock.now.as_secs_f64()));
    }

    /// Which agents take part in Raft: running and not frozen.
    pub fn raft_up(&self) -> Vec<bool> {
        self.agents.iter().map(Agent::active).collect()
    }

    /// Sends a message over the network.
    pub fn send(&mut self, from: Id, to: Id, msg: Msg) {
        self.net.send(&mut self.rng, self.clock.now, from, to, msg);
    }

    /// Proposes a command to Raft on behalf of `from`.
    pub fn propose(&mut self, from: Id, cmd: Command) {
        let up = self.raft_up();
        self.raft.propose(self.clock.now, &mut self.rng, from, cmd, &up, &self.net);
    }

    /// `l` now leads Raft: only it keeps coordinator memory, fresh from this moment.
    pub fn new_leader(&mut self, l: Id) {
        for (i, a) in self.agents.iter_mut().enumerate() {
            a.coord = (i == l).then(|| CoordMem::new(self.clock.now, self.raft.states[l].epoch));
        }
    }

    /// A new timeline id (cluster-wide unique, as with a shared WAL archive).
    pub fn timeline(&mut self) -> u32 {
        self.next_timeline += 1;
        self.next_timeline
    }

    /// A new marker id for initdb and end-of-recovery records.
    pub fn marker(&mut self) -> u64 {
        self.next_marker += 1;
        self.next_marker
    }

    /// Member `i`'s Postgres just started accepting writes.
    pub fn became_writable(&mut self, i: Id, how: &str) {
        self.stats.writable_events += 1;
        let epoch = self.agents[i].lease.map(|l| l.epoch);
        self.log(format!(
            "{} becomes writable ({how}, lease {epoch:?}, {} WAL entries)",
            self.names[i],
            self.pgs[i].wal.len()
        ));
        let result = super::invariants::on_writable(self, i);
        if let Err(e) = result {
            self.checker.violations.push(e);
        }
    }

    /// kill -9 of member `i`'s agent and Postgres; its memory is lost, its data and Raft log kept.
    pub fn crash(&mut self, i: Id) {
        let tags = self.agents[i].tags.clone();
        self.agents[i] = Agent { up: false, ..Agent::new(tags) };
        self.pgs[i].kill(self.clock.now);
        self.log(format!("FAULT crash {}", self.names[i]));
    }

    /// Starts member `i`'s agent again after a crash.
    pub fn restart(&mut self, i: Id) {
        self.agents[i].up = true;
        self.log(format!("HEAL restart {}", self.names[i]));
    }

    /// SIGSTOP of member `i`'s agent.
    pub fn freeze(&mut self, i: Id) {
        self.agents[i].frozen = true;
        self.log(format!("FAULT freeze {}", self.names[i]));
    }

    /// SIGCONT: answers that arrived meanwhile were lost.
    pub fn resume(&mut self, i: Id) {
        self.agents[i].frozen = false;
        self.agents[i].inflight = None;
        self.log(format!("HEAL resume {}", self.names[i]));
    }

    /// Member `i`'s Postgres crashes; its agent notices the next time it looks.
    pub fn crash_postgres(&mut self, i: Id) {
        self.pgs[i].kill(self.clock.now);
        self.postgres_died(i);
        self.log(format!("FAULT postgres of {} crashes", self.names[i]));
    }

    /// Postgres exited without the agent asking (a crash, or the fence guard): as the agent does,
    /// a granted primary starts its restart-in-place budget.
    pub fn postgres_died(&mut self, i: Id) {
        let granted = self.raft.states[i].primary.as_ref().is_some_and(|p| p.member == self.names[i]);
        if granted && self.agents[i].down_since.is_none() {
            self.agents[i].down_since = Some(self.clock.now);
        }
    }

    /// Cuts `side` off from the other members (Raft, reports, renewals and WAL streaming).
    pub fn partition(&mut self, side: &[Id]) {
        self.net.partition(side);
        let names: Vec<String> = side.iter().map(|i| self.names[*i].to_string()).collect();
        self.log(format!("FAULT partition {{{}}} from the rest", names.join(",")));
    }

    /// Reconnects everyone.
    pub fn heal(&mut self) {
        self.net.heal();
        self.log("HEAL partition".into());
    }

    /// The member whose Postgres is writable, if exactly one is.
    pub fn writable(&self) -> Option<Id> {
        let w: Vec<Id> = (0..self.pgs.len()).filter(|&i| self.pgs[i].writable()).collect();
        if let [p] = w[..] { Some(p) } else { None }
    }

    /// Advances the world by one step.
    pub fn step(&mut self) {
        self.clock.tick(&mut self.rng);
        let up = self.raft_up();
        if let Some(l) = self.raft.step(self.clock.now, &mut self.rng, &up, &self.net) {
            self.new_leader(l);
            self.log(format!("{} elected Raft leader (term {})", self.names[l], self.raft.term));
        }
        if let Some(l) = self.raft.leader
            && self.agents.iter().enumerate().any(|(i, a)| (i == l) != a.coord.is_some())
        {
            self.new_leader(l);
        }
        messages::deliver(self);
        messages::confirmations(self);
        tasks::starts(self);
        tasks::stream(self);
        tasks::guard(self);
        super::client::step(self);
        for i in 0..self.agents.len() {
            if self.agents[i].active() {
                self.agent_tick(i);
            }
        }
    }

    fn agent_tick(&mut self, i: Id) {
        let now = self.clock.now;
        tasks::complete(self, i);
        let timeout = (self.raft.states[i].config.ttl / 3).max(Duration::from_millis(100));
        let a = &mut self.agents[i];
        if a.inflight.is_some_and(|t| now >= t + timeout) {
            a.inflight = None;
        }
        if self.pgs[i].writable() {
            a.down_since = None;
        }
        if self.raft.leader == Some(i) {
            messages::coordinator_upkeep(self, i);
        }
        let obs = agent::observation(self, i);
        let plan = decide(&obs, &self.cfg);
        for (role, d) in [("", Some(&plan.member)), (" (coordinator)", plan.coordinator.as_ref())] {
            let Some(d) = d else { continue };
            let reason = d.reason.to_string();
            let slot = usize::from(!role.is_empty());
            let acts = d.actions.iter().any(|a| !matches!(a, pgquorum_core::ha::Action::Renew { .. }));
            if acts || self.last_reason[i][slot] != reason {
                let acts: Vec<String> = d.actions.iter().map(crate::support::action).collect();
                self.log(format!("{}{role}: {reason} -> {}", self.names[i], acts.join("; ")));
                self.last_reason[i][slot] = reason;
            }
        }
        executor::execute(self, i, &obs, &plan);
        let report = agent::report(self, i);
        for j in 0..self.agents.len() {
            if j != i {
                self.send(i, j, Msg::Report(Box::new(report.clone())));
            }
        }
    }
}
