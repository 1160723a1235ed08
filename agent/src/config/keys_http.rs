//! Configuration keys of the HTTP endpoint (Patroni-compatible health checks, JSON status,
//! Prometheus metrics), and how its advertised address defaults.
//!
//! Must not start anything; the daemon binds `http.listen` and serves it.

use super::AgentConfig;
use super::keys::KeyDef;

fn hostport(key: &str, v: &str) -> Result<String, String> {
    let v = v.trim();
    match v.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => Ok(v.to_string()),
        _ => Err(format!("{key}: {v:?} is not host:port (for example 0.0.0.0:8008); empty disables HTTP")),
    }
}

/// Keys under `http.`.
pub const HTTP_KEYS: &[KeyDef] = &[
    KeyDef {
        key: "http.listen",
        default: "0.0.0.0:8008",
        help: "Address the HTTP endpoint (health checks such as /primary and /replica, /patroni, /cluster, \
               /metrics) listens on. Empty disables it.",
        set: |c, k, v| {
            c.http_listen = if v.trim().is_empty() { String::new() } else { hostport(k, v)? };
            Ok(())
        },
    },
    KeyDef {
        key: "http.advertise",
        default: "",
        help: "host:port other members and tools use to reach this agent's HTTP endpoint (its api_url is \
               http://<this>). Empty: http.listen when that is not a wildcard address, else the host of \
               grpc.advertise with the port of http.listen.",
        set: |c, k, v| {
            c.http_advertise = if v.trim().is_empty() { String::new() } else { hostport(k, v)? };
            Ok(())
        },
    },
];

fn is_wildcard(host: &str) -> bool {
    matches!(host, "0.0.0.0" | "[::]" | "::" | "*" | "")
}

/// Fills in `http.advertise` once the gRPC address is known; reports contradictory settings.
pub(super) fn resolve(c: &mut AgentConfig, errs: &mut Vec<String>) {
    if c.http_listen.is_empty() {
        if !c.http_advertise.is_empty() {
            errs.push(format!(
                "http.advertise ({}) is set but http.listen is empty (HTTP disabled); set http.listen or drop \
                 http.advertise",
                c.http_advertise
            ));
        }
        return;
    }
    if !c.http_advertise.is_empty() {
        return;
    }
    let (host, port) = c.http_listen.rsplit_once(':').expect("http.listen was checked to be host:port");
    c.http_advertise = if !is_wildcard(host) {
        c.http_listen.clone()
    } else {
        match c.grpc_advertise.rsplit_once(':') {
            Some((grpc_host, _)) if !is_wildcard(grpc_host) => format!("{grpc_host}:{port}"),
            _ => String::new(),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::super::AgentConfig;

    fn load(flags: &[&str]) -> Result<AgentConfig, String> {
        let mut all = vec!["name=pg-0", "data_dir=/tmp/pgq-http", "postgres.enabled=false"];
        all.extend_from_slice(flags);
        let flags: Vec<String> = all.into_iter().map(String::from).collect();
        AgentConfig::load(None, Vec::new(), &flags).map(|(c, _)| c).map_err(|e| e.to_string())
    }

    #[test]
    fn http_advertise_defaults_to_listen_or_the_grpc_host_with_the_http_port() {
        let c = load(&["grpc.listen=10.0.0.5:7000"]).expect("valid");
        assert_eq!((c.http_listen.as_str(), c.http_advertise.as_str()), ("0.0.0.0:8008", "10.0.0.5:8008"));
        let c = load(&["grpc.listen=10.0.0.5:7000", "http.listen=127.0.0.1:9000"]).expect("valid");
        assert_eq!(c.http_advertise, "127.0.0.1:9000");
        let c = load(&["grpc.listen=10.0.0.5:7000", "http.advertise=pg-0.example:8008"]).expect("valid");
        assert_eq!(c.http_advertise, "pg-0.example:8008");
    }

    #[test]
    fn empty_listen_disables_http_and_bad_addresses_are_refused() {
        let c = load(&["grpc.listen=10.0.0.5:7000", "http.listen="]).expect("valid");
        assert_eq!((c.http_listen.as_str(), c.http_advertise.as_str()), ("", ""));
        let err = load(&["grpc.listen=10.0.0.5:7000", "http.listen=8008"]).expect_err("no host");
        assert!(err.contains("http.listen: \"8008\" is not host:port"), "{err}");
        let err =
            load(&["grpc.listen=10.0.0.5:7000", "http.listen=", "http.advertise=h:1"]).expect_err("conflict");
        assert!(err.contains("http.advertise (h:1) is set but http.listen is empty"), "{err}");
    }
}
