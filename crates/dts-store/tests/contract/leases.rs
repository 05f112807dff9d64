//! Contract: shard leases (claim, renew, release, and completion dropping
//! them) and per-item start counts.
//!
//! Expiry tests use short leases and wait, with a deadline, until the
//! store itself says the lease ran out; none sleeps a fixed time and hopes.

use crate::helpers::*;
use dts_store::{DynStore, ShardClaim, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Long enough never to run out during a test.
const LONG: Duration = Duration::from_secs(600);

/// Short enough to wait out.
const SHORT: Duration = Duration::from_millis(200);

/// The longest any lease test waits for a short lease to run out.
const PATIENCE: Duration = Duration::from_secs(10);

async fn claim(
    store: &DynStore,
    id: &str,
    shard: u32,
    worker: &str,
    lease: Duration,
) -> ShardClaim {
    store.claim_shard(id, shard, worker, lease).await.unwrap()
}

fn acquired(attempt: u32) -> ShardClaim {
    ShardClaim::Acquired { attempt }
}

/// Panics unless `claim` is held by `owner`, with some but at most `lease` left.
fn assert_held_by(claim: &ShardClaim, owner: &str, lease: Duration) {
    match claim {
        ShardClaim::Held {
            owner: holder,
            expires_in,
        } => {
            assert_eq!(holder, owner);
            assert!(
                !expires_in.is_zero() && *expires_in <= lease,
                "expires in {expires_in:?}, lease {lease:?}"
            );
        }
        other => panic!("expected held by {owner}, got {other:?}"),
    }
}

/// Claims for `worker` until the store lets it, failing after [`PATIENCE`]:
/// the lease held by someone else has run out. Returns what it acquired.
async fn claim_once_expired(store: &DynStore, id: &str, shard: u32, worker: &str) -> ShardClaim {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match claim(store, id, shard, worker, LONG).await {
            ShardClaim::Held { expires_in, .. } => {
                assert!(
                    Instant::now() < deadline,
                    "a {SHORT:?} lease was still held after {PATIENCE:?}"
                );
                tokio::time::sleep(expires_in.min(Duration::from_millis(50))).await;
            }
            other => return other,
        }
    }
}

/// Waits until `lease` has passed since `since` (the lease's own expiry),
/// plus a margin for the store's clock.
async fn wait_past(since: Instant, lease: Duration) {
    let past = since + lease + Duration::from_millis(100);
    tokio::time::sleep(past.saturating_duration_since(Instant::now())).await;
}

fn pair(id: &str, shard: u32) -> (String, u32) {
    (id.to_string(), shard)
}

pub(crate) async fn the_first_claim_of_a_shard_acquires_attempt_one(store: DynStore) {
    let (task, other) = (planned(&store, 4, 2).await, planned(&store, 4, 2).await);
    assert_eq!(claim(&store, &task.id, 0, "w-a", LONG).await, acquired(1));
    // Every shard of every task has its own lease.
    assert_eq!(claim(&store, &task.id, 1, "w-b", LONG).await, acquired(1));
    assert_eq!(claim(&store, &other.id, 0, "w-b", LONG).await, acquired(1));
}

pub(crate) async fn a_live_lease_is_held_against_every_claimant_with_its_owner_and_time_left(
    store: DynStore,
) {
    let task = planned(&store, 4, 2).await;
    assert_eq!(claim(&store, &task.id, 0, "w-a", LONG).await, acquired(1));
    let by_other = claim(&store, &task.id, 0, "w-b", LONG).await;
    assert_held_by(&by_other, "w-a", LONG);
    // A duplicate delivery to the owner itself runs nothing twice either.
    let by_owner = claim(&store, &task.id, 0, "w-a", LONG).await;
    assert_held_by(&by_owner, "w-a", LONG);
}

pub(crate) async fn an_expired_lease_is_taken_over_by_another_worker_as_attempt_two(
    store: DynStore,
) {
    let task = planned(&store, 4, 2).await;
    assert_eq!(claim(&store, &task.id, 0, "w-a", SHORT).await, acquired(1));
    // w-a died: it never renews, its lease runs out.
    assert_eq!(
        claim_once_expired(&store, &task.id, 0, "w-b").await,
        acquired(2)
    );
    let after = claim(&store, &task.id, 0, "w-a", LONG).await;
    assert_held_by(&after, "w-b", LONG);
    // The other shard never lost a worker.
    assert_eq!(claim(&store, &task.id, 1, "w-b", LONG).await, acquired(1));
}

pub(crate) async fn a_clean_release_lets_the_next_claim_acquire_without_a_new_attempt(
    store: DynStore,
) {
    let task = planned(&store, 4, 2).await;
    assert_eq!(claim(&store, &task.id, 0, "w-a", LONG).await, acquired(1));
    store.release_shard(&task.id, 0, "w-a", true).await.unwrap();
    assert_eq!(claim(&store, &task.id, 0, "w-b", LONG).await, acquired(1));
    store.release_shard(&task.id, 0, "w-b", true).await.unwrap();
    assert_eq!(claim(&store, &task.id, 0, "w-b", LONG).await, acquired(1));
}

pub(crate) async fn a_dirty_release_counts_a_new_attempt_at_the_next_claim(store: DynStore) {
    let task = planned(&store, 4, 2).await;
    assert_eq!(claim(&store, &task.id, 0, "w-a", LONG).await, acquired(1));
    store
        .release_shard(&task.id, 0, "w-a", false)
        .await
        .unwrap();
    assert_eq!(claim(&store, &task.id, 0, "w-b", LONG).await, acquired(2));
    // Released dirty again, then cleanly: only the dirty one counts.
    store
        .release_shard(&task.id, 0, "w-b", false)
        .await
        .unwrap();
    assert_eq!(claim(&store, &task.id, 0, "w-a", LONG).await, acquired(3));
    store.release_shard(&task.id, 0, "w-a", true).await.unwrap();
    assert_eq!(claim(&store, &task.id, 0, "w-b", LONG).await, acquired(3));
}

pub(crate) async fn releasing_a_lease_one_does_not_hold_changes_nothing(store: DynStore) {
    let task = planned(&store, 6, 3).await;
    assert_eq!(claim(&store, &task.id, 0, "w-a", LONG).await, acquired(1));
    store
        .release_shard(&task.id, 0, "w-b", false)
        .await
        .unwrap();
    let held = claim(&store, &task.id, 0, "w-b", LONG).await;
    assert_held_by(&held, "w-a", LONG);

    // A shard nobody claimed, and a task that does not exist: no error either.
    store
        .release_shard(&task.id, 1, "w-b", false)
        .await
        .unwrap();
    assert_eq!(claim(&store, &task.id, 1, "w-b", LONG).await, acquired(1));
    store
        .release_shard("no-such-task", 0, "w-b", false)
        .await
        .unwrap();

    // A lease taken over after it expired is no longer the old owner's to give up.
    assert_eq!(claim(&store, &task.id, 2, "w-a", SHORT).await, acquired(1));
    assert_eq!(
        claim_once_expired(&store, &task.id, 2, "w-b").await,
        acquired(2)
    );
    store
        .release_shard(&task.id, 2, "w-a", false)
        .await
        .unwrap();
    let held = claim(&store, &task.id, 2, "w-c", LONG).await;
    assert_held_by(&held, "w-b", LONG);
    store.release_shard(&task.id, 2, "w-b", true).await.unwrap();
    assert_eq!(
        claim(&store, &task.id, 2, "w-c", LONG).await,
        acquired(2),
        "the old owner's dirty release did not count"
    );
}

pub(crate) async fn a_completed_shard_claims_as_completed_and_completion_dropped_its_lease(
    store: DynStore,
) {
    let task = planned(&store, 4, 2).await;
    assert_eq!(claim(&store, &task.id, 0, "w-a", LONG).await, acquired(1));
    store
        .complete_shard(&task.id, 0, &[ok(0), ok(1)])
        .await
        .unwrap();
    assert_eq!(
        claim(&store, &task.id, 0, "w-b", LONG).await,
        ShardClaim::Completed
    );
    assert_eq!(
        claim(&store, &task.id, 0, "w-a", LONG).await,
        ShardClaim::Completed
    );
    // The lease is gone, not merely hidden behind the completed set: its
    // holder can no longer renew it.
    assert_eq!(
        store
            .renew_leases("w-a", &[pair(&task.id, 0)], LONG)
            .await
            .unwrap(),
        vec![pair(&task.id, 0)]
    );

    // Completed by someone other than the holder (a redelivery that finished
    // first): the holder loses the lease all the same.
    assert_eq!(claim(&store, &task.id, 1, "w-a", LONG).await, acquired(1));
    store
        .complete_shard(&task.id, 1, &[ok(2), ok(3)])
        .await
        .unwrap();
    assert_eq!(
        store
            .renew_leases("w-a", &[pair(&task.id, 1)], LONG)
            .await
            .unwrap(),
        vec![pair(&task.id, 1)]
    );
    assert_eq!(
        claim(&store, &task.id, 1, "w-b", LONG).await,
        ShardClaim::Completed
    );
}

pub(crate) async fn renewing_keeps_a_lease_alive_past_its_original_expiry(store: DynStore) {
    let (one, two) = (planned(&store, 4, 2).await, planned(&store, 4, 2).await);
    let claimed = Instant::now();
    assert_eq!(claim(&store, &one.id, 0, "w-a", SHORT).await, acquired(1));
    assert_eq!(claim(&store, &one.id, 1, "w-a", SHORT).await, acquired(1));
    assert_eq!(claim(&store, &two.id, 0, "w-a", SHORT).await, acquired(1));
    let mine = [pair(&one.id, 0), pair(&one.id, 1), pair(&two.id, 0)];
    assert!(
        store
            .renew_leases("w-a", &mine, LONG)
            .await
            .unwrap()
            .is_empty()
    );

    wait_past(claimed, SHORT).await;
    for (id, shard) in &mine {
        let claim = claim(&store, id, *shard, "w-b", LONG).await;
        assert_held_by(&claim, "w-a", LONG);
    }
    assert!(
        store
            .renew_leases("w-a", &[], LONG)
            .await
            .unwrap()
            .is_empty(),
        "nothing to renew"
    );
}

pub(crate) async fn a_lease_that_expired_unclaimed_is_still_its_owners_to_renew(store: DynStore) {
    let task = planned(&store, 4, 2).await;
    let claimed = Instant::now();
    assert_eq!(claim(&store, &task.id, 0, "w-a", SHORT).await, acquired(1));
    // w-a was slow (a long pause), but nobody took the shard meanwhile.
    wait_past(claimed, SHORT).await;
    assert!(
        store
            .renew_leases("w-a", &[pair(&task.id, 0)], LONG)
            .await
            .unwrap()
            .is_empty()
    );
    let held = claim(&store, &task.id, 0, "w-b", LONG).await;
    assert_held_by(&held, "w-a", LONG);
}

pub(crate) async fn renewing_reports_the_shards_taken_over_completed_released_or_unknown(
    store: DynStore,
) {
    let task = planned(&store, 10, 5).await;
    // Shard 0 stays w-a's; 1 expires and w-b takes it; 2 completes; 3 is
    // released; 4 was never w-a's.
    assert_eq!(claim(&store, &task.id, 0, "w-a", LONG).await, acquired(1));
    assert_eq!(claim(&store, &task.id, 1, "w-a", SHORT).await, acquired(1));
    assert_eq!(claim(&store, &task.id, 2, "w-a", LONG).await, acquired(1));
    assert_eq!(claim(&store, &task.id, 3, "w-a", LONG).await, acquired(1));
    assert_eq!(claim(&store, &task.id, 4, "w-b", LONG).await, acquired(1));
    assert_eq!(
        claim_once_expired(&store, &task.id, 1, "w-b").await,
        acquired(2)
    );
    store
        .complete_shard(&task.id, 2, &[ok(4), ok(5)])
        .await
        .unwrap();
    store.release_shard(&task.id, 3, "w-a", true).await.unwrap();

    let asked: Vec<(String, u32)> = (0..5)
        .map(|shard| pair(&task.id, shard))
        .chain([pair("no-such-task", 0)])
        .collect();
    let lost = store.renew_leases("w-a", &asked, LONG).await.unwrap();
    assert_eq!(
        lost,
        asked[1..].to_vec(),
        "all but shard 0, in the order given"
    );

    // Renewing touched none of the shards w-a lost.
    let shard_1 = claim(&store, &task.id, 1, "w-c", LONG).await;
    assert_held_by(&shard_1, "w-b", LONG);
    let shard_4 = claim(&store, &task.id, 4, "w-c", LONG).await;
    assert_held_by(&shard_4, "w-b", LONG);
    assert_eq!(claim(&store, &task.id, 3, "w-c", LONG).await, acquired(1));
    let shard_0 = claim(&store, &task.id, 0, "w-c", LONG).await;
    assert_held_by(&shard_0, "w-a", LONG);
}

pub(crate) async fn sixteen_concurrent_claims_of_one_shard_acquire_it_exactly_once(
    store: DynStore,
) {
    let task = planned(&store, 4, 2).await;
    let claims: Vec<_> = (0..16)
        .map(|n| {
            let (store, id) = (Arc::clone(&store), task.id.clone());
            tokio::spawn(async move {
                let worker = format!("w-{n}");
                let claim = store.claim_shard(&id, 1, &worker, LONG).await;
                (worker, claim)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut owners = Vec::new();
    for call in claims {
        let (worker, claim) = call.await.unwrap();
        match claim.unwrap() {
            ShardClaim::Acquired { attempt } => {
                assert_eq!(attempt, 1);
                winners.push(worker);
            }
            ShardClaim::Held { owner, .. } => owners.push(owner),
            ShardClaim::Completed => panic!("shard 1 is not complete"),
        }
    }
    assert_eq!(winners.len(), 1, "acquired by {winners:?}");
    assert_eq!(owners.len(), 15);
    assert!(
        owners.iter().all(|owner| *owner == winners[0]),
        "the losers all saw the winner {winners:?} as owner: {owners:?}"
    );
}

pub(crate) async fn item_starts_count_one_two_three_per_item_independently(store: DynStore) {
    let (task, other) = (planned(&store, 4, 2).await, planned(&store, 4, 2).await);
    for expected in 1..=3 {
        assert_eq!(
            store.mark_item_started(&task.id, 2).await.unwrap(),
            expected
        );
    }
    assert_eq!(store.mark_item_started(&task.id, 3).await.unwrap(), 1);
    assert_eq!(store.mark_item_started(&other.id, 2).await.unwrap(), 1);
    assert_eq!(store.mark_item_started(&task.id, 2).await.unwrap(), 4);
    assert_eq!(store.mark_item_started(&task.id, 3).await.unwrap(), 2);
}

pub(crate) async fn leases_and_start_counts_of_an_unknown_task_are_not_found(store: DynStore) {
    for result in [
        store
            .claim_shard("no-such-task", 0, "w-a", LONG)
            .await
            .map(|_| ()),
        store.mark_item_started("no-such-task", 0).await.map(|_| ()),
    ] {
        match result {
            Err(StoreError::NoSuchTask { id }) => assert_eq!(id, "no-such-task"),
            other => panic!("expected not found, got {other:?}"),
        }
    }
}

pub(crate) async fn claiming_a_shard_the_plan_does_not_have_is_refused(store: DynStore) {
    let task = planned(&store, 4, 2).await;
    for shard in [2, 3, u32::MAX] {
        match store.claim_shard(&task.id, shard, "w-a", LONG).await {
            Err(StoreError::NoSuchShard {
                task: id,
                shard: refused,
                planned,
            }) => assert_eq!(
                (id.as_str(), refused, planned),
                (task.id.as_str(), shard, 2)
            ),
            other => panic!("shard {shard}: expected a refusal, got {other:?}"),
        }
    }
    // An unplanned task has no shards at all.
    let unplanned = insert(&store, 4).await;
    assert!(matches!(
        store.claim_shard(&unplanned.id, 0, "w-a", LONG).await,
        Err(StoreError::NoSuchShard { planned: 0, .. })
    ));
    // The refusals stored nothing: the planned shards claim as new.
    assert_eq!(claim(&store, &task.id, 1, "w-a", LONG).await, acquired(1));
}

/// What a cancel waits on: the leases that may still let a worker start
/// items of the task. Released, completed and expired leases do not count,
/// and another task's leases are not this one's.
pub(crate) async fn live_leases_count_the_held_unexpired_shards_of_the_task_only(store: DynStore) {
    let task = planned(&store, 10, 5).await;
    let other = planned(&store, 4, 2).await;
    assert_eq!(store.live_leases(&task.id).await.unwrap(), 0);
    for shard in 0..4 {
        let lease = if shard == 3 { SHORT } else { LONG };
        assert_eq!(
            claim(&store, &task.id, shard, "w-a", lease).await,
            acquired(1)
        );
    }
    assert_eq!(claim(&store, &other.id, 0, "w-a", LONG).await, acquired(1));
    assert_eq!(store.live_leases(&task.id).await.unwrap(), 4);

    store.release_shard(&task.id, 0, "w-a", true).await.unwrap();
    store
        .complete_shard(&task.id, 1, &[ok(2), ok(3)])
        .await
        .unwrap();
    assert_eq!(store.live_leases(&task.id).await.unwrap(), 2);

    let deadline = Instant::now() + PATIENCE;
    // ends: the short lease on shard 3 runs out, or the deadline fails it.
    while store.live_leases(&task.id).await.unwrap() != 1 {
        assert!(
            Instant::now() < deadline,
            "a {SHORT:?} lease still counted live after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.live_leases(&other.id).await.unwrap(), 1);
    assert_eq!(store.live_leases("no-such-task").await.unwrap(), 0);
}
