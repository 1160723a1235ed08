//! Configuration keys of a restore (`restore.*`): the first member of a new cluster bootstraps
//! from a base backup in a source store instead of running initdb, and recovers to a target.
//!
//! Must not open the store; the bootstrap does that.

use super::AgentConfig;
use super::keys::KeyDef;
use crate::archive::restore::Target;

/// Keys under `restore.`.
pub const RESTORE_KEYS: &[KeyDef] = &[
    KeyDef {
        key: "restore.from",
        default: "",
        help: "Bootstrap a new cluster from a base backup in this store instead of initdb: a directory \
               (/mnt/pg-archive) or s3://bucket/prefix (endpoint, region, path style and credentials from \
               archive.s3.*). Empty: initdb.",
        set: |c, k, v| {
            let v = v.trim();
            if v.starts_with("s3://") && v.len() <= "s3://".len() {
                return Err(format!("{k}: {v:?} names no bucket; write s3://bucket or s3://bucket/prefix"));
            }
            if !v.is_empty() && !v.starts_with("s3://") && !v.starts_with('/') {
                return Err(format!("{k}: {v:?} must be an absolute directory or s3://bucket[/prefix]"));
            }
            c.restore.from = v.trim_end_matches('/').to_string();
            Ok(())
        },
    },
    KeyDef {
        key: "restore.cluster",
        default: "",
        help: "Name of the cluster whose backups restore.from holds; empty: this cluster's name.",
        set: |c, _, v| {
            c.restore.cluster = v.trim().to_string();
            Ok(())
        },
    },
    KeyDef {
        key: "restore.backup",
        default: "latest",
        help: "Backup to start from (an id from pgquorumctl backup list), or latest: the newest that ends \
               before the target.",
        set: |c, _, v| {
            c.restore.backup = v.trim().to_string();
            Ok(())
        },
    },
    KeyDef {
        key: "restore.target_time",
        default: "",
        help: "Recover up to this UTC time (2026-12-06T10:00:00Z), then promote. At most one target; none: \
               the end of the archive.",
        set: |c, k, v| set_target(c, k, v, Target::time),
    },
    KeyDef {
        key: "restore.target_lsn",
        default: "",
        help: "Recover up to this WAL position (0/3000060), then promote.",
        set: |c, k, v| set_target(c, k, v, |v| v.parse().map(Target::Lsn)),
    },
    KeyDef {
        key: "restore.target_name",
        default: "",
        help: "Recover up to this restore point (pgquorumctl backup restore-point NAME), then promote. With \
               a name, set restore.backup to a backup taken before the point if newer ones exist.",
        set: |c, k, v| set_target(c, k, v, |v| Ok(Target::Name(v.to_string()))),
    },
];

fn set_target(
    c: &mut AgentConfig,
    k: &str,
    v: &str,
    parse: impl Fn(&str) -> Result<Target, String>,
) -> Result<(), String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(());
    }
    let same = matches!(
        (&c.restore.target, k),
        (Target::Latest, _)
            | (Target::Time { .. }, "restore.target_time")
            | (Target::Lsn(_), "restore.target_lsn")
            | (Target::Name(_), "restore.target_name")
    );
    if !same {
        return Err(format!(
            "{k}: only one of restore.target_time, restore.target_lsn and restore.target_name may be set"
        ));
    }
    c.restore.target = parse(v).map_err(|e| format!("{k}: {e}"))?;
    Ok(())
}

/// Cross-key rules: a restored cluster never archives into its source.
pub(super) fn resolve(c: &AgentConfig, errs: &mut Vec<String>) {
    let r = &c.restore;
    if !r.enabled() {
        return;
    }
    let source_cluster = if r.cluster.is_empty() { c.cluster.as_str() } else { r.cluster.as_str() };
    let a = &c.archive;
    let own = if !a.s3.bucket.is_empty() {
        let p = a.s3_prefix.trim_matches('/');
        if p.is_empty() { format!("s3://{}", a.s3.bucket) } else { format!("s3://{}/{p}", a.s3.bucket) }
    } else {
        a.dir.as_ref().map(|d| d.display().to_string().trim_end_matches('/').to_string()).unwrap_or_default()
    };
    if a.enabled && own == r.from && source_cluster == c.cluster {
        errs.push(format!(
            "restore.from ({}) is where this cluster archives, under the same cluster name ({}): a restored \
             cluster must never write into its source; give it another cluster name, archive.s3.prefix or \
             archive.dir",
            r.from, c.cluster
        ));
    }
}
