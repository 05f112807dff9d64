//! Item results and shard completion: the writes workers make while a task
//! runs, and the reads that page through them.
//!
//! A batch of results is one script call (one round trip, one atomic step).
//! A batch bigger than [`MAX_BATCH_ITEMS`] or [`MAX_BATCH_BYTES`] is split so
//! that no single script keeps Redis busy for long; each part is an
//! idempotent upsert, and for [`complete_shard`] the shard's completion goes
//! with the last part, so the shard only counts once all its results are in.
//! Results go in the compact form of results layout 2 first; a task stored
//! in layout 1 refuses it before writing anything and gets the full form
//! (see [`ResultForm`] and the module docs).

use super::RedisStore;
use super::codec::{self, ResultForm, TaskHash};
use super::errors::unexpected;
use super::scripts::SCRIPTS;
use crate::{ResultFilter, ShardCompletion, StoreError, StoreResult};
use dts_model::reduce::ReduceStep;
use dts_model::{ItemFailures, ItemResult, Reduce, ReduceWhen, TaskStatus, now_millis};
use std::collections::HashMap;
use std::sync::LazyLock;

/// dts-model's completion rule ([`TaskStatus::after_last_shard`]) as
/// `complete_shard.lua` and `save_plan.lua` take it (`last_shard_rule` in
/// `lua/task_prelude.lua`): the number of entries, then one quadruple
/// (status, `none`/`some` items failed, the task's reduce: `none` or its
/// `when`, the status to enter) for each case the rule changes the status.
/// The decision has to happen inside the script, where the status, the
/// failure count and the reduce are read in the same atomic step that
/// counts the shard; tabulating the rule here instead of writing it again
/// in Lua keeps one rule for both stores.
pub(super) static LAST_SHARD_RULE: LazyLock<Vec<String>> = LazyLock::new(|| {
    // Whether a reduce is due depends on its `when` and on whether an item
    // failed, so one task of each kind stands for all: no reduce, and a
    // reduce with each `when` (as the task hash's `reduceWhen` names it).
    let reduces: Vec<(String, Option<Reduce>)> = std::iter::once(("none".to_string(), None))
        .chain(
            ReduceWhen::NAMES
                .iter()
                .filter_map(|name| name.parse::<ReduceWhen>().ok())
                .map(|when| {
                    let reduce = Reduce {
                        template_function: String::new(),
                        interpreter: String::new(),
                        timeout_secs: 0,
                        when,
                    };
                    (when.to_string(), Some(reduce))
                }),
        )
        .collect();
    let mut entries = Vec::new();
    for status in TaskStatus::ALL {
        for failures in ItemFailures::ALL {
            // A count with exactly these failures.
            let (name, items_failed) = match failures {
                ItemFailures::None => ("none", 0),
                ItemFailures::Some => ("some", 1),
            };
            for (kind, reduce) in &reduces {
                let step = ReduceStep::of(reduce.as_ref(), items_failed);
                let after = status.after_last_shard(failures, step);
                if after != status {
                    entries.extend([
                        status.as_str().to_string(),
                        name.to_string(),
                        kind.clone(),
                        after.as_str().to_string(),
                    ]);
                }
            }
        }
    }
    let mut args = vec![(entries.len() / 4).to_string()];
    args.extend(entries);
    args
});

/// Results per script call, at most (a worker's batch is a few hundred).
const MAX_BATCH_ITEMS: usize = 1_000;

/// Bytes of result JSON per script call, at most (one result may be bigger).
const MAX_BATCH_BYTES: usize = 8 << 20;

/// The script arguments of `results` in `form`, split into batches.
fn batches(results: &[ItemResult], form: ResultForm) -> StoreResult<Vec<Vec<Vec<u8>>>> {
    let mut batches = Vec::new();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let (mut items, mut bytes) = (0, 0);
    for result in results {
        let args = codec::result_args(result, form)?;
        let size: usize = args.iter().map(Vec::len).sum();
        let full = items >= MAX_BATCH_ITEMS || bytes + size > MAX_BATCH_BYTES;
        if full && !batch.is_empty() {
            batches.push(std::mem::take(&mut batch));
            (items, bytes) = (0, 0);
        }
        items += 1;
        bytes += size;
        batch.extend(args);
    }
    batches.push(batch);
    Ok(batches)
}

/// What `record_results.lua` did with one batch.
enum Batch {
    /// Recorded (or nothing to record: the shard was completed before);
    /// the task's status now.
    Recorded(TaskStatus),
    /// The task's layout wants the other form; nothing was written.
    OtherForm,
    /// The batch is a copy's that the shard no longer has; nothing was
    /// written.
    Replaced,
}

/// Runs `record_results.lua` on one batch in `form`; `shard`, when given,
/// must be in the plan, and `copy`, when given, the token of the shard's
/// copy.
async fn record_batch(
    store: &RedisStore,
    op: &str,
    id: &str,
    (shard, copy): (Option<u32>, Option<u64>),
    form: ResultForm,
    batch: Vec<Vec<u8>>,
) -> StoreResult<Batch> {
    let mut args = vec![
        shard
            .map(|s| s.to_string())
            .unwrap_or_default()
            .into_bytes(),
        copy_arg(copy),
        form.layout().into(),
    ];
    args.extend(batch);
    let reply = store
        .task_script(&SCRIPTS.record_results, op, id, args)
        .await?;
    match reply.first().map(String::as_str) {
        Some("ok") if reply.len() == 2 => codec::status(id, &reply[1]).map(Batch::Recorded),
        Some("layout") => Ok(Batch::OtherForm),
        Some("replaced") if copy.is_some() => Ok(Batch::Replaced),
        Some("noshard") if reply.len() == 2 => Err(no_shard(id, shard.unwrap_or(0), &reply[1])),
        Some("notfound") => Err(StoreError::NoSuchTask { id: id.to_string() }),
        _ => Err(unexpected(op, &reply)),
    }
}

/// A copy's token as the scripts take it: '' for a run that is not a copy.
fn copy_arg(copy: Option<u64>) -> Vec<u8> {
    copy.map(|token| token.to_string())
        .unwrap_or_default()
        .into_bytes()
}

/// The refusal of a shard the plan does not have; `planned` is the
/// script's `chunksToExecute`.
pub(super) fn no_shard(id: &str, shard: u32, planned: &str) -> StoreError {
    match planned.parse() {
        Ok(planned) => crate::no_shard(id, shard, planned),
        Err(e) => StoreError::corrupt(format!("task {id} chunksToExecute {planned:?}"), e),
    }
}

/// Records `results`, of `shard` when given, by the copy with token `copy`
/// when given: `None`, and nothing more written, once the store says the
/// copy is no longer the shard's (`Store::record_copy_results`).
pub(super) async fn record_results(
    store: &RedisStore,
    id: &str,
    shard: Option<u32>,
    copy: Option<u64>,
    results: &[ItemResult],
) -> StoreResult<Option<TaskStatus>> {
    let op = match shard {
        Some(shard) => format!(
            "record {} results of shard {shard} of task {id}",
            results.len()
        ),
        None => format!("record {} results of task {id}", results.len()),
    };
    // A task stored before layout 2 refuses the compact form before writing
    // anything; the batches are idempotent upserts, so sending them all again
    // in the full form is safe.
    'forms: for form in ResultForm::IN_ORDER {
        let mut status = None;
        for batch in batches(results, form)? {
            match record_batch(store, &op, id, (shard, copy), form, batch).await? {
                Batch::Recorded(now) => status = Some(now),
                Batch::OtherForm => continue 'forms,
                Batch::Replaced => return Ok(None),
            }
        }
        // `batches` always gives at least one (possibly empty) batch.
        return status.map(Some).ok_or_else(|| unexpected(&op, &[]));
    }
    Err(neither_form(&op))
}

/// Both forms refused: the task's layout is one this dts does not know.
fn neither_form(op: &str) -> StoreError {
    unexpected(op, &["layout".to_string()])
}

/// Completes `shard` with `results`, for the copy with token `copy` when
/// given: `None`, and nothing more written, once the store says the copy
/// is no longer the shard's (`Store::complete_copy`).
pub(super) async fn complete_shard(
    store: &RedisStore,
    id: &str,
    shard: u32,
    copy: Option<u64>,
    results: &[ItemResult],
) -> StoreResult<Option<ShardCompletion>> {
    let op = format!("complete shard {shard} of task {id}");
    'forms: for form in ResultForm::IN_ORDER {
        let mut batches = batches(results, form)?;
        let last = batches.pop().unwrap_or_default();
        for batch in batches {
            match record_batch(store, &op, id, (Some(shard), copy), form, batch).await? {
                Batch::Recorded(_) => {}
                Batch::OtherForm => continue 'forms,
                Batch::Replaced => return Ok(None),
            }
        }
        let mut args = vec![
            shard.to_string().into_bytes(),
            copy_arg(copy),
            now_millis().to_string().into_bytes(),
        ];
        args.extend(LAST_SHARD_RULE.iter().map(|arg| arg.as_bytes().to_vec()));
        args.push(form.layout().into());
        args.extend(last);
        let reply = store
            .task_script(&SCRIPTS.complete_shard, &op, id, args)
            .await?;
        return match reply.first().map(String::as_str) {
            Some("ok") if reply.len() >= 3 => Ok(Some(ShardCompletion {
                newly_completed: reply[1] == "1",
                finished_task: reply[2] == "1",
                task: TaskHash::from_pairs(id, &reply[3..]).decode()?,
            })),
            // Results written before were lost (a Redis failover): the
            // shard is ready again, and its next run runs those items.
            Some("incomplete") if reply.len() >= 2 => {
                tracing::warn!(
                    task = %id,
                    shard,
                    items = %reply[1],
                    "a completed shard lacks results the store had acknowledged (lost in a Redis failover?); it runs again for those items"
                );
                Ok(Some(ShardCompletion {
                    newly_completed: false,
                    finished_task: false,
                    task: TaskHash::from_pairs(id, &reply[2..]).decode()?,
                }))
            }
            Some("layout") => continue 'forms,
            Some("replaced") if copy.is_some() => Ok(None),
            Some("noshard") if reply.len() == 2 => Err(no_shard(id, shard, &reply[1])),
            Some("notfound") => Err(StoreError::NoSuchTask { id: id.to_string() }),
            _ => Err(unexpected(&op, &reply)),
        };
    }
    Err(neither_form(&op))
}

pub(super) async fn completed_shards(store: &RedisStore, id: &str) -> StoreResult<Vec<u32>> {
    let mut conn = store.conn.clone();
    let (exists, members): (bool, Vec<String>) = store
        .run(
            &format!("read completed shards of task {id}"),
            ::redis::pipe()
                .atomic()
                .exists(store.keys.task(id))
                .smembers(store.keys.shards(id))
                .query_async(&mut conn),
        )
        .await?;
    if !exists {
        return Err(StoreError::NoSuchTask { id: id.to_string() });
    }
    let mut shards = members
        .iter()
        .map(|m| {
            m.parse::<u32>()
                .map_err(|e| StoreError::corrupt(format!("task {id} completed shard {m:?}"), e))
        })
        .collect::<StoreResult<Vec<u32>>>()?;
    shards.sort_unstable();
    Ok(shards)
}

pub(super) async fn recorded_indices(
    store: &RedisStore,
    id: &str,
    start: u64,
    end: u64,
) -> StoreResult<Vec<u64>> {
    let op = format!("read recorded indices {start}..{end} of task {id}");
    let mut call = SCRIPTS.recorded_indices.prepare_invoke();
    call.key(store.keys.task(id))
        .key(store.keys.results(id))
        .key(store.keys.result_index(id, ResultFilter::All))
        .arg(start)
        .arg(end);
    let mut conn = store.conn.clone();
    let reply: Vec<String> = store.run(&op, call.invoke_async(&mut conn)).await?;
    match reply.first().map(String::as_str) {
        Some("ok") => reply[1..].iter().map(|m| index(id, m)).collect(),
        Some("notfound") => Err(StoreError::NoSuchTask { id: id.to_string() }),
        _ => Err(unexpected(&op, &reply)),
    }
}

fn index(id: &str, text: &str) -> StoreResult<u64> {
    text.parse()
        .map_err(|e| StoreError::corrupt(format!("task {id} result index {text:?}"), e))
}

pub(super) async fn results(
    store: &RedisStore,
    id: &str,
    filter: ResultFilter,
    offset: u64,
    limit: u64,
) -> StoreResult<(u64, Vec<ItemResult>)> {
    let op = format!("read results of task {id}");
    // Ranks in a sorted set are signed 64-bit; no page comes near the limit.
    let rank = |n: u64| i64::try_from(n).unwrap_or(i64::MAX).to_string();
    let (first, last) = match limit {
        0 => (String::new(), String::new()),
        _ => (rank(offset), rank(offset.saturating_add(limit - 1))),
    };
    let filter_name = match filter {
        ResultFilter::All => "all",
        ResultFilter::Succeeded => "succeeded",
        ResultFilter::Failed => "failed",
    };
    let mut call = SCRIPTS.results_page.prepare_invoke();
    call.key(store.keys.task(id))
        .key(store.keys.inputs(id))
        .key(store.keys.results(id))
        .key(store.keys.result_index(id, filter))
        .key(store.keys.result_index(id, ResultFilter::Failed))
        .arg(filter_name)
        .arg(first)
        .arg(last);
    let mut conn = store.conn.clone();
    // Bytes: the task's inputs in the reply need not be UTF-8.
    let raw: Vec<Vec<u8>> = store.run(&op, call.invoke_async(&mut conn)).await?;
    let reply: Vec<Part<'_>> = raw.iter().map(|part| Part(part)).collect();
    let shown = || -> Vec<String> { reply.iter().take(3).map(|p| p.lossy()).collect() };
    match reply.first().map(Part::bytes) {
        Some(b"ok") if reply.len() >= 3 => {
            let total = reply[1]
                .text(id)?
                .parse()
                .map_err(|e| StoreError::corrupt(format!("task {id} result count"), e))?;
            let page = match reply[2].bytes() {
                b"1" => full_page(id, &reply[3..]),
                b"2" => compact_page(id, &reply[3..]),
                _ => return Err(unexpected(&op, &shown())),
            };
            Ok((total, page.ok_or_else(|| unexpected(&op, &shown()))??))
        }
        Some(b"notfound") => Err(StoreError::NoSuchTask { id: id.to_string() }),
        _ => Err(unexpected(&op, &shown())),
    }
}

/// One element of a results page reply: text, except the task's inputs.
#[derive(Clone, Copy)]
struct Part<'a>(&'a [u8]);

impl Part<'_> {
    fn bytes(&self) -> &[u8] {
        self.0
    }

    fn text(&self, id: &str) -> StoreResult<&str> {
        std::str::from_utf8(self.0)
            .map_err(|e| StoreError::corrupt(format!("task {id} results page"), e))
    }

    fn lossy(&self) -> String {
        String::from_utf8_lossy(self.0).into_owned()
    }
}

/// A layout 1 page: index, full JSON, ...; `None` if the reply is malformed.
fn full_page(id: &str, reply: &[Part<'_>]) -> Option<StoreResult<Vec<ItemResult>>> {
    if reply.len() % 2 != 0 {
        return None;
    }
    Some(
        reply
            .chunks_exact(2)
            .map(|pair| {
                let index = index(id, pair[0].text(id)?)?;
                let mut result: ItemResult =
                    codec::decode(format!("task {id} result {index}"), pair[1].text(id)?)?;
                result.count_kept_output();
                Ok(result)
            })
            .collect(),
    )
}

/// A layout 2 page: n, n worker number/id pairs, then index, value, the
/// task's input, ...; `None` if the reply is malformed.
fn compact_page(id: &str, reply: &[Part<'_>]) -> Option<StoreResult<Vec<ItemResult>>> {
    let (n, rest) = reply.split_first()?;
    let pairs = std::str::from_utf8(n.bytes())
        .ok()?
        .parse::<usize>()
        .ok()?
        .checked_mul(2)?;
    if rest.len() < pairs || (rest.len() - pairs) % 3 != 0 {
        return None;
    }
    let (named, entries) = rest.split_at(pairs);
    let workers: HashMap<String, String> = named
        .chunks_exact(2)
        .map(|pair| (pair[0].lossy(), pair[1].lossy()))
        .collect();
    Some(
        entries
            .chunks_exact(3)
            .map(|entry| {
                let index = index(id, entry[0].text(id)?)?;
                codec::decode_compact(id, index, entry[1].text(id)?, entry[2].bytes(), &workers)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_gets_exactly_the_status_changes_the_model_rule_makes() {
        let expected = [
            "6",
            "INPROGRESS",
            "none",
            "none",
            "COMPLETED",
            "INPROGRESS",
            "none",
            "success",
            "REDUCING",
            "INPROGRESS",
            "none",
            "always",
            "REDUCING",
            "INPROGRESS",
            "some",
            "none",
            "FAILED",
            "INPROGRESS",
            "some",
            "success",
            "FAILED",
            "INPROGRESS",
            "some",
            "always",
            "REDUCING",
        ];
        assert_eq!(*LAST_SHARD_RULE, expected.map(String::from));
    }
}
