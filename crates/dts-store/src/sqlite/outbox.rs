//! The completion outbox: rows the schema's trigger adds when a task ends
//! (schema.rs, version 14), claimed and acknowledged by the drainers.

use super::rows::{DbResult, find_task};
use dts_model::{Clock, Task};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::time::Duration;

/// Claims up to `limit` entries quiet for `settle` (added, or their claim
/// expired, at least that long ago), oldest first, until `lease` from now,
/// and returns their tasks. Entries of tasks gone or running again are
/// dropped.
pub(super) fn claim_completions(
    conn: &mut Connection,
    limit: usize,
    settle: Duration,
    lease: Duration,
    clock: &dyn Clock,
) -> DbResult<Vec<Task>> {
    let now = i64::try_from(clock.now_millis()).unwrap_or(i64::MAX);
    let settle = i64::try_from(settle.as_millis()).unwrap_or(i64::MAX);
    let due = now.saturating_sub(settle);
    // A read first, outside a write transaction: most polls find nothing
    // and should not take the write lock for it.
    let any: Option<i64> = conn
        .prepare_cached("SELECT task_key FROM completion_outbox WHERE at <= ?1 LIMIT 1")?
        .query_row([due], |row| row.get(0))
        .optional()?;
    if any.is_none() {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let until = now.saturating_add(i64::try_from(crate::lease_millis(lease)).unwrap_or(0));
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let due_entries: Vec<(i64, Option<String>)> = tx
        .prepare_cached(
            "SELECT o.task_key, t.id FROM completion_outbox o LEFT JOIN tasks t ON t.key = o.task_key \
             WHERE o.at <= ?1 ORDER BY o.at, o.task_key LIMIT ?2",
        )?
        .query_map(params![due, limit], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut tasks = Vec::with_capacity(due_entries.len());
    for (key, id) in due_entries {
        let task = match id {
            Some(id) => find_task(&tx, &id)?,
            None => None,
        };
        match task {
            // A task retried and running again gets its entry back when it
            // ends again; one gone has nothing left to announce.
            Some((_, task)) if task.status.is_terminal() => {
                tx.prepare_cached("UPDATE completion_outbox SET at = ?2 WHERE task_key = ?1")?
                    .execute(params![key, until])?;
                tasks.push(task);
            }
            _ => {
                tx.prepare_cached("DELETE FROM completion_outbox WHERE task_key = ?1")?
                    .execute([key])?;
            }
        }
    }
    tx.commit()?;
    Ok(tasks)
}

/// Removes task `id`'s entry if it is still the one for the end at
/// `finished_at`; an entry of a later end (the task was retried and ended
/// again) stays for its own event.
pub(super) fn ack_completion(conn: &mut Connection, id: &str, finished_at: u64) -> DbResult<()> {
    let finished_at = i64::try_from(finished_at).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "DELETE FROM completion_outbox WHERE finished_at = ?2 \
         AND task_key = (SELECT key FROM tasks WHERE id = ?1)",
    )?
    .execute(params![id, finished_at])?;
    Ok(())
}

/// Entries not yet acknowledged, claimed or not.
pub(super) fn pending_completions(conn: &Connection) -> DbResult<u64> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM completion_outbox")?
        .query_row([], |row| row.get(0))?)
}
