//! Recovery: a restarted embedded node, and the sweeper, finish what was
//! left unfinished, exactly once.

use crate::harness::*;
use dts_model::TaskStatus;
use dts_store::Store;
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn a_restarted_node_finishes_its_unfinished_task_running_each_item_once() {
    let mut h = Harness::new().workers(&[2]).start().await;
    let task = h.submit(task_of(10, "2s")).await;
    h.run_until(
        |s| s.task(&task.id).items_succeeded >= 4,
        "four items to be recorded",
    )
    .await;
    let recorded_before = h.results(&task.id).await;

    h.restart().await;
    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!((ended.items_succeeded, ended.items_failed), (10, 0));
    assert_eq!(ended.chunks_executed, ended.chunks_to_execute);
    let results = h.results(&task.id).await;
    assert_eq!(
        results.iter().map(|r| r.index).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    let mut per_index: BTreeMap<u64, usize> = BTreeMap::new();
    for start in h.starts_of(&task.id) {
        *per_index.entry(start.index).or_insert(0) += 1;
    }
    let twice: Vec<u64> = per_index
        .iter()
        .filter(|(_, n)| **n == 2)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        twice.len(),
        2,
        "the two items running at the restart ran again: {per_index:?}"
    );
    assert_eq!(per_index.values().filter(|&&n| n == 1).count(), 8);
    for before in &recorded_before {
        assert_eq!(
            per_index[&before.index], 1,
            "item {} ran again",
            before.index
        );
        assert_eq!(
            &results[before.index as usize], before,
            "item {}'s result changed",
            before.index
        );
    }
    for index in &twice {
        assert_eq!(results[*index as usize].worker, "w0.2", "item {index}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_stored_but_never_published_is_finished_after_a_restart() {
    let mut h = Harness::new().workers(&[1]).start().await;
    let task = h.store_unpublished(task_of(3, "1s")).await;
    h.idle(Duration::from_secs(20)).await;
    assert_eq!(h.task(&task.id).await.status, TaskStatus::Queued);
    assert!(h.starts().is_empty());

    h.restart().await;
    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.items_succeeded, 3);
    assert_eq!(h.starts_of(&task.id).len(), 3);
}

/// One worker, the sweeper every 30 s (republish-after stays 120 s).
async fn swept_every_30_s() -> Harness {
    Harness::new()
        .workers(&[1])
        .sweep_every(Duration::from_secs(30))
        .start()
        .await
}

/// The task's first item started at the first sweep after 120 s.
fn assert_first_start_at_the_first_sweep_after_120_s(h: &Harness, id: &str) {
    let first_start = h.starts_of(id).iter().map(|s| s.at_ms).min();
    assert!(
        first_start.is_some_and(|at| (120_000..=150_000).contains(&at)),
        "planned at the first sweep after 120 s; first start at {first_start:?} ms"
    );
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_republishes_a_task_whose_server_died_before_publishing_it() {
    let h = swept_every_30_s().await;
    let task = h.store_unpublished(task_of(3, "1s")).await;

    // Republished once it is older than republish-after (120 s), at a sweep.
    h.idle(Duration::from_secs(100)).await;
    assert_eq!(h.task(&task.id).await.status, TaskStatus::Queued);
    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.items_succeeded, 3);
    assert_first_start_at_the_first_sweep_after_120_s(&h, &task.id);
}

/// Found by the chaos soak (seed 5): a plan saved on the Redis primary just
/// before a Sentinel failover was lost with it, after the scheduler had
/// acknowledged the task's message; the task stayed `SUBMITTED` for good.
#[tokio::test(start_paused = true)]
async fn the_sweeper_republishes_a_task_left_submitted_whose_plan_was_lost() {
    let h = swept_every_30_s().await;
    // Published and acknowledged, but its plan is gone: what the new
    // primary holds after such a failover.
    let task = h.store_unpublished(task_of(3, "1s")).await;
    if let Err(e) = h
        .store()
        .transition(&task.id, TaskStatus::Submitted, None)
        .await
    {
        panic!("cannot mark task {} submitted: {e}", task.id);
    }

    h.idle(Duration::from_secs(100)).await;
    assert_eq!(h.task(&task.id).await.status, TaskStatus::Submitted);
    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.items_succeeded, 3);
    assert_eq!(h.starts_of(&task.id).len(), 3, "each item ran once");
    assert_first_start_at_the_first_sweep_after_120_s(&h, &task.id);
}
