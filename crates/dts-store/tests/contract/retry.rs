//! Retrying an ended task: its failed and never-run items run again as
//! the same task, with exact counts and each item's earlier attempts kept.

use crate::helpers::*;
use dts_model::{ItemResult, PastAttempt, TaskStatus, now_millis};
use dts_store::{DynStore, ReadyClaim, ResultFilter, RetryRefusal, StoreError};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(60);

/// Item `index` failed with exit code 3 as attempt `attempt` on `worker`.
fn failed_as(index: u64, attempt: u32, worker: &str) -> ItemResult {
    ItemResult {
        attempt,
        worker: worker.to_string(),
        ..failed(index)
    }
}

/// A task of 10 items in 5 shards of 2 that ended `FAILED`: item 3 failed
/// as attempt 2 (its retry within the run failed too), item 7 as attempt 1.
async fn failed_task_of_ten(store: &DynStore) -> String {
    let task = planned(store, 10, 5).await;
    for shard in 0..5u64 {
        let results: Vec<ItemResult> = [shard * 2, shard * 2 + 1]
            .into_iter()
            .map(|index| match index {
                3 => failed_as(3, 2, "worker-a"),
                7 => failed_as(7, 1, "worker-b"),
                _ => ok(index),
            })
            .collect();
        store
            .complete_shard(&task.id, shard as u32, &results)
            .await
            .unwrap();
    }
    let ended = store.task(&task.id).await.unwrap().unwrap();
    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!((ended.items_succeeded, ended.items_failed), (8, 2));
    task.id
}

/// Claims the next ready shard of `id` and returns (shard, attempt, first).
async fn claim_next(store: &DynStore, id: &str) -> (u32, u32, bool) {
    match store
        .claim_ready_shard(id, "worker-c", LEASE, None)
        .await
        .unwrap()
    {
        ReadyClaim::Claimed {
            shard,
            attempt,
            first,
            ..
        } => (shard, attempt, first),
        other => panic!("expected a claim, got {other:?}"),
    }
}

pub(crate) async fn a_retry_moves_only_the_failed_results_into_history_and_queues_their_shards(
    store: DynStore,
) {
    let id = failed_task_of_ten(&store).await;
    let outcome = store.retry_task(&id).await.unwrap();
    assert_eq!(
        (
            outcome.failed,
            outcome.not_run,
            outcome.shards,
            outcome.queued()
        ),
        (2, 0, 2, 2)
    );
    let task = outcome.task;
    assert_eq!(task.status, TaskStatus::InProgress);
    assert_eq!((task.items_succeeded, task.items_failed), (8, 0));
    assert_eq!((task.chunks_to_execute, task.chunks_executed), (5, 3));
    assert_eq!(task.finished_at, None);
    assert_eq!(store.task(&id).await.unwrap().unwrap(), task);
    let (total, page) = store.results(&id, ResultFilter::All, 0, 100).await.unwrap();
    assert_eq!(total, 8);
    assert_eq!(indices(&page), [0, 1, 2, 4, 5, 6, 8, 9]);
    assert_eq!(
        store
            .results(&id, ResultFilter::Failed, 0, 100)
            .await
            .unwrap()
            .0,
        0
    );
    let history = store.attempt_history(&id, &[2, 3, 7]).await.unwrap();
    let past =
        |index, attempt, worker: &str| PastAttempt::of(&failed_as(index, 1, worker), attempt);
    assert_eq!(history.len(), 2);
    assert_eq!(history[&3], [past(3, 2, "worker-a")]);
    assert_eq!(history[&7], [past(7, 1, "worker-b")]);
    assert_eq!(store.completed_shards(&id).await.unwrap(), [0, 2, 4]);

    // The shards holding items 3 and 7 come back, each as a later claim
    // (not the first), so the claimant skips the items that succeeded.
    let runnable = store.runnable_tasks(10).await.unwrap();
    assert_eq!(runnable.len(), 1);
    assert_eq!((runnable[0].ready, runnable[0].held), (2, 0));
    assert_eq!(claim_next(&store, &id).await, (1, 1, false));
    assert_eq!(store.recorded_indices(&id, 2, 4).await.unwrap(), [2]);
    assert_eq!(claim_next(&store, &id).await, (3, 1, false));
    assert_eq!(store.recorded_indices(&id, 6, 8).await.unwrap(), [6]);
    store.complete_shard(&id, 1, &[ok(3)]).await.unwrap();
    let done = store.complete_shard(&id, 3, &[ok(7)]).await.unwrap();
    assert!(done.finished_task);
    assert_eq!(done.task.status, TaskStatus::Completed);
    assert_eq!((done.task.items_succeeded, done.task.items_failed), (10, 0));
    assert_eq!(done.task.chunks_executed, 5);

    // Each retried result continues its item's numbering.
    let (total, page) = store
        .results_with_history(&id, ResultFilter::All, 0, 100)
        .await
        .unwrap();
    assert_eq!(total, 10);
    let attempts: Vec<(u64, u32, usize)> = page
        .iter()
        .map(|(result, past)| (result.index, result.attempt, past.len()))
        .collect();
    assert_eq!(
        attempts,
        [
            (0, 1, 0),
            (1, 1, 0),
            (2, 1, 0),
            (3, 3, 1),
            (4, 1, 0),
            (5, 1, 0),
            (6, 1, 0),
            (7, 2, 1),
            (8, 1, 0),
            (9, 1, 0)
        ]
    );
}

pub(crate) async fn a_cancelled_task_retries_the_items_that_never_ran(store: DynStore) {
    let task = planned(&store, 6, 3).await;
    store
        .complete_shard(&task.id, 0, &[ok(0), ok(1)])
        .await
        .unwrap();
    assert_eq!(claim_next(&store, &task.id).await, (1, 1, true));
    store
        .record_shard_results(&task.id, 1, &[ok(2)])
        .await
        .unwrap();
    store
        .transition(
            &task.id,
            TaskStatus::Cancelled,
            Some("cancelled by a client"),
        )
        .await
        .unwrap();
    let outcome = store.retry_task(&task.id).await.unwrap();
    assert_eq!((outcome.failed, outcome.not_run, outcome.shards), (0, 3, 2));
    assert_eq!(outcome.task.status, TaskStatus::InProgress);
    assert_eq!(outcome.task.error, None);
    assert_eq!(
        (outcome.task.items_succeeded, outcome.task.items_failed),
        (3, 0)
    );
    let runnable = store.runnable_tasks(10).await.unwrap();
    assert_eq!((runnable[0].ready, runnable[0].held), (2, 0));
    assert_eq!(claim_next(&store, &task.id).await, (1, 1, false));
    assert_eq!(store.recorded_indices(&task.id, 2, 4).await.unwrap(), [2]);
}

pub(crate) async fn retrying_a_running_completed_unplanned_late_or_unknown_task_is_refused(
    store: DynStore,
) {
    let refusal = |store: DynStore, id: String| async move {
        let before = store.task(&id).await.unwrap().unwrap();
        let refused = match store.retry_task(&id).await {
            Err(StoreError::CannotRetry { id: got, refusal }) => {
                assert_eq!(got, id);
                refusal
            }
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(store.task(&id).await.unwrap().unwrap(), before);
        refused
    };
    let running = planned(&store, 4, 2).await;
    assert_eq!(
        refusal(store.clone(), running.id).await,
        RetryRefusal::Running(TaskStatus::InProgress)
    );
    let queued = insert(&store, 2).await;
    assert_eq!(
        refusal(store.clone(), queued.id).await,
        RetryRefusal::Running(TaskStatus::Queued)
    );
    let completed = planned(&store, 2, 1).await;
    store
        .complete_shard(&completed.id, 0, &[ok(0), ok(1)])
        .await
        .unwrap();
    assert_eq!(
        refusal(store.clone(), completed.id).await,
        RetryRefusal::NothingToRetry
    );
    let unplanned = task_in(&store, TaskStatus::Cancelled).await;
    assert_eq!(
        refusal(store.clone(), unplanned.id).await,
        RetryRefusal::NeverPlanned(TaskStatus::Cancelled)
    );
    // Created two hours ago with a deadline of one: a retry would fail at once.
    let mut late = task_with(&dts_model::new_task_id(), now_millis() - 7_200_000, 1);
    late.deadline_secs = Some(3_600);
    store.insert_task(&late, &inputs(1)).await.unwrap();
    store.save_plan(&late.id, &even_plan(1, 1)).await.unwrap();
    store
        .complete_shard(&late.id, 0, &[failed(0)])
        .await
        .unwrap();
    assert_eq!(
        refusal(store.clone(), late.id).await,
        RetryRefusal::DeadlinePassed
    );
    let unknown = dts_model::new_task_id();
    assert!(matches!(
        store.retry_task(&unknown).await,
        Err(StoreError::NoSuchTask { id }) if id == unknown
    ));
}

pub(crate) async fn of_sixteen_concurrent_retries_exactly_one_queues_the_work(store: DynStore) {
    let id = failed_task_of_ten(&store).await;
    let mut calls = Vec::new();
    for _ in 0..16 {
        let (store, id) = (store.clone(), id.clone());
        calls.push(tokio::spawn(async move { store.retry_task(&id).await }));
    }
    let (mut queued, mut refused) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(outcome) => {
                assert_eq!(outcome.queued(), 2);
                queued += 1;
            }
            Err(StoreError::CannotRetry {
                refusal: RetryRefusal::Running(TaskStatus::InProgress),
                ..
            }) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((queued, refused), (1, 15));
    let task = store.task(&id).await.unwrap().unwrap();
    assert_eq!(
        (
            task.items_succeeded,
            task.items_failed,
            task.chunks_executed
        ),
        (8, 0, 3)
    );
    assert_eq!(store.attempt_history(&id, &[3]).await.unwrap()[&3].len(), 1);
    let runnable = store.runnable_tasks(10).await.unwrap();
    assert_eq!(runnable[0].ready, 2);
}

pub(crate) async fn an_item_retried_twelve_times_keeps_its_last_ten_attempts(store: DynStore) {
    let task = planned(&store, 1, 1).await;
    store
        .complete_shard(&task.id, 0, &[failed(0)])
        .await
        .unwrap();
    for _ in 0..12 {
        store.retry_task(&task.id).await.unwrap();
        let done = store
            .complete_shard(&task.id, 0, &[failed(0)])
            .await
            .unwrap();
        assert_eq!(done.task.status, TaskStatus::Failed);
        assert_eq!(done.task.items_failed, 1);
    }
    let (total, page) = store
        .results_with_history(&task.id, ResultFilter::Failed, 0, 10)
        .await
        .unwrap();
    assert_eq!(total, 1);
    let (result, past) = &page[0];
    assert_eq!(result.attempt, 13);
    let numbers: Vec<u32> = past.iter().map(|p| p.attempt).collect();
    assert_eq!(numbers, (3..=12).collect::<Vec<u32>>());
}
