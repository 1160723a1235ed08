//! One small file per rule: lease, member, rejoin, candidate, sync, switchover, coordinator.

pub mod candidate;
pub mod coordinator;
pub mod lease;
pub mod member;
pub mod rejoin;
pub mod switchover;
pub mod sync;
