//! One subcommand per file (`local` is a folder: one file per `local` subcommand).

pub mod backup;
pub mod chaos;
pub mod completions;
pub mod config;
pub mod failover;
pub mod history;
pub mod local;
pub mod member;
pub mod pause;
pub mod restart;
pub mod status;
pub mod switchover;
pub mod wait;
