//! Straggler speculation (docs/scheduling.md, "Stragglers"): once every
//! remaining item of a task runs, an idle slot runs a copy of a shard that
//! has run far longer than the task's items take; the first run to complete
//! the shard counts, the other is stopped, and every item has one result.
//! In simulated time, with one worker made slow through the fake runner.

use crate::harness::fake::Start;
use crate::harness::*;
use dts_model::{Bytes, ItemResult, NewTask, TaskStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The indices of `starts` that started more than once.
fn started_twice(starts: &[Start]) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    let mut twice = BTreeSet::new();
    for start in starts {
        if !seen.insert(start.index) {
            twice.insert(start.index);
        }
    }
    twice
}

/// Every index of a task of `total` items has exactly one result, with
/// exit 0; returns them by index.
fn one_result_each(results: &[ItemResult], total: u64) -> BTreeMap<u64, &ItemResult> {
    let by_index: BTreeMap<u64, &ItemResult> = results.iter().map(|r| (r.index, r)).collect();
    assert_eq!(results.len() as u64, total, "one result per item");
    assert_eq!(
        by_index.keys().copied().collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>(),
        "every index once"
    );
    for r in results {
        assert_eq!(r.exit_code, Some(0), "{r:?}");
    }
    by_index
}

/// Runs `task` on a worker of two cores and one of two cores ten times
/// slower; returns the task as it ended, its starts, its results, and the
/// two workers' ids (fast, slow).
async fn on_a_fast_and_a_slow_worker(
    task: NewTask,
) -> (dts_model::Task, Vec<Start>, Vec<ItemResult>, String, String) {
    let mut h = Harness::new().workers(&[2]).start().await;
    let slow = h.add_slow_worker(2, 10).await;
    let task = h.submit(task).await;
    let ended = h.wait_until_ended(&task.id).await;
    let results = h.results(&task.id).await;
    (
        ended,
        h.starts_of(&task.id),
        results,
        h.worker_id(0),
        h.worker_id(slow),
    )
}

#[tokio::test(start_paused = true)]
async fn copies_of_a_slow_workers_shards_finish_the_task_early_with_one_result_per_item() {
    let (on, on_starts, on_results, fast, slow) =
        on_a_fast_and_a_slow_worker(task_of(40, "1s")).await;
    let mut off_task = task_of(40, "1s");
    off_task.scheduling.speculation = false;
    let (off, off_starts, off_results, ..) = on_a_fast_and_a_slow_worker(off_task).await;

    for (task, results) in [(&on, &on_results), (&off, &off_results)] {
        assert_eq!(task.status, TaskStatus::Completed);
        assert_eq!((task.items_succeeded, task.items_failed), (40, 0));
        assert_eq!(task.chunks_executed, task.chunks_to_execute);
        one_result_each(results, 40);
    }
    assert!(
        started_twice(&off_starts).is_empty(),
        "\"speculation\": false never copies"
    );
    let copied = started_twice(&on_starts);
    assert!(!copied.is_empty(), "the slow worker's shards were copied");
    let by_index = one_result_each(&on_results, 40);
    let mut copies_won = 0;
    for index in &copied {
        let runs: Vec<&Start> = on_starts.iter().filter(|s| s.index == *index).collect();
        assert_eq!(runs.len(), 2, "one copy per item: {runs:?}");
        // The slow worker held the shard, the copy ran on the fast one (in
        // either order: a copy may reach an item before its holder does).
        let on = |worker: &str| runs.iter().find(|r| r.worker == worker).map(|r| r.at_ms);
        let (Some(held_at), Some(copy_at)) = (on(&slow), on(&fast)) else {
            panic!("one run on each worker: {runs:?}");
        };
        // Items take 1 s, ten times that on the slow worker: the run that
        // ends first is the one whose result counts.
        let (held_ends, copy_ends) = (held_at + 10_000, copy_at + 1_000);
        let first = if copy_ends < held_ends { &fast } else { &slow };
        assert_eq!(
            &by_index[index].worker, first,
            "the first run to finish counts: {runs:?}"
        );
        copies_won += usize::from(first == &fast);
    }
    assert!(copies_won > 0, "no copy finished first: {copied:?}");
    let took = |t: &dts_model::Task| t.finished_at.unwrap_or(0) - t.started_at.unwrap_or(0);
    eprintln!(
        "makespan with speculation {} ms, without {} ms",
        took(&on),
        took(&off)
    );
    assert!(
        took(&on) < took(&off),
        "copies end the task sooner: {} ms against {} ms",
        took(&on),
        took(&off)
    );
}

#[tokio::test(start_paused = true)]
async fn a_copy_that_loses_is_stopped_and_the_holders_result_counts() {
    let h = Harness::new().workers(&[1, 1]).start().await;
    // Nine quick items, then a long one: by the time it has run three
    // medians, the other worker is idle and copies it; the holder still
    // finishes first.
    let mut inputs = items(9, "1s");
    inputs.push("long 10s".to_string());
    let task = h
        .submit(NewTask {
            inputs: inputs.into_iter().map(Bytes::from).collect(),
            ..task(&[])
        })
        .await;
    let ended = h.wait_until_ended(&task.id).await;
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!((ended.items_succeeded, ended.items_failed), (10, 0));
    let results = h.results(&task.id).await;
    let by_index = one_result_each(&results, 10);

    let starts = h.starts_of(&task.id);
    assert_eq!(started_twice(&starts), BTreeSet::from([9]), "{starts:#?}");
    let long: Vec<&Start> = starts.iter().filter(|s| s.index == 9).collect();
    assert_ne!(
        long[0].worker, long[1].worker,
        "the copy ran on the other worker"
    );
    assert!(
        long[1].at_ms - long[0].at_ms >= 3_000,
        "not copied before three medians: {long:?}"
    );
    assert_eq!(
        by_index[&9].worker, long[0].worker,
        "the holder's result counts"
    );
    assert_eq!(by_index[&9].duration_ms, 10_000);

    // The losing copy was stopped: the copier's slot takes the next task's
    // item at once, long before the copy would have ended.
    let next = h.submit(task_of(2, "1s")).await;
    let next_ended = h.wait_until_ended(&next.id).await;
    let next_starts = h.starts_of(&next.id);
    let workers: BTreeSet<&str> = next_starts.iter().map(|s| s.worker.as_str()).collect();
    assert_eq!(workers.len(), 2, "both workers are free: {next_starts:?}");
    assert!(
        next_ended.finished_at.unwrap_or(u64::MAX) < ended.finished_at.unwrap_or(0) + 3_000,
        "the next task did not wait for the copy to run out"
    );
}

/// Seed 7 of the 60-minute soak (docs/reliability.md): a copy of a
/// straggling shard was still running its item when the holder failed it
/// and ended the task, and the task was retried at once. The copy ran on
/// into the retried run, beside its holder and its own copy, and its
/// result, of a run from before the retry, counted there. Now a retry
/// forgets the shard's copy: the old copy is stopped and its result
/// refused, and the retried run's result counts.
#[tokio::test(start_paused = true)]
async fn a_copy_running_when_its_task_is_retried_stops_and_its_result_does_not_count() {
    let h = Harness::new().workers(&[1, 1]).start().await;
    // The store answers the workers' status checks late, as it did in the
    // soak while Redis failed over: the copy does not hear that the task
    // ended before the retry reopens its shard.
    for worker in 0..2 {
        h.delay_status_checks(worker, Duration::from_secs(3));
    }
    // Nine quick items, then a long one whose first two starts fail: the
    // holder's, and the copy the idle worker makes of it.
    let mut inputs = items(9, "1s");
    inputs.push("long 10s fails=2".to_string());
    let task = h
        .submit(NewTask {
            inputs: inputs.into_iter().map(Bytes::from).collect(),
            ..task(&[])
        })
        .await;
    let failed = h.wait_until_ended(&task.id).await;
    assert_eq!(failed.status, TaskStatus::Failed);
    let before: Vec<Start> = h
        .starts_of(&task.id)
        .into_iter()
        .filter(|s| s.index == 9)
        .collect();
    assert_eq!(before.len(), 2, "the holder and its copy: {before:#?}");
    let retried_at = h.now_ms();
    assert!(
        before[1].at_ms + 10_000 > retried_at,
        "the copy still runs when the task is retried: {before:#?}"
    );
    h.retry(&task.id).await;
    let ended = h.wait_until_ended(&task.id).await;
    assert_eq!(
        ended.status,
        TaskStatus::Completed,
        "the retried run's start of item 9 succeeds; the old copy's failure does not count"
    );
    assert_eq!((ended.items_succeeded, ended.items_failed), (10, 0));
    let results = h.results(&task.id).await;
    let by_index = one_result_each(&results, 10);
    let after: Vec<Start> = h
        .starts_of(&task.id)
        .into_iter()
        .filter(|s| s.index == 9 && s.at_ms >= retried_at)
        .collect();
    assert!(
        (1..=2).contains(&after.len()),
        "the retried run's holder, and at most its own copy: {after:#?}"
    );
    assert_eq!(by_index[&9].duration_ms, 10_000);
    assert!(
        after.iter().any(|s| s.worker == by_index[&9].worker),
        "the result that counts is a run of the retried round: {after:#?}"
    );
}
