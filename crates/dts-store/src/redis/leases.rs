//! Shard leases and item start counts: which worker runs a shard now, how
//! many attempts the shard has had, and how often each item was started.
//!
//! Each call is one script (one round trip, one atomic step); renewing all
//! of a worker's leases is one script too, whatever tasks they belong to.
//! Expiry is judged by Redis's clock (`TIME` inside the scripts), so servers
//! and workers whose clocks disagree still agree on who holds a shard.

use super::RedisStore;
use super::codec::{self, TaskHash};
use super::errors::unexpected;
use super::scripts::SCRIPTS;
use crate::{
    CopyClaim, CopyState, ReadyClaim, RunnableTask, ShardClaim, StoreError, StoreResult,
    lease_millis,
};
use dts_model::{ShardRange, TaskStatus};
use std::collections::HashMap;
use std::time::Duration;

pub(super) async fn claim_shard(
    store: &RedisStore,
    id: &str,
    shard: u32,
    worker: &str,
    lease: Duration,
) -> StoreResult<ShardClaim> {
    let op = format!("claim shard {shard} of task {id} for worker {worker}");
    let args = vec![
        shard.to_string(),
        worker.to_string(),
        lease_millis(lease).to_string(),
    ];
    let reply = store
        .task_script(&SCRIPTS.claim_shard, &op, id, args)
        .await?;
    match reply.first().map(String::as_str) {
        Some("acquired") if reply.len() == 2 => Ok(ShardClaim::Acquired {
            attempt: number(&op, &reply[1])?,
        }),
        Some("held") if reply.len() == 3 => Ok(ShardClaim::Held {
            owner: reply[1].clone(),
            expires_in: Duration::from_millis(number(&op, &reply[2])?),
        }),
        Some("completed") => Ok(ShardClaim::Completed),
        Some("noshard") if reply.len() == 2 => Err(super::results::no_shard(id, shard, &reply[1])),
        Some("notfound") => Err(StoreError::NoSuchTask { id: id.to_string() }),
        _ => Err(unexpected(&op, &reply)),
    }
}

pub(super) async fn renew_leases(
    store: &RedisStore,
    worker: &str,
    shards: &[(String, u32)],
    lease: Duration,
) -> StoreResult<Vec<(String, u32)>> {
    if shards.is_empty() {
        return Ok(Vec::new());
    }
    let mut call = SCRIPTS.renew_leases.prepare_invoke();
    call.arg(worker).arg(lease_millis(lease));
    // Each task's three keys go in once, however many of its shards follow.
    let mut tasks: HashMap<&str, usize> = HashMap::new();
    for (id, shard) in shards {
        let next = tasks.len() + 1;
        let task = *tasks.entry(id.as_str()).or_insert_with(|| {
            call.key(store.keys.task(id))
                .key(store.keys.leases(id))
                .key(store.keys.held(id));
            next
        });
        call.arg(task).arg(*shard);
    }
    let op = format!("renew {} leases of worker {worker}", shards.len());
    let mut conn = store.conn.clone();
    let lost: Vec<usize> = store.run(&op, call.invoke_async(&mut conn)).await?;
    lost.into_iter()
        .map(|position| {
            shards
                .get(position)
                .cloned()
                .ok_or_else(|| unexpected(&op, &[position.to_string()]))
        })
        .collect()
}

pub(super) async fn live_leases(store: &RedisStore, id: &str) -> StoreResult<u32> {
    let mut call = SCRIPTS.live_leases.prepare_invoke();
    call.key(store.keys.held(id));
    let mut conn = store.conn.clone();
    store
        .run(
            &format!("count the live leases of task {id}"),
            call.invoke_async::<u32>(&mut conn),
        )
        .await
}

pub(super) async fn release_shard(
    store: &RedisStore,
    id: &str,
    shard: u32,
    worker: &str,
    clean: bool,
) -> StoreResult<()> {
    let mut call = SCRIPTS.release_shard.prepare_invoke();
    call.key(store.keys.leases(id))
        .key(store.keys.task(id))
        .key(store.keys.ready(id))
        .key(store.keys.held(id))
        .arg(shard)
        .arg(worker)
        .arg(if clean { "1" } else { "0" })
        .arg(TaskStatus::InProgress.as_str());
    let mut conn = store.conn.clone();
    store
        .run(
            &format!("release shard {shard} of task {id} by worker {worker}"),
            call.invoke_async::<u8>(&mut conn),
        )
        .await?;
    Ok(())
}

pub(super) async fn claim_ready_shard(
    store: &RedisStore,
    id: &str,
    worker: &str,
    lease: Duration,
    max_held: Option<u32>,
) -> StoreResult<ReadyClaim> {
    let op = format!("claim a ready shard of task {id} for worker {worker}");
    let args = vec![
        worker.to_string(),
        lease_millis(lease).to_string(),
        max_held.map(|max| max.to_string()).unwrap_or_default(),
    ];
    let reply = store
        .task_script(&SCRIPTS.claim_ready_shard, &op, id, args)
        .await?;
    match reply.first().map(String::as_str) {
        Some("claimed") if reply.len() == 5 => Ok(ReadyClaim::Claimed {
            shard: number(&op, &reply[1])?,
            attempt: number(&op, &reply[2])?,
            range: range(id, &reply[1], &reply[3])?,
            first: reply[4] == "1",
        }),
        Some("noneready") => Ok(ReadyClaim::NoneReady),
        Some("atcapacity") => Ok(ReadyClaim::AtCapacity),
        Some("ended") => Ok(ReadyClaim::TaskEnded),
        Some("notfound") => Err(StoreError::NoSuchTask { id: id.to_string() }),
        _ => Err(unexpected(&op, &reply)),
    }
}

pub(super) async fn claim_copy(
    store: &RedisStore,
    id: &str,
    worker: &str,
    per_item: Duration,
    min: Duration,
) -> StoreResult<CopyClaim> {
    let op = format!("claim a copy of a straggling shard of task {id} for worker {worker}");
    let args = vec![
        worker.to_string(),
        lease_millis(per_item).to_string(),
        lease_millis(min).to_string(),
        dts_model::new_copy_token().to_string(),
    ];
    let reply = store
        .task_script(&SCRIPTS.claim_copy, &op, id, args)
        .await?;
    match reply.first().map(String::as_str) {
        Some("copied") if reply.len() == 5 => Ok(CopyClaim::Copied {
            shard: number(&op, &reply[1])?,
            attempt: number(&op, &reply[2])?,
            range: range(id, &reply[1], &reply[3])?,
            token: number(&op, &reply[4])?,
        }),
        Some("none") => Ok(CopyClaim::NoStraggler),
        Some("ended") => Ok(CopyClaim::TaskEnded),
        Some("notfound") => Err(StoreError::NoSuchTask { id: id.to_string() }),
        _ => Err(unexpected(&op, &reply)),
    }
}

pub(super) async fn copy_state(
    store: &RedisStore,
    id: &str,
    shard: u32,
    token: u64,
) -> StoreResult<CopyState> {
    let op = format!("read whether a copy of shard {shard} of task {id} may run on");
    let args = vec![shard.to_string(), token.to_string()];
    let reply = store
        .task_script(&SCRIPTS.copy_state, &op, id, args)
        .await?;
    match reply.first().map(String::as_str) {
        Some("runs") => Ok(CopyState::Runs),
        Some("completed") => Ok(CopyState::ShardCompleted),
        Some("ended") if reply.len() == 2 => Ok(CopyState::TaskNotRunning(Some(codec::status(
            id, &reply[1],
        )?))),
        Some("replaced") => Ok(CopyState::Replaced),
        Some("notfound") => Ok(CopyState::TaskNotRunning(None)),
        _ => Err(unexpected(&op, &reply)),
    }
}

/// A shard's range as `claim_ready_shard.lua` reads it: `start:len`.
fn range(id: &str, shard: &str, text: &str) -> StoreResult<ShardRange> {
    let parsed = text
        .split_once(':')
        .and_then(|(start, len)| Some((start.parse().ok()?, len.parse().ok()?)));
    match parsed {
        Some((start, len)) => Ok(ShardRange { start, len }),
        None => Err(StoreError::corrupt(
            format!("task {id} range of shard {shard}"),
            format!("{text:?} is not start:len"),
        )),
    }
}

pub(super) async fn runnable_tasks(
    store: &RedisStore,
    limit: usize,
) -> StoreResult<Vec<RunnableTask>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let op = "list runnable tasks";
    let mut call = SCRIPTS.runnable_tasks.prepare_invoke();
    call.key(store.keys.runnable())
        .arg(store.keys.task_prefix())
        .arg(limit)
        .arg(TaskStatus::InProgress.as_str());
    let mut conn = store.conn.clone();
    let reply: Vec<String> = store.run(op, call.invoke_async(&mut conn)).await?;
    let mut tasks = Vec::new();
    let mut rest = reply.as_slice();
    while let [id, ready, held, fields, tail @ ..] = rest {
        let pairs = number::<usize>(op, fields)?
            .checked_mul(2)
            .filter(|pairs| *pairs <= tail.len())
            .ok_or_else(|| unexpected(op, std::slice::from_ref(fields)))?;
        tasks.push(RunnableTask {
            task: TaskHash::from_pairs(id, &tail[..pairs]).decode()?,
            ready: number(op, ready)?,
            held: number(op, held)?,
        });
        rest = &tail[pairs..];
    }
    if !rest.is_empty() {
        return Err(unexpected(op, rest));
    }
    Ok(tasks)
}

pub(super) async fn mark_item_started(
    store: &RedisStore,
    id: &str,
    index: u64,
) -> StoreResult<u32> {
    let op = format!("mark item {index} of task {id} started");
    let reply = store
        .task_script(&SCRIPTS.mark_item_started, &op, id, vec![index.to_string()])
        .await?;
    match reply.first().map(String::as_str) {
        Some("ok") if reply.len() == 2 => number(&op, &reply[1]),
        Some("notfound") => Err(StoreError::NoSuchTask { id: id.to_string() }),
        _ => Err(unexpected(&op, &reply)),
    }
}

/// A count or a duration a script returned as text.
fn number<T: std::str::FromStr>(op: &str, text: &str) -> StoreResult<T> {
    text.parse()
        .map_err(|_| unexpected(op, &[text.to_string()]))
}
