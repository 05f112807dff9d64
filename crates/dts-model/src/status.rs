//! Task statuses and the transitions allowed between them.
//!
//! The store applies every status change through [`TaskStatus::can_transition_to`],
//! so a late or duplicated update (a slow API marking a task `SUBMITTED` after a
//! scheduler already planned it) is refused instead of silently overwriting newer
//! state.

use crate::reduce::ReduceStep;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a task is in its life. The JSON names are the seed's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskStatus {
    /// Stored, waiting for the tasks it names in `after` to end; released
    /// to `QUEUED` when they end as required.
    #[serde(rename = "WAITING")]
    Waiting,
    /// Stored, not yet on the bus.
    #[serde(rename = "QUEUED")]
    Queued,
    /// Publishing to the bus failed at least once; still trying.
    #[serde(rename = "RETRYING")]
    Retrying,
    /// Publishing failed after the last attempt. Terminal.
    #[serde(rename = "SUBMISSION_FAILED")]
    SubmissionFailed,
    /// On the bus, waiting for a scheduler to plan it.
    #[serde(rename = "SUBMITTED")]
    Submitted,
    /// Planned into shards; workers are running them.
    #[serde(rename = "INPROGRESS")]
    InProgress,
    /// Every item has its result; the task's `reduce` runs (or waits for a
    /// worker to run it) before the task ends.
    #[serde(rename = "REDUCING")]
    Reducing,
    /// Every item ran and exited 0. Terminal.
    #[serde(rename = "COMPLETED")]
    Completed,
    /// Every item ran and at least one failed after its retries. Terminal.
    #[serde(rename = "FAILED")]
    Failed,
    /// Cancelled by a client. Terminal.
    #[serde(rename = "CANCELLED")]
    Cancelled,
    /// Never ran: a task it waited for (`after`) did not end as required.
    /// Terminal.
    #[serde(rename = "SKIPPED")]
    Skipped,
}

impl TaskStatus {
    /// Every status, in the order of a task's life.
    pub const ALL: [TaskStatus; 11] = [
        TaskStatus::Waiting,
        TaskStatus::Queued,
        TaskStatus::Retrying,
        TaskStatus::SubmissionFailed,
        TaskStatus::Submitted,
        TaskStatus::InProgress,
        TaskStatus::Reducing,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
        TaskStatus::Skipped,
    ];

    /// The seed's spelling, used in JSON, the store and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Waiting => "WAITING",
            TaskStatus::Queued => "QUEUED",
            TaskStatus::Retrying => "RETRYING",
            TaskStatus::SubmissionFailed => "SUBMISSION_FAILED",
            TaskStatus::Submitted => "SUBMITTED",
            TaskStatus::InProgress => "INPROGRESS",
            TaskStatus::Reducing => "REDUCING",
            TaskStatus::Completed => "COMPLETED",
            TaskStatus::Failed => "FAILED",
            TaskStatus::Cancelled => "CANCELLED",
            TaskStatus::Skipped => "SKIPPED",
        }
    }

    /// A terminal status never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::SubmissionFailed
                | TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::Cancelled
                | TaskStatus::Skipped
        )
    }

    /// Whether a task may move from `self` to `next`.
    ///
    /// Publishing and planning race (a scheduler can plan a task before the API
    /// that published it has marked it `SUBMITTED`), so planning is allowed from
    /// every pre-planning status; a task with no items goes straight to
    /// `COMPLETED` when planned. A `WAITING` task is never published, so
    /// it leaves only by its release (to `QUEUED`), a skip or a cancel.
    pub fn can_transition_to(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        let before_planning = matches!(self, Queued | Retrying | Submitted);
        match next {
            Waiting => false,
            Queued => self == Waiting,
            Skipped => self == Waiting,
            Retrying => matches!(self, Queued | Retrying),
            SubmissionFailed => matches!(self, Queued | Retrying),
            Submitted => matches!(self, Queued | Retrying),
            InProgress => before_planning,
            Reducing => self == InProgress,
            Completed | Failed => before_planning || matches!(self, InProgress | Reducing),
            Cancelled => !self.is_terminal(),
        }
    }
}

impl TaskStatus {
    /// Whether a task that ended in `self` may be retried: run again, as
    /// the same task, for the items that failed or never ran. The one way
    /// back from a terminal status, kept out of [`TaskStatus::can_transition_to`]
    /// so no ordinary (late, duplicated) update can reopen an ended task:
    /// only the store's retry operation takes it, back to `INPROGRESS`. A
    /// task that never got a plan (`SUBMISSION_FAILED`) has nothing to
    /// rerun and is submitted again instead.
    pub fn can_retry(self) -> bool {
        matches!(self, TaskStatus::Failed | TaskStatus::Cancelled)
    }
}

/// Whether any of a task's items failed: all the completion rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemFailures {
    /// Every recorded item succeeded (or there were none).
    None,
    /// At least one item failed after its retries.
    Some,
}

impl ItemFailures {
    /// Both values, for callers that tabulate the rule (the Redis store).
    pub const ALL: [ItemFailures; 2] = [ItemFailures::None, ItemFailures::Some];

    /// From a task's `itemsFailed` counter.
    pub fn of(items_failed: u64) -> ItemFailures {
        if items_failed == 0 {
            ItemFailures::None
        } else {
            ItemFailures::Some
        }
    }
}

impl TaskStatus {
    /// The status a task takes when its last planned shard completes (or
    /// when it is planned with no shards at all): the one place the
    /// COMPLETED/FAILED/REDUCING decision is made, for every store. A task
    /// whose `reduce` is `Due` reduces first (crate::reduce); the
    /// reduce's record ends it.
    ///
    /// Only an `INPROGRESS` task ends here. A task that ended another way
    /// meanwhile — cancelled, or failed by the sweeper past its deadline —
    /// keeps its status: the last results of a task are often recorded
    /// after a cancel, and must not turn it into a success. The statuses
    /// before planning cannot have completed shards; they stay too.
    pub fn after_last_shard(self, failures: ItemFailures, reduce: ReduceStep) -> TaskStatus {
        use TaskStatus::*;
        match (self, failures, reduce) {
            (InProgress, _, ReduceStep::Due) => Reducing,
            (InProgress, ItemFailures::None, ReduceStep::None) => Completed,
            (InProgress, ItemFailures::Some, ReduceStep::None) => Failed,
            (Waiting | Queued | Retrying | SubmissionFailed | Submitted, _, _) => self,
            (Reducing | Completed | Failed | Cancelled | Skipped, _, _) => self,
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of [`TaskStatus::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown task status {0:?} (expected one of WAITING, QUEUED, RETRYING, SUBMISSION_FAILED, SUBMITTED, INPROGRESS, REDUCING, COMPLETED, FAILED, CANCELLED, SKIPPED)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for TaskStatus {
    type Err = UnknownStatus;

    /// Accepts the seed's names in any case; `IN_PROGRESS` is accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let wanted = if upper == "IN_PROGRESS" {
            "INPROGRESS"
        } else {
            upper.as_str()
        };
        TaskStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == wanted)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    #[test]
    fn terminal_statuses_never_change() {
        for from in TaskStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in TaskStatus::ALL {
                assert!(
                    !from.can_transition_to(to),
                    "{from} -> {to} must be illegal"
                );
            }
        }
    }

    #[test]
    fn the_normal_life_of_a_task_is_legal() {
        for (from, to) in [
            (Queued, Submitted),
            (Queued, Retrying),
            (Retrying, Submitted),
            (Retrying, SubmissionFailed),
            (Submitted, InProgress),
            (Queued, InProgress),
            (InProgress, Completed),
            (InProgress, Failed),
            (InProgress, Cancelled),
            (Submitted, Completed),
            (Queued, Cancelled),
            (Waiting, Queued),
            (Waiting, Skipped),
            (Waiting, Cancelled),
        ] {
            assert!(from.can_transition_to(to), "{from} -> {to} must be legal");
        }
    }

    #[test]
    fn going_backwards_is_illegal() {
        for (from, to) in [
            (InProgress, Submitted),
            (InProgress, Queued),
            (Submitted, Retrying),
            (InProgress, InProgress),
            (Submitted, SubmissionFailed),
            (Queued, Waiting),
            (Waiting, Submitted),
            (Waiting, InProgress),
            (Waiting, Completed),
            (Queued, Skipped),
            (InProgress, Skipped),
        ] {
            assert!(
                !from.can_transition_to(to),
                "{from} -> {to} must be illegal"
            );
        }
    }

    #[test]
    fn the_last_shard_ends_only_a_running_task_and_failures_decide_how() {
        let none = ReduceStep::None;
        assert_eq!(
            InProgress.after_last_shard(ItemFailures::None, none),
            Completed
        );
        assert_eq!(
            InProgress.after_last_shard(ItemFailures::Some, none),
            Failed
        );
        for status in TaskStatus::ALL.into_iter().filter(|s| *s != InProgress) {
            for failures in ItemFailures::ALL {
                for reduce in ReduceStep::ALL {
                    assert_eq!(
                        status.after_last_shard(failures, reduce),
                        status,
                        "{status} with {failures:?} and {reduce:?} must keep its status"
                    );
                }
            }
        }
        for failures in ItemFailures::ALL {
            let after = InProgress.after_last_shard(failures, none);
            assert!(after.is_terminal(), "{failures:?} gives {after}");
            assert!(InProgress.can_transition_to(after));
        }
    }

    #[test]
    fn a_due_reduce_comes_between_the_last_shard_and_the_end() {
        for failures in ItemFailures::ALL {
            assert_eq!(
                InProgress.after_last_shard(failures, ReduceStep::Due),
                Reducing
            );
        }
        assert!(!Reducing.is_terminal());
        assert!(InProgress.can_transition_to(Reducing));
        for to in [Completed, Failed, Cancelled] {
            assert!(Reducing.can_transition_to(to), "REDUCING -> {to}");
        }
        for from in [Queued, Submitted, Waiting, Completed, Failed] {
            assert!(!from.can_transition_to(Reducing), "{from} -> REDUCING");
        }
        assert!(!Reducing.can_retry());
    }

    #[test]
    fn only_a_failed_or_cancelled_task_can_be_retried() {
        let retryable: Vec<TaskStatus> = TaskStatus::ALL
            .into_iter()
            .filter(|s| s.can_retry())
            .collect();
        assert_eq!(retryable, vec![Failed, Cancelled]);
        for status in retryable {
            assert!(
                !status.can_transition_to(InProgress),
                "only a retry may reopen {status}"
            );
        }
    }

    #[test]
    fn any_failed_item_counts_as_a_failure() {
        assert_eq!(ItemFailures::of(0), ItemFailures::None);
        assert_eq!(ItemFailures::of(1), ItemFailures::Some);
        assert_eq!(ItemFailures::of(u64::MAX), ItemFailures::Some);
    }

    #[test]
    fn status_names_round_trip_through_text_and_json() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
            assert_eq!(
                status.as_str().to_lowercase().parse::<TaskStatus>(),
                Ok(status)
            );
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!("in_progress".parse::<TaskStatus>(), Ok(InProgress));
        assert!("DONE".parse::<TaskStatus>().is_err());
    }
}
