//! Fencing's process-level parts, shared by the agent and the guard executable: killing a
//! Postgres instance at once (`kill`) and the guard's loop and protocol (`guard`).
//!
//! Deliberately tiny (std and rustix): the guard process stays resident beside every Postgres.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod guard;
pub mod kill;
