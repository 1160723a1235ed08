//! Forming a new Raft group, or joining an existing one.
//!
//! Rule: the cluster is initialised exactly once, by the initial member whose name sorts first,
//! and only after every initial member has answered that it is not part of any cluster yet; it
//! initialises with all of them as voters. An agent that finds an initialised cluster asks to
//! join it. An agent whose data is already initialised does nothing here. Owns only this rule;
//! the membership change itself is `members.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use pgquorum_core::MemberName;
use pgquorum_core::state::MemberNode;
use pgquorum_proto::peer::{HelloReply, HelloRequest};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Cluster;

/// Runs until this agent belongs to an initialised Raft group (or `cancel`).
pub async fn form_or_join(
    cluster: Cluster,
    initial: Vec<(MemberName, String)>,
    auto_join: bool,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let me = cluster.me.clone();
    let bootstrapper = initial.iter().map(|(n, _)| n).min().cloned();
    let mut last_report = Instant::now() - Duration::from_secs(60);
    // The last certificate refusal each member's hello met since the last report: a refused
    // handshake shows up as the alert in one round and as a closed connection in the next.
    let mut refused: BTreeMap<MemberName, String> = BTreeMap::new();
    loop {
        if cluster.node.raft.is_initialized().await? {
            if cluster.membership().nodes.contains_key(&cluster.node.ident.node_id)
                || cluster.leader().is_some()
            {
                return Ok(());
            }
            // Initialised, but membership not known yet (first heartbeat pending): wait briefly.
            if wait_or_cancelled(&cancel, Duration::from_millis(200)).await {
                return Ok(());
            }
            continue;
        }
        let hellos = hello_all(&cluster, &initial).await;
        for (name, res) in &hellos {
            if let Err(e) = res
                && is_tls_refusal(e)
            {
                refused.insert(name.clone(), e.clone());
            }
        }
        if let Some((via, reply)) =
            hellos.iter().find_map(|(n, r)| r.as_ref().ok().filter(|r| r.initialized).map(|r| (n, r)))
        {
            if !reply.cluster_id.is_empty() && cluster.node.ident.cluster_name.as_ref() != reply.cluster_name
            {
                anyhow::bail!(
                    "peer {via} belongs to cluster {:?}, not {:?}",
                    reply.cluster_name,
                    cluster.node.ident.cluster_name
                );
            }
            if !auto_join {
                if last_report.elapsed() >= Duration::from_secs(10) {
                    tracing::info!(
                        "waiting to be added to the cluster (join: manual): run `pgquorumctl member add {} {}`",
                        me.name,
                        me.grpc
                    );
                    last_report = Instant::now();
                }
                if wait_or_cancelled(&cancel, Duration::from_millis(300)).await {
                    return Ok(());
                }
                continue;
            }
            let addr = if reply.leader_address.is_empty() {
                initial.iter().find(|(n, _)| n == via).map(|(_, a)| a.clone()).unwrap_or_default()
            } else {
                reply.leader_address.clone()
            };
            tracing::info!("cluster already initialised; asking {via} to let {} join", me.name);
            match cluster.join_via(&addr, cluster.node.ident.node_id, &me).await {
                Ok(()) => tracing::info!("{} was added to the cluster", me.name),
                Err(e) if e.starts_with("refused:") => anyhow::bail!("joining the cluster {e}"),
                Err(e) => tracing::warn!("joining the cluster failed, will retry: {e}"),
            }
        } else if bootstrapper.as_ref() == Some(&me.name) {
            let missing: Vec<String> =
                hellos.iter().filter(|(_, r)| r.is_err()).map(|(n, _)| n.to_string()).collect();
            if missing.is_empty() {
                let mut members = BTreeMap::new();
                members.insert(cluster.node.ident.node_id, (*me).clone());
                for (name, reply) in &hellos {
                    let reply = reply.as_ref().expect("no member is missing");
                    let addr =
                        initial.iter().find(|(n, _)| n == name).map(|(_, a)| a.clone()).unwrap_or_default();
                    // Its own view of its addresses (HTTP, Postgres); the gRPC address is the
                    // one in peers, which is how every member reaches it.
                    let own = serde_json::from_slice::<MemberNode>(&reply.node)
                        .ok()
                        .filter(|n| n.name == *name)
                        .unwrap_or_default();
                    members.insert(
                        reply.node_id,
                        MemberNode { name: name.clone(), grpc: addr, http: own.http, postgres: own.postgres },
                    );
                }
                let names: Vec<String> = members.values().map(|n| n.name.to_string()).collect();
                tracing::info!("initialising the cluster with members {}", names.join(", "));
                match cluster.node.raft.initialize(members).await {
                    Ok(()) => {}
                    Err(e) => tracing::warn!("initialisation did not happen: {e}"),
                }
                continue;
            } else if last_report.elapsed() >= Duration::from_secs(10) {
                tracing::info!(
                    "waiting for {} to answer before initialising the cluster (every initial member must be up): {}",
                    missing.join(", "),
                    unanswered(&hellos, &std::mem::take(&mut refused))
                );
                last_report = Instant::now();
            }
        } else if last_report.elapsed() >= Duration::from_secs(10) {
            let why = unanswered(&hellos, &std::mem::take(&mut refused));
            tracing::info!(
                "waiting for {} to initialise the cluster{}",
                bootstrapper.as_ref().map_or("-".into(), |b| b.to_string()),
                if why.is_empty() { String::new() } else { format!("; no answer from {why}") }
            );
            last_report = Instant::now();
        }
        if wait_or_cancelled(&cancel, Duration::from_millis(300)).await {
            return Ok(());
        }
    }
}

/// TLS failures as rustls words them: the other side refused our certificate (an alert), or we
/// refused theirs.
const TLS_REFUSALS: &[&str] =
    &["UnknownCA", "BadCertificate", "CertificateRequired", "invalid peer certificate"];

/// Whether a hello's error is a TLS handshake that failed over a certificate.
fn is_tls_refusal(e: &str) -> bool {
    TLS_REFUSALS.iter().any(|t| e.contains(t))
}

/// The members that did not answer, each with why (and the certificate refusal it met since
/// the last report, `refused`, when this round's error does not say), and what to check when
/// it was TLS.
fn unanswered(
    hellos: &[(MemberName, Result<HelloReply, String>)],
    refused: &BTreeMap<MemberName, String>,
) -> String {
    let errors: Vec<(&MemberName, String)> = hellos
        .iter()
        .filter_map(|(n, r)| {
            let e = r.as_ref().err()?;
            match refused.get(n).filter(|_| !is_tls_refusal(e)) {
                Some(earlier) => Some((n, format!("{e}; before that: {earlier}"))),
                None => Some((n, e.clone())),
            }
        })
        .collect();
    let mut text = errors.iter().map(|(n, e)| format!("{n} ({e})")).collect::<Vec<_>>().join(", ");
    if errors.iter().any(|(_, e)| is_tls_refusal(e)) {
        text.push_str(
            ". The TLS handshake failed over a certificate: every member's tls.cert_file must be signed by the \
             CA in every member's tls.ca_file",
        );
    }
    text
}

async fn wait_or_cancelled(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// Says hello to every other initial member, concurrently, with a short deadline each.
pub(super) async fn hello_all(
    cluster: &Cluster,
    initial: &[(MemberName, String)],
) -> Vec<(MemberName, Result<HelloReply, String>)> {
    let me = &cluster.me.name;
    let calls = initial.iter().filter(|(n, _)| n != me).map(|(name, addr)| async move {
        let res = async {
            let mut client = cluster.peer_client(addr)?;
            let mut req = tonic::Request::new(HelloRequest {
                cluster_name: cluster.node.ident.cluster_name.to_string(),
                from_member: me.to_string(),
            });
            req.set_timeout(Duration::from_secs(1));
            let reply = client.hello(req).await.map_err(|s| crate::raft::status_text(&s))?.into_inner();
            if reply.member != name.as_str() {
                return Err(format!("{addr} answered as member {:?}, not {name}: check peers", reply.member));
            }
            Ok(reply)
        }
        .await;
        (name.clone(), res)
    });
    futures::future::join_all(calls).await
}

/// On the leader, records the cluster's initialisation (`InitCluster`) if nobody has yet. Runs
/// until the applied state has a cluster id. Any leader may do it; a second proposal is refused
/// harmlessly, so an initialiser that crashed midway is covered by the next leader.
pub async fn seed_cluster_state(
    cluster: Cluster,
    config: pgquorum_core::state::DynamicConfig,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut applied = cluster.node.sm.subscribe();
    loop {
        if applied.borrow_and_update().state.cluster_id.is_some() {
            return Ok(());
        }
        if cluster.is_leader() {
            let cluster_id = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
            let at = pgquorum_core::UnixMillis(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            );
            let cmd = pgquorum_core::state::Command::InitCluster {
                cluster_id: cluster_id.clone(),
                config: config.clone(),
                at,
            };
            match cluster.propose(cmd).await {
                Ok((Ok(_), _)) => tracing::info!("cluster initialised with id {cluster_id}"),
                Ok((Err(e), _)) => tracing::debug!("initialisation not recorded: {e}"),
                Err(e) => tracing::debug!("initialisation not recorded yet: {e}"),
            }
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = applied.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> MemberName {
        MemberName::new(n).expect("name")
    }

    #[test]
    fn a_certificate_refusal_met_earlier_is_still_named_when_the_last_error_is_a_closed_connection() {
        let hellos = vec![(name("m1"), Err::<HelloReply, _>("transport error: broken pipe".to_string()))];
        let plain = unanswered(&hellos, &BTreeMap::new());
        assert_eq!(plain, "m1 (transport error: broken pipe)", "nothing more is known");
        let refused = BTreeMap::from([(name("m1"), "received fatal alert: UnknownCA".to_string())]);
        let told = unanswered(&hellos, &refused);
        assert!(told.contains("broken pipe; before that: received fatal alert: UnknownCA"), "{told}");
        assert!(told.contains("must be signed by the CA in every member's tls.ca_file"), "{told}");
        let now =
            vec![(name("m1"), Err::<HelloReply, _>("received fatal alert: BadCertificate".to_string()))];
        assert!(!unanswered(&now, &refused).contains("before that"), "this round's refusal says it already");
    }
}
