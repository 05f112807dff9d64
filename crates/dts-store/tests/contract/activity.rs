//! The summaries the dashboard reads (`Store::stats`, `Store::task_activity`):
//! counted in the writes that record results, exactly once per result
//! written, whichever backend.

use crate::helpers::*;
use dts_model::{ItemResult, TaskStatus, now_millis};
use dts_store::DynStore;
use dts_store::activity::{BUCKET_MS, WorkerCounts};
use std::time::Duration;

fn by(worker: &str, result: ItemResult) -> ItemResult {
    ItemResult {
        worker: worker.to_string(),
        ..result
    }
}

fn count_of(stats: &dts_store::activity::StoreStats, status: TaskStatus) -> u64 {
    stats
        .tasks_by_status
        .iter()
        .find(|(s, _)| *s == status)
        .map(|(_, n)| *n)
        .unwrap_or_else(|| panic!("{status:?} missing from {:?}", stats.tasks_by_status))
}

pub(crate) async fn the_overview_counts_tasks_by_status_waiting_shards_and_each_result_once(
    store: DynStore,
) {
    let empty = store.stats().await.unwrap();
    assert_eq!(
        empty
            .tasks_by_status
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>(),
        TaskStatus::ALL.to_vec(),
        "every status is listed, in order"
    );
    assert!(
        empty.tasks_by_status.iter().all(|(_, n)| *n == 0),
        "{empty:?}"
    );
    assert_eq!((empty.shards_waiting, empty.items_finished), (0, 0));

    insert(&store, 3).await;
    let running = planned(&store, 8, 4).await;
    let stats = store.stats().await.unwrap();
    assert_eq!(count_of(&stats, TaskStatus::Queued), 1);
    assert_eq!(count_of(&stats, TaskStatus::InProgress), 1);
    assert_eq!(
        stats.shards_waiting, 4,
        "every shard of the planned task waits"
    );

    let claim = store
        .claim_ready_shard(&running.id, "worker-a", Duration::from_secs(60), None)
        .await
        .unwrap();
    assert!(
        matches!(claim, dts_store::ReadyClaim::Claimed { .. }),
        "{claim:?}"
    );
    assert_eq!(
        store.stats().await.unwrap().shards_waiting,
        3,
        "a held shard no longer waits"
    );

    let results = [by("worker-a", ok(0)), by("worker-a", failed(1))];
    store
        .complete_shard(&running.id, 0, &results)
        .await
        .unwrap();
    // A shard completed twice (a copy, a redelivery) records nothing more.
    store
        .complete_shard(&running.id, 0, &results)
        .await
        .unwrap();
    store
        .record_shard_results(&running.id, 1, &[by("worker-b", ok(2))])
        .await
        .unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(
        stats.items_finished, 3,
        "each result counted once: {stats:?}"
    );
    assert_eq!(stats.shards_waiting, 3, "shard 0 completed, 1 to 3 wait");
}

pub(crate) async fn a_tasks_activity_counts_results_per_worker_in_the_bucket_they_were_recorded(
    store: DynStore,
) {
    let task = planned(&store, 6, 3).await;
    assert_eq!(
        store.task_activity(&task.id).await.unwrap(),
        Some(Default::default()),
        "a task without results has an empty activity"
    );
    let before = now_millis();
    store
        .complete_shard(
            &task.id,
            0,
            &[by("worker-a", ok(0)), by("worker-b", failed(1))],
        )
        .await
        .unwrap();
    store
        .complete_shard(&task.id, 1, &[by("worker-a", ok(2)), by("worker-a", ok(3))])
        .await
        .unwrap();
    // Recorded again for a shard already completed: nothing changes.
    store
        .record_shard_results(&task.id, 1, &[by("worker-c", ok(2))])
        .await
        .unwrap();
    let after = now_millis();
    let activity = store
        .task_activity(&task.id)
        .await
        .unwrap()
        .expect("the task is known");
    assert_eq!(
        activity.per_worker,
        [
            (
                "worker-a".to_string(),
                WorkerCounts {
                    succeeded: 3,
                    failed: 0
                }
            ),
            (
                "worker-b".to_string(),
                WorkerCounts {
                    succeeded: 0,
                    failed: 1
                }
            ),
        ]
        .into(),
    );
    let total: u64 = activity.throughput.iter().map(|(_, items)| items).sum();
    assert_eq!(total, 4, "{:?}", activity.throughput);
    for (bucket, _) in &activity.throughput {
        assert_eq!(bucket % BUCKET_MS, 0, "a bucket starts on a 10 s boundary");
        assert!(
            (before - before % BUCKET_MS..=after).contains(bucket),
            "bucket {bucket} outside the time the results were recorded ({before}..{after})"
        );
    }
    assert_eq!(store.task_activity("no-such-task").await.unwrap(), None);
}

pub(crate) async fn deleting_a_task_deletes_its_activity(store: DynStore) {
    let task = planned(&store, 2, 1).await;
    store
        .complete_shard(&task.id, 0, &[ok(0), ok(1)])
        .await
        .unwrap();
    assert_eq!(
        store.task(&task.id).await.unwrap().unwrap().status,
        TaskStatus::Completed
    );
    store.delete_task(&task.id).await.unwrap();
    assert_eq!(store.task_activity(&task.id).await.unwrap(), None);
    // The store-wide count keeps what was recorded: it is a history.
    assert_eq!(store.stats().await.unwrap().items_finished, 2);
}
