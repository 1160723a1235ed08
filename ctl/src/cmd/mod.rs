//! One subcommand per file.

pub mod config;
pub mod member;
pub mod status;
