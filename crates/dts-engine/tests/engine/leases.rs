//! Shard claims and leases: one worker per shard, leases renewed while it
//! runs, taken over once a dead worker's lease lapses.

use crate::harness::*;
use dts_model::TaskStatus;
use dts_store::{ShardClaim, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn each_shard_runs_on_one_worker_and_each_item_once() {
    let h = Harness::new().workers(&[2, 2, 2]).start().await;
    let task = h.submit(task_of(60, "1s")).await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.items_succeeded, 60);
    let mut workers_of_shard: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    let mut indices = BTreeSet::new();
    for start in h.starts_of(&task.id) {
        workers_of_shard
            .entry(start.shard)
            .or_default()
            .insert(start.worker.clone());
        assert!(
            indices.insert(start.index),
            "item {} started twice",
            start.index
        );
    }
    assert_eq!(indices.len(), 60);
    assert_eq!(workers_of_shard.len(), h.plan(&task.id).await.len());
    for (shard, workers) in &workers_of_shard {
        assert_eq!(workers.len(), 1, "shard {shard} ran on {workers:?}");
    }
    for result in h.results(&task.id).await {
        let start = h
            .starts_of(&task.id)
            .into_iter()
            .find(|s| s.index == result.index);
        assert_eq!(start.map(|s| s.worker), Some(result.worker.clone()));
    }
}

#[tokio::test(start_paused = true)]
async fn a_second_claim_is_refused_while_the_lease_lives_and_renewals_extend_it() {
    // No worker: the shards wait on the bus, and the test claims them itself.
    let h = Harness::new().workers(&[]).start().await;
    let task = h.submit(task_of(2, "1s")).await;
    h.run_until(
        |s| s.task(&task.id).chunks_to_execute == 2,
        "the task to be planned",
    )
    .await;
    let store = h.store();
    let lease = Duration::from_secs(10);

    let first = store.claim_shard(&task.id, 0, "w-a", lease).await.unwrap();
    assert_eq!(first, ShardClaim::Acquired { attempt: 1 });
    h.idle(Duration::from_secs(4)).await;
    let second = store.claim_shard(&task.id, 0, "w-b", lease).await.unwrap();
    assert_eq!(
        second,
        ShardClaim::Held {
            owner: "w-a".into(),
            expires_in: Duration::from_secs(6)
        }
    );
    let lost = store
        .renew_leases("w-a", &[(task.id.clone(), 0)], lease)
        .await
        .unwrap();
    assert!(lost.is_empty());
    h.idle(Duration::from_secs(8)).await;
    let after_renewal = store.claim_shard(&task.id, 0, "w-b", lease).await.unwrap();
    assert_eq!(
        after_renewal,
        ShardClaim::Held {
            owner: "w-a".into(),
            expires_in: Duration::from_secs(2)
        }
    );
    h.idle(Duration::from_secs(2)).await;
    let taken_over = store.claim_shard(&task.id, 0, "w-b", lease).await.unwrap();
    assert_eq!(taken_over, ShardClaim::Acquired { attempt: 2 });
    let lost = store
        .renew_leases("w-a", &[(task.id.clone(), 0)], lease)
        .await
        .unwrap();
    assert_eq!(lost, vec![(task.id.clone(), 0)]);
}

#[tokio::test(start_paused = true)]
async fn a_shard_running_longer_than_its_lease_stays_with_its_worker() {
    let h = Harness::new().workers(&[1, 1]).start().await;
    let task = h.submit(task(&["60s"])).await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Completed);
    let starts = h.starts_of(&task.id);
    assert_eq!(
        starts.len(),
        1,
        "renewed every heartbeat, the lease never lapsed"
    );
    assert_eq!(starts[0].attempt, 1);
    assert_eq!(h.results(&task.id).await[0].attempt, 1);
}

#[tokio::test(start_paused = true)]
async fn a_task_delivered_twice_while_it_runs_still_runs_each_item_once() {
    let h = Harness::new().workers(&[1, 1]).start().await;
    let task = h.submit(task_of(4, "5s")).await;
    h.run_until(
        |s| s.starts_of(&task.id).len() == 2,
        "both workers to start an item",
    )
    .await;

    // The scheduler finds the plan and publishes the unfinished shards again;
    // the second delivery of each waits on the lease, then finds it completed.
    h.republish(&task.id).await;
    let ended = h.wait_until_ended(&task.id).await;
    h.idle(Duration::from_secs(30)).await;

    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.items_succeeded, 4);
    assert_eq!(ended.chunks_executed, 4);
    assert_eq!(h.starts_of(&task.id).len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_killed_workers_shards_run_again_elsewhere_once_their_leases_lapse() {
    let mut h = Harness::new()
        .workers(&[2])
        .oversplit(1)
        .min_planned_slots(1)
        .heartbeat(Duration::from_secs(2), Duration::from_secs(10))
        .start()
        .await;
    // Shards [0, 1], [2] and [3]: one slot runs items 0 then 1, the other
    // item 2 then item 3, so items 1 and 3 run when the worker dies.
    let task = h.submit(task_of(4, "5s")).await;
    h.run_until(
        |s| s.starts_of(&task.id).len() == 4,
        "each slot's second item to start",
    )
    .await;
    h.idle(Duration::from_secs(1)).await;
    let killed_at = h.now_ms();
    h.kill_worker(0);
    h.add_worker(2).await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(h.plan(&task.id).await.len(), 3);
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!((ended.items_succeeded, ended.items_failed), (4, 0));
    assert_eq!(ended.chunks_executed, 3);
    let starts = h.starts_of(&task.id);
    let (w0, w1) = (h.worker_id(0), h.worker_id(1));
    let running_at_death: BTreeSet<u64> = starts
        .iter()
        .filter(|s| s.worker == w0 && s.at_ms >= 5_000)
        .map(|s| s.index)
        .collect();
    assert_eq!(running_at_death, BTreeSet::from([1, 3]), "{starts:?}");
    let mut per_index = BTreeMap::new();
    for start in &starts {
        *per_index.entry(start.index).or_insert(0) += 1;
    }
    for index in 0..4 {
        let expected = if running_at_death.contains(&index) {
            2
        } else {
            1
        };
        assert_eq!(
            per_index[&index], expected,
            "starts of item {index}: {per_index:?}"
        );
    }
    for start in starts.iter().filter(|s| s.worker == w1) {
        assert_eq!(start.attempt, 2, "a takeover is the shard's second attempt");
        assert!(
            start.at_ms >= killed_at + 8_000,
            "taken over at {} ms, before the lease (renewed at most 2 s before the kill at {killed_at} ms) lapsed",
            start.at_ms
        );
    }
    let results = h.results(&task.id).await;
    assert_eq!(results.len(), 4);
    for result in &results {
        let expected = if running_at_death.contains(&result.index) {
            (2, w1.clone())
        } else {
            (1, w0.clone())
        };
        assert_eq!(
            (result.attempt, result.worker.clone()),
            expected,
            "item {}",
            result.index
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_killed_workers_cores_count_in_plans_only_until_its_heartbeat_expires() {
    let mut h = Harness::new()
        .workers(&[4, 1])
        .min_planned_slots(1)
        .heartbeat(Duration::from_secs(2), Duration::from_secs(10))
        .start()
        .await;
    h.kill_worker(0);

    let early = h.submit(task_of(40, "1s")).await;
    h.run_until(
        |s| s.task(&early.id).chunks_to_execute > 0,
        "the first task to be planned",
    )
    .await;
    h.idle(Duration::from_secs(11)).await;
    let late = h.submit(task_of(40, "1s")).await;
    h.run_until(
        |s| s.task(&late.id).chunks_to_execute > 0,
        "the second task to be planned",
    )
    .await;

    // The first shard of a guided plan takes the items ÷ (2 × live cores).
    assert_eq!(h.plan(&early.id).await[0].len, 4, "5 cores, 2 shards each");
    assert_eq!(h.plan(&late.id).await[0].len, 20, "1 core left");
}

/// Issue 14: leases were renewed on the heartbeat's loop, after the
/// heartbeat, so a heartbeat stuck behind a busy store held renewals up until
/// the lease lapsed and another worker ran the shard again.
#[tokio::test(start_paused = true)]
async fn a_worker_whose_heartbeats_hang_keeps_its_lease_and_its_long_item_runs_once() {
    let h = Harness::new()
        .workers(&[1, 1])
        .heartbeat(Duration::from_secs(2), Duration::from_secs(10))
        .start()
        .await;
    let task = h.submit(task(&["60s"])).await;
    let started = h
        .run_until(|s| s.starts_of(&task.id).len() == 1, "the item to start")
        .await;
    let holder = started.starts_of(&task.id)[0].worker.clone();
    let number = (0..2)
        .find(|n| h.worker_id(*n) == holder)
        .expect("a harness worker started the item");
    h.delay_heartbeats(number, Duration::from_secs(120));

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Completed);
    let starts = h.starts_of(&task.id);
    assert_eq!(starts.len(), 1, "the lease lapsed: {starts:?}");
    assert_eq!(starts[0].worker, holder);
    let results = h.results(&task.id).await;
    assert_eq!(results.len(), 1);
    assert_eq!((results[0].attempt, &results[0].worker), (1, &holder));
}

/// Issue 14: a renewal asks about the leases held when it began. A shard
/// whose completion was written while its worker was still publishing the
/// task's completion event had let its lease go, and a renewal in that
/// window logged it as lost: under a burst of small tasks, many times.
#[tokio::test(start_paused = true)]
async fn a_shard_completing_while_a_renewal_is_under_way_is_not_taken_for_a_lost_lease() {
    let (warnings, _capture) = Warnings::capture();
    let h = Harness::new()
        .workers(&[2])
        .heartbeat(Duration::from_secs(2), Duration::from_secs(10))
        .start()
        .await;
    // Each task's completion event takes 1 s to publish: half of every 2 s
    // renewal interval, for each of the tasks.
    h.delay_publishes(0, Duration::from_secs(1));
    let mut tasks = Vec::new();
    for n in 0..10 {
        let run = format!("{}ms", 500 + 370 * n);
        tasks.push(h.submit(task(&[run.as_str()])).await);
    }

    for task in &tasks {
        let ended = h.wait_until_ended(&task.id).await;
        assert_eq!(ended.status, TaskStatus::Completed);
        assert_eq!((ended.items_succeeded, ended.items_failed), (1, 0));
        assert_eq!(h.starts_of(&task.id).len(), 1, "{}", task.id);
    }
    assert_eq!(
        warnings.lines_with("lost the lease"),
        Vec::<String>::new(),
        "a shard's own completion was taken for a lost lease"
    );
}
