//! The summaries of [`crate::activity`], read from the keys the task
//! scripts keep (`count_activity` in `lua/task_prelude.lua`).

use super::RedisStore;
use crate::activity::{self, StoreStats, TaskActivity, WorkerCounts};
use crate::{StoreError, StoreResult};
use dts_model::TaskStatus;
use std::collections::BTreeMap;

/// The store-wide keys `stats` reads besides the status indexes.
type StatsReply = (Option<u64>, BTreeMap<u64, u64>, (u64, u64));

pub(super) async fn stats(store: &RedisStore) -> StoreResult<StoreStats> {
    let mut conn = store.conn.clone();
    let mut counts = ::redis::pipe();
    for status in TaskStatus::ALL {
        counts.zcard(store.keys.tasks_in(status));
    }
    let counts: Vec<u64> = store
        .run("count tasks by status", counts.query_async(&mut conn))
        .await?;
    if counts.len() != TaskStatus::ALL.len() {
        return Err(StoreError::corrupt(
            "the task counts by status",
            format!(
                "{} replies for {} statuses",
                counts.len(),
                TaskStatus::ALL.len()
            ),
        ));
    }
    let (finished, buckets, time): StatsReply = store
        .run(
            "read the store's result counts",
            ::redis::pipe()
                .get(store.keys.items_finished())
                .hgetall(store.keys.store_throughput())
                .cmd("TIME")
                .query_async(&mut conn),
        )
        .await?;
    // Redis's clock, as the scripts that fill the buckets read it.
    let now = time.0 * 1000 + time.1 / 1000;
    let (from, to) = activity::last_minute(now);
    let shards_waiting = super::leases::runnable_tasks(store, u32::MAX as usize)
        .await?
        .iter()
        .map(|task| u64::from(task.ready))
        .sum();
    Ok(StoreStats {
        tasks_by_status: TaskStatus::ALL.into_iter().zip(counts).collect(),
        shards_waiting,
        items_finished: finished.unwrap_or(0),
        items_last_minute: buckets.range(from..to).map(|(_, items)| items).sum(),
    })
}

pub(super) async fn task_activity(
    store: &RedisStore,
    id: &str,
) -> StoreResult<Option<TaskActivity>> {
    let mut conn = store.conn.clone();
    let (exists, by_worker, buckets): (bool, BTreeMap<String, u64>, BTreeMap<u64, u64>) = store
        .run(
            &format!("read the activity of task {id}"),
            ::redis::pipe()
                .exists(store.keys.task(id))
                .hgetall(store.keys.results_by_worker(id))
                .hgetall(store.keys.task_throughput(id))
                .query_async(&mut conn),
        )
        .await?;
    if !exists {
        return Ok(None);
    }
    let mut per_worker: BTreeMap<String, WorkerCounts> = BTreeMap::new();
    for (field, count) in by_worker {
        let (outcome, worker) = field.split_once(':').ok_or_else(|| {
            StoreError::corrupt(
                format!("task {id} results by worker"),
                format!("field {field:?}"),
            )
        })?;
        let counts = per_worker.entry(worker.to_string()).or_default();
        match outcome {
            "ok" => counts.succeeded = count,
            "failed" => counts.failed = count,
            other => {
                return Err(StoreError::corrupt(
                    format!("task {id} results by worker"),
                    format!("outcome {other:?}"),
                ));
            }
        }
    }
    Ok(Some(TaskActivity {
        per_worker,
        throughput: activity::last_buckets(buckets.into_iter().collect()),
    }))
}
