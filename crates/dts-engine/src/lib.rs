//! The engine: submitting, planning and running tasks, written once against
//! the [`Bus`](dts_bus::Bus) and [`Store`](dts_store::Store) traits so embedded
//! and distributed mode share every line of it.
//!
//! - [`submit`]: stores a new task and publishes it, retrying with backoff;
//! - [`scheduler`]: consumes the task topic, stores a guided plan whose shards
//!   are then ready in the store, and wakes the workers;
//! - [`shard`]: the one way to build a shard's work ([`dts_model::ShardMessage`]);
//! - [`worker`]: one slot per core, each claiming the next ready shard of the
//!   task the scheduling policy picks, running its items, recording results
//!   and completing shards (late binding, docs/scheduling.md);
//! - [`recovery`]: on start-up of an embedded node, republishes what the store
//!   says is unfinished (the embedded bus keeps nothing across restarts);
//! - [`sweeper`]: on every node with an API, republishes tasks whose server
//!   died before they reached the bus, and ends tasks past their deadline;
//! - [`after`]: tasks that wait for others, released or skipped when
//!   those end;
//! - [`schedules`]: firing schedules' tasks, each firing once across
//!   nodes;
//! - [`events`]: completion events on the result topic;
//! - [`live`]: live logs of running items, in-process and through Redis;
//! - [`failpoint`]: crash points for fault tests;
//! - [`clock`]: a clock that follows tokio's time, for tests on paused time.
//!
//! Every component reads "now" from a [`dts_model::Clock`] in its settings
//! (the system clock by default), so the engine's tests run it on tokio's
//! paused time, with leases and deadlines passing in simulated seconds.

#![warn(missing_docs)]

pub mod after;
pub mod clock;
pub mod events;
pub mod failpoint;
pub mod live;
pub mod recovery;
pub mod scheduler;
pub mod schedules;
pub mod shard;
pub mod submit;
pub mod sweeper;
pub mod worker;

use dts_bus::BusError;
use dts_store::StoreError;

/// The three topics, named by configuration (the seed's names by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `pubsub.topic`: tasks to plan.
    pub tasks: String,
    /// `pubsub.task-shard.topic`: shards to run.
    pub shards: String,
    /// `pubsub.result.topic`: completion events.
    pub results: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            tasks: "distributed_task".into(),
            shards: "distributed_task_shard".into(),
            results: "distributed_task_completed".into(),
        }
    }
}

/// Why the engine could not do something.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A shard's work could not be built.
    #[error(transparent)]
    Shard(#[from] shard::ShardWorkError),
    /// A task being submitted waits for a task the store does not have
    /// (`after[position]`).
    #[error("after[{position}]: no task with id {id} (a task can only wait for tasks that exist)")]
    UnknownPrerequisite {
        /// Its position in `after`.
        position: usize,
        /// The id given.
        id: String,
    },
    /// A message could not be encoded or decoded.
    #[error("unreadable {what} message: {detail}")]
    BadMessage {
        /// Which kind of message ("shard", "task").
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
}

impl EngineError {
    /// Whether the same work may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Store(e) => e.is_retryable(),
            EngineError::Bus(e) => e.is_retryable(),
            EngineError::Shard(_)
            | EngineError::BadMessage { .. }
            | EngineError::UnknownPrerequisite { .. } => false,
        }
    }
}

impl EngineError {
    /// Counts this error in `dts_store_errors_total` or
    /// `dts_bus_errors_total` (and the matching `_retries_total` when
    /// `retried`) under `operation`; other errors are not the store's or
    /// the bus's.
    pub(crate) fn count(&self, operation: &str, retried: bool) {
        let metrics = dts_metrics::metrics();
        match self {
            EngineError::Store(_) => metrics.store_error(operation, retried),
            EngineError::Bus(_) => metrics.bus_error(operation, retried),
            EngineError::Shard(_)
            | EngineError::BadMessage { .. }
            | EngineError::UnknownPrerequisite { .. } => {}
        }
    }
}

/// The error and each of its sources, `: `-separated. Store and bus errors
/// name the operation and keep the backend's own error as their source, so
/// text that people read (a task's error, an API log line) needs the chain.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// Waits `delay`, or less if `token` is cancelled first. Returns false if cancelled.
pub(crate) async fn sleep_unless_cancelled(
    delay: std::time::Duration,
    token: &tokio_util::sync::CancellationToken,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = token.cancelled() => false,
    }
}
