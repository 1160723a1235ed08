//! pgquorum's chaos machinery, the one home of fault injection for the end-to-end tests and
//! `pgquorumctl chaos run`: network namespaces and partitions (`lab`), finding and signalling
//! processes by PID (`procs`), recorded histories and the pure checker that judges them
//! (`history`, `checker`, `report`), scenario files and seeded fault schedules (`scenario`),
//! and the workload whose history is checked (`workload`).
//!
//! Must not depend on the test harness (`pgquorum-tests` depends on this crate) nor on the
//! agent's internals: it sees a cluster only through processes, Postgres and the network.
#![forbid(unsafe_code)]

pub mod checker;
pub mod history;
pub mod lab;
pub mod procs;
pub mod report;
pub mod scenario;
pub mod workload;

/// Whether this process runs as root (network namespaces need it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
