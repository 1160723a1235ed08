//! gRPC definitions shared by the agent and `pgquorumctl`.
//!
//! Owns the generated code only; conversions to and from domain types live with the code that
//! uses them. Three services: `raft` (peer Raft transport), `peer` (agent-to-agent discovery and
//! forwarding) and `management` (the operator API).
#![allow(missing_docs, clippy::all)]

pub mod raft {
    tonic::include_proto!("pgquorum.raft.v1");
}

pub mod peer {
    tonic::include_proto!("pgquorum.peer.v1");
}

pub mod management {
    tonic::include_proto!("pgquorum.management.v1");
}

pub mod auth;
