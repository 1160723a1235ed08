//! Raft-only measurements (agents without Postgres): kill -9 of the leader until a survivor
//! leads and a write succeeds, and sequential commit latency. Talks to the agents' management
//! gRPC API directly, polling every 5 ms while timing a failover.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use pgquorum_proto::management::management_client::ManagementClient;
use pgquorum_proto::management::{RaftStatus, SetConfigRequest, StatusRequest};
use pgquorum_tests::Cluster;
use pgquorum_tests::lease::Rng;
use tonic::transport::{Channel, Endpoint};

use crate::{median, ms, pct};

type Client = ManagementClient<Channel>;

/// Poll interval while timing a failover.
const POLL: Duration = Duration::from_millis(5);
/// Deadline for setup steps (leader agreement, catch-up).
const SETUP: Duration = Duration::from_secs(30);
/// Deadline for one failover to complete.
const FAILOVER_LIMIT: Duration = Duration::from_secs(20);
/// A kill comes up to this long after the setup of its trial. Without it every kill followed
/// the catch-up poll by the same few milliseconds, and the catch-up follows one of the
/// leader's messages, so every trial killed the leader at about the same point between two
/// heartbeats and the figure measured that point. Two heartbeat intervals (256 ms by default).
const KILL_SPREAD_MS: u64 = 512;

fn client(grpc: &str) -> Result<Client> {
    let ep = Endpoint::from_shared(format!("http://{grpc}"))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(2));
    Ok(ManagementClient::new(ep.connect_lazy()))
}

/// An agent's own view of Raft (`StatusRequest { local_only: true }`).
async fn local(c: &Client) -> Result<RaftStatus> {
    let r = c.clone().status(StatusRequest { local_only: true }).await?.into_inner();
    r.raft.ok_or_else(|| anyhow!("status without raft section"))
}

async fn set(c: &Client, kv: String) -> Result<()> {
    c.clone().set_config(SetConfigRequest { settings: vec![kv], ..Default::default() }).await?;
    Ok(())
}

/// Management clients for the agents of a Raft-only cluster, in start order.
pub(crate) struct Bench {
    pub(crate) names: Vec<String>,
    clients: Vec<Client>,
}

impl Bench {
    /// Management clients (lazily connected) for every agent of `c`.
    pub(crate) fn new(c: &Cluster) -> Result<Bench> {
        let names = c.agents.iter().map(|a| a.name.clone()).collect();
        let clients = c.agents.iter().map(|a| client(&a.grpc)).collect::<Result<Vec<_>>>()?;
        Ok(Bench { names, clients })
    }

    /// Index of the leader once every agent in `running` names the same running one.
    pub(crate) async fn agreed_leader(&self, running: &[usize]) -> Result<usize> {
        let deadline = Instant::now() + SETUP;
        loop {
            let last = match self.agreement(running).await {
                Ok(i) => return Ok(i),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                bail!("no leader all agents agree on after {SETUP:?}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn agreement(&self, running: &[usize]) -> Result<usize> {
        let mut leader: Option<String> = None;
        for &i in running {
            let r = local(&self.clients[i]).await.with_context(|| format!("status of {}", self.names[i]))?;
            if r.leader_name.is_empty() {
                bail!("{} knows no leader", self.names[i]);
            }
            if *leader.get_or_insert_with(|| r.leader_name.clone()) != r.leader_name {
                bail!("disagreement about the leader");
            }
        }
        let l = leader.ok_or_else(|| anyhow!("no agents"))?;
        running.iter().copied().find(|&i| self.names[i] == l).ok_or_else(|| anyhow!("leader {l} not running"))
    }

    /// Polls `survivors` every `POLL` until one says it is the leader: (elapsed, who, term).
    async fn first_self_leader(&self, survivors: &[usize], t0: Instant) -> Result<(Duration, usize, u64)> {
        while t0.elapsed() < FAILOVER_LIMIT {
            for &i in survivors {
                if let Ok(r) = local(&self.clients[i]).await
                    && r.leader_name == self.names[i]
                {
                    return Ok((t0.elapsed(), i, r.term));
                }
            }
            tokio::time::sleep(POLL).await;
        }
        bail!("no survivor became leader within {FAILOVER_LIMIT:?}")
    }

    /// Retries a write every `POLL` until one succeeds: (elapsed, attempts).
    async fn first_write(&self, via: usize, kv: &str, t0: Instant) -> Result<(Duration, u32)> {
        let mut attempts = 0;
        while t0.elapsed() < FAILOVER_LIMIT {
            attempts += 1;
            if set(&self.clients[via], kv.to_string()).await.is_ok() {
                return Ok((t0.elapsed(), attempts));
            }
            tokio::time::sleep(POLL).await;
        }
        bail!("no write succeeded within {FAILOVER_LIMIT:?} ({attempts} attempts)")
    }

    pub(crate) async fn failover(&self, c: &mut Cluster, trials: usize) -> Result<()> {
        let all: Vec<usize> = (0..self.names.len()).collect();
        let (mut elect, mut write) = (Vec::new(), Vec::new());
        // Kill delays from the clock: an arbitrary point between two heartbeats, as a real
        // failure comes.
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut rng = Rng::new(seed.as_nanos() as u64);
        for trial in 1..=trials {
            let old = self.agreed_leader(&all).await?;
            let term = local(&self.clients[old]).await?.term;
            let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != old).collect();
            let kv = format!("postgres_parameters.pgq.bench={trial}");
            tokio::time::sleep(Duration::from_millis(rng.range(0, KILL_SPREAD_MS))).await;
            let t0 = Instant::now();
            c.agents[old].kill9();
            let (e, w) =
                tokio::join!(self.first_self_leader(&survivors, t0), self.first_write(survivors[0], &kv, t0));
            let ((e, new, new_term), (w, attempts)) = (e?, w?);
            // Bring the killed agent back and wait until it has caught up.
            let t1 = Instant::now();
            c.agents[old].start();
            let leader = self.agreed_leader(&all).await?;
            let commit = local(&self.clients[leader]).await?.commit_index;
            let deadline = Instant::now() + SETUP;
            while local(&self.clients[old]).await.map(|r| r.applied_index).unwrap_or(0) < commit {
                if Instant::now() >= deadline {
                    bail!("{} did not apply index {commit} within {SETUP:?}", self.names[old]);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            println!(
                "trial {trial:>2}: kill -9 {} (term {term}) -> {} leads (term {new_term}) after {}, \
                 write via {} ok after {} ({attempts} attempt(s)); {} caught up {:.2} s after restart",
                self.names[old],
                self.names[new],
                ms(e),
                self.names[survivors[0]],
                ms(w),
                self.names[old],
                t1.elapsed().as_secs_f64()
            );
            elect.push(e);
            write.push(w);
        }
        elect.sort();
        write.sort();
        let n = elect.len();
        println!("\n{n} trials (p99 is nearest-rank; with fewer than 100 trials it is the max)");
        println!("{:<34} {:>10} {:>10} {:>10}", "", "median", "p99", "min");
        for (what, s) in [("kill -9 -> survivor is leader", &elect), ("kill -9 -> write succeeds", &write)] {
            println!("{what:<34} {:>10} {:>10} {:>10}", ms(median(s)), ms(pct(s, 99.0)), ms(s[0]));
        }
        Ok(())
    }

    pub(crate) async fn commit(&self, count: usize) -> Result<()> {
        let all: Vec<usize> = (0..self.names.len()).collect();
        let leader = self.agreed_leader(&all).await?;
        let c = self.clients[leader].clone();
        let term = local(&c).await?.term; // also opens the cached channel
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut lat = Vec::with_capacity(count);
        let mut config_bytes = 0;
        for i in 0..count {
            if Instant::now() >= deadline {
                bail!("{i} of {count} writes took longer than 300 s");
            }
            let req = SetConfigRequest {
                settings: vec![format!("postgres_parameters.pgq.c{i}={i}")],
                ..Default::default()
            };
            let t = Instant::now();
            let reply = c.clone().set_config(req).await.with_context(|| format!("write {i}"))?.into_inner();
            lat.push(t.elapsed());
            config_bytes = reply.config_json.len();
        }
        let end = local(&c).await?;
        if end.leader_name != self.names[leader] || end.term != term {
            println!(
                "warning: leadership changed during the run (now {} term {})",
                end.leader_name, end.term
            );
        }
        let half = count / 2;
        let (mut first, mut second) = (lat[..half].to_vec(), lat[half..].to_vec());
        first.sort();
        second.sort();
        lat.sort();
        println!(
            "{count} sequential SetConfig to leader {} (term {term}) over one channel",
            self.names[leader]
        );
        println!("{:>10} {:>10} {:>10} {:>10} {:>10}", "p50", "p90", "p99", "max", "min");
        let row = [pct(&lat, 50.0), pct(&lat, 90.0), pct(&lat, 99.0), lat[count - 1], lat[0]];
        println!("{}", row.map(|d| format!("{:>10}", ms(d))).join(" "));
        if half > 0 {
            println!(
                "p50 of the first {half}: {}, of the last {}: {}; config JSON at the end: {config_bytes} bytes",
                ms(pct(&first, 50.0)),
                count - half,
                ms(pct(&second, 50.0))
            );
        }
        Ok(())
    }
}
