//! A synchronous standby set, `ANY k (members)`.
//!
//! Owns the set's shape and the containment rule that keeps changes safe. Choosing a set is the
//! HA core's job, not this file's.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::MemberName;

/// `ANY k (members)`: a commit is acknowledged once `k` of `members` flushed it. `k == 0` means
/// asynchronous replication.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSet {
    /// Acknowledgements a commit waits for.
    pub k: u32,
    /// Standbys that may acknowledge.
    pub members: BTreeSet<MemberName>,
}

impl SyncSet {
    /// The asynchronous set.
    pub fn none() -> SyncSet {
        SyncSet::default()
    }

    /// `ANY k (members)`.
    pub fn any(k: u32, members: impl IntoIterator<Item = MemberName>) -> SyncSet {
        SyncSet { k, members: members.into_iter().collect() }
    }

    /// True when commits do not wait for any standby.
    pub fn is_async(&self) -> bool {
        self.k == 0
    }

    /// Whether every commit acknowledged under `self` was also acknowledged by `bound.k`
    /// members of `bound`: `self`'s members lie within `bound`'s and it waits for at least as
    /// many. This is what lets `bound` stand for `self` when judging failover candidates.
    pub fn is_within(&self, bound: &SyncSet) -> bool {
        if bound.k == 0 {
            return true;
        }
        self.k >= bound.k && self.members.is_subset(&bound.members)
    }

    /// The smallest set that stands for both `self` and `other` (their members, fewer acks).
    pub fn union(&self, other: &SyncSet) -> SyncSet {
        SyncSet { k: self.k.min(other.k), members: self.members.union(&other.members).cloned().collect() }
    }

    /// How many members of `members` must report before one of them provably holds every
    /// acknowledged commit: `|S| - k + 1`, or 0 when asynchronous.
    pub fn quorum_to_prove_commits(&self) -> usize {
        if self.k == 0 {
            return 0;
        }
        self.members.len().saturating_sub(self.k as usize) + 1
    }

    /// The value for Postgres's `synchronous_standby_names`.
    pub fn to_postgres(&self) -> String {
        if self.k == 0 || self.members.is_empty() {
            return String::new();
        }
        let names: Vec<String> = self.members.iter().map(|m| format!("\"{m}\"")).collect();
        format!("ANY {} ({})", self.k, names.join(", "))
    }
}

impl fmt::Display for SyncSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.k == 0 {
            return f.write_str("async");
        }
        let names: Vec<&str> = self.members.iter().map(|m| m.as_str()).collect();
        write!(f, "ANY {} ({})", self.k, names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(names: &[&str]) -> Vec<MemberName> {
        names.iter().map(|n| MemberName::new(*n).expect("valid")).collect()
    }

    #[test]
    fn containment_requires_subset_and_no_fewer_acks() {
        let big = SyncSet::any(1, m(&["a", "b", "c"]));
        assert!(SyncSet::any(1, m(&["a", "b"])).is_within(&big));
        assert!(SyncSet::any(2, m(&["a", "b"])).is_within(&big));
        assert!(!SyncSet::any(1, m(&["a", "d"])).is_within(&big));
        assert!(!SyncSet::none().is_within(&big), "async acknowledges without any standby");
        assert!(SyncSet::none().is_within(&SyncSet::none()));
    }

    #[test]
    fn union_stands_for_both_sides() {
        let a = SyncSet::any(2, m(&["a", "b"]));
        let b = SyncSet::any(1, m(&["b", "c"]));
        let u = a.union(&b);
        assert!(a.is_within(&u) && b.is_within(&u));
        assert_eq!(u.quorum_to_prove_commits(), 3);
    }

    #[test]
    fn postgres_rendering_quotes_names() {
        assert_eq!(SyncSet::any(1, m(&["pg-1", "pg-2"])).to_postgres(), "ANY 1 (\"pg-1\", \"pg-2\")");
        assert_eq!(SyncSet::none().to_postgres(), "");
    }
}
