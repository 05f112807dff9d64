//! Tasks: insert, read, list, status transitions and the plan.
//!
//! Changes go through the task scripts (`lua/`); reads are plain commands.
//! Listing walks a sorted-set index newest first and skips (then prunes)
//! entries whose task has expired.

use super::RedisStore;
use super::codec::{self, TaskHash};
use super::errors::unexpected;
use super::scripts::SCRIPTS;
use crate::{PlanOutcome, StoreError, StoreResult};
use dts_model::{ItemFailures, ShardRange, Task, TaskStatus, now_millis};
use std::collections::HashMap;

/// Index entries read per round trip while listing.
const LIST_PAGE: usize = 200;

/// Expired tasks forgotten from the list indexes per listing, at most, so one
/// call never keeps Redis busy for long.
const PRUNE_BATCH: usize = 500;

pub(super) async fn insert_task(
    store: &RedisStore,
    task: &Task,
    inputs: &[String],
) -> StoreResult<()> {
    let fields = codec::task_fields(task)?;
    let mut args = Vec::with_capacity(4 + 2 * fields.len() + inputs.len());
    args.extend([
        task.id.clone(),
        (2 * fields.len()).to_string(),
        task.created_at.to_string(),
        task.status.as_str().to_string(),
    ]);
    for (field, value) in fields {
        args.extend([field.to_string(), value]);
    }
    args.extend(inputs.iter().cloned());
    let op = format!("insert task {}", task.id);
    let reply = store
        .task_script(&SCRIPTS.insert_task, &op, &task.id, args)
        .await?;
    match reply.first().map(String::as_str) {
        Some("ok") => Ok(()),
        Some("exists") => Err(StoreError::TaskExists {
            id: task.id.clone(),
        }),
        _ => Err(unexpected(&op, &reply)),
    }
}

pub(super) async fn task(store: &RedisStore, id: &str) -> StoreResult<Option<Task>> {
    let mut conn = store.conn.clone();
    let fields: HashMap<String, String> = store
        .run(
            &format!("read task {id}"),
            ::redis::cmd("HGETALL")
                .arg(store.keys.task(id))
                .query_async(&mut conn),
        )
        .await?;
    if fields.is_empty() {
        return Ok(None);
    }
    TaskHash::from_map(id, fields).decode().map(Some)
}

pub(super) async fn task_version(store: &RedisStore, id: &str) -> StoreResult<Option<u64>> {
    let mut conn = store.conn.clone();
    let op = format!("read version of task {id}");
    // `id` is in every task hash, so its absence means no task; a hash
    // written before versions existed has none and is at version 0.
    let (stored_id, version): (Option<String>, Option<String>) = store
        .run(
            &op,
            ::redis::cmd("HMGET")
                .arg(store.keys.task(id))
                .arg("id")
                .arg("version")
                .query_async(&mut conn),
        )
        .await?;
    if stored_id.is_none() {
        return Ok(None);
    }
    match version {
        None => Ok(Some(0)),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|e| StoreError::corrupt(format!("task {id} version {text:?}"), e)),
    }
}

pub(super) async fn task_status(store: &RedisStore, id: &str) -> StoreResult<Option<TaskStatus>> {
    let mut conn = store.conn.clone();
    let status: Option<String> = store
        .run(
            &format!("read status of task {id}"),
            ::redis::cmd("HGET")
                .arg(store.keys.task(id))
                .arg("status")
                .query_async(&mut conn),
        )
        .await?;
    status
        .map(|text| {
            text.parse()
                .map_err(|e| StoreError::corrupt(format!("task {id} status {text:?}"), e))
        })
        .transpose()
}

/// Inputs read per call when the whole list is read, so one call stays well
/// inside the call timeout however long the list is (a million inputs in
/// one script call took seconds on a loaded machine).
const INPUTS_PAGE: u64 = 100_000;

pub(super) async fn inputs(store: &RedisStore, id: &str) -> StoreResult<Option<Vec<String>>> {
    let mut all = Vec::new();
    // ends: inputs are never added to after the task is stored, and each
    // page starts where the last ended, so a short page comes.
    loop {
        let start = all.len() as u64;
        let Some(page) = read_inputs(store, id, start, INPUTS_PAGE).await? else {
            return Ok(None);
        };
        let full = page.len() as u64 == INPUTS_PAGE;
        all.extend(page);
        if !full {
            return Ok(Some(all));
        }
    }
}

pub(super) async fn inputs_range(
    store: &RedisStore,
    id: &str,
    start: u64,
    len: u64,
) -> StoreResult<Option<Vec<String>>> {
    if len == 0 {
        // LRANGE cannot say "nothing"; an unknown task is still None.
        return Ok(task_version(store, id).await?.map(|_| Vec::new()));
    }
    read_inputs(store, id, start, len).await
}

/// The inputs at `start..start + len` (`len` at least 1), clamped to the
/// list. New tasks keep their inputs as a Redis list and only the range
/// travels; a task stored before that (its inputs one JSON string) is read
/// whole, decoded and sliced here: slower, but only such tasks pay it.
async fn read_inputs(
    store: &RedisStore,
    id: &str,
    start: u64,
    len: u64,
) -> StoreResult<Option<Vec<String>>> {
    // LRANGE takes signed 64-bit indices; one past the end reads as empty.
    let first = start.min(i64::MAX as u64);
    let last = start.saturating_add(len - 1).min(i64::MAX as u64);
    let op = format!("read inputs {start}+{len} of task {id}");
    let mut call = SCRIPTS.read_inputs.prepare_invoke();
    call.key(store.keys.task(id))
        .key(store.keys.inputs(id))
        .arg(first)
        .arg(last);
    let mut conn = store.conn.clone();
    let mut reply: Vec<String> = store.run(&op, call.invoke_async(&mut conn)).await?;
    match reply.first().map(String::as_str) {
        Some("none") => Ok(None),
        Some("list") => {
            reply.remove(0);
            Ok(Some(reply))
        }
        Some("json") if reply.len() == 2 => {
            let all: Vec<String> = codec::decode(format!("task {id} inputs"), &reply[1])?;
            let skip = usize::try_from(start).unwrap_or(usize::MAX);
            let take = usize::try_from(len).unwrap_or(usize::MAX);
            Ok(Some(all.into_iter().skip(skip).take(take).collect()))
        }
        _ => Err(unexpected(&op, &reply)),
    }
}

pub(super) async fn list_tasks(
    store: &RedisStore,
    status: Option<TaskStatus>,
    limit: usize,
) -> StoreResult<Vec<Task>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    prune_ended(store).await?;
    let index = match status {
        Some(status) => store.keys.tasks_in(status),
        None => store.keys.all_tasks(),
    };
    let mut conn = store.conn.clone();
    let mut tasks = Vec::new();
    // Entries whose task is gone (expired) or was replaced by a new task with
    // the same id; removed after the walk so the ranks do not shift under it.
    let mut stale = Vec::new();
    let mut start = 0isize;
    'walk: loop {
        let stop = start + LIST_PAGE as isize - 1;
        let members: Vec<String> = store
            .run(
                "list tasks",
                ::redis::cmd("ZREVRANGE")
                    .arg(&index)
                    .arg(start)
                    .arg(stop)
                    .query_async(&mut conn),
            )
            .await?;
        if members.is_empty() {
            break;
        }
        let mut reads = ::redis::pipe();
        for member in &members {
            reads.hgetall(store.keys.task(member_id(member)));
        }
        let hashes: Vec<HashMap<String, String>> = store
            .run("list tasks", reads.query_async(&mut conn))
            .await?;
        for (member, fields) in members.iter().zip(hashes) {
            let hash = TaskHash::from_map(member_id(member), fields);
            if hash.member() != Some(member.as_str()) {
                stale.push(member.clone());
                continue;
            }
            let task = hash.decode()?;
            if status.is_some_and(|wanted| wanted != task.status) {
                continue;
            }
            tasks.push(task);
            if tasks.len() == limit {
                break 'walk;
            }
        }
        if members.len() < LIST_PAGE {
            break;
        }
        start += LIST_PAGE as isize;
    }
    if !stale.is_empty() {
        forget(store, &stale).await?;
    }
    Ok(tasks)
}

/// The task id in a list member (`{sequence}:{id}`).
fn member_id(member: &str) -> &str {
    member.split_once(':').map_or(member, |(_, id)| id)
}

/// Drops the list entries of tasks whose retention has run out.
async fn prune_ended(store: &RedisStore) -> StoreResult<()> {
    let mut call = SCRIPTS.prune_ended.prepare_invoke();
    call.key(store.keys.ended());
    for key in store.keys.list_indexes() {
        call.key(key);
    }
    call.arg(PRUNE_BATCH);
    let mut conn = store.conn.clone();
    let pruned: u64 = store
        .run("prune ended tasks", call.invoke_async(&mut conn))
        .await?;
    if pruned > 0 {
        tracing::debug!(
            pruned,
            "redis store forgot expired tasks in its list indexes"
        );
    }
    Ok(())
}

/// Removes `members` from every list index.
async fn forget(store: &RedisStore, members: &[String]) -> StoreResult<()> {
    let mut removal = ::redis::pipe();
    for index in store.keys.list_indexes() {
        removal.zrem(index, members).ignore();
    }
    removal.zrem(store.keys.ended(), members).ignore();
    let mut conn = store.conn.clone();
    store
        .run("prune expired tasks", removal.query_async::<()>(&mut conn))
        .await
}

pub(super) async fn unfinished_task_ids(store: &RedisStore) -> StoreResult<Vec<String>> {
    let mut conn = store.conn.clone();
    let members: Vec<String> = store
        .run(
            "list unfinished tasks",
            ::redis::cmd("ZRANGE")
                .arg(store.keys.unfinished())
                .arg(0)
                .arg(-1)
                .query_async(&mut conn),
        )
        .await?;
    Ok(members
        .iter()
        .map(|member| member_id(member).to_string())
        .collect())
}

pub(super) async fn transition(
    store: &RedisStore,
    id: &str,
    to: TaskStatus,
    error: Option<&str>,
) -> StoreResult<Task> {
    let mut args = vec![
        to.as_str().to_string(),
        now_millis().to_string(),
        if error.is_some() { "1" } else { "0" }.to_string(),
        error.unwrap_or_default().to_string(),
    ];
    // The rules stay in dts-model: the script only checks membership.
    args.extend(
        TaskStatus::ALL
            .into_iter()
            .filter(|from| from.can_transition_to(to))
            .map(|from| from.as_str().to_string()),
    );
    let op = format!("move task {id} to {to}");
    let reply = store
        .task_script(&SCRIPTS.transition, &op, id, args)
        .await?;
    match reply.first().map(String::as_str) {
        Some("ok") => TaskHash::from_pairs(id, &reply[1..]).decode(),
        Some("notfound") => Err(StoreError::NoSuchTask { id: id.to_string() }),
        Some("illegal") if reply.len() == 2 => Err(StoreError::IllegalTransition {
            id: id.to_string(),
            from: codec::status(id, &reply[1])?,
            to,
        }),
        _ => Err(unexpected(&op, &reply)),
    }
}

pub(super) async fn save_plan(
    store: &RedisStore,
    id: &str,
    shards: &[ShardRange],
) -> StoreResult<PlanOutcome> {
    let count = crate::plan_size(id, shards.len())?;
    let mut args = vec![
        codec::encode("plan", shards)?,
        count.to_string(),
        now_millis().to_string(),
        // No shards: planning completed the last one, with nothing failed.
        TaskStatus::InProgress
            .after_last_shard(ItemFailures::None)
            .as_str()
            .to_string(),
    ];
    args.extend(
        shards
            .iter()
            .map(|range| format!("{}:{}", range.start, range.len)),
    );
    let op = format!("save plan of task {id}");
    let reply = store.task_script(&SCRIPTS.save_plan, &op, id, args).await?;
    let task = |from: usize| TaskHash::from_pairs(id, &reply[from..]).decode();
    match reply.first().map(String::as_str) {
        Some("created") => Ok(PlanOutcome::Created(task(1)?)),
        Some("existing") if reply.len() >= 2 => Ok(PlanOutcome::Existing {
            // The task first: a task that does not read back is the worse news.
            task: task(2)?,
            shards: codec::decode(format!("task {id} plan"), &reply[1])?,
        }),
        Some("ended") => Ok(PlanOutcome::Ended(task(1)?)),
        Some("notfound") => Err(StoreError::NoSuchTask { id: id.to_string() }),
        _ => Err(unexpected(&op, &reply)),
    }
}
