//! Worker heartbeats: who is live, and with how many cores.
//!
//! A row lives until its `expires_at`; expired rows are skipped by every read
//! and deleted by the next [`live_workers`] call.

use super::rows::{DbResult, WORKER_COLUMNS, kind_text, worker_from_row};
use crate::{HeartbeatOutcome, encode};
use dts_model::{Clock, WorkerInfo};
use rusqlite::{Connection, named_params};
use std::time::Duration;

/// Upserts the heartbeat in one statement. The rule of
/// [`crate::Store::heartbeat`] (the same as `lua/heartbeat.lua`): a node-beat
/// never replaces the entry of a live dts worker; the upsert's `WHERE` makes
/// the check and the write one atomic step.
pub(super) fn heartbeat(
    conn: &Connection,
    worker: &WorkerInfo,
    ttl: Duration,
    clock: &dyn Clock,
) -> DbResult<HeartbeatOutcome> {
    let now = clock.now_millis();
    let expires_at =
        i64::try_from(now.saturating_add(crate::lease_millis(ttl))).unwrap_or(i64::MAX);
    let isolation = worker
        .isolation
        .as_ref()
        .map(|isolation| encode("worker isolation", isolation))
        .transpose()?;
    // No labels is stored as NULL, like the rows of a dts from before them.
    let labels = (!worker.labels.is_empty())
        .then(|| encode("worker labels", &worker.labels))
        .transpose()?;
    let running_by_task = (!worker.running_by_task.is_empty())
        .then(|| encode("worker running_by_task", &worker.running_by_task))
        .transpose()?;
    let written = conn
        .prepare_cached(
            "INSERT INTO workers (id, hostname, cores, running_items, last_heartbeat, expires_at, \
             kind, isolation, labels, shards_held, running_by_task) \
             VALUES (:id, :hostname, :cores, :running_items, :last_heartbeat, :expires_at, \
             :kind, :isolation, :labels, :shards_held, :running_by_task) \
             ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, cores = excluded.cores, \
             running_items = excluded.running_items, last_heartbeat = excluded.last_heartbeat, \
             expires_at = excluded.expires_at, kind = excluded.kind, \
             isolation = excluded.isolation, labels = excluded.labels, \
             shards_held = excluded.shards_held, running_by_task = excluded.running_by_task \
             WHERE NOT (excluded.kind = 'node-beat' AND workers.kind = 'dts' \
             AND workers.expires_at > :now)",
        )?
        .execute(named_params! {
            ":id": worker.id,
            ":hostname": worker.hostname,
            ":cores": worker.cores,
            ":running_items": worker.running_items,
            ":last_heartbeat": worker.last_heartbeat,
            ":expires_at": expires_at,
            ":kind": kind_text(worker.kind),
            ":isolation": isolation,
            ":labels": labels,
            ":shards_held": worker.shards_held,
            ":running_by_task": running_by_task,
            ":now": i64::try_from(now).unwrap_or(i64::MAX),
        })?;
    Ok(if written == 1 {
        HeartbeatOutcome::Recorded
    } else {
        HeartbeatOutcome::Refused
    })
}

pub(super) fn remove_worker(conn: &Connection, id: &str) -> DbResult<()> {
    conn.prepare_cached("DELETE FROM workers WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

pub(super) fn live_workers(conn: &Connection, clock: &dyn Clock) -> DbResult<Vec<WorkerInfo>> {
    let now = i64::try_from(clock.now_millis()).unwrap_or(i64::MAX);
    // Housekeeping only: if another connection holds the write lock, the
    // expired rows are still skipped below and go next time.
    if let Err(e) = conn
        .prepare_cached("DELETE FROM workers WHERE expires_at <= ?1")
        .and_then(|mut stmt| stmt.execute([now]))
    {
        tracing::debug!(error = %e, "could not delete expired worker heartbeats");
    }
    let sql = format!("SELECT {WORKER_COLUMNS} FROM workers WHERE expires_at > ?1 ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let workers = stmt
        .query_map([now], worker_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(workers)
}
