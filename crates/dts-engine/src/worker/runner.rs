//! The seam between the worker and whatever runs its items.
//!
//! The worker needs three things from an executor: how it isolates items
//! (for heartbeats), a [`Program`] prepared once per shard, and one item run
//! to its end. [`ItemRunner`] is exactly that, so the worker can run real
//! processes ([`Executor`]) in production and simulated items in the engine's
//! tests, where an item is a stretch of tokio time.

use async_trait::async_trait;
use dts_executor::{ExecOutcome, Executor, ItemContext, OutputTap, Program, StdinSource};
use dts_model::Isolation;
use std::time::Duration;
use tokio::sync::SemaphorePermit;
use tokio_util::sync::CancellationToken;

/// One of the worker's core slots, held while an item's process runs. A
/// runner drops it the moment the item's main process has exited, so the
/// next item starts while this one's output and result are still handled.
#[derive(Debug)]
pub struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
}

impl<'a> Slot<'a> {
    pub(crate) fn new(permit: SemaphorePermit<'a>) -> Self {
        Slot { _permit: permit }
    }
}

/// Runs a worker's items. Implemented by [`Executor`]; tests implement it
/// with items that take simulated time.
#[async_trait]
pub trait ItemRunner: Send + Sync + 'static {
    /// How items are isolated, as the worker's heartbeats announce it.
    fn isolation(&self) -> Isolation;

    /// Decides how a shard's rendered `script` runs; called once per shard.
    fn prepare(&self, script: &str, interpreter: &str) -> Program;

    /// Runs one item to its end and reports it; never panics on the item's
    /// failures. `attempt` is the attempt the result will be recorded with
    /// (1 for the first run). On `timeout`, or when `cancel` fires, the item
    /// is stopped; an item whose `cancel` already fired is not started and
    /// comes back [`ExecOutcome::cancelled`]. `slot` is dropped as soon as
    /// the item's process has exited. `tap`, when given, sees the item's
    /// output as it is written (live logs); runners without real output
    /// ignore it.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        program: &Program,
        item: &ItemContext<'_>,
        attempt: u32,
        timeout: Duration,
        cancel: &CancellationToken,
        slot: Slot<'_>,
        tap: Option<&dyn OutputTap>,
    ) -> ExecOutcome;

    /// [`ItemRunner::run`] with `stdin` streamed to the script instead of
    /// the item's input (a task's reduce reads every result there; `$1` is
    /// empty). Runners without real processes run it as an item, dropping
    /// the stream.
    #[allow(clippy::too_many_arguments)]
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
        drop(stdin);
        self.run(program, item, attempt, timeout, cancel, slot, None)
            .await
    }
}

#[async_trait]
impl ItemRunner for Executor {
    fn isolation(&self) -> Isolation {
        let report = Executor::isolation(self);
        Isolation {
            containment: report.containment.as_str().to_owned(),
            run_as: report.run_as,
            private_workdir: report.private_workdir,
            limits: report.limits.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    fn prepare(&self, script: &str, interpreter: &str) -> Program {
        Executor::prepare(self, script, interpreter)
    }

    async fn run(
        &self,
        program: &Program,
        item: &ItemContext<'_>,
        _attempt: u32,
        timeout: Duration,
        cancel: &CancellationToken,
        slot: Slot<'_>,
        tap: Option<&dyn OutputTap>,
    ) -> ExecOutcome {
        self.run_tapped(program, item, timeout, cancel, slot, tap)
            .await
    }

    async fn run_streamed(
        &self,
        program: &Program,
        item: &ItemContext<'_>,
        stdin: StdinSource,
        _attempt: u32,
        timeout: Duration,
        cancel: &CancellationToken,
        slot: Slot<'_>,
    ) -> ExecOutcome {
        Executor::run_streamed(self, program, item, stdin, timeout, cancel, slot, None).await
    }
}
