//! Scripted scenarios on the simulated cluster: step until a condition holds (with a deadline),
//! inject a chosen fault at a chosen moment, and check the safety invariants after every step.
//!
//! Owns only the driving; faults are `World` methods and checks live in `invariants.rs`.

use std::time::Duration;

use pgquorum_core::state::DurabilityMode;

use super::invariants;
use super::network::Id;
use super::world::World;

/// A world driven step by step by a test.
pub struct Script {
    /// The cluster.
    pub w: World,
    steps: usize,
    seed: u64,
}

impl Script {
    /// A cluster of `n` members in `mode`, all randomness from `seed`.
    pub fn new(seed: u64, n: usize, mode: DurabilityMode) -> Script {
        Script { w: World::new(seed, n, mode), steps: 0, seed }
    }

    /// The failure message: what went wrong, recent events and every member's state.
    pub fn failure(&self, msg: &str) -> String {
        let trace: Vec<&str> = self.w.trace.iter().map(String::as_str).collect();
        format!(
            "scripted scenario (seed {}) failed at step {}, t={:.3}s: {msg}\n--- recent events\n{}\n--- state\n{}",
            self.seed,
            self.steps,
            self.w.clock.now.as_secs_f64(),
            trace.join("\n"),
            invariants::describe(&self.w)
        )
    }

    /// One step, then the safety invariants.
    pub fn step(&mut self) -> Result<(), String> {
        self.w.step();
        self.steps += 1;
        invariants::safety(&mut self.w).map_err(|e| self.failure(&e))
    }

    /// Steps for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) -> Result<(), String> {
        let end = self.w.clock.now + d;
        while self.w.clock.now < end {
            self.step()?;
        }
        Ok(())
    }

    /// Steps until `pred` holds, failing with `what` after `timeout`.
    pub fn run_until(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&World) -> bool,
    ) -> Result<(), String> {
        let end = self.w.clock.now + timeout;
        while !pred(&self.w) {
            if self.w.clock.now > end {
                return Err(self.failure(&format!("{what}: not within {timeout:?}")));
            }
            self.step()?;
        }
        Ok(())
    }

    /// Boots the cluster until one primary serves and every other member streams from it, and
    /// the synchronous set settled.
    pub fn converge(&mut self) -> Result<Id, String> {
        self.run_until("converged", Duration::from_secs(30), invariants::converged)?;
        self.run_for(Duration::from_secs(3))?;
        self.run_until("converged again", Duration::from_secs(30), invariants::converged)?;
        Ok(self.w.writable().expect("converged means one writable member"))
    }

    /// Hands Raft leadership to `to` (as `pgquorumctl` could), if the leader reaches it.
    pub fn transfer(&mut self, to: Id) -> bool {
        let up = self.w.raft_up();
        let moved = self.w.raft.transfer(to, &up, &self.w.net);
        if moved {
            self.w.new_leader(to);
        }
        moved
    }

    /// The Raft leader now.
    pub fn leader(&self) -> Option<Id> {
        self.w.raft.leader
    }
}
