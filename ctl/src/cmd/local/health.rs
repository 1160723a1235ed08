//! Is the local cluster healthy? Asks the agents' management API (`Status`: `ha.primary`,
//! members' role and state) and waits, with a deadline and a progress indicator, until there is
//! a primary and every other expected member streams from it.
//!
//! `assess` is pure (a status in, a verdict out); the waiting loop is the only effect here.

use std::process::Child;
use std::time::Duration;

use pgquorum_proto::management::management_client::ManagementClient;
use pgquorum_proto::management::{StatusReply, StatusRequest};
use tonic::transport::{Channel, Endpoint};

use super::spawn::{exit_meaning, log_tail};
use super::state::LocalState;
use crate::Failure;
use crate::progress::Progress;

/// What a status says about the cluster's health.
#[derive(Debug, PartialEq, Eq)]
pub enum Health {
    /// A primary, and every expected member either it or a streaming replica.
    Healthy {
        /// The primary's name.
        primary: String,
    },
    /// Not yet; the text says what the cluster is doing.
    Waiting(String),
}

/// Judges `r` against the members expected to be up.
pub fn assess(r: &StatusReply, expected: &[String]) -> Health {
    let ha = r.ha.clone().unwrap_or_default();
    let raft = r.raft.clone().unwrap_or_default();
    if raft.leader_name.is_empty() {
        return Health::Waiting("electing a Raft leader".into());
    }
    if !r.warning.is_empty() {
        return Health::Waiting(format!("waiting for the Raft leader's view ({})", r.warning));
    }
    if ha.primary.is_empty() {
        let what =
            if ha.system_identifier == 0 { "initialising Postgres (initdb)" } else { "choosing a primary" };
        return Health::Waiting(what.into());
    }
    let mut waiting = Vec::new();
    for name in expected {
        match r.members.iter().find(|m| &m.name == name) {
            None => waiting.push(format!("{name} not a member yet")),
            Some(m) if *name == ha.primary => {
                if m.role != "primary" {
                    waiting.push(format!("{name} becoming primary ({})", m.role));
                }
            }
            Some(m) if m.role == "replica" && m.state == "streaming" => {}
            Some(m) => {
                waiting.push(format!("{name} {}", if m.state.is_empty() { &m.role } else { &m.state }))
            }
        }
    }
    if waiting.is_empty() {
        Health::Healthy { primary: ha.primary }
    } else {
        Health::Waiting(format!("primary {}; {}", ha.primary, waiting.join(", ")))
    }
}

/// Why a healthy-looking status is not yet about the agents this command `started`
/// `since_start` ago: a member's report older than that came from before the start (the
/// previous, dead agent), so it says nothing about the new one.
pub fn predating(r: &StatusReply, started: &[&str], since_start: Duration) -> Option<String> {
    let old: Vec<&str> = started
        .iter()
        .copied()
        .filter(|name| {
            r.members
                .iter()
                .find(|m| m.name == *name)
                .is_none_or(|m| m.report_age_ms.is_none_or(|age| u128::from(age) >= since_start.as_millis()))
        })
        .collect();
    (!old.is_empty()).then(|| format!("waiting for the first report of the new agent of {}", old.join(", ")))
}

/// Management clients for every member, connected lazily with short timeouts.
pub struct Clients(Vec<(String, ManagementClient<Channel>)>);

impl Clients {
    /// One lazily connecting client per member.
    pub fn new(st: &LocalState) -> Clients {
        Clients(
            st.members
                .iter()
                .filter_map(|m| {
                    let ep = Endpoint::from_shared(format!("http://{}", m.endpoint())).ok()?;
                    let ch = ep
                        .connect_timeout(Duration::from_millis(500))
                        .timeout(Duration::from_secs(2))
                        .connect_lazy();
                    Some((m.name.clone(), ManagementClient::new(ch)))
                })
                .collect(),
        )
    }

    /// The cluster status from the first of `names` that answers with the leader's view
    /// (else the last answer), or why none did.
    pub async fn status(&mut self, names: &[String]) -> Result<StatusReply, String> {
        let mut last: Result<StatusReply, String> = Err("no agent answered".into());
        for (name, c) in self.0.iter_mut().filter(|(n, _)| names.contains(n)) {
            match c.status(StatusRequest { local_only: false }).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if r.warning.is_empty() {
                        return Ok(r);
                    }
                    last = Ok(r);
                }
                Err(e) if last.is_err() => last = Err(format!("{name}: {}", e.message())),
                Err(_) => {}
            }
        }
        last
    }
}

/// Waits until `expected` are healthy; `children` are agents this command started (to notice
/// one that exits early and say why). Returns the primary's name.
pub async fn wait_healthy(
    st: &LocalState,
    expected: &[String],
    children: &mut [(String, Child)],
    timeout: Duration,
    progress: &Progress,
) -> Result<String, Failure> {
    let mut clients = Clients::new(st);
    loop {
        for (name, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    st.members.iter().find(|m| &m.name == name).map(|m| m.log.clone()).unwrap_or_default();
                return Err(Failure::failed(format!(
                    "the agent of {name} exited ({status}: {}). Last lines of {}:\n{}\nFix the cause, then \
                     `pgquorumctl local up --dir {dir}` again (or stop the others with `pgquorumctl local down \
                     --dir {dir}`)",
                    exit_meaning(status.code()),
                    log.display(),
                    log_tail(&log, 15),
                    dir = super::state::shell_quote(&st.dir.display().to_string()),
                )));
            }
        }
        let last = match clients.status(expected).await {
            Ok(r) => match assess(&r, expected) {
                Health::Healthy { primary } => {
                    let started: Vec<&str> = children.iter().map(|(n, _)| n.as_str()).collect();
                    match predating(&r, &started, progress.elapsed()) {
                        None => return Ok(primary),
                        Some(why) => why,
                    }
                }
                Health::Waiting(why) => why,
            },
            Err(e) => format!("waiting for the agents to answer ({e})"),
        };
        progress.phase(&last);
        if progress.elapsed() >= timeout {
            let logs: Vec<String> = st.members.iter().map(|m| m.log.display().to_string()).collect();
            // The agents this command started say best why they are not healthy.
            let tails: String = children
                .iter()
                .filter_map(|(name, _)| st.members.iter().find(|m| &m.name == name))
                .map(|m| format!("\nLast lines of {}:\n{}", m.log.display(), log_tail(&m.log, 10)))
                .collect();
            return Err(Failure::failed(format!(
                "the cluster did not become healthy within {}s; last state: {last}. The agents keep running: \
                 see their logs ({}), `pgquorumctl local status --dir {}`, and stop them with \
                 `pgquorumctl local down --dir {}`{tails}",
                timeout.as_secs(),
                logs.join(", "),
                st.dir.display(),
                st.dir.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use pgquorum_proto::management::{HaStatus, MemberStatus, RaftStatus};

    use super::*;

    fn member(name: &str, role: &str, state: &str) -> MemberStatus {
        MemberStatus { name: name.into(), role: role.into(), state: state.into(), ..Default::default() }
    }

    fn reply(primary: &str, members: Vec<MemberStatus>) -> StatusReply {
        StatusReply {
            raft: Some(RaftStatus { leader_name: "m2".into(), ..Default::default() }),
            ha: Some(HaStatus { primary: primary.into(), system_identifier: 7, ..Default::default() }),
            members,
            ..Default::default()
        }
    }

    #[test]
    fn healthy_needs_a_primary_and_every_other_member_streaming() {
        let names: Vec<String> = ["m1", "m2", "m3"].map(String::from).to_vec();
        let ok = reply(
            "m1",
            vec![
                member("m1", "primary", "running"),
                member("m2", "replica", "streaming"),
                member("m3", "replica", "streaming"),
            ],
        );
        assert_eq!(assess(&ok, &names), Health::Healthy { primary: "m1".into() });
        let cloning = reply(
            "m1",
            vec![
                member("m1", "primary", "running"),
                member("m2", "replica", "streaming"),
                member("m3", "cloning", "creating replica"),
            ],
        );
        assert_eq!(assess(&cloning, &names), Health::Waiting("primary m1; m3 creating replica".into()));
        assert_eq!(
            assess(&reply("", vec![]), &names),
            Health::Waiting("choosing a primary".into()),
            "system identifier known, no primary"
        );
        let partial = &names[..2];
        let m3_down = reply(
            "m1",
            vec![
                member("m1", "primary", "running"),
                member("m2", "replica", "streaming"),
                member("m3", "unknown", "unreachable"),
            ],
        );
        assert_eq!(assess(&m3_down, partial), Health::Healthy { primary: "m1".into() });
    }

    #[test]
    fn a_report_older_than_the_start_is_not_the_new_agents() {
        let aged = |age: Option<u64>| {
            let mut m = member("m3", "replica", "streaming");
            m.report_age_ms = age;
            reply("m1", vec![member("m1", "primary", "running"), m])
        };
        let since = Duration::from_millis(800);
        assert_eq!(predating(&aged(Some(300)), &["m3"], since), None);
        let old = predating(&aged(Some(900)), &["m3"], since).expect("from before the start");
        assert!(old.contains("new agent of m3"), "{old}");
        assert!(predating(&aged(None), &["m3"], since).is_some(), "no report yet");
        assert_eq!(predating(&aged(Some(900)), &[], since), None, "nothing started");
    }
}
