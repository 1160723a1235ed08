//! Apply rules: how each command changes `ClusterState`.
//!
//! Owns the guards that make commands safe to apply in any order Raft delivers them (epoch
//! compare-and-set, version compare-and-set, containment of sync sets). Must stay deterministic.

use super::command::{Command, CommandError, CommandOk, CommandResult, GrantReason};
use super::{ClusterState, HISTORY_LIMIT, HistoryEntry, PrimaryGrant, ScheduledBackup, SyncState};

pub(super) fn apply(s: &mut ClusterState, cmd: Command) -> CommandResult {
    if s.cluster_id.is_none() && !matches!(cmd, Command::InitCluster { .. }) {
        return Err(CommandError::NotInitialized);
    }
    match cmd {
        Command::InitCluster { cluster_id, config, at } => {
            if let Some(existing) = &s.cluster_id {
                return Err(CommandError::AlreadyInitialized { cluster_id: existing.clone() });
            }
            config.validate().map_err(|e| CommandError::Invalid(e.join("; ")))?;
            s.cluster_id = Some(cluster_id);
            s.initialized_at = Some(at);
            s.config = config;
            s.config_version = 1;
            Ok(CommandOk::Done)
        }
        Command::RecordSystemIdentifier { system_identifier, member: _ } => match s.system_identifier {
            Some(recorded) if recorded != system_identifier => {
                Err(CommandError::SystemIdentifierMismatch { recorded, got: system_identifier })
            }
            _ => {
                s.system_identifier = Some(system_identifier);
                Ok(CommandOk::Done)
            }
        },
        Command::GrantPrimary { expected_epoch, member, reason, sync, at, lsn, timeline, floor } => {
            if s.epoch != expected_epoch {
                return Err(CommandError::EpochMismatch { expected: expected_epoch, actual: s.epoch });
            }
            if s.paused && reason == GrantReason::Failover {
                return Err(CommandError::Paused);
            }
            let epoch = expected_epoch.next();
            // The member that held the role last, even if it released it (a switchover).
            let previous =
                s.primary.take().map(|p| p.member).or_else(|| s.history.last().map(|h| h.member.clone()));
            s.epoch = epoch;
            s.primary = Some(PrimaryGrant {
                member: member.clone(),
                epoch,
                since: at,
                expired: false,
                floor,
                longest_ttl_ms: None,
            });
            s.sync = SyncState { recorded: sync.clone(), target: sync };
            s.switchover = None;
            s.failover = None;
            s.history.push(HistoryEntry { epoch, member, previous, reason, at, lsn, timeline, floor });
            *s.grants.entry(reason).or_default() += 1;
            if s.history.len() > HISTORY_LIMIT {
                let excess = s.history.len() - HISTORY_LIMIT;
                s.history.drain(..excess);
            }
            Ok(CommandOk::Granted { epoch })
        }
        Command::ExpirePrimary { epoch } => match &mut s.primary {
            Some(p) if p.epoch == epoch => {
                p.expired = true;
                Ok(CommandOk::Done)
            }
            _ => Err(CommandError::EpochMismatch { expected: epoch, actual: s.epoch }),
        },
        Command::ReleasePrimary { epoch } => {
            if s.epoch != epoch || s.primary.is_none() {
                return Err(CommandError::EpochMismatch { expected: epoch, actual: s.epoch });
            }
            s.primary = None;
            Ok(CommandOk::Done)
        }
        Command::SetSync { epoch, recorded, target } => {
            if s.epoch != epoch {
                return Err(CommandError::EpochMismatch { expected: epoch, actual: s.epoch });
            }
            if !target.is_within(&recorded) {
                return Err(CommandError::Invalid(format!(
                    "synchronous target {target} is not within the recorded set {recorded}"
                )));
            }
            // The previous target may still be in effect on the primary: the new bound must
            // stand for it too, or acknowledged commits could escape the failover rule.
            if !s.sync.target.is_within(&recorded) {
                return Err(CommandError::Invalid(format!(
                    "recorded set {recorded} does not cover the current target {}; record their union first",
                    s.sync.target
                )));
            }
            s.sync = SyncState { recorded, target };
            Ok(CommandOk::Done)
        }
        Command::SetConfig { expected_version, config } => {
            if let Some(expected) = expected_version
                && expected != s.config_version
            {
                return Err(CommandError::ConfigVersionMismatch { expected, actual: s.config_version });
            }
            config.validate().map_err(|e| CommandError::Invalid(e.join("; ")))?;
            // A lowered ttl: leases already confirmed under the old one may still run.
            let old_ttl = s.config.ttl;
            if let Some(p) = s.primary.as_mut()
                && old_ttl > config.ttl
            {
                let old_ms = u64::try_from(old_ttl.as_millis()).unwrap_or(u64::MAX);
                p.longest_ttl_ms = Some(p.longest_ttl_ms.unwrap_or(0).max(old_ms));
            }
            s.config = config;
            s.config_version += 1;
            Ok(CommandOk::ConfigVersion { version: s.config_version })
        }
        Command::RequestSwitchover(req) => {
            if let Some(pending) = &s.switchover {
                return Err(CommandError::SwitchoverPending { from: pending.from.clone() });
            }
            match &s.primary {
                Some(p) if p.member == req.from => {}
                Some(p) => {
                    return Err(CommandError::Invalid(format!(
                        "{} is not the primary ({} is); nothing to switch over from",
                        req.from, p.member
                    )));
                }
                None => return Err(CommandError::Invalid("there is no primary to switch over from".into())),
            }
            if req.to.as_ref() == Some(&req.from) {
                return Err(CommandError::Invalid(format!("{} is already the primary", req.from)));
            }
            s.switchover = Some(req);
            Ok(CommandOk::Done)
        }
        Command::ClearSwitchover => {
            s.switchover = None;
            Ok(CommandOk::Done)
        }
        Command::SetSwitchoverTarget { from, to } => match &mut s.switchover {
            Some(req) if req.from == from && req.to.is_none() && to != from => {
                req.to = Some(to);
                Ok(CommandOk::Done)
            }
            _ => Err(CommandError::Invalid(format!("no pending switchover from {from} without a target"))),
        },
        Command::RequestFailover(req) => {
            if s.primary.as_ref().is_some_and(|p| p.member == req.to && !p.expired) {
                return Err(CommandError::Invalid(format!("{} is already the primary", req.to)));
            }
            s.failover = Some(req);
            Ok(CommandOk::Done)
        }
        Command::ClearFailover => {
            s.failover = None;
            Ok(CommandOk::Done)
        }
        Command::SetPaused { paused } => {
            s.paused = paused;
            Ok(CommandOk::Done)
        }
        Command::ClaimBackup { due, member, at } => {
            let handover = s
                .scheduled_backup
                .as_ref()
                .is_some_and(|b| b.due == due && b.outcome.is_none() && b.member != member);
            if let Some(b) = &s.scheduled_backup
                && b.due >= due
                && !handover
            {
                return Err(CommandError::Invalid(format!(
                    "the scheduled backup due at {} is claimed already (by {})",
                    due.0, b.member
                )));
            }
            s.scheduled_backup = Some(ScheduledBackup { due, member, claimed_at: at, outcome: None });
            Ok(CommandOk::Done)
        }
        Command::RecordBackup(b) => {
            if s.last_backup.as_ref().is_none_or(|l| l.at <= b.at) {
                s.last_backup = Some(b);
            }
            Ok(CommandOk::Done)
        }
        Command::FinishBackup { due, member, outcome } => match &mut s.scheduled_backup {
            Some(b) if b.due == due && b.member == member && b.outcome.is_none() => {
                b.outcome = Some(outcome);
                Ok(CommandOk::Done)
            }
            _ => Err(CommandError::Invalid(format!(
                "no unfinished scheduled backup due at {} is claimed by {member}",
                due.0
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DurabilityMode, DynamicConfig, SwitchoverRequest, SyncSet};
    use super::*;
    use crate::{Epoch, MemberName, SystemId, UnixMillis};

    fn m(n: &str) -> MemberName {
        MemberName::new(n).expect("valid")
    }

    fn initialized() -> ClusterState {
        let mut s = ClusterState::default();
        let init = Command::InitCluster {
            cluster_id: "c1".into(),
            config: DynamicConfig::default(),
            at: UnixMillis(1),
        };
        assert_eq!(s.apply(init), Ok(CommandOk::Done));
        s
    }

    fn grant(expected: u64, who: &str, reason: GrantReason) -> Command {
        Command::GrantPrimary {
            expected_epoch: Epoch(expected),
            member: m(who),
            reason,
            sync: SyncSet::none(),
            at: UnixMillis(10),
            lsn: None,
            timeline: None,
            floor: None,
        }
    }

    #[test]
    fn second_initialisation_is_refused_and_changes_nothing() {
        let mut s = initialized();
        let before = s.clone();
        let again = Command::InitCluster {
            cluster_id: "c2".into(),
            config: DynamicConfig::default(),
            at: UnixMillis(2),
        };
        assert_eq!(s.apply(again), Err(CommandError::AlreadyInitialized { cluster_id: "c1".into() }));
        assert_eq!(s, before);
    }

    #[test]
    fn commands_before_initialisation_are_refused() {
        let mut s = ClusterState::default();
        assert_eq!(s.apply(Command::SetPaused { paused: true }), Err(CommandError::NotInitialized));
    }

    #[test]
    fn grants_advance_the_epoch_and_refuse_stale_decisions() {
        let mut s = initialized();
        assert_eq!(
            s.apply(grant(0, "a", GrantReason::Bootstrap)),
            Ok(CommandOk::Granted { epoch: Epoch(1) })
        );
        assert_eq!(s.apply(grant(1, "b", GrantReason::Failover)), Ok(CommandOk::Granted { epoch: Epoch(2) }));
        let stale = s.apply(grant(1, "c", GrantReason::Failover));
        assert_eq!(stale, Err(CommandError::EpochMismatch { expected: Epoch(1), actual: Epoch(2) }));
        assert_eq!(s.primary.as_ref().map(|p| p.member.clone()), Some(m("b")));
        assert_eq!(s.history.len(), 2);
        assert_eq!(s.history[1].previous, Some(m("a")));
    }

    #[test]
    fn release_keeps_the_epoch_so_it_never_goes_backwards() {
        let mut s = initialized();
        s.apply(grant(0, "a", GrantReason::Bootstrap)).expect("granted");
        assert_eq!(s.apply(Command::ReleasePrimary { epoch: Epoch(1) }), Ok(CommandOk::Done));
        assert!(s.primary.is_none());
        assert_eq!(s.epoch, Epoch(1));
        assert_eq!(s.apply(grant(1, "b", GrantReason::Failover)), Ok(CommandOk::Granted { epoch: Epoch(2) }));
    }

    #[test]
    fn expiry_is_recorded_for_the_current_epoch_only() {
        let mut s = initialized();
        s.apply(grant(0, "a", GrantReason::Bootstrap)).expect("granted");
        assert!(matches!(
            s.apply(Command::ExpirePrimary { epoch: Epoch(7) }),
            Err(CommandError::EpochMismatch { .. })
        ));
        s.apply(Command::ExpirePrimary { epoch: Epoch(1) }).expect("expired");
        assert!(s.primary.as_ref().is_some_and(|p| p.expired));
        s.apply(grant(1, "b", GrantReason::Failover)).expect("granted");
        assert!(s.primary.as_ref().is_some_and(|p| !p.expired), "a new grant starts unexpired");
    }

    #[test]
    fn history_is_bounded_but_grant_counts_are_not() {
        let mut s = initialized();
        for e in 0..(HISTORY_LIMIT as u64 + 5) {
            s.apply(grant(e, "a", GrantReason::Failover)).expect("granted");
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.history.last().map(|h| h.epoch), Some(Epoch(HISTORY_LIMIT as u64 + 5)));
        assert_eq!(s.grants.get(&GrantReason::Failover), Some(&(HISTORY_LIMIT as u64 + 5)));
    }

    #[test]
    fn paused_cluster_refuses_automatic_failover_but_not_manual() {
        let mut s = initialized();
        s.apply(grant(0, "a", GrantReason::Bootstrap)).expect("granted");
        s.apply(Command::SetPaused { paused: true }).expect("paused");
        assert_eq!(s.apply(grant(1, "b", GrantReason::Failover)), Err(CommandError::Paused));
        assert!(s.apply(grant(1, "b", GrantReason::ManualFailover)).is_ok());
    }

    #[test]
    fn a_due_backup_is_claimed_once_and_handed_over_only_while_unfinished() {
        let mut s = initialized();
        let claim = |due: u64, who: &str| Command::ClaimBackup {
            due: crate::UnixMillis(due),
            member: m(who),
            at: crate::UnixMillis(due),
        };
        let finish = |due: u64, who: &str| Command::FinishBackup {
            due: crate::UnixMillis(due),
            member: m(who),
            outcome: Ok("id".into()),
        };
        s.apply(claim(60_000, "a")).expect("first claim");
        // Another coordinator (after a failover) proposing the same due time is refused...
        assert!(s.apply(claim(60_000, "a")).is_err());
        assert!(s.apply(claim(0, "b")).is_err());
        // ...unless it hands the unfinished claim to another member.
        s.apply(claim(60_000, "b")).expect("handover");
        assert!(s.apply(finish(60_000, "a")).is_err(), "only the current claimant finishes");
        s.apply(finish(60_000, "b")).expect("finished");
        assert!(s.apply(claim(60_000, "c")).is_err(), "a finished due time is never taken again");
        s.apply(claim(120_000, "c")).expect("the next due time");
    }

    #[test]
    fn sync_changes_must_cover_the_target_in_effect() {
        let mut s = initialized();
        let ab = SyncSet::any(1, [m("a"), m("b")]);
        let bc = SyncSet::any(1, [m("b"), m("c")]);
        let mut cmd = grant(0, "p", GrantReason::Bootstrap);
        if let Command::GrantPrimary { sync, .. } = &mut cmd {
            *sync = ab.clone();
        }
        s.apply(cmd).expect("granted");
        // Jumping straight from {a,b} to {b,c} would let a commit acked only by a escape.
        let direct = Command::SetSync { epoch: Epoch(1), recorded: bc.clone(), target: bc.clone() };
        assert!(matches!(s.apply(direct), Err(CommandError::Invalid(_))));
        // Through the union it is allowed.
        let union = ab.union(&bc);
        s.apply(Command::SetSync { epoch: Epoch(1), recorded: union.clone(), target: bc.clone() })
            .expect("union");
        s.apply(Command::SetSync { epoch: Epoch(1), recorded: bc.clone(), target: bc.clone() })
            .expect("narrow");
        assert_eq!(s.sync.recorded, bc);
        // A target outside the recorded set is refused.
        let bad = Command::SetSync { epoch: Epoch(1), recorded: bc.clone(), target: ab };
        assert!(matches!(s.apply(bad), Err(CommandError::Invalid(_))));
        let stale = Command::SetSync { epoch: Epoch(0), recorded: bc.clone(), target: bc };
        assert!(matches!(s.apply(stale), Err(CommandError::EpochMismatch { .. })));
    }

    #[test]
    fn config_changes_are_validated_and_compare_and_set() {
        let mut s = initialized();
        let mut c = s.config.clone();
        c.durability = DurabilityMode::Protection;
        let ok = s.apply(Command::SetConfig { expected_version: Some(1), config: c.clone() });
        assert_eq!(ok, Ok(CommandOk::ConfigVersion { version: 2 }));
        let stale = s.apply(Command::SetConfig { expected_version: Some(1), config: c.clone() });
        assert_eq!(stale, Err(CommandError::ConfigVersionMismatch { expected: 1, actual: 2 }));
        c.ttl = std::time::Duration::from_millis(10);
        assert!(matches!(
            s.apply(Command::SetConfig { expected_version: None, config: c }),
            Err(CommandError::Invalid(_))
        ));
        assert_eq!(s.config.durability, DurabilityMode::Protection);
    }

    #[test]
    fn system_identifier_is_recorded_once() {
        let mut s = initialized();
        let rec = |id| Command::RecordSystemIdentifier { system_identifier: SystemId(id), member: m("a") };
        s.apply(rec(7)).expect("recorded");
        s.apply(rec(7)).expect("same id again is fine");
        assert_eq!(
            s.apply(rec(8)),
            Err(CommandError::SystemIdentifierMismatch { recorded: SystemId(7), got: SystemId(8) })
        );
    }

    #[test]
    fn switchover_requests_name_the_current_primary_and_are_cleared_by_a_grant() {
        let mut s = initialized();
        let req = |from: &str, to: Option<&str>| {
            Command::RequestSwitchover(SwitchoverRequest {
                from: m(from),
                to: to.map(m),
                not_before: None,
                requested_at: UnixMillis(5),
            })
        };
        assert!(matches!(s.apply(req("a", None)), Err(CommandError::Invalid(_))));
        s.apply(grant(0, "a", GrantReason::Bootstrap)).expect("granted");
        assert!(matches!(s.apply(req("b", None)), Err(CommandError::Invalid(_))));
        assert!(matches!(s.apply(req("a", Some("a"))), Err(CommandError::Invalid(_))));
        s.apply(req("a", Some("b"))).expect("requested");
        assert_eq!(s.apply(req("a", None)), Err(CommandError::SwitchoverPending { from: m("a") }));
        s.apply(grant(1, "b", GrantReason::Switchover)).expect("granted");
        assert!(s.switchover.is_none());
    }
}
