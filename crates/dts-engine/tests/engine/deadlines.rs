//! Deadlines (`deadlineSecs`): the task ends by its deadline; items not
//! started are failed with the reason, a running one is killed.

use crate::harness::*;
use dts_model::{NewTask, TaskStatus};
use std::time::Duration;

const NOT_RUN: &str = "not run: the task's deadline (deadlineSecs) passed before this item started";
const KILLED: &str = "killed: the task's deadline (deadlineSecs) passed while it ran";

#[tokio::test(start_paused = true)]
async fn the_deadline_kills_the_running_item_and_fails_those_not_started_with_the_reason() {
    let h = Harness::new().workers(&[1]).oversplit(1).start().await;
    let task = h
        .submit(NewTask {
            deadline_secs: Some(25),
            ..task_of(6, "10s")
        })
        .await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!((ended.items_succeeded, ended.items_failed), (2, 4));
    let results = h.results(&task.id).await;
    let errors: Vec<Option<&str>> = results.iter().map(|r| r.error.as_deref()).collect();
    assert_eq!(
        errors,
        vec![
            None,
            None,
            Some(KILLED),
            Some(NOT_RUN),
            Some(NOT_RUN),
            Some(NOT_RUN)
        ]
    );
    assert!(results[2].timed_out);
    assert_eq!(
        results[2].duration_ms, 5_000,
        "killed at the deadline, 5 s in"
    );
    assert_eq!(
        h.starts_of(&task.id).len(),
        3,
        "no item started after the deadline"
    );
    let took = ended.finished_at.unwrap_or(0) - ended.created_at;
    assert!(
        (25_000..26_000).contains(&took),
        "ended {took} ms after creation"
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_that_ends_before_its_deadline_is_not_touched_by_it() {
    let h = Harness::new().workers(&[2]).start().await;
    let task = h
        .submit(NewTask {
            deadline_secs: Some(60),
            ..task_of(4, "5s")
        })
        .await;

    let ended = h.wait_until_ended(&task.id).await;
    h.idle(Duration::from_secs(120)).await;

    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(h.task(&task.id).await, ended);
    assert!(h.results(&task.id).await.iter().all(|r| r.error.is_none()));
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_fails_a_task_nobody_ran_once_its_deadline_and_a_sweep_passed() {
    let h = Harness::new()
        .workers(&[])
        .sweep_every(Duration::from_secs(30))
        .start()
        .await;
    let task = h
        .submit(NewTask {
            deadline_secs: Some(10),
            ..task_of(3, "1s")
        })
        .await;

    // Sweeps come every 30 s and allow one interval of grace after the
    // deadline: the sweep at 30 s is too early, the one at 60 s ends it.
    h.idle(Duration::from_secs(35)).await;
    assert_eq!(h.task(&task.id).await.status, TaskStatus::InProgress);
    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!(
        ended.error.as_deref(),
        Some("the deadline of 10 s passed before every item ran (0 of 3 ended)")
    );
    let took = ended.finished_at.unwrap_or(0) - ended.created_at;
    assert!(
        (59_000..=60_000).contains(&took),
        "ended {took} ms after creation"
    );
    assert!(h.starts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn no_item_starts_after_the_deadline_even_when_it_waited_for_a_core() {
    // One core, two shards: the second shard's items compute their time
    // left at 0 s, then wait for the core behind the first shard's items.
    let h = Harness::new().workers(&[1]).oversplit(2).start().await;
    let task = h
        .submit(NewTask {
            deadline_secs: Some(25),
            ..task_of(6, "10s")
        })
        .await;

    let ended = h.wait_until_ended(&task.id).await;

    for start in h.starts_of(&task.id) {
        assert!(
            start.at_ms < 25_000,
            "item {} started at {} ms, after the 25 s deadline",
            start.index,
            start.at_ms
        );
    }
    assert_eq!(ended.items_succeeded, 2);
}

#[tokio::test(start_paused = true)]
async fn a_task_the_sweeper_ends_at_its_deadline_publishes_a_completion_event() {
    let h = Harness::new()
        .workers(&[])
        .sweep_every(Duration::from_secs(30))
        .start()
        .await;
    let task = h
        .submit(NewTask {
            deadline_secs: Some(10),
            ..task_of(3, "1s")
        })
        .await;
    h.wait_until_ended(&task.id).await;

    let state = h
        .run_until_within(
            Duration::from_secs(60),
            |s| !s.events.is_empty(),
            "the completion event of the overdue task",
        )
        .await;

    assert_eq!(state.events.len(), 1);
    assert_eq!(state.events[0].task_id, task.id);
    assert_eq!(state.events[0].status, TaskStatus::Failed);
}
