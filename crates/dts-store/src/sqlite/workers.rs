//! Worker heartbeats: who is live, and with how many cores.
//!
//! A row lives until its `expires_at`; expired rows are skipped by every read
//! and deleted by the next [`live_workers`] call.

use super::rows::{DbResult, WORKER_COLUMNS, worker_from_row};
use dts_model::{WorkerInfo, now_millis};
use rusqlite::{Connection, named_params};
use std::time::Duration;

pub(super) fn heartbeat(conn: &Connection, worker: &WorkerInfo, ttl: Duration) -> DbResult<()> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let expires_at = i64::try_from(now_millis().saturating_add(ttl_ms)).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "INSERT INTO workers (id, hostname, cores, running_items, last_heartbeat, expires_at) \
         VALUES (:id, :hostname, :cores, :running_items, :last_heartbeat, :expires_at) \
         ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, cores = excluded.cores, \
         running_items = excluded.running_items, last_heartbeat = excluded.last_heartbeat, \
         expires_at = excluded.expires_at",
    )?
    .execute(named_params! {
        ":id": worker.id,
        ":hostname": worker.hostname,
        ":cores": worker.cores,
        ":running_items": worker.running_items,
        ":last_heartbeat": worker.last_heartbeat,
        ":expires_at": expires_at,
    })?;
    Ok(())
}

pub(super) fn remove_worker(conn: &Connection, id: &str) -> DbResult<()> {
    conn.prepare_cached("DELETE FROM workers WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

pub(super) fn live_workers(conn: &Connection) -> DbResult<Vec<WorkerInfo>> {
    let now = i64::try_from(now_millis()).unwrap_or(i64::MAX);
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
