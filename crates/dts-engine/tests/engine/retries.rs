//! Timeouts, retries and poison items.

use crate::harness::*;
use dts_model::{NewTask, TaskStatus};
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn an_item_that_outlives_its_timeout_is_killed_and_failed() {
    let h = Harness::new().workers(&[1]).start().await;
    let task = h
        .submit(NewTask {
            timeout_secs: 5,
            ..task(&["hang", "1s"])
        })
        .await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!((ended.items_succeeded, ended.items_failed), (1, 1));
    let results = h.results(&task.id).await;
    assert!(results[0].timed_out);
    assert_eq!(results[0].exit_code, None);
    assert_eq!(results[0].duration_ms, 5_000);
    assert_eq!(results[0].attempt, 1);
    assert!(!results[1].timed_out);
}

#[tokio::test(start_paused = true)]
async fn a_failing_item_is_retried_and_its_final_success_is_what_counts() {
    let h = Harness::new().workers(&[1]).start().await;
    let task = h
        .submit(NewTask {
            retries: 2,
            ..task(&["1s fails=2"])
        })
        .await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!((ended.items_succeeded, ended.items_failed), (1, 0));
    let starts = h.starts_of(&task.id);
    assert_eq!(
        starts.iter().map(|s| s.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // 1 s runs with backoffs of 0.5 s and 1 s between them.
    let at: Vec<u64> = starts.iter().map(|s| s.at_ms - starts[0].at_ms).collect();
    assert_eq!(at, vec![0, 1_500, 3_500]);
    let results = h.results(&task.id).await;
    assert_eq!(results.len(), 1);
    assert_eq!((results[0].exit_code, results[0].attempt), (Some(0), 3));
}

#[tokio::test(start_paused = true)]
async fn an_item_that_keeps_failing_uses_every_retry_then_fails_with_its_last_exit_code() {
    let h = Harness::new().workers(&[1]).start().await;
    let task = h
        .submit(NewTask {
            retries: 2,
            ..task(&["1s exit=7", "1s"])
        })
        .await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!((ended.items_succeeded, ended.items_failed), (1, 1));
    let starts_of_failing = h
        .starts_of(&task.id)
        .iter()
        .filter(|s| s.index == 0)
        .count();
    assert_eq!(starts_of_failing, 3);
    let results = h.results(&task.id).await;
    assert_eq!((results[0].exit_code, results[0].attempt), (Some(7), 3));
    assert_eq!((results[1].exit_code, results[1].attempt), (Some(0), 1));
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_item_is_retried_like_a_failed_one() {
    let h = Harness::new().workers(&[1]).start().await;
    let task = h
        .submit(NewTask {
            timeout_secs: 2,
            retries: 1,
            ..task(&["hang"])
        })
        .await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!(h.starts_of(&task.id).len(), 2);
    let results = h.results(&task.id).await;
    assert!(results[0].timed_out);
    assert_eq!(results[0].attempt, 2);
}

#[tokio::test(start_paused = true)]
async fn an_item_that_kills_its_worker_each_time_is_failed_and_the_rest_of_its_shard_runs_once() {
    let mut h = Harness::new()
        .workers(&[1])
        .oversplit(1)
        .min_planned_slots(1)
        .shard_attempts(3)
        .heartbeat(Duration::from_secs(2), Duration::from_secs(10))
        .start()
        .await;
    let task = h
        .submit(task(&["a 1s", "b 1s", "c 1s crash", "d 1s"]))
        .await;

    // Each death leaves the shard to the next worker once the lease lapses.
    for death in 0..3 {
        h.run_until(
            |_| h.worker_is_dead(death),
            &format!("the poison item to kill worker {death}"),
        )
        .await;
        h.add_worker(1).await;
    }
    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!((ended.items_succeeded, ended.items_failed), (3, 1));
    let starts = h.starts_of(&task.id);
    let per_item: Vec<usize> = (0..4)
        .map(|i| starts.iter().filter(|s| s.index == i).count())
        .collect();
    assert_eq!(per_item, vec![1, 1, 3, 1]);
    assert_eq!(
        starts
            .iter()
            .filter(|s| s.index == 2)
            .map(|s| s.worker.as_str())
            .collect::<Vec<_>>(),
        vec!["w0.1", "w1.1", "w2.1"]
    );
    assert!(!h.worker_is_dead(3), "the last worker refused the item");
    let results = h.results(&task.id).await;
    let poison = &results[2];
    assert_eq!(poison.exit_code, None);
    assert_eq!(poison.attempt, 4);
    assert_eq!(poison.worker, "w3.1");
    assert!(
        poison
            .error
            .as_deref()
            .is_some_and(|e| e
                .starts_with("not run again: this item was running when its worker died 3 times")),
        "{:?}",
        poison.error
    );
    assert_eq!(results[3].worker, "w3.1");
}
