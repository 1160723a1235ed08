//! pgquorum's decision core: what the cluster should do, as pure functions.
//!
//! Owns the domain types (LSNs, epochs, members), the replicated cluster state with the meaning
//! of each Raft log command, and (from the HA issue on) `decide`. Must not do I/O, read clocks,
//! spawn tasks or depend on tokio, tonic, kube or aws: time and the world come in as arguments.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backup;
pub mod cron;
pub mod duration;
pub mod ha;
pub mod state;
pub mod types;

pub use types::{Epoch, Lsn, MemberName, NodeId, SystemId, Timeline, UnixMillis};
