//! The local cluster's record, `DIR/local.json`: members, ports, paths and the PIDs of the
//! agents `local` started. Every `local` subcommand reads it; `up`, `start`, `kill` and `down`
//! rewrite it (atomically, through a temporary file).
//!
//! Owns the directory layout under DIR and the port layout. Must not start or signal anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Failure;

/// File name of the record inside DIR.
pub const STATE_FILE: &str = "local.json";
/// Cluster name every local cluster uses.
pub const CLUSTER: &str = "local";
/// Offset of the gRPC ports from the Postgres ports.
pub const GRPC_OFFSET: u16 = 100;
/// Offset of the HTTP ports from the Postgres ports.
pub const HTTP_OFFSET: u16 = 200;
/// Most members a local cluster can have (the port ranges are 100 apart).
pub const MAX_MEMBERS: usize = 99;

/// The record of one local cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalState {
    /// Format version of this file.
    pub version: u32,
    /// Cluster name given to every agent.
    pub cluster: String,
    /// The cluster's directory (absolute).
    pub dir: PathBuf,
    /// First Postgres port; see `Ports::for_member`.
    pub base_port: u16,
    /// Durability mode the cluster was bootstrapped with (later changes live in Raft).
    pub durability: String,
    /// OS user the agents run as when `local` runs as root; `None`: the invoking user.
    pub run_as: Option<String>,
    /// libpq password file for the invoking user.
    pub pgpass: PathBuf,
    /// The cluster's token (0600): the agents' `auth.token_file`, and what pgquorumctl sends
    /// through `PGQUORUM_TOKEN_FILE`. `None` for a cluster made before tokens existed.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The WAL archive and base backups (`archive.dir`, shared by every member). `None` for a
    /// cluster made before `local` archived.
    #[serde(default)]
    pub archive: Option<PathBuf>,
    /// `restore.*` keys the first member bootstraps from (`local up --from-backup`).
    #[serde(default)]
    pub restore: Vec<(String, String)>,
    /// Members in order.
    pub members: Vec<MemberState>,
}

/// One member's ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// Postgres (`postgres.listen`).
    pub postgres: u16,
    /// The agent's gRPC endpoint (`grpc.listen`: Raft, peers, management).
    pub grpc: u16,
    /// The agent's HTTP endpoint (`http.listen`); `None` when the agent has no such key.
    pub http: Option<u16>,
}

impl Ports {
    /// Member `i`'s (0-based) ports: Postgres base+i, gRPC base+100+i, HTTP base+200+i.
    pub fn for_member(base: u16, i: usize, http: bool) -> Ports {
        let i = u16::try_from(i).expect("member index checked against MAX_MEMBERS");
        Ports {
            postgres: base + i,
            grpc: base + GRPC_OFFSET + i,
            http: http.then_some(base + HTTP_OFFSET + i),
        }
    }

    /// Every port with what it is for.
    pub fn named(&self) -> Vec<(u16, &'static str)> {
        let mut v = vec![(self.postgres, "Postgres"), (self.grpc, "gRPC")];
        v.extend(self.http.map(|p| (p, "HTTP")));
        v
    }
}

/// Checks that `base` leaves room for `members` members; the error says what would work.
pub fn check_base_port(base: u16, members: usize) -> Result<(), Failure> {
    if members == 0 || members > MAX_MEMBERS {
        return Err(Failure::usage(format!("--members {members}: choose 1 to {MAX_MEMBERS}")));
    }
    let highest = u32::from(base) + u32::from(HTTP_OFFSET) + members as u32 - 1;
    if base < 1024 || highest > 65535 {
        return Err(Failure::usage(format!(
            "--base-port {base}: the layout uses ports {base} to {highest}; choose a base from 1024 to {}",
            65535 - u32::from(HTTP_OFFSET) - members as u32 + 1
        )));
    }
    Ok(())
}

/// One member of the local cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberState {
    /// Member name (m1, m2, ...).
    pub name: String,
    /// Its ports.
    pub ports: Ports,
    /// The agent's configuration file.
    pub config: PathBuf,
    /// The agent's `data_dir` (Raft state; Postgres data below it).
    pub data_dir: PathBuf,
    /// The Postgres data directory (`<data_dir>/pgdata`).
    pub pgdata: PathBuf,
    /// Where the agent's stdout and stderr go.
    pub log: PathBuf,
    /// PID of the agent `local` last started; `None` after `down` or `kill`.
    pub agent_pid: Option<u32>,
    /// Address its servers listen on: 127.0.0.1, or its network namespace's address.
    #[serde(default = "loopback")]
    pub host: String,
    /// Network namespace its agent runs in (clusters `chaos run` starts as root, so that
    /// partitions are real); `None`: this machine's network.
    #[serde(default)]
    pub netns: Option<String>,
}

fn loopback() -> String {
    "127.0.0.1".into()
}

impl MemberState {
    /// The member's gRPC endpoint as host:port.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.ports.grpc)
    }
}

/// Paths of the shared files under DIR.
pub struct Layout {
    /// DIR itself.
    pub dir: PathBuf,
}

impl Layout {
    /// `DIR/archive`: the WAL archive and base backups.
    pub fn archive(&self) -> PathBuf {
        self.dir.join("archive")
    }
    /// `DIR/secrets`: password and token files the agents read (0700).
    pub fn secrets(&self) -> PathBuf {
        self.dir.join("secrets")
    }
    /// `DIR/secrets/token`: the cluster's token.
    pub fn token(&self) -> PathBuf {
        self.secrets().join("token")
    }
    /// `DIR/bin`: where the agent binary is linked when the agents run as another user.
    pub fn bin(&self) -> PathBuf {
        self.dir.join("bin")
    }
    /// `DIR/pgpass`: the invoking user's libpq password file.
    pub fn pgpass(&self) -> PathBuf {
        self.dir.join("pgpass")
    }
    /// Member `name`'s record (paths only; no PID).
    pub fn member(&self, name: &str, ports: Ports) -> MemberState {
        let data_dir = self.dir.join(name);
        MemberState {
            name: name.to_string(),
            ports,
            config: self.dir.join(format!("{name}.toml")),
            pgdata: data_dir.join("pgdata"),
            data_dir,
            log: self.dir.join(format!("{name}.log")),
            agent_pid: None,
            host: loopback(),
            netns: None,
        }
    }
}

impl LocalState {
    /// Reads `DIR/local.json`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<LocalState>, Failure> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Failure::failed(format!("cannot read {}: {e}", path.display()))),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Failure::failed(format!(
                "{} is damaged ({e}); without it `local` cannot find the agents it started: stop them \
                 by PID, then remove the directory to start over",
                path.display()
            ))
        })
    }

    /// Reads `DIR/local.json`, or fails saying how to create a cluster there.
    pub fn require(dir: &Path) -> Result<LocalState, Failure> {
        LocalState::load(dir)?.ok_or_else(|| {
            Failure::failed(format!(
                "no local cluster in {}: {STATE_FILE} not found; start one with `pgquorumctl local up --dir {}`",
                dir.display(),
                dir.display()
            ))
        })
    }

    /// Writes `DIR/local.json` atomically.
    pub fn save(&self) -> Result<(), Failure> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!(".{STATE_FILE}.{}", std::process::id()));
        let text = serde_json::to_string_pretty(self).expect("serialisable");
        std::fs::write(&tmp, text + "\n")
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Failure::failed(format!("cannot write {}: {e}", path.display())))
    }

    /// The member called `name`, or a usage error listing the members.
    pub fn member_index(&self, name: &str) -> Result<usize, Failure> {
        self.members.iter().position(|m| m.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
            Failure::usage(format!(
                "no member {name:?} in {}; members: {}",
                self.dir.display(),
                names.join(", ")
            ))
        })
    }

    /// The psql command line that connects to whichever member is primary.
    pub fn psql_command(&self) -> String {
        let hosts: Vec<String> =
            self.members.iter().map(|m| format!("{}:{}", m.host, m.ports.postgres)).collect();
        let url =
            format!("postgresql://postgres@{}/postgres?target_session_attrs=read-write", hosts.join(","));
        format!("PGPASSFILE={} psql {}", shell_quote(&self.pgpass.display().to_string()), shell_quote(&url))
    }

    /// The value to export as PGQUORUM_ENDPOINT (the first member; any agent forwards).
    pub fn endpoint(&self) -> String {
        self.members.first().map(MemberState::endpoint).unwrap_or_default()
    }
}

/// Quotes `s` for a POSIX shell when it holds anything but safe characters.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+=:@,%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
impl LocalState {
    /// A protection-mode cluster of `n` members under /tmp/x, no token, for unit tests.
    pub(crate) fn for_tests(n: usize, with_http: bool) -> LocalState {
        let layout = Layout { dir: PathBuf::from("/tmp/x") };
        LocalState {
            version: 1,
            cluster: CLUSTER.into(),
            dir: layout.dir.clone(),
            base_port: 15432,
            durability: "protection".into(),
            run_as: None,
            pgpass: layout.pgpass(),
            token_file: None,
            archive: None,
            restore: Vec::new(),
            members: (0..n)
                .map(|i| layout.member(&format!("m{}", i + 1), Ports::for_member(15432, i, with_http)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_laid_out_from_the_base() {
        let p = Ports::for_member(15432, 2, true);
        assert_eq!((p.postgres, p.grpc, p.http), (15434, 15534, Some(15634)));
        assert_eq!(Ports::for_member(15432, 0, false).http, None);
        assert!(check_base_port(65400, 3).is_err());
        assert!(check_base_port(65333, 3).is_ok());
        assert!(check_base_port(80, 3).is_err());
        assert!(check_base_port(15432, 3).is_ok());
        assert_eq!(check_base_port(15432, 0).err().map(|f| f.code), Some(2));
    }

    #[test]
    fn shell_quoting_leaves_plain_words_alone() {
        assert_eq!(shell_quote("/tmp/a-b"), "/tmp/a-b");
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("postgresql://u@h:1,h:2/db?x=y"), "'postgresql://u@h:1,h:2/db?x=y'");
    }
}
