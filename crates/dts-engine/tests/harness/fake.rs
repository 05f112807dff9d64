//! The fake item runner: items are stretches of simulated time.
//!
//! An item's input says what it does, as words separated by spaces (any
//! other word is a label and ignored):
//! - `250ms`, `3s`: how long it runs (1 s when not given);
//! - `exit=N`: its exit code (0 when not given);
//! - `fails=N`: its first N starts (on any worker) exit 1, later ones 0;
//! - `out=TEXT`: its stdout (the whole input when not given);
//! - `hang`: it runs until it is cancelled or times out;
//! - `crash`: after its run time it kills its worker, as `kill $PPID` would.
//!
//! A task's reduce runs here as an item whose words are its script (the
//! reduce's rendered template, e.g. `20s exit=3`), as the index after the
//! last item, with the results stream dropped; its starts are logged with
//! `reduce` set.
//!
//! Every start is recorded in the [`StartLog`] the tests read.

use super::life::Life;
use async_trait::async_trait;
use dts_engine::worker::{ItemRunner, Slot};
use dts_executor::{ExecOutcome, ItemContext, OutputTap, Program, StdinSource};
use dts_model::{DynClock, Isolation};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One start of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub task: String,
    pub shard: u32,
    pub index: u64,
    pub input: String,
    /// The attempt the worker will record the result with.
    pub attempt: u32,
    pub worker: String,
    /// Simulated milliseconds since the harness started.
    pub at_ms: u64,
    /// A start of the task's reduce, not of an item (`index` is then the
    /// task's item count, `input` its script).
    pub reduce: bool,
}

/// Every item start, in the order they happened. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StartLog {
    starts: Arc<Mutex<Vec<Start>>>,
}

impl StartLog {
    pub fn all(&self) -> Vec<Start> {
        self.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn push(&self, start: Start) -> usize {
        let mut starts = self.starts.lock().unwrap_or_else(|p| p.into_inner());
        let before = starts
            .iter()
            .filter(|s| s.task == start.task && s.index == start.index)
            .count();
        starts.push(start);
        before
    }
}

/// What an item's input asks of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    pub run: Duration,
    pub exit: i32,
    pub fails: usize,
    pub stdout: Option<String>,
    pub hang: bool,
    pub crash: bool,
}

impl Behaviour {
    pub fn of(input: &str) -> Behaviour {
        let mut behaviour = Behaviour {
            run: Duration::from_secs(1),
            exit: 0,
            fails: 0,
            stdout: None,
            hang: false,
            crash: false,
        };
        for word in input.split_whitespace() {
            if word == "hang" {
                behaviour.hang = true;
            } else if word == "crash" {
                behaviour.crash = true;
            } else if let Some(code) = word.strip_prefix("exit=") {
                behaviour.exit = code.parse().unwrap_or(1);
            } else if let Some(n) = word.strip_prefix("fails=") {
                behaviour.fails = n.parse().unwrap_or(0);
            } else if let Some(text) = word.strip_prefix("out=") {
                behaviour.stdout = Some(text.to_string());
            } else if let Some(ms) = word.strip_suffix("ms").and_then(|n| n.parse().ok()) {
                behaviour.run = Duration::from_millis(ms);
            } else if let Some(s) = word.strip_suffix('s').and_then(|n| n.parse().ok()) {
                behaviour.run = Duration::from_secs(s);
            }
        }
        behaviour
    }
}

/// The runner of one simulated worker.
pub struct FakeRunner {
    pub worker: String,
    pub life: Life,
    pub log: StartLog,
    pub clock: DynClock,
    /// The clock's reading when the harness started.
    pub epoch_ms: u64,
    /// Every item runs this many times its run time here: a slow machine.
    pub slowdown: u32,
}

enum End {
    Killed,
    Exited,
    TimedOut,
    Cancelled,
}

#[async_trait]
impl ItemRunner for FakeRunner {
    fn isolation(&self) -> Isolation {
        Isolation {
            containment: "fake".into(),
            run_as: None,
            private_workdir: false,
            limits: Vec::new(),
        }
    }

    fn prepare(&self, script: &str, interpreter: &str) -> Program {
        Program::Script {
            interpreter: interpreter.to_string(),
            script: script.to_string(),
        }
    }

    async fn run(
        &self,
        _program: &Program,
        item: &ItemContext<'_>,
        attempt: u32,
        timeout: Duration,
        cancel: &CancellationToken,
        slot: Slot<'_>,
        _tap: Option<&dyn OutputTap>,
    ) -> ExecOutcome {
        // The fake's inputs are words that say what to do: text.
        let input = String::from_utf8_lossy(item.input).into_owned();
        self.simulate(input, false, item, attempt, timeout, cancel, slot)
            .await
    }

    async fn run_streamed(
        &self,
        program: &Program,
        item: &ItemContext<'_>,
        stdin: StdinSource,
        attempt: u32,
        timeout: Duration,
        cancel: &CancellationToken,
        slot: Slot<'_>,
    ) -> ExecOutcome {
        // Only a reduce streams its stdin: its script says what it does.
        drop(stdin);
        let script = match program {
            Program::Script { script, .. } => script.clone(),
            Program::Direct(path) => path.display().to_string(),
        };
        self.simulate(script, true, item, attempt, timeout, cancel, slot)
            .await
    }
}

impl FakeRunner {
    /// Runs one item (a reduce if `reduce`) doing what the words of `input`
    /// say.
    #[allow(clippy::too_many_arguments)]
    async fn simulate(
        &self,
        input: String,
        reduce: bool,
        item: &ItemContext<'_>,
        attempt: u32,
        timeout: Duration,
        cancel: &CancellationToken,
        slot: Slot<'_>,
    ) -> ExecOutcome {
        self.life.freeze_if_dead().await;
        if cancel.is_cancelled() {
            return ExecOutcome {
                cancelled: true,
                ..ExecOutcome::default()
            };
        }
        let earlier_starts = self.log.push(Start {
            task: item.task_id.to_string(),
            shard: item.shard_index,
            index: item.index,
            input: input.clone(),
            attempt,
            worker: self.worker.clone(),
            at_ms: self.clock.now_millis().saturating_sub(self.epoch_ms),
            reduce,
        });
        let behaviour = Behaviour::of(&input);
        let started = tokio::time::Instant::now();
        let end = tokio::select! {
            biased;
            _ = self.life.died() => End::Killed,
            _ = cancel.cancelled() => End::Cancelled,
            _ = tokio::time::sleep(behaviour.run * self.slowdown), if !behaviour.hang => End::Exited,
            _ = tokio::time::sleep(timeout) => End::TimedOut,
        };
        if matches!(end, End::Killed) {
            // A dead worker's item never ends.
            std::future::pending::<()>().await;
        }
        drop(slot);
        if behaviour.crash && matches!(end, End::Exited) {
            self.life.kill();
            self.life.freeze_if_dead().await;
        }
        let duration = started.elapsed();
        match end {
            End::Killed | End::Cancelled => ExecOutcome {
                cancelled: true,
                signal: Some(15),
                duration,
                ..ExecOutcome::default()
            },
            End::TimedOut => ExecOutcome {
                timed_out: true,
                signal: Some(9),
                duration,
                ..ExecOutcome::default()
            },
            End::Exited => {
                let exit = if earlier_starts < behaviour.fails {
                    1
                } else {
                    behaviour.exit
                };
                let stdout = behaviour.stdout.unwrap_or(input).into_bytes();
                ExecOutcome {
                    exit_code: Some(exit),
                    stdout_bytes: stdout.len() as u64,
                    stdout,
                    duration,
                    ..ExecOutcome::default()
                }
            }
        }
    }
}
