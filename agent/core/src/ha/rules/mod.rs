//! One small file per rule: lease, member, rejoin, restart, candidate, sync, switchover,
//! coordinator.

pub mod candidate;
pub mod coordinator;
pub mod lease;
pub mod member;
pub mod rejoin;
pub mod restart;
pub mod schedule;
pub mod switchover;
pub mod sync;
