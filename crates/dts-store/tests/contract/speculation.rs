//! Contract: straggler speculation — handing out one copy of a shard that
//! has run too long, only once nothing is ready, and counting whichever run
//! completes the shard first, once.

use crate::helpers::*;
use dts_model::{Bytes, ItemResult, ShardRange, TaskStatus};
use dts_store::{CopyClaim, CopyState, DynStore, ReadyClaim, ResultFilter, StoreError};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Long enough never to run out during a test.
const LONG: Duration = Duration::from_secs(600);
/// A threshold no shard reaches during a test.
const NEVER: Duration = Duration::from_secs(3_600);
/// A threshold every shard claimed a little while ago has passed.
const SOON: Duration = Duration::from_millis(1);
/// How long a test lets held shards run before it asks for a copy.
const A_WHILE: Duration = Duration::from_millis(30);

async fn claim(store: &DynStore, id: &str, worker: &str) -> u32 {
    match store
        .claim_ready_shard(id, worker, LONG, None)
        .await
        .unwrap()
    {
        ReadyClaim::Claimed { shard, .. } => shard,
        other => panic!("{worker} should have claimed a shard: {other:?}"),
    }
}

/// A copy claim with its token set to 0, to compare with [`copied`].
async fn copy(store: &DynStore, id: &str, worker: &str, per_item: Duration) -> CopyClaim {
    match store.claim_copy(id, worker, per_item, SOON).await.unwrap() {
        CopyClaim::Copied {
            shard,
            range,
            attempt,
            ..
        } => CopyClaim::Copied {
            shard,
            range,
            attempt,
            token: 0,
        },
        other => other,
    }
}

/// A copy of `shard` of `plan`, as [`copy`] reports it.
fn copied(plan: &[ShardRange], shard: u32) -> CopyClaim {
    CopyClaim::Copied {
        shard,
        range: plan[shard as usize],
        attempt: 1,
        token: 0,
    }
}

/// The token of a copy of `shard` that `worker` claims now.
async fn copy_token(store: &DynStore, id: &str, worker: &str, shard: u32) -> u64 {
    match store.claim_copy(id, worker, SOON, SOON).await.unwrap() {
        CopyClaim::Copied {
            shard: copied,
            token,
            ..
        } if copied == shard => token,
        other => panic!("{worker} should have got a copy of shard {shard}: {other:?}"),
    }
}

pub(crate) async fn a_copy_is_handed_out_only_once_nothing_is_ready_and_a_shard_straggles(
    store: DynStore,
) {
    let task = planned(&store, 4, 2).await;
    let plan = even_plan(4, 2);
    assert_eq!(claim(&store, &task.id, "worker-a").await, 0);
    tokio::time::sleep(A_WHILE).await;
    assert_eq!(
        copy(&store, &task.id, "worker-b", SOON).await,
        CopyClaim::NoStraggler,
        "shard 1 is still ready: it is claimed, not copied"
    );
    assert_eq!(claim(&store, &task.id, "worker-b").await, 1);
    assert_eq!(
        copy(&store, &task.id, "worker-c", NEVER).await,
        CopyClaim::NoStraggler,
        "no shard has run longer than its items times the time per item"
    );
    tokio::time::sleep(A_WHILE).await;
    assert_eq!(
        copy(&store, &task.id, "worker-b", SOON).await,
        copied(&plan, 0),
        "worker-b gets a copy of worker-a's shard before one of its own"
    );
    assert_eq!(
        copy(&store, &task.id, "worker-a", SOON).await,
        copied(&plan, 1),
    );
    assert_eq!(
        copy(&store, &task.id, "worker-c", SOON).await,
        CopyClaim::NoStraggler,
        "each shard is copied once"
    );
}

pub(crate) async fn a_workers_own_shard_is_copied_only_when_no_other_straggles(store: DynStore) {
    let task = planned(&store, 2, 2).await;
    let plan = even_plan(2, 2);
    // worker-b's own shard 0 has run longer than worker-a's shard 1.
    assert_eq!(claim(&store, &task.id, "worker-b").await, 0);
    tokio::time::sleep(A_WHILE).await;
    assert_eq!(claim(&store, &task.id, "worker-a").await, 1);
    tokio::time::sleep(A_WHILE).await;
    assert_eq!(
        copy(&store, &task.id, "worker-b", SOON).await,
        copied(&plan, 1)
    );
    assert_eq!(
        copy(&store, &task.id, "worker-b", SOON).await,
        copied(&plan, 0)
    );
}

pub(crate) async fn sixteen_concurrent_copiers_get_each_shard_once(store: DynStore) {
    let task = planned(&store, 6, 3).await;
    for worker in ["worker-a", "worker-b", "worker-c"] {
        claim(&store, &task.id, worker).await;
    }
    tokio::time::sleep(A_WHILE).await;
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let (store, id) = (Arc::clone(&store), task.id.clone());
            tokio::spawn(async move { copy(&store, &id, &format!("copier-{i}"), SOON).await })
        })
        .collect();
    let mut shards = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            CopyClaim::Copied { shard, .. } => shards.push(shard),
            CopyClaim::NoStraggler => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    shards.sort_unstable();
    assert_eq!(shards, vec![0, 1, 2], "every shard copied exactly once");
}

pub(crate) async fn copies_of_an_ended_task_are_refused_and_of_an_unknown_one_not_found(
    store: DynStore,
) {
    let task = planned(&store, 2, 1).await;
    claim(&store, &task.id, "worker-a").await;
    store
        .transition(&task.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    tokio::time::sleep(A_WHILE).await;
    assert_eq!(
        copy(&store, &task.id, "worker-b", SOON).await,
        CopyClaim::TaskEnded
    );
    match store
        .claim_copy("no-such-task", "worker-b", SOON, SOON)
        .await
    {
        Err(StoreError::NoSuchTask { id }) => assert_eq!(id, "no-such-task"),
        other => panic!("expected NoSuchTask, got {other:?}"),
    }
}

/// `index`'s result as a second run of it would give it: another worker,
/// another output, failed.
fn second_run(index: u64) -> ItemResult {
    let stdout = Bytes::from(format!("copy {index}\n"));
    ItemResult {
        worker: "worker-b".to_string(),
        stdout_bytes: stdout.len() as u64,
        stdout,
        ..failed(index)
    }
}

pub(crate) async fn the_first_run_to_complete_a_shard_counts_and_a_later_one_records_nothing(
    store: DynStore,
) {
    let task = planned(&store, 4, 2).await;
    let first: Vec<ItemResult> = (0..2).map(ok).collect();
    let done = store.complete_shard(&task.id, 0, &first).await.unwrap();
    assert!(done.newly_completed);
    assert_eq!(
        store.completed_shards(&task.id).await.unwrap(),
        vec![0],
        "shard 0 is completed, shard 1 is not"
    );

    let second: Vec<ItemResult> = (0..2).map(second_run).collect();
    let again = store.complete_shard(&task.id, 0, &second).await.unwrap();
    assert!(!again.newly_completed && !again.finished_task, "{again:?}");
    let after = store.task(&task.id).await.unwrap().unwrap();
    assert_eq!(
        (
            after.chunks_executed,
            after.items_succeeded,
            after.items_failed
        ),
        (1, 2, 0),
        "the second run counted nothing"
    );
    let (total, page) = store
        .results(&task.id, ResultFilter::All, 0, 10)
        .await
        .unwrap();
    assert_eq!((total, page), (2, first), "the first run's results stay");
}

pub(crate) async fn a_copy_may_run_until_its_shard_completes_or_its_task_ends(store: DynStore) {
    let task = planned(&store, 4, 2).await;
    claim(&store, &task.id, "worker-a").await;
    claim(&store, &task.id, "worker-b").await;
    tokio::time::sleep(A_WHILE).await;
    let token = copy_token(&store, &task.id, "worker-c", 0).await;
    assert_eq!(
        store.copy_state(&task.id, 0, token).await.unwrap(),
        CopyState::Runs
    );
    assert_eq!(
        store.copy_state(&task.id, 0, token ^ 1).await.unwrap(),
        CopyState::Replaced,
        "another token is not the shard's copy"
    );
    let first: Vec<ItemResult> = (0..2).map(ok).collect();
    store.complete_shard(&task.id, 0, &first).await.unwrap();
    assert_eq!(
        store.copy_state(&task.id, 0, token).await.unwrap(),
        CopyState::ShardCompleted,
        "the holder completed the shard first"
    );
    store
        .transition(&task.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    assert_eq!(
        store.copy_state(&task.id, 1, token).await.unwrap(),
        CopyState::TaskNotRunning(Some(TaskStatus::Cancelled))
    );
    assert_eq!(
        store.copy_state("no-such-task", 0, token).await.unwrap(),
        CopyState::TaskNotRunning(None)
    );
}

/// Seed 7 of the 60-minute soak: a copy of a straggling shard began just
/// before its holder completed the shard and the task ended FAILED; the
/// task was retried at once, and the copy ran on into the retried round,
/// beside the new holder and the new round's own copy, so an item ran its
/// attempt 2 three times in one round. A retry forgets the shard's copy:
/// the old copy may start nothing more, its writes are refused and change
/// nothing, and the new round's copy gets a token of its own.
pub(crate) async fn a_copy_from_before_a_retry_starts_and_records_nothing_in_the_retried_run(
    store: DynStore,
) {
    let task = planned(&store, 2, 1).await;
    claim(&store, &task.id, "worker-a").await;
    tokio::time::sleep(A_WHILE).await;
    let old = copy_token(&store, &task.id, "worker-b", 0).await;
    // The holder completes the shard with item 1 failed: the task fails.
    let done = store
        .complete_shard(&task.id, 0, &[ok(0), failed(1)])
        .await
        .unwrap();
    assert!(
        done.finished_task && done.task.status == TaskStatus::Failed,
        "{done:?}"
    );
    store.retry_task(&task.id).await.unwrap();
    assert_eq!(
        store.copy_state(&task.id, 0, old).await.unwrap(),
        CopyState::Replaced,
        "the retry reopened the shard: the old copy starts nothing more"
    );
    assert_eq!(
        store
            .record_copy_results(&task.id, 0, old, &[second_run(1)])
            .await
            .unwrap(),
        None,
        "the old copy's results are refused"
    );
    assert_eq!(
        store
            .complete_copy(&task.id, 0, old, &[second_run(1)])
            .await
            .unwrap(),
        None,
        "so is its completion"
    );
    let after = store.task(&task.id).await.unwrap().unwrap();
    assert_eq!(
        (
            after.status,
            after.chunks_executed,
            after.items_succeeded,
            after.items_failed
        ),
        (TaskStatus::InProgress, 0, 1, 0),
        "the old copy changed nothing: item 1 waits for the retried run"
    );
    // The retried round has its holder and, once it straggles, a copy of
    // its own, with another token.
    claim(&store, &task.id, "worker-a").await;
    tokio::time::sleep(A_WHILE).await;
    let new = copy_token(&store, &task.id, "worker-c", 0).await;
    assert_ne!(new, old);
    assert_eq!(
        store.copy_state(&task.id, 0, new).await.unwrap(),
        CopyState::Runs
    );
    assert_eq!(
        store.copy_state(&task.id, 0, old).await.unwrap(),
        CopyState::Replaced,
        "the old copy stays refused beside the new one"
    );
    assert_eq!(
        store
            .record_copy_results(&task.id, 0, old, &[second_run(1)])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .record_copy_results(&task.id, 0, new, &[ok(1)])
            .await
            .unwrap(),
        Some(TaskStatus::InProgress)
    );
    let completion = store
        .complete_copy(&task.id, 0, new, &[])
        .await
        .unwrap()
        .expect("the round's own copy completes the shard");
    assert!(
        completion.newly_completed && completion.finished_task,
        "{completion:?}"
    );
    let (_, page) = store
        .results(&task.id, ResultFilter::All, 0, 10)
        .await
        .unwrap();
    assert_eq!(page, vec![ok(0), ok(1)], "no result of the old copy counts");
    assert_eq!(
        store.task(&task.id).await.unwrap().unwrap().status,
        TaskStatus::Completed
    );
}

pub(crate) async fn a_copied_shard_completed_by_the_copy_drops_the_holders_lease(store: DynStore) {
    let task = planned(&store, 2, 1).await;
    claim(&store, &task.id, "worker-a").await;
    tokio::time::sleep(A_WHILE).await;
    assert!(matches!(
        copy(&store, &task.id, "worker-b", SOON).await,
        CopyClaim::Copied { shard: 0, .. }
    ));
    let results: Vec<ItemResult> = (0..2).map(second_run).collect();
    let done = store.complete_shard(&task.id, 0, &results).await.unwrap();
    assert!(done.newly_completed && done.finished_task, "{done:?}");
    let lost = store
        .renew_leases("worker-a", &[(task.id.clone(), 0)], LONG)
        .await
        .unwrap();
    assert_eq!(
        lost,
        vec![(task.id.clone(), 0)],
        "the holder learns at its next renewal that its run is no longer needed"
    );
    let workers: BTreeSet<String> = store
        .results(&task.id, ResultFilter::All, 0, 10)
        .await
        .unwrap()
        .1
        .into_iter()
        .map(|r| r.worker)
        .collect();
    assert_eq!(workers, BTreeSet::from(["worker-b".to_string()]));
}

pub(crate) async fn a_shard_that_lost_a_worker_is_never_copied(store: DynStore) {
    let task = planned(&store, 2, 1).await;
    claim(&store, &task.id, "worker-a").await;
    // worker-a's last renewal before it died.
    let lost = store
        .renew_leases(
            "worker-a",
            &[(task.id.clone(), 0)],
            Duration::from_millis(100),
        )
        .await
        .unwrap();
    assert!(lost.is_empty(), "{lost:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // ends: the lease runs out within 100 ms, or the deadline fails the test.
    let attempt = loop {
        match store
            .claim_ready_shard(&task.id, "worker-b", LONG, None)
            .await
            .unwrap()
        {
            ReadyClaim::Claimed { attempt, .. } => break attempt,
            other => assert!(
                std::time::Instant::now() < deadline,
                "worker-a's lease did not run out within 10 s: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(attempt, 2);
    tokio::time::sleep(A_WHILE).await;
    assert_eq!(
        copy(&store, &task.id, "worker-c", SOON).await,
        CopyClaim::NoStraggler,
        "it may hold an item that kills its workers"
    );
}

pub(crate) async fn a_shards_first_result_per_item_counts_and_nothing_after_its_completion(
    store: DynStore,
) {
    let task = planned(&store, 4, 2).await;
    // While shard 0 runs, its results are recorded as they come.
    store
        .record_shard_results(&task.id, 0, &[second_run(0)])
        .await
        .unwrap();
    let first: Vec<ItemResult> = (0..2).map(ok).collect();
    store.complete_shard(&task.id, 0, &first).await.unwrap();
    // A run that finishes item 1 after the shard was completed (the holder
    // that a copy beat) records nothing.
    let status = store
        .record_shard_results(&task.id, 0, &[second_run(1)])
        .await
        .unwrap();
    assert_eq!(status, TaskStatus::InProgress);
    let (_, page) = store
        .results(&task.id, ResultFilter::All, 0, 10)
        .await
        .unwrap();
    assert_eq!(
        page,
        vec![second_run(0), ok(1)],
        "item 0 keeps its first result; the completion recorded item 1"
    );
    let after = store.task(&task.id).await.unwrap().unwrap();
    assert_eq!((after.items_succeeded, after.items_failed), (1, 1));
    // Shard 1 is not completed: its results are recorded, and a second
    // result for the same item does not replace the first.
    store
        .record_shard_results(&task.id, 1, &[second_run(2)])
        .await
        .unwrap();
    store
        .record_shard_results(&task.id, 1, &[ok(2), ok(3)])
        .await
        .unwrap();
    let after = store.task(&task.id).await.unwrap().unwrap();
    assert_eq!((after.items_succeeded, after.items_failed), (2, 2));
    let (_, page) = store
        .results(&task.id, ResultFilter::All, 2, 10)
        .await
        .unwrap();
    assert_eq!(page, vec![second_run(2), ok(3)]);
    match store.record_shard_results(&task.id, 2, &[ok(3)]).await {
        Err(StoreError::NoSuchShard {
            shard: 2,
            planned: 2,
            ..
        }) => {}
        other => panic!("expected NoSuchShard, got {other:?}"),
    }
}
