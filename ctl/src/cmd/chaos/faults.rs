//! Injecting one scheduled fault into the cluster under test and healing it: kills, freezes,
//! an old primary returning mid-failover, a slow link, a cold restart, a switchover. Records when it was
//! injected and healed; the run waits for convergence afterwards.
//!
//! Every wait is bounded; every process is found and signalled by PID.

use std::time::Duration;

use pgquorum_chaos::history::Fault;
use pgquorum_chaos::scenario::{FaultKind, Planned, Target};
use pgquorum_chaos::workload::now;
use rustix::process::Signal;

use super::cluster::{Roles, Under};
use crate::Failure;

/// The member `target` names right now, with its role, chosen among candidates with `pick`.
fn choose(names: &[String], roles: &Roles, target: Target, pick: u64) -> Option<(String, &'static str)> {
    let replicas: Vec<&String> = names.iter().filter(|n| Some(*n) != roles.primary.as_ref()).collect();
    let nth = |v: &[&String]| (!v.is_empty()).then(|| v[(pick % v.len() as u64) as usize].clone());
    match target {
        Target::Primary => roles.primary.clone().map(|p| (p, "primary")),
        Target::Replica => nth(&replicas).map(|r| (r, "replica")),
        Target::Leader => match &roles.leader {
            Some(l) if roles.primary.as_ref() != Some(l) => Some((l.clone(), "leader")),
            _ => nth(&replicas).map(|r| (r, "replica")),
        },
        Target::Any => {
            let all: Vec<&String> = names.iter().collect();
            let n = nth(&all)?;
            let role = if roles.primary.as_ref() == Some(&n) { "primary" } else { "replica" };
            Some((n, role))
        }
    }
}

/// Injects `p`, holds it, heals it; the record of what happened.
pub async fn inject(c: &mut Under, p: &Planned, recover: Duration) -> Result<Fault, Failure> {
    let names = c.names();
    // The cluster converged before this fault; a status answer may still be missed once.
    let mut roles = c.roles().await;
    for _ in 0..50 {
        if choose(&names, &roles, p.spec.target, p.pick).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        roles = c.roles().await;
    }
    let (name, role) = choose(&names, &roles, p.spec.target, p.pick).ok_or_else(|| {
        Failure::failed(format!("no member to hit with {} ({roles:?})", p.spec.kind.name()))
    })?;
    let hold = p.spec.hold;
    let mut fault = Fault {
        kind: p.spec.kind.name(),
        target: format!("{name} ({role})"),
        injected: now(),
        healed: None,
        converged: None,
    };
    match p.spec.kind {
        FaultKind::KillPostgres => c.kill(&name, false, true).await,
        FaultKind::KillAgent | FaultKind::KillNode => {
            c.kill(&name, true, p.spec.kind == FaultKind::KillNode).await;
            tokio::time::sleep(hold).await;
            c.start(&name)?;
            fault.healed = Some(now());
        }
        FaultKind::FreezeAgent | FaultKind::FreezePostgres => {
            let pids: Vec<u32> = if p.spec.kind == FaultKind::FreezeAgent {
                c.agent_pid(&name).into_iter().collect()
            } else {
                c.postgres_pids(&name)
            };
            Under::signal(&pids, Signal::STOP);
            tokio::time::sleep(hold).await;
            Under::signal(&pids, Signal::CONT);
            fault.healed = Some(now());
        }
        FaultKind::OldPrimaryReturns => {
            let pids: Vec<u32> = c.agent_pid(&name).into_iter().chain(c.postgres_pids(&name)).collect();
            Under::signal(&pids, Signal::STOP);
            // Resume it as soon as the others have granted the primary role to someone else: the
            // old primary comes back while the new one is being promoted.
            let deadline = tokio::time::Instant::now() + recover;
            while tokio::time::Instant::now() < deadline {
                if c.roles().await.primary.is_some_and(|n| n != name) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Under::signal(&pids, Signal::CONT);
            fault.healed = Some(now());
        }
        FaultKind::ColdRestart => {
            fault.target = "every member".into();
            for n in &names {
                c.kill(n, true, true).await;
            }
            tokio::time::sleep(hold).await;
            for n in &names {
                c.start(n)?;
            }
            fault.healed = Some(now());
        }
        FaultKind::Switchover => {
            fault.target = format!("{} (primary)", roles.primary.clone().unwrap_or_default());
            if let Err(e) = c.switchover(true).await {
                eprintln!("chaos: switchover refused or failed: {}", e.message);
            }
        }
        FaultKind::Partition => {
            c.isolate(&name)?;
            tokio::time::sleep(hold).await;
            c.heal();
            fault.healed = Some(now());
        }
        FaultKind::SlowLink => {
            c.slow_link(&name)?;
            tokio::time::sleep(hold).await;
            c.heal();
            fault.healed = Some(now());
        }
        FaultKind::PartitionDuringSwitchover => {
            if let Err(e) = c.switchover(false).await {
                eprintln!("chaos: switchover refused: {}", e.message);
            }
            c.isolate(&name)?;
            tokio::time::sleep(hold).await;
            c.heal();
            fault.healed = Some(now());
        }
    }
    Ok(fault)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_resolve_from_the_current_roles() {
        let names: Vec<String> = ["m1", "m2", "m3"].map(String::from).to_vec();
        let roles = Roles { primary: Some("m2".into()), leader: Some("m2".into()) };
        assert_eq!(choose(&names, &roles, Target::Primary, 5), Some(("m2".into(), "primary")));
        assert_eq!(choose(&names, &roles, Target::Replica, 1), Some(("m3".into(), "replica")));
        assert_eq!(
            choose(&names, &roles, Target::Leader, 0),
            Some(("m1".into(), "replica")),
            "leader is primary"
        );
        let split = Roles { primary: Some("m2".into()), leader: Some("m3".into()) };
        assert_eq!(choose(&names, &split, Target::Leader, 0), Some(("m3".into(), "leader")));
        assert_eq!(choose(&names, &Roles::default(), Target::Primary, 0), None);
    }
}
