//! Schedules: a hash of name -> schedule JSON and a hash of name ->
//! version, changed together by scripts so the compare-and-set of
//! `lua/update_schedule.lua` compares the version the JSON was read at.

use super::RedisStore;
use super::scripts::SCRIPTS;
use crate::{StoreError, StoreResult, encode};
use dts_model::schedule::Schedule;
use std::collections::HashMap;

pub(super) async fn insert(store: &RedisStore, schedule: &Schedule) -> StoreResult<()> {
    let body = encode("schedule", schedule)?;
    let mut call = SCRIPTS.insert_schedule.prepare_invoke();
    call.key(store.keys.schedules())
        .key(store.keys.schedule_versions())
        .arg(&schedule.name)
        .arg(body)
        .arg(schedule.version);
    let mut conn = store.conn.clone();
    let stored: i64 = store
        .run(
            &format!("insert schedule {}", schedule.name),
            call.invoke_async(&mut conn),
        )
        .await?;
    if stored == 0 {
        return Err(StoreError::ScheduleExists {
            name: schedule.name.clone(),
        });
    }
    Ok(())
}

pub(super) async fn one(store: &RedisStore, name: &str) -> StoreResult<Option<Schedule>> {
    let mut pipe = ::redis::pipe();
    pipe.cmd("HGET")
        .arg(store.keys.schedules())
        .arg(name)
        .cmd("HGET")
        .arg(store.keys.schedule_versions())
        .arg(name);
    let mut conn = store.conn.clone();
    let (body, version): (Option<String>, Option<String>) = store
        .run(
            &format!("read schedule {name}"),
            pipe.query_async(&mut conn),
        )
        .await?;
    match (body, version) {
        (Some(body), Some(version)) => decode(name, &body, &version).map(Some),
        _ => Ok(None),
    }
}

pub(super) async fn all(store: &RedisStore) -> StoreResult<Vec<Schedule>> {
    let mut pipe = ::redis::pipe();
    pipe.cmd("HGETALL")
        .arg(store.keys.schedules())
        .cmd("HGETALL")
        .arg(store.keys.schedule_versions());
    let mut conn = store.conn.clone();
    let (bodies, versions): (HashMap<String, String>, HashMap<String, String>) = store
        .run("list schedules", pipe.query_async(&mut conn))
        .await?;
    let mut schedules = bodies
        .iter()
        .filter_map(|(name, body)| {
            versions
                .get(name)
                .map(|version| decode(name, body, version))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    schedules.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(schedules)
}

pub(super) async fn update(store: &RedisStore, schedule: &Schedule) -> StoreResult<bool> {
    let body = encode("schedule", schedule)?;
    let mut call = SCRIPTS.update_schedule.prepare_invoke();
    call.key(store.keys.schedules())
        .key(store.keys.schedule_versions())
        .arg(&schedule.name)
        .arg(schedule.version)
        .arg(body);
    let mut conn = store.conn.clone();
    let stored: i64 = store
        .run(
            &format!("update schedule {}", schedule.name),
            call.invoke_async(&mut conn),
        )
        .await?;
    Ok(stored == 1)
}

pub(super) async fn delete(store: &RedisStore, name: &str) -> StoreResult<bool> {
    let mut call = SCRIPTS.delete_schedule.prepare_invoke();
    call.key(store.keys.schedules())
        .key(store.keys.schedule_versions())
        .arg(name);
    let mut conn = store.conn.clone();
    let deleted: i64 = store
        .run(
            &format!("delete schedule {name}"),
            call.invoke_async(&mut conn),
        )
        .await?;
    Ok(deleted == 1)
}

/// The schedule in `body` at `version` (the versions hash is the one the
/// compare-and-set keeps).
fn decode(name: &str, body: &str, version: &str) -> StoreResult<Schedule> {
    let mut schedule: Schedule = serde_json::from_str(body)
        .map_err(|e| StoreError::corrupt(format!("schedule {name}"), e))?;
    schedule.version = version
        .parse()
        .map_err(|e| StoreError::corrupt(format!("schedule {name} version {version:?}"), e))?;
    Ok(schedule)
}
