//! Lease rules: when a primary renews, when it must fence itself, and when the coordinator may
//! confirm a renewal or declare a lease expired.
//!
//! The safety argument (DESIGN "The primary holds a lease"): the member's deadline is its send
//! time + ttl; the coordinator grants a new epoch only after ttl + margin since it last confirmed
//! (and since its own election). A confirmation happens after the request was sent, so the old
//! deadline always precedes the new grant. The member fences `fence_lead` before its deadline.
//!
//! A ttl change at run time (docs/decisions.md, "A ttl change never costs the lease"): the
//! member times everything about a lease (renewal, fence point, guard) from the ttl that lease
//! was confirmed with, never from the configuration of the moment, so a raised ttl cannot make a
//! renewal due after its own fence point; the coordinator waits for the longest ttl any
//! confirmation of the grant may have used (`coordinator_ttl`), so a lowered ttl cannot free the
//! role before an older, longer lease ends.

use std::time::Duration;

use crate::Epoch;
use crate::ha::config::{fence_lead, renew_every};
use crate::ha::observation::{Coordinator, Lease, Observation};
use crate::ha::plan::{Action, Reason};
use crate::state::ClusterState;

impl Lease {
    /// The ttl this lease was confirmed with.
    pub fn ttl(&self) -> Duration {
        self.deadline.saturating_sub(self.renewed_at)
    }

    /// When the member fences itself: `fence_lead` of this lease's own ttl before its deadline.
    pub fn fence_at(&self) -> Duration {
        self.deadline.saturating_sub(fence_lead(self.ttl()))
    }

    /// When the next renewal is due after a confirmed one: a third of the shorter of this
    /// lease's ttl and the configured one (always before `fence_at`).
    pub fn renew_at(&self, configured_ttl: Duration) -> Duration {
        self.renewed_at + renew_every(self.ttl().min(configured_ttl))
    }

    /// When the renewal due at [`Lease::renew_at`] stops trying (and, unconfirmed, is followed
    /// by an urgent one): a renewal interval after it was due, however late it went out (a
    /// quiet primary's waits up to `cadence::RENEWAL_BEAT_WAIT` and a timer slot for a Raft
    /// heartbeat, a busy loop's up to a tick). Timed from the due time, the urgent renewal after a failed one
    /// starts at the same moment whatever the delay, so its attempts keep their place before
    /// the fence point (ttl 1.5 s: due at 500 ms, gives up at 1000 ms, attempts at 1000, 1100,
    /// 1200 and 1300 ms against the fence point at 1350 ms).
    pub fn renewal_gives_up_at(&self, configured_ttl: Duration) -> Duration {
        self.renew_at(configured_ttl) + renew_every(self.ttl().min(configured_ttl))
    }

    /// Whether the member's last renewal, sent at `last_sent`, went unconfirmed: it was sent
    /// after the confirmed one this lease counts from.
    pub fn last_renewal_failed(&self, last_sent: Option<Duration>) -> bool {
        last_sent.is_some_and(|sent| sent > self.renewed_at)
    }
}

/// How much longer than configured this member's Raft election timer runs, given the
/// configured `(election_timeout_min, election_timeout_max)`: while it is the granted primary
/// (not expired), the width of the random range plus 100 ms (200 ms at the defaults), so that
/// when the Raft leader goes, another voter's timer runs out first and it campaigns alone
/// instead of splitting the vote with this member (docs/decisions.md, "The primary's member
/// campaigns last"); zero otherwise.
pub fn election_delay(obs: &Observation, (min, max): (Duration, Duration)) -> Duration {
    let primary = obs.cluster.primary.as_ref().is_some_and(|p| p.member == obs.me && !p.expired);
    if primary { max.saturating_sub(min) + Duration::from_millis(100) } else { Duration::ZERO }
}

/// The epoch this member is granted, if the applied state says it is primary.
pub fn granted_epoch(obs: &Observation) -> Option<Epoch> {
    obs.cluster.primary.as_ref().filter(|p| p.member == obs.me).map(|p| p.epoch)
}

/// Whether the local lease is valid for the current grant and has time left past the fence lead.
pub fn holds_lease(obs: &Observation) -> bool {
    match (obs.local.lease, granted_epoch(obs)) {
        (Some(l), Some(e)) => l.epoch == e && obs.now < l.fence_at(),
        _ => false,
    }
}

/// Lease upkeep for this member: renew when due; fence when the lease is about to run out or
/// Postgres is writable without a valid lease. Returns the actions and, when fencing, why.
/// (The executor records the granted epoch as fenced when it fences, so it is never renewed.)
pub fn upkeep(obs: &Observation) -> (Vec<Action>, Option<Reason>) {
    let granted = granted_epoch(obs);
    let stale_lease = obs.local.lease.is_some_and(|l| Some(l.epoch) != granted);
    let expiring = obs.local.lease.is_some_and(|l| Some(l.epoch) == granted && obs.now >= l.fence_at());
    if expiring {
        return (vec![Action::Fence, Action::DropLease], Some(Reason::LeaseExpiring));
    }
    if obs.local.postgres.is_writable() && !holds_lease(obs) {
        let mut actions = vec![Action::Fence];
        if stale_lease {
            actions.push(Action::DropLease);
        }
        return (actions, Some(Reason::WritableWithoutLease));
    }
    let mut actions = Vec::new();
    if stale_lease {
        actions.push(Action::DropLease);
    }
    if let (Some(epoch), Some(at)) = (granted, renew_due_at(obs))
        && obs.now >= at
    {
        actions.push(Action::Renew { epoch });
    }
    (actions, None)
}

/// When this member's next renewal is due (`None`: it renews nothing: no grant, the granted
/// epoch was fenced, or a renewal is in flight). Renews every ttl/3 while it holds the lease,
/// 100 ms after a failed renewal, and at once when it never sent one.
pub fn renew_due_at(obs: &Observation) -> Option<Duration> {
    let epoch = granted_epoch(obs)?;
    if obs.local.fenced_epoch == Some(epoch) || obs.local.renewal_in_flight_since.is_some() {
        return None;
    }
    let ttl = obs.cluster.config.ttl;
    let retry = Duration::from_millis(100);
    Some(match (obs.local.lease.filter(|l| l.epoch == epoch), obs.local.last_renewal_sent) {
        (_, None) => Duration::ZERO,
        // Held: renew every ttl/3; after a failed attempt, retry quickly.
        (Some(l), Some(sent)) if !l.last_renewal_failed(Some(sent)) => l.renew_at(ttl),
        (Some(l), Some(sent)) => l.renew_at(ttl).max(sent + retry),
        // Acquiring: retry quickly.
        (None, Some(sent)) => sent + retry,
    })
}

/// Whether every majority of every voter set of the membership (one set, or both sets of a
/// joint change) includes the Raft leader `leader` or the voter `peer`. Then `peer` accepting an
/// AppendEntries the leader sent completes a quorum round with the leader alone, as a ReadIndex
/// round's acknowledgements would: a new leader needs a vote from one of the two, given after
/// that AppendEntries was sent. So a renewal that arrived before it can be confirmed in it
/// (the note holds only if `peer` accepts it) with no round of its own; in larger clusters the
/// renewal is a call of its own, as before.
pub fn pair_is_quorum<T: Ord>(voter_sets: &[std::collections::BTreeSet<T>], leader: &T, peer: &T) -> bool {
    leader != peer
        && !voter_sets.is_empty()
        && voter_sets.iter().all(|set| {
            // The voters that are neither: together they must not be more than half.
            let others = set.iter().filter(|id| *id != leader && *id != peer).count();
            2 * others <= set.len()
        })
}

/// Why the coordinator refuses to confirm a renewal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The requester is not the primary of that epoch.
    NotPrimary,
    /// The coordinator declared this epoch expired.
    Expired,
}

/// Whether the coordinator may confirm `member`'s renewal of `epoch`: only for the current
/// grant, and never after it (or, through Raft, any coordinator) declared the epoch expired. The executor checks this again after
/// the quorum round trip, under the same lock that records the confirmation.
pub fn may_confirm(
    state: &crate::state::ClusterState,
    coordinator_expired: Option<Epoch>,
    member: &crate::MemberName,
    epoch: Epoch,
) -> Result<(), Refusal> {
    match &state.primary {
        Some(p) if &p.member == member && p.epoch == epoch => {
            if p.expired || coordinator_expired == Some(epoch) {
                return Err(Refusal::Expired);
            }
            Ok(())
        }
        _ => Err(Refusal::NotPrimary),
    }
}

/// On the coordinator: when the current primary's lease certainly ran out, as time since
/// which the primary's deadline has passed (`None` while it may still hold it). Uses the later
/// of the last confirmation and this leader's election, plus ttl and margin.
pub fn expired_for(obs: &Observation, c: &Coordinator) -> Option<Duration> {
    obs.now.checked_sub(free_at(obs, c))
}

/// On the coordinator: the moment from which the current primary's lease has certainly run
/// out (see [`expired_for`]).
pub fn free_at(obs: &Observation, c: &Coordinator) -> Duration {
    let ttl = c.granted_ttl.unwrap_or_default().max(coordinator_ttl(&obs.cluster));
    let since = c.last_confirmed.map_or(c.leader_since, |t| t.max(c.leader_since));
    since + ttl + obs.cluster.config.lease_margin
}

/// The ttl a coordinator must wait for the current grant (beyond what it confirmed itself): the
/// configured one, or longer when the ttl was lowered during the grant (a confirmation by an
/// earlier leader may have used the old, longer value).
pub fn coordinator_ttl(state: &ClusterState) -> Duration {
    let bound = state.primary.as_ref().and_then(|p| p.longest_ttl_ms).map(Duration::from_millis);
    bound.unwrap_or_default().max(state.config.ttl)
}
