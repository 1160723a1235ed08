//! A cluster of agents under test, on loopback ports or in a network-namespace lab.

use std::time::Duration;

use serde_json::Value;

use crate::agent::Agent;
use crate::bins::free_port;
use crate::lab::Lab;
use crate::wait::wait_for;

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of initial members (named m1, m2, ...).
    pub members: usize,
    /// Cluster name.
    pub cluster: String,
    /// Run each member in its own network namespace (needs root), so the network can be cut.
    pub netns: bool,
    /// Extra `--set KEY=VALUE` for every agent.
    pub settings: Vec<String>,
    /// Every agent manages a Postgres.
    pub postgres: bool,
    /// Extra `--set KEY=VALUE` for one agent: (member name, setting).
    pub member_settings: Vec<(String, String)>,
    /// The cluster's token: written to `<dir>/token` (0600) and given to every agent as
    /// `auth.token_file`; `Agent::ctl` sends it (`PGQUORUM_TOKEN_FILE`). Clusters in network
    /// namespaces listen beyond loopback and get `NETNS_TOKEN` when this is `None`.
    pub token: Option<String>,
    /// Environment for every pgquorumctl run through `Agent::ctl` (TLS files, for example).
    pub ctl_env: Vec<(String, String)>,
}

/// The token of clusters in network namespaces (agents there listen beyond loopback, where a
/// change needs credentials).
pub const NETNS_TOKEN: &str = "e2e-netns-cluster-token-0123456789";

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            members: 3,
            cluster: "e2e".into(),
            netns: false,
            settings: Vec::new(),
            postgres: true,
            member_settings: Vec::new(),
            token: None,
            ctl_env: Vec::new(),
        }
    }
}

impl ClusterOptions {
    /// Agents without Postgres (Raft only: every member a witness).
    pub fn raft_only(members: usize) -> ClusterOptions {
        ClusterOptions {
            members,
            settings: vec!["postgres.enabled=false".into()],
            postgres: false,
            ..Default::default()
        }
    }

    /// Postgres clusters with a durability mode set at bootstrap.
    pub fn with_durability(members: usize, durability: &str) -> ClusterOptions {
        ClusterOptions {
            members,
            settings: vec![format!("bootstrap.durability={durability}")],
            ..Default::default()
        }
    }
}

/// Agents under test. Dropping it kills every agent it started and removes its directory.
pub struct Cluster {
    /// The agents, in start order.
    pub agents: Vec<Agent>,
    /// The network lab, when `netns` was asked for (dropped after the agents).
    pub lab: Option<Lab>,
    /// Options it was started with.
    pub opts: ClusterOptions,
    /// Where everything lives.
    pub dir: tempfile::TempDir,
    initial_peers: Vec<(String, String)>,
}

impl Cluster {
    /// Starts `opts.members` agents and returns without waiting for a leader.
    pub fn start(opts: ClusterOptions) -> Cluster {
        let dir = tempfile::Builder::new().prefix("pgq-e2e-").tempdir().expect("tempdir");
        crate::secrets::give_to_agents(dir.path());
        let mut opts = opts;
        if opts.netns && opts.token.is_none() {
            opts.token = Some(NETNS_TOKEN.to_string());
        }
        if let Some(token) = &opts.token {
            let path = dir.path().join("token");
            crate::secrets::write_private(&path, &format!("{token}\n"));
            opts.settings.push(format!("auth.token_file={}", path.display()));
            opts.ctl_env.push(("PGQUORUM_TOKEN_FILE".into(), path.display().to_string()));
        }
        let lab = opts.netns.then(|| Lab::new(opts.members + 2));
        let mut c = Cluster { agents: Vec::new(), lab, opts: opts.clone(), dir, initial_peers: Vec::new() };
        c.initial_peers = (0..opts.members).map(|i| (format!("m{}", i + 1), c.address_for(i))).collect();
        for i in 0..opts.members {
            let peers = c.initial_peers.clone();
            let agent = c.describe(i, &peers);
            c.agents.push(agent);
        }
        for a in &mut c.agents {
            a.start();
        }
        c
    }

    fn address_for(&self, i: usize) -> String {
        match &self.lab {
            Some(lab) => format!("{}:7000", lab.ip(i)),
            None => format!("127.0.0.1:{}", free_port()),
        }
    }

    fn postgres_for(&self, i: usize) -> String {
        match &self.lab {
            Some(lab) => format!("{}:5432", lab.ip(i)),
            None => format!("127.0.0.1:{}", free_port()),
        }
    }

    fn http_for(&self, i: usize) -> String {
        match &self.lab {
            Some(lab) => format!("{}:8008", lab.ip(i)),
            None => format!("127.0.0.1:{}", free_port()),
        }
    }

    fn describe(&self, i: usize, peers: &[(String, String)]) -> Agent {
        let name = format!("m{}", i + 1);
        let grpc = peers.iter().find(|(n, _)| *n == name).map(|(_, a)| a.clone()).expect("address assigned");
        let peer_list: Vec<String> = peers.iter().map(|(n, a)| format!("{n}={a}")).collect();
        let mut settings = vec![
            format!("name={name}"),
            format!("cluster={}", self.opts.cluster),
            format!("data_dir={}", self.dir.path().join(&name).display()),
            format!("grpc.listen={grpc}"),
            format!("peers={}", peer_list.join(",")),
            "log.level=info".to_string(),
        ];
        let pg = self.opts.postgres.then(|| self.postgres_for(i));
        if let Some(pg) = &pg {
            settings.push(format!("postgres.listen={pg}"));
        }
        let http = self.http_for(i);
        settings.push(format!("http.listen={http}"));
        settings.extend(self.opts.settings.iter().cloned());
        settings.extend(self.opts.member_settings.iter().filter(|(m, _)| *m == name).map(|(_, s)| s.clone()));
        let netns = self.lab.as_ref().map(|l| l.ns(i));
        let mut agent = Agent::new(&name, self.dir.path().join(&name), grpc, netns, settings);
        agent.ctl_env = self.opts.ctl_env.clone();
        agent.postgres = pg;
        agent.http = Some(http);
        agent
    }

    /// Describes and starts one more agent that joins the running cluster.
    pub fn add_agent(&mut self) -> &mut Agent {
        self.add_agent_with(&[])
    }

    /// Like `add_agent`, with extra `--set KEY=VALUE` for the new agent only.
    pub fn add_agent_with(&mut self, extra: &[&str]) -> &mut Agent {
        let i = self.agents.len();
        let mut peers = self.initial_peers.clone();
        peers.push((format!("m{}", i + 1), self.address_for(i)));
        let mut agent = self.describe(i, &peers);
        agent.settings.extend(extra.iter().map(|s| s.to_string()));
        agent.start();
        self.agents.push(agent);
        self.agents.last_mut().expect("just pushed")
    }

    /// The agent called `name`.
    pub fn agent(&self, name: &str) -> &Agent {
        self.agents.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("no agent {name}"))
    }

    /// The agent called `name`, mutably.
    pub fn agent_mut(&mut self, name: &str) -> &mut Agent {
        self.agents.iter_mut().find(|a| a.name == name).unwrap_or_else(|| panic!("no agent {name}"))
    }

    /// Waits until every running agent names the same running leader; returns its name.
    pub fn wait_for_leader(&mut self, timeout: Duration) -> String {
        let running: Vec<String> =
            self.agents.iter_mut().filter_map(|a| a.is_running().then(|| a.name.clone())).collect();
        wait_for("one leader all running agents agree on", timeout, || {
            let mut leader: Option<String> = None;
            for name in &running {
                let st = self.agent(name).local_status()?;
                let l = st["raft"]["leader"].as_str().map(str::to_string);
                match (&leader, l) {
                    (_, None) => return Err(format!("{name} knows no leader")),
                    (None, Some(l)) => leader = Some(l),
                    (Some(a), Some(b)) if *a != b => return Err(format!("disagreement: {a} vs {b}")),
                    _ => {}
                }
            }
            Ok(leader.filter(|l| running.contains(l)))
        })
    }

    /// `status` (the leader's view) asked of any running agent.
    pub fn status(&mut self) -> Result<Value, String> {
        let names: Vec<String> =
            self.agents.iter_mut().filter_map(|a| a.is_running().then(|| a.name.clone())).collect();
        let mut last = "no agent running".to_string();
        for n in names {
            match self.agent(&n).ctl_json(&["status"]) {
                Ok(v) if v["warning"].is_null() => return Ok(v),
                Ok(v) => last = v["warning"].to_string(),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Waits until the cluster has a writable primary that answers SQL; returns its name.
    pub fn wait_for_primary(&mut self, timeout: Duration) -> String {
        wait_for("a writable primary", timeout, || {
            let st = self.status()?;
            let Some(p) = st["primary"].as_str().map(str::to_string) else {
                return Err(format!("no primary: {st}"));
            };
            let member =
                st["members"].as_array().and_then(|m| m.iter().find(|m| m["name"] == p.as_str()).cloned());
            if member.as_ref().is_none_or(|m| m["role"] != "primary") {
                return Err(format!("{p} not primary yet: {member:?}"));
            }
            let pg = crate::pg::Pg::connect(&crate::pg::conninfo(
                &[self.agent(&p).postgres.clone().unwrap_or_default()],
                true,
            ))?;
            Ok((pg.value("SELECT pg_is_in_recovery()")?.as_deref() == Some("f")).then_some(p))
        })
    }

    /// Waits until `names` all stream from the primary: each says it streams, and the primary's
    /// own replication report lists it (its `sync_state`), as a switchover to it requires. A
    /// member's own "streaming" alone may still describe its previous upstream.
    pub fn wait_for_streaming(&mut self, names: &[&str], timeout: Duration) {
        wait_for(&format!("{names:?} streaming"), timeout, || {
            let st = self.status()?;
            let streaming = |n: &&str| {
                st["members"].as_array().is_some_and(|m| {
                    m.iter().any(|m| {
                        m["name"] == *n
                            && m["state"] == "streaming"
                            && m["sync_state"].as_str().is_some_and(|s| !s.is_empty())
                    })
                })
            };
            if names.iter().all(streaming) {
                Ok(Some(()))
            } else {
                Err(format!("members: {}", st["members"]))
            }
        });
    }

    /// A client connected to member `name`'s Postgres.
    pub fn pg(&self, name: &str) -> crate::pg::Pg {
        let addr = self.agent(name).postgres.clone().unwrap_or_else(|| panic!("{name} has no Postgres"));
        crate::pg::Pg::connect(&crate::pg::conninfo(&[addr], false))
            .unwrap_or_else(|e| panic!("connecting to {name}: {e}"))
    }

    /// Every member's Postgres address (for multi-host connection strings).
    pub fn postgres_addresses(&self) -> Vec<String> {
        self.agents.iter().filter_map(|a| a.postgres.clone()).collect()
    }

    /// `status --local` of every running agent.
    pub fn local_statuses(&mut self) -> Vec<(String, Result<Value, String>)> {
        let names: Vec<String> =
            self.agents.iter_mut().filter_map(|a| a.is_running().then(|| a.name.clone())).collect();
        names.into_iter().map(|n| (n.clone(), self.agent(&n).local_status())).collect()
    }

    /// Panics if any agent logged an ERROR line that contains none of `allowed`.
    pub fn check_logs(&self, allowed: &[&str]) {
        for a in &self.agents {
            for line in a.log_text().lines() {
                let is_error = line.contains(" ERROR ")
                    || line.contains("\"level\":\"ERROR\"")
                    || line.contains("panicked");
                if is_error && !allowed.iter().any(|s| line.contains(s)) {
                    panic!("unexpected error in {}'s log ({}): {line}", a.name, a.log.display());
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // A failing test: show what each agent said last, which is usually why.
        for a in &self.agents {
            let text = a.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("----- last {} lines of {} ({}) -----", tail.len(), a.name, a.log.display());
            for l in tail {
                eprintln!("{l}");
            }
        }
        if std::env::var_os("PGQUORUM_KEEP_TEST_DIR").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            eprintln!("kept test directory {}", dir.keep().display());
        }
    }
}
