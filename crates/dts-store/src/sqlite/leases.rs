//! Shard leases and item start counts: which worker runs a shard now, how
//! many attempts the shard has had, and how often each item was started.
//!
//! Blocking functions over one connection, called by [`super::SqliteStore`]
//! from `spawn_blocking`. A claim reads the lease row, decides ([`decide`],
//! pure) and writes it back in one `BEGIN IMMEDIATE` transaction, so two
//! claimants (threads or processes) never both acquire. Times are the
//! store's [`Clock`] (the wall clock of this machine, unless a test injects
//! another): every process sharing the file shares it.
//!
//! The ready queue (`ready_shards`) holds each in-progress task's shards
//! that are neither completed nor owned; every write that changes a lease
//! keeps it in step in the same transaction. A shard whose owner's lease
//! expired is ready as well, found in `shard_leases` at claim time: its
//! owner may still renew it, which must not touch the queue.

use super::rows::{DbResult, RawTask, TASK_COLUMNS, find_task, no_shard, task_from_row, task_key};
use crate::{CopyClaim, CopyState, ReadyClaim, RunnableTask, ShardClaim, StoreError, lease_millis};
use dts_model::{Clock, ShardRange, TaskStatus};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, named_params, params};
use std::time::Duration;

/// A shard's row in `shard_leases`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lease {
    /// The worker holding it; `None` once released.
    owner: Option<String>,
    /// When an owner's lease runs out, in milliseconds.
    expires_at: u64,
    /// Claims that counted: the first, and each after a worker lost it.
    attempts: u32,
    /// Released not clean: the next claim counts as a new attempt.
    dirty: bool,
    /// When the owner claimed it, in milliseconds: how long it has run,
    /// for straggler speculation.
    claimed_at: u64,
}

/// What a claim by `worker` at `now` does to a shard whose lease is
/// `before` (`None`: never claimed): the answer, and the lease to store if
/// the claim acquired it.
fn decide(
    before: Option<Lease>,
    worker: &str,
    now: u64,
    lease_ms: u64,
) -> (ShardClaim, Option<Lease>) {
    let before = before.unwrap_or(Lease {
        owner: None,
        expires_at: 0,
        attempts: 0,
        dirty: false,
        claimed_at: 0,
    });
    let attempts = match before.owner {
        Some(owner) if before.expires_at > now => {
            let expires_in = Duration::from_millis(before.expires_at - now);
            return (ShardClaim::Held { owner, expires_in }, None);
        }
        // Expired while still owned: its worker stopped renewing (died).
        Some(_) => before.attempts.saturating_add(1),
        // Never claimed, or handed back after a failure.
        None if before.attempts == 0 || before.dirty => before.attempts.saturating_add(1),
        // Handed back cleanly: the same attempt carries on.
        None => before.attempts,
    };
    let after = Lease {
        owner: Some(worker.to_string()),
        expires_at: now.saturating_add(lease_ms),
        attempts,
        dirty: false,
        claimed_at: now,
    };
    (ShardClaim::Acquired { attempt: attempts }, Some(after))
}

pub(super) fn claim_shard(
    conn: &mut Connection,
    id: &str,
    shard: u32,
    worker: &str,
    lease: Duration,
    clock: &dyn Clock,
) -> DbResult<ShardClaim> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (key, planned): (i64, u32) = tx
        .prepare_cached("SELECT key, chunks_to_execute FROM tasks WHERE id = ?1")?
        .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?
        .ok_or_else(|| StoreError::NoSuchTask { id: id.to_string() })?;
    let completed = tx
        .prepare_cached("SELECT 1 FROM completed_shards WHERE task_key = ?1 AND shard = ?2")?
        .exists(params![key, shard])?;
    if completed {
        return Ok(ShardClaim::Completed);
    }
    if shard >= planned {
        return Err(no_shard(id, shard, planned).into());
    }
    let before = read_lease(&tx, key, shard)?;
    let (claim, after) = decide(before, worker, clock.now_millis(), lease_millis(lease));
    if let Some(after) = after {
        write_lease(&tx, key, shard, &after)?;
    }
    tx.commit()?;
    Ok(claim)
}

/// The lease row of a shard, if it was ever claimed (and not completed).
fn read_lease(conn: &Connection, key: i64, shard: u32) -> DbResult<Option<Lease>> {
    Ok(conn
        .prepare_cached(
            "SELECT owner, expires_at, attempts, dirty, claimed_at FROM shard_leases \
             WHERE task_key = ?1 AND shard = ?2",
        )?
        .query_row(params![key, shard], |row| {
            Ok(Lease {
                owner: row.get(0)?,
                expires_at: row.get(1)?,
                attempts: row.get(2)?,
                dirty: row.get(3)?,
                claimed_at: row.get(4)?,
            })
        })
        .optional()?)
}

/// Stores a lease just acquired. An owned shard is not ready, whichever
/// path claimed it, so it leaves the ready queue in the same step.
fn write_lease(conn: &Connection, key: i64, shard: u32, lease: &Lease) -> DbResult<()> {
    conn.prepare_cached(
        "INSERT INTO shard_leases (task_key, shard, owner, expires_at, attempts, dirty, claimed_at) \
         VALUES (:task_key, :shard, :owner, :expires_at, :attempts, :dirty, :claimed_at) \
         ON CONFLICT (task_key, shard) DO UPDATE SET owner = excluded.owner, \
         expires_at = excluded.expires_at, attempts = excluded.attempts, \
         dirty = excluded.dirty, claimed_at = excluded.claimed_at",
    )?
    .execute(named_params! {
        ":task_key": key,
        ":shard": shard,
        ":owner": lease.owner,
        ":expires_at": lease.expires_at,
        ":attempts": lease.attempts,
        ":dirty": lease.dirty,
        ":claimed_at": lease.claimed_at,
    })?;
    conn.prepare_cached("DELETE FROM ready_shards WHERE task_key = ?1 AND shard = ?2")?
        .execute(params![key, shard])?;
    Ok(())
}

/// Puts every shard of a plan just saved on the ready queue.
pub(super) fn enqueue_plan(conn: &Connection, key: i64, shards: u32) -> DbResult<()> {
    conn.prepare_cached(
        "WITH RECURSIVE s(shard) AS (SELECT 0 UNION ALL SELECT shard + 1 FROM s WHERE shard + 1 < ?2) \
         INSERT INTO ready_shards (task_key, shard) SELECT ?1, shard FROM s WHERE ?2 > 0",
    )?
    .execute(params![key, shards])?;
    Ok(())
}

/// Empties the ready queue of a task that ended: nothing of it is handed
/// out any more, and the rows would only take room.
pub(super) fn forget_ready(conn: &Connection, key: i64) -> DbResult<()> {
    conn.prepare_cached("DELETE FROM ready_shards WHERE task_key = ?1")?
        .execute([key])?;
    Ok(())
}

/// The task's shards held by a lease that has not expired at `now`.
fn held_at(conn: &Connection, key: i64, now: u64) -> DbResult<u32> {
    Ok(conn
        .prepare_cached(
            "SELECT COUNT(*) FROM shard_leases \
             WHERE task_key = ?1 AND owner IS NOT NULL AND expires_at > ?2",
        )?
        .query_row(params![key, now], |row| row.get(0))?)
}

pub(super) fn runnable_tasks(
    conn: &mut Connection,
    limit: usize,
    clock: &dyn Clock,
) -> DbResult<Vec<RunnableTask>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // One read transaction: the counts and the tasks are one snapshot.
    let tx = conn.transaction()?;
    let now = clock.now_millis();
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks \
         WHERE status = ?1 AND plan IS NOT NULL AND chunks_executed < chunks_to_execute \
         ORDER BY created_at, key LIMIT ?2"
    );
    let raw: Vec<RawTask> = tx
        .prepare_cached(&sql)?
        .query_map(
            params![TaskStatus::InProgress.as_str(), limit],
            task_from_row,
        )?
        .collect::<rusqlite::Result<_>>()?;
    let mut runnable = Vec::with_capacity(raw.len());
    for raw in raw {
        let (key, task) = raw.decode()?;
        let held = held_at(&tx, key, now)?;
        // A completed shard has no lease, so the rest of the open shards are ready.
        let ready = (task.chunks_to_execute - task.chunks_executed).saturating_sub(held);
        runnable.push(RunnableTask { task, ready, held });
    }
    tx.commit()?;
    Ok(runnable)
}

/// The key of task `id` if it is `INPROGRESS`, `None` if it is not (it
/// ended, or was never planned): what a claim checks before handing out
/// anything. [`StoreError::NoSuchTask`] for an unknown task.
fn in_progress_key(conn: &Connection, id: &str) -> DbResult<Option<i64>> {
    let (key, status): (i64, String) = conn
        .prepare_cached("SELECT key, status FROM tasks WHERE id = ?1")?
        .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?
        .ok_or_else(|| StoreError::NoSuchTask { id: id.to_string() })?;
    Ok((status == TaskStatus::InProgress.as_str()).then_some(key))
}

pub(super) fn claim_ready_shard(
    conn: &mut Connection,
    id: &str,
    worker: &str,
    lease: Duration,
    max_held: Option<u32>,
    clock: &dyn Clock,
) -> DbResult<ReadyClaim> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(key) = in_progress_key(&tx, id)? else {
        return Ok(ReadyClaim::TaskEnded);
    };
    let now = clock.now_millis();
    if let Some(max) = max_held {
        if held_at(&tx, key, now)? >= max {
            return Ok(ReadyClaim::AtCapacity);
        }
    }
    let queued: Option<u32> = tx
        .prepare_cached(
            "SELECT shard FROM ready_shards WHERE task_key = ?1 ORDER BY shard LIMIT 1",
        )?
        .query_row([key], |row| row.get(0))
        .optional()?;
    // Expired leases are few (their workers died), and live only in shard_leases.
    let expired: Option<u32> = tx
        .prepare_cached(
            "SELECT MIN(shard) FROM shard_leases \
             WHERE task_key = ?1 AND owner IS NOT NULL AND expires_at <= ?2",
        )?
        .query_row(params![key, now], |row| row.get(0))?;
    let Some(shard) = queued.into_iter().chain(expired).min() else {
        return Ok(ReadyClaim::NoneReady);
    };
    let before = read_lease(&tx, key, shard)?;
    let first = before.is_none();
    let attempt = match decide(before, worker, now, lease_millis(lease)) {
        (ShardClaim::Acquired { attempt }, Some(after)) => {
            write_lease(&tx, key, shard, &after)?;
            attempt
        }
        (other, _) => {
            return Err(StoreError::corrupt(
                format!("task {id} ready shard {shard}"),
                format!("the ready queue offered a shard that claims as {other:?}"),
            )
            .into());
        }
    };
    let range = plan_range(&tx, id, key, shard)?;
    tx.commit()?;
    Ok(ReadyClaim::Claimed {
        shard,
        range,
        attempt,
        first,
    })
}

/// Shard `shard` of the plan of the task stored under `key` (`id`).
fn plan_range(conn: &Connection, id: &str, key: i64, shard: u32) -> DbResult<ShardRange> {
    let range: Option<String> = conn
        .prepare_cached("SELECT json_extract(plan, '$[' || ?2 || ']') FROM tasks WHERE key = ?1")?
        .query_row(params![key, shard], |row| row.get(0))?;
    let what = || format!("task {id} plan shard {shard}");
    let range = range.ok_or_else(|| StoreError::corrupt(what(), "missing from the plan"))?;
    Ok(serde_json::from_str(&range).map_err(|e| StoreError::corrupt(what(), e))?)
}

/// A held shard [`claim_copy`] may copy.
struct Straggler {
    shard: u32,
    range: ShardRange,
    attempt: u32,
    /// Held by the worker asking: a copy elsewhere is preferred.
    own: bool,
    claimed_at: u64,
}

pub(super) fn claim_copy(
    conn: &mut Connection,
    id: &str,
    worker: &str,
    per_item: Duration,
    min: Duration,
    clock: &dyn Clock,
) -> DbResult<CopyClaim> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(key) = in_progress_key(&tx, id)? else {
        return Ok(CopyClaim::TaskEnded);
    };
    let now = clock.now_millis();
    // Shards still to hand out come first: a copy is only for a task whose
    // every open shard runs.
    let ready = tx
        .prepare_cached(
            "SELECT 1 FROM ready_shards WHERE task_key = ?1 UNION ALL \
             SELECT 1 FROM shard_leases WHERE task_key = ?1 AND owner IS NOT NULL AND expires_at <= ?2",
        )?
        .exists(params![key, now])?;
    if ready {
        return Ok(CopyClaim::NoStraggler);
    }
    let held: Vec<(u32, String, u64, u32)> = tx
        .prepare_cached(
            "SELECT shard, owner, claimed_at, attempts FROM shard_leases \
             WHERE task_key = ?1 AND owner IS NOT NULL AND expires_at > ?2 AND copied = 0 \
             AND attempts <= 1",
        )?
        .query_map(params![key, now], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let (per_item, min) = (lease_millis(per_item), lease_millis(min));
    let mut best: Option<Straggler> = None;
    for (shard, owner, claimed_at, attempt) in held {
        let range = plan_range(&tx, id, key, shard)?;
        let expected = per_item.saturating_mul(range.len).max(min);
        if now.saturating_sub(claimed_at) <= expected {
            continue;
        }
        let candidate = Straggler {
            shard,
            range,
            attempt,
            own: owner == worker,
            claimed_at,
        };
        if best
            .as_ref()
            .is_none_or(|b| (candidate.own, candidate.claimed_at) < (b.own, b.claimed_at))
        {
            best = Some(candidate);
        }
    }
    let Some(copy) = best else {
        return Ok(CopyClaim::NoStraggler);
    };
    let token = dts_model::new_copy_token();
    tx.prepare_cached("UPDATE shard_leases SET copied = ?3 WHERE task_key = ?1 AND shard = ?2")?
        .execute(params![key, copy.shard, token])?;
    tx.commit()?;
    Ok(CopyClaim::Copied {
        shard: copy.shard,
        range: copy.range,
        attempt: copy.attempt,
        token,
    })
}

/// Whether the copy of shard `shard` handed out with `token` is still the
/// shard's: a retry that reopens the shard resets its lease row, copy mark
/// included.
pub(super) fn is_current_copy(
    conn: &Connection,
    key: i64,
    shard: u32,
    token: u64,
) -> DbResult<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM shard_leases WHERE task_key = ?1 AND shard = ?2 AND copied = ?3",
        )?
        .exists(params![key, shard, token])?)
}

/// Whether shard `shard` of the task stored under `key` is completed.
pub(super) fn is_completed(conn: &Connection, key: i64, shard: u32) -> DbResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM completed_shards WHERE task_key = ?1 AND shard = ?2")?
        .exists(params![key, shard])?)
}

pub(super) fn copy_state(
    conn: &mut Connection,
    id: &str,
    shard: u32,
    token: u64,
) -> DbResult<CopyState> {
    let tx = conn.transaction()?;
    let Some((key, task)) = find_task(&tx, id)? else {
        return Ok(CopyState::TaskNotRunning(None));
    };
    Ok(if is_completed(&tx, key, shard)? {
        CopyState::ShardCompleted
    } else if task.status != TaskStatus::InProgress {
        CopyState::TaskNotRunning(Some(task.status))
    } else if is_current_copy(&tx, key, shard, token)? {
        CopyState::Runs
    } else {
        CopyState::Replaced
    })
}

pub(super) fn renew_leases(
    conn: &mut Connection,
    worker: &str,
    shards: &[(String, u32)],
    lease: Duration,
    clock: &dyn Clock,
) -> DbResult<Vec<(String, u32)>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let expires_at = clock.now_millis().saturating_add(lease_millis(lease));
    let mut lost = Vec::new();
    {
        // Owned is all it takes: an expired lease nobody took over is still
        // the worker's. Released, completed (row gone) or unknown: no match.
        let mut renew = tx.prepare_cached(
            "UPDATE shard_leases SET expires_at = ?1 \
             WHERE task_key = (SELECT key FROM tasks WHERE id = ?2) AND shard = ?3 AND owner = ?4",
        )?;
        for (id, shard) in shards {
            if renew.execute(params![expires_at, id, shard, worker])? == 0 {
                lost.push((id.clone(), *shard));
            }
        }
    }
    tx.commit()?;
    Ok(lost)
}

pub(super) fn live_leases(conn: &mut Connection, id: &str, clock: &dyn Clock) -> DbResult<u32> {
    let live: u32 = conn.query_row(
        "SELECT COUNT(*) FROM shard_leases \
         WHERE task_key = (SELECT key FROM tasks WHERE id = ?1) \
         AND owner IS NOT NULL AND expires_at > ?2",
        params![id, clock.now_millis()],
        |row| row.get(0),
    )?;
    Ok(live)
}

pub(super) fn release_shard(
    conn: &mut Connection,
    id: &str,
    shard: u32,
    worker: &str,
    clean: bool,
) -> DbResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // An owned lease is never dirty (claiming clears it), so `dirty` is
    // simply whether this release was.
    let released = tx
        .prepare_cached(
            "UPDATE shard_leases SET owner = NULL, dirty = ?4 \
             WHERE task_key = (SELECT key FROM tasks WHERE id = ?1) AND shard = ?2 AND owner = ?3",
        )?
        .execute(params![id, shard, worker, !clean])?;
    if released > 0 {
        // Back on the queue, unless the task ended (its queue is gone for good).
        tx.prepare_cached(
            "INSERT INTO ready_shards (task_key, shard) \
             SELECT key, ?2 FROM tasks WHERE id = ?1 AND status = ?3 \
             ON CONFLICT (task_key, shard) DO NOTHING",
        )?
        .execute(params![id, shard, TaskStatus::InProgress.as_str()])?;
    }
    tx.commit()?;
    Ok(())
}

/// Lets every held lease lapse now (see `SqliteStore::expire_all_leases`).
pub(super) fn expire_all(conn: &mut Connection) -> DbResult<u64> {
    let changed = conn
        .prepare_cached("UPDATE shard_leases SET expires_at = 0 WHERE owner IS NOT NULL")?
        .execute([])?;
    Ok(changed as u64)
}

/// Drops the lease on a shard, whoever holds it, and takes the shard off
/// the ready queue (the shard completed).
pub(super) fn drop_lease(conn: &Connection, key: i64, shard: u32) -> DbResult<()> {
    conn.prepare_cached("DELETE FROM shard_leases WHERE task_key = ?1 AND shard = ?2")?
        .execute(params![key, shard])?;
    conn.prepare_cached("DELETE FROM ready_shards WHERE task_key = ?1 AND shard = ?2")?
        .execute(params![key, shard])?;
    Ok(())
}

pub(super) fn mark_item_started(conn: &mut Connection, id: &str, index: u64) -> DbResult<u32> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let key = task_key(&tx, id)?;
    let starts: u32 = tx
        .prepare_cached(
            "INSERT INTO item_starts (task_key, idx, starts) VALUES (?1, ?2, 1) \
             ON CONFLICT (task_key, idx) DO UPDATE SET starts = starts + 1 RETURNING starts",
        )?
        .query_row(params![key, index], |row| row.get(0))?;
    tx.commit()?;
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn lease(owner: Option<&str>, expires_at: u64, attempts: u32, dirty: bool) -> Option<Lease> {
        Some(Lease {
            owner: owner.map(str::to_string),
            expires_at,
            attempts,
            dirty,
            claimed_at: 0,
        })
    }

    fn attempt_after(before: Option<Lease>) -> u32 {
        match decide(before, "w-b", NOW, 1_000) {
            (ShardClaim::Acquired { attempt }, Some(after)) => {
                assert_eq!(after.owner.as_deref(), Some("w-b"));
                assert_eq!(after.expires_at, NOW + 1_000);
                assert_eq!(after.attempts, attempt);
                assert!(!after.dirty);
                assert_eq!(after.claimed_at, NOW);
                attempt
            }
            other => panic!("expected acquired, got {other:?}"),
        }
    }

    #[test]
    fn a_live_lease_is_held_with_the_time_it_has_left() {
        for owner in ["w-a", "w-b"] {
            assert_eq!(
                decide(lease(Some(owner), NOW + 250, 3, false), "w-b", NOW, 1_000),
                (
                    ShardClaim::Held {
                        owner: owner.to_string(),
                        expires_in: Duration::from_millis(250),
                    },
                    None
                )
            );
        }
    }

    #[test]
    fn attempts_grow_only_when_a_worker_lost_the_shard() {
        assert_eq!(attempt_after(None), 1, "first claim");
        assert_eq!(
            attempt_after(lease(Some("w-a"), NOW, 1, false)),
            2,
            "expired just now"
        );
        assert_eq!(
            attempt_after(lease(Some("w-a"), NOW - 5, 2, false)),
            3,
            "expired"
        );
        assert_eq!(
            attempt_after(lease(None, NOW + 500, 2, false)),
            2,
            "clean release"
        );
        assert_eq!(
            attempt_after(lease(None, NOW + 500, 2, true)),
            3,
            "dirty release"
        );
    }
}
