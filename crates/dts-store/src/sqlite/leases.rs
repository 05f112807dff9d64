//! Shard leases and item start counts: which worker runs a shard now, how
//! many attempts the shard has had, and how often each item was started.
//!
//! Blocking functions over one connection, called by [`super::SqliteStore`]
//! from `spawn_blocking`. A claim reads the lease row, decides ([`decide`],
//! pure) and writes it back in one `BEGIN IMMEDIATE` transaction, so two
//! claimants (threads or processes) never both acquire. Times are the
//! store's [`Clock`] (the wall clock of this machine, unless a test injects
//! another): every process sharing the file shares it.

use super::rows::{DbResult, no_shard, task_key};
use crate::{ShardClaim, StoreError, lease_millis};
use dts_model::Clock;
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
    let before = tx
        .prepare_cached(
            "SELECT owner, expires_at, attempts, dirty FROM shard_leases \
             WHERE task_key = ?1 AND shard = ?2",
        )?
        .query_row(params![key, shard], |row| {
            Ok(Lease {
                owner: row.get(0)?,
                expires_at: row.get(1)?,
                attempts: row.get(2)?,
                dirty: row.get(3)?,
            })
        })
        .optional()?;
    let (claim, after) = decide(before, worker, clock.now_millis(), lease_millis(lease));
    if let Some(after) = after {
        tx.prepare_cached(
            "INSERT INTO shard_leases (task_key, shard, owner, expires_at, attempts, dirty) \
             VALUES (:task_key, :shard, :owner, :expires_at, :attempts, :dirty) \
             ON CONFLICT (task_key, shard) DO UPDATE SET owner = excluded.owner, \
             expires_at = excluded.expires_at, attempts = excluded.attempts, \
             dirty = excluded.dirty",
        )?
        .execute(named_params! {
            ":task_key": key,
            ":shard": shard,
            ":owner": after.owner,
            ":expires_at": after.expires_at,
            ":attempts": after.attempts,
            ":dirty": after.dirty,
        })?;
    }
    tx.commit()?;
    Ok(claim)
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

pub(super) fn release_shard(
    conn: &Connection,
    id: &str,
    shard: u32,
    worker: &str,
    clean: bool,
) -> DbResult<()> {
    // One statement, so atomic by itself. An owned lease is never dirty
    // (claiming clears it), so `dirty` is simply whether this release was.
    conn.prepare_cached(
        "UPDATE shard_leases SET owner = NULL, dirty = ?4 \
         WHERE task_key = (SELECT key FROM tasks WHERE id = ?1) AND shard = ?2 AND owner = ?3",
    )?
    .execute(params![id, shard, worker, !clean])?;
    Ok(())
}

/// Lets every held lease lapse now (see `SqliteStore::expire_all_leases`).
pub(super) fn expire_all(conn: &mut Connection) -> DbResult<u64> {
    let changed = conn
        .prepare_cached("UPDATE shard_leases SET expires_at = 0 WHERE owner IS NOT NULL")?
        .execute([])?;
    Ok(changed as u64)
}

/// Drops the lease on a shard, whoever holds it (the shard completed).
pub(super) fn drop_lease(conn: &Connection, key: i64, shard: u32) -> DbResult<()> {
    conn.prepare_cached("DELETE FROM shard_leases WHERE task_key = ?1 AND shard = ?2")?
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
        })
    }

    fn attempt_after(before: Option<Lease>) -> u32 {
        match decide(before, "w-b", NOW, 1_000) {
            (ShardClaim::Acquired { attempt }, Some(after)) => {
                assert_eq!(after.owner.as_deref(), Some("w-b"));
                assert_eq!(after.expires_at, NOW + 1_000);
                assert_eq!(after.attempts, attempt);
                assert!(!after.dirty);
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
