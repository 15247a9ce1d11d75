//! The status of a job as a service tracks it, from submission to its end: one type wherever a
//! status is named (stored, compared, sent), so that a misspelt status cannot compile.
//!
//! A run's own result is [`crate::exec::RunStatus`]; it converts into the final `JobStatus` of
//! the same name (the conversion lives with `RunStatus`, which takes its names from here).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// A workflow's job whose requirements are not met yet.
    Waiting,
    /// Accepted to start at a given time (`scheduled_at`); queued then.
    Scheduled,
    /// Accepted, waiting for a slot.
    Queued,
    Packing,
    /// Packed: final for a pack-only job (`run: false`), else about to run.
    Packed,
    Running,
    Completed,
    Failed,
    Stopped,
    TimedOut,
    OomKilled,
    LimitExceeded,
    /// A workflow's job whose requirements can no longer be met (it never ran).
    Skipped,
}

/// The gRPC job service's word (seed 004) for a status name: INITIALIZING (waiting, queued,
/// packing, packed), SCHEDULED, RUNNING, COMPLETED, FAILED (failed, timed_out, oom_killed,
/// limit_exceeded, skipped), STOPPED.
pub fn joblet_word(status: &str) -> &'static str {
    match status {
        "running" => "RUNNING",
        "completed" => "COMPLETED",
        "stopped" => "STOPPED",
        "scheduled" => "SCHEDULED",
        "failed" | "timed_out" | "oom_killed" | "limit_exceeded" | "skipped" => "FAILED",
        _ => "INITIALIZING",
    }
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 13] = [
        JobStatus::Waiting,
        JobStatus::Scheduled,
        JobStatus::Queued,
        JobStatus::Packing,
        JobStatus::Packed,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Stopped,
        JobStatus::TimedOut,
        JobStatus::OomKilled,
        JobStatus::LimitExceeded,
        JobStatus::Skipped,
    ];

    /// The statuses a job never leaves (whatever `run` is).
    pub const FINAL: [JobStatus; 7] = [
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Stopped,
        JobStatus::TimedOut,
        JobStatus::OomKilled,
        JobStatus::LimitExceeded,
        JobStatus::Skipped,
    ];

    /// The name used in the API, the store and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Waiting => "waiting",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Queued => "queued",
            JobStatus::Packing => "packing",
            JobStatus::Packed => "packed",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Stopped => "stopped",
            JobStatus::TimedOut => "timed_out",
            JobStatus::OomKilled => "oom_killed",
            JobStatus::LimitExceeded => "limit_exceeded",
            JobStatus::Skipped => "skipped",
        }
    }

    /// Whether a job in this status has ended for good (a run's end, or `skipped`).
    pub fn is_final(self) -> bool {
        Self::FINAL.contains(&self)
    }

    /// Whether a job that does (`run`) or does not run after packing has ended: `packed` is the
    /// end of a pack-only job.
    pub fn is_final_for(self, run: bool) -> bool {
        self.is_final() || (!run && self == JobStatus::Packed)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown status {0:?}: expected one of waiting, scheduled, queued, packing, packed, running, completed, failed, stopped, timed_out, oom_killed, limit_exceeded, skipped"
)]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<JobStatus, UnknownStatus> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_finality_is_per_run() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("done".parse::<JobStatus>().is_err());
        assert!(JobStatus::Skipped.is_final() && !JobStatus::Running.is_final());
        assert!(JobStatus::Packed.is_final_for(false) && !JobStatus::Packed.is_final_for(true));
        assert_eq!(
            JobStatus::from(crate::exec::RunStatus::OomKilled),
            JobStatus::OomKilled
        );
        assert_eq!(
            crate::workflow::FINAL,
            JobStatus::FINAL.map(JobStatus::as_str)
        );
    }
}
