//! The completion outbox: entries `lua/task_prelude.lua`'s `enter` adds when
//! a task ends, claimed and acknowledged by the drainers
//! ([`crate::Store::claim_completions`]).

use super::RedisStore;
use super::errors::unexpected;
use super::scripts::SCRIPTS;
use super::tasks;
use crate::{StoreError, StoreResult};
use dts_model::Task;
use std::time::Duration;

pub(super) async fn claim_completions(
    store: &RedisStore,
    limit: usize,
    settle: Duration,
    lease: Duration,
) -> StoreResult<Vec<Task>> {
    let settle_ms = u64::try_from(settle.as_millis()).unwrap_or(u64::MAX);
    let mut call = SCRIPTS.claim_completions.prepare_invoke();
    call.key(store.keys.completions())
        .key(store.keys.completion_ends())
        .arg(limit)
        .arg(settle_ms.min(1 << 50))
        .arg(crate::lease_millis(lease));
    let mut conn = store.conn.clone();
    let op = "claim completion events";
    let reply: Vec<String> = store
        .run(op, call.invoke_async::<Vec<String>>(&mut conn))
        .await?;
    if reply.len() % 2 != 0 {
        return Err(unexpected(op, &reply));
    }
    let mut claimed = Vec::with_capacity(reply.len() / 2);
    for pair in reply.chunks_exact(2) {
        let (id, end) = (&pair[0], &pair[1]);
        match tasks::task(store, id).await? {
            Some(task) if task.status.is_terminal() => claimed.push(task),
            // Expired or deleted: nothing left to announce. Retried and
            // running again: its next end adds the entry again. Removed
            // only if no later end replaced it meanwhile.
            _ => {
                let end = end.parse().map_err(|e| {
                    StoreError::corrupt(format!("completion outbox end of task {id}"), e)
                })?;
                remove(store, id, end).await?
            }
        }
    }
    Ok(claimed)
}

pub(super) async fn ack_completion(
    store: &RedisStore,
    id: &str,
    finished_at: u64,
) -> StoreResult<()> {
    remove(store, id, finished_at).await
}

/// Removes `id`'s entry if it is for the end at `finished_at`.
async fn remove(store: &RedisStore, id: &str, finished_at: u64) -> StoreResult<()> {
    let mut call = SCRIPTS.ack_completion.prepare_invoke();
    call.key(store.keys.completions())
        .key(store.keys.completion_ends())
        .arg(id)
        .arg(finished_at);
    let mut conn = store.conn.clone();
    store
        .run(
            &format!("acknowledge the completion event of task {id}"),
            call.invoke_async::<i64>(&mut conn),
        )
        .await?;
    Ok(())
}

pub(super) async fn pending_completions(store: &RedisStore) -> StoreResult<u64> {
    let mut conn = store.conn.clone();
    store
        .run(
            "count pending completion events",
            ::redis::cmd("ZCARD")
                .arg(store.keys.completions())
                .query_async(&mut conn),
        )
        .await
}
