//! A task's reduce: the tasks waiting for one, its claim, and the record
//! of its result that ends the task (see [`crate::Store::claim_reduce`]).
//!
//! The claim is two columns of the task's row (`reduce_owner`,
//! `reduce_attempts`, schema 17) and lasts while the owner's row in
//! `workers` is unexpired, so claiming and finishing each read and write in
//! one `BEGIN IMMEDIATE` transaction, as the lease operations do.

use super::rows::{DbResult, RawTask, TASK_COLUMNS, find_task, save_state, task_from_row};
use super::tasks::enter;
use crate::{ReduceClaim, StoreError, reduce_end};
use dts_model::{Clock, ItemFailures, ReduceResult, Task, TaskStatus};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

pub(super) fn reducing_tasks(conn: &Connection, limit: usize) -> DbResult<Vec<Task>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // tasks_by_status (status, created_at) serves both the filter and the order.
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE status = ?1 ORDER BY created_at, key LIMIT ?2"
    );
    let raw: Vec<RawTask> = conn
        .prepare_cached(&sql)?
        .query_map(params![TaskStatus::Reducing.as_str(), limit], task_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    raw.into_iter()
        .map(|raw| Ok(raw.decode()?.1))
        .collect::<DbResult<Vec<Task>>>()
}

/// The claim on a task's reduce as its row holds it.
struct Claim {
    key: i64,
    status: TaskStatus,
    owner: Option<String>,
    attempts: u32,
}

/// The claim of task `id`; `None` for an unknown task.
fn read_claim(conn: &Connection, id: &str) -> DbResult<Option<Claim>> {
    let row: Option<(i64, String, Option<String>, u32)> = conn
        .prepare_cached(
            "SELECT key, status, reduce_owner, reduce_attempts FROM tasks WHERE id = ?1",
        )?
        .query_row([id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?;
    let Some((key, status, owner, attempts)) = row else {
        return Ok(None);
    };
    let status = status
        .parse()
        .map_err(|e| StoreError::corrupt(format!("task {id} status"), e))?;
    Ok(Some(Claim {
        key,
        status,
        owner,
        attempts,
    }))
}

pub(super) fn claim_reduce(
    conn: &mut Connection,
    id: &str,
    worker: &str,
    clock: &dyn Clock,
) -> DbResult<ReduceClaim> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let claim =
        read_claim(&tx, id)?.ok_or_else(|| StoreError::NoSuchTask { id: id.to_string() })?;
    if claim.status != TaskStatus::Reducing {
        return Ok(ReduceClaim::NotReducing {
            status: claim.status,
        });
    }
    // Another worker's claim holds while its heartbeat does (the same rule
    // as `live_workers`); the worker's own claim is granted again: it
    // restarted and no longer runs what it claimed.
    if let Some(owner) = claim.owner.filter(|owner| owner != worker) {
        let now = i64::try_from(clock.now_millis()).unwrap_or(i64::MAX);
        let live = tx
            .prepare_cached("SELECT 1 FROM workers WHERE id = ?1 AND expires_at > ?2")?
            .exists(params![owner, now])?;
        if live {
            return Ok(ReduceClaim::Held { owner });
        }
    }
    let attempt = claim.attempts.saturating_add(1);
    tx.prepare_cached("UPDATE tasks SET reduce_owner = ?2, reduce_attempts = ?3 WHERE key = ?1")?
        .execute(params![claim.key, worker, attempt])?;
    tx.commit()?;
    Ok(ReduceClaim::Claimed { attempt })
}

pub(super) fn finish_reduce(
    conn: &mut Connection,
    id: &str,
    worker: &str,
    attempt: u32,
    result: &ReduceResult,
    clock: &dyn Clock,
) -> DbResult<Option<Task>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(claim) = read_claim(&tx, id)? else {
        return Ok(None);
    };
    let holds = claim.status == TaskStatus::Reducing
        && claim.owner.as_deref() == Some(worker)
        && claim.attempts == attempt;
    if !holds {
        return Ok(None);
    }
    let Some((key, mut task)) = find_task(&tx, id)? else {
        return Ok(None);
    };
    let (to, error) = reduce_end(result, ItemFailures::of(task.items_failed));
    task.reduce_result = Some(result.clone());
    if error.is_some() {
        task.error = error;
    }
    // Setting finishedAt adds the outbox entry (the trigger of schema 14).
    enter(&mut task, to, clock.now_millis());
    save_state(&tx, key, &mut task)?;
    tx.commit()?;
    Ok(Some(task))
}
