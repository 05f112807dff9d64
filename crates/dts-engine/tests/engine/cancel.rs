//! Cancelling: running items stop, no item starts after, counts stay exact.

use crate::harness::*;
use dts_model::TaskStatus;
use dts_store::Store;
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn cancelling_stops_running_items_and_no_item_starts_after() {
    let h = Harness::new().workers(&[2]).start().await;
    let task = h.submit(task_of(10, "10s")).await;
    h.run_until(|s| s.starts_of(&task.id).len() == 2, "two items to start")
        .await;

    let cancelled = h.cancel(&task.id).await;
    h.idle(Duration::from_secs(120)).await;

    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    let task = h.task(&task.id).await;
    assert_eq!(task.status, TaskStatus::Cancelled);
    assert_eq!(
        h.starts_of(&task.id).len(),
        2,
        "no item started after the cancel"
    );
    assert_eq!((task.items_succeeded, task.items_failed), (0, 0));
    assert!(
        h.results(&task.id).await.is_empty(),
        "stopped items record nothing"
    );
    let state = h.state().await;
    assert!(
        state.live_workers.iter().all(|w| w.running_items == 0),
        "the worker runs nothing: {:?}",
        state.live_workers
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_keeps_the_results_of_items_that_had_finished() {
    let h = Harness::new().workers(&[1]).oversplit(1).start().await;
    let task = h.submit(task_of(10, "2s")).await;
    // Items end at 2 s and 4 s; the third runs from 4 s to 6 s.
    h.idle(Duration::from_secs(5)).await;

    h.cancel(&task.id).await;
    h.idle(Duration::from_secs(60)).await;

    let task = h.task(&task.id).await;
    assert_eq!(task.status, TaskStatus::Cancelled);
    assert_eq!((task.items_succeeded, task.items_failed), (2, 0));
    assert_eq!(h.starts_of(&task.id).len(), 3);
    let indices: Vec<u64> = h.results(&task.id).await.iter().map(|r| r.index).collect();
    assert_eq!(indices, vec![0, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_task_waiting_for_a_core_never_starts_an_item() {
    let h = Harness::new().workers(&[1]).start().await;
    let long = h.submit(task(&["30s"])).await;
    h.run_until(
        |s| s.starts_of(&long.id).len() == 1,
        "the long item to start",
    )
    .await;
    let queued = h.submit(task_of(3, "1s")).await;
    h.idle(Duration::from_secs(5)).await;

    h.cancel(&queued.id).await;
    let long_ended = h.wait_until_ended(&long.id).await;
    h.idle(Duration::from_secs(60)).await;

    assert_eq!(long_ended.status, TaskStatus::Completed);
    assert!(h.starts_of(&queued.id).is_empty());
    let queued = h.task(&queued.id).await;
    assert_eq!(queued.status, TaskStatus::Cancelled);
    assert_eq!((queued.items_succeeded, queued.items_failed), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn cancelling_an_ended_task_is_refused_and_changes_nothing() {
    let h = Harness::new().workers(&[1]).start().await;
    let task = h.submit(task(&["1s"])).await;
    let ended = h.wait_until_ended(&task.id).await;

    let refused = h
        .store()
        .transition(&task.id, TaskStatus::Cancelled, None)
        .await;

    assert!(
        refused.is_err(),
        "an ended task cannot be cancelled: {refused:?}"
    );
    assert_eq!(h.task(&task.id).await, ended);
}
