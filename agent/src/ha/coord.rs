//! The coordinator's memory (on the Raft leader): when it became leader, when it last confirmed
//! the primary's lease, which epoch it declared expired, and the failover in progress.
//!
//! Confirming a renewal and declaring expiry are the two halves of the lease protocol; both
//! happen under one lock so they cannot interleave (see `confirm` and `try_expire`).

use std::sync::Mutex;
use std::time::Duration;

use openraft::LinearizerOption;
use openraft::ReadPolicy;
use openraft::ServerState;
use pgquorum_core::ha::observation::Coordinator;
use pgquorum_core::ha::rules::lease::{Refusal, may_confirm, pair_is_quorum};
use pgquorum_core::{Epoch, Lsn, MemberName};

use crate::cluster::Cluster;
use crate::raft::Vote;

/// Coordinator state for one Raft term.
#[derive(Clone, Debug, Default)]
pub struct CoordState {
    /// The Raft term this state belongs to (0: not leader).
    pub term: u64,
    /// When this agent noticed it leads (at or after the election).
    pub leader_since: Duration,
    /// The epoch the lease fields refer to.
    pub epoch: Epoch,
    /// When this state first saw that epoch.
    pub epoch_since: Duration,
    /// When the last request confirmed for that epoch's lease arrived (or when the epoch was
    /// first seen).
    pub last_confirmed: Option<Duration>,
    /// Longest ttl confirmed for it.
    pub granted_ttl: Option<Duration>,
    /// Declared expired.
    pub expired_epoch: Option<Epoch>,
    /// Phase 1 request.
    pub stop_requested: Option<(Epoch, Duration)>,
    /// Last WAL position the primary reported.
    pub last_primary_lsn: Option<Lsn>,
    /// Last leadership transfer attempt.
    pub last_transfer: Option<Duration>,
}

/// The lock around `CoordState`.
#[derive(Default)]
pub struct Coord {
    state: Mutex<CoordState>,
}

impl Coord {
    fn lock(&self) -> std::sync::MutexGuard<'_, CoordState> {
        self.state.lock().expect("coordinator lock is never poisoned: no panics while held")
    }

    /// Brings the state in line with the current term and epoch: a new term starts from
    /// scratch at `now`; a new epoch gives its primary a full ttl from `now` to get a lease.
    pub fn refresh(&self, term: u64, leader: bool, epoch: Epoch, now: Duration) {
        let mut s = self.lock();
        if !leader {
            *s = CoordState::default();
            return;
        }
        if s.term != term {
            *s = CoordState { term, leader_since: now, epoch, epoch_since: now, ..Default::default() };
        }
        if s.epoch != epoch {
            s.epoch = epoch;
            s.epoch_since = now;
            s.last_confirmed = Some(now);
            s.granted_ttl = None;
            s.expired_epoch = None;
            s.stop_requested = None;
            s.last_primary_lsn = None;
        }
    }

    /// The view `decide` gets (None unless leading `term`).
    pub fn view(&self, term: u64) -> Option<CoordState> {
        let s = self.lock();
        (s.term == term && term != 0).then(|| s.clone())
    }

    /// Records the primary's reported position.
    pub fn note_primary_lsn(&self, lsn: Lsn) {
        self.lock().last_primary_lsn = Some(lsn);
    }

    /// Records a phase-1 request for `epoch` (first time only).
    pub fn note_stop_requested(&self, epoch: Epoch, now: Duration) {
        let mut s = self.lock();
        if s.stop_requested.is_none_or(|(e, _)| e != epoch) {
            s.stop_requested = Some((epoch, now));
        }
    }

    /// Records a leadership transfer attempt.
    pub fn note_transfer(&self, now: Duration) {
        self.lock().last_transfer = Some(now);
    }

    /// Declares `epoch` expired if, under the lock, its lease certainly ran out: `ttl + margin`
    /// after both the last confirmation and this leader's start. Returns whether it did.
    pub fn try_expire(&self, epoch: Epoch, ttl: Duration, margin: Duration, now: Duration) -> bool {
        let mut s = self.lock();
        if s.epoch != epoch {
            return false;
        }
        let since = s.last_confirmed.map_or(s.leader_since, |t| t.max(s.leader_since));
        let ttl = s.granted_ttl.unwrap_or(ttl).max(ttl);
        if now >= since + ttl + margin {
            s.expired_epoch = Some(epoch);
            true
        } else {
            false
        }
    }

    /// Confirms `member`'s lease on `epoch` and returns the ttl it may count from its send time.
    /// Checks before and after a ReadIndex round (a heartbeat sent after this request arrived,
    /// acknowledged by a quorum), and records the confirmation under the lock that expiry uses.
    /// The heartbeat is the next periodic one, or, when `prompt` (a renewal's later attempt),
    /// one sent at once: the same proof either way, the first costing no extra round.
    ///
    /// The confirmation counts from when the request *arrived*, not from the end of the round:
    /// the member counts its lease from its send time, which is earlier still, so the
    /// coordinator's view of the lease still ends after the member's. Counting from the end of
    /// the round would keep a dead primary's lease alive for up to a heartbeat interval longer:
    /// a renewal sent just before the primary died is confirmed by the leader and the other
    /// replica after it died.
    pub async fn confirm(
        &self,
        cluster: &Cluster,
        member: &MemberName,
        epoch: Epoch,
        prompt: bool,
        now: impl Fn() -> Duration,
    ) -> Result<Duration, String> {
        let term = cluster.with_metrics(|m| m.current_term);
        if !cluster.is_leader() {
            return Err("not the Raft leader".into());
        }
        // Read once it leads, so a new term's `leader_since` is at or after the election.
        let arrived = now();
        self.refresh(term, true, cluster.applied().state.epoch, arrived);
        {
            let s = self.lock();
            may_confirm(&cluster.applied().state, s.expired_epoch, member, epoch)
                .map_err(|r| refusal(r, member, epoch))?;
        }
        cluster
            .node
            .raft
            .ensure_linearizable(read_index(prompt))
            .await
            .map_err(|e| format!("leadership not confirmed: {e}"))?;
        self.record(cluster, term, member, epoch, arrived)
    }

    /// Confirms a renewal of `member`'s lease on `epoch` that the voter `peer` carried on its
    /// reply to an AppendEntries (read at `arrived`), for the note in the next AppendEntries
    /// to `peer`, which carries this leader's `vote` (`raft::lease_mail`). No ReadIndex round:
    /// `peer` accepting that AppendEntries completes one where this leader and `peer` are a
    /// quorum (`lease::pair_is_quorum`, checked on both the effective and the committed
    /// membership), and the member counts the note only then. What the round's bookkeeping
    /// gave is checked in openraft's core, in order with the votes it handles: this node still
    /// leads with `vote` (once it voted for another it never sends that vote again); and, as
    /// ReadIndex waits for it, the state the checks read has applied every committed entry,
    /// including this term's first. The confirmation is recorded now, before `peer` accepts:
    /// if it never does, the coordinator only waits longer than the member's lease lasts.
    pub async fn confirm_carried(
        &self,
        cluster: &Cluster,
        peer: u64,
        (member, epoch): (&MemberName, Epoch),
        vote: Vote,
        (arrived, now): (Duration, impl Fn() -> Duration),
    ) -> Result<Duration, String> {
        let term = vote.leader_id().term;
        let core = cluster
            .node
            .raft
            .with_raft_state(move |st| {
                let leads = st.server_state == ServerState::Leader && *st.vote_ref() == vote;
                let ms = &st.membership_state;
                let voters = [ms.effective().membership(), ms.committed().membership()]
                    .iter()
                    .flat_map(|m| m.get_joint_config().clone())
                    .collect::<Vec<_>>();
                (leads, voters, st.local_committed().copied())
            })
            .await;
        let (leads, voters, committed) = core.map_err(|e| format!("Raft stopped: {e}"))?;
        if !leads {
            return Err(format!("not the Raft leader in term {term} any more"));
        }
        if !pair_is_quorum(&voters, &cluster.node.ident.node_id, &peer) {
            return Err("this leader and the member are not a quorum: the renewal needs its own call".into());
        }
        let applied = cluster.applied().last_applied;
        if !committed
            .as_ref()
            .is_some_and(|c| c.committed_leader_id().term == term && applied.as_ref() >= Some(c))
        {
            return Err("this term's committed entries are not all applied yet".into());
        }
        let now = now();
        self.refresh(term, true, cluster.applied().state.epoch, now);
        self.record(cluster, term, member, epoch, arrived)
    }

    /// Records a confirmation of `member`'s renewal of `epoch` that arrived at `arrived`, once
    /// its quorum round (or what stands for one) is done, if this leader still leads `term`
    /// and the epoch is still current, granted to `member` and not expired. Returns the ttl.
    fn record(
        &self,
        cluster: &Cluster,
        term: u64,
        member: &MemberName,
        epoch: Epoch,
        arrived: Duration,
    ) -> Result<Duration, String> {
        let applied = cluster.applied();
        // openraft's published metrics may lag its core: after a ReadIndex round or the core's
        // own check (`confirm_carried`) this can only refuse a confirmation that would have
        // been sound, never allow one that is not.
        let current_term = cluster.with_metrics(|m| m.current_term);
        let mut s = self.lock();
        if current_term != term || s.term != term {
            return Err("Raft leadership changed during the confirmation".into());
        }
        may_confirm(&applied.state, s.expired_epoch, member, epoch).map_err(|r| refusal(r, member, epoch))?;
        let ttl = applied.state.config.ttl;
        if s.epoch != epoch {
            return Err(format!("epoch {epoch} is not current"));
        }
        // Never earlier than a confirmation already recorded (attempts of one renewal, or an
        // older request answered late, may finish in any order).
        s.last_confirmed = Some(s.last_confirmed.map_or(arrived, |t| t.max(arrived)));
        s.granted_ttl = Some(s.granted_ttl.map_or(ttl, |g| g.max(ttl)));
        Ok(ttl)
    }
}

/// Why a renewal was refused, in words.
fn refusal(r: Refusal, member: &MemberName, epoch: Epoch) -> String {
    match r {
        Refusal::NotPrimary => format!("{member} is not the primary of epoch {epoch}"),
        Refusal::Expired => format!("the lease of epoch {epoch} has expired"),
    }
}

/// A ReadIndex confirmation: a quorum acknowledges a heartbeat sent after the request arrived,
/// sent at once when `prompt`, else the next periodic one.
fn read_index(prompt: bool) -> LinearizerOption {
    if prompt { ReadPolicy::ReadIndex.into() } else { LinearizerOption::new(Some(Duration::ZERO), false) }
}

#[cfg(test)]
#[path = "coord_tests.rs"]
mod tests;

impl CoordState {
    /// The core's view of this state.
    pub fn to_view(&self, voters: Vec<MemberName>, caught_up: Vec<MemberName>) -> Coordinator {
        Coordinator {
            leader_since: self.leader_since,
            epoch_since: self.epoch_since,
            last_confirmed: self.last_confirmed,
            granted_ttl: self.granted_ttl,
            expired_epoch: self.expired_epoch,
            stop_requested: self.stop_requested,
            voters,
            caught_up,
            last_primary_lsn: self.last_primary_lsn,
            last_transfer: self.last_transfer,
        }
    }
}
