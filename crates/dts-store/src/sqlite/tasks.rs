//! Task rows: insert, read, list, status transitions and the plan.
//!
//! Blocking functions over one connection, called by [`super::SqliteStore`]
//! from `spawn_blocking`. Each change is one `BEGIN IMMEDIATE` transaction,
//! so it is applied whole or not at all.

use super::rows::{
    DbResult, RawTask, TASK_COLUMNS, find_task, load_task, save_state, task_from_row, task_key,
};
use crate::{PlanOutcome, StoreError, TaskCursor, TaskPage};
use dts_model::reduce::ReduceStep;
use dts_model::{Bytes, Clock, ItemFailures, Task, TaskStatus};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, named_params};

/// Inputs per stored page: a JSON array each. Large enough that inserting
/// a million inputs is a thousand rows, small enough that a one-item shard
/// reads little besides its item. Readers take each page's start from the
/// row, so changing it leaves files written before readable.
pub(super) const INPUT_PAGE: usize = 1024;

/// Stores `task` and its inputs (already encoded: one JSON array per
/// [`INPUT_PAGE`] inputs, in order).
pub(super) fn insert_task(
    conn: &mut Connection,
    task: &Task,
    variables_json: &str,
    input_pages: &[String],
) -> DbResult<()> {
    // NULL when the task requires no label, as rows from before `requires`.
    let requires_json = if task.scheduling.requires.is_empty() {
        None
    } else {
        Some(crate::encode("requires", &task.scheduling.requires)?)
    };
    let after_json = match &task.after {
        Some(after) => Some(crate::encode("after", after)?),
        None => None,
    };
    let reduce_json = match &task.reduce {
        Some(reduce) => Some(crate::encode("reduce", reduce)?),
        None => None,
    };
    let reduce_result_json = super::rows::reduce_result_json(task)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO tasks (id, name, status, template_function, variables, interpreter, \
             timeout_secs, retries, items_total, chunks_to_execute, chunks_executed, \
             items_succeeded, items_failed, created_at, started_at, finished_at, error, \
             deadline_secs, memory_mb, milli_cpus, version, priority, weight, max_concurrency, \
             requires, speculation, halt, after_tasks, reduce, reduce_result) \
             VALUES (:id, :name, :status, :template_function, :variables, :interpreter, \
             :timeout_secs, :retries, :items_total, :chunks_to_execute, :chunks_executed, \
             :items_succeeded, :items_failed, :created_at, :started_at, :finished_at, :error, \
             :deadline_secs, :memory_mb, :milli_cpus, :version, :priority, :weight, \
             :max_concurrency, :requires, :speculation, :halt, :after_tasks, :reduce, \
             :reduce_result) \
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(named_params! {
            ":id": task.id,
            ":name": task.name,
            ":status": task.status.as_str(),
            ":template_function": task.template_function,
            ":variables": variables_json,
            ":interpreter": task.interpreter,
            ":timeout_secs": task.timeout_secs,
            ":retries": task.retries,
            ":items_total": task.items_total,
            ":chunks_to_execute": task.chunks_to_execute,
            ":chunks_executed": task.chunks_executed,
            ":items_succeeded": task.items_succeeded,
            ":items_failed": task.items_failed,
            ":created_at": task.created_at,
            ":started_at": task.started_at,
            ":finished_at": task.finished_at,
            ":error": task.error,
            ":deadline_secs": task.deadline_secs,
            ":memory_mb": task.memory_mb,
            ":milli_cpus": task.milli_cpus,
            ":version": task.version,
            ":priority": task.scheduling.priority,
            ":weight": task.scheduling.weight,
            ":max_concurrency": task.scheduling.max_concurrency,
            ":requires": requires_json,
            ":speculation": task.scheduling.speculation,
            ":halt": task.halt.map(|h| h.to_string()),
            ":after_tasks": after_json,
            ":reduce": reduce_json,
            ":reduce_result": reduce_result_json,
        })?;
    if inserted == 0 {
        return Err(StoreError::TaskExists {
            id: task.id.clone(),
        }
        .into());
    }
    let key = tx.last_insert_rowid();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO task_input_pages (task_key, start, inputs) VALUES (?1, ?2, ?3)",
        )?;
        for (n, page) in input_pages.iter().enumerate() {
            let start = i64::try_from(n * INPUT_PAGE).unwrap_or(i64::MAX);
            insert.execute(rusqlite::params![key, start, page])?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn task(conn: &Connection, id: &str) -> DbResult<Option<Task>> {
    Ok(find_task(conn, id)?.map(|(_, task)| task))
}

pub(super) fn task_version(conn: &Connection, id: &str) -> DbResult<Option<u64>> {
    Ok(conn
        .prepare_cached("SELECT version FROM tasks WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?)
}

pub(super) fn inputs(conn: &Connection, id: &str) -> DbResult<Option<Vec<Bytes>>> {
    inputs_range(conn, id, 0, u64::MAX)
}

/// The inputs at `start..start + len`, clamped to the list. Tasks stored
/// before version 8 of the schema have their list as one array in
/// `task_inputs`: `json_each` walks it (SQLite parses it whole, but nothing
/// else is copied). Newer ones read only the pages the range covers; a
/// page is a JSON array of [`Bytes`] (strings, `{"base64"}` where an input
/// is not UTF-8), so pages written before inputs were bytes read the same.
pub(super) fn inputs_range(
    conn: &Connection,
    id: &str,
    start: u64,
    len: u64,
) -> DbResult<Option<Vec<Bytes>>> {
    let Some(key) = conn
        .prepare_cached("SELECT key FROM tasks WHERE id = ?1")?
        .query_row([id], |row| row.get::<_, i64>(0))
        .optional()?
    else {
        return Ok(None);
    };
    let what = || format!("task {id} inputs");
    let end = start.saturating_add(len);
    let (start_sql, end_sql) = (sql_index(start), sql_index(end));
    let old: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM task_inputs WHERE task_key = ?1)")?
        .query_row([key], |row| row.get(0))?;
    if old {
        let mut stmt = conn.prepare_cached(
            "SELECT j.type, j.value FROM task_inputs i, json_each(i.inputs) j \
             WHERE i.task_key = ?1 AND j.key >= ?2 AND j.key < ?3 ORDER BY j.key",
        )?;
        let mut rows = stmt.query(rusqlite::params![key, start_sql, end_sql])?;
        let mut inputs = Vec::new();
        while let Some(row) = rows.next()? {
            let kind: String = row.get(0)?;
            if kind != "text" {
                return Err(
                    StoreError::corrupt(what(), format!("an input is {kind}, not text")).into(),
                );
            }
            inputs.push(Bytes::from(row.get::<_, String>(1)?));
        }
        return Ok(Some(inputs));
    }
    // The page holding `start` is the last one starting at or before it.
    let mut stmt = conn.prepare_cached(
        "SELECT start, inputs FROM task_input_pages WHERE task_key = ?1 AND start < ?3 \
         AND start >= COALESCE((SELECT MAX(start) FROM task_input_pages \
                                WHERE task_key = ?1 AND start <= ?2), 0) \
         ORDER BY start",
    )?;
    let pages = stmt
        .query_map(rusqlite::params![key, start_sql, end_sql], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut inputs = Vec::new();
    for (page_start, json) in pages {
        let page: Vec<Bytes> =
            serde_json::from_str(&json).map_err(|e| StoreError::corrupt(what(), e))?;
        let page_start = u64::try_from(page_start).map_err(|e| StoreError::corrupt(what(), e))?;
        let skip = start.saturating_sub(page_start);
        let take = end.saturating_sub(page_start.max(start));
        inputs.extend(
            page.into_iter()
                .skip(usize::try_from(skip).unwrap_or(usize::MAX))
                .take(usize::try_from(take).unwrap_or(usize::MAX)),
        );
    }
    Ok(Some(inputs))
}

/// An input index as SQLite's integers hold it (beyond any list's length
/// when it does not fit).
fn sql_index(index: u64) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

/// One page of the listing, newest first, after `after`. Reads one task
/// more than asked to learn whether another page follows.
pub(super) fn list_tasks_page(
    conn: &Connection,
    status: Option<TaskStatus>,
    after: Option<TaskCursor>,
    limit: usize,
) -> DbResult<TaskPage> {
    if limit == 0 {
        return Ok(TaskPage {
            tasks: Vec::new(),
            next: None,
        });
    }
    let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    // Past every real position when there is no cursor.
    let (created, key) = after.map_or((i64::MAX, i64::MAX), |cursor| {
        (
            i64::try_from(cursor.created_at).unwrap_or(i64::MAX),
            i64::try_from(cursor.sequence).unwrap_or(i64::MAX),
        )
    });
    let filter = if status.is_some() {
        "status = :status AND"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE {filter} \
         (created_at < :created OR (created_at = :created AND key < :key)) \
         ORDER BY created_at DESC, key DESC LIMIT :fetch"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let raw: Vec<RawTask> = match status {
        Some(status) => stmt
            .query_map(
                named_params! {":status": status.as_str(), ":created": created, ":key": key, ":fetch": fetch},
                task_from_row,
            )?
            .collect::<rusqlite::Result<_>>()?,
        None => stmt
            .query_map(
                named_params! {":created": created, ":key": key, ":fetch": fetch},
                task_from_row,
            )?
            .collect::<rusqlite::Result<_>>()?,
    };
    let mut tasks = Vec::with_capacity(raw.len().min(limit));
    let mut last_key = 0;
    let more = raw.len() > limit;
    for raw in raw.into_iter().take(limit) {
        let (key, task) = raw.decode()?;
        last_key = key;
        tasks.push(task);
    }
    let next = match tasks.last() {
        Some(last) if more => Some(TaskCursor {
            created_at: last.created_at,
            sequence: u64::try_from(last_key).unwrap_or(0),
        }),
        _ => None,
    };
    Ok(TaskPage { tasks, next })
}

/// Ids starting with `prefix`, ascending: a range on the unique index of
/// `id` (ids are ASCII, so every id with the prefix sorts below the prefix
/// followed by U+10FFFF).
pub(super) fn task_ids_with_prefix(
    conn: &Connection,
    prefix: &str,
    limit: usize,
) -> DbResult<Vec<String>> {
    let end = format!("{prefix}\u{10FFFF}");
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached("SELECT id FROM tasks WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3")?;
    let ids = stmt
        .query_map(rusqlite::params![prefix, end, limit], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

/// Every table holding rows of a task, by `task_key`: a new table must be
/// added here, or deleting a task leaves its rows behind.
const TASK_TABLES: [&str; 11] = [
    "task_inputs",
    "task_input_pages",
    "completed_shards",
    "results",
    "shard_leases",
    "item_starts",
    "ready_shards",
    "item_history",
    "task_worker_counts",
    "task_throughput",
    // A pending event of a deleted task goes with it: see Store::delete_task.
    "completion_outbox",
];

pub(super) fn delete_task(conn: &mut Connection, id: &str) -> DbResult<Task> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (key, task) = load_task(&tx, id)?;
    if !task.status.is_terminal() {
        return Err(StoreError::TaskNotEnded {
            id: id.to_string(),
            status: task.status,
        }
        .into());
    }
    for table in TASK_TABLES {
        tx.prepare_cached(&format!("DELETE FROM {table} WHERE task_key = ?1"))?
            .execute([key])?;
    }
    tx.prepare_cached("DELETE FROM tasks WHERE key = ?1")?
        .execute([key])?;
    tx.commit()?;
    Ok(task)
}

pub(super) fn unfinished_task_ids(conn: &Connection) -> DbResult<Vec<String>> {
    // Derived from the model, so a new status cannot be forgotten here.
    let unfinished: Vec<String> = TaskStatus::ALL
        .iter()
        .filter(|status| !status.is_terminal())
        .map(|status| format!("'{}'", status.as_str()))
        .collect();
    let sql = format!(
        "SELECT id FROM tasks WHERE status IN ({}) ORDER BY created_at, key",
        unfinished.join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let ids = stmt
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

pub(super) fn transition(
    conn: &mut Connection,
    id: &str,
    to: TaskStatus,
    error: Option<&str>,
    clock: &dyn Clock,
) -> DbResult<Task> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (key, mut task) = load_task(&tx, id)?;
    if !task.status.can_transition_to(to) {
        return Err(StoreError::IllegalTransition {
            id: id.to_string(),
            from: task.status,
            to,
        }
        .into());
    }
    enter(&mut task, to, clock.now_millis());
    if let Some(error) = error {
        task.error = Some(error.to_string());
    }
    if to.is_terminal() {
        super::leases::forget_ready(&tx, key)?;
    }
    save_state(&tx, key, &mut task)?;
    tx.commit()?;
    Ok(task)
}

/// Sets `task.status` to `to` and stamps the times that entering it sets.
pub(super) fn enter(task: &mut Task, to: TaskStatus, now: u64) {
    task.status = to;
    if to == TaskStatus::InProgress && task.started_at.is_none() {
        task.started_at = Some(now);
    }
    if to.is_terminal() {
        task.finished_at = Some(now);
    }
}

pub(super) fn save_plan(
    conn: &mut Connection,
    id: &str,
    shard_count: usize,
    plan_json: &str,
    clock: &dyn Clock,
) -> DbResult<PlanOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (key, mut task) = load_task(&tx, id)?;
    let stored: Option<String> = tx
        .prepare_cached("SELECT plan FROM tasks WHERE key = ?1")?
        .query_row([key], |row| row.get(0))?;
    if let Some(stored) = stored {
        let shards = serde_json::from_str(&stored)
            .map_err(|e| StoreError::corrupt(format!("task {id} plan"), e))?;
        return Ok(PlanOutcome::Existing { task, shards });
    }
    if task.status.is_terminal() {
        return Ok(PlanOutcome::Ended(task));
    }
    task.chunks_to_execute = crate::plan_size(id, shard_count)?;
    let now = clock.now_millis();
    // INPROGRESS first so startedAt is set even when the task completes at once.
    enter(&mut task, TaskStatus::InProgress, now);
    if shard_count == 0 {
        // No shards: planning completed the last one, with nothing failed;
        // a task with a reduce reduces (over no results).
        let after = task
            .status
            .after_last_shard(ItemFailures::None, ReduceStep::of(task.reduce.as_ref(), 0));
        enter(&mut task, after, now);
    }
    tx.prepare_cached("UPDATE tasks SET plan = ?2 WHERE key = ?1")?
        .execute(rusqlite::params![key, plan_json])?;
    super::leases::enqueue_plan(&tx, key, task.chunks_to_execute)?;
    save_state(&tx, key, &mut task)?;
    tx.commit()?;
    Ok(PlanOutcome::Created(task))
}

pub(super) fn completed_shards(conn: &Connection, id: &str) -> DbResult<Vec<u32>> {
    let key = task_key(conn, id)?;
    let mut stmt = conn
        .prepare_cached("SELECT shard FROM completed_shards WHERE task_key = ?1 ORDER BY shard")?;
    let shards = stmt
        .query_map([key], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(shards)
}
