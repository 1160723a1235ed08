//! Creating a local cluster's files under DIR: random passwords and the cluster's token (0600,
//! read by the agents), one TOML configuration per member, the invoking user's libpq password file, and, when the
//! agents run as another user, a link to the agent binary they can reach.
//!
//! Owns file contents and modes; must not start processes. Nothing is written outside DIR.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::prereq::RunAs;
use super::state::{CLUSTER, Layout, LocalState, MemberState};
use crate::Failure;

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Failure {
    let msg = format!("cannot {what} {}", path.display());
    move |e| Failure::failed(format!("{msg}: {e}"))
}

/// A random password of 32 letters and digits (safe in pgpass and connection strings).
pub fn random_password() -> Result<String, Failure> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Failure::failed(format!("cannot read /dev/urandom for a password: {e}")))?;
    // 248 is the largest multiple of 62 below 256: rejecting above it keeps the choice uniform.
    let pw: String =
        bytes.iter().filter(|b| **b < 248).take(32).map(|b| ALPHABET[*b as usize % 62] as char).collect();
    if pw.len() < 32 {
        return random_password();
    }
    Ok(pw)
}

/// Writes `text` to a new file with `mode`, owned by `owner` when given.
pub fn write_file(path: &Path, text: &str, mode: u32, owner: Option<&RunAs>) -> Result<(), Failure> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io("create", path))?;
    f.write_all(text.as_bytes()).map_err(io("write", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", path))?;
    chown(path, owner)
}

/// Gives `path` to `owner` (no-op when `None`).
pub fn chown(path: &Path, owner: Option<&RunAs>) -> Result<(), Failure> {
    match owner {
        Some(u) => std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid)).map_err(io("chown", path)),
        None => Ok(()),
    }
}

/// Creates directory `path` with `mode`, owned by `owner`.
pub fn make_dir(path: &Path, mode: u32, owner: Option<&RunAs>) -> Result<(), Failure> {
    std::fs::create_dir_all(path).map_err(io("create directory", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", path))?;
    chown(path, owner)
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The configuration file of member `m` (dotted TOML keys, one per line).
pub fn config_text(st: &LocalState, m: &MemberState, layout: &Layout) -> String {
    let peers: Vec<String> =
        st.members.iter().map(|p| toml_str(&format!("{}={}", p.name, p.endpoint()))).collect();
    let secrets = layout.secrets();
    let mut lines = vec![
        format!("# pgquorum local cluster member {} (written by `pgquorumctl local up`)", m.name),
        format!("name = {}", toml_str(&m.name)),
        format!("cluster = {}", toml_str(CLUSTER)),
        format!("data_dir = {}", toml_str(&m.data_dir.display().to_string())),
        format!("peers = [{}]", peers.join(", ")),
        format!("grpc.listen = {}", toml_str(&m.endpoint())),
        format!("postgres.listen = {}", toml_str(&format!("{}:{}", m.host, m.ports.postgres))),
        format!(
            "postgres.superuser.password_file = {}",
            toml_str(&secrets.join("superuser.password").display().to_string())
        ),
        format!(
            "postgres.replication.password_file = {}",
            toml_str(&secrets.join("replication.password").display().to_string())
        ),
        format!("bootstrap.durability = {}", toml_str(&st.durability)),
    ];
    if let Some(token) = &st.token_file {
        lines.push(format!("auth.token_file = {}", toml_str(&token.display().to_string())));
    }
    if let Some(http) = m.ports.http {
        lines.push(format!("http.listen = {}", toml_str(&format!("{}:{http}", m.host))));
    }
    if let Some(archive) = &st.archive {
        lines.push("archive.enabled = true".into());
        lines.push(format!("archive.dir = {}", toml_str(&archive.display().to_string())));
    }
    for (k, v) in &st.restore {
        lines.push(format!("{k} = {}", toml_str(v)));
    }
    lines.join("\n") + "\n"
}

/// Writes everything a new cluster needs under DIR (which exists and belongs to `owner`).
pub fn create(st: &LocalState, layout: &Layout, owner: Option<&RunAs>) -> Result<(), Failure> {
    make_dir(&layout.secrets(), 0o700, owner)?;
    let superuser = random_password()?;
    let replication = random_password()?;
    write_file(&layout.secrets().join("superuser.password"), &format!("{superuser}\n"), 0o600, owner)?;
    write_file(&layout.secrets().join("replication.password"), &format!("{replication}\n"), 0o600, owner)?;
    if let Some(token) = &st.token_file {
        // Changes through pgquorumctl and HTTP need it, even on loopback (docs/security.md).
        write_file(token, &format!("{}\n", random_password()?), 0o600, owner)?;
    }
    // The invoking user's password file: it runs psql, so it keeps ownership.
    let mut hosts: Vec<&str> = st.members.iter().map(|m| m.host.as_str()).collect();
    hosts.dedup();
    let lines: String = hosts.iter().map(|h| format!("{h}:*:*:postgres:{superuser}\n")).collect();
    write_file(&st.pgpass, &lines, 0o600, None)?;
    if let Some(archive) = &st.archive {
        make_dir(archive, 0o700, owner)?;
    }
    for m in &st.members {
        make_dir(&m.data_dir, 0o700, owner)?;
        write_file(&m.config, &config_text(st, m, layout), 0o644, owner)?;
    }
    Ok(())
}

/// Opens (creating) a member's log for appending, owned by `owner`.
pub fn open_log(path: &Path, owner: Option<&RunAs>) -> Result<std::fs::File, Failure> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .map_err(io("open", path))?;
    chown(path, owner)?;
    Ok(f)
}

/// The agent binary the agents start from: `agent` itself for the invoking user; for another
/// user a hard link (or copy) in DIR/bin, refreshed from `agent` every time.
pub fn agent_for(agent: &Path, layout: &Layout, owner: Option<&RunAs>) -> Result<PathBuf, Failure> {
    if owner.is_none() {
        return Ok(agent.to_path_buf());
    }
    let bin = layout.bin();
    make_dir(&bin, 0o755, None)?;
    // The agent starts its small fence guard from its own directory: it goes along.
    let guard = agent.with_file_name("pgquorum-fence-guard");
    if guard.is_file() {
        place(&guard, &bin)?;
    }
    place(agent, &bin)
}

/// Hard-links (or copies) the binary `src` into `bin`, replacing what is there.
fn place(src: &Path, bin: &Path) -> Result<PathBuf, Failure> {
    let name = src.file_name().and_then(|n| n.to_str()).unwrap_or("binary");
    let target = bin.join(name);
    let tmp = bin.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(src, &tmp).is_err() {
        std::fs::copy(src, &tmp).map_err(io("copy the binary to", &tmp))?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(io("chmod", &tmp))?;
    std::fs::rename(&tmp, &target).map_err(io("rename to", &target))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_32_letters_or_digits_and_differ() {
        let (a, b) = (random_password().expect("pw"), random_password().expect("pw"));
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn config_lists_every_peer_and_sets_http_only_when_the_agent_has_it() {
        use super::super::state::Ports;
        let layout = Layout { dir: PathBuf::from("/tmp/x") };
        let mut st = LocalState::for_tests(3, false);
        let text = config_text(&st, &st.members[1], &layout);
        assert!(
            text.contains(r#"peers = ["m1=127.0.0.1:15532", "m2=127.0.0.1:15533", "m3=127.0.0.1:15534"]"#),
            "{text}"
        );
        assert!(text.contains(r#"grpc.listen = "127.0.0.1:15533""#), "{text}");
        assert!(text.contains(r#"postgres.listen = "127.0.0.1:15433""#), "{text}");
        assert!(text.contains(r#"data_dir = "/tmp/x/m2""#), "{text}");
        assert!(text.contains(r#"postgres.superuser.password_file = "/tmp/x/secrets/superuser.password""#));
        assert!(text.contains(r#"bootstrap.durability = "protection""#), "{text}");
        assert!(!text.contains("http.listen") && !text.contains("auth."), "{text}");
        st.members[1].ports = Ports::for_member(15432, 1, true);
        st.token_file = Some(layout.token());
        let text = config_text(&st, &st.members[1], &layout);
        assert!(text.contains(r#"http.listen = "127.0.0.1:15633""#), "{text}");
        assert!(text.contains(r#"auth.token_file = "/tmp/x/secrets/token""#), "{text}");
    }

    #[test]
    fn members_in_network_namespaces_listen_on_their_own_address() {
        let layout = Layout { dir: PathBuf::from("/tmp/x") };
        let mut st = LocalState::for_tests(2, true);
        for (i, m) in st.members.iter_mut().enumerate() {
            m.host = format!("10.7.0.{}", 10 + i);
            m.netns = Some(format!("ns{i}"));
        }
        let text = config_text(&st, &st.members[1], &layout);
        assert!(text.contains(r#"peers = ["m1=10.7.0.10:15532", "m2=10.7.0.11:15533"]"#), "{text}");
        assert!(text.contains(r#"grpc.listen = "10.7.0.11:15533""#), "{text}");
        assert!(text.contains(r#"postgres.listen = "10.7.0.11:15433""#), "{text}");
        assert!(text.contains(r#"http.listen = "10.7.0.11:15633""#), "{text}");
    }

    #[test]
    fn toml_strings_escape_quotes_and_backslashes() {
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
