//! Finding tasks by id prefix, paging the task list, deleting ended tasks.

use crate::helpers::*;
use dts_model::{Task, TaskStatus, now_millis};
use dts_store::{DynStore, ResultFilter, ShardClaim, StoreError, TaskCursor};
use std::time::Duration;

/// A `QUEUED` task with id `id` and `items` inputs, stored.
async fn insert_id(store: &DynStore, id: &str, items: usize) -> Task {
    let task = task_with(id, now_millis(), items);
    store.insert_task(&task, &inputs(items)).await.unwrap();
    task
}

/// A stored task of 4 items in 2 shards, every item recorded (one failed)
/// and both shards completed: `FAILED`.
async fn ended_with_results(store: &DynStore) -> Task {
    let task = planned(store, 4, 2).await;
    store
        .complete_shard(&task.id, 0, &[ok(0), failed(1)])
        .await
        .unwrap();
    let done = store
        .complete_shard(&task.id, 1, &[ok(2), ok(3)])
        .await
        .unwrap();
    assert_eq!(done.task.status, TaskStatus::Failed);
    done.task
}

pub(crate) async fn a_prefix_finds_the_ids_that_start_with_it_in_order(store: DynStore) {
    let ids = [
        "aaaa2222-0000-4000-8000-000000000000",
        "aaaa1111-0000-4000-8000-000000000000",
        "aaab0000-0000-4000-8000-000000000000",
        "bbbb0000-0000-4000-8000-000000000000",
    ];
    for id in ids {
        insert_id(&store, id, 1).await;
    }
    let found = |prefix: &'static str, limit| {
        let store = store.clone();
        async move { store.task_ids_with_prefix(prefix, limit).await.unwrap() }
    };
    assert_eq!(found("aaaa", 10).await, [ids[1], ids[0]]);
    assert_eq!(found("aaa", 10).await, [ids[1], ids[0], ids[2]]);
    assert_eq!(found("aaa", 2).await, [ids[1], ids[0]]);
    assert_eq!(found("aaaa2", 10).await, [ids[0]]);
    assert_eq!(found(ids[3], 10).await, [ids[3]]);
    assert!(found("cccc", 10).await.is_empty());
    assert!(found("aaaa", 0).await.is_empty());
}

pub(crate) async fn pages_of_the_task_list_follow_each_other_without_gaps_or_repeats(
    store: DynStore,
) {
    let base = 1_700_000_000_000;
    // Three created in one millisecond: the cursor must split them.
    for (n, created_at) in [
        base,
        base + 5,
        base + 5,
        base + 5,
        base + 9,
        base + 1,
        base + 7,
    ]
    .into_iter()
    .enumerate()
    {
        let task = task_with(&dts_model::new_task_id(), created_at, n);
        store.insert_task(&task, &inputs(n)).await.unwrap();
    }
    let all: Vec<String> = store
        .list_tasks(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(all.len(), 7);
    let mut paged = Vec::new();
    let mut sizes = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = store.list_tasks_page(None, after, 3).await.unwrap();
        sizes.push(page.tasks.len());
        paged.extend(page.tasks.into_iter().map(|t| t.id));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(paged, all);
    // A page that ends exactly at the end says there is no next one.
    let page = store.list_tasks_page(None, None, 7).await.unwrap();
    assert_eq!(page.tasks.len(), 7);
    assert_eq!(page.next, None);
    // A cursor from past the oldest task reads an empty last page.
    let end = TaskCursor {
        created_at: base - 1,
        sequence: 0,
    };
    let page = store.list_tasks_page(None, Some(end), 3).await.unwrap();
    assert!(page.tasks.is_empty());
    assert_eq!(page.next, None);
}

pub(crate) async fn a_status_filtered_list_pages_and_a_deleted_task_at_the_cursor_skips_nothing(
    store: DynStore,
) {
    let mut ended = Vec::new();
    for n in 0..5 {
        let task = task_with(&dts_model::new_task_id(), 1_700_000_000_000 + n, 1);
        store.insert_task(&task, &inputs(1)).await.unwrap();
        store
            .transition(&task.id, TaskStatus::Cancelled, None)
            .await
            .unwrap();
        ended.push(task.id);
        // Unfiltered neighbours, which the filtered pages must not show.
        insert(&store, 1).await;
    }
    ended.reverse();
    let first = store
        .list_tasks_page(Some(TaskStatus::Cancelled), None, 2)
        .await
        .unwrap();
    let first_ids: Vec<_> = first.tasks.iter().map(|t| t.id.clone()).collect();
    assert_eq!(first_ids, ended[..2]);
    // The task the cursor points after goes away between pages.
    store.delete_task(&ended[1]).await.unwrap();
    let second = store
        .list_tasks_page(Some(TaskStatus::Cancelled), first.next, 2)
        .await
        .unwrap();
    let second_ids: Vec<_> = second.tasks.iter().map(|t| t.id.clone()).collect();
    assert_eq!(second_ids, ended[2..4]);
    let third = store
        .list_tasks_page(Some(TaskStatus::Cancelled), second.next, 2)
        .await
        .unwrap();
    let third_ids: Vec<_> = third.tasks.iter().map(|t| t.id.clone()).collect();
    assert_eq!(third_ids, ended[4..]);
    assert_eq!(third.next, None);
}

pub(crate) async fn a_deleted_task_reads_as_unknown_with_its_results_gone_and_others_untouched(
    store: DynStore,
) {
    let doomed = ended_with_results(&store).await;
    let kept = ended_with_results(&store).await;
    let running = planned(&store, 4, 2).await;
    store
        .complete_shard(&running.id, 0, &[ok(0), ok(1)])
        .await
        .unwrap();
    let kept_results = store
        .results(&kept.id, ResultFilter::All, 0, 100)
        .await
        .unwrap();
    let running_before = store.task(&running.id).await.unwrap();

    let deleted = store.delete_task(&doomed.id).await.unwrap();
    assert_eq!(deleted, doomed);

    assert_eq!(store.task(&doomed.id).await.unwrap(), None);
    assert_eq!(store.task_version(&doomed.id).await.unwrap(), None);
    assert_eq!(store.inputs(&doomed.id).await.unwrap(), None);
    assert!(matches!(
        store.results(&doomed.id, ResultFilter::All, 0, 100).await,
        Err(StoreError::NoSuchTask { .. })
    ));
    assert!(matches!(
        store.completed_shards(&doomed.id).await,
        Err(StoreError::NoSuchTask { .. })
    ));
    assert!(
        store
            .task_ids_with_prefix(&doomed.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let listed: Vec<String> = store
        .list_tasks(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, [running.id.clone(), kept.id.clone()]);
    assert!(
        store
            .list_tasks(Some(TaskStatus::Failed), 100)
            .await
            .unwrap()
            .iter()
            .all(|t| t.id != doomed.id)
    );

    // The others are as they were.
    assert_eq!(store.task(&kept.id).await.unwrap(), Some(kept.clone()));
    assert_eq!(
        store
            .results(&kept.id, ResultFilter::All, 0, 100)
            .await
            .unwrap(),
        kept_results
    );
    assert_eq!(store.task(&running.id).await.unwrap(), running_before);

    // Gone is gone: a second delete finds nothing.
    assert!(matches!(
        store.delete_task(&doomed.id).await,
        Err(StoreError::NoSuchTask { ref id }) if *id == doomed.id
    ));
    // The id can be stored again, fresh.
    let again = insert_id(&store, &doomed.id, 2).await;
    assert_eq!(store.task(&again.id).await.unwrap(), Some(again.clone()));
    assert_eq!(
        store
            .results(&again.id, ResultFilter::All, 0, 100)
            .await
            .unwrap(),
        (0, Vec::new())
    );
}

pub(crate) async fn deleting_a_task_that_has_not_ended_is_refused_and_changes_nothing(
    store: DynStore,
) {
    let queued = insert(&store, 2).await;
    let running = planned(&store, 4, 2).await;
    store
        .record_shard_results(&running.id, 0, &[ok(0)])
        .await
        .unwrap();
    assert!(matches!(
        store
            .claim_shard(&running.id, 1, "w1", Duration::from_secs(60))
            .await
            .unwrap(),
        ShardClaim::Acquired { attempt: 1 }
    ));
    for task in [&queued, &running] {
        let before = store.task(&task.id).await.unwrap().unwrap();
        let results = store
            .results(&task.id, ResultFilter::All, 0, 100)
            .await
            .unwrap();
        match store.delete_task(&task.id).await {
            Err(StoreError::TaskNotEnded { id, status }) => {
                assert_eq!(id, task.id);
                assert_eq!(status, before.status);
            }
            other => panic!("expected TaskNotEnded, got {other:?}"),
        }
        assert_eq!(store.task(&task.id).await.unwrap(), Some(before));
        assert_eq!(
            store
                .results(&task.id, ResultFilter::All, 0, 100)
                .await
                .unwrap(),
            results
        );
        assert_eq!(
            store.inputs(&task.id).await.unwrap().map(|i| i.len()),
            Some(task.items_total as usize)
        );
    }
    // The lease is still w1's.
    assert!(matches!(
        store
            .claim_shard(&running.id, 1, "w2", Duration::from_secs(60))
            .await
            .unwrap(),
        ShardClaim::Held { ref owner, .. } if owner == "w1"
    ));
    assert!(matches!(
        store.delete_task(&dts_model::new_task_id()).await,
        Err(StoreError::NoSuchTask { .. })
    ));
}
