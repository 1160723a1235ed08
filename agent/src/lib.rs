//! pgquorum-agent: the daemon that runs beside each Postgres instance.
//!
//! The library holds every module so tests can start an agent in-process; `main.rs` only parses
//! the command line and calls `daemon::run`.
#![forbid(unsafe_code)]

pub mod api;
pub mod archive;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod fence;
pub mod ha;
pub mod kube;
pub mod postgres;
pub mod raft;
pub mod timer;
