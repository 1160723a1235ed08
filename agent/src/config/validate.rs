//! Rules across keys: required keys, timers that must fit together, peers that must include
//! this member. Each message names the keys, the values and what would be accepted.

use super::AgentConfig;
use pgquorum_core::duration::format as fmt_dur;

/// The heartbeat must fit the election timers. openraft refuses one that is not shorter than
/// `election_timeout_min`. A follower starts an election only after `election_timeout_max`
/// (openraft's leader lease) plus its own timeout without hearing from its leader, at least
/// `min + max` of silence; each heartbeat may go out up to one timer slot late
/// (`crate::timer::SLOT`), so two whole gaps must fit in that silence with room to spare: one
/// delayed or lost heartbeat never starts an election.
fn heartbeat_error(r: &crate::raft::RaftSettings) -> Option<String> {
    let gap = r.heartbeat_interval + crate::timer::SLOT;
    let silence = r.election_timeout_min + r.election_timeout_max;
    (r.heartbeat_interval.is_zero() || r.heartbeat_interval >= r.election_timeout_min || gap * 2 >= silence).then(|| {
        format!(
            "raft.heartbeat_interval ({}) must be positive, less than raft.election_timeout_min ({}), and such \
             that two heartbeat gaps (the interval plus the {} a heartbeat may be sent late by) are shorter than the \
             silence after which a follower starts an election (election_timeout_min + \
             election_timeout_max = {}); lower the interval or raise the election timeouts",
            fmt_dur(r.heartbeat_interval),
            fmt_dur(r.election_timeout_min),
            fmt_dur(crate::timer::SLOT),
            fmt_dur(silence)
        )
    })
}

pub(super) fn validate(c: &mut AgentConfig) -> Vec<String> {
    let mut errs = Vec::new();
    if c.name.as_str().is_empty() {
        errs.push(
            "name: required; set it to this member's name, for example name: pg-0 (or PGQUORUM_NAME=pg-0)"
                .into(),
        );
    }
    if c.data_dir.as_os_str().is_empty() {
        errs.push(
            "data_dir: required; set it to a directory this agent owns, for example /var/lib/pgquorum".into(),
        );
    }
    let r = &c.raft;
    if let Some(e) = heartbeat_error(r) {
        errs.push(e);
    }
    if r.election_timeout_min >= r.election_timeout_max {
        errs.push(format!(
            "raft.election_timeout_min ({}) must be less than raft.election_timeout_max ({})",
            fmt_dur(r.election_timeout_min),
            fmt_dur(r.election_timeout_max)
        ));
    }
    if r.snapshot_every < 10 {
        errs.push(format!("raft.snapshot_every ({}) must be at least 10", r.snapshot_every));
    }
    let min_ttl = pgquorum_core::state::min_ttl_for(r.election_timeout_max);
    if c.bootstrap.ttl < min_ttl {
        errs.push(format!(
            "bootstrap.ttl ({}) must be at least 3 × raft.election_timeout_max ({}), so a Raft election \
             never outlasts the primary's lease; raise bootstrap.ttl or lower the election timeout",
            fmt_dur(c.bootstrap.ttl),
            fmt_dur(r.election_timeout_max)
        ));
    }
    if let Err(e) = c.bootstrap.validate() {
        errs.extend(e.into_iter().map(|m| format!("bootstrap.{m}")));
    }
    if c.log_json && c.log_level.is_empty() {
        errs.push("log.level: must not be empty".into());
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&c.log_level) {
        errs.push(format!("log.level ({:?}) is not a valid filter: {e}", c.log_level));
    }
    expand_statefulset(c, &mut errs);
    check_peers(c, &mut errs);
    super::keys_http::resolve(c, &mut errs);
    super::keys_security::resolve(c, &mut errs);
    super::keys_archive::resolve(c, &mut errs);
    super::keys_restore::resolve(c, &mut errs);
    check_postgres(c, &mut errs);
    c.kube.cluster = c.cluster.clone();
    errs.extend(c.kube.check());
    errs
}

fn check_postgres(c: &mut AgentConfig, errs: &mut Vec<String>) {
    if c.loop_interval < std::time::Duration::from_millis(10) || c.loop_interval * 5 > c.bootstrap.ttl {
        errs.push(format!(
            "ha.loop_interval ({}) must be at least 10ms and at most a fifth of bootstrap.ttl ({})",
            fmt_dur(c.loop_interval),
            fmt_dur(c.bootstrap.ttl)
        ));
    }
    if c.status_interval < c.loop_interval || c.status_interval > std::time::Duration::from_secs(10) {
        errs.push(format!(
            "ha.status_interval ({}) must be at least ha.loop_interval ({}) and at most 10s: it is how often a \
             quiet member reads its Postgres's status",
            fmt_dur(c.status_interval),
            fmt_dur(c.loop_interval)
        ));
    }
    if !c.pg.enabled {
        return;
    }
    if c.pg.advertise.is_empty() {
        let (host, _) = c.pg.listen_parts();
        if host == "*" || host == "0.0.0.0" || host == "::" || host.contains(',') || host.is_empty() {
            errs.push(format!(
                "postgres.advertise: required when postgres.listen ({}) is not a single address; set the host:port \
                 other members and clients reach this Postgres at",
                c.pg.listen
            ));
        } else {
            c.pg.advertise = c.pg.listen.clone();
        }
    }
    let superuser = c.pg.superuser.resolve("postgres.superuser");
    let replication = c.pg.replication.resolve("postgres.replication");
    let application = if c.pg.application.username.is_empty() {
        Ok(None)
    } else {
        c.pg.application.resolve("postgres.application").map(Some)
    };
    match (superuser, replication, application) {
        (Ok(s), Ok(r), Ok(a)) => {
            c.secrets = Some(super::Secrets { superuser: s, replication: r, application: a })
        }
        (s, r, a) => {
            errs.extend(s.err());
            errs.extend(r.err());
            errs.extend(a.err());
        }
    }
    if c.pg.superuser.username == c.pg.replication.username {
        errs.push("postgres.replication.username must differ from postgres.superuser.username".into());
    }
}

fn expand_statefulset(c: &mut AgentConfig, errs: &mut Vec<String>) {
    if c.statefulset_replicas == 0 {
        return;
    }
    if !c.peers.is_empty() {
        errs.push("peers and statefulset.replicas are both set; use one of them".into());
        return;
    }
    if c.statefulset_domain.is_empty() {
        errs.push(
            "statefulset.domain: required with statefulset.replicas (the headless Service's domain)".into(),
        );
        return;
    }
    let Some((base, ordinal)) = c.name.as_str().rsplit_once('-') else {
        errs.push(format!(
            "name ({}) must end in -<ordinal> (like pg-0) when statefulset.replicas is set",
            c.name
        ));
        return;
    };
    match ordinal.parse::<usize>() {
        Ok(o) if o < c.statefulset_replicas => {}
        _ => {
            errs.push(format!(
                "name ({}) must end in an ordinal below statefulset.replicas ({})",
                c.name, c.statefulset_replicas
            ));
            return;
        }
    }
    for i in 0..c.statefulset_replicas {
        let member = format!("{base}-{i}");
        match pgquorum_core::MemberName::new(member.clone()) {
            Ok(m) => c.peers.push((m, format!("{member}.{}:{}", c.statefulset_domain, c.statefulset_port))),
            Err(e) => errs.push(format!("statefulset: {e}")),
        }
    }
}

fn check_peers(c: &mut AgentConfig, errs: &mut Vec<String>) {
    let mut seen = std::collections::BTreeSet::new();
    let mut addresses: std::collections::BTreeMap<&str, &pgquorum_core::MemberName> =
        std::collections::BTreeMap::new();
    for (name, address) in &c.peers {
        if !seen.insert(name.clone()) {
            errs.push(format!("peers: {name} is listed twice"));
        } else if let Some(first) = addresses.insert(address.as_str(), name) {
            errs.push(format!(
                "peers: {first} and {name} have the same address {address}; every member needs its own \
                 host:port (one agent cannot answer for two members)"
            ));
        }
    }
    let own = c.peers.iter().find(|(n, _)| *n == c.name).map(|(_, a)| a.clone());
    if !c.peers.is_empty() && own.is_none() && !c.name.as_str().is_empty() {
        let names: Vec<String> = c.peers.iter().map(|(n, _)| n.to_string()).collect();
        errs.push(format!(
            "peers ({}) must include this member ({}): list every initial member, this one too, with the \
             same list on every member",
            names.join(", "),
            c.name
        ));
    }
    if c.grpc_advertise.is_empty() {
        c.grpc_advertise = match own {
            Some(a) => a,
            None => {
                let wildcard = c.grpc_listen.starts_with("0.0.0.0:") || c.grpc_listen.starts_with("[::]:");
                if wildcard {
                    errs.push(format!(
                        "grpc.advertise: required when grpc.listen ({}) is a wildcard address and peers does not \
                         list this member; set it to the address other members reach this one at",
                        c.grpc_listen
                    ));
                }
                c.grpc_listen.clone()
            }
        };
    } else if let Some(a) = own
        && a != c.grpc_advertise
    {
        errs.push(format!(
            "grpc.advertise ({}) differs from this member's entry in peers ({a}); make them equal or drop grpc.advertise",
            c.grpc_advertise
        ));
    }
}
