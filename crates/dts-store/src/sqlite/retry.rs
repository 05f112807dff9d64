//! Retrying a task: its failed and never-run items run again as the same
//! task (see [`crate::Store::retry_task`]), and the history that keeps
//! their earlier attempts.

use super::rows::{DbResult, RESULT_COLUMNS, load_task, result_from_row, save_state, task_key};
use crate::{RetryOutcome, StoreError, check_retry, shards_to_reopen, status_after_retry};
use dts_model::{Clock, ItemResult, PastAttempt, ShardRange};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::BTreeMap;

pub(super) fn retry_task(
    conn: &mut Connection,
    id: &str,
    clock: &dyn Clock,
) -> DbResult<RetryOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (key, mut task) = load_task(&tx, id)?;
    check_retry(&task, clock.now_millis())?;
    let plan: Option<String> = tx
        .prepare_cached("SELECT plan FROM tasks WHERE key = ?1")?
        .query_row([key], |row| row.get(0))?;
    let plan: Vec<ShardRange> = match plan {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| StoreError::corrupt(format!("task {id} plan"), e))?,
        None => Vec::new(),
    };
    let completed: Vec<u32> = tx
        .prepare_cached("SELECT shard FROM completed_shards WHERE task_key = ?1")?
        .query_map([key], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let failed: Vec<ItemResult> = tx
        .prepare_cached(&format!(
            "SELECT {RESULT_COLUMNS} FROM results WHERE task_key = ?1 AND succeeded = 0 ORDER BY idx"
        ))?
        .query_map([key], result_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    let indices: Vec<u64> = failed.iter().map(|result| result.index).collect();
    let mut history = read_history(&tx, id, key, &indices)?;
    {
        let mut write = tx.prepare_cached(
            "INSERT OR REPLACE INTO item_history (task_key, idx, attempts) VALUES (?1, ?2, ?3)",
        )?;
        for result in &failed {
            let past = PastAttempt::push(history.remove(&result.index).unwrap_or_default(), result);
            write.execute(params![
                key,
                result.index,
                crate::encode("attempt history", &past)?
            ])?;
        }
    }
    tx.prepare_cached("DELETE FROM results WHERE task_key = ?1 AND succeeded = 0")?
        .execute([key])?;
    let shards = shards_to_reopen(&plan, &completed, &indices);
    let mut reopened_completed = 0;
    for &shard in &shards {
        reopened_completed += tx
            .prepare_cached("DELETE FROM completed_shards WHERE task_key = ?1 AND shard = ?2")?
            .execute(params![key, shard])?;
        // A lease row of attempt 1, unowned: the claim is not the shard's
        // first, so the claimant skips the items that succeeded, and not a
        // new attempt, so no item counts as one that kills its workers.
        tx.prepare_cached(
            "INSERT OR REPLACE INTO shard_leases \
             (task_key, shard, owner, expires_at, attempts, dirty, claimed_at, copied) \
             VALUES (?1, ?2, NULL, 0, 1, 0, 0, 0)",
        )?
        .execute(params![key, shard])?;
        tx.prepare_cached("INSERT OR IGNORE INTO ready_shards (task_key, shard) VALUES (?1, ?2)")?
            .execute(params![key, shard])?;
    }
    let failed_count = failed.len() as u64;
    let not_run = task
        .items_total
        .saturating_sub(task.items_succeeded)
        .saturating_sub(task.items_failed);
    task.items_failed = task.items_failed.saturating_sub(failed_count);
    task.chunks_executed = task
        .chunks_executed
        .saturating_sub(u32::try_from(reopened_completed).unwrap_or(u32::MAX));
    task.status = status_after_retry(&task, shards.len());
    task.finished_at = None;
    task.error = None;
    // The reduce runs again once the items have their results: its last
    // result and claim go, and its attempts count from 1 again.
    task.reduce_result = None;
    tx.prepare_cached("UPDATE tasks SET reduce_owner = NULL, reduce_attempts = 0 WHERE key = ?1")?
        .execute([key])?;
    save_state(&tx, key, &mut task)?;
    tx.commit()?;
    Ok(RetryOutcome {
        task,
        failed: failed_count,
        not_run,
        shards: u32::try_from(shards.len()).unwrap_or(u32::MAX),
    })
}

pub(super) fn attempt_history(
    conn: &Connection,
    id: &str,
    indices: &[u64],
) -> DbResult<BTreeMap<u64, Vec<PastAttempt>>> {
    let key = task_key(conn, id)?;
    read_history(conn, id, key, indices)
}

fn read_history(
    conn: &Connection,
    id: &str,
    key: i64,
    indices: &[u64],
) -> DbResult<BTreeMap<u64, Vec<PastAttempt>>> {
    let mut read =
        conn.prepare_cached("SELECT attempts FROM item_history WHERE task_key = ?1 AND idx = ?2")?;
    let mut history = BTreeMap::new();
    for &index in indices {
        let json: Option<String> = read
            .query_row(params![key, index], |row| row.get(0))
            .optional()?;
        if let Some(json) = json {
            let past = serde_json::from_str(&json).map_err(|e| {
                StoreError::corrupt(format!("task {id} item {index} attempt history"), e)
            })?;
            history.insert(index, past);
        }
    }
    Ok(history)
}
