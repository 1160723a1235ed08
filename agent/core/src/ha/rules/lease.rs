//! Lease rules: when a primary renews, when it must fence itself, and when the coordinator may
//! confirm a renewal or declare a lease expired.
//!
//! The safety argument (DESIGN "The primary holds a lease"): the member's deadline is its send
//! time + ttl; the coordinator grants a new epoch only after ttl + margin since it last confirmed
//! (and since its own election). A confirmation happens after the request was sent, so the old
//! deadline always precedes the new grant. The member fences `fence_lead` before its deadline.

use std::time::Duration;

use crate::Epoch;
use crate::ha::config::{fence_lead, renew_every};
use crate::ha::observation::{Coordinator, Observation};
use crate::ha::plan::{Action, Reason};

/// The epoch this member is granted, if the applied state says it is primary.
pub fn granted_epoch(obs: &Observation) -> Option<Epoch> {
    obs.cluster.primary.as_ref().filter(|p| p.member == obs.me).map(|p| p.epoch)
}

/// Whether the local lease is valid for the current grant and has time left past the fence lead.
pub fn holds_lease(obs: &Observation) -> bool {
    let ttl = obs.cluster.config.ttl;
    match (obs.local.lease, granted_epoch(obs)) {
        (Some(l), Some(e)) => l.epoch == e && obs.now + fence_lead(ttl) < l.deadline,
        _ => false,
    }
}

/// Lease upkeep for this member: renew when due; fence when the lease is about to run out or
/// Postgres is writable without a valid lease. Returns the actions and, when fencing, why.
/// (The executor records the granted epoch as fenced when it fences, so it is never renewed.)
pub fn upkeep(obs: &Observation) -> (Vec<Action>, Option<Reason>) {
    let ttl = obs.cluster.config.ttl;
    let granted = granted_epoch(obs);
    let stale_lease = obs.local.lease.is_some_and(|l| Some(l.epoch) != granted);
    let expiring =
        obs.local.lease.is_some_and(|l| Some(l.epoch) == granted && obs.now + fence_lead(ttl) >= l.deadline);
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
    if let Some(epoch) = granted
        && obs.local.fenced_epoch != Some(epoch)
        && obs.local.renewal_in_flight_since.is_none()
    {
        let retry = Duration::from_millis(100);
        let due = match (obs.local.lease.filter(|l| l.epoch == epoch), obs.local.last_renewal_sent) {
            (_, None) => true,
            // Held: renew every ttl/3; after a failed attempt, retry quickly.
            (Some(l), Some(sent)) if sent <= l.renewed_at => obs.now >= l.renewed_at + renew_every(ttl),
            (Some(l), Some(sent)) => obs.now >= (l.renewed_at + renew_every(ttl)).max(sent + retry),
            // Acquiring: retry quickly.
            (None, Some(sent)) => obs.now >= sent + retry,
        };
        if due {
            actions.push(Action::Renew { epoch });
        }
    }
    (actions, None)
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
    let cfg = &obs.cluster.config;
    let ttl = c.granted_ttl.unwrap_or(cfg.ttl).max(cfg.ttl);
    let since = c.last_confirmed.map_or(c.leader_since, |t| t.max(c.leader_since));
    let free_at = since + ttl + cfg.lease_margin;
    obs.now.checked_sub(free_at)
}
