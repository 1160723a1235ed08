//! One subcommand per file (`local` is a folder: one file per `local` subcommand).

pub mod completions;
pub mod config;
pub mod local;
pub mod member;
pub mod status;
