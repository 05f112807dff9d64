//! Schedules: one row each, the schedule as JSON beside the version its
//! compare-and-set compares (schema version 16).

use super::rows::DbResult;
use crate::StoreError;
use dts_model::schedule::Schedule;
use rusqlite::{Connection, OptionalExtension};

pub(super) fn insert(conn: &Connection, schedule: &Schedule, body: &str) -> DbResult<()> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO schedules (name, body, version) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO NOTHING",
        )?
        .execute(rusqlite::params![schedule.name, body, schedule.version])?;
    if inserted == 0 {
        return Err(StoreError::ScheduleExists {
            name: schedule.name.clone(),
        }
        .into());
    }
    Ok(())
}

pub(super) fn one(conn: &Connection, name: &str) -> DbResult<Option<Schedule>> {
    let row: Option<(String, u64)> = conn
        .prepare_cached("SELECT body, version FROM schedules WHERE name = ?1")?
        .query_row([name], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    row.map(|(body, version)| decode(name, &body, version))
        .transpose()
}

pub(super) fn all(conn: &Connection) -> DbResult<Vec<Schedule>> {
    let mut statement =
        conn.prepare_cached("SELECT name, body, version FROM schedules ORDER BY name")?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(name, body, version)| decode(&name, &body, version))
        .collect()
}

/// Stores `body` at `version + 1` if the row is still at `version`.
pub(super) fn update(conn: &Connection, name: &str, version: u64, body: &str) -> DbResult<bool> {
    let updated = conn
        .prepare_cached(
            "UPDATE schedules SET body = ?3, version = version + 1
             WHERE name = ?1 AND version = ?2",
        )?
        .execute(rusqlite::params![name, version, body])?;
    Ok(updated == 1)
}

pub(super) fn delete(conn: &Connection, name: &str) -> DbResult<bool> {
    let deleted = conn
        .prepare_cached("DELETE FROM schedules WHERE name = ?1")?
        .execute([name])?;
    Ok(deleted == 1)
}

/// The schedule in `body`, at the row's `version` (the column is the one
/// the compare-and-set keeps).
fn decode(name: &str, body: &str, version: u64) -> DbResult<Schedule> {
    let mut schedule: Schedule = serde_json::from_str(body)
        .map_err(|e| StoreError::corrupt(format!("schedule {name}"), e))?;
    schedule.version = version;
    Ok(schedule)
}
