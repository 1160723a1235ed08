//! Scenario files (`chaos/scenarios/*.toml`): which faults, their weights and timing, the
//! workload and the checks; and the seeded fault schedule a scenario yields (the same seed
//! gives the same schedule). Pure: text in, a validated scenario or an error that says what
//! to fix.

use std::time::Duration;

use serde::Deserialize;

use crate::checker::Durability;

/// The faults a scenario can name.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// kill -9 of the target's postmaster.
    KillPostgres,
    /// kill -9 of the target's agent (its Postgres keeps running until fenced or adopted).
    KillAgent,
    /// kill -9 of the target's agent and Postgres: node loss.
    KillNode,
    /// SIGSTOP of the target's agent for `hold`, then SIGCONT.
    FreezeAgent,
    /// SIGSTOP of the target's Postgres processes for `hold`, then SIGCONT.
    FreezePostgres,
    /// Cut the target off from the other members for `hold` (network namespaces only).
    Partition,
    /// A switchover requested, and the target (the primary) cut off right after.
    PartitionDuringSwitchover,
    /// The target (the primary) frozen, agent and Postgres, until a new primary is being
    /// chosen, then resumed: the old primary returns in the middle of the failover.
    OldPrimaryReturns,
    /// Every member killed, then every member started again.
    ColdRestart,
    /// A planned switchover to a replica.
    Switchover,
    /// The target's link made slow for `hold` (16 kbit/s, 300 ms of queue, both ways): its
    /// packets are delayed and, past the queue, dropped (network namespaces only).
    SlowLink,
}

impl FaultKind {
    /// The name scenario files use.
    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }

    /// Whether it needs members in network namespaces.
    pub fn needs_network(self) -> bool {
        matches!(self, FaultKind::Partition | FaultKind::PartitionDuringSwitchover | FaultKind::SlowLink)
    }
}

/// Which member a fault hits, chosen when it is injected.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The primary.
    Primary,
    /// A replica (chosen by the schedule's seed).
    Replica,
    /// The Raft leader when it is not the primary (else a replica).
    Leader,
    /// Any member.
    Any,
}

/// One `[[fault]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultSpec {
    /// What to do.
    pub kind: FaultKind,
    /// To whom.
    pub target: Target,
    /// Relative weight in `weighted` order.
    pub weight: u32,
    /// How long the fault lasts before it is healed.
    pub hold: Duration,
}

/// How the schedule is drawn.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// The `[[fault]]` entries in file order, cycling.
    EachOnce,
    /// Drawn at random by weight from the seed.
    Weighted,
}

/// A validated scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// What it is for.
    pub description: String,
    /// Faults to inject when neither `--faults` nor `--duration` is given (`None`: one per
    /// usable `[[fault]]` entry; see `default_faults`).
    pub faults: Option<usize>,
    /// How the schedule is drawn.
    pub order: Order,
    /// Quiet time after convergence before the next fault.
    pub pause: Duration,
    /// Longest wait for convergence after a fault.
    pub recover_timeout: Duration,
    /// Members of the cluster the run starts.
    pub members: usize,
    /// Durability mode unless `--durability` says otherwise.
    pub durability: Durability,
    /// Concurrent writers.
    pub writers: usize,
    /// Pause between one writer's writes.
    pub write_interval: Duration,
    /// Replica readers.
    pub readers: usize,
    /// Pause between reads.
    pub read_interval: Duration,
    /// Replica reads older than this are violations.
    pub max_replica_staleness: Option<Duration>,
    /// The faults.
    pub fault: Vec<FaultSpec>,
}

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// The fault.
    pub spec: FaultSpec,
    /// A random number the injector uses to choose among candidate targets.
    pub pick: u64,
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    description: String,
    #[serde(default)]
    run: RunFile,
    #[serde(default)]
    workload: WorkloadFile,
    #[serde(default)]
    checks: ChecksFile,
    fault: Vec<FaultFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunFile {
    faults: Option<usize>,
    order: Option<Order>,
    pause: Option<String>,
    hold: Option<String>,
    recover_timeout: Option<String>,
    members: Option<usize>,
    durability: Option<Durability>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WorkloadFile {
    writers: Option<usize>,
    write_interval: Option<String>,
    readers: Option<usize>,
    read_interval: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ChecksFile {
    max_replica_staleness: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultFile {
    kind: FaultKind,
    target: Option<Target>,
    weight: Option<u32>,
    hold: Option<String>,
}

fn duration(what: &str, v: Option<&String>, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s)
            .map_err(|e| format!("{what} = {s:?}: {e}; write a duration like \"500ms\", \"4s\" or \"2m\"")),
    }
}

impl Scenario {
    /// Parses and validates a scenario file's text.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let hold = duration("run.hold", f.run.hold.as_ref(), Duration::from_secs(3))?;
        let mut fault = Vec::new();
        for (i, ff) in f.fault.iter().enumerate() {
            let target = ff.target.unwrap_or(match ff.kind {
                FaultKind::ColdRestart | FaultKind::Switchover => Target::Any,
                _ => Target::Primary,
            });
            let wants_primary = matches!(
                ff.kind,
                FaultKind::PartitionDuringSwitchover | FaultKind::OldPrimaryReturns | FaultKind::Switchover
            );
            if wants_primary && target != Target::Primary && ff.kind != FaultKind::Switchover {
                return Err(format!(
                    "fault {} ({}): it always hits the primary; remove `target`",
                    i + 1,
                    ff.kind.name()
                ));
            }
            fault.push(FaultSpec {
                kind: ff.kind,
                target,
                weight: ff.weight.unwrap_or(1),
                hold: duration(&format!("fault {} hold", i + 1), ff.hold.as_ref(), hold)?,
            });
        }
        if fault.is_empty() || fault.iter().all(|f| f.weight == 0) {
            return Err("no fault to inject: add a [[fault]] entry with a weight above 0".into());
        }
        let members = f.run.members.unwrap_or(3);
        if !(3..=9).contains(&members) {
            return Err(format!("run.members = {members}: chaos runs need 3 to 9 members"));
        }
        let writers = f.workload.writers.unwrap_or(3);
        if !(1..=64).contains(&writers) {
            return Err(format!("workload.writers = {writers}: choose 1 to 64"));
        }
        Ok(Scenario {
            description: f.description,
            faults: f.run.faults,
            order: f.run.order.unwrap_or(Order::EachOnce),
            pause: duration("run.pause", f.run.pause.as_ref(), Duration::from_secs(2))?,
            recover_timeout: duration(
                "run.recover_timeout",
                f.run.recover_timeout.as_ref(),
                Duration::from_secs(90),
            )?,
            members,
            durability: f.run.durability.unwrap_or(Durability::Protection),
            writers,
            write_interval: duration(
                "workload.write_interval",
                f.workload.write_interval.as_ref(),
                Duration::from_millis(20),
            )?,
            readers: f.workload.readers.unwrap_or(1),
            read_interval: duration(
                "workload.read_interval",
                f.workload.read_interval.as_ref(),
                Duration::from_millis(250),
            )?,
            max_replica_staleness: f
                .checks
                .max_replica_staleness
                .as_ref()
                .map(|s| duration("checks.max_replica_staleness", Some(s), Duration::ZERO))
                .transpose()?,
            fault,
        })
    }

    /// How many faults a run injects unless told: `run.faults`, else one per `[[fault]]` entry
    /// usable with (`network`) or without network namespaces.
    pub fn default_faults(&self, network: bool) -> usize {
        self.faults.unwrap_or_else(|| {
            self.fault.iter().filter(|f| f.weight > 0 && (network || !f.kind.needs_network())).count()
        })
    }

    /// The faults this scenario injects, `count` of them, drawn from `seed`. Faults that need
    /// network namespaces are left out when `network` is false.
    pub fn schedule(&self, seed: u64, count: usize, network: bool) -> Vec<Planned> {
        let usable: Vec<&FaultSpec> =
            self.fault.iter().filter(|f| f.weight > 0 && (network || !f.kind.needs_network())).collect();
        let mut rng = SplitMix(seed);
        let total: u64 = usable.iter().map(|f| u64::from(f.weight)).sum();
        (0..count)
            .filter(|_| total > 0)
            .map(|i| {
                let spec = match self.order {
                    Order::EachOnce => usable[i % usable.len()],
                    Order::Weighted => {
                        let mut r = rng.next() % total;
                        usable
                            .iter()
                            .find(|f| {
                                let w = u64::from(f.weight);
                                if r < w {
                                    true
                                } else {
                                    r -= w;
                                    false
                                }
                            })
                            .expect("r < total weight")
                    }
                };
                Planned { spec: (*spec).clone(), pick: rng.next() }
            })
            .collect()
    }
}

/// SplitMix64: a tiny generator whose output for a seed never changes between versions, so a
/// seed printed in a report replays the same schedule with any later build.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests;
