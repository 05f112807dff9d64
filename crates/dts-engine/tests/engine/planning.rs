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
async fn a_task_is_split_into_two_shards_per_live_core_and_every_item_runs_once() {
    let h = Harness::new().workers(&[1, 4]).start().await;
    let task = h.submit(task_of(25, "1s")).await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(
        h.plan(&task.id).await,
        ranges(&[3, 3, 3, 3, 3, 2, 2, 2, 2, 2])
    );
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.chunks_to_execute, 10);
    assert_eq!(ended.chunks_executed, 10);
    assert_eq!((ended.items_succeeded, ended.items_failed), (25, 0));
    let counts = starts_per_index(&h, &task.id);
    assert_eq!(counts.len(), 25, "every item started");
    assert!(
        counts.values().all(|&n| n == 1),
        "each item started once: {counts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_oversplit_setting_decides_the_shards_per_core() {
    let h = Harness::new().workers(&[3]).oversplit(1).start().await;
    let task = h.submit(task_of(10, "1s")).await;

    h.wait_until_ended(&task.id).await;

    assert_eq!(h.plan(&task.id).await, ranges(&[4, 3, 3]));
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
