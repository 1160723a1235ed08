//! Harness for end-to-end tests and benchmarks: real `pgquorum-agent` processes on loopback
//! ports (or inside network namespaces when a test cuts the network), driven by the real
//! `pgquorumctl`.
//!
//! Owns process lifetimes: everything a test starts is stopped by PID when the test's
//! `Cluster` is dropped, and no directory is left behind. Must not reach into agent internals.

pub mod agent;
pub mod bins;
pub mod certs;
pub mod cluster;
pub mod deploy;
pub mod footprint;
pub mod haproxy;
pub mod http;
pub mod kube;
pub mod kube_cluster;
pub mod lease;
pub mod moto;
pub mod pg;
pub mod pgbench;
pub mod prom;
pub mod secrets;
pub mod wait;
pub mod wal;

// The fault machinery lives in the chaos crate; these paths stay for the tests that use them.
pub use pgquorum_chaos::{lab, procs};

pub use agent::Agent;
pub use cluster::{Cluster, ClusterOptions};
pub use pg::{Pg, Writer};
pub use wait::wait_for;
