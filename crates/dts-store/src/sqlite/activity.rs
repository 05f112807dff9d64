//! The summaries of [`crate::activity`], read from the tables schema 13
//! keeps (`results.rs` writes them with the results).

use super::leases::runnable_tasks;
use super::rows::DbResult;
use crate::StoreError;
use crate::activity::{self, StoreStats, TaskActivity, WorkerCounts};
use dts_model::{Clock, TaskStatus};
use rusqlite::{Connection, OptionalExtension};

pub(super) fn stats(conn: &mut Connection, clock: &dyn Clock) -> DbResult<StoreStats> {
    let mut stats = StoreStats {
        tasks_by_status: TaskStatus::ALL.into_iter().map(|s| (s, 0)).collect(),
        ..StoreStats::default()
    };
    {
        let mut by_status =
            conn.prepare_cached("SELECT status, COUNT(*) FROM tasks GROUP BY status")?;
        let rows = by_status.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
        })?;
        for row in rows {
            let (status, count) = row?;
            let status: TaskStatus = status
                .parse()
                .map_err(|e| StoreError::corrupt(format!("a task status {status:?}"), e))?;
            if let Some(slot) = stats.tasks_by_status.iter_mut().find(|(s, _)| *s == status) {
                slot.1 = count;
            }
        }
    }
    stats.shards_waiting = runnable_tasks(conn, usize::MAX, clock)?
        .iter()
        .map(|task| u64::from(task.ready))
        .sum();
    stats.items_finished = conn
        .prepare_cached("SELECT value FROM store_counters WHERE name = 'items_finished'")?
        .query_row([], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    let (from, to) = activity::last_minute(clock.now_millis());
    stats.items_last_minute = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(items), 0) FROM store_throughput WHERE bucket >= ?1 AND bucket < ?2",
        )?
        .query_row([from, to], |row| row.get(0))?;
    Ok(stats)
}

pub(super) fn task_activity(conn: &mut Connection, id: &str) -> DbResult<Option<TaskActivity>> {
    let tx = conn.transaction()?;
    let Some(key): Option<i64> = tx
        .prepare_cached("SELECT key FROM tasks WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?
    else {
        return Ok(None);
    };
    let per_worker = tx
        .prepare_cached(
            "SELECT worker, succeeded, failed FROM task_worker_counts WHERE task_key = ?1",
        )?
        .query_map([key], |row| {
            Ok((
                row.get::<_, String>(0)?,
                WorkerCounts {
                    succeeded: row.get(1)?,
                    failed: row.get(2)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let throughput = tx
        .prepare_cached(
            "SELECT bucket, items FROM task_throughput WHERE task_key = ?1 \
             ORDER BY bucket DESC LIMIT ?2",
        )?
        .query_map(
            rusqlite::params![key, activity::TASK_BUCKETS_SHOWN as i64],
            |row| Ok((row.get::<_, u64>(0)?, row.get::<_, u64>(1)?)),
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    tx.commit()?;
    Ok(Some(TaskActivity {
        per_worker,
        throughput: activity::last_buckets(throughput),
    }))
}
