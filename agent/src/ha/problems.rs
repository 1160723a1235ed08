//! Saying why the local Postgres does not work, in its own words: when it exits, the FATAL line
//! it logged (and the restart backoff that follows); while a standby does not stream, its WAL
//! receiver's last error. Each is logged once per change and published in the member's report.
//!
//! Reads Postgres's output file only on a failure or while a standby is not streaming; the
//! status query every tick already says whether the receiver streams, so nothing here adds SQL.

use std::process::ExitStatus;
use std::time::Duration;

use pgquorum_core::ha::observation::{Problem, ProblemKind};
use pgquorum_core::ha::rules::restart;

use super::Ha;
use crate::postgres::log;
use crate::postgres::sql::Status;

impl Ha {
    /// Postgres exited on its own (`output`: what it wrote since its start): count the failure
    /// for the backoff and record why.
    pub(super) fn postgres_exited(&mut self, status: ExitStatus, output: &str, now: Duration) {
        let ran = now.saturating_sub(self.local.started_at.unwrap_or(now));
        let killed = std::os::unix::process::ExitStatusExt::signal(&status).is_some();
        let failures = restart::failures_after_exit(self.local.start_failures, ran, killed, &self.hacfg);
        self.local.start_failures = failures;
        let message = log::start_failure(output).unwrap_or_else(|| {
            format!("no FATAL line in its output ({}); exit {status}", self.pg().log.display())
        });
        let wait = restart::delay(failures, &self.hacfg);
        let problem = Problem { kind: ProblemKind::Start, message: message.clone(), failures };
        let ran = pgquorum_core::duration::format(ran);
        let wait = pgquorum_core::duration::format(wait);
        if self.local.set_problem(Some(problem)) {
            tracing::warn!(
                "Postgres exited ({status}) after {ran}: {message}; starting it again in {wait} \
                 (failed starts in a row: {failures}; the wait doubles with each, up to {})",
                pgquorum_core::duration::format(self.hacfg.restart_backoff_max)
            );
        } else {
            tracing::debug!(
                "Postgres exited again ({status}) after {ran}; next start in {wait} (failure {failures})"
            );
        }
    }

    /// After a status reading: a start problem is over; a standby that should stream but does
    /// not gets its receiver's last logged error as a problem, one that streams loses it.
    pub(super) fn check_streaming(&mut self, s: &Status) {
        self.local.clear_problem(ProblemKind::Start, "Postgres runs again");
        let should_stream = s.in_recovery && self.local.conf_standby && self.local.upstream.is_some();
        if !should_stream || s.receiver.as_deref() == Some("streaming") {
            self.local.clear_problem(ProblemKind::Replication, "the WAL receiver streams again");
            return;
        }
        let Some(pm) = self.local.postmaster.as_mut() else { return };
        let output = match pm.output.read_new() {
            Ok(text) => text,
            Err(e) => {
                tracing::debug!("reading Postgres's output: {e}");
                return;
            }
        };
        let Some(message) = log::receiver_error(&output) else { return };
        let upstream = self.local.upstream.as_ref().map(|m| m.to_string()).unwrap_or_default();
        let problem = Problem { kind: ProblemKind::Replication, message: message.clone(), failures: 0 };
        if self.local.set_problem(Some(problem)) {
            tracing::warn!("cannot stream from {upstream}: {message}");
        }
    }
}
