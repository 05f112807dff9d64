//! `reduce`: one script that runs after every item of a task has its
//! result, reading the results, and whose own result ends the task.
//!
//! A task submitted with `"reduce": {...}` runs its items as any task. When
//! its last shard completes, instead of ending it becomes `REDUCING` (if
//! `when` allows: every item succeeded, or `always`). A worker claims the
//! reduce, runs its script once with the items' results as JSON lines on
//! standard input, in index order, and records the reduce's result; that
//! record ends the task, `FAILED` if the reduce failed (or an item did), and
//! `COMPLETED` otherwise.
//!
//! A claim belongs to a worker; a worker that dies (its heartbeat lapses)
//! loses it, and the next claim runs the reduce again as a new attempt. The
//! record is taken only from the attempt that holds the claim, so a task
//! counts one reduce result however many ran.

use super::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// When the reduce runs (`reduce.when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ReduceWhen {
    /// `success`: only if every item succeeded; a task with a failed item
    /// ends `FAILED` without it (the default).
    #[default]
    Success,
    /// `always`: whatever the items' outcomes (a summary of failures too).
    Always,
}

impl ReduceWhen {
    /// Both values, in the API's spelling.
    pub const NAMES: [&'static str; 2] = ["success", "always"];

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReduceWhen::Success => "success",
            ReduceWhen::Always => "always",
        }
    }
}

impl fmt::Display for ReduceWhen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReduceWhen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "success" => Ok(ReduceWhen::Success),
            "always" => Ok(ReduceWhen::Always),
            other => Err(format!(
                "reduce.when must be success or always, not {other:?}"
            )),
        }
    }
}

/// A task's reduce step, as submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Reduce {
    /// The script, a template over the task's variables like the items'.
    pub template_function: String,
    /// The program that runs it (`bash` by default).
    pub interpreter: String,
    /// Its time limit, in seconds.
    pub timeout_secs: u64,
    /// When it runs.
    #[serde(default)]
    pub when: ReduceWhen,
}

impl Reduce {
    /// Whether a task whose items ended with `items_failed` failures
    /// reduces (else it ends as a task without a reduce would).
    pub fn runs_after(&self, items_failed: u64) -> bool {
        self.when == ReduceWhen::Always || items_failed == 0
    }
}

/// What the reduce's run did: recorded once, by the attempt that held the
/// claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReduceResult {
    /// The script's exit code; `None` when a signal ended it or it never
    /// ran.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// It ran past `timeoutSecs` and was killed.
    pub timed_out: bool,
    /// What it wrote to stdout, up to the worker's output cap.
    pub stdout: Bytes,
    /// What it wrote to stderr, up to the cap.
    pub stderr: Bytes,
    /// More stdout was written than the cap kept.
    pub stdout_truncated: bool,
    /// More stderr was written than the cap kept.
    pub stderr_truncated: bool,
    /// How long it ran.
    pub duration_ms: u64,
    /// The worker that ran it.
    pub worker: String,
    /// Which attempt this was (a worker that died mid-reduce costs one).
    pub attempt: u32,
    /// Why it could not run or was stopped, when that is the case.
    pub error: Option<String>,
}

impl ReduceResult {
    /// It ran and exited 0.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.error.is_none() && !self.timed_out
    }

    /// The task's `error` when the reduce failed: what a person needs to
    /// look at.
    pub fn failure_reason(&self) -> Option<String> {
        if self.succeeded() {
            return None;
        }
        let how = if self.timed_out {
            "timed out".to_string()
        } else if let Some(error) = &self.error {
            format!("failed: {error}")
        } else if let Some(signal) = self.signal {
            format!("was killed by signal {signal}")
        } else {
            match self.exit_code {
                Some(code) => format!("exited {code}"),
                None => "did not run".to_string(),
            }
        };
        Some(format!("the reduce {how} (attempt {})", self.attempt))
    }
}

/// What [`crate::TaskStatus::after_last_shard`] needs to know of a task's
/// reduce: whether one is due once the last shard completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceStep {
    /// No reduce, or one whose `when` the items' outcome does not meet.
    None,
    /// A reduce runs before the task ends.
    Due,
}

impl ReduceStep {
    /// Both values, for callers that tabulate the rule (the Redis store).
    pub const ALL: [ReduceStep; 2] = [ReduceStep::None, ReduceStep::Due];

    /// For a task with `reduce` whose items ended with `items_failed`
    /// failures.
    pub fn of(reduce: Option<&Reduce>, items_failed: u64) -> ReduceStep {
        match reduce {
            Some(reduce) if reduce.runs_after(items_failed) => ReduceStep::Due,
            _ => ReduceStep::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(exit_code: Option<i32>) -> ReduceResult {
        ReduceResult {
            exit_code,
            signal: None,
            timed_out: false,
            stdout: Bytes::default(),
            stderr: Bytes::default(),
            stdout_truncated: false,
            stderr_truncated: false,
            duration_ms: 5,
            worker: "w".into(),
            attempt: 2,
            error: None,
        }
    }

    #[test]
    fn a_reduce_runs_after_failures_only_when_always() {
        let mut reduce = Reduce {
            template_function: "wc -l".into(),
            interpreter: "bash".into(),
            timeout_secs: 60,
            when: ReduceWhen::Success,
        };
        assert!(reduce.runs_after(0));
        assert!(!reduce.runs_after(1));
        assert_eq!(ReduceStep::of(Some(&reduce), 1), ReduceStep::None);
        assert_eq!(ReduceStep::of(None, 0), ReduceStep::None);
        reduce.when = ReduceWhen::Always;
        assert!(reduce.runs_after(3));
        assert_eq!(ReduceStep::of(Some(&reduce), 3), ReduceStep::Due);
    }

    #[test]
    fn a_failed_reduce_says_how_and_which_attempt() {
        assert_eq!(result(Some(0)).failure_reason(), None);
        assert_eq!(
            result(Some(3)).failure_reason().as_deref(),
            Some("the reduce exited 3 (attempt 2)")
        );
        let timed_out = ReduceResult {
            timed_out: true,
            ..result(None)
        };
        assert_eq!(
            timed_out.failure_reason().as_deref(),
            Some("the reduce timed out (attempt 2)")
        );
    }

    #[test]
    fn when_reads_in_any_case_and_names_the_field_otherwise() {
        assert_eq!("ALWAYS".parse::<ReduceWhen>(), Ok(ReduceWhen::Always));
        assert!(
            "sometimes"
                .parse::<ReduceWhen>()
                .is_err_and(|e| e.contains("reduce.when"))
        );
    }
}
