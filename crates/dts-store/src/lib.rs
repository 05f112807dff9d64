//! The store: tasks, their inputs and plans, shard completion, item results and
//! worker heartbeats — every piece of state dts keeps.
//!
//! Servers and workers hold no state of their own; they read and change it
//! through [`Store`]. Every change that touches more than one field is one
//! atomic operation in the backend (one SQLite transaction, one Redis script),
//! and the operations that can be repeated by at-least-once delivery
//! ([`Store::save_plan`], [`Store::record_results`], [`Store::complete_shard`])
//! are idempotent, so a redelivered message never counts anything twice.
//!
//! Implementations: [`sqlite::SqliteStore`] (a file, or memory for
//! `--ephemeral`); [`redis::RedisStore`] in distributed mode. One contract
//! test suite (`tests/contract/`) runs against each.

pub mod redis;
pub mod sqlite;

use async_trait::async_trait;
use dts_model::{ItemResult, ShardRange, Task, TaskStatus, WorkerInfo};
use std::sync::Arc;
use std::time::Duration;

pub use self::redis::{RedisSettings, RedisStore};
pub use sqlite::SqliteStore;

/// A shared handle to whichever store this process uses.
pub type DynStore = Arc<dyn Store>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("task {0} not found")]
    NotFound(String),
    #[error("task {id} cannot go from {from} to {to}")]
    IllegalTransition {
        id: String,
        from: TaskStatus,
        to: TaskStatus,
    },
    #[error("task {0} already exists")]
    AlreadyExists(String),
    /// The backend could not be reached or is busy; trying again may help.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back (a bug or a hand-edited store).
    #[error("stored data for {what} is unreadable: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("store error: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether the same call may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which item results to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultFilter {
    #[default]
    All,
    Succeeded,
    Failed,
}

/// What [`Store::save_plan`] found or did.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanOutcome {
    /// This call stored the plan; the task is now `INPROGRESS` (or
    /// `COMPLETED` if the plan has no shards).
    Created(Task),
    /// A plan was stored before (a redelivered task message): these are its
    /// shards, to republish those not yet completed.
    Existing { task: Task, shards: Vec<ShardRange> },
    /// The task already ended (cancelled, say) and was never planned: nothing to do.
    Ended(Task),
}

/// What [`Store::complete_shard`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardCompletion {
    /// False if the shard had been completed before (a redelivery): nothing was counted.
    pub newly_completed: bool,
    /// True if this call completed the task's last shard and set its final status.
    pub finished_task: bool,
    /// The task after the operation.
    pub task: Task,
}

/// Everything dts keeps. See the crate docs for the atomicity rules.
///
/// Operations on a task id the store does not know return
/// [`StoreError::NotFound`], except the reads that answer with an `Option`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new task (status `QUEUED`) with its inputs, as given.
    /// [`StoreError::AlreadyExists`] if the id is taken; the stored task is
    /// left as it was.
    async fn insert_task(&self, task: &Task, inputs: &[String]) -> StoreResult<()>;

    /// The task, without its inputs.
    async fn task(&self, id: &str) -> StoreResult<Option<Task>>;

    /// The task's input list.
    async fn inputs(&self, id: &str) -> StoreResult<Option<Vec<String>>>;

    /// Tasks newest first (by `createdAt`; tasks created in the same
    /// millisecond, last inserted first), optionally only those with `status`.
    async fn list_tasks(&self, status: Option<TaskStatus>, limit: usize) -> StoreResult<Vec<Task>>;

    /// Ids of tasks that have not reached a terminal status, oldest first.
    async fn unfinished_task_ids(&self) -> StoreResult<Vec<String>>;

    /// Moves a task to `to`, atomically, if [`TaskStatus::can_transition_to`]
    /// allows it from the current status; otherwise
    /// [`StoreError::IllegalTransition`] and nothing changes. `error` is stored
    /// as the task's error when given (otherwise the old one stays).
    /// Entering a terminal status sets `finishedAt`; entering `INPROGRESS`
    /// sets `startedAt` unless it is set.
    async fn transition(&self, id: &str, to: TaskStatus, error: Option<&str>) -> StoreResult<Task>;

    /// Stores the task's plan, once: sets `chunksToExecute`, status
    /// `INPROGRESS` and `startedAt` (`COMPLETED` and `finishedAt` too if
    /// `shards` is empty) in one atomic step. If a plan exists already it is
    /// left as it is and returned; of two concurrent callers exactly one gets
    /// [`PlanOutcome::Created`]. A task that ended unplanned is not planned.
    async fn save_plan(&self, id: &str, shards: &[ShardRange]) -> StoreResult<PlanOutcome>;

    /// Indices of the task's completed shards, ascending.
    async fn completed_shards(&self, id: &str) -> StoreResult<Vec<u32>>;

    /// Records final item results in one atomic step. An item recorded
    /// before is replaced (the latest attempt wins) and the task's
    /// succeeded/failed counters move by the difference, so recording the same
    /// item twice never counts it twice. Returns the task's status, so a
    /// worker learns of a cancellation on its next write.
    async fn record_results(&self, id: &str, results: &[ItemResult]) -> StoreResult<TaskStatus>;

    /// Records `results` as [`Store::record_results`] does and completes the
    /// shard, in one atomic, idempotent step: the shard joins the completed set
    /// only if it is not there yet, and only then does `chunksExecuted` grow.
    /// Completing the last shard of an `INPROGRESS` task sets `COMPLETED` (no
    /// item failed) or `FAILED`, and `finishedAt`; a task that ended otherwise
    /// (cancelled) keeps its status. A shard the plan does not have (not below
    /// `chunksToExecute`) is refused and nothing is recorded.
    async fn complete_shard(
        &self,
        id: &str,
        shard: u32,
        results: &[ItemResult],
    ) -> StoreResult<ShardCompletion>;

    /// Indices in `start..end` that already have a recorded result, ascending
    /// (a redelivered shard skips them).
    async fn recorded_indices(&self, id: &str, start: u64, end: u64) -> StoreResult<Vec<u64>>;

    /// Recorded results ordered by index: the total matching `filter`, and
    /// the page `offset..offset + limit`.
    async fn results(
        &self,
        id: &str,
        filter: ResultFilter,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(u64, Vec<ItemResult>)>;

    /// Records a worker's heartbeat (replacing its previous one, its
    /// `last_heartbeat` as given); it counts as live for `ttl` from now.
    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> StoreResult<()>;

    /// Forgets a worker at once (it is shutting down).
    async fn remove_worker(&self, id: &str) -> StoreResult<()>;

    /// Workers whose last heartbeat is younger than its TTL, by id.
    async fn live_workers(&self) -> StoreResult<Vec<WorkerInfo>>;
}
