//! The scenario driver: boots a cluster, injects random faults for a number of steps (crash of
//! agent and Postgres, SIGSTOP of the agent, Postgres-only crash, partitions, lossy links),
//! heals everything, then requires convergence within a bounded time. Safety invariants are
//! checked after every step; a failure names the seed and step and shows recent events.
//!
//! Owns fault injection and the phases of a run. Everything random comes from the seed.

use std::time::Duration;

use pgquorum_core::state::DurabilityMode;

use super::invariants;
use super::network::Id;
use super::world::World;

/// Which faults a run injects.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// kill -9 of agent and Postgres, restarted later with data intact.
    pub crash: bool,
    /// SIGSTOP of the agent only (its Postgres and fence guard go on).
    pub freeze: bool,
    /// Postgres alone crashes.
    pub pg_crash: bool,
    /// Partitions cutting Raft and replication traffic.
    pub partition: bool,
    /// Bursts of message loss.
    pub loss: bool,
}

impl Faults {
    /// Every kind of fault.
    pub const ALL: Faults = Faults { crash: true, freeze: true, pg_crash: true, partition: true, loss: true };
}

/// One run.
#[derive(Clone, Debug)]
pub struct Params {
    /// The seed; the run is a function of it.
    pub seed: u64,
    /// Members.
    pub n: usize,
    /// Durability mode.
    pub mode: DurabilityMode,
    /// Steps of the fault phase (the liveness phase adds its own).
    pub chaos_steps: usize,
    /// Faults injected.
    pub faults: Faults,
    /// Probability per step of injecting a fault (while fewer than the maximum are active).
    pub fault_rate: f64,
}

/// What a successful run did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Steps taken in total.
    pub steps: usize,
    /// Simulated time.
    pub time: Duration,
    /// Primary grants committed.
    pub grants: usize,
    /// Commits acknowledged.
    pub acked: u64,
    /// Faults injected.
    pub faults: usize,
    /// Time from the last heal to convergence.
    pub converged_after: Duration,
    /// Counters from the world.
    pub stats: super::world::Stats,
}

enum Active {
    Crash(Id, Duration),
    Freeze(Id, Duration),
    Partition(Duration),
    Loss(Duration),
}

impl Active {
    fn until(&self) -> Duration {
        match self {
            Active::Crash(_, t) | Active::Freeze(_, t) | Active::Partition(t) | Active::Loss(t) => *t,
        }
    }

    fn member(&self) -> Option<Id> {
        match self {
            Active::Crash(m, _) | Active::Freeze(m, _) => Some(*m),
            _ => None,
        }
    }
}

fn inject(w: &mut World, f: Faults, active: &mut Vec<Active>) -> bool {
    let now = w.clock.now;
    let busy: Vec<Id> = active.iter().filter_map(Active::member).collect();
    let free: Vec<Id> = (0..w.agents.len()).filter(|i| !busy.contains(i)).collect();
    if free.is_empty() {
        return false;
    }
    let m = w.rng.pick(&free);
    match w.rng.below(6) {
        0 if f.crash => {
            w.crash(m);
            active.push(Active::Crash(m, now + w.rng.ms(500, 6000)));
        }
        1 if f.freeze => {
            w.freeze(m);
            active.push(Active::Freeze(m, now + w.rng.ms(200, 3000)));
        }
        2 if f.pg_crash => w.crash_postgres(m),
        3 if f.partition && !w.net.partitioned() => {
            let n = w.agents.len() as u64;
            let bits = w.rng.below((1 << n) - 2) + 1;
            let side: Vec<Id> = (0..w.agents.len()).filter(|i| bits & (1 << i) != 0).collect();
            w.partition(&side);
            active.push(Active::Partition(now + w.rng.ms(500, 6000)));
        }
        5 if f.partition && !w.net.partitioned() => {
            w.partition(&[m]);
            active.push(Active::Partition(now + w.rng.ms(50, 600)));
        }
        4 if f.loss => {
            w.net.loss = 0.3;
            active.push(Active::Loss(now + w.rng.ms(1000, 4000)));
            w.log("FAULT lossy network".into());
        }
        _ => return false,
    }
    true
}

fn heal(w: &mut World, a: &Active) {
    match a {
        Active::Crash(m, _) => w.restart(*m),
        Active::Freeze(m, _) => w.resume(*m),
        Active::Partition(_) => w.heal(),
        Active::Loss(_) => {
            w.net.loss = 0.01;
            w.log("HEAL network loss".into());
        }
    }
}

fn failure(w: &World, p: &Params, step: usize, msg: &str) -> String {
    let trace: Vec<&str> = w.trace.iter().map(String::as_str).collect();
    format!(
        "simulation seed {} (n={}, {}) failed at step {step}, t={:.3}s: {msg}\n\
         replay: PGQUORUM_SIM_SEED={} PGQUORUM_SIM_STEPS={} PGQUORUM_SIM_FAULT_PERMILLE={} \
         cargo test -p pgquorum-core --test simulation random -- --nocapture\n\
         --- recent events\n{}\n--- state\n{}",
        p.seed,
        p.n,
        p.mode,
        w.clock.now.as_secs_f64(),
        p.seed,
        p.chaos_steps,
        (p.fault_rate * 1000.0).round(),
        trace.join("\n"),
        invariants::describe(w)
    )
}

/// Runs one seeded scenario to the end, or returns why it failed.
pub fn run(p: &Params) -> Result<Outcome, String> {
    let mut w = World::new(p.seed, p.n, p.mode);
    let warmup = Duration::from_secs(4);
    let max_active = if p.n >= 5 { 2 } else { 1 };
    let mut active: Vec<Active> = Vec::new();
    let mut faults = 0;
    let mut step = 0;
    while step < p.chaos_steps {
        let now = w.clock.now;
        let (due, rest): (Vec<Active>, Vec<Active>) = active.drain(..).partition(|a| a.until() <= now);
        active = rest;
        due.iter().for_each(|a| heal(&mut w, a));
        if now > warmup
            && active.len() < max_active
            && w.rng.chance(p.fault_rate)
            && inject(&mut w, p.faults, &mut active)
        {
            faults += 1;
        }
        w.step();
        step += 1;
        invariants::safety(&mut w).map_err(|e| failure(&w, p, step, &e))?;
    }
    std::mem::take(&mut active).iter().for_each(|a| heal(&mut w, a));
    let healed = w.clock.now;
    let limit = Duration::from_secs(30);
    loop {
        w.step();
        step += 1;
        invariants::safety(&mut w).map_err(|e| failure(&w, p, step, &e))?;
        if invariants::converged(&w) {
            break;
        }
        if w.clock.now > healed + limit {
            return Err(failure(
                &w,
                p,
                step,
                &format!("invariant 6: not converged {limit:?} after the last fault healed"),
            ));
        }
    }
    Ok(Outcome {
        steps: step,
        time: w.clock.now,
        grants: w.raft.grants.len(),
        acked: w.client.acked_total,
        faults,
        converged_after: w.clock.now - healed,
        stats: w.stats.clone(),
    })
}
