//! Retrying a task (see [`crate::Store::retry_task`]) and reading the
//! attempt history it keeps.
//!
//! The failed results are decoded in Rust (two layouts, see
//! `lua/results_prelude.lua`), so the retry reads first and writes in one
//! script that applies only if the task's `version` is still the one read
//! (`lua/retry_task.lua`): optimistic, and as atomic as one script.

use super::RedisStore;
use super::codec::{self, TaskHash};
use super::errors::unexpected;
use super::scripts::SCRIPTS;
use crate::{
    ResultFilter, RetryOutcome, Store, StoreError, StoreResult, check_retry, shards_to_reopen,
    status_after_retry,
};
use dts_model::{ItemResult, PastAttempt, ShardRange, now_millis};
use std::collections::BTreeMap;

/// Reads of a changing task before the retry gives up: a task that ended
/// changes only when late results arrive, so two rounds almost always do.
const ROUNDS: usize = 16;

/// Failed results read per page.
const PAGE: u64 = 1000;

pub(super) async fn retry_task(store: &RedisStore, id: &str) -> StoreResult<RetryOutcome> {
    let op = format!("retry task {id}");
    for _ in 0..ROUNDS {
        let task = store
            .task(id)
            .await?
            .ok_or_else(|| StoreError::NoSuchTask { id: id.to_string() })?;
        check_retry(&task, now_millis())?;
        let failed = failed_results(store, id).await?;
        let indices: Vec<u64> = failed.iter().map(|result| result.index).collect();
        let mut history = attempt_history(store, id, &indices).await?;
        let plan = plan(store, id).await?;
        let completed = store.completed_shards(id).await?;
        let shards = shards_to_reopen(&plan, &completed, &indices);
        let mut args = vec![
            task.version.to_string(),
            now_millis().to_string(),
            status_after_retry(&task, shards.len()).as_str().to_string(),
            failed.len().to_string(),
        ];
        for result in &failed {
            let past = PastAttempt::push(history.remove(&result.index).unwrap_or_default(), result);
            args.push(result.index.to_string());
            args.push(codec::encode("attempt history", &past)?);
        }
        args.extend(shards.iter().map(u32::to_string));
        let reply = store
            .task_script(&SCRIPTS.retry_task, &op, id, args)
            .await?;
        match reply.first().map(String::as_str) {
            Some("ok") => {
                let not_run = task
                    .items_total
                    .saturating_sub(task.items_succeeded)
                    .saturating_sub(task.items_failed);
                return Ok(RetryOutcome {
                    task: TaskHash::from_pairs(id, &reply[1..]).decode()?,
                    failed: failed.len() as u64,
                    not_run,
                    shards: u32::try_from(shards.len()).unwrap_or(u32::MAX),
                });
            }
            // Read again: the task moved on (another retry, a late result).
            Some("changed") => continue,
            Some("notfound") => return Err(StoreError::NoSuchTask { id: id.to_string() }),
            _ => return Err(unexpected(&op, &reply)),
        }
    }
    Err(StoreError::Backend {
        op,
        source: format!("the task changed during each of {ROUNDS} attempts to retry it").into(),
    })
}

/// Every failed result of the task, by index.
async fn failed_results(store: &RedisStore, id: &str) -> StoreResult<Vec<ItemResult>> {
    let mut failed = Vec::new();
    // ends: each round reads a page further, until the total or an empty page.
    loop {
        let (total, page) = store
            .results(id, ResultFilter::Failed, failed.len() as u64, PAGE)
            .await?;
        let empty = page.is_empty();
        failed.extend(page);
        if empty || failed.len() as u64 >= total {
            return Ok(failed);
        }
    }
}

/// The task's plan (empty before it is planned).
async fn plan(store: &RedisStore, id: &str) -> StoreResult<Vec<ShardRange>> {
    let op = format!("read plan of task {id}");
    let mut conn = store.conn.clone();
    let json: Option<String> = store
        .run(
            &op,
            ::redis::cmd("HGET")
                .arg(store.keys.task(id))
                .arg("plan")
                .query_async(&mut conn),
        )
        .await?;
    match json {
        Some(json) => codec::decode(format!("task {id} plan"), &json),
        None => Ok(Vec::new()),
    }
}

pub(super) async fn attempt_history(
    store: &RedisStore,
    id: &str,
    indices: &[u64],
) -> StoreResult<BTreeMap<u64, Vec<PastAttempt>>> {
    let mut history = BTreeMap::new();
    if indices.is_empty() {
        return Ok(history);
    }
    let op = format!("read attempt history of task {id}");
    let mut conn = store.conn.clone();
    let values: Vec<Option<String>> = store
        .run(
            &op,
            ::redis::cmd("HMGET")
                .arg(store.keys.history(id))
                .arg(indices)
                .query_async(&mut conn),
        )
        .await?;
    for (&index, json) in indices.iter().zip(values) {
        if let Some(json) = json {
            history.insert(
                index,
                codec::decode(format!("task {id} item {index} attempt history"), &json)?,
            );
        }
    }
    Ok(history)
}
