//! Worker heartbeats: who is live, and with how many cores.
//!
//! A heartbeat is a key that Redis itself expires after the heartbeat's TTL,
//! so every server sees the same live workers and a dead worker drops out
//! even if no dts process notices. The `workers` index (ids scored by expiry
//! on Redis's clock) lists them without scanning the keyspace.

use super::RedisStore;
use super::codec;
use super::scripts::SCRIPTS;
use crate::{HeartbeatOutcome, StoreResult};
use dts_model::{WorkerInfo, WorkerKind};
use std::time::Duration;

pub(super) async fn heartbeat(
    store: &RedisStore,
    worker: &WorkerInfo,
    ttl: Duration,
) -> StoreResult<HeartbeatOutcome> {
    // PX takes a positive whole number of milliseconds.
    let ttl_ms = crate::lease_millis(ttl);
    let mut call = SCRIPTS.heartbeat.prepare_invoke();
    call.key(store.keys.worker(&worker.id))
        .key(store.keys.workers())
        .arg(codec::worker_json(worker)?)
        .arg(ttl_ms)
        .arg(&worker.id)
        .arg(match worker.kind {
            WorkerKind::Dts => "dts",
            WorkerKind::NodeBeat => "node-beat",
        });
    let mut conn = store.conn.clone();
    let recorded: i64 = store
        .run(
            &format!("record heartbeat of worker {}", worker.id),
            call.invoke_async(&mut conn),
        )
        .await?;
    Ok(if recorded == 1 {
        HeartbeatOutcome::Recorded
    } else {
        HeartbeatOutcome::Refused
    })
}

pub(super) async fn remove_worker(store: &RedisStore, id: &str) -> StoreResult<()> {
    let mut conn = store.conn.clone();
    store
        .run(
            &format!("remove worker {id}"),
            ::redis::pipe()
                .atomic()
                .del(store.keys.worker(id))
                .ignore()
                .zrem(store.keys.workers(), id)
                .ignore()
                .query_async::<()>(&mut conn),
        )
        .await
}

pub(super) async fn live_workers(store: &RedisStore) -> StoreResult<Vec<WorkerInfo>> {
    let op = "list live workers";
    let mut conn = store.conn.clone();
    let mut call = SCRIPTS.live_workers.prepare_invoke();
    call.key(store.keys.workers());
    let ids: Vec<String> = store.run(op, call.invoke_async(&mut conn)).await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = ids.iter().map(|id| store.keys.worker(id)).collect();
    let beats: Vec<Option<String>> = store
        .run(op, ::redis::cmd("MGET").arg(&keys).query_async(&mut conn))
        .await?;
    // A key can expire between the two calls: it is simply not live.
    let mut workers = ids
        .iter()
        .zip(beats)
        .filter_map(|(id, json)| json.map(|json| (id, json)))
        .map(|(id, json)| codec::decode(format!("worker {id}"), &json))
        .collect::<StoreResult<Vec<WorkerInfo>>>()?;
    workers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(workers)
}
