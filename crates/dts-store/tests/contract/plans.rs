//! Contract: saving a plan exactly once.

use crate::helpers::*;
use dts_model::{TaskStatus, now_millis};
use dts_store::{DynStore, PlanOutcome};
use std::sync::Arc;

pub(crate) async fn a_plan_is_saved_once_and_returned_to_later_callers(store: DynStore) {
    let task = insert(&store, 10).await;
    let plan = even_plan(10, 3);
    let before = now_millis();
    let created = match store.save_plan(&task.id, &plan).await.unwrap() {
        PlanOutcome::Created(created) => created,
        other => panic!("expected Created, got {other:?}"),
    };
    assert_eq!(created.status, TaskStatus::InProgress);
    assert_eq!((created.chunks_to_execute, created.chunks_executed), (3, 0));
    assert!(created.started_at.is_some_and(|t| t >= before));
    assert_eq!(created.finished_at, None);
    assert_eq!(store.task(&task.id).await.unwrap(), Some(created.clone()));
    assert!(store.completed_shards(&task.id).await.unwrap().is_empty());

    // A redelivered task message plans again with another split: the first plan stands.
    let again = store.save_plan(&task.id, &even_plan(10, 5)).await.unwrap();
    assert_eq!(
        again,
        PlanOutcome::Existing {
            task: created.clone(),
            shards: plan
        }
    );
    assert_eq!(store.task(&task.id).await.unwrap(), Some(created));
}

pub(crate) async fn concurrent_planners_see_exactly_one_created(store: DynStore) {
    let task = insert(&store, 64).await;
    let calls: Vec<_> = (1..=16u64)
        .map(|shards| {
            let store = Arc::clone(&store);
            let id = task.id.clone();
            tokio::spawn(async move { store.save_plan(&id, &even_plan(64, shards)).await })
        })
        .collect();
    let mut created = Vec::new();
    let mut existing = Vec::new();
    for call in calls {
        match call.await.unwrap().unwrap() {
            PlanOutcome::Created(task) => created.push(task),
            PlanOutcome::Existing { shards, .. } => existing.push(shards),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one planner stores the plan");
    assert_eq!(existing.len(), 15);
    let winner = created.remove(0);
    let winning_plan = even_plan(64, u64::from(winner.chunks_to_execute));
    assert!(
        existing.iter().all(|shards| *shards == winning_plan),
        "all see the stored plan"
    );
    assert_eq!(store.task(&task.id).await.unwrap(), Some(winner));
}

pub(crate) async fn a_plan_with_no_shards_completes_the_task_at_once(store: DynStore) {
    let task = insert(&store, 0).await;
    let done = match store.save_plan(&task.id, &[]).await.unwrap() {
        PlanOutcome::Created(done) => done,
        other => panic!("expected Created, got {other:?}"),
    };
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!((done.chunks_to_execute, done.chunks_executed), (0, 0));
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    assert_eq!(store.task(&task.id).await.unwrap(), Some(done.clone()));
    assert_eq!(
        store.save_plan(&task.id, &[]).await.unwrap(),
        PlanOutcome::Existing {
            task: done,
            shards: Vec::new()
        }
    );
    assert!(store.unfinished_task_ids().await.unwrap().is_empty());
}

pub(crate) async fn planning_a_cancelled_task_ends_without_storing_a_plan(store: DynStore) {
    let task = insert(&store, 4).await;
    let cancelled = store
        .transition(&task.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    assert_eq!(
        store.save_plan(&task.id, &even_plan(4, 2)).await.unwrap(),
        PlanOutcome::Ended(cancelled.clone())
    );
    assert_eq!(store.task(&task.id).await.unwrap(), Some(cancelled.clone()));
    // Still no plan: a second attempt ends the same way instead of finding one.
    assert_eq!(
        store.save_plan(&task.id, &even_plan(4, 2)).await.unwrap(),
        PlanOutcome::Ended(cancelled)
    );
}
