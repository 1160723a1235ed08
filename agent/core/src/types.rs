//! Newtypes for the quantities pgquorum reasons about.
//!
//! Owns parsing and display (an LSN prints as Postgres does, `16/B374D848`). Must not grow
//! behaviour beyond arithmetic and formatting; rules live in their own modules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A write-ahead-log position, in bytes since the start of WAL.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Bytes from `other` up to `self`, zero when `other` is ahead.
    pub fn saturating_sub(self, other: Lsn) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid LSN {s:?}: expected two hex numbers like 16/B374D848");
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
        if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
            return Err(bad());
        }
        Ok(Lsn((hi << 32) | lo))
    }
}

/// The number of a primary grant. Each grant of the primary role gets a higher epoch; a member
/// acts as primary only for the epoch it holds a lease on.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one.
    pub fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Postgres timeline id; promotion starts a new one.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeline(pub u32);

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The database system identifier `initdb` chose; every member of a cluster shares it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SystemId(pub u64);

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Raft node id. Random per data directory and never reused, so a member whose data was
/// wiped rejoins as a new node instead of replaying an old identity.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Wall-clock time in milliseconds since the Unix epoch. Used only for display and history;
/// leases run on monotonic durations.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

/// A member's name: unique in the cluster, used as Postgres `application_name` and, made
/// lower-case and underscore-only, in its replication slot name.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MemberName(String);

impl MemberName {
    /// Longest accepted name; replication slot names are limited to 63 bytes.
    pub const MAX_LEN: usize = 50;

    /// Checks the name: 1 to 50 characters, lower-case ASCII letters, digits and `-`,
    /// starting with a letter or digit.
    pub fn new(name: impl Into<String>) -> Result<Self, String> {
        let name = name.into();
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        let starts_ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if name.is_empty() || name.len() > Self::MAX_LEN || !starts_ok || !name.chars().all(ok_char) {
            return Err(format!(
                "invalid member name {name:?}: use 1 to {} lower-case letters, digits and '-', \
                 starting with a letter or digit (for example pg-0)",
                Self::MAX_LEN
            ));
        }
        Ok(MemberName(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The physical replication slot the primary keeps for this member.
    pub fn slot_name(&self) -> String {
        format!("pgquorum_{}", self.0.replace('-', "_"))
    }
}

impl TryFrom<String> for MemberName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        MemberName::new(s)
    }
}

impl From<MemberName> for String {
    fn from(m: MemberName) -> String {
        m.0
    }
}

impl FromStr for MemberName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        MemberName::new(s)
    }
}

impl fmt::Display for MemberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_postgres_notation() {
        let lsn: Lsn = "16/B374D848".parse().expect("valid");
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("1/100000000".parse::<Lsn>().is_err());
    }

    #[test]
    fn member_names_are_checked_and_make_valid_slot_names() {
        assert_eq!(MemberName::new("pg-0").expect("ok").slot_name(), "pgquorum_pg_0");
        for bad in ["", "-a", "Pg0", "a b", "a_b", &"x".repeat(51)] {
            let err = MemberName::new(bad).expect_err(bad);
            assert!(err.contains("invalid member name"), "{err}");
        }
    }
}
