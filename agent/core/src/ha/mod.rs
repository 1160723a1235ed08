//! The HA decision: `decide(&Observation, &HaConfig) -> Plan`.
//!
//! One observation, one decision per tick. The member part always starts with lease upkeep
//! (renew, or fence when the lease is running out or Postgres is writable without one); then
//! what the local Postgres should do. On the Raft leader the coordinator part adds cluster-wide
//! decisions. Pure: no clocks, no I/O.

pub mod cadence;
pub mod config;
pub mod handover;
pub mod observation;
pub mod plan;
pub mod pod;
pub mod rules;

pub use config::HaConfig;
pub use observation::Observation;
pub use plan::{Action, Decision, Plan, Reason};

/// Decides what this agent does this tick.
pub fn decide(obs: &Observation, cfg: &HaConfig) -> Plan {
    Plan { member: member(obs, cfg), coordinator: rules::coordinator::decide(obs, cfg) }
}

fn member(obs: &Observation, cfg: &HaConfig) -> Decision {
    if obs.local.postgres == observation::Postgres::Disabled {
        return Decision::wait(Reason::Witness);
    }
    let (mut actions, forced) = rules::lease::upkeep(obs);
    if let Some(reason) = forced {
        return Decision::act(reason, actions);
    }
    let d = if obs.cluster.cluster_id.is_none() {
        Decision::wait(Reason::NotInitialized)
    } else if obs.cluster.paused {
        // Maintenance: leave Postgres alone, except that a member an operator failed over to
        // still promotes (the lease rules above keep fencing in force).
        let promote =
            rules::lease::holds_lease(obs) && obs.local.postgres.running().is_some_and(|r| r.in_recovery);
        if obs.local.task.is_some() {
            Decision::wait(Reason::TaskRunning)
        } else if promote {
            Decision::act(
                Reason::BecomingPrimary,
                vec![Action::Promote { sync: obs.cluster.sync.target.clone() }],
            )
        } else {
            Decision::wait(Reason::Paused)
        }
    } else {
        rules::member::decide(obs, cfg)
    };
    actions.extend(d.actions);
    Decision { actions, reason: d.reason }
}
