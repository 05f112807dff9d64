//! The store: tasks, their inputs and plans, shard completion and leases, item
//! results and start counts, and worker heartbeats — every piece of state dts
//! keeps.
//!
//! Shard leases ([`Store::claim_shard`]) make one worker at a time run a
//! shard and notice, shard by shard, when a worker died; per-item start
//! counts ([`Store::mark_item_started`]) find the item that kills its workers.
//! For late binding the store also keeps, per task in progress, the queue
//! of ready shards: [`Store::runnable_tasks`] is the snapshot a free slot
//! ranks, [`Store::claim_ready_shard`] takes the chosen task's next shard.
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

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod activity;
pub mod redis;
pub mod sqlite;

use async_trait::async_trait;
#[cfg(doc)]
use dts_model::WorkerKind;
use dts_model::schedule::Schedule;
use dts_model::{
    Bytes, ItemFailures, ItemResult, PastAttempt, ReduceResult, ShardRange, Task, TaskStatus,
    WorkerInfo,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use self::redis::{RedisSettings, RedisStore, SentinelSettings};
pub use sqlite::SqliteStore;

/// A shared handle to whichever store this process uses.
pub type DynStore = Arc<dyn Store>;

/// What a backend or a decoder said, kept as the [`source`](std::error::Error::source)
/// of a [`StoreError`] so logs and `caused by:` lines show it.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store call failed.
///
/// Callers decide what to do by variant: a caller's mistake (`NoSuch*`,
/// [`StoreError::TaskExists`], [`StoreError::IllegalTransition`]) is
/// answered, not retried; [`StoreError::is_retryable`] says which failures
/// may go away on their own. The backend's own error stays attached as the
/// source; the message names the operation, not the cause, so printing the
/// chain never repeats it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store does not know the task (never stored, or expired).
    #[error("task {id} not found")]
    NoSuchTask {
        /// The task id asked for.
        id: String,
    },
    /// The shard is not in the task's plan (at or past `chunksToExecute`).
    #[error("task {task} has no shard {shard}: its plan has {planned} shards")]
    NoSuchShard {
        /// The task id.
        task: String,
        /// The shard asked for.
        shard: u32,
        /// The task's `chunksToExecute` (0 before it is planned).
        planned: u32,
    },
    /// [`Store::insert_task`] with an id that is taken.
    #[error("task {id} already exists")]
    TaskExists {
        /// The id that is taken.
        id: String,
    },
    /// [`Store::insert_schedule`] with a name that is taken.
    #[error("a schedule named {name} already exists")]
    ScheduleExists {
        /// The name that is taken.
        name: String,
    },
    /// [`TaskStatus::can_transition_to`] refuses the change.
    #[error("task {id} cannot go from {from} to {to}")]
    IllegalTransition {
        /// The task id.
        id: String,
        /// The task's status, which stays.
        from: TaskStatus,
        /// The status asked for.
        to: TaskStatus,
    },
    /// A plan with more shards than `chunksToExecute` can count.
    #[error("task {task}: a plan of {shards} shards is more than a task can have")]
    PlanTooLarge {
        /// The task id.
        task: String,
        /// The shards of the plan offered.
        shards: usize,
    },
    /// The backend could not be reached, or is busy or loading; trying
    /// again may help.
    #[error("store unavailable: {op}")]
    Unavailable {
        /// The operation and where it went (`redis read task … at host:port`).
        op: String,
        /// The backend's error.
        #[source]
        source: Cause,
    },
    /// The backend has no room for the write: SQLite's disk is full, or
    /// Redis is out of memory (`maxmemory`) or cannot persist (`MISCONF`).
    /// Nothing was written; trying again helps once space is freed.
    #[error("store full: {op}")]
    Full {
        /// The operation and where it went.
        op: String,
        /// The backend's error.
        #[source]
        source: Cause,
    },
    /// The backend did not answer within the call's deadline (hung or
    /// overloaded); trying again may help.
    #[error("store unavailable: {op}: no answer within {} s", after.as_secs())]
    TimedOut {
        /// The operation and where it went.
        op: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// Stored data could not be read back (a bug or a hand-edited store).
    #[error("stored data for {what} is unreadable")]
    Corrupt {
        /// The task and field (`task … status`).
        what: String,
        /// Why it does not read back.
        #[source]
        source: Cause,
    },
    /// The backend refused the operation for a reason a retry does not
    /// change (a script error, a key of the wrong type, a full disk, a
    /// refused password).
    #[error("store error: {op}")]
    Backend {
        /// The operation and where it went.
        op: String,
        /// The backend's error.
        #[source]
        source: Cause,
    },
    /// A script answered something it never answers: the stored data or
    /// the script is not what this code expects.
    #[error("store error: {op}: unexpected reply {reply:?}")]
    UnexpectedReply {
        /// The operation.
        op: String,
        /// The first few words of the reply.
        reply: Vec<String>,
    },
    /// A value could not be encoded as JSON for storage.
    #[error("cannot encode {what} as json")]
    Encode {
        /// The value (`variables`, `item result`, …).
        what: String,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// The Redis URL does not parse.
    #[error("redis url {url:?} is not valid")]
    InvalidUrl {
        /// The URL with its password replaced by `***`.
        url: String,
        /// The client's error.
        #[source]
        source: Cause,
    },
    /// A Redis store needs a retention: ended tasks would otherwise vanish at once.
    #[error("redis store retention must be longer than zero")]
    ZeroRetention,
    /// [`Store::delete_task`] of a task that has not ended: it must be
    /// cancelled (or finish) first.
    #[error("task {id} is {status}, not ended: cancel it first")]
    TaskNotEnded {
        /// The task id.
        id: String,
        /// Its status, which stays.
        status: TaskStatus,
    },
    /// A listing cursor that no listing gave (mangled or made up).
    #[error("cursor {cursor:?} is not one a task listing gave")]
    BadCursor {
        /// The cursor as given.
        cursor: String,
    },
    /// [`Store::retry_task`] of a task that cannot be retried now; nothing
    /// changes.
    #[error("task {id}: {refusal}")]
    CannotRetry {
        /// The task id.
        id: String,
        /// Why not.
        refusal: RetryRefusal,
    },
    /// The SQLite file was written by a newer dts.
    #[error(
        "sqlite {op}: schema version {found} is not one this dts can read (it writes version {supported}); was the file written by a newer dts?"
    )]
    UnsupportedSchema {
        /// Opening which file.
        op: String,
        /// The file's schema version.
        found: i64,
        /// The version this dts writes.
        supported: i64,
    },
}

impl StoreError {
    /// Whether the same call may succeed if tried again later. Decided per
    /// variant, so a new variant must say.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Unavailable { .. }
            | StoreError::TimedOut { .. }
            | StoreError::Full { .. } => true,
            StoreError::NoSuchTask { .. }
            | StoreError::NoSuchShard { .. }
            | StoreError::TaskExists { .. }
            | StoreError::ScheduleExists { .. }
            | StoreError::IllegalTransition { .. }
            | StoreError::TaskNotEnded { .. }
            | StoreError::CannotRetry { .. }
            | StoreError::BadCursor { .. }
            | StoreError::PlanTooLarge { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Backend { .. }
            | StoreError::UnexpectedReply { .. }
            | StoreError::Encode { .. }
            | StoreError::InvalidUrl { .. }
            | StoreError::ZeroRetention
            | StoreError::UnsupportedSchema { .. } => false,
        }
    }

    /// Stored data for `what` that does not read back; `source` says why.
    pub fn corrupt(what: impl Into<String>, source: impl Into<Cause>) -> StoreError {
        StoreError::Corrupt {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Why a task cannot be retried ([`StoreError::CannotRetry`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryRefusal {
    /// The task has not ended: its items may still succeed.
    #[error("the task is still running ({0}); retry it after it ends")]
    Running(TaskStatus),
    /// Every item succeeded.
    #[error("nothing to retry: every item succeeded")]
    NothingToRetry,
    /// The task ended before it was planned: no item ran, and there is no
    /// plan to run them by.
    #[error("the task is {0} and was never planned; submit it again")]
    NeverPlanned(TaskStatus),
    /// The task's deadline has passed: every retried item would fail at once.
    #[error("its deadline passed; submit it again with a later deadlineSecs")]
    DeadlinePassed,
}

/// What [`Store::retry_task`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryOutcome {
    /// The task after the retry: `INPROGRESS` again, or `REDUCING` for a
    /// task whose items all succeeded and whose reduce runs again.
    pub task: Task,
    /// Items that had failed: their results moved into their histories.
    pub failed: u64,
    /// Items that had no result (the task was cancelled before they ran).
    pub not_run: u64,
    /// Shards queued again.
    pub shards: u32,
}

impl RetryOutcome {
    /// Items that run again.
    pub fn queued(&self) -> u64 {
        self.failed + self.not_run
    }
}

/// Refuses a retry of `task` at `now` (ms) unless it ended in a status
/// [`TaskStatus::can_retry`] allows, was planned, has an item without
/// success (or a reduce to run again) and is within its deadline: the
/// rules both backends apply.
pub(crate) fn check_retry(task: &Task, now: u64) -> StoreResult<()> {
    let refuse = |refusal| {
        Err(StoreError::CannotRetry {
            id: task.id.clone(),
            refusal,
        })
    };
    if !task.status.is_terminal() {
        return refuse(RetryRefusal::Running(task.status));
    }
    let every_item_succeeded = task.items_succeeded >= task.items_total;
    // Every item succeeded, yet the task failed or was cancelled: its
    // reduce failed or never finished, and the retry runs it again.
    let reduce_again = task.reduce.is_some() && every_item_succeeded && task.status.can_retry();
    if every_item_succeeded && !reduce_again {
        return refuse(RetryRefusal::NothingToRetry);
    }
    // A task without items has no shards even when planned; it was planned
    // if it started (planning sets `startedAt`).
    let planned = task.chunks_to_execute > 0 || (reduce_again && task.started_at.is_some());
    if !task.status.can_retry() || !planned {
        return refuse(RetryRefusal::NeverPlanned(task.status));
    }
    if task.deadline_at().is_some_and(|at| at <= now) {
        return refuse(RetryRefusal::DeadlinePassed);
    }
    Ok(())
}

/// The status a retry that queues `shards` shards again takes the task
/// to: `INPROGRESS` to run them, or, with none to run, `REDUCING` for the
/// task's reduce to run again ([`check_retry`] lets only a task with a
/// reduce through without items to run).
pub(crate) fn status_after_retry(task: &Task, shards: usize) -> TaskStatus {
    if shards == 0 && task.reduce.is_some() {
        TaskStatus::Reducing
    } else {
        TaskStatus::InProgress
    }
}

/// How a recorded reduce ends its task, for [`Store::finish_reduce`] in
/// both backends: `FAILED` with the reduce's failure as the error when the
/// reduce failed; `FAILED` when an item failed (the reduce of a task with
/// `when: always` ran anyway), with no error of its own, as a task without
/// a reduce whose items failed ends; `COMPLETED` otherwise.
pub(crate) fn reduce_end(
    result: &ReduceResult,
    failures: ItemFailures,
) -> (TaskStatus, Option<String>) {
    match (result.failure_reason(), failures) {
        (Some(reason), _) => (TaskStatus::Failed, Some(reason)),
        (None, ItemFailures::Some) => (TaskStatus::Failed, None),
        (None, ItemFailures::None) => (TaskStatus::Completed, None),
    }
}

/// The shards a retry queues again: every shard not completed (its items
/// never ran, or not all) and every completed one holding an item of
/// `failed` (ascending); ascending. `plan` is in shard order, its ranges
/// ascending and adjacent, as the planner makes them.
pub(crate) fn shards_to_reopen(plan: &[ShardRange], completed: &[u32], failed: &[u64]) -> Vec<u32> {
    let mut reopen = vec![true; plan.len()];
    for &shard in completed {
        if let Some(open) = reopen.get_mut(shard as usize) {
            *open = false;
        }
    }
    for &index in failed {
        // The first shard whose range ends after the index holds it.
        let shard = plan.partition_point(|range| range.start + range.len <= index);
        if let Some(open) = reopen.get_mut(shard) {
            *open = true;
        }
    }
    (0u32..)
        .zip(reopen)
        .filter_map(|(shard, open)| open.then_some(shard))
        .collect()
}

/// What every [`Store`] call returns.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which item results to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultFilter {
    /// Every recorded result.
    #[default]
    All,
    /// Only items that succeeded.
    Succeeded,
    /// Only items that failed.
    Failed,
}

/// What [`Store::save_plan`] found or did.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanOutcome {
    /// This call stored the plan; the task is now `INPROGRESS` (or, if the
    /// plan has no shards, what [`TaskStatus::after_last_shard`] gives:
    /// `COMPLETED`, or `REDUCING` for a task with a reduce).
    Created(Task),
    /// A plan was stored before (a redelivered task message): these are its
    /// shards, to republish those not yet completed.
    Existing {
        /// The task as stored.
        task: Task,
        /// The stored plan.
        shards: Vec<ShardRange>,
    },
    /// The task already ended (cancelled, say) and was never planned: nothing to do.
    Ended(Task),
}

/// A position in the task listing: the `createdAt` and insertion sequence
/// of the last task a page held. Opaque to clients ([`TaskCursor::encode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskCursor {
    /// `createdAt` of the last task listed.
    pub created_at: u64,
    /// Its insertion sequence (SQLite's row key, Redis's member sequence),
    /// which orders tasks created in the same millisecond.
    pub sequence: u64,
}

impl TaskCursor {
    /// The cursor as clients carry it: `{createdAt}-{sequence}`, which
    /// they should not take apart (the form may change).
    pub fn encode(&self) -> String {
        format!("{}-{}", self.created_at, self.sequence)
    }

    /// A cursor [`TaskCursor::encode`] wrote; [`StoreError::BadCursor`] for
    /// anything else.
    pub fn decode(text: &str) -> StoreResult<TaskCursor> {
        let bad = || StoreError::BadCursor {
            cursor: text.to_string(),
        };
        let (created, sequence) = text.split_once('-').ok_or_else(bad)?;
        let number = |part: &str| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse::<u64>().map_err(|_| bad())
        };
        Ok(TaskCursor {
            created_at: number(created)?,
            sequence: number(sequence)?,
        })
    }
}

/// What [`Store::list_tasks_page`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPage {
    /// The page, newest first.
    pub tasks: Vec<Task>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<TaskCursor>,
}

/// What [`Store::complete_shard`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardCompletion {
    /// False if the shard had been completed before (a redelivery): nothing was counted;
    /// also false (Redis) when some of its items had no result (lost in a
    /// failover): the shard was handed back to run those items again.
    pub newly_completed: bool,
    /// True if this call ended the task (a terminal status: its last shard,
    /// or a halt): its completion event is owed. A last shard that starts
    /// the task's reduce (`REDUCING`) has not ended it: false.
    pub finished_task: bool,
    /// The task after the operation.
    pub task: Task,
}

/// Everything dts keeps. See the crate docs for the atomicity rules.
///
/// Operations on a task id the store does not know return
/// [`StoreError::NoSuchTask`], except the reads that answer with an `Option`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new task (status `QUEUED`) with its inputs, as given.
    /// [`StoreError::TaskExists`] if the id is taken; the stored task is
    /// left as it was.
    async fn insert_task(&self, task: &Task, inputs: &[Bytes]) -> StoreResult<()>;

    /// The task, without its inputs.
    async fn task(&self, id: &str) -> StoreResult<Option<Task>>;

    /// The task's status alone, for a worker that polls whether the tasks it
    /// runs have ended: cheaper than [`Store::task`] where a task is large.
    /// `None` for an unknown task.
    async fn task_status(&self, id: &str) -> StoreResult<Option<TaskStatus>> {
        Ok(self.task(id).await?.map(|task| task.status))
    }

    /// The task's [`Task::version`] alone: a cheap way to see whether it
    /// changed. `None` for an unknown task.
    async fn task_version(&self, id: &str) -> StoreResult<Option<u64>>;

    /// The task's input list, each input exactly the bytes stored.
    async fn inputs(&self, id: &str) -> StoreResult<Option<Vec<Bytes>>>;

    /// The task's inputs at indices `start..start + len`, in order: what a
    /// slot that claimed a shard runs, read without the rest of the list, so
    /// claiming a big task in many pieces never reads it whole per claim.
    /// A range reaching past the end is clamped to it (one starting at or
    /// past the end reads as empty): the caller compares the count with the
    /// shard's length. `None` for an unknown task.
    async fn inputs_range(&self, id: &str, start: u64, len: u64)
    -> StoreResult<Option<Vec<Bytes>>>;

    /// Tasks newest first (by `createdAt`; tasks created in the same
    /// millisecond, last inserted first), optionally only those with `status`.
    async fn list_tasks(&self, status: Option<TaskStatus>, limit: usize) -> StoreResult<Vec<Task>> {
        Ok(self.list_tasks_page(status, None, limit).await?.tasks)
    }

    /// One page of [`Store::list_tasks`]' order: at most `limit` tasks after
    /// the position `after` (from the start without it), and the cursor of
    /// the next page when there are more. A cursor is a position, not a
    /// task, so deleting or expiring tasks between pages skips none and
    /// repeats none.
    async fn list_tasks_page(
        &self,
        status: Option<TaskStatus>,
        after: Option<TaskCursor>,
        limit: usize,
    ) -> StoreResult<TaskPage>;

    /// Ids of tasks that start with `prefix`, ascending, at most `limit`:
    /// what resolves a short id. Costs O(log tasks + limit), not a scan.
    async fn task_ids_with_prefix(&self, prefix: &str, limit: usize) -> StoreResult<Vec<String>>;

    /// Deletes an ended task and everything it owns (inputs, plan, results,
    /// leases, start counts, list entries, a completion event still owed
    /// in the outbox) in one atomic step, and returns
    /// it as it was. A task not in a terminal status is
    /// [`StoreError::TaskNotEnded`] and nothing changes; an unknown one is
    /// [`StoreError::NoSuchTask`].
    async fn delete_task(&self, id: &str) -> StoreResult<Task>;

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
    /// `INPROGRESS` and `startedAt` in one atomic step; if `shards` is
    /// empty, planning completed the last shard, and the task enters what
    /// [`TaskStatus::after_last_shard`] gives (`COMPLETED` and
    /// `finishedAt`, or `REDUCING` for a task with a reduce). If a plan exists already it is
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

    /// Records `results`, items of shard `shard`, as [`Store::record_results`]
    /// does, except that an item that has a result keeps it (the first
    /// result of an item counts), and a completed shard records nothing, in
    /// the same atomic step: a run of the shard that finishes an item after
    /// another run of it (a speculative copy, or a worker that lost its
    /// lease) never replaces the result that counted. What a worker writes
    /// while it runs a shard. A shard the plan does not have is
    /// [`StoreError::NoSuchShard`].
    async fn record_shard_results(
        &self,
        id: &str,
        shard: u32,
        results: &[ItemResult],
    ) -> StoreResult<TaskStatus>;

    /// Records `results` as [`Store::record_results`] does and completes the
    /// shard, in one atomic, idempotent step: the shard joins the completed set
    /// only if it is not there yet, and only then does `chunksExecuted` grow.
    /// A shard completed before records nothing: the first run of a shard to
    /// complete it (of a redelivery, a worker that lost its lease, or a
    /// speculative copy) is the one whose results count; and as with
    /// [`Store::record_shard_results`], an item that has a result keeps it.
    /// Completing the last shard enters the status
    /// [`TaskStatus::after_last_shard`] gives, for the task's failures and
    /// its reduce (an `INPROGRESS` task becomes `REDUCING` if its reduce is
    /// due, else `COMPLETED` if no item failed, else `FAILED`, and an end
    /// gets `finishedAt`; a task that ended otherwise, cancelled say, keeps
    /// its status). The shard's lease (see
    /// [`Store::claim_shard`]) is dropped in the same step, whoever holds it.
    /// A shard the plan does not have (not below `chunksToExecute`) is
    /// refused ([`StoreError::NoSuchShard`]) and nothing is recorded.
    async fn complete_shard(
        &self,
        id: &str,
        shard: u32,
        results: &[ItemResult],
    ) -> StoreResult<ShardCompletion>;

    /// Indices in `start..end` that already have a recorded result, ascending
    /// (a redelivered shard skips them).
    async fn recorded_indices(&self, id: &str, start: u64, end: u64) -> StoreResult<Vec<u64>>;

    /// Runs the task again for the items that failed or never ran, as the
    /// same task, in one atomic step: each failed item's result moves into
    /// its attempt history (see [`Store::attempt_history`]; the newest
    /// [`PastAttempt::KEPT`] stay), `itemsFailed` drops by exactly those
    /// items, the shards holding them or not completed are queued again
    /// (their succeeded items are skipped, as on any later claim of a
    /// shard), and the task is `INPROGRESS` again without its end time and
    /// error. A task with a reduce also loses its reduce's result, claim
    /// and attempt count; when it has no shard to run again (every item
    /// succeeded: the reduce failed, or was cancelled), it goes straight
    /// back to `REDUCING`, for the reduce to run again. A task that cannot
    /// be retried (it did not end FAILED or CANCELLED, was never planned,
    /// has every item succeeded and no reduce, or its deadline passed) is
    /// [`StoreError::CannotRetry`] and nothing changes: so of two
    /// concurrent retries exactly one queues the work.
    async fn retry_task(&self, id: &str) -> StoreResult<RetryOutcome>;

    /// The earlier attempts of the items at `indices` that have any,
    /// oldest first: what retries moved out of their results. Items
    /// without history are left out.
    async fn attempt_history(
        &self,
        id: &str,
        indices: &[u64],
    ) -> StoreResult<BTreeMap<u64, Vec<PastAttempt>>>;

    /// [`Store::results`], each with its earlier attempts, and its
    /// `attempt` numbered after them: a worker numbers the attempts of a
    /// run from 1, so a retried item's result is renumbered here to
    /// continue its history (attempt 2 of 2 failed, the retry shows 3).
    async fn results_with_history(
        &self,
        id: &str,
        filter: ResultFilter,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(u64, Vec<(ItemResult, Vec<PastAttempt>)>)> {
        let (total, page) = self.results(id, filter, offset, limit).await?;
        let indices: Vec<u64> = page.iter().map(|result| result.index).collect();
        let mut history = self.attempt_history(id, &indices).await?;
        let page = page
            .into_iter()
            .map(|mut result| {
                let past = history.remove(&result.index).unwrap_or_default();
                if let Some(last) = past.last() {
                    result.attempt = last.attempt.saturating_add(result.attempt);
                }
                (result, past)
            })
            .collect();
        Ok((total, page))
    }

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
    /// In one atomic step, a [`WorkerKind::NodeBeat`] heartbeat is refused
    /// when the id belongs to a live [`WorkerKind::Dts`] worker (nothing
    /// changes); a dts worker's heartbeat replaces any entry.
    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> StoreResult<HeartbeatOutcome>;

    /// Forgets a worker at once (it is shutting down).
    async fn remove_worker(&self, id: &str) -> StoreResult<()>;

    /// Workers whose last heartbeat is younger than its TTL, by id.
    async fn live_workers(&self) -> StoreResult<Vec<WorkerInfo>>;

    /// Takes the lease on a shard before running it, in one atomic step, so
    /// one shard runs on one worker at a time even when the bus delivers it
    /// twice (a rebalance, a redelivery). See [`ShardClaim`] for the
    /// answers. A lease whose holder stopped renewing it (the worker died)
    /// can be taken over once it expires; that counts as a new attempt, as
    /// does the claim after a release that was not clean. Expiry is judged
    /// by the store's clock (Redis's, for the Redis store), never the
    /// caller's. A shard the plan does not have (not below
    /// `chunksToExecute`) is refused as [`Store::complete_shard`] refuses it.
    async fn claim_shard(
        &self,
        id: &str,
        shard: u32,
        worker: &str,
        lease: Duration,
    ) -> StoreResult<ShardClaim>;

    /// Extends the leases `worker` holds on `shards` (task id, shard) to
    /// `lease` from now, in one round trip for the whole list. A lease that
    /// expired but that nobody took over is still the worker's, and is
    /// extended too. Returns the shards it no longer holds (another worker
    /// took the lease over, the shard was completed or released, or the task
    /// is unknown), in the order given; those are left as they are.
    async fn renew_leases(
        &self,
        worker: &str,
        shards: &[(String, u32)],
        lease: Duration,
    ) -> StoreResult<Vec<(String, u32)>>;

    /// How many of task `id`'s shards are held by a lease that has not
    /// lapsed (by the store's clock): the workers that may still start its
    /// items. A cancel waits for this to reach 0. 0 for an unknown task.
    async fn live_leases(&self, id: &str) -> StoreResult<u32>;

    /// Gives up `worker`'s lease on a shard without completing it. `clean`
    /// means it was handed back on purpose (shutdown, the task ended): the
    /// next claim is not counted as a new attempt; otherwise it is, as if
    /// the lease had expired. Releasing a lease one does not hold (someone
    /// else's, an expired one taken over, one of an unknown task) changes
    /// nothing and is not an error. [`Store::complete_shard`] releases the
    /// lease too.
    async fn release_shard(
        &self,
        id: &str,
        shard: u32,
        worker: &str,
        clean: bool,
    ) -> StoreResult<()>;

    /// Tasks a free slot may pick from, oldest first (by `createdAt`, then
    /// insertion), at most `limit`: every `INPROGRESS` task with a plan and
    /// a shard not yet completed, with how many of its shards are ready and
    /// held now (by the store's clock). Read by every free slot, so it costs
    /// O(tasks), never O(shards), and one round trip.
    async fn runnable_tasks(&self, limit: usize) -> StoreResult<Vec<RunnableTask>>;

    /// Takes the lowest-numbered ready shard of task `id` for `worker`, in
    /// one atomic step, leased until `lease` from now: the late-binding
    /// claim. A shard whose lease expired unrenewed counts as ready, and
    /// taking it over counts an attempt exactly as [`Store::claim_shard`]
    /// does; so does the claim after a release that was not clean.
    /// `max_held` bounds the task's unexpired leases cluster-wide
    /// (`maxConcurrency`): with that many held the answer is
    /// [`ReadyClaim::AtCapacity`], checked before looking for a ready
    /// shard. A task that is not `INPROGRESS` answers
    /// [`ReadyClaim::TaskEnded`]; an unknown one is
    /// [`StoreError::NoSuchTask`].
    async fn claim_ready_shard(
        &self,
        id: &str,
        worker: &str,
        lease: Duration,
        max_held: Option<u32>,
    ) -> StoreResult<ReadyClaim>;

    /// Takes a copy of a straggling shard of task `id` for `worker`, in one
    /// atomic step: straggler speculation (docs/scheduling.md). Only when
    /// the task is `INPROGRESS` and has no ready shard (every shard not
    /// completed is held by an unexpired lease) does it look at the held
    /// shards; one straggles when its holder claimed it longer ago than its
    /// items × `per_item`, and than `min`. A shard that lost a worker before
    /// (attempt 2 or more) is never copied: it may hold an item that kills
    /// its workers. Of those not copied before, it
    /// takes one held by another worker if there is one, the longest held
    /// first, and marks it copied: a shard is copied once. The copy takes
    /// no lease: the holder keeps running the shard, and whichever completes
    /// it first counts ([`Store::complete_shard`] records nothing for a
    /// shard completed before). An unknown task is
    /// [`StoreError::NoSuchTask`].
    async fn claim_copy(
        &self,
        id: &str,
        worker: &str,
        per_item: Duration,
        min: Duration,
    ) -> StoreResult<CopyClaim>;

    /// Whether the copy of shard `shard` handed out with `token`
    /// ([`CopyClaim::Copied`]) may still start items: what a slot running a
    /// copy asks before each item it starts, and every status poll while
    /// the items run.
    async fn copy_state(&self, id: &str, shard: u32, token: u64) -> StoreResult<CopyState>;

    /// [`Store::record_shard_results`] for the copy handed out with
    /// `token`, in the same atomic step as the check that the copy is still
    /// the shard's: `None`, and nothing written, when it is not (a retry
    /// reopened the shard since the copy was handed out, so its results
    /// belong to a run the task no longer has).
    async fn record_copy_results(
        &self,
        id: &str,
        shard: u32,
        token: u64,
        results: &[ItemResult],
    ) -> StoreResult<Option<TaskStatus>>;

    /// [`Store::complete_shard`] for the copy handed out with `token`,
    /// refused (`None`, nothing written) as [`Store::record_copy_results`]
    /// refuses a copy that is no longer the shard's. A shard completed
    /// before records nothing, as for any run.
    async fn complete_copy(
        &self,
        id: &str,
        shard: u32,
        token: u64,
        results: &[ItemResult],
    ) -> StoreResult<Option<ShardCompletion>>;

    /// Counts one more start of the item at `index`, atomically, and
    /// returns the count (1 the first time). Workers call it only for shards
    /// that lost a worker before (attempt 2 or more), to find the item that
    /// kills its workers. The counts belong to the task and go with it.
    async fn mark_item_started(&self, id: &str, index: u64) -> StoreResult<u32>;

    /// Store-wide counts for the overview ([`activity`]): tasks by status,
    /// shards waiting, results recorded (all and in the last minute). Costs
    /// O(runnable tasks), never O(results).
    async fn stats(&self) -> StoreResult<activity::StoreStats>;

    /// Task `id`'s results per worker and per 10-second bucket
    /// ([`activity`]); `None` for a task the store does not know. Costs
    /// O(workers + buckets), never O(results).
    async fn task_activity(&self, id: &str) -> StoreResult<Option<activity::TaskActivity>>;

    /// Claims up to `limit` entries of the completion outbox, oldest first,
    /// and returns their tasks as stored now: the events to publish.
    ///
    /// Every change that ends a task (enters a status that sets
    /// `finishedAt`: COMPLETED, FAILED, CANCELLED, SUBMISSION_FAILED, by
    /// any path) adds the task's entry in the same atomic step, so a crash
    /// after the write cannot lose the event. An entry is claimable once it
    /// has been quiet for `settle` (since it was added, or since its last
    /// claim expired): the process that ended the task publishes at once and
    /// acknowledges, and drainers pick up only what it did not. A claim
    /// hides the entry until `lease` from now (the store's clock); an entry
    /// not acknowledged by then is claimed again, so delivery is at least
    /// once, never exactly once. A task has at most one entry: ending again
    /// (after a retry) makes it claimable again. Entries of tasks gone
    /// (expired) or running again (retried) are dropped, not returned.
    async fn claim_completions(
        &self,
        limit: usize,
        settle: Duration,
        lease: Duration,
    ) -> StoreResult<Vec<Task>>;

    /// Removes task `id`'s outbox entry once its event is published, if the
    /// entry is still the one of the end at `finished_at` (the task's
    /// `finishedAt` as published): the entry of a later end stays.
    /// Acknowledging an entry that is gone changes nothing.
    async fn ack_completion(&self, id: &str, finished_at: u64) -> StoreResult<()>;

    /// Outbox entries not acknowledged yet (claimed or not): events that may
    /// still be owed.
    async fn pending_completions(&self) -> StoreResult<u64>;

    /// Stores a new schedule; [`StoreError::ScheduleExists`] if its name
    /// is taken.
    async fn insert_schedule(&self, schedule: &Schedule) -> StoreResult<()>;

    /// The schedule named `name`.
    async fn schedule(&self, name: &str) -> StoreResult<Option<Schedule>>;

    /// Every schedule, by name.
    async fn schedules(&self) -> StoreResult<Vec<Schedule>>;

    /// Compare-and-set: stores `schedule` at `schedule.version + 1` if the
    /// stored one is still at `schedule.version`. False, changing nothing,
    /// when another call changed it meanwhile or it is gone; so of several
    /// servers deciding the same firing, one decision is stored.
    async fn update_schedule(&self, schedule: &Schedule) -> StoreResult<bool>;

    /// Deletes the schedule named `name`; false when there was none. Tasks
    /// it created stay.
    async fn delete_schedule(&self, name: &str) -> StoreResult<bool>;

    /// Tasks in `REDUCING`, oldest first (by `createdAt`, then insertion),
    /// at most `limit`: where a free worker looks for a reduce to run
    /// ([`Store::claim_reduce`]). Such tasks are few (each waits for one
    /// script), so this reads the status index, never every task.
    async fn reducing_tasks(&self, limit: usize) -> StoreResult<Vec<Task>>;

    /// Takes the claim on task `id`'s reduce for `worker`, in one atomic
    /// step, so one worker at a time runs it. See [`ReduceClaim`] for the
    /// answers. A claim has no lease of its own: it lasts while its owner's
    /// heartbeat ([`Store::heartbeat`]) is live, by the store's clock, so a
    /// worker that dies loses it once its heartbeat lapses and the next
    /// claim runs the reduce again as a new attempt. A claim by the owner
    /// itself (a worker restarted with the same id, which lost track of
    /// what it ran) is granted again, as a new attempt too.
    /// [`StoreError::NoSuchTask`] for an unknown task.
    async fn claim_reduce(&self, id: &str, worker: &str) -> StoreResult<ReduceClaim>;

    /// Records the result of task `id`'s reduce and ends the task, in one
    /// atomic step, if the task is still `REDUCING` and its claim is still
    /// `worker`'s `attempt` ([`ReduceClaim::Claimed`]): the task ends
    /// `FAILED` if the reduce failed (its error says how, as
    /// [`ReduceResult::failure_reason`] does) or an item did, `COMPLETED`
    /// otherwise, with `finishedAt`, `reduceResult` and its completion
    /// outbox entry (see [`Store::claim_completions`]) as every end has.
    /// Returns the ended task. Otherwise nothing changes and the answer is
    /// `None`: the claim moved to another attempt (this worker's heartbeat
    /// lapsed), or the task ended meanwhile (cancelled, or failed by its
    /// deadline) or is gone; the result is not the one that counts.
    async fn finish_reduce(
        &self,
        id: &str,
        worker: &str,
        attempt: u32,
        result: &ReduceResult,
    ) -> StoreResult<Option<Task>>;
}

/// A value as JSON for storage; `what` names it in the error.
pub(crate) fn encode<T: serde::Serialize + ?Sized>(what: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode {
        what: what.to_string(),
        source,
    })
}

/// The refusal of a shard the plan of task `id` does not have (counting it
/// would let `chunksExecuted` pass `chunksToExecute`).
/// A write by a shard's holder (or a plain record): only a copy's write is
/// ever refused as no longer the shard's, so `None` here is a bug.
pub(crate) fn written_by_holder<T>(written: Option<T>) -> StoreResult<T> {
    written.ok_or_else(|| {
        StoreError::corrupt(
            "a write that is not a copy's",
            "refused as a replaced copy's",
        )
    })
}

pub(crate) fn no_shard(id: &str, shard: u32, planned: u32) -> StoreError {
    StoreError::NoSuchShard {
        task: id.to_string(),
        shard,
        planned,
    }
}

/// A plan's shard count as `chunksToExecute` holds it.
pub(crate) fn plan_size(id: &str, shards: usize) -> StoreResult<u32> {
    u32::try_from(shards).map_err(|_| StoreError::PlanTooLarge {
        task: id.to_string(),
        shards,
    })
}

/// A lease (or a heartbeat's TTL) as a whole number of milliseconds, as both
/// backends store it: at least 1, and far within what Redis and SQLite
/// integers hold.
pub(crate) fn lease_millis(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, 1 << 50)
}

/// What [`Store::heartbeat`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// The heartbeat is the worker's entry now.
    Recorded,
    /// A node-beat for the id of a live dts worker: its entry was kept.
    Refused,
}

/// A task a free slot may pick, as [`Store::runnable_tasks`] lists it: the
/// snapshot the scheduling policy ranks.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnableTask {
    /// The task as stored.
    pub task: Task,
    /// Shards neither completed nor held by an unexpired lease: what
    /// [`Store::claim_ready_shard`] can hand out now.
    pub ready: u32,
    /// Shards held by unexpired leases: the task's running slots, which
    /// `maxConcurrency` bounds.
    pub held: u32,
}

/// What [`Store::claim_ready_shard`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyClaim {
    /// The caller holds the lease on `shard` now, as after
    /// [`ShardClaim::Acquired`].
    Claimed {
        /// The shard's index in the plan.
        shard: u32,
        /// Its items.
        range: ShardRange,
        /// Which attempt at the shard this is (1 the first time).
        attempt: u32,
        /// The shard's first claim ever: none of its items can have a
        /// result yet, so the claimant need not ask which have.
        first: bool,
    },
    /// Every shard not completed is held by an unexpired lease: rank again.
    NoneReady,
    /// The task holds `max_held` unexpired leases already: rank again
    /// without it.
    AtCapacity,
    /// The task is not `INPROGRESS` (it ended, or was never planned):
    /// nothing of it is handed out.
    TaskEnded,
}

/// What [`Store::claim_copy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyClaim {
    /// The caller may run a copy of `shard`; no other copy of it is handed out.
    Copied {
        /// The shard's index in the plan.
        shard: u32,
        /// Its items.
        range: ShardRange,
        /// The attempt of the holder's run, which the copy's results show.
        attempt: u32,
        /// Names this copy among the shard's copies: a retry that reopens
        /// the shard forgets it, and a later copy of the reopened shard
        /// gets another, so the store can refuse a copy from before the
        /// retry ([`Store::copy_state`], [`Store::record_copy_results`],
        /// [`Store::complete_copy`]).
        token: u64,
    },
    /// The task has ready shards, or no held shard straggles, or every one
    /// that does was copied already.
    NoStraggler,
    /// The task is not `INPROGRESS`.
    TaskEnded,
}

/// What [`Store::copy_state`] found: whether a copy may start another item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    /// The shard is still open and this is still its copy.
    Runs,
    /// The shard is completed (its holder won, or this copy did).
    ShardCompleted,
    /// The task is not `INPROGRESS`; `None` when the store does not know it.
    TaskNotRunning(Option<TaskStatus>),
    /// The shard is open but this is no longer its copy: a retry reopened
    /// it after the copy was handed out.
    Replaced,
}

/// What [`Store::claim_reduce`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReduceClaim {
    /// The caller holds the claim now and runs the reduce, then records
    /// its result with [`Store::finish_reduce`] and this `attempt`.
    Claimed {
        /// Which attempt at the reduce this is: 1 the first time, one more
        /// for each claim after it (a worker died, or restarted).
        attempt: u32,
    },
    /// Another worker holds the claim and its heartbeat is live: it runs
    /// the reduce.
    Held {
        /// The worker holding the claim.
        owner: String,
    },
    /// The task is not `REDUCING` (not there yet, or ended): there is no
    /// reduce to run.
    NotReducing {
        /// The task's status.
        status: TaskStatus,
    },
}

/// What [`Store::claim_shard`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardClaim {
    /// The caller holds the lease now. `attempt` is 1 for the first claim and
    /// grows by one each time a lease was taken over after it expired
    /// unreleased or was released not clean; a clean release does not count.
    Acquired {
        /// Which attempt at the shard this is (1 the first time).
        attempt: u32,
    },
    /// Another worker — or the caller itself, for a duplicate delivery —
    /// holds an unexpired lease. Try again after `expires_in` at the latest.
    Held {
        /// The worker holding the lease.
        owner: String,
        /// How long until the lease expires unless renewed.
        expires_in: Duration,
    },
    /// The shard is complete: nothing to run.
    Completed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_reopens_the_shards_not_completed_and_those_holding_a_failed_item() {
        let plan = [
            ShardRange { start: 0, len: 3 },
            ShardRange { start: 3, len: 3 },
            ShardRange { start: 6, len: 3 },
            ShardRange { start: 9, len: 1 },
        ];
        assert_eq!(
            shards_to_reopen(&plan, &[0, 1, 2, 3], &[3, 5, 9]),
            vec![1, 3]
        );
        assert_eq!(shards_to_reopen(&plan, &[0, 2], &[]), vec![1, 3]);
        assert_eq!(
            shards_to_reopen(&plan, &[0, 1, 2, 3], &[]),
            Vec::<u32>::new()
        );
    }

    fn reduce_result(exit_code: i32) -> ReduceResult {
        ReduceResult {
            exit_code: Some(exit_code),
            signal: None,
            timed_out: false,
            stdout: Bytes::default(),
            stderr: Bytes::default(),
            stdout_truncated: false,
            stderr_truncated: false,
            duration_ms: 1,
            worker: "w".to_string(),
            attempt: 2,
            error: None,
        }
    }

    #[test]
    fn a_reduce_ends_its_task_failed_if_it_or_an_item_failed_and_names_only_its_own_failure() {
        use TaskStatus::*;
        assert_eq!(
            reduce_end(&reduce_result(0), ItemFailures::None),
            (Completed, None)
        );
        assert_eq!(
            reduce_end(&reduce_result(0), ItemFailures::Some),
            (Failed, None)
        );
        let reason = Some("the reduce exited 4 (attempt 2)".to_string());
        for failures in ItemFailures::ALL {
            assert_eq!(
                reduce_end(&reduce_result(4), failures),
                (Failed, reason.clone())
            );
        }
    }

    #[test]
    fn a_cursor_reads_back_as_written_and_anything_else_is_refused_naming_it() {
        let cursor = TaskCursor {
            created_at: 1_700_000_000_123,
            sequence: 42,
        };
        assert_eq!(cursor.encode(), "1700000000123-42");
        assert_eq!(TaskCursor::decode("1700000000123-42").unwrap(), cursor);
        for bad in [
            "",
            "12",
            "-1",
            "1-",
            "a-1",
            "1-2-3",
            "+1-2",
            "1-99999999999999999999",
        ] {
            match TaskCursor::decode(bad) {
                Err(StoreError::BadCursor { cursor }) => assert_eq!(cursor, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
