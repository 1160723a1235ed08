//! One subcommand per file.

pub mod config;
pub mod failover;
pub mod history;
pub mod member;
pub mod pause;
pub mod restart;
pub mod status;
pub mod switchover;
pub mod wait;
