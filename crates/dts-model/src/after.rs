//! `after`: a task that waits for other tasks to end before it runs.
//!
//! A task submitted with `"after": [ids]` is stored `WAITING`. Once every
//! prerequisite has ended as `afterStatus` asks (`COMPLETED`, the default,
//! or `ENDED`: any end), it is released: it becomes `QUEUED` and is
//! published like any new task. If one ends otherwise it can never run,
//! and it ends `SKIPPED`, its reason naming that prerequisite.
//!
//! The rule is here, without I/O, so the engine's release loop and its
//! tests share it ([`After::verdict`]).
//!
//! No cycle can form: a prerequisite must exist when the task is
//! submitted, ids are dts's own, and a stored task's `after` never
//! changes; so a task can only wait for tasks older than itself.

use super::TaskStatus;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The most prerequisites one task may name.
pub const MAX_PREREQUISITES: usize = 100;

/// How a prerequisite must end for the waiting task to run
/// (`afterStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AfterStatus {
    /// `COMPLETED`: every item of every prerequisite succeeded.
    #[default]
    #[serde(rename = "COMPLETED")]
    Completed,
    /// `ENDED`: every prerequisite ended, however it did.
    #[serde(rename = "ENDED")]
    Ended,
}

impl AfterStatus {
    /// Both values.
    pub const ALL: [AfterStatus; 2] = [AfterStatus::Completed, AfterStatus::Ended];

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AfterStatus::Completed => "COMPLETED",
            AfterStatus::Ended => "ENDED",
        }
    }
}

impl fmt::Display for AfterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AfterStatus {
    type Err = String;

    /// `COMPLETED` or `ENDED`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_uppercase();
        AfterStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == wanted)
            .ok_or_else(|| format!("afterStatus must be COMPLETED or ENDED, not {s:?}"))
    }
}

/// The tasks a task waits for, and how they must end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct After {
    /// The prerequisites' ids, each once, in the order given.
    pub tasks: Vec<String>,
    /// How each must end.
    pub status: AfterStatus,
}

/// What a waiting task should do, given its prerequisites' statuses now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Some prerequisite is still running (or waiting itself).
    Wait,
    /// Every prerequisite ended as required: run the task.
    Release,
    /// A prerequisite ended otherwise, or is gone: the task can never run.
    /// The reason names the prerequisite.
    Skip(String),
}

impl After {
    /// The verdict, given `status_of` each prerequisite (`None` for a task
    /// the store no longer has: deleted or expired). A prerequisite that
    /// ended wrongly skips the task even while others still run: waiting
    /// longer cannot change the outcome.
    pub fn verdict(&self, mut status_of: impl FnMut(&str) -> Option<TaskStatus>) -> Verdict {
        let mut waiting = false;
        for id in &self.tasks {
            match status_of(id) {
                None => {
                    return Verdict::Skip(format!(
                        "prerequisite task {id} no longer exists (deleted or expired), so whether it ended {} cannot be known",
                        self.status
                    ));
                }
                Some(status) if !status.is_terminal() => waiting = true,
                Some(TaskStatus::Completed) => {}
                Some(_) if self.status == AfterStatus::Ended => {}
                Some(status) => {
                    return Verdict::Skip(format!(
                        "prerequisite task {id} ended {status}, and this task runs only after it is COMPLETED (afterStatus)"
                    ));
                }
            }
        }
        if waiting {
            Verdict::Wait
        } else {
            Verdict::Release
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;
    use std::collections::HashMap;

    fn after(status: AfterStatus) -> After {
        After {
            tasks: vec!["a".into(), "b".into()],
            status,
        }
    }

    fn verdict(after: &After, statuses: &[(&str, TaskStatus)]) -> Verdict {
        let known: HashMap<&str, TaskStatus> = statuses.iter().copied().collect();
        after.verdict(|id| known.get(id).copied())
    }

    #[test]
    fn a_task_waits_until_every_prerequisite_completed() {
        let after = after(AfterStatus::Completed);
        assert_eq!(
            verdict(&after, &[("a", Completed), ("b", InProgress)]),
            Verdict::Wait
        );
        assert_eq!(
            verdict(&after, &[("a", Waiting), ("b", Completed)]),
            Verdict::Wait
        );
        assert_eq!(
            verdict(&after, &[("a", Completed), ("b", Completed)]),
            Verdict::Release
        );
    }

    #[test]
    fn a_prerequisite_that_ended_otherwise_skips_the_task_and_is_named() {
        let after = after(AfterStatus::Completed);
        for ended in [Failed, Cancelled, SubmissionFailed, Skipped] {
            let Verdict::Skip(reason) = verdict(&after, &[("a", InProgress), ("b", ended)]) else {
                panic!("{ended} must skip the task");
            };
            assert!(
                reason.contains("task b ended") && reason.contains(ended.as_str()),
                "{reason}"
            );
        }
    }

    #[test]
    fn with_ended_any_end_releases_the_task() {
        let after = after(AfterStatus::Ended);
        assert_eq!(
            verdict(&after, &[("a", Failed), ("b", Cancelled)]),
            Verdict::Release
        );
        assert_eq!(
            verdict(&after, &[("a", Failed), ("b", Submitted)]),
            Verdict::Wait
        );
    }

    #[test]
    fn a_prerequisite_that_is_gone_skips_the_task_whatever_is_required() {
        for status in [AfterStatus::Completed, AfterStatus::Ended] {
            let Verdict::Skip(reason) = verdict(&after(status), &[("a", Completed)]) else {
                panic!("a missing prerequisite must skip the task");
            };
            assert!(reason.contains("task b no longer exists"), "{reason}");
        }
    }

    #[test]
    fn after_status_reads_its_two_names_in_any_case() {
        assert_eq!("completed".parse(), Ok(AfterStatus::Completed));
        assert_eq!("ENDED".parse(), Ok(AfterStatus::Ended));
        assert!(
            "FAILED"
                .parse::<AfterStatus>()
                .unwrap_err()
                .contains("afterStatus")
        );
    }
}
