//! Can this member's data follow the primary, or did it diverge (needs `pg_rewind`)?
//!
//! A timeline ends at a switch point (the primary's history file says where). Data on an older
//! timeline is compatible only if it does not go past that point; data on a newer or unrelated
//! timeline never is. When the end of local WAL is unknown (a crashed former primary), the
//! answer is `Unknown` and the caller rewinds: pg_rewind itself reports "no rewind required".

use crate::ha::observation::{DataDir, Running};
use crate::{Lsn, Timeline};

/// The verdict.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Compat {
    /// Can stream from the primary as it is.
    Compatible,
    /// Holds WAL the primary's history does not contain.
    Diverged,
    /// Cannot tell without looking at the WAL.
    Unknown,
}

/// Where `history` says `tli` ended.
pub fn switch_point(history: &[(Timeline, Lsn)], tli: Timeline) -> Option<Lsn> {
    history.iter().find(|(t, _)| *t == tli).map(|(_, l)| *l)
}

/// Compares a position `lsn` on timeline `tli` with a primary on `primary_tli`.
pub fn position(
    tli: Timeline,
    lsn: Option<Lsn>,
    primary_tli: Timeline,
    history: &[(Timeline, Lsn)],
) -> Compat {
    if tli == primary_tli {
        return Compat::Compatible;
    }
    if tli > primary_tli {
        return Compat::Diverged;
    }
    match (switch_point(history, tli), lsn) {
        (None, _) => Compat::Diverged,
        (Some(sp), Some(l)) if l > sp => Compat::Diverged,
        (Some(_), Some(_)) => Compat::Compatible,
        (Some(_), None) => Compat::Unknown,
    }
}

/// Describes a comparison for logs: "at 0/3000 on timeline 1; the primary's timeline 1 ended at 0/2000".
pub fn explain(
    tli: Timeline,
    lsn: Option<Lsn>,
    primary_tli: Timeline,
    history: &[(Timeline, Lsn)],
) -> String {
    let at = lsn.map_or("an unknown position".to_string(), |l| l.to_string());
    match switch_point(history, tli) {
        Some(sp) => format!(
            "at {at} on timeline {tli}; the primary's timeline {tli} ended at {sp} (it is on {primary_tli})"
        ),
        None => format!(
            "at {at} on timeline {tli}, which is not in the primary's history (it is on {primary_tli})"
        ),
    }
}

/// The position a stopped data directory's verdict ([`data`]) is about: a standby's minimum
/// recovery point (or last checkpoint), a former primary's last checkpoint, unknown after a
/// crash.
pub fn data_position(d: &DataDir) -> (Timeline, Option<Lsn>) {
    match d.min_recovery {
        Some((t, l)) if !d.was_primary => (t, Some(l)),
        _ => (d.timeline, (!d.was_primary || d.clean_shutdown).then_some(d.checkpoint_lsn)),
    }
}

/// After `pg_rewind` succeeded, whether the data can now follow a primary on `primary_tli`
/// with `history`. pg_rewind reports "no rewind required" when the local WAL does not go past
/// the point where the timelines split; but a standby promoted from outside the agent and
/// fenced at once keeps its own new timeline (its minimum recovery point is on it), which
/// Postgres then refuses to leave for the primary's, so rewinding again changes nothing.
/// `Err` says why: the caller counts the rewind as failed (the member re-clones when
/// `reclone_on_rewind_failure` is on).
pub fn after_rewind(d: &DataDir, primary_tli: Timeline, history: &[(Timeline, Lsn)]) -> Result<(), String> {
    if data(d, primary_tli, history) != Compat::Diverged {
        return Ok(());
    }
    let (t, l) = data_position(d);
    Err(format!(
        "pg_rewind left the data diverged: {}; it has nothing to rewind, so only a new clone can follow the primary",
        explain(t, l, primary_tli, history)
    ))
}

/// Verdict for a stopped data directory.
pub fn data(d: &DataDir, primary_tli: Timeline, history: &[(Timeline, Lsn)]) -> Compat {
    if d.was_primary {
        // A clean shutdown ends with the shutdown checkpoint; after a crash the WAL may go on.
        return position(d.timeline, d.clean_shutdown.then_some(d.checkpoint_lsn), primary_tli, history);
    }
    // A standby's data files reflect WAL up to its minimum recovery point (a consistent
    // timeline and position pair), at least its last restartpoint.
    match d.min_recovery {
        Some((t, l)) if (t, l) >= (d.timeline, d.checkpoint_lsn) => {
            position(t, Some(l), primary_tli, history)
        }
        _ => position(d.timeline, Some(d.checkpoint_lsn), primary_tli, history),
    }
}

/// Verdict for a running standby. One that streams from the primary is compatible: Postgres
/// checked the timeline history when it connected. Otherwise its minimum recovery point tells
/// whether its data went past the switch point; without one, nothing is known yet.
pub fn running(r: &Running, primary_tli: Timeline, history: &[(Timeline, Lsn)]) -> Compat {
    if r.streaming {
        return Compat::Compatible;
    }
    match r.min_recovery {
        Some((t, l)) => position(t, Some(l), primary_tli, history),
        None => Compat::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dd(tli: u32, ckpt: u64, was_primary: bool, clean: bool, minrec: Option<u64>) -> DataDir {
        DataDir {
            system_identifier: crate::SystemId(1),
            timeline: Timeline(tli),
            was_primary,
            clean_shutdown: clean,
            checkpoint_lsn: Lsn(ckpt),
            min_recovery: minrec.map(|l| (Timeline(tli), Lsn(l))),
        }
    }

    const HIST: &[(Timeline, Lsn)] = &[(Timeline(1), Lsn(1000))];

    #[test]
    fn cleanly_stopped_former_primary_behind_the_switch_point_follows_without_rewind() {
        assert_eq!(data(&dd(1, 900, true, true, None), Timeline(2), HIST), Compat::Compatible);
    }

    #[test]
    fn crashed_former_primary_is_unknown_so_it_is_rewound() {
        assert_eq!(data(&dd(1, 900, true, false, None), Timeline(2), HIST), Compat::Unknown);
    }

    #[test]
    fn standby_that_replayed_past_the_switch_point_diverged() {
        assert_eq!(data(&dd(1, 800, false, true, Some(1200)), Timeline(2), HIST), Compat::Diverged);
        assert_eq!(data(&dd(1, 800, false, true, Some(999)), Timeline(2), HIST), Compat::Compatible);
    }

    #[test]
    fn standby_whose_recovery_point_moved_to_the_new_timeline_is_compatible() {
        let mut d = dd(1, 800, false, true, None);
        d.min_recovery = Some((Timeline(2), Lsn(1500)));
        assert_eq!(data(&d, Timeline(2), HIST), Compat::Compatible);
    }

    #[test]
    fn a_rewind_that_leaves_a_standby_on_a_timeline_of_its_own_failed() {
        // Seen after an operator's pg_promote() on a replica its agent fenced at once:
        // pg_rewind found "no rewind required", and the standby stayed on timeline 2 at
        // 0/4018068 while the primary is on 1, rewound again every 17 ms (7491 times in 2 min).
        let mut d = dd(1, 0x400_0028, false, false, None);
        d.min_recovery = Some((Timeline(2), Lsn(0x401_8068)));
        let err = after_rewind(&d, Timeline(1), &[]).expect_err("still diverged");
        assert!(err.contains("on timeline 2, which is not in the primary's history"), "{err}");
        assert!(err.contains("new clone"), "{err}");
        // Rewound as it should be, or back behind the switch point: nothing to say.
        d.min_recovery = Some((Timeline(1), Lsn(0x401_8068)));
        assert_eq!(after_rewind(&d, Timeline(1), &[]), Ok(()));
        assert_eq!(after_rewind(&dd(1, 800, false, true, Some(999)), Timeline(2), HIST), Ok(()));
        // A crashed former primary stays unknown: pg_rewind's own recovery settles it.
        assert_eq!(after_rewind(&dd(1, 900, true, false, None), Timeline(2), HIST), Ok(()));
    }

    #[test]
    fn newer_or_unrelated_timelines_diverged() {
        assert_eq!(position(Timeline(3), Some(Lsn(1)), Timeline(2), HIST), Compat::Diverged);
        assert_eq!(position(Timeline(5), Some(Lsn(1)), Timeline(7), HIST), Compat::Diverged);
        assert_eq!(position(Timeline(2), Some(Lsn(5000)), Timeline(2), HIST), Compat::Compatible);
    }
}
