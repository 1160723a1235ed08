//! Configuration keys of the WAL archive (`archive.*`): where it goes (a directory or an S3
//! bucket), how objects are compressed, how many uploads run at once. The S3 secret key is
//! never accepted from a command line flag (see `load`); `archive.s3.secret_access_key_file`
//! names a file instead.
//!
//! Must not open the store; the daemon does that from the result.

use std::path::PathBuf;

use super::AgentConfig;
use super::keys::KeyDef;
use super::keys_postgres::boolean;
use crate::archive::Compression;

fn text(v: &str) -> String {
    v.trim().to_string()
}

/// Keys under `archive.`.
pub const ARCHIVE_KEYS: &[KeyDef] = &[
    KeyDef {
        key: "archive.enabled",
        default: "false",
        help: "Archive WAL continuously (archive_command runs `pgquorum-agent wal-push`) to archive.s3.bucket, \
               else to archive.dir. Only the primary's agent archives.",
        set: |c, k, v| {
            c.archive.enabled = boolean(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "archive.dir",
        default: "",
        help: "Directory archive (a second disk, an NFS mount), used when archive.s3.bucket is empty. Every \
               member must see the same directory for standbys to read it.",
        set: |c, _, v| {
            c.archive.dir = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
            Ok(())
        },
    },
    KeyDef {
        key: "archive.compression",
        default: "zstd",
        help: "Compression of archived WAL: zstd, gzip or none.",
        set: |c, k, v| {
            c.archive.compression = Compression::parse(v).map_err(|e| format!("{k}: {e}"))?;
            Ok(())
        },
    },
    KeyDef {
        key: "archive.parallel",
        default: "4",
        help: "WAL files uploaded (and, on restore, fetched ahead) at once, 1 to 64.",
        set: |c, k, v| {
            let n: usize = v.trim().parse().map_err(|_| format!("{k}: {v:?} is not a whole number"))?;
            if !(1..=64).contains(&n) {
                return Err(format!("{k}: {n} must be between 1 and 64"));
            }
            c.archive.parallel = n;
            Ok(())
        },
    },
    KeyDef {
        key: "archive.restore_command",
        default: "true",
        help: "Set restore_command (`pgquorum-agent wal-fetch`) so a standby that fell behind catches up from \
               the archive.",
        set: |c, k, v| {
            c.archive.restore = boolean(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "archive.s3.bucket",
        default: "",
        help: "S3 bucket of the archive; empty: the directory archive (archive.dir).",
        set: |c, _, v| {
            c.archive.s3.bucket = text(v);
            Ok(())
        },
    },
    KeyDef {
        key: "archive.s3.prefix",
        default: "",
        help: "Key prefix inside the bucket; objects go under <prefix>/<cluster>/<system identifier>/.",
        set: |c, _, v| {
            c.archive.s3_prefix = v.trim().trim_matches('/').to_string();
            Ok(())
        },
    },
    KeyDef {
        key: "archive.s3.region",
        default: "us-east-1",
        help: "Region requests are signed for (S3 clones accept any; AWS needs the bucket's).",
        set: |c, _, v| {
            c.archive.s3.region = text(v);
            Ok(())
        },
    },
    KeyDef {
        key: "archive.s3.endpoint",
        default: "",
        help: "Custom endpoint URL for S3 clones (MinIO, Ceph, moto), e.g. http://10.0.0.9:9000; empty for AWS.",
        set: |c, k, v| {
            let v = text(v);
            if !v.is_empty() && !v.starts_with("http://") && !v.starts_with("https://") {
                return Err(format!("{k}: {v:?} must be a URL starting with http:// or https://"));
            }
            c.archive.s3.endpoint = v;
            Ok(())
        },
    },
    KeyDef {
        key: "archive.s3.path_style",
        default: "false",
        help: "Path-style addressing (http://host/bucket/key), which MinIO, Ceph and moto need.",
        set: |c, k, v| {
            c.archive.s3.path_style = boolean(k, v)?;
            Ok(())
        },
    },
    KeyDef {
        key: "archive.s3.access_key_id",
        default: "",
        help: "Static access key id; empty: the standard AWS chain (AWS_* environment, shared files, web \
               identity for EKS IRSA, instance metadata).",
        set: |c, _, v| {
            c.archive.s3.access_key_id = (!v.trim().is_empty()).then(|| text(v));
            Ok(())
        },
    },
    KeyDef {
        key: "archive.s3.secret_access_key",
        default: "",
        help: "Static secret key. From the file or PGQUORUM_ARCHIVE_S3_SECRET_ACCESS_KEY only, never --set; \
               prefer archive.s3.secret_access_key_file.",
        set: |c, _, v| {
            c.archive.s3.secret_access_key = (!v.trim().is_empty()).then(|| text(v));
            Ok(())
        },
    },
    KeyDef {
        key: "archive.s3.secret_access_key_file",
        default: "",
        help: "File holding the static secret key (first line).",
        set: |c, _, v| {
            c.archive_secret_file = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
            Ok(())
        },
    },
    KeyDef {
        key: "archive.s3.checksum",
        default: "default",
        help: "default (the SDK's integrity checksums on every request) or when_required (only where S3 \
               requires them), for S3 clones that reject the defaults (older MinIO, Ceph, OVH).",
        set: |c, k, v| {
            c.archive.s3.checksum_when_required = match v.trim() {
                "default" => false,
                "when_required" => true,
                other => return Err(format!("{k}: {other:?} must be default or when_required")),
            };
            Ok(())
        },
    },
    KeyDef {
        key: "archive.s3.timeout",
        default: "60s",
        help: "How long one S3 request may take, retries included, before it counts as failed (Postgres then \
               retries the file later).",
        set: |c, k, v| {
            let d = pgquorum_core::duration::parse(v).map_err(|e| format!("{k}: {e}"))?;
            if d < std::time::Duration::from_secs(1) {
                return Err(format!("{k}: {v:?} must be at least 1s"));
            }
            c.archive.s3.timeout = d;
            Ok(())
        },
    },
    KeyDef {
        key: "archive.s3.sse",
        default: "",
        help: "Server-side encryption of new objects: AES256 or aws:kms; empty for the bucket's default.",
        set: |c, k, v| {
            match v.trim() {
                s @ ("" | "AES256" | "aws:kms") => c.archive.s3.sse = s.to_string(),
                other => return Err(format!("{k}: {other:?} must be AES256, aws:kms or empty")),
            }
            Ok(())
        },
    },
];

/// Cross-key rules of the archive; reads the secret key file.
pub(super) fn resolve(c: &mut AgentConfig, errs: &mut Vec<String>) {
    let a = &mut c.archive;
    if let Some(f) = &c.archive_secret_file {
        match std::fs::read_to_string(f) {
            Ok(t) if !t.lines().next().unwrap_or("").trim().is_empty() => {
                a.s3.secret_access_key = Some(t.lines().next().unwrap_or("").trim().to_string());
            }
            Ok(_) => errs.push(format!("archive.s3.secret_access_key_file: {} is empty", f.display())),
            Err(e) => {
                errs.push(format!("archive.s3.secret_access_key_file: cannot read {}: {e}", f.display()))
            }
        }
    }
    if !a.enabled {
        return;
    }
    if a.s3.bucket.is_empty() && a.dir.is_none() {
        errs.push(
            "archive.enabled is on but neither archive.s3.bucket nor archive.dir is set: name where WAL goes, \
             for example archive.dir=/mnt/archive or archive.s3.bucket=my-backups"
                .into(),
        );
    }
    if a.s3.access_key_id.is_some() != a.s3.secret_access_key.is_some() {
        errs.push(
            "archive.s3.access_key_id and archive.s3.secret_access_key (or _file) go together: set both, or \
             neither to use the standard AWS credential chain"
                .into(),
        );
    }
    if !c.pg.enabled {
        // A witness has no WAL; archiving there is harmless but pointless.
        a.enabled = false;
    }
}
