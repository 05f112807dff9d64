//! Contract: recording item results and completing shards, idempotently.

use crate::helpers::*;
use dts_model::reduce::ReduceStep;
use dts_model::{Bytes, ItemFailures, ItemResult, ReduceWhen, Task, TaskStatus, now_millis};
use dts_store::{DynStore, ResultFilter, StoreError};
use std::sync::Arc;

pub(crate) async fn recording_an_item_twice_counts_it_once(store: DynStore) {
    let task = planned(&store, 5, 1).await;
    let status = store
        .record_results(&task.id, &[ok(0), ok(1), failed(2)])
        .await
        .unwrap();
    assert_eq!(status, TaskStatus::InProgress);
    let counts = |t: Task| (t.items_succeeded, t.items_failed);
    assert_eq!(counts(store.task(&task.id).await.unwrap().unwrap()), (2, 1));

    store
        .record_results(&task.id, &[ok(0), failed(2)])
        .await
        .unwrap();
    assert_eq!(counts(store.task(&task.id).await.unwrap().unwrap()), (2, 1));

    // The same item twice in one batch counts once too.
    store
        .record_results(&task.id, &[ok(3), ok(3)])
        .await
        .unwrap();
    assert_eq!(counts(store.task(&task.id).await.unwrap().unwrap()), (3, 1));
    assert_eq!(
        store
            .results(&task.id, ResultFilter::All, 0, 100)
            .await
            .unwrap()
            .0,
        4
    );
}

pub(crate) async fn an_item_recorded_again_moves_its_count_across(store: DynStore) {
    let task = planned(&store, 3, 1).await;
    let counts = || async {
        let t = store.task(&task.id).await.unwrap().unwrap();
        (t.items_succeeded, t.items_failed)
    };
    store
        .record_results(&task.id, &[failed(0), ok(1)])
        .await
        .unwrap();
    assert_eq!(counts().await, (1, 1));

    let retried = ItemResult {
        attempt: 2,
        worker: "worker-b".into(),
        ..ok(0)
    };
    store
        .record_results(&task.id, std::slice::from_ref(&retried))
        .await
        .unwrap();
    assert_eq!(
        counts().await,
        (2, 0),
        "failed -> succeeded moves one count across"
    );
    let (_, page) = store
        .results(&task.id, ResultFilter::All, 0, 1)
        .await
        .unwrap();
    assert_eq!(page, vec![retried], "the latest attempt wins");

    let timed_out = ItemResult {
        timed_out: true,
        attempt: 3,
        ..ok(0)
    };
    store.record_results(&task.id, &[timed_out]).await.unwrap();
    assert_eq!(counts().await, (1, 1), "succeeded -> failed moves it back");
}

pub(crate) async fn recording_results_reports_a_cancellation(store: DynStore) {
    let task = planned(&store, 4, 2).await;
    store
        .transition(&task.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    let status = store.record_results(&task.id, &[ok(0)]).await.unwrap();
    assert_eq!(status, TaskStatus::Cancelled);
    assert_eq!(
        store.recorded_indices(&task.id, 0, 4).await.unwrap(),
        vec![0]
    );
}

pub(crate) async fn redelivered_completions_of_one_shard_count_it_once(store: DynStore) {
    let task = planned(&store, 20, 2).await;
    let shard: Vec<ItemResult> = (0..10)
        .map(|i| if i == 4 { failed(i) } else { ok(i) })
        .collect();
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (store, id, shard) = (Arc::clone(&store), task.id.clone(), shard.clone());
            tokio::spawn(async move { store.complete_shard(&id, 0, &shard).await })
        })
        .collect();
    let mut newly = 0;
    for call in calls {
        let done = call.await.unwrap().unwrap();
        assert!(!done.finished_task);
        newly += usize::from(done.newly_completed);
    }
    assert_eq!(newly, 1, "exactly one call completes the shard");
    let after = store.task(&task.id).await.unwrap().unwrap();
    assert_eq!(after.status, TaskStatus::InProgress);
    assert_eq!(
        (
            after.chunks_executed,
            after.items_succeeded,
            after.items_failed
        ),
        (1, 9, 1)
    );
    assert_eq!(store.completed_shards(&task.id).await.unwrap(), vec![0]);
}

/// Completes every shard of a planned task twice, all at once; returns the
/// task as stored after and how many calls reported finishing it.
pub(crate) async fn complete_all_concurrently(
    store: &DynStore,
    task: &Task,
    fails: impl Fn(u64) -> bool,
) -> (Task, usize) {
    let plan = even_plan(task.items_total, u64::from(task.chunks_to_execute));
    let mut calls = Vec::new();
    for _delivery in 0..2 {
        for (shard, range) in plan.iter().enumerate() {
            let results: Vec<ItemResult> = (range.start..range.end())
                .map(|i| if fails(i) { failed(i) } else { ok(i) })
                .collect();
            let (store, id) = (Arc::clone(store), task.id.clone());
            calls.push(tokio::spawn(async move {
                store.complete_shard(&id, shard as u32, &results).await
            }));
        }
    }
    let mut finished = 0;
    let mut newly = 0;
    for call in calls {
        let done = call.await.unwrap().unwrap();
        finished += usize::from(done.finished_task);
        newly += usize::from(done.newly_completed);
        if done.finished_task {
            assert!(done.task.status.is_terminal() && done.task.finished_at.is_some());
        }
    }
    assert_eq!(newly, plan.len(), "each shard is newly completed once");
    let all: Vec<u32> = (0..plan.len() as u32).collect();
    assert_eq!(store.completed_shards(&task.id).await.unwrap(), all);
    (store.task(&task.id).await.unwrap().unwrap(), finished)
}

pub(crate) async fn concurrent_shard_completions_complete_the_task_exactly_once(store: DynStore) {
    let task = planned(&store, 200, 8).await;
    let (after, finished) = complete_all_concurrently(&store, &task, |_| false).await;
    assert_eq!(finished, 1, "exactly one caller finishes the task");
    assert_eq!(after.status, TaskStatus::Completed);
    assert_eq!(
        (
            after.chunks_executed,
            after.items_succeeded,
            after.items_failed
        ),
        (8, 200, 0)
    );
    assert!(after.finished_at.is_some());
    assert_eq!(
        store
            .results(&task.id, ResultFilter::All, 0, 0)
            .await
            .unwrap()
            .0,
        200
    );
}

pub(crate) async fn a_failed_item_makes_the_finished_task_failed(store: DynStore) {
    let task = planned(&store, 200, 8).await;
    let (after, finished) = complete_all_concurrently(&store, &task, |i| i % 50 == 7).await;
    assert_eq!(finished, 1);
    assert_eq!(after.status, TaskStatus::Failed);
    assert_eq!(
        (
            after.chunks_executed,
            after.items_succeeded,
            after.items_failed
        ),
        (8, 196, 4)
    );
    let (total, failed_page) = store
        .results(&task.id, ResultFilter::Failed, 0, 10)
        .await
        .unwrap();
    assert_eq!((total, indices(&failed_page)), (4, vec![7, 57, 107, 157]));
}

pub(crate) async fn completing_the_last_shard_of_a_cancelled_task_keeps_it_cancelled(
    store: DynStore,
) {
    let task = planned(&store, 2, 1).await;
    let cancelled = store
        .transition(&task.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    let done = store
        .complete_shard(&task.id, 0, &[ok(0), ok(1)])
        .await
        .unwrap();
    assert!(done.newly_completed);
    assert!(!done.finished_task);
    assert_eq!(done.task.status, TaskStatus::Cancelled);
    assert_eq!(
        done.task.finished_at, cancelled.finished_at,
        "finishedAt stays the cancel time"
    );
    assert_eq!(
        (done.task.chunks_executed, done.task.items_succeeded),
        (1, 2)
    );
    assert_eq!(store.task(&task.id).await.unwrap(), Some(done.task));
}

pub(crate) async fn completing_a_shard_the_plan_does_not_have_is_refused_and_records_nothing(
    store: DynStore,
) {
    let task = planned(&store, 4, 2).await;
    assert!(matches!(
        store.complete_shard(&task.id, 2, &[ok(0)]).await,
        Err(StoreError::NoSuchShard {
            shard: 2,
            planned: 2,
            ..
        })
    ));
    assert_eq!(store.task(&task.id).await.unwrap(), Some(task.clone()));
    assert!(
        store
            .recorded_indices(&task.id, 0, 4)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.completed_shards(&task.id).await.unwrap().is_empty());

    let unplanned = insert(&store, 4).await;
    assert!(matches!(
        store.complete_shard(&unplanned.id, 0, &[ok(0)]).await,
        Err(StoreError::NoSuchShard { planned: 0, .. })
    ));
    assert_eq!(
        store.task(&unplanned.id).await.unwrap(),
        Some(unplanned.clone())
    );
}

pub(crate) async fn results_page_in_index_order_with_a_filter_and_its_total(store: DynStore) {
    let task = planned(&store, 10, 1).await;
    let result = |i: u64| {
        let mut r = if i % 3 == 0 { failed(i) } else { ok(i) };
        r.stdout = format!("line \"{i}\"\n✓ émoji 😀 \u{0}\ttab").into();
        r.signal = (i == 9).then_some(9);
        r.stdout_truncated = i == 1;
        r.stdout_bytes = r.stdout.len() as u64 + if i == 1 { 1000 } else { 0 };
        r.error = (i == 6).then(|| "could not start: permission denied".to_string());
        r
    };
    // Recorded out of order, in two batches.
    store
        .record_results(&task.id, &[7, 2, 9, 0, 5].map(result))
        .await
        .unwrap();
    store
        .record_results(&task.id, &[1, 8, 3, 6, 4].map(result))
        .await
        .unwrap();

    let (total, all) = store
        .results(&task.id, ResultFilter::All, 0, 100)
        .await
        .unwrap();
    assert_eq!(total, 10);
    assert_eq!(
        all,
        (0..10).map(result).collect::<Vec<_>>(),
        "every field reads back"
    );

    let page = |filter, offset, limit| {
        let store = Arc::clone(&store);
        let id = task.id.clone();
        async move {
            let (total, page) = store.results(&id, filter, offset, limit).await.unwrap();
            (total, indices(&page))
        }
    };
    assert_eq!(page(ResultFilter::All, 8, 5).await, (10, vec![8, 9]));
    assert_eq!(page(ResultFilter::All, 3, 2).await, (10, vec![3, 4]));
    assert_eq!(
        page(ResultFilter::Failed, 0, 100).await,
        (4, vec![0, 3, 6, 9])
    );
    assert_eq!(page(ResultFilter::Failed, 1, 2).await, (4, vec![3, 6]));
    assert_eq!(
        page(ResultFilter::Succeeded, 0, 3).await,
        (6, vec![1, 2, 4])
    );
    assert_eq!(page(ResultFilter::Succeeded, 5, 3).await, (6, vec![8]));
    assert_eq!(page(ResultFilter::All, 10, 5).await, (10, vec![]));
    assert_eq!(page(ResultFilter::All, 0, 0).await, (10, vec![]));

    let other = planned(&store, 3, 1).await;
    assert_eq!(
        store
            .results(&other.id, ResultFilter::All, 0, 10)
            .await
            .unwrap(),
        (0, vec![])
    );
}

pub(crate) async fn recorded_indices_are_those_in_the_range_ascending(store: DynStore) {
    let task = planned(&store, 20, 2).await;
    store
        .record_results(&task.id, &[ok(11), failed(5), ok(2), ok(7)])
        .await
        .unwrap();
    assert_eq!(
        store.recorded_indices(&task.id, 0, 20).await.unwrap(),
        vec![2, 5, 7, 11]
    );
    assert_eq!(
        store.recorded_indices(&task.id, 3, 11).await.unwrap(),
        vec![5, 7],
        "end is exclusive"
    );
    assert_eq!(
        store.recorded_indices(&task.id, 5, 6).await.unwrap(),
        vec![5]
    );
    assert!(
        store
            .recorded_indices(&task.id, 12, 20)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .recorded_indices(&task.id, 7, 7)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Both stores end a task on its last shard exactly as dts-model's rule
/// says, case by case, with and without a reduce: the Redis store applies
/// the rule inside a script, so this is what keeps the two from drifting.
pub(crate) async fn the_last_shard_ends_a_task_as_the_model_rule_says_in_every_case(
    store: DynStore,
) {
    use TaskStatus::*;
    let reduces = [
        None,
        Some(reduce_when(ReduceWhen::Success)),
        Some(reduce_when(ReduceWhen::Always)),
    ];
    // A planned task can be in these when its last shard completes: still
    // running, cancelled, failed by its deadline, (ended by hand)
    // completed, or (moved by hand) reducing.
    for before in [InProgress, Cancelled, Failed, Completed, Reducing] {
        for failures in ItemFailures::ALL {
            for reduce in &reduces {
                let mut task = task_with(&dts_model::new_task_id(), now_millis(), 2);
                task.reduce = reduce.clone();
                store.insert_task(&task, &inputs(2)).await.unwrap();
                plan_evenly(&store, &task, 2, 1).await;
                if before != InProgress {
                    store.transition(&task.id, before, None).await.unwrap();
                }
                let (second, items_failed) = match failures {
                    ItemFailures::None => (ok(1), 0),
                    ItemFailures::Some => (failed(1), 1),
                };
                let done = store
                    .complete_shard(&task.id, 0, &[ok(0), second])
                    .await
                    .unwrap();
                let step = ReduceStep::of(reduce.as_ref(), items_failed);
                let expected = before.after_last_shard(failures, step);
                let when = reduce.as_ref().map(|r| r.when);
                let case = format!("{before} with {failures:?} failed and reduce {when:?}");
                assert_eq!(done.task.status, expected, "{case}");
                assert_eq!(
                    done.finished_task,
                    expected != before && expected.is_terminal(),
                    "{case}"
                );
                assert_eq!(
                    store.task(&task.id).await.unwrap().map(|t| t.status),
                    Some(expected),
                    "{case}"
                );
            }
        }
    }
}

/// Reads `filter`'s page `offset..offset + limit` as (total, indices).
async fn page_of(
    store: &DynStore,
    id: &str,
    filter: ResultFilter,
    offset: u64,
    limit: u64,
) -> (u64, Vec<u64>) {
    let (total, page) = store.results(id, filter, offset, limit).await.unwrap();
    (total, indices(&page))
}

/// Results are kept in groups of 128 by some stores: indices on both sides
/// of 128 and 256 page, filter and list as if there were no groups.
pub(crate) async fn results_on_both_sides_of_128_page_and_filter_as_one_sequence(store: DynStore) {
    let task = planned(&store, 300, 1).await;
    let failing = [127, 128, 256];
    let recorded: Vec<u64> = (0..130).chain([255, 256, 257, 299]).collect();
    let result = |i: u64| {
        if failing.contains(&i) {
            failed(i)
        } else {
            ok(i)
        }
    };
    // Newest indices first, in batches that each span several groups.
    for batch in recorded
        .iter()
        .rev()
        .copied()
        .collect::<Vec<_>>()
        .chunks(50)
    {
        let batch: Vec<ItemResult> = batch.iter().map(|&i| result(i)).collect();
        store.record_results(&task.id, &batch).await.unwrap();
    }
    let id = &task.id;

    let (total, all) = store.results(id, ResultFilter::All, 0, 1000).await.unwrap();
    assert_eq!(total, 134);
    assert_eq!(all, recorded.iter().map(|&i| result(i)).collect::<Vec<_>>());
    assert_eq!(
        page_of(&store, id, ResultFilter::All, 126, 5).await,
        (134, vec![126, 127, 128, 129, 255])
    );
    assert_eq!(
        page_of(&store, id, ResultFilter::All, 130, 10).await,
        (134, vec![255, 256, 257, 299])
    );
    assert_eq!(
        page_of(&store, id, ResultFilter::Failed, 0, 10).await,
        (3, vec![127, 128, 256])
    );
    assert_eq!(
        page_of(&store, id, ResultFilter::Failed, 1, 2).await,
        (3, vec![128, 256])
    );
    // Succeeded: 0..=126, 129, 255, 257, 299.
    assert_eq!(
        page_of(&store, id, ResultFilter::Succeeded, 125, 4).await,
        (131, vec![125, 126, 129, 255])
    );
    assert_eq!(
        page_of(&store, id, ResultFilter::Succeeded, 129, 10).await,
        (131, vec![257, 299])
    );
    assert_eq!(
        store.recorded_indices(id, 127, 130).await.unwrap(),
        vec![127, 128, 129]
    );
    assert_eq!(
        store.recorded_indices(id, 129, 300).await.unwrap(),
        vec![129, 255, 256, 257, 299]
    );
    assert!(
        store
            .recorded_indices(id, 130, 255)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.recorded_indices(id, 256, u64::MAX).await.unwrap(),
        vec![256, 257, 299],
        "a range far past the last result ends at it"
    );

    // Failing 129 and passing 128 again moves them between the filters.
    store
        .record_results(id, &[ok(128), failed(129)])
        .await
        .unwrap();
    assert_eq!(
        page_of(&store, id, ResultFilter::Failed, 0, 10).await,
        (3, vec![127, 129, 256])
    );
    assert_eq!(
        page_of(&store, id, ResultFilter::Succeeded, 126, 3).await,
        (131, vec![126, 128, 255])
    );
    let after = store.task(id).await.unwrap().unwrap();
    assert_eq!((after.items_succeeded, after.items_failed), (131, 3));
}

pub(crate) async fn a_task_with_exactly_128_results_pages_to_its_end_and_no_further(
    store: DynStore,
) {
    let task = planned(&store, 128, 1).await;
    let results: Vec<ItemResult> = (0..128).map(ok).collect();
    store.complete_shard(&task.id, 0, &results).await.unwrap();
    let id = &task.id;
    assert_eq!(
        store.results(id, ResultFilter::All, 0, 200).await.unwrap(),
        (128, results)
    );
    assert_eq!(
        page_of(&store, id, ResultFilter::All, 126, 5).await,
        (128, vec![126, 127])
    );
    assert_eq!(
        page_of(&store, id, ResultFilter::All, 128, 5).await,
        (128, vec![])
    );
    assert_eq!(
        page_of(&store, id, ResultFilter::Succeeded, 127, 1).await,
        (128, vec![127])
    );
    assert_eq!(
        page_of(&store, id, ResultFilter::Failed, 0, 5).await,
        (0, vec![])
    );
    assert_eq!(
        store.recorded_indices(id, 0, 128).await.unwrap(),
        (0..128).collect::<Vec<u64>>()
    );
}

/// Some stores count results per 16,384 items: a page that starts in one
/// such group and ends in the next reads on without a gap.
pub(crate) async fn results_on_both_sides_of_16384_page_as_one_sequence(store: DynStore) {
    let task = planned(&store, 16_500, 1).await;
    let id = &task.id;
    store
        .record_results(id, &[ok(16_384), failed(16_383), ok(0), failed(16_499)])
        .await
        .unwrap();
    assert_eq!(
        page_of(&store, id, ResultFilter::All, 1, 2).await,
        (4, vec![16_383, 16_384])
    );
    assert_eq!(
        page_of(&store, id, ResultFilter::All, 3, 2).await,
        (4, vec![16_499])
    );
    assert_eq!(
        page_of(&store, id, ResultFilter::Succeeded, 1, 5).await,
        (2, vec![16_384])
    );
    assert_eq!(
        page_of(&store, id, ResultFilter::Failed, 0, 5).await,
        (2, vec![16_383, 16_499])
    );
    assert_eq!(
        store.recorded_indices(id, 16_000, 16_500).await.unwrap(),
        vec![16_383, 16_384, 16_499]
    );
}

/// Stores may leave out what a result usually holds and restore it on
/// reading: results with unusual values in every such field read back exactly.
pub(crate) async fn results_with_unusual_values_in_every_field_read_back_exactly(store: DynStore) {
    let task = planned(&store, 3, 1).await;
    let unusual = vec![
        ItemResult {
            input: "not the task's input \"/\\ ✓".into(),
            exit_code: None,
            signal: Some(9),
            timed_out: true,
            stdout: Bytes::default(),
            stderr: "e".into(),
            stdout_truncated: true,
            stderr_truncated: true,
            stdout_bytes: 70_000,
            stderr_bytes: 65_537,
            duration_ms: 0,
            worker: "1".to_string(),
            attempt: 0,
            error: Some(String::new()),
            ..ok(0)
        },
        ItemResult {
            input: Bytes::default(),
            worker: "id:worker-a".to_string(),
            attempt: 2,
            ..ok(1)
        },
        ItemResult {
            worker: String::new(),
            ..failed(2)
        },
        // An index past the task's inputs keeps the input it was recorded with.
        ItemResult {
            input: "beyond".into(),
            ..ok(7)
        },
    ];
    store.record_results(&task.id, &unusual).await.unwrap();
    assert_eq!(
        store
            .results(&task.id, ResultFilter::All, 0, 10)
            .await
            .unwrap(),
        (4, unusual)
    );
}

/// Output is bytes: what a script wrote comes back exactly, text or not
/// (`gzip -c` writes `\x1f\x8b\x08\x00`, Latin-1 text has `\xe9`), with how
/// much it wrote in all when the cap cut it.
pub(crate) async fn output_that_is_not_utf8_reads_back_byte_for_byte(store: DynStore) {
    let task = planned(&store, 4, 1).await;
    let with = |i: u64, stdout: &[u8], stderr: &[u8]| ItemResult {
        stdout: Bytes::from(stdout),
        stderr: Bytes::from(stderr),
        stdout_bytes: stdout.len() as u64,
        stderr_bytes: stderr.len() as u64,
        ..ok(i)
    };
    let written = vec![
        with(0, b"caf\xe9", b"\xff"),
        with(1, b"\x1f\x8b\x08\x00", b""),
        with(2, b"\x00", b"\x00\x00"),
        ItemResult {
            stdout_truncated: true,
            stdout_bytes: 588_895,
            ..with(3, b"\xe9t\xe9 cut h", b"")
        },
    ];
    store.record_results(&task.id, &written).await.unwrap();
    let (total, read) = store
        .results(&task.id, ResultFilter::All, 0, 10)
        .await
        .unwrap();
    assert_eq!(total, 4);
    let outputs: Vec<(&[u8], &[u8], u64)> = read
        .iter()
        .map(|r| (r.stdout.as_bytes(), r.stderr.as_bytes(), r.stdout_bytes))
        .collect();
    assert_eq!(
        outputs,
        [
            (&b"caf\xe9"[..], &b"\xff"[..], 4),
            (&b"\x1f\x8b\x08\x00"[..], &b""[..], 4),
            (&b"\x00"[..], &b"\x00\x00"[..], 1),
            (&b"\xe9t\xe9 cut h"[..], &b""[..], 588_895),
        ]
    );
    assert_eq!(read, written);
}
