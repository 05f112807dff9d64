//! [`SqliteStore`]: the [`Store`] of embedded mode, in one SQLite file (or in
//! memory for `--ephemeral`).
//!
//! rusqlite is blocking, so the store holds one connection behind a mutex and
//! runs every call on tokio's blocking pool; async workers never wait on the
//! disk. Every change is one `BEGIN IMMEDIATE` transaction, so a process
//! killed at any moment leaves a change either whole or absent. The file is in
//! WAL mode, so several processes may share it (each waits its turn to write).
//!
//! The blocking operations live in `tasks`, `results`, `leases`, `reduce` and `workers`;
//! `rows` converts rows and errors, `schema` sets up the file.
//!
//! Times (leases, heartbeats, a task's start and end) come from the store's
//! [`Clock`](dts_model::Clock): the system clock, or one a test injects with
//! [`SqliteStore::with_clock`] to run on tokio's paused time.

mod activity;
mod leases;
mod outbox;
mod reduce;
mod results;
mod retry;
mod rows;
mod schedules;
mod schema;
mod tasks;
mod workers;

use crate::{
    CopyClaim, CopyState, HeartbeatOutcome, PlanOutcome, ReadyClaim, ReduceClaim, ResultFilter,
    RetryOutcome, RunnableTask, ShardClaim, ShardCompletion, Store, StoreError, StoreResult,
    TaskCursor, TaskPage, encode, written_by_holder,
};
use async_trait::async_trait;
use dts_model::schedule::Schedule;
use dts_model::{
    Bytes, DynClock, ItemResult, PastAttempt, ReduceResult, ShardRange, Task, TaskStatus,
    WorkerInfo, system_clock,
};
use rows::{DbError, DbResult, classify};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A [`Store`] in SQLite. Cloning gives another handle to the same connection.
#[derive(Clone)]
pub struct SqliteStore {
    /// One connection: SQLite serialises writers anyway, and one connection
    /// keeps the prepared-statement cache warm.
    conn: Arc<Mutex<Connection>>,
    /// "Now" for leases, heartbeats and task times.
    clock: DynClock,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) the store at `path`, creating missing parent
    /// directories and the schema. Blocking: call it at startup.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend {
                op: format!("create directory {} for the sqlite store", dir.display()),
                source: e.into(),
            })?;
        }
        let op = format!("open {}", path.display());
        let conn = Connection::open(path).map_err(|e| classify(&op, e))?;
        Self::setup(conn, true, &op)
    }

    /// A store that lives in memory and is gone when the last handle drops.
    pub fn in_memory() -> StoreResult<SqliteStore> {
        let op = "open in-memory database";
        let conn = Connection::open_in_memory().map_err(|e| classify(op, e))?;
        Self::setup(conn, false, op)
    }

    /// Marks every shard lease as lapsed, so the next claim takes it over at
    /// once (and counts it as an attempt). For `dts up` on start-up: it holds
    /// the data directory's lock, so whoever held a lease in this store is a
    /// process that died; waiting out the lease would only idle the restart.
    /// Every held shard is then ready for [`Store::claim_ready_shard`] too.
    pub async fn expire_all_leases(&self) -> StoreResult<u64> {
        self.call("expire leases".to_string(), leases::expire_all)
            .await
    }

    /// This store with its times read from `clock` instead of the system
    /// clock. For tests: every process sharing a file must share one clock.
    pub fn with_clock(mut self, clock: DynClock) -> SqliteStore {
        self.clock = clock;
        self
    }

    /// The clock this store reads, to hand to the blocking calls.
    fn clock(&self) -> DynClock {
        Arc::clone(&self.clock)
    }

    fn setup(mut conn: Connection, file: bool, op: &str) -> StoreResult<SqliteStore> {
        let setup = schema::configure(&conn, file).and_then(|()| schema::migrate(&mut conn));
        match setup {
            Ok(()) => Ok(SqliteStore {
                conn: Arc::new(Mutex::new(conn)),
                clock: system_clock(),
            }),
            Err(schema::SetupError::Sql(e)) => Err(classify(op, e)),
            Err(schema::SetupError::Unsupported { found }) => Err(StoreError::UnsupportedSchema {
                op: op.to_string(),
                found,
                supported: schema::SCHEMA_VERSION,
            }),
        }
    }

    /// Runs `f` on the connection on the blocking pool. `op` names the
    /// operation in error messages ("complete shard 3 of task …").
    async fn call<T, F>(&self, op: String, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> DbResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let outcome = tokio::task::spawn_blocking(move || f(&mut lock(&conn))).await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(DbError::Store(e))) => Err(e),
            Ok(Err(DbError::Sql(e))) => Err(classify(&op, e)),
            Err(join) => Err(StoreError::Backend {
                op: format!("sqlite {op}"),
                source: join.into(),
            }),
        }
    }
}

/// Locks the connection. A panic while it was held (a bug, not a database
/// error) poisons the mutex; the connection itself is still sound once any
/// open transaction is rolled back, so the store carries on instead of
/// failing every later call.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|poisoned| {
        conn.clear_poison();
        let guard = poisoned.into_inner();
        tracing::warn!("sqlite store: a call panicked while holding the connection");
        if !guard.is_autocommit() {
            if let Err(e) = guard.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "sqlite store: rollback after a panic failed");
            }
        }
        guard
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_task(&self, task: &Task, inputs: &[Bytes]) -> StoreResult<()> {
        // Encoded here so only one owned copy (the JSON) moves to the blocking pool.
        let variables = encode("variables", &task.variables)?;
        let pages = inputs
            .chunks(tasks::INPUT_PAGE)
            .map(|page| encode("inputs", page))
            .collect::<StoreResult<Vec<_>>>()?;
        let task = task.clone();
        self.call(format!("insert task {}", task.id), move |conn| {
            tasks::insert_task(conn, &task, &variables, &pages)
        })
        .await
    }

    async fn task(&self, id: &str) -> StoreResult<Option<Task>> {
        let id = id.to_string();
        self.call(format!("read task {id}"), move |conn| {
            tasks::task(conn, &id)
        })
        .await
    }

    async fn task_version(&self, id: &str) -> StoreResult<Option<u64>> {
        let id = id.to_string();
        self.call(format!("read version of task {id}"), move |conn| {
            tasks::task_version(conn, &id)
        })
        .await
    }

    async fn inputs(&self, id: &str) -> StoreResult<Option<Vec<Bytes>>> {
        let id = id.to_string();
        self.call(format!("read inputs of task {id}"), move |conn| {
            tasks::inputs(conn, &id)
        })
        .await
    }

    async fn inputs_range(
        &self,
        id: &str,
        start: u64,
        len: u64,
    ) -> StoreResult<Option<Vec<Bytes>>> {
        let id = id.to_string();
        self.call(
            format!("read inputs {start}+{len} of task {id}"),
            move |conn| tasks::inputs_range(conn, &id, start, len),
        )
        .await
    }

    async fn list_tasks_page(
        &self,
        status: Option<TaskStatus>,
        after: Option<TaskCursor>,
        limit: usize,
    ) -> StoreResult<TaskPage> {
        self.call("list tasks".to_string(), move |conn| {
            tasks::list_tasks_page(conn, status, after, limit)
        })
        .await
    }

    async fn task_ids_with_prefix(&self, prefix: &str, limit: usize) -> StoreResult<Vec<String>> {
        let prefix = prefix.to_string();
        self.call(format!("find task ids starting {prefix}"), move |conn| {
            tasks::task_ids_with_prefix(conn, &prefix, limit)
        })
        .await
    }

    async fn delete_task(&self, id: &str) -> StoreResult<Task> {
        let id = id.to_string();
        self.call(format!("delete task {id}"), move |conn| {
            tasks::delete_task(conn, &id)
        })
        .await
    }

    async fn unfinished_task_ids(&self) -> StoreResult<Vec<String>> {
        self.call("list unfinished tasks".to_string(), |conn| {
            tasks::unfinished_task_ids(conn)
        })
        .await
    }

    async fn transition(&self, id: &str, to: TaskStatus, error: Option<&str>) -> StoreResult<Task> {
        let id = id.to_string();
        let error = error.map(str::to_string);
        let clock = self.clock();
        self.call(format!("move task {id} to {to}"), move |conn| {
            tasks::transition(conn, &id, to, error.as_deref(), &*clock)
        })
        .await
    }

    async fn save_plan(&self, id: &str, shards: &[ShardRange]) -> StoreResult<PlanOutcome> {
        let id = id.to_string();
        let plan = encode("plan", shards)?;
        let count = shards.len();
        let clock = self.clock();
        self.call(format!("save plan of task {id}"), move |conn| {
            tasks::save_plan(conn, &id, count, &plan, &*clock)
        })
        .await
    }

    async fn completed_shards(&self, id: &str) -> StoreResult<Vec<u32>> {
        let id = id.to_string();
        self.call(format!("read completed shards of task {id}"), move |conn| {
            tasks::completed_shards(conn, &id)
        })
        .await
    }

    async fn record_results(&self, id: &str, results: &[ItemResult]) -> StoreResult<TaskStatus> {
        let id = id.to_string();
        let results = results.to_vec();
        let clock = self.clock();
        self.call(
            format!("record {} results of task {id}", results.len()),
            move |conn| results::record_results(conn, &id, None, None, &results, &*clock),
        )
        .await
        .and_then(written_by_holder)
    }

    async fn record_shard_results(
        &self,
        id: &str,
        shard: u32,
        results: &[ItemResult],
    ) -> StoreResult<TaskStatus> {
        let id = id.to_string();
        let results = results.to_vec();
        let clock = self.clock();
        self.call(
            format!(
                "record {} results of shard {shard} of task {id}",
                results.len()
            ),
            move |conn| results::record_results(conn, &id, Some(shard), None, &results, &*clock),
        )
        .await
        .and_then(written_by_holder)
    }

    async fn record_copy_results(
        &self,
        id: &str,
        shard: u32,
        token: u64,
        results: &[ItemResult],
    ) -> StoreResult<Option<TaskStatus>> {
        let id = id.to_string();
        let results = results.to_vec();
        let clock = self.clock();
        self.call(
            format!(
                "record {} results of a copy of shard {shard} of task {id}",
                results.len()
            ),
            move |conn| {
                results::record_results(conn, &id, Some(shard), Some(token), &results, &*clock)
            },
        )
        .await
    }

    async fn complete_shard(
        &self,
        id: &str,
        shard: u32,
        results: &[ItemResult],
    ) -> StoreResult<ShardCompletion> {
        let id = id.to_string();
        let results = results.to_vec();
        let clock = self.clock();
        self.call(
            format!("complete shard {shard} of task {id}"),
            move |conn| results::complete_shard(conn, &id, shard, None, &results, &*clock),
        )
        .await
        .and_then(written_by_holder)
    }

    async fn complete_copy(
        &self,
        id: &str,
        shard: u32,
        token: u64,
        results: &[ItemResult],
    ) -> StoreResult<Option<ShardCompletion>> {
        let id = id.to_string();
        let results = results.to_vec();
        let clock = self.clock();
        self.call(
            format!("complete shard {shard} of task {id} with a copy's results"),
            move |conn| results::complete_shard(conn, &id, shard, Some(token), &results, &*clock),
        )
        .await
    }

    async fn recorded_indices(&self, id: &str, start: u64, end: u64) -> StoreResult<Vec<u64>> {
        let id = id.to_string();
        self.call(
            format!("read recorded indices {start}..{end} of task {id}"),
            move |conn| results::recorded_indices(conn, &id, start, end),
        )
        .await
    }

    async fn retry_task(&self, id: &str) -> StoreResult<RetryOutcome> {
        let id = id.to_string();
        let clock = self.clock();
        self.call(format!("retry task {id}"), move |conn| {
            retry::retry_task(conn, &id, &*clock)
        })
        .await
    }

    async fn attempt_history(
        &self,
        id: &str,
        indices: &[u64],
    ) -> StoreResult<BTreeMap<u64, Vec<PastAttempt>>> {
        if indices.is_empty() {
            return Ok(BTreeMap::new());
        }
        let id = id.to_string();
        let indices = indices.to_vec();
        self.call(format!("read attempt history of task {id}"), move |conn| {
            retry::attempt_history(conn, &id, &indices)
        })
        .await
    }

    async fn results(
        &self,
        id: &str,
        filter: ResultFilter,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(u64, Vec<ItemResult>)> {
        let id = id.to_string();
        self.call(format!("read results of task {id}"), move |conn| {
            results::results(conn, &id, filter, offset, limit)
        })
        .await
    }

    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> StoreResult<HeartbeatOutcome> {
        let worker = worker.clone();
        let clock = self.clock();
        self.call(
            format!("record heartbeat of worker {}", worker.id),
            move |conn| workers::heartbeat(conn, &worker, ttl, &*clock),
        )
        .await
    }

    async fn remove_worker(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.call(format!("remove worker {id}"), move |conn| {
            workers::remove_worker(conn, &id)
        })
        .await
    }

    async fn live_workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        let clock = self.clock();
        self.call("list live workers".to_string(), move |conn| {
            workers::live_workers(conn, &*clock)
        })
        .await
    }

    async fn claim_shard(
        &self,
        id: &str,
        shard: u32,
        worker: &str,
        lease: Duration,
    ) -> StoreResult<ShardClaim> {
        let id = id.to_string();
        let worker = worker.to_string();
        let clock = self.clock();
        self.call(
            format!("claim shard {shard} of task {id} for worker {worker}"),
            move |conn| leases::claim_shard(conn, &id, shard, &worker, lease, &*clock),
        )
        .await
    }

    async fn renew_leases(
        &self,
        worker: &str,
        shards: &[(String, u32)],
        lease: Duration,
    ) -> StoreResult<Vec<(String, u32)>> {
        if shards.is_empty() {
            return Ok(Vec::new());
        }
        let worker = worker.to_string();
        let shards = shards.to_vec();
        let clock = self.clock();
        self.call(
            format!("renew {} leases of worker {worker}", shards.len()),
            move |conn| leases::renew_leases(conn, &worker, &shards, lease, &*clock),
        )
        .await
    }

    async fn live_leases(&self, id: &str) -> StoreResult<u32> {
        let id = id.to_string();
        let clock = self.clock();
        self.call(format!("count the live leases of task {id}"), move |conn| {
            leases::live_leases(conn, &id, &*clock)
        })
        .await
    }

    async fn release_shard(
        &self,
        id: &str,
        shard: u32,
        worker: &str,
        clean: bool,
    ) -> StoreResult<()> {
        let id = id.to_string();
        let worker = worker.to_string();
        self.call(
            format!("release shard {shard} of task {id} by worker {worker}"),
            move |conn| leases::release_shard(conn, &id, shard, &worker, clean),
        )
        .await
    }

    async fn runnable_tasks(&self, limit: usize) -> StoreResult<Vec<RunnableTask>> {
        let clock = self.clock();
        self.call("list runnable tasks".to_string(), move |conn| {
            leases::runnable_tasks(conn, limit, &*clock)
        })
        .await
    }

    async fn claim_ready_shard(
        &self,
        id: &str,
        worker: &str,
        lease: Duration,
        max_held: Option<u32>,
    ) -> StoreResult<ReadyClaim> {
        let id = id.to_string();
        let worker = worker.to_string();
        let clock = self.clock();
        self.call(
            format!("claim a ready shard of task {id} for worker {worker}"),
            move |conn| leases::claim_ready_shard(conn, &id, &worker, lease, max_held, &*clock),
        )
        .await
    }

    async fn claim_copy(
        &self,
        id: &str,
        worker: &str,
        per_item: Duration,
        min: Duration,
    ) -> StoreResult<CopyClaim> {
        let id = id.to_string();
        let worker = worker.to_string();
        let clock = self.clock();
        self.call(
            format!("claim a copy of a straggling shard of task {id} for worker {worker}"),
            move |conn| leases::claim_copy(conn, &id, &worker, per_item, min, &*clock),
        )
        .await
    }

    async fn copy_state(&self, id: &str, shard: u32, token: u64) -> StoreResult<CopyState> {
        let id = id.to_string();
        self.call(
            format!("read whether a copy of shard {shard} of task {id} may run on"),
            move |conn| leases::copy_state(conn, &id, shard, token),
        )
        .await
    }

    async fn mark_item_started(&self, id: &str, index: u64) -> StoreResult<u32> {
        let id = id.to_string();
        self.call(
            format!("mark item {index} of task {id} started"),
            move |conn| leases::mark_item_started(conn, &id, index),
        )
        .await
    }

    async fn stats(&self) -> StoreResult<crate::activity::StoreStats> {
        let clock = self.clock();
        self.call("read the store's counts".to_string(), move |conn| {
            activity::stats(conn, &*clock)
        })
        .await
    }

    async fn task_activity(&self, id: &str) -> StoreResult<Option<crate::activity::TaskActivity>> {
        let id = id.to_string();
        self.call(format!("read the activity of task {id}"), move |conn| {
            activity::task_activity(conn, &id)
        })
        .await
    }

    async fn claim_completions(
        &self,
        limit: usize,
        settle: Duration,
        lease: Duration,
    ) -> StoreResult<Vec<Task>> {
        let clock = self.clock();
        self.call("claim completion events".to_string(), move |conn| {
            outbox::claim_completions(conn, limit, settle, lease, &*clock)
        })
        .await
    }

    async fn ack_completion(&self, id: &str, finished_at: u64) -> StoreResult<()> {
        let id = id.to_string();
        self.call(
            format!("acknowledge the completion event of task {id}"),
            move |conn| outbox::ack_completion(conn, &id, finished_at),
        )
        .await
    }

    async fn pending_completions(&self) -> StoreResult<u64> {
        self.call("count pending completion events".to_string(), |conn| {
            outbox::pending_completions(conn)
        })
        .await
    }

    async fn insert_schedule(&self, schedule: &Schedule) -> StoreResult<()> {
        let body = encode("schedule", schedule)?;
        let schedule = schedule.clone();
        self.call(format!("insert schedule {}", schedule.name), move |conn| {
            schedules::insert(conn, &schedule, &body)
        })
        .await
    }

    async fn schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        let name = name.to_string();
        self.call(format!("read schedule {name}"), move |conn| {
            schedules::one(conn, &name)
        })
        .await
    }

    async fn schedules(&self) -> StoreResult<Vec<Schedule>> {
        self.call("list schedules".to_string(), |conn| schedules::all(conn))
            .await
    }

    async fn update_schedule(&self, schedule: &Schedule) -> StoreResult<bool> {
        let body = encode("schedule", schedule)?;
        let name = schedule.name.clone();
        let version = schedule.version;
        self.call(format!("update schedule {name}"), move |conn| {
            schedules::update(conn, &name, version, &body)
        })
        .await
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_string();
        self.call(format!("delete schedule {name}"), move |conn| {
            schedules::delete(conn, &name)
        })
        .await
    }

    async fn reducing_tasks(&self, limit: usize) -> StoreResult<Vec<Task>> {
        self.call("list reducing tasks".to_string(), move |conn| {
            reduce::reducing_tasks(conn, limit)
        })
        .await
    }

    async fn claim_reduce(&self, id: &str, worker: &str) -> StoreResult<ReduceClaim> {
        let id = id.to_string();
        let worker = worker.to_string();
        let clock = self.clock();
        self.call(
            format!("claim the reduce of task {id} for worker {worker}"),
            move |conn| reduce::claim_reduce(conn, &id, &worker, &*clock),
        )
        .await
    }

    async fn finish_reduce(
        &self,
        id: &str,
        worker: &str,
        attempt: u32,
        result: &ReduceResult,
    ) -> StoreResult<Option<Task>> {
        let id = id.to_string();
        let worker = worker.to_string();
        let result = result.clone();
        let clock = self.clock();
        self.call(
            format!("record the reduce of task {id} by worker {worker}"),
            move |conn| reduce::finish_reduce(conn, &id, &worker, attempt, &result, &*clock),
        )
        .await
    }
}
