//! A task's reduce: the tasks waiting for one, its claim, and the record
//! of its result that ends the task (see [`crate::Store::claim_reduce`]).
//!
//! The claim is two fields of the task hash (`reduceOwner`,
//! `reduceAttempts`) and lasts while the owner's entry in the `workers`
//! index is unexpired on Redis's clock: `lua/claim_reduce.lua` reads both
//! in one step. Ending the task is a task script (`lua/finish_reduce.lua`),
//! so it goes through `enter` as every end does: status index, retention,
//! completion outbox.

use super::RedisStore;
use super::codec::{self, TaskHash};
use super::errors::unexpected;
use super::scripts::SCRIPTS;
use crate::{ReduceClaim, StoreError, StoreResult, reduce_end};
use dts_model::{ItemFailures, ReduceResult, Task, TaskStatus, now_millis};
use std::collections::HashMap;

/// Index entries read per round trip while listing.
const PAGE: usize = 200;

/// Walks the `REDUCING` status index oldest first (by `createdAt`, then by
/// member, whose zero-padded sequence is the insertion order). An entry
/// whose task is gone, was replaced, or has another status (cannot be,
/// unless keys were changed by hand) is skipped; listing prunes it.
pub(super) async fn reducing_tasks(store: &RedisStore, limit: usize) -> StoreResult<Vec<Task>> {
    let mut found = Vec::new();
    if limit == 0 {
        return Ok(found);
    }
    let op = "list reducing tasks";
    let index = store.keys.tasks_in(TaskStatus::Reducing);
    let mut conn = store.conn.clone();
    let mut offset = 0usize;
    // ends: each round reads the next PAGE members of a finite index, and
    // stops at a short page.
    loop {
        let members: Vec<String> = store
            .run(
                op,
                ::redis::cmd("ZRANGE")
                    .arg(&index)
                    .arg(offset)
                    .arg(offset + PAGE - 1)
                    .query_async(&mut conn),
            )
            .await?;
        let mut reads = ::redis::pipe();
        for member in &members {
            reads.hgetall(store.keys.task(super::tasks::member_id(member)));
        }
        let hashes: Vec<HashMap<String, String>> =
            store.run(op, reads.query_async(&mut conn)).await?;
        for (member, fields) in members.iter().zip(hashes) {
            let hash = TaskHash::from_map(super::tasks::member_id(member), fields);
            if hash.member() != Some(member.as_str()) {
                continue;
            }
            let task = hash.decode()?;
            if task.status != TaskStatus::Reducing {
                continue;
            }
            found.push(task);
            if found.len() == limit {
                return Ok(found);
            }
        }
        if members.len() < PAGE {
            return Ok(found);
        }
        offset += PAGE;
    }
}

pub(super) async fn claim_reduce(
    store: &RedisStore,
    id: &str,
    worker: &str,
) -> StoreResult<ReduceClaim> {
    let op = format!("claim the reduce of task {id} for worker {worker}");
    let mut call = SCRIPTS.claim_reduce.prepare_invoke();
    call.key(store.keys.task(id))
        .key(store.keys.workers())
        .arg(TaskStatus::Reducing.as_str())
        .arg(worker);
    let mut conn = store.conn.clone();
    let reply: Vec<String> = store.run(&op, call.invoke_async(&mut conn)).await?;
    match reply.as_slice() {
        [head, attempt] if head == "claimed" => attempt
            .parse()
            .map(|attempt| ReduceClaim::Claimed { attempt })
            .map_err(|e| StoreError::corrupt(format!("task {id} reduceAttempts {attempt:?}"), e)),
        [head, owner] if head == "held" => Ok(ReduceClaim::Held {
            owner: owner.clone(),
        }),
        [head, status] if head == "status" => Ok(ReduceClaim::NotReducing {
            status: codec::status(id, status)?,
        }),
        [head] if head == "notfound" => Err(StoreError::NoSuchTask { id: id.to_string() }),
        _ => Err(unexpected(&op, &reply)),
    }
}

pub(super) async fn finish_reduce(
    store: &RedisStore,
    id: &str,
    worker: &str,
    attempt: u32,
    result: &ReduceResult,
) -> StoreResult<Option<Task>> {
    let op = format!("record the reduce of task {id} by worker {worker}");
    // The end is decided here for both cases of the items' failures; the
    // script, which reads `itemsFailed` in the same step, picks one.
    let (if_none, error) = reduce_end(result, ItemFailures::None);
    let (if_some, _) = reduce_end(result, ItemFailures::Some);
    let args = vec![
        TaskStatus::Reducing.as_str().to_string(),
        worker.to_string(),
        attempt.to_string(),
        now_millis().to_string(),
        codec::encode("reduce result", result)?,
        if_none.as_str().to_string(),
        if_some.as_str().to_string(),
        if error.is_some() { "1" } else { "0" }.to_string(),
        error.unwrap_or_default(),
    ];
    let reply = store
        .task_script(&SCRIPTS.finish_reduce, &op, id, args)
        .await?;
    match reply.first().map(String::as_str) {
        Some("ok") => TaskHash::from_pairs(id, &reply[1..]).decode().map(Some),
        // A task gone has no end to record either (deleted after a cancel).
        Some("lost" | "notfound") => Ok(None),
        _ => Err(unexpected(&op, &reply)),
    }
}
