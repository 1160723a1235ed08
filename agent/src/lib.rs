//! pgquorum-agent: the daemon that runs beside each Postgres instance.
//!
//! The library holds every module so tests can start an agent in-process; `main.rs` only parses
//! the command line and calls `run`.
#![forbid(unsafe_code)]

pub mod raft;
