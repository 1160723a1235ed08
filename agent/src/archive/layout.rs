//! The object layout: where each file goes in the store, and which WAL file names exist.
//!
//! ```text
//! <root>/<cluster>/<system identifier>/wal/<WAL file name>      segments, .partial, .history, .backup
//! ```
//! `<root>` is `archive.dir` or `s3://<bucket>/<archive.s3.prefix>`. Compression is recorded in
//! each object's header, not its name, so a fetch needs no guessing. Pure: no IO.

use pgquorum_core::SystemId;

/// What kind of file Postgres asks to archive or restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalKind {
    /// A 16 MB (by default) WAL segment.
    Segment,
    /// The last, incomplete segment of a timeline a promotion ended.
    Partial,
    /// A timeline history file.
    History,
    /// A backup history file (`<segment>.<offset>.backup`).
    BackupHistory,
}

fn hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Classifies a WAL file name; `None` for anything Postgres would not archive (and anything
/// that could escape the prefix).
pub fn wal_kind(name: &str) -> Option<WalKind> {
    if hex(name, 24) {
        return Some(WalKind::Segment);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return hex(seg, 24).then_some(WalKind::Partial);
    }
    if let Some(tli) = name.strip_suffix(".history") {
        return hex(tli, 8).then_some(WalKind::History);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        let (seg, off) = rest.split_once('.')?;
        return (hex(seg, 24) && hex(off, 8)).then_some(WalKind::BackupHistory);
    }
    None
}

/// The segment after `name` (16 MB segments, 256 per logical file), for prefetching.
pub fn next_segment(name: &str) -> Option<String> {
    if wal_kind(name) != Some(WalKind::Segment) {
        return None;
    }
    let tli = &name[..8];
    let log = u32::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u32::from_str_radix(&name[16..24], 16).ok()?;
    let (log, seg) = if seg >= 0xFF { (log.checked_add(1)?, 0) } else { (log, seg + 1) };
    Some(format!("{tli}{log:08X}{seg:08X}"))
}

/// Keys of one cluster in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Cluster name.
    pub cluster: String,
    /// The Postgres system identifier whose WAL this is.
    pub system: SystemId,
}

impl Layout {
    /// The folder of this cluster's system.
    pub fn base(&self) -> String {
        format!("{}/{}", self.cluster, self.system.0)
    }

    /// The key of WAL file `name`.
    pub fn wal(&self, name: &str) -> String {
        format!("{}/wal/{name}", self.base())
    }

    /// The folder of all WAL files.
    pub fn wal_prefix(&self) -> String {
        format!("{}/wal/", self.base())
    }

    /// The folder holding every system of this cluster name.
    pub fn cluster_prefix(&self) -> String {
        format!("{}/", self.cluster)
    }

    /// From a listing of `cluster_prefix()`, the system identifiers other than ours that have
    /// WAL there (an archive this cluster must not write into).
    pub fn foreign_systems<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let ours = self.system.0.to_string();
        let mut out: Vec<String> = keys
            .into_iter()
            .filter_map(|k| {
                let mut parts = k.strip_prefix(&self.cluster_prefix())?.splitn(3, '/');
                let (sys, kind) = (parts.next()?, parts.next()?);
                (kind == "wal" && sys != ours).then(|| sys.to_string())
            })
            .collect();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names_are_classified_and_nothing_else_is_accepted() {
        assert_eq!(wal_kind("000000010000000000000003"), Some(WalKind::Segment));
        assert_eq!(wal_kind("000000020000000000000003.partial"), Some(WalKind::Partial));
        assert_eq!(wal_kind("00000002.history"), Some(WalKind::History));
        assert_eq!(wal_kind("000000010000000000000002.00000028.backup"), Some(WalKind::BackupHistory));
        for bad in
            ["", "../../etc/passwd", "00000001000000000000000g", "0000000100000000000000030", "x.history"]
        {
            assert_eq!(wal_kind(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn next_segment_crosses_logical_files() {
        assert_eq!(next_segment("000000010000000000000003").as_deref(), Some("000000010000000000000004"));
        assert_eq!(next_segment("0000000100000000000000FF").as_deref(), Some("000000010000000100000000"));
        assert_eq!(next_segment("00000001.history"), None);
    }

    #[test]
    fn layout_puts_cluster_and_system_in_the_path_and_spots_foreign_systems() {
        let l = Layout { cluster: "demo".into(), system: SystemId(7) };
        assert_eq!(l.wal("000000010000000000000001"), "demo/7/wal/000000010000000000000001");
        let keys = ["demo/7/wal/a", "demo/8/wal/b", "demo/8/wal/c", "demo/9/backups/x", "demox/5/wal/d"];
        assert_eq!(l.foreign_systems(keys), ["8"]);
    }
}
