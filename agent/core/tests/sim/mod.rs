//! A seeded many-member simulation of pgquorum around the real `decide`: a fake clock, an
//! idealised Raft, a lossy partitionable network, Postgres and executor models, a writing
//! client, and the DESIGN invariants checked every step.
//!
//! Small files, one concern each: `clock` (time, randomness), `network`, `raft`, `postgres`,
//! `agent` (memory and observations), `executor` (actions), `tasks` (long actions, streaming,
//! fence guard), `messages` (delivery, lease confirmation), `client`, `invariants`, `world`
//! (the step), `scenario` (random faults and phases), `script` (scripted scenarios).

pub mod agent;
pub mod client;
pub mod clock;
pub mod executor;
pub mod invariants;
pub mod messages;
pub mod network;
pub mod postgres;
pub mod raft;
pub mod scenario;
pub mod script;
pub mod tasks;
pub mod world;
