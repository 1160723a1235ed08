//! Driving one Postgres instance (its binaries are found by `pgquorum-pgbin`): control data, configuration files, the postmaster
//! process, SQL, and the initdb/basebackup/rewind tools.
//!
//! Owns how things are done, never whether: the HA loop decides (through the core) and calls in.

pub mod conf;
pub mod controldata;
pub mod log;
pub mod params;
pub mod process;
pub mod sql;
pub mod tools;
pub mod watch;
