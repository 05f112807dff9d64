//! A task's `halt` (GNU parallel's `--halt`): the write that counts the
//! failure reaching it ends the task `FAILED`, in the same atomic step.

use crate::helpers::*;
use dts_model::{Halt, ItemResult, Task, TaskStatus, now_millis};
use dts_store::DynStore;

/// A stored, planned task of `items` items in `shards` shards that halts
/// as `halt` says (`now,fail=1`).
async fn halting(store: &DynStore, items: u64, shards: u64, halt: &str) -> Task {
    let mut task = task_with(&dts_model::new_task_id(), now_millis(), items as usize);
    task.halt = Halt::parse(halt).unwrap();
    store
        .insert_task(&task, &inputs(items as usize))
        .await
        .unwrap();
    plan_evenly(store, &task, items, shards).await
}

async fn read(store: &DynStore, id: &str) -> Task {
    store.task(id).await.unwrap().unwrap()
}

pub async fn the_failure_that_reaches_a_halt_ends_the_task_failed_naming_it(store: DynStore) {
    let task = halting(&store, 6, 3, "now,fail=1").await;
    assert_eq!(task.halt, Some(Halt::count(true, 1)));
    let status = store
        .record_shard_results(&task.id, 0, &[ok(0)])
        .await
        .unwrap();
    assert_eq!(status, TaskStatus::InProgress);
    let status = store
        .record_shard_results(&task.id, 0, &[failed(1)])
        .await
        .unwrap();
    assert_eq!(status, TaskStatus::Failed);
    let ended = read(&store, &task.id).await;
    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!(
        ended.error.as_deref(),
        Some("halted: 1 item failed (halt now,fail=1)")
    );
    assert!(ended.finished_at.is_some());
    assert_eq!((ended.items_succeeded, ended.items_failed), (1, 1));
    assert_eq!(ended.chunks_executed, 0);
    // A running item that ends after the halt still has its result counted;
    // the task stays as the halt left it.
    let status = store
        .record_shard_results(&task.id, 1, &[failed(2)])
        .await
        .unwrap();
    assert_eq!(status, TaskStatus::Failed);
    let later = read(&store, &task.id).await;
    assert_eq!((later.items_failed, later.error), (2, ended.error));
    assert!(store.runnable_tasks(10).await.unwrap().is_empty());
}

pub async fn a_halt_reached_by_a_shards_completion_finishes_the_task(store: DynStore) {
    let task = halting(&store, 4, 2, "soon,fail=2").await;
    let done = store
        .complete_shard(&task.id, 0, &[ok(0), failed(1)])
        .await
        .unwrap();
    assert!(!done.finished_task);
    assert_eq!(done.task.status, TaskStatus::InProgress);
    let done = store
        .complete_shard(&task.id, 1, &[failed(2), ok(3)])
        .await
        .unwrap();
    assert!(done.finished_task);
    assert_eq!(done.task.status, TaskStatus::Failed);
    assert_eq!(
        done.task.error.as_deref(),
        Some("halted: 2 items failed (halt soon,fail=2)")
    );
    assert_eq!(read(&store, &task.id).await, done.task);
}

pub async fn a_percentage_halt_counts_against_all_the_items(store: DynStore) {
    // 25% of 10 items: 2.5, so the third failure halts.
    let task = halting(&store, 10, 1, "soon,fail=25%").await;
    for index in 0..2 {
        let status = store
            .record_shard_results(&task.id, 0, &[failed(index)])
            .await
            .unwrap();
        assert_eq!(
            status,
            TaskStatus::InProgress,
            "after {} failures",
            index + 1
        );
    }
    let status = store
        .record_shard_results(&task.id, 0, &[failed(2)])
        .await
        .unwrap();
    assert_eq!(status, TaskStatus::Failed);
    assert_eq!(
        read(&store, &task.id).await.error.as_deref(),
        Some("halted: 3 items failed (halt soon,fail=25%)")
    );
}

pub async fn two_workers_recording_a_failure_each_at_once_reach_a_halt_of_two(store: DynStore) {
    for _ in 0..8 {
        let task = halting(&store, 4, 2, "now,fail=2").await;
        let (first, second) = ([failed(0)], [failed(2)]);
        let (a, b) = tokio::join!(
            store.record_shard_results(&task.id, 0, &first),
            store.record_shard_results(&task.id, 1, &second),
        );
        let statuses = [a.unwrap(), b.unwrap()];
        // Whichever write came second counted the second failure and halted.
        assert!(statuses.contains(&TaskStatus::Failed), "{statuses:?}");
        let ended = read(&store, &task.id).await;
        assert_eq!(ended.status, TaskStatus::Failed);
        assert_eq!(ended.items_failed, 2);
    }
}

pub async fn a_halted_task_retries_the_items_that_failed_or_never_ran(store: DynStore) {
    let task = halting(&store, 6, 3, "now,fail=1").await;
    store
        .record_shard_results(&task.id, 0, &[ok(0), failed(1)])
        .await
        .unwrap();
    let retried = store.retry_task(&task.id).await.unwrap();
    assert_eq!((retried.failed, retried.not_run), (1, 4));
    assert_eq!(retried.task.status, TaskStatus::InProgress);
    assert_eq!(
        (retried.task.items_succeeded, retried.task.items_failed),
        (1, 0)
    );
    assert_eq!(retried.task.error, None);
    // The retry keeps the halt: the next failure halts it again.
    let items: Vec<ItemResult> = vec![failed(3)];
    let status = store
        .record_shard_results(&task.id, 1, &items)
        .await
        .unwrap();
    assert_eq!(status, TaskStatus::Failed);
}

pub async fn a_halt_of_a_task_that_ended_otherwise_changes_nothing(store: DynStore) {
    let task = halting(&store, 4, 2, "now,fail=1").await;
    let cancelled = store
        .transition(&task.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    let status = store
        .record_shard_results(&task.id, 0, &[failed(0)])
        .await
        .unwrap();
    assert_eq!(status, TaskStatus::Cancelled);
    let after = read(&store, &task.id).await;
    assert_eq!((after.status, after.error), (TaskStatus::Cancelled, None));
    assert_eq!(after.finished_at, cancelled.finished_at);
}
