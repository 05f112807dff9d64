//! What happened when one item ran; stored by the worker as the item's result.

use std::time::Duration;

/// The result of running one item. Built by [`crate::Executor::run`]; a
/// process that could not even start is an outcome too (with `error` set),
/// never a panic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Exit code, when the process exited on its own (or by a handled signal).
    pub exit_code: Option<i32>,
    /// The signal that killed the process, when one did.
    pub signal: Option<i32>,
    /// The per-item timeout expired and the process group was killed.
    pub timed_out: bool,
    /// The task was cancelled: the process group was killed, or the item was
    /// never started.
    pub cancelled: bool,
    /// Standard output, up to the cap, byte for byte.
    pub stdout: Vec<u8>,
    /// Standard error, up to the cap, byte for byte.
    pub stderr: Vec<u8>,
    /// Standard output was longer than the cap.
    pub stdout_truncated: bool,
    /// Standard error was longer than the cap.
    pub stderr_truncated: bool,
    /// Bytes written to standard output in all, past the cap too, so a user
    /// can be told by how much it was cut.
    pub stdout_bytes: u64,
    /// Bytes written to standard error in all, past the cap too.
    pub stderr_bytes: u64,
    /// Wall time from spawning until the output was collected.
    pub duration: Duration,
    /// Why the item could not run or be waited for, naming the program.
    pub error: Option<String>,
    /// The item never started because this worker ran short of descriptors,
    /// processes, memory or disk. That is not the item's fault: the worker
    /// runs it again later and does not count the attempt.
    pub worker_fault: bool,
}

impl ExecOutcome {
    /// True when the item ran to completion and exited 0.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.cancelled && self.error.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_clean_exit_zero_is_success() {
        let ok = ExecOutcome {
            exit_code: Some(0),
            ..Default::default()
        };
        assert!(ok.succeeded());
        assert!(
            !ExecOutcome {
                exit_code: Some(1),
                ..ok.clone()
            }
            .succeeded()
        );
        assert!(
            !ExecOutcome {
                exit_code: None,
                signal: Some(9),
                ..ok.clone()
            }
            .succeeded()
        );
        assert!(
            !ExecOutcome {
                timed_out: true,
                ..ok.clone()
            }
            .succeeded()
        );
        assert!(
            !ExecOutcome {
                cancelled: true,
                ..ok.clone()
            }
            .succeeded()
        );
        assert!(
            !ExecOutcome {
                error: Some("x".into()),
                ..ok
            }
            .succeeded()
        );
    }
}
