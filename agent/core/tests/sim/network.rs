//! The simulated network: messages between agents, lost or delayed at random, and partitions
//! that cut every kind of traffic between groups (Raft, peer reports, lease renewals and WAL
//! streaming all ask `connected`).
//!
//! Owns delivery only. What a message means is the world's business.

use std::time::Duration;

use pgquorum_core::Epoch;
use pgquorum_core::ha::observation::Report;

use super::clock::Rng;

/// A member's index in the simulation.
pub type Id = usize;

/// What agents tell each other.
#[derive(Clone, Debug)]
pub enum Msg {
    /// A member's status, broadcast every tick.
    Report(Box<Report>),
    /// A primary asks the Raft leader to confirm its lease; `sent` is its own send time.
    RenewRequest { epoch: Epoch, sent: Duration },
    /// The leader's answer: the ttl confirmed, or `None` when refused.
    RenewAnswer { epoch: Epoch, sent: Duration, ttl: Option<Duration> },
    /// The coordinator asks a replica to stop streaming from the primary of `epoch`.
    StopStreaming { epoch: Epoch },
}

/// A message on its way.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// When it arrives.
    pub at: Duration,
    /// Sender.
    pub from: Id,
    /// Receiver.
    pub to: Id,
    /// Content.
    pub msg: Msg,
}

/// Links between members: connected unless a partition separates them.
#[derive(Debug)]
pub struct Network {
    /// Partition group of each member; members talk only within their group.
    group: Vec<u8>,
    queue: Vec<Envelope>,
    /// Probability that a message is lost.
    pub loss: f64,
    /// One-way delay range in milliseconds.
    pub delay_ms: (u64, u64),
}

impl Network {
    /// A fully connected network of `n` members.
    pub fn new(n: usize) -> Network {
        Network { group: vec![0; n], queue: Vec::new(), loss: 0.01, delay_ms: (1, 12) }
    }

    /// Whether `a` and `b` can talk now.
    pub fn connected(&self, a: Id, b: Id) -> bool {
        a == b || self.group[a] == self.group[b]
    }

    /// Splits the members: those in `side` on one side, the rest on the other.
    pub fn partition(&mut self, side: &[Id]) {
        for (i, g) in self.group.iter_mut().enumerate() {
            *g = u8::from(side.contains(&i));
        }
    }

    /// Whether any partition is in place.
    pub fn partitioned(&self) -> bool {
        self.group.iter().any(|g| *g != self.group[0])
    }

    /// Reconnects everyone.
    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
    }

    /// Sends `msg`; it may be lost (always when the link is cut) and arrives after a delay.
    pub fn send(&mut self, rng: &mut Rng, now: Duration, from: Id, to: Id, msg: Msg) {
        if !self.connected(from, to) || (from != to && rng.chance(self.loss)) {
            return;
        }
        let at = if from == to { now } else { now + rng.ms(self.delay_ms.0, self.delay_ms.1) };
        self.queue.push(Envelope { at, from, to, msg });
    }

    /// Removes and returns the messages due by `now` whose link is still up, oldest first.
    pub fn due(&mut self, now: Duration) -> Vec<Envelope> {
        let (mut ready, rest): (Vec<Envelope>, Vec<Envelope>) =
            self.queue.drain(..).partition(|e| e.at <= now);
        self.queue = rest;
        ready.retain(|e| self.connected(e.from, e.to));
        ready.sort_by_key(|e| e.at);
        ready
    }
}
