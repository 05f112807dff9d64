//! Contract: the ready-shard queue of late binding — which tasks are
//! runnable, with how many shards ready and held, and claiming a task's
//! lowest ready shard under a cap on its held leases.
//!
//! Expiry is made deterministic by renewing a long lease with a short one
//! (what a worker's last renewal before it died looks like), then waiting,
//! with a deadline, until the store itself says the lease ran out.

use crate::helpers::*;
use dts_model::{Scheduling, ShardRange, TaskStatus, now_millis};
use dts_store::{DynStore, PlanOutcome, ReadyClaim, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Long enough never to run out during a test.
const LONG: Duration = Duration::from_secs(600);

/// Short enough to wait out.
const SHORT: Duration = Duration::from_millis(200);

/// The longest a test waits for a short lease to run out.
const PATIENCE: Duration = Duration::from_secs(10);

async fn claim(store: &DynStore, id: &str, worker: &str, max_held: Option<u32>) -> ReadyClaim {
    store
        .claim_ready_shard(id, worker, LONG, max_held)
        .await
        .unwrap()
}

/// The first claim ever of `shard`.
fn claimed(plan: &[ShardRange], shard: u32, attempt: u32) -> ReadyClaim {
    ReadyClaim::Claimed {
        shard,
        range: plan[shard as usize],
        attempt,
        first: true,
    }
}

/// A claim of `shard` after an earlier one (released or lost): some of its
/// items may have results.
fn reclaimed(plan: &[ShardRange], shard: u32, attempt: u32) -> ReadyClaim {
    ReadyClaim::Claimed {
        shard,
        range: plan[shard as usize],
        attempt,
        first: false,
    }
}

/// `(task id, ready, held)` of every runnable task, oldest first.
async fn counts(store: &DynStore) -> Vec<(String, u32, u32)> {
    store
        .runnable_tasks(100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.task.id, r.ready, r.held))
        .collect()
}

/// Shortens `worker`'s lease on `shard` to [`SHORT`]: its last renewal
/// before it died.
async fn let_lapse(store: &DynStore, id: &str, worker: &str, shard: u32) {
    let lost = store
        .renew_leases(worker, &[(id.to_string(), shard)], SHORT)
        .await
        .unwrap();
    assert!(lost.is_empty(), "{worker} held shard {shard}: {lost:?}");
}

/// Waits until the task's held count is `held`, failing after [`PATIENCE`].
async fn wait_for_held(store: &DynStore, id: &str, held: u32) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = counts(store).await;
        if now.iter().any(|(task, _, h)| task == id && *h == held) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} still did not hold {held} shards after {PATIENCE:?}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plan of `shards` shards of two items each, saved for a new task.
async fn planned_pairs(store: &DynStore, shards: u64) -> (String, Vec<ShardRange>) {
    let plan = even_plan(shards * 2, shards);
    let task = planned(store, shards * 2, shards).await;
    (task.id, plan)
}

pub(crate) async fn ready_shards_are_claimed_lowest_first_and_each_exactly_once(store: DynStore) {
    let (id, plan) = planned_pairs(&store, 5).await;
    assert_eq!(counts(&store).await, vec![(id.clone(), 5, 0)]);
    for shard in 0..5 {
        let worker = format!("w-{shard}");
        assert_eq!(
            claim(&store, &id, &worker, None).await,
            claimed(&plan, shard, 1)
        );
    }
    assert_eq!(claim(&store, &id, "w-9", None).await, ReadyClaim::NoneReady);
    assert_eq!(counts(&store).await, vec![(id, 0, 5)]);
}

pub(crate) async fn a_held_shard_is_not_handed_out_until_its_lease_expires_then_as_attempt_two(
    store: DynStore,
) {
    let (id, plan) = planned_pairs(&store, 2).await;
    assert_eq!(claim(&store, &id, "w-a", None).await, claimed(&plan, 0, 1));
    assert_eq!(claim(&store, &id, "w-b", None).await, claimed(&plan, 1, 1));
    assert_eq!(claim(&store, &id, "w-c", None).await, ReadyClaim::NoneReady);

    // w-a dies after one last renewal; its shard comes back, as a new attempt.
    let_lapse(&store, &id, "w-a", 0).await;
    wait_for_held(&store, &id, 1).await;
    assert_eq!(counts(&store).await, vec![(id.clone(), 1, 1)]);
    assert_eq!(
        claim(&store, &id, "w-c", None).await,
        reclaimed(&plan, 0, 2)
    );
    assert_eq!(claim(&store, &id, "w-d", None).await, ReadyClaim::NoneReady);
    // w-a lost it for good: it can no longer renew it.
    let lost = store
        .renew_leases("w-a", &[(id.clone(), 0)], LONG)
        .await
        .unwrap();
    assert_eq!(lost, vec![(id.clone(), 0)]);
}

pub(crate) async fn max_held_is_never_exceeded_even_by_sixteen_concurrent_claimers(
    store: DynStore,
) {
    let (id, plan) = planned_pairs(&store, 16).await;
    let claims: Vec<_> = (0..16)
        .map(|n| {
            let (store, id) = (Arc::clone(&store), id.clone());
            tokio::spawn(async move {
                store
                    .claim_ready_shard(&id, &format!("w-{n}"), LONG, Some(3))
                    .await
            })
        })
        .collect();
    let mut shards = Vec::new();
    let mut at_capacity = 0;
    for call in claims {
        match call.await.unwrap().unwrap() {
            ReadyClaim::Claimed {
                shard,
                range,
                attempt,
                first,
            } => {
                assert_eq!((range, attempt, first), (plan[shard as usize], 1, true));
                shards.push(shard);
            }
            ReadyClaim::AtCapacity => at_capacity += 1,
            other => panic!("expected claimed or at capacity, got {other:?}"),
        }
    }
    shards.sort_unstable();
    assert_eq!(shards, vec![0, 1, 2]);
    assert_eq!(at_capacity, 13);
    assert_eq!(counts(&store).await, vec![(id.clone(), 13, 3)]);

    // A slot that finishes frees room for exactly one more.
    store.complete_shard(&id, 1, &[ok(2), ok(3)]).await.unwrap();
    assert_eq!(
        claim(&store, &id, "w-a", Some(3)).await,
        claimed(&plan, 3, 1)
    );
    assert_eq!(
        claim(&store, &id, "w-b", Some(3)).await,
        ReadyClaim::AtCapacity
    );
    // Without a cap (or a higher one) the same task hands out more.
    assert_eq!(
        claim(&store, &id, "w-b", Some(4)).await,
        claimed(&plan, 4, 1)
    );
    assert_eq!(claim(&store, &id, "w-c", None).await, claimed(&plan, 5, 1));
}

pub(crate) async fn a_clean_release_makes_the_shard_claimable_again_with_the_same_attempt(
    store: DynStore,
) {
    let (id, plan) = planned_pairs(&store, 3).await;
    assert_eq!(claim(&store, &id, "w-a", None).await, claimed(&plan, 0, 1));
    assert_eq!(claim(&store, &id, "w-b", None).await, claimed(&plan, 1, 1));
    store.release_shard(&id, 0, "w-a", true).await.unwrap();
    assert_eq!(counts(&store).await, vec![(id.clone(), 2, 1)]);
    // Lowest first: the released shard before the never-claimed shard 2.
    assert_eq!(
        claim(&store, &id, "w-c", None).await,
        reclaimed(&plan, 0, 1)
    );

    // A release that was not clean counts an attempt at the next claim.
    store.release_shard(&id, 0, "w-c", false).await.unwrap();
    assert_eq!(
        claim(&store, &id, "w-a", None).await,
        reclaimed(&plan, 0, 2)
    );
    assert_eq!(claim(&store, &id, "w-a", None).await, claimed(&plan, 2, 1));
    assert_eq!(claim(&store, &id, "w-a", None).await, ReadyClaim::NoneReady);
}

pub(crate) async fn a_completed_shard_is_never_claimed(store: DynStore) {
    let (id, plan) = planned_pairs(&store, 4).await;
    // Completed without a claim (a redelivery on the push path), and
    // completed while held.
    store.complete_shard(&id, 0, &[ok(0), ok(1)]).await.unwrap();
    assert_eq!(claim(&store, &id, "w-a", None).await, claimed(&plan, 1, 1));
    store.complete_shard(&id, 1, &[ok(2), ok(3)]).await.unwrap();
    // Completed after its lease was released.
    assert_eq!(claim(&store, &id, "w-a", None).await, claimed(&plan, 2, 1));
    store.release_shard(&id, 2, "w-a", true).await.unwrap();
    store.complete_shard(&id, 2, &[ok(4), ok(5)]).await.unwrap();
    assert_eq!(counts(&store).await, vec![(id.clone(), 1, 0)]);
    assert_eq!(claim(&store, &id, "w-b", None).await, claimed(&plan, 3, 1));
    assert_eq!(claim(&store, &id, "w-b", None).await, ReadyClaim::NoneReady);

    let last = store.complete_shard(&id, 3, &[ok(6), ok(7)]).await.unwrap();
    assert_eq!(last.task.status, TaskStatus::Completed);
    assert_eq!(claim(&store, &id, "w-b", None).await, ReadyClaim::TaskEnded);
    assert!(
        counts(&store).await.is_empty(),
        "a finished task is not runnable"
    );
}

pub(crate) async fn a_cancelled_tasks_claims_return_task_ended_and_it_leaves_runnable_tasks(
    store: DynStore,
) {
    let (cancelled, plan) = planned_pairs(&store, 3).await;
    let (other, _) = planned_pairs(&store, 2).await;
    assert_eq!(
        claim(&store, &cancelled, "w-a", None).await,
        claimed(&plan, 0, 1)
    );
    store
        .transition(&cancelled, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    assert_eq!(counts(&store).await, vec![(other.clone(), 2, 0)]);
    for max_held in [None, Some(5)] {
        assert_eq!(
            claim(&store, &cancelled, "w-b", max_held).await,
            ReadyClaim::TaskEnded
        );
    }
    // Its holder hands the shard back (it heard of the cancel): nothing is
    // queued again.
    store
        .release_shard(&cancelled, 0, "w-a", true)
        .await
        .unwrap();
    assert_eq!(
        claim(&store, &cancelled, "w-b", None).await,
        ReadyClaim::TaskEnded
    );
    assert_eq!(counts(&store).await, vec![(other, 2, 0)]);

    // A task not planned yet hands out nothing either; an unknown one is not found.
    let queued = insert(&store, 4).await;
    assert_eq!(
        claim(&store, &queued.id, "w-b", None).await,
        ReadyClaim::TaskEnded
    );
    match store
        .claim_ready_shard("no-such-task", "w-b", LONG, None)
        .await
    {
        Err(StoreError::NoSuchTask { id }) => assert_eq!(id, "no-such-task"),
        other => panic!("expected not found, got {other:?}"),
    }
}

pub(crate) async fn ready_and_held_counts_are_exact_through_claim_release_expiry_and_completion(
    store: DynStore,
) {
    let (id, plan) = planned_pairs(&store, 5).await;
    assert_eq!(counts(&store).await, vec![(id.clone(), 5, 0)]);
    for (shard, worker) in [(0, "w-a"), (1, "w-b"), (2, "w-c")] {
        assert_eq!(
            claim(&store, &id, worker, None).await,
            claimed(&plan, shard, 1)
        );
    }
    assert_eq!(counts(&store).await, vec![(id.clone(), 2, 3)]);
    store.release_shard(&id, 1, "w-b", true).await.unwrap();
    assert_eq!(counts(&store).await, vec![(id.clone(), 3, 2)]);
    store.complete_shard(&id, 0, &[ok(0), ok(1)]).await.unwrap();
    assert_eq!(counts(&store).await, vec![(id.clone(), 3, 1)]);
    // w-c dies: its expired lease counts as ready, not held.
    let_lapse(&store, &id, "w-c", 2).await;
    wait_for_held(&store, &id, 0).await;
    assert_eq!(counts(&store).await, vec![(id.clone(), 4, 0)]);
    // Renewed before anyone took it over, it is w-c's and held again.
    let_renewed(&store, &id, "w-c", 2).await;
    assert_eq!(counts(&store).await, vec![(id.clone(), 3, 1)]);

    store.complete_shard(&id, 2, &[ok(4), ok(5)]).await.unwrap();
    for (shard, items) in [(1, [2, 3]), (3, [6, 7]), (4, [8, 9])] {
        store
            .complete_shard(&id, shard, &items.map(ok))
            .await
            .unwrap();
    }
    assert!(counts(&store).await.is_empty(), "every shard completed");
}

/// Renews `worker`'s lease on `shard` for [`LONG`].
async fn let_renewed(store: &DynStore, id: &str, worker: &str, shard: u32) {
    let lost = store
        .renew_leases(worker, &[(id.to_string(), shard)], LONG)
        .await
        .unwrap();
    assert!(lost.is_empty(), "{worker} lost shard {shard}: {lost:?}");
}

pub(crate) async fn claiming_through_the_old_claim_shard_path_takes_the_shard_off_the_ready_queue(
    store: DynStore,
) {
    let (id, plan) = planned_pairs(&store, 3).await;
    store.claim_shard(&id, 0, "w-a", LONG).await.unwrap();
    assert_eq!(counts(&store).await, vec![(id.clone(), 2, 1)]);
    assert_eq!(claim(&store, &id, "w-b", None).await, claimed(&plan, 1, 1));
    store.claim_shard(&id, 2, "w-a", LONG).await.unwrap();
    assert_eq!(claim(&store, &id, "w-b", None).await, ReadyClaim::NoneReady);
    assert_eq!(counts(&store).await, vec![(id.clone(), 0, 3)]);
    // And the queue's claims hold against the old path.
    assert!(matches!(
        store.claim_shard(&id, 1, "w-c", LONG).await.unwrap(),
        dts_store::ShardClaim::Held { owner, .. } if owner == "w-b"
    ));
}

pub(crate) async fn runnable_tasks_are_the_in_progress_tasks_with_open_shards_oldest_first(
    store: DynStore,
) {
    let now = now_millis();
    let plan_of = |store: &DynStore, id: String, shards: u64| {
        let store = Arc::clone(store);
        async move {
            match store.save_plan(&id, &even_plan(8, shards)).await.unwrap() {
                PlanOutcome::Created(task) => task,
                other => panic!("expected a new plan, got {other:?}"),
            }
        }
    };
    // Inserted newest first, so only the creation time orders them.
    let mut stored = Vec::new();
    for (name, created_at) in [
        ("newer", now),
        ("older", now - 5_000),
        ("oldest", now - 9_000),
    ] {
        let task = task_with(&format!("{name}-{now}"), created_at, 8);
        store.insert_task(&task, &inputs(8)).await.unwrap();
        stored.push(task.id);
    }
    let newer = plan_of(&store, stored[0].clone(), 4).await;
    let older = plan_of(&store, stored[1].clone(), 2).await;
    // Planned with no shards: completed at once, never runnable.
    let empty = store.save_plan(&stored[2], &[]).await.unwrap();
    assert!(matches!(empty, PlanOutcome::Created(t) if t.status == TaskStatus::Completed));
    // Not planned yet.
    insert(&store, 4).await;
    // Cancelled with open shards.
    let cancelled = planned(&store, 4, 2).await;
    store
        .transition(&cancelled.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();

    let runnable = store.runnable_tasks(10).await.unwrap();
    assert_eq!(
        runnable
            .iter()
            .map(|r| (r.task.clone(), r.ready, r.held))
            .collect::<Vec<_>>(),
        vec![(older.clone(), 2, 0), (newer.clone(), 4, 0)],
        "the tasks as stored, oldest first"
    );
    // The policy ranks by the scheduling fields: they come with the snapshot.
    let submitted = task_with("any", now, 8).scheduling;
    assert_ne!(submitted, Scheduling::default());
    for r in &runnable {
        assert_eq!(r.task.scheduling, submitted, "{}", r.task.id);
    }
    let first = store.runnable_tasks(1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].task, older);
    assert!(store.runnable_tasks(0).await.unwrap().is_empty());
}
