//! pgquorum: the core's loop publishes its metrics only when a reader would see a change, and a
//! change of clock readings alone at most every half heartbeat interval (README-pgquorum.md,
//! item 6).
//!
//! Upstream rebuilds the whole of the metrics (their replication and heartbeat maps, twice over)
//! and sends them after every step of the loop, whether anything changed or not. On an idle
//! leader a step is a heartbeat going out or a follower's answer to one; on a follower, every
//! heartbeat received; and nothing changes but clock readings: when each follower last
//! acknowledged a heartbeat, and how long ago a quorum did (`millis_since_quorum_ack`, which
//! grows with time alone, so on a leader of more than one voter the clock readings count as
//! changed at every step). Now a step that changes anything else (state, term, vote, leader,
//! membership, a log id, replication progress, I/O progress) publishes at once, as before; one
//! that changes only clock readings publishes if the metrics were last published at least half
//! a heartbeat interval ago, else it is left for a later step. The leader steps at least once
//! per heartbeat interval (its tick), so it publishes about once per heartbeat, and an
//! acknowledgement reaches readers at most about one heartbeat late; a follower whose state
//! does not change publishes nothing.

use std::time::Duration;

use crate::RaftTypeConfig;
use crate::raft_state::IOId;
use crate::type_config::alias::InstantOf;
use crate::type_config::alias::LogIdOf;

/// What publishing the metrics now would change for a reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Anything but clock readings.
    pub(crate) state: bool,
    /// Clock readings: the times followers last acknowledged a heartbeat, the time since a
    /// quorum did.
    pub(crate) clock: bool,
}

/// Whether to publish now, given what would change, how long ago the metrics were last
/// published (`None`: never), and the least gap between publications of clock readings alone.
pub(crate) fn should_publish(changes: Changes, since_last: Option<Duration>, clock_gap: Duration) -> bool {
    changes.state || (changes.clock && since_last.is_none_or(|since| since >= clock_gap))
}

/// The I/O progress last published: log flushed, committed, applied, snapshot persisted.
pub(crate) type IoProgressSnapshot<C> =
    (Option<IOId<C>>, Option<LogIdOf<C>>, Option<LogIdOf<C>>, Option<LogIdOf<C>>);

/// What the core remembers of its last publication.
pub(crate) struct Published<C: RaftTypeConfig> {
    /// When it happened.
    pub(crate) at: Option<InstantOf<C>>,
    /// The I/O progress it sent (the other fields are compared with the metrics channels'
    /// current values).
    pub(crate) io: Option<IoProgressSnapshot<C>>,
}

impl<C: RaftTypeConfig> Default for Published<C> {
    fn default() -> Self {
        Published { at: None, io: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_millis(128);

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn a_change_of_state_publishes_at_once() {
        let state = Changes { state: true, clock: false };
        assert!(should_publish(state, ms(0), GAP));
        assert!(should_publish(Changes { clock: true, ..state }, ms(1), GAP));
    }

    #[test]
    fn nothing_changed_publishes_nothing_however_long_ago() {
        assert!(!should_publish(Changes::default(), ms(3_600_000), GAP));
    }

    #[test]
    fn clock_readings_alone_wait_for_the_gap() {
        let clock = Changes { state: false, clock: true };
        assert!(!should_publish(clock, ms(0), GAP));
        assert!(!should_publish(clock, ms(127), GAP));
        assert!(should_publish(clock, ms(128), GAP));
        assert!(should_publish(clock, ms(300), GAP));
    }

    #[test]
    fn the_first_publication_is_not_held_back() {
        assert!(should_publish(Changes { state: false, clock: true }, None, GAP));
        assert!(should_publish(Changes { state: true, clock: false }, None, GAP));
    }
}
