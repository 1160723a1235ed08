//! The binary form of a heartbeat (an AppendEntries without entries) on the AppendEntries
//! stream, instead of its JSON: building and reading the JSON was 3 % of an idle Raft leader's
//! CPU (BENCHMARKS.md, issue 10).
//!
//! Owns the conversion both ways and nothing else; which peers get it (those whose replies say
//! they read it) is `append_stream`'s, and what a receiver does with it `service`'s.

use openraft::raft::AppendEntriesRequest;
use openraft::vote::leader_id_std::{CommittedLeaderId, LeaderId};
use pgquorum_proto::raft::{Heartbeat, LogPosition};

use super::types::{LogId, TypeConfig, Vote};

/// The binary form of `rpc`, when it is a heartbeat (it carries no entries).
pub fn encode(rpc: &AppendEntriesRequest<TypeConfig>) -> Option<Heartbeat> {
    if !rpc.entries.is_empty() {
        return None;
    }
    let position = |id: &LogId| LogPosition { term: id.leader_id.term, index: id.index };
    Some(Heartbeat {
        term: rpc.vote.leader_id.term,
        leader: rpc.vote.leader_id.voted_for,
        committed: rpc.vote.committed,
        prev_log_id: rpc.prev_log_id.as_ref().map(position),
        leader_commit: rpc.leader_commit.as_ref().map(position),
    })
}

/// The AppendEntries a heartbeat stands for.
pub fn decode(hb: Heartbeat) -> AppendEntriesRequest<TypeConfig> {
    let log_id = |p: LogPosition| LogId { leader_id: CommittedLeaderId::new(p.term), index: p.index };
    AppendEntriesRequest {
        vote: Vote { leader_id: LeaderId { term: hb.term, voted_for: hb.leader }, committed: hb.committed },
        prev_log_id: hb.prev_log_id.map(log_id),
        leader_commit: hb.leader_commit.map(log_id),
        entries: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Entry;

    fn heartbeat(
        prev: Option<(u64, u64)>,
        commit: Option<(u64, u64)>,
        committed: bool,
    ) -> AppendEntriesRequest<TypeConfig> {
        let log_id = |(term, index)| LogId { leader_id: CommittedLeaderId::new(term), index };
        AppendEntriesRequest {
            vote: Vote { leader_id: LeaderId { term: 7, voted_for: 0xfeed_0000_0000_0001 }, committed },
            prev_log_id: prev.map(log_id),
            leader_commit: commit.map(log_id),
            entries: vec![],
        }
    }

    #[test]
    fn a_heartbeat_comes_back_as_it_went_including_absent_positions() {
        for rpc in [
            heartbeat(Some((7, 42)), Some((6, 40)), true),
            heartbeat(None, None, true),
            heartbeat(Some((1, 1)), None, false),
            heartbeat(None, Some((0, 0)), true),
        ] {
            let back = decode(encode(&rpc).expect("a heartbeat"));
            assert_eq!(serde_json::to_value(&back).expect("json"), serde_json::to_value(&rpc).expect("json"));
        }
    }

    #[test]
    fn a_position_at_index_zero_is_not_taken_for_none() {
        let rpc = heartbeat(Some((0, 0)), Some((0, 0)), true);
        let back = decode(encode(&rpc).expect("a heartbeat"));
        assert_eq!(back.prev_log_id, rpc.prev_log_id);
        assert!(back.leader_commit.is_some());
    }

    #[test]
    fn an_append_with_entries_has_no_binary_form() {
        let mut rpc = heartbeat(Some((7, 42)), Some((7, 42)), true);
        let log_id = LogId { leader_id: CommittedLeaderId::new(7), index: 43 };
        let entry = Entry { log_id, payload: openraft::EntryPayload::Blank };
        rpc.entries.push(entry);
        assert!(encode(&rpc).is_none());
    }
}
