//! The HA loop's side of lease renewals carried on Raft's traffic (`raft::lease_mail`): a
//! quiet primary whose Raft leader and itself are a quorum leaves its next renewal to go out
//! on the reply to the first AppendEntries at or after the due time, and learns of the
//! confirmation from a note in a later AppendEntries, so a renewal costs no call and no wake-up
//! of its own, neither to go out nor for its answer (both come with heartbeats the member
//! wakes for anyway).
//!
//! Owns only when an order is left and taken back: whether a renewal is due, and when, is the
//! core's (`lease::renew_due_at`); the order is left only at the end of a quiet tick and taken
//! back at the start of every tick, so it stands only while the loop sleeps with nothing to
//! decide. A renewal that is not carried by its exact deadline (no AppendEntries came) is the
//! tick's, as a call.

use pgquorum_core::ha::Observation;
use pgquorum_core::ha::Plan;
use pgquorum_core::ha::plan::Action;
use pgquorum_core::ha::rules::lease::{pair_is_quorum, renew_due_at};

use super::Ha;
use super::renew::Carried;
use crate::raft::lease_mail::Order;

impl Ha {
    /// At the start of a tick: takes back the order left while the loop slept; if a reply
    /// carried it meanwhile, that renewal is now the one in flight, waiting for its note (and
    /// trying calls of its own if none comes in time, as any renewal does).
    pub(super) fn collect_carried(&mut self) {
        let mail = self.cluster.node.mail.clone();
        let Some(sent) = mail.disarm() else { return };
        let epoch = pgquorum_core::Epoch(sent.epoch);
        let ttl = self.cluster.applied().state.config.ttl;
        let carried = Carried {
            sent: sent.at.saturating_duration_since(self.shared.start),
            at: sent.at,
            confirmed: Box::pin(async move { mail.confirmation(sent).await }),
        };
        self.start_renewal(ttl, self.cfg.name.clone(), epoch, Some(carried));
    }

    /// At the end of a quiet tick: leaves the next renewal of the lease held to go out with
    /// the first AppendEntries reply at or after its due time, when this member holds a lease
    /// it renews on schedule (not acquiring it, the last renewal not failed, none in flight or
    /// sent this tick), follows a Raft leader that is not itself, and the two of them are a
    /// quorum (`lease::pair_is_quorum`: otherwise the leader could not confirm it in the
    /// AppendEntries this member accepts, and the renewal is a call as before).
    pub(super) fn leave_carried(&self, obs: &Observation, plan: &Plan) {
        let renewing = plan.member.actions.iter().any(|a| matches!(a, Action::Renew { .. }));
        if renewing || self.local.renewal.is_some() {
            return;
        }
        let Some(due) = renew_due_at(obs) else { return };
        let Some(lease) = self.lease_on_schedule(obs.cluster.epoch) else { return };
        let (me, leader, voters) = self.cluster.with_metrics(|m| {
            (m.id, m.current_leader, m.membership_config.membership().get_joint_config().clone())
        });
        if !leader.is_some_and(|l| pair_is_quorum(&voters, &l, &me)) {
            return;
        }
        let not_after = lease.renewal_gives_up_at(obs.cluster.config.ttl);
        let (start, member) = (self.shared.start, self.cfg.name.to_string());
        let order = Order { member, epoch: lease.epoch.0, due: start + due, not_after: start + not_after };
        self.cluster.node.mail.arm(order);
    }
}
