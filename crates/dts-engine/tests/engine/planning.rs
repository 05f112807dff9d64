//! Planning: how a task is split into shards, and that every item runs once.

use crate::harness::*;
use dts_model::{ShardRange, TaskStatus};
use std::collections::BTreeMap;

fn ranges(lens: &[u64]) -> Vec<ShardRange> {
    let mut start = 0;
    lens.iter()
        .map(|&len| {
            let range = ShardRange { start, len };
            start += len;
            range
        })
        .collect()
}

/// How many times each (index) of `id` was started.
fn starts_per_index(h: &Harness, id: &str) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for start in h.starts_of(id) {
        *counts.entry(start.index).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(start_paused = true)]
async fn a_task_is_split_into_guided_shards_that_shrink_to_single_items_and_every_item_runs_once() {
    let h = Harness::new().workers(&[4, 4, 4]).start().await;
    let task = h.submit(task_of(60, "1s")).await;

    let ended = h.wait_until_ended(&task.id).await;

    // 12 live cores, 2 shards each in the first round: every shard takes
    // the items left ÷ 24, rounded up, down to single items at the end.
    let mut lens = vec![3, 3, 3, 3];
    lens.extend([2; 12]);
    lens.extend([1; 24]);
    assert_eq!(h.plan(&task.id).await, ranges(&lens));
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.chunks_to_execute, 40);
    assert_eq!(ended.chunks_executed, 40);
    assert_eq!((ended.items_succeeded, ended.items_failed), (60, 0));
    let counts = starts_per_index(&h, &task.id);
    assert_eq!(counts.len(), 60, "every item started");
    assert!(
        counts.values().all(|&n| n == 1),
        "each item started once: {counts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_oversplit_setting_decides_the_shards_per_core_in_the_first_round() {
    let h = Harness::new().workers(&[10]).oversplit(1).start().await;
    let task = h.submit(task_of(30, "1s")).await;

    h.wait_until_ended(&task.id).await;

    // One shard per core in the first round: items left ÷ 10.
    let mut lens = vec![3, 3, 3, 3, 2, 2, 2, 2];
    lens.extend([1; 10]);
    assert_eq!(h.plan(&task.id).await, ranges(&lens));
}

#[tokio::test(start_paused = true)]
async fn a_task_planned_before_its_workers_joined_is_planned_for_eight_slots() {
    let mut h = Harness::new().workers(&[]).start().await;
    let task = h.submit(task_of(32, "1s")).await;
    h.run_until(
        |s| s.task(&task.id).chunks_to_execute > 0,
        "the task to be planned",
    )
    .await;
    h.add_worker(4).await;
    h.add_worker(4).await;

    let ended = h.wait_until_ended(&task.id).await;

    // No live core: planned as for 8 slots, 2 shards each (items left ÷ 16),
    // so the workers that join share it.
    let mut lens = vec![2; 8];
    lens.extend([1; 16]);
    assert_eq!(h.plan(&task.id).await, ranges(&lens));
    assert_eq!(ended.items_succeeded, 32);
    let workers: std::collections::BTreeSet<String> = h
        .starts_of(&task.id)
        .into_iter()
        .map(|s| s.worker)
        .collect();
    assert_eq!(workers.len(), 2, "both workers ran items");
}

#[tokio::test(start_paused = true)]
async fn a_task_with_fewer_items_than_cores_gets_one_shard_per_item() {
    let h = Harness::new().workers(&[4, 4]).start().await;
    let task = h.submit(task_of(3, "1s")).await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(h.plan(&task.id).await, ranges(&[1, 1, 1]));
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.items_succeeded, 3);
}

#[tokio::test(start_paused = true)]
async fn an_empty_input_list_completes_at_once_with_no_shards_and_no_item_run() {
    let h = Harness::new().workers(&[2]).start().await;
    let task = h.submit(task(&[])).await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.items_total, 0);
    assert_eq!((ended.chunks_to_execute, ended.chunks_executed), (0, 0));
    assert!(h.plan(&task.id).await.is_empty());
    assert!(h.starts().is_empty());
    let state = h
        .run_until(|s| !s.events.is_empty(), "the completion event")
        .await;
    assert_eq!(state.events.len(), 1);
    assert_eq!(state.events[0].status, TaskStatus::Completed);
    assert_eq!(state.events[0].items_total, 0);
}

#[tokio::test(start_paused = true)]
async fn a_single_item_task_is_one_shard_whose_item_runs_once_with_its_output_stored() {
    let h = Harness::new().workers(&[2]).start().await;
    let task = h.submit(task(&["2s out=hello"])).await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(h.plan(&task.id).await, ranges(&[1]));
    assert_eq!(ended.status, TaskStatus::Completed);
    let results = h.results(&task.id).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].exit_code, Some(0));
    assert_eq!(results[0].stdout, "hello");
    assert_eq!(results[0].attempt, 1);
    assert_eq!(results[0].duration_ms, 2000);
    assert_eq!(results[0].worker, h.worker_id(0));
}

#[tokio::test(start_paused = true)]
async fn items_on_one_core_run_one_after_another_in_simulated_time() {
    let h = Harness::new().workers(&[1]).start().await;
    let task = h.submit(task_of(6, "10s")).await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.items_succeeded, 6);
    let mut starts: Vec<u64> = h.starts_of(&task.id).iter().map(|s| s.at_ms).collect();
    starts.sort_unstable();
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] >= 10_000,
            "one core runs one item at a time: starts at {starts:?}"
        );
    }
    let took = ended.finished_at.unwrap_or(0) - ended.created_at;
    assert!(
        (60_000..65_000).contains(&took),
        "six 10 s items on one core take about 60 s, took {took} ms"
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_message_delivered_again_after_the_task_ended_runs_nothing_again() {
    let h = Harness::new().workers(&[2]).start().await;
    let task = h.submit(task_of(4, "1s")).await;
    let ended = h.wait_until_ended(&task.id).await;

    h.republish(&task.id).await;
    h.idle(std::time::Duration::from_secs(30)).await;

    assert_eq!(h.starts_of(&task.id).len(), 4);
    assert_eq!(h.task(&task.id).await, ended);
}
