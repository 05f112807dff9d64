//! Item results and shard completion: the writes workers make while a task runs.
//!
//! Results arrive in batches of hundreds; a batch is one transaction reusing
//! two prepared statements (read the old outcome, upsert the new one) per item.

use super::rows::{
    DbResult, RESULT_COLUMNS, bytes_sql, load_task, no_shard, result_from_row, save_state, task_key,
};
use super::tasks::enter;
use crate::{ResultFilter, ShardCompletion, StoreError};
use dts_model::reduce::ReduceStep;
use dts_model::{Clock, ItemFailures, ItemResult, Task, TaskStatus};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, named_params, params};

/// Records `results`, of shard `shard` when given, written by the copy
/// handed out with `copy` when given: `None`, and nothing written, only
/// for a copy that is no longer the shard's (see `Store::record_copy_results`).
pub(super) fn record_results(
    conn: &mut Connection,
    id: &str,
    shard: Option<u32>,
    copy: Option<u64>,
    results: &[ItemResult],
    clock: &dyn Clock,
) -> DbResult<Option<TaskStatus>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (key, mut task) = load_task(&tx, id)?;
    if let Some(shard) = shard {
        if shard >= task.chunks_to_execute {
            return Err(no_shard(id, shard, task.chunks_to_execute).into());
        }
        if super::leases::is_completed(&tx, key, shard)? {
            // The run that completed the shard counted; this one records nothing.
            return Ok(Some(task.status));
        }
        if let Some(token) = copy {
            if !super::leases::is_current_copy(&tx, key, shard, token)? {
                return Ok(None);
            }
        }
    }
    let before = task.clone();
    // A shard's results keep the first result of each item (see
    // `Store::record_shard_results`); plain recording replaces.
    let keep = if shard.is_some() {
        Recorded::Keep
    } else {
        Recorded::Replace
    };
    apply_results(&tx, key, &mut task, results, keep, clock.now_millis())?;
    halt_if_crossed(&tx, key, &mut task, clock.now_millis())?;
    if task != before {
        save_state(&tx, key, &mut task)?;
    }
    tx.commit()?;
    Ok(Some(task.status))
}

/// Completes shard `shard` with `results`, for the copy handed out with
/// `copy` when given: `None`, and nothing written, only for a copy that is
/// no longer the shard's (see `Store::complete_copy`).
pub(super) fn complete_shard(
    conn: &mut Connection,
    id: &str,
    shard: u32,
    copy: Option<u64>,
    results: &[ItemResult],
    clock: &dyn Clock,
) -> DbResult<Option<ShardCompletion>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (key, mut task) = load_task(&tx, id)?;
    if shard >= task.chunks_to_execute {
        return Err(no_shard(id, shard, task.chunks_to_execute).into());
    }
    if super::leases::is_completed(&tx, key, shard)? {
        // The first run to complete the shard counted; this one records nothing.
        return Ok(Some(ShardCompletion {
            newly_completed: false,
            finished_task: false,
            task,
        }));
    }
    if let Some(token) = copy {
        if !super::leases::is_current_copy(&tx, key, shard, token)? {
            return Ok(None);
        }
    }
    let before = task.clone();
    apply_results(
        &tx,
        key,
        &mut task,
        results,
        Recorded::Keep,
        clock.now_millis(),
    )?;
    let mut finished_task = halt_if_crossed(&tx, key, &mut task, clock.now_millis())?;
    // Whoever held the lease, nobody runs a completed shard again.
    super::leases::drop_lease(&tx, key, shard)?;
    tx.prepare_cached("INSERT INTO completed_shards (task_key, shard) VALUES (?1, ?2)")?
        .execute(params![key, shard])?;
    let newly_completed = true;
    {
        task.chunks_executed += 1;
        if task.chunks_executed == task.chunks_to_execute {
            // The rule (and why a cancelled task keeps its status) is dts-model's.
            let after = task.status.after_last_shard(
                ItemFailures::of(task.items_failed),
                ReduceStep::of(task.reduce.as_ref(), task.items_failed),
            );
            if after != task.status {
                enter(&mut task, after, clock.now_millis());
                // REDUCING has not ended the task: its reduce's record will.
                finished_task |= after.is_terminal();
            }
        }
    }
    if task != before {
        save_state(&tx, key, &mut task)?;
    }
    tx.commit()?;
    Ok(Some(ShardCompletion {
        newly_completed,
        finished_task,
        task,
    }))
}

/// Ends an `INPROGRESS` task `FAILED` once its failures reach its `halt`,
/// in the transaction that counted them, so two workers recording
/// failures at once cannot both miss the threshold (the Redis store does
/// the same in its scripts). Items that have not run stay without a result,
/// as after a cancel, for a retry to run. Returns whether the task ended.
fn halt_if_crossed(conn: &Connection, key: i64, task: &mut Task, now: u64) -> DbResult<bool> {
    let Some(halt) = task.halt else {
        return Ok(false);
    };
    if task.status != TaskStatus::InProgress
        || task.items_failed < halt.failures_to_halt(task.items_total)
    {
        return Ok(false);
    }
    enter(task, TaskStatus::Failed, now);
    task.error = Some(halt.reason(task.items_failed));
    super::leases::forget_ready(conn, key)?;
    Ok(true)
}

/// What recording does to an item that has a result already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// The new result replaces it (`Store::record_results`).
    Replace,
    /// It stays: the first result of an item counts (a shard's results).
    Keep,
}

/// Upserts `results` and moves `task`'s counters by the difference between
/// each item's old outcome (if it had one) and its new one; with
/// [`Recorded::Keep`], an item that has a result is left as it is.
fn apply_results(
    conn: &Connection,
    key: i64,
    task: &mut Task,
    results: &[ItemResult],
    recorded: Recorded,
    now: u64,
) -> DbResult<()> {
    let mut before =
        conn.prepare_cached("SELECT succeeded FROM results WHERE task_key = ?1 AND idx = ?2")?;
    let mut upsert = conn.prepare_cached(
        "INSERT INTO results (task_key, idx, succeeded, input, exit_code, signal, timed_out, \
         stdout, stderr, stdout_truncated, stderr_truncated, duration_ms, worker, attempt, error, \
         stdout_bytes, stderr_bytes) \
         VALUES (:task_key, :idx, :succeeded, :input, :exit_code, :signal, :timed_out, :stdout, \
         :stderr, :stdout_truncated, :stderr_truncated, :duration_ms, :worker, :attempt, :error, \
         :stdout_bytes, :stderr_bytes) \
         ON CONFLICT (task_key, idx) DO UPDATE SET succeeded = excluded.succeeded, \
         input = excluded.input, exit_code = excluded.exit_code, signal = excluded.signal, \
         timed_out = excluded.timed_out, stdout = excluded.stdout, stderr = excluded.stderr, \
         stdout_truncated = excluded.stdout_truncated, stderr_truncated = excluded.stderr_truncated, \
         duration_ms = excluded.duration_ms, worker = excluded.worker, attempt = excluded.attempt, \
         error = excluded.error, stdout_bytes = excluded.stdout_bytes, \
         stderr_bytes = excluded.stderr_bytes",
    )?;
    let (mut succeeded, mut failed) = (0i64, 0i64);
    let mut by_worker = crate::activity::WorkerTally::default();
    for result in results {
        let old: Option<bool> = before
            .query_row(params![key, result.index], |row| row.get(0))
            .optional()?;
        match old {
            Some(_) if recorded == Recorded::Keep => continue,
            Some(true) => succeeded -= 1,
            Some(false) => failed -= 1,
            None => {}
        }
        let ok = result.succeeded();
        if ok {
            succeeded += 1;
        } else {
            failed += 1;
        }
        upsert.execute(named_params! {
            ":task_key": key,
            ":idx": result.index,
            ":succeeded": ok,
            ":input": bytes_sql(&result.input),
            ":exit_code": result.exit_code,
            ":signal": result.signal,
            ":timed_out": result.timed_out,
            ":stdout": bytes_sql(&result.stdout),
            ":stderr": bytes_sql(&result.stderr),
            ":stdout_truncated": result.stdout_truncated,
            ":stderr_truncated": result.stderr_truncated,
            ":duration_ms": result.duration_ms,
            ":worker": result.worker,
            ":attempt": result.attempt,
            ":error": result.error,
            ":stdout_bytes": result.stdout_bytes,
            ":stderr_bytes": result.stderr_bytes,
        })?;
        by_worker.add(&result.worker, ok);
    }
    count_activity(conn, key, &by_worker, now)?;
    task.items_succeeded = shift(task, "items_succeeded", task.items_succeeded, succeeded)?;
    task.items_failed = shift(task, "items_failed", task.items_failed, failed)?;
    Ok(())
}

/// Adds the results just written to the summaries of schema 13: the task's
/// per-worker counts and throughput bucket, and the store's.
fn count_activity(
    conn: &Connection,
    key: i64,
    by_worker: &crate::activity::WorkerTally,
    now: u64,
) -> DbResult<()> {
    let recorded = by_worker.total();
    if recorded == 0 {
        return Ok(());
    }
    let mut per_worker = conn.prepare_cached(
        "INSERT INTO task_worker_counts (task_key, worker, succeeded, failed) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (task_key, worker) DO UPDATE SET \
         succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed",
    )?;
    for (worker, counts) in by_worker.iter() {
        per_worker.execute(params![key, worker, counts.succeeded, counts.failed])?;
    }
    let bucket = crate::activity::bucket_start(now);
    conn.prepare_cached(
        "INSERT INTO task_throughput (task_key, bucket, items) VALUES (?1, ?2, ?3) \
         ON CONFLICT (task_key, bucket) DO UPDATE SET items = items + excluded.items",
    )?
    .execute(params![key, bucket, recorded])?;
    conn.prepare_cached(
        "INSERT INTO store_throughput (bucket, items) VALUES (?1, ?2) \
         ON CONFLICT (bucket) DO UPDATE SET items = items + excluded.items",
    )?
    .execute(params![bucket, recorded])?;
    conn.prepare_cached("DELETE FROM store_throughput WHERE bucket < ?1")?
        .execute([bucket.saturating_sub(crate::activity::STORE_BUCKETS_KEPT_MS)])?;
    conn.prepare_cached(
        "INSERT INTO store_counters (name, value) VALUES ('items_finished', ?1) \
         ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
    )?
    .execute([recorded])?;
    Ok(())
}

/// `count + delta`; below zero means the counters and the results disagree.
fn shift(task: &Task, field: &str, count: u64, delta: i64) -> Result<u64, StoreError> {
    count.checked_add_signed(delta).ok_or_else(|| {
        StoreError::corrupt(
            format!("task {} {field}", task.id),
            format!("{count} moved by {delta} is out of range"),
        )
    })
}

pub(super) fn recorded_indices(
    conn: &Connection,
    id: &str,
    start: u64,
    end: u64,
) -> DbResult<Vec<u64>> {
    let key = task_key(conn, id)?;
    let (start, end) = (clamp(start), clamp(end));
    let mut stmt = conn.prepare_cached(
        "SELECT idx FROM results WHERE task_key = ?1 AND idx >= ?2 AND idx < ?3 ORDER BY idx",
    )?;
    let indices = stmt
        .query_map(params![key, start, end], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(indices)
}

pub(super) fn results(
    conn: &mut Connection,
    id: &str,
    filter: ResultFilter,
    offset: u64,
    limit: u64,
) -> DbResult<(u64, Vec<ItemResult>)> {
    // One read transaction: the total and the page see the same snapshot.
    let tx = conn.transaction()?;
    let key = task_key(&tx, id)?;
    let outcome = match filter {
        ResultFilter::All => "",
        ResultFilter::Succeeded => " AND succeeded = 1",
        ResultFilter::Failed => " AND succeeded = 0",
    };
    let total: u64 = tx
        .prepare_cached(&format!(
            "SELECT count(*) FROM results WHERE task_key = ?1{outcome}"
        ))?
        .query_row([key], |row| row.get(0))?;
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {RESULT_COLUMNS} FROM results WHERE task_key = ?1{outcome} \
         ORDER BY idx LIMIT ?2 OFFSET ?3"
    ))?;
    let page = stmt
        .query_map(params![key, clamp(limit), clamp(offset)], result_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    drop(stmt);
    tx.commit()?;
    Ok((total, page))
}

/// SQLite integers are signed; no index or page size comes near the limit.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
