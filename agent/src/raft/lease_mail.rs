//! Lease renewals carried on Raft's AppendEntries traffic, so that a quiet primary renews
//! without a call of its own and without waking for an answer (docs/decisions.md, "A quiet
//! primary's renewal travels inside Raft's traffic").
//!
//! On the primary's member: while the HA loop sleeps it leaves an [`Order`] here (renew this
//! epoch once it is due); the reply to the first AppendEntries answered at or after that time
//! carries the renewal ([`LeaseMail::renewal_to_send`]), and a [`LeaseNote`] in a later
//! AppendEntries that this member *accepts* confirms it ([`LeaseMail::note_accepted`]). On the
//! Raft leader: a carried renewal is put to the coordinator as it arrives
//! ([`LeaseMail::renewal_arrived`]), and the next AppendEntries to that peer after the answer
//! carries it ([`LeaseMail::note_for`]); no AppendEntries waits for the coordinator.
//!
//! Owns only the carrying. Whether and when to renew is the core's; whether to confirm, and the
//! rule that makes the note a quorum round, is the coordinator's (`Coord::confirm_carried`).

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pgquorum_proto::raft::{LeaseNote, LeaseRenewal};
use tokio::time::Instant;

use super::types::Vote;

/// A renewal the HA loop wants sent with the first AppendEntries reply at or after `due`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// This member's name.
    pub member: String,
    /// The epoch to renew.
    pub epoch: u64,
    /// Not before this.
    pub due: Instant,
    /// Not after this (when the renewal would give up anyway: a member that stalled past it
    /// renews by call, after its tick has looked at its lease).
    pub not_after: Instant,
}

/// A carried renewal that went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Its number (the note that confirms it names it).
    pub id: u64,
    /// The epoch renewed.
    pub epoch: u64,
    /// When the reply carrying it was written: the lease counts from here.
    pub at: Instant,
}

/// A carried renewal as the Raft leader received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrived {
    /// The renewal.
    pub renewal: LeaseRenewal,
    /// When the reply carrying it was read.
    pub at: Instant,
}

/// The coordinator's answer to a carried renewal from `target`, whose reply answered an
/// AppendEntries with the leader's vote `vote` (the note goes only in one with the same vote):
/// the ttl confirmed, or why not. Asked once the renewal arrived, never on the way of an
/// AppendEntries: the check runs in openraft's core, which may be busy (an fsync), and a
/// heartbeat must not wait for it.
pub type Confirmer = Box<dyn Fn(u64, Arrived, Vote) -> ConfirmFuture + Send + Sync>;

/// What a [`Confirmer`] returns.
pub type ConfirmFuture = Pin<Box<dyn Future<Output = Result<Duration, String>> + Send>>;

#[derive(Default)]
struct Inner {
    order: Option<Order>,
    /// Sent since the HA loop last looked.
    sent: Option<Sent>,
    last_id: u64,
    /// Leader: answers to carried renewals not yet sent, by the peer they came from.
    answers: HashMap<u64, Answer>,
    /// Leader: numbers the renewals that arrived, so a late answer never replaces a newer one.
    arrivals: u64,
}

/// The leader's answer to a peer's carried renewal.
struct Answer {
    /// The vote of the AppendEntries the renewal's reply answered.
    vote: Vote,
    /// Which arrival it answers.
    arrival: u64,
    /// The note, once the coordinator confirmed (`None` while it decides).
    note: Option<LeaseNote>,
}

/// The renewals carried on this agent's Raft traffic, both ways.
pub struct LeaseMail {
    inner: Mutex<Inner>,
    /// The last note accepted: (renewal id, epoch, ttl).
    confirmed: tokio::sync::watch::Sender<Option<(u64, u64, Duration)>>,
    confirmer: OnceLock<Confirmer>,
    /// Renewals this member sent on a reply.
    carried: AtomicU64,
}

impl Default for LeaseMail {
    fn default() -> Self {
        // Renewal numbers start at random: a note for the renewal of an earlier run of this
        // agent (it stopped after sending one) never names one of this run's.
        let first = std::collections::hash_map::RandomState::new().build_hasher().finish() >> 1;
        LeaseMail {
            inner: Mutex::new(Inner { last_id: first, ..Inner::default() }),
            confirmed: tokio::sync::watch::Sender::new(None),
            confirmer: OnceLock::new(),
            carried: AtomicU64::new(0),
        }
    }
}

impl LeaseMail {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("lease mail lock is never poisoned: no panics while held")
    }

    /// Member: leaves `order` for the next reply at or after its due time (replacing any).
    pub fn arm(&self, order: Order) {
        self.lock().order = Some(order);
    }

    /// Member: takes back the order, if still here, and returns the renewal sent since the
    /// last call, if any (the HA loop then waits for its note).
    pub fn disarm(&self) -> Option<Sent> {
        let mut inner = self.lock();
        inner.order = None;
        inner.sent.take()
    }

    /// Member: the renewal to carry on the reply to an AppendEntries this member accepted at
    /// `now`, if one is due (and not past its time: then the order is dropped and the loop
    /// renews by call); recorded as sent at `now`.
    pub fn renewal_to_send(&self, now: Instant) -> Option<LeaseRenewal> {
        let mut inner = self.lock();
        let order = inner.order.take_if(|o| o.due <= now)?;
        if now > order.not_after {
            return None;
        }
        inner.last_id = inner.last_id.wrapping_add(1);
        let id = inner.last_id;
        inner.sent = Some(Sent { id, epoch: order.epoch, at: now });
        // Only a note accepted from now on confirms it.
        self.confirmed.send_replace(None);
        self.carried.fetch_add(1, Ordering::Relaxed);
        Some(LeaseRenewal { member: order.member, epoch: order.epoch, id })
    }

    /// Member: `note` came in an AppendEntries this member accepted (the Raft leader's term
    /// and log are its own): the renewal it names is confirmed, if it is the last one sent (a
    /// late note for an earlier one must not replace the note for the current one).
    pub fn note_accepted(&self, note: &LeaseNote) {
        if note.id != self.lock().last_id {
            return;
        }
        let ttl = Duration::from_millis(note.ttl_ms);
        self.confirmed.send_replace(Some((note.id, note.epoch, ttl)));
    }

    /// Member: the ttl confirmed for renewal `sent`, once a note for it is accepted.
    pub async fn confirmation(&self, sent: Sent) -> Duration {
        let mut rx = self.confirmed.subscribe();
        let got = rx
            .wait_for(|c| c.is_some_and(|(id, epoch, _)| id == sent.id && epoch == sent.epoch))
            .await
            .map(|c| c.map_or(Duration::ZERO, |(_, _, ttl)| ttl));
        match got {
            Ok(ttl) => ttl,
            // The sender lives as long as `self`.
            Err(_) => std::future::pending().await,
        }
    }

    /// How many renewals this member carried on its replies.
    pub fn carried(&self) -> u64 {
        self.carried.load(Ordering::Relaxed)
    }

    /// Leader: how carried renewals are answered (set once, by the HA side).
    pub fn set_confirmer(&self, confirmer: Confirmer) {
        let _ = self.confirmer.set(confirmer);
    }

    /// Leader: a reply from `from` to an AppendEntries with this leader's `vote` carried
    /// `renewal`, read at `at`. The coordinator is asked at once, in a task of its own; the
    /// next AppendEntries to `from` with the same vote after it answered carries the note.
    pub fn renewal_arrived(self: &Arc<Self>, from: u64, renewal: LeaseRenewal, at: Instant, vote: Vote) {
        let arrival = {
            let mut inner = self.lock();
            inner.arrivals += 1;
            let arrival = inner.arrivals;
            inner.answers.insert(from, Answer { vote, arrival, note: None });
            arrival
        };
        let Some(confirm) = self.confirmer.get() else {
            self.lock().answers.remove(&from);
            return;
        };
        let (member, epoch, id) = (renewal.member.clone(), renewal.epoch, renewal.id);
        let answering = confirm(from, Arrived { renewal, at }, vote);
        let mail = self.clone();
        tokio::spawn(async move {
            let answer = answering.await;
            let mut inner = mail.lock();
            let Some(a) = inner.answers.get_mut(&from).filter(|a| a.arrival == arrival) else { return };
            match answer {
                Ok(ttl) => {
                    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                    a.note = Some(LeaseNote { epoch, id, ttl_ms });
                }
                Err(why) => {
                    inner.answers.remove(&from);
                    tracing::debug!(%member, "carried lease renewal not confirmed: {why}");
                }
            }
        });
    }

    /// Leader: the note for the AppendEntries about to go to `target` with the leader's vote
    /// `vote`: the coordinator's confirmation of the renewal that peer carried last, if it is
    /// in (otherwise a later AppendEntries carries it) and was asked for under the same vote.
    /// Every renewal is answered at most once; one refused gets no note (its sender tries
    /// again by call).
    pub fn note_for(&self, target: u64, vote: &Vote) -> Option<LeaseNote> {
        let mut inner = self.lock();
        let answer = inner.answers.get(&target)?;
        if answer.vote != *vote {
            inner.answers.remove(&target);
            return None;
        }
        answer.note.as_ref()?;
        inner.answers.remove(&target).and_then(|a| a.note)
    }
}

#[cfg(test)]
#[path = "lease_mail_tests.rs"]
mod tests;
