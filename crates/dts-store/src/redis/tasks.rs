//! Tasks: insert, read, list, status transitions and the plan.
//!
//! Changes go through the task scripts (`lua/`); reads are plain commands.
//! Listing walks a sorted-set index newest first and skips (then prunes)
//! entries whose task has expired.

use super::RedisStore;
use super::codec::{self, TaskHash};
use super::errors::unexpected;
use super::scripts::SCRIPTS;
use crate::{PlanOutcome, StoreError, StoreResult, TaskCursor, TaskPage};
use dts_model::{Bytes, ShardRange, Task, TaskStatus, now_millis};
use std::collections::HashMap;

/// Index entries read per round trip while listing.
const LIST_PAGE: usize = 200;

/// Expired tasks forgotten from the list indexes per listing, at most, so one
/// call never keeps Redis busy for long.
const PRUNE_BATCH: usize = 500;

pub(super) async fn insert_task(
    store: &RedisStore,
    task: &Task,
    inputs: &[Bytes],
) -> StoreResult<()> {
    let fields = codec::task_fields(task)?;
    // Redis strings are bytes, so an input that is not UTF-8 is kept as is.
    let mut args: Vec<&[u8]> = Vec::with_capacity(4 + 2 * fields.len() + inputs.len());
    let field_count = (2 * fields.len()).to_string();
    let created_at = task.created_at.to_string();
    args.extend([
        task.id.as_bytes(),
        field_count.as_bytes(),
        created_at.as_bytes(),
        task.status.as_str().as_bytes(),
    ]);
    for (field, value) in &fields {
        args.extend([field.as_bytes(), value.as_bytes()]);
    }
    args.extend(inputs.iter().map(Bytes::as_bytes));
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

pub(super) async fn inputs(store: &RedisStore, id: &str) -> StoreResult<Option<Vec<Bytes>>> {
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
) -> StoreResult<Option<Vec<Bytes>>> {
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
) -> StoreResult<Option<Vec<Bytes>>> {
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
    // Bytes, not text: an input need not be UTF-8.
    let reply: Vec<Vec<u8>> = store.run(&op, call.invoke_async(&mut conn)).await?;
    match reply.as_slice() {
        [kind] if kind == b"none" => Ok(None),
        [kind, inputs @ ..] if kind == b"list" => Ok(Some(
            inputs.iter().map(|i| Bytes::from(i.as_slice())).collect(),
        )),
        [kind, json] if kind == b"json" => {
            // Written before inputs were bytes: a JSON array of strings.
            let all: Vec<Bytes> = serde_json::from_slice(json)
                .map_err(|e| StoreError::corrupt(format!("task {id} inputs"), e))?;
            let skip = usize::try_from(start).unwrap_or(usize::MAX);
            let take = usize::try_from(len).unwrap_or(usize::MAX);
            Ok(Some(all.into_iter().skip(skip).take(take).collect()))
        }
        _ => {
            let shown: Vec<String> = reply
                .iter()
                .take(3)
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect();
            Err(unexpected(&op, &shown))
        }
    }
}

pub(super) async fn list_tasks_page(
    store: &RedisStore,
    status: Option<TaskStatus>,
    after: Option<TaskCursor>,
    limit: usize,
) -> StoreResult<TaskPage> {
    if limit == 0 {
        return Ok(TaskPage {
            tasks: Vec::new(),
            next: None,
        });
    }
    prune_ended(store).await?;
    let index = match status {
        Some(status) => store.keys.tasks_in(status),
        None => store.keys.all_tasks(),
    };
    // Members at or below the cursor's score; those of the cursor's own
    // millisecond at or after its sequence are skipped below. A member's
    // sequence is zero-padded, so comparing the text compares the numbers.
    let max = after.map_or("+inf".to_string(), |cursor| cursor.created_at.to_string());
    let before = after.map(|cursor| format!("{:020}", cursor.sequence));
    let mut conn = store.conn.clone();
    let mut tasks: Vec<(Task, String)> = Vec::new();
    // Entries whose task is gone (expired) or was replaced by a new task with
    // the same id; removed after the walk so the ranks do not shift under it.
    let mut stale = Vec::new();
    let mut gone_ids = Vec::new();
    let mut offset = 0usize;
    // One more than asked, to learn whether another page follows.
    'walk: loop {
        let members: Vec<(String, f64)> = store
            .run(
                "list tasks",
                ::redis::cmd("ZREVRANGEBYSCORE")
                    .arg(&index)
                    .arg(&max)
                    .arg("-inf")
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(LIST_PAGE)
                    .query_async(&mut conn),
            )
            .await?;
        if members.is_empty() {
            break;
        }
        let mut reads = ::redis::pipe();
        for (member, _) in &members {
            reads.hgetall(store.keys.task(member_id(member)));
        }
        let hashes: Vec<HashMap<String, String>> = store
            .run("list tasks", reads.query_async(&mut conn))
            .await?;
        for ((member, score), fields) in members.iter().zip(hashes) {
            if let (Some(cursor), Some(before)) = (after, &before) {
                let sequence = member.split_once(':').map_or("", |(seq, _)| seq);
                if *score as u64 == cursor.created_at && sequence >= before.as_str() {
                    continue;
                }
            }
            if fields.is_empty() {
                gone_ids.push(member_id(member).to_string());
            }
            let hash = TaskHash::from_map(member_id(member), fields);
            if hash.member() != Some(member.as_str()) {
                stale.push(member.clone());
                continue;
            }
            let task = hash.decode()?;
            if status.is_some_and(|wanted| wanted != task.status) {
                continue;
            }
            tasks.push((task, member.clone()));
            if tasks.len() > limit {
                break 'walk;
            }
        }
        if members.len() < LIST_PAGE {
            break;
        }
        offset += LIST_PAGE;
    }
    if !stale.is_empty() {
        forget(store, &stale, &gone_ids).await?;
    }
    let more = tasks.len() > limit;
    tasks.truncate(limit);
    let next = match tasks.last() {
        Some((task, member)) if more => Some(TaskCursor {
            created_at: task.created_at,
            sequence: member
                .split_once(':')
                .and_then(|(seq, _)| seq.parse().ok())
                .ok_or_else(|| {
                    StoreError::corrupt(
                        format!("task {} list member", task.id),
                        format!("{member:?} does not start with a sequence number"),
                    )
                })?,
        }),
        _ => None,
    };
    Ok(TaskPage {
        tasks: tasks.into_iter().map(|(task, _)| task).collect(),
        next,
    })
}

/// Ids that start with `prefix`, from the id index (`ZRANGEBYLEX`, no
/// scan); an id whose task expired but is not yet pruned is left out.
pub(super) async fn task_ids_with_prefix(
    store: &RedisStore,
    prefix: &str,
    limit: usize,
) -> StoreResult<Vec<String>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let op = format!("find task ids starting {prefix}");
    let mut conn = store.conn.clone();
    // `(prefix\xff`: every id with the prefix sorts below it (ids are ASCII).
    let mut end = format!("({prefix}").into_bytes();
    end.push(0xff);
    let mut found = Vec::new();
    let mut offset = 0usize;
    // ends: each round reads the next LIST_PAGE ids of a finite index, and
    // stops at a short page.
    loop {
        let ids: Vec<String> = store
            .run(
                &op,
                ::redis::cmd("ZRANGEBYLEX")
                    .arg(store.keys.ids())
                    .arg(format!("[{prefix}"))
                    .arg(&end)
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(LIST_PAGE)
                    .query_async(&mut conn),
            )
            .await?;
        let mut exists = ::redis::pipe();
        for id in &ids {
            exists.exists(store.keys.task(id));
        }
        let live: Vec<bool> = store.run(&op, exists.query_async(&mut conn)).await?;
        for (id, live) in ids.iter().zip(live) {
            if live {
                found.push(id.clone());
                if found.len() == limit {
                    return Ok(found);
                }
            }
        }
        if ids.len() < LIST_PAGE {
            return Ok(found);
        }
        offset += LIST_PAGE;
    }
}

pub(super) async fn delete_task(store: &RedisStore, id: &str) -> StoreResult<Task> {
    let op = format!("delete task {id}");
    let reply = store
        .task_script(&SCRIPTS.delete_task, &op, id, vec![id.to_string()])
        .await?;
    match reply.first().map(String::as_str) {
        Some("deleted") => TaskHash::from_pairs(id, &reply[1..]).decode(),
        Some("notfound") => Err(StoreError::NoSuchTask { id: id.to_string() }),
        Some("running") if reply.len() == 2 => Err(StoreError::TaskNotEnded {
            id: id.to_string(),
            status: codec::status(id, &reply[1])?,
        }),
        _ => Err(unexpected(&op, &reply)),
    }
}

/// The task id in a list member (`{sequence}:{id}`).
pub(super) fn member_id(member: &str) -> &str {
    member.split_once(':').map_or(member, |(_, id)| id)
}

/// Drops the list entries of tasks whose retention has run out.
async fn prune_ended(store: &RedisStore) -> StoreResult<()> {
    let mut call = SCRIPTS.prune_ended.prepare_invoke();
    call.key(store.keys.ended()).key(store.keys.ids());
    for key in store.keys.list_indexes() {
        call.key(key);
    }
    call.arg(PRUNE_BATCH).arg(store.keys.task_prefix());
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

/// Removes `members` from every list index, and `ids` (of tasks whose
/// hash is gone) from the id index.
async fn forget(store: &RedisStore, members: &[String], ids: &[String]) -> StoreResult<()> {
    let mut removal = ::redis::pipe();
    for index in store.keys.list_indexes() {
        removal.zrem(index, members).ignore();
    }
    if !ids.is_empty() {
        removal.zrem(store.keys.ids(), ids).ignore();
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
    ];
    // No shards: planning completed the last one, and the script applies
    // the rule to the task (which it alone reads: it may have a reduce).
    args.extend(super::results::LAST_SHARD_RULE.iter().cloned());
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
