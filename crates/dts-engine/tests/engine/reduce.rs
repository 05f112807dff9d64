//! A task's `reduce`: after its last item's result the task is
//! `REDUCING`, a worker runs the reduce once, and the reduce's record ends
//! the task (`COMPLETED`, or `FAILED` with how the reduce failed), with one
//! completion event. A reduce whose worker dies runs again as the next
//! attempt; a cancel or the deadline stops it.

use crate::harness::fake::Start;
use crate::harness::*;
use dts_model::{Bytes, CompletionEvent, NewTask, ReduceWhen, TaskStatus};
use std::time::Duration;

/// The completion events of task `id` received so far.
fn events_of(h: &Harness, id: &str) -> Vec<CompletionEvent> {
    h.events().into_iter().filter(|e| e.task_id == id).collect()
}

/// When task `id` ended, in simulated ms since the harness started.
async fn ended_at(h: &Harness, id: &str) -> u64 {
    let finished = h.task(id).await.finished_at.expect("the task ended");
    finished.saturating_sub(h.now_ms_epoch())
}

/// The only start of task `id`'s reduce.
fn only_reduce_start(h: &Harness, id: &str) -> Start {
    let starts = h.reduce_starts(id);
    assert_eq!(starts.len(), 1, "one run of the reduce: {starts:?}");
    starts[0].clone()
}

/// Waits until the reduce of task `id` has started `n` times; returns the
/// `n`th start.
async fn reduce_started(h: &Harness, id: &str, n: usize) -> Start {
    let state = h
        .run_until(
            |s| s.reduce_starts(id).len() >= n,
            &format!("reduce start {n} of task {id}"),
        )
        .await;
    state.reduce_starts(id)[n - 1].clone()
}

#[tokio::test(start_paused = true)]
async fn a_task_is_reducing_from_its_last_items_result_until_the_reduce_records_and_then_completes()
{
    let h = Harness::new().workers(&[2]).start().await;
    let task = h
        .submit(with_reduce(
            task_of(3, "2s"),
            "5s out=total",
            ReduceWhen::Success,
        ))
        .await;

    // Every item has its result, the reduce has not recorded: REDUCING,
    // and no event yet.
    let reducing = h
        .run_until(
            |s| s.task(&task.id).status == TaskStatus::Reducing,
            "the task to reduce",
        )
        .await;
    let at_reducing = reducing.task(&task.id).clone();
    assert_eq!(
        (at_reducing.items_succeeded, at_reducing.items_failed),
        (3, 0)
    );
    assert_eq!(h.results(&task.id).await.len(), 3);
    assert_eq!(at_reducing.reduce_result, None);
    assert_eq!(at_reducing.finished_at, None);
    assert!(
        events_of(&h, &task.id).is_empty(),
        "no event while reducing"
    );

    let start = reduce_started(&h, &task.id, 1).await;
    let last_item_end = h
        .starts_of(&task.id)
        .iter()
        .map(|s| s.at_ms + 2_000)
        .max()
        .expect("the items ran");
    assert!(
        start.at_ms >= last_item_end,
        "the reduce started at {} ms, before the last item ended at {last_item_end} ms",
        start.at_ms
    );
    // A second before the reduce ends, the task still waits for it.
    h.idle(Duration::from_secs(4)).await;
    let during = h.task(&task.id).await;
    assert_eq!(during.status, TaskStatus::Reducing);
    assert_eq!(during.reduce_result, None);
    assert!(
        events_of(&h, &task.id).is_empty(),
        "no event while reducing"
    );

    let ended = h.wait_until_ended(&task.id).await;
    h.idle(Duration::from_secs(60)).await;

    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.error, None);
    assert!(ended_at(&h, &task.id).await >= start.at_ms + 5_000);
    let result = ended
        .reduce_result
        .expect("the reduce's result is on the task");
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(result.stdout, Bytes::from("total"));
    assert_eq!(result.duration_ms, 5_000);
    assert_eq!(
        (result.attempt, result.worker.as_str()),
        (1, h.worker_id(0).as_str())
    );
    assert_eq!(only_reduce_start(&h, &task.id).attempt, 1);
    assert_eq!(h.starts_of(&task.id).len(), 3, "each item once");
    let events = events_of(&h, &task.id);
    assert_eq!(events.len(), 1, "one completion event: {events:?}");
    assert_eq!(events[0].status, TaskStatus::Completed);
    assert_eq!(
        (events[0].items_succeeded, events[0].reason.as_deref()),
        (3, None)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_reduce_ends_the_task_failed_saying_how_it_exited() {
    let h = Harness::new().workers(&[2]).start().await;
    let task = h
        .submit(with_reduce(
            task_of(2, "1s"),
            "2s exit=4",
            ReduceWhen::Success,
        ))
        .await;

    let ended = h.wait_until_ended(&task.id).await;
    h.idle(Duration::from_secs(60)).await;

    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!(
        ended.error.as_deref(),
        Some("the reduce exited 4 (attempt 1)")
    );
    assert_eq!(
        (ended.items_succeeded, ended.items_failed),
        (2, 0),
        "the items' results stand"
    );
    let result = ended.reduce_result.expect("the failed reduce is recorded");
    assert_eq!((result.exit_code, result.attempt), (Some(4), 1));
    assert_eq!(only_reduce_start(&h, &task.id).attempt, 1);
    let events = events_of(&h, &task.id);
    assert_eq!(events.len(), 1, "one completion event: {events:?}");
    assert_eq!(events[0].status, TaskStatus::Failed);
    assert_eq!(events[0].reason, ended.error);
}

#[tokio::test(start_paused = true)]
async fn with_when_success_a_task_whose_item_failed_ends_failed_without_reducing() {
    let h = Harness::new().workers(&[2]).start().await;
    let task = h
        .submit(with_reduce(
            task(&["1s", "1s exit=2"]),
            "1s",
            ReduceWhen::Success,
        ))
        .await;

    let ended = h.wait_until_ended(&task.id).await;
    h.idle(Duration::from_secs(60)).await;

    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!((ended.items_succeeded, ended.items_failed), (1, 1));
    assert_eq!(ended.reduce_result, None, "no reduce result");
    assert!(h.reduce_starts(&task.id).is_empty(), "the reduce never ran");
    assert_eq!(h.task(&task.id).await, ended, "nothing changed after");
    let events = events_of(&h, &task.id);
    assert_eq!(events.len(), 1, "one completion event: {events:?}");
    assert_eq!(events[0].status, TaskStatus::Failed);
}

#[tokio::test(start_paused = true)]
async fn with_when_always_a_task_whose_item_failed_reduces_and_still_ends_failed() {
    let h = Harness::new().workers(&[2]).start().await;
    let task = h
        .submit(with_reduce(
            task(&["1s", "1s exit=2"]),
            "3s out=summary",
            ReduceWhen::Always,
        ))
        .await;

    h.run_until(
        |s| s.task(&task.id).status == TaskStatus::Reducing,
        "the task to reduce despite its failed item",
    )
    .await;
    let ended = h.wait_until_ended(&task.id).await;
    h.idle(Duration::from_secs(60)).await;

    let start = only_reduce_start(&h, &task.id);
    assert_eq!(start.attempt, 1);
    let result = ended
        .reduce_result
        .expect("the reduce's result is on the task");
    assert!(result.succeeded(), "{result:?}");
    assert_eq!(result.stdout, Bytes::from("summary"));
    // The reduce ran, but the item's failure still fails the task; the
    // task's error is not the reduce's.
    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!((ended.items_succeeded, ended.items_failed), (1, 1));
    assert!(
        !ended.error.as_deref().unwrap_or("").contains("reduce"),
        "{:?}",
        ended.error
    );
    assert!(ended_at(&h, &task.id).await >= start.at_ms + 3_000);
    let events = events_of(&h, &task.id);
    assert_eq!(events.len(), 1, "one completion event: {events:?}");
    assert_eq!(events[0].status, TaskStatus::Failed);
}

#[tokio::test(start_paused = true)]
async fn a_worker_with_free_slots_runs_a_long_reduce_once_and_it_ends_the_task() {
    // The reduce loop looks for reduces every 500 ms: with slots to spare,
    // it must not claim again the reduce it runs (the store gives a worker
    // its own claim again, as a new attempt).
    let h = Harness::new().workers(&[4]).start().await;
    let task = h
        .submit(with_reduce(task(&["1s"]), "30s", ReduceWhen::Success))
        .await;

    let ended = h.wait_until_ended(&task.id).await;
    h.idle(Duration::from_secs(60)).await;

    assert_eq!(ended.status, TaskStatus::Completed);
    let start = only_reduce_start(&h, &task.id);
    assert_eq!(start.attempt, 1);
    let result = ended
        .reduce_result
        .expect("the reduce's result is on the task");
    assert_eq!((result.attempt, result.duration_ms), (1, 30_000));
    assert_eq!(ended_at(&h, &task.id).await, start.at_ms + 30_000);
}

/// The number of the worker whose id is `id`, of the first `count`.
fn worker_number(h: &Harness, count: usize, id: &str) -> usize {
    (0..count)
        .find(|&n| h.worker_id(n) == id)
        .unwrap_or_else(|| panic!("no worker {id}"))
}

#[tokio::test(start_paused = true)]
async fn a_reduce_whose_worker_dies_runs_again_on_another_worker_as_attempt_2() {
    let mut h = Harness::new()
        .workers(&[1, 1])
        .heartbeat(Duration::from_secs(2), Duration::from_secs(10))
        .start()
        .await;
    let task = h
        .submit(with_reduce(task(&["1s"]), "20s", ReduceWhen::Success))
        .await;
    let first = reduce_started(&h, &task.id, 1).await;
    let dead = worker_number(&h, 2, &first.worker);
    let other = h.worker_id(1 - dead);

    h.idle(Duration::from_secs(5)).await;
    h.kill_worker(dead);
    let killed_at = h.now_ms();
    // While the dead worker's heartbeat lives, its claim holds.
    h.idle(Duration::from_secs(7)).await;
    assert_eq!(h.reduce_starts(&task.id).len(), 1);
    assert_eq!(h.task(&task.id).await.status, TaskStatus::Reducing);

    let second = reduce_started(&h, &task.id, 2).await;
    let ended = h.wait_until_ended(&task.id).await;
    h.idle(Duration::from_secs(60)).await;

    assert_eq!(first.attempt, 1);
    assert_eq!(
        (second.attempt, second.worker.as_str()),
        (2, other.as_str())
    );
    assert!(
        (killed_at + 8_000..killed_at + 12_000).contains(&second.at_ms),
        "killed at {killed_at} ms, the reduce ran again at {} ms",
        second.at_ms
    );
    assert_eq!(ended.status, TaskStatus::Completed);
    let result = ended
        .reduce_result
        .expect("the reduce's result is on the task");
    assert_eq!((result.attempt, result.worker), (2, other));
    assert_eq!(result.duration_ms, 20_000);
    assert_eq!(h.reduce_starts(&task.id).len(), 2);
    assert_eq!(h.starts_of(&task.id).len(), 1, "the item ran once");
    let events = events_of(&h, &task.id);
    assert_eq!(events.len(), 1, "one completion event: {events:?}");
    assert_eq!(events[0].status, TaskStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_worker_restarted_mid_reduce_runs_it_again_as_attempt_2_once_the_old_heartbeat_lapses() {
    let mut h = Harness::new()
        .workers(&[1])
        .heartbeat(Duration::from_secs(2), Duration::from_secs(10))
        .start()
        .await;
    let task = h
        .submit(with_reduce(task(&["1s"]), "20s", ReduceWhen::Success))
        .await;
    let first = reduce_started(&h, &task.id, 1).await;
    h.idle(Duration::from_secs(5)).await;

    h.restart_worker(0).await;
    let restarted_at = h.now_ms();
    let second = reduce_started(&h, &task.id, 2).await;
    let ended = h.wait_until_ended(&task.id).await;
    h.idle(Duration::from_secs(60)).await;

    let again = h.worker_id(0);
    assert_ne!(again, first.worker);
    assert_eq!(
        (second.attempt, second.worker.as_str()),
        (2, again.as_str())
    );
    assert!(
        second.at_ms >= restarted_at + 8_000,
        "restarted at {restarted_at} ms, the reduce ran again at {} ms, while the old claim held",
        second.at_ms
    );
    assert_eq!(ended.status, TaskStatus::Completed);
    let result = ended
        .reduce_result
        .expect("the reduce's result is on the task");
    assert_eq!((result.attempt, result.worker), (2, again));
    assert_eq!(h.reduce_starts(&task.id).len(), 2);
    let events = events_of(&h, &task.id);
    assert_eq!(events.len(), 1, "one completion event: {events:?}");
    assert_eq!(events[0].status, TaskStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_reducing_task_stops_the_reduce_and_records_no_result() {
    let h = Harness::new().workers(&[1]).start().await;
    let task = h
        .submit(with_reduce(task(&["1s"]), "30s", ReduceWhen::Success))
        .await;
    reduce_started(&h, &task.id, 1).await;
    h.idle(Duration::from_secs(5)).await;
    assert_eq!(h.task(&task.id).await.status, TaskStatus::Reducing);

    let cancelled = h.cancel(&task.id).await;
    // Well past the reduce's own 30 s.
    h.idle(Duration::from_secs(120)).await;

    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    let task = h.task(&task.id).await;
    assert_eq!(task.status, TaskStatus::Cancelled);
    assert_eq!(
        task.reduce_result, None,
        "no reduce result after the cancel"
    );
    assert_eq!(task.finished_at, cancelled.finished_at);
    assert_eq!(h.reduce_starts(&task.id).len(), 1, "not run again");
    let state = h.state().await;
    assert!(
        state.live_workers.iter().all(|w| w.running_items == 0),
        "the reduce was stopped: {:?}",
        state.live_workers
    );
    let events = events_of(&h, &task.id);
    assert_eq!(events.len(), 1, "one completion event: {events:?}");
    assert_eq!(events[0].status, TaskStatus::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_a_long_reduce_short_and_the_task_ends_failed() {
    let h = Harness::new().workers(&[1]).start().await;
    let task = h
        .submit(with_reduce(
            NewTask {
                deadline_secs: Some(10),
                ..task(&["2s"])
            },
            "60s",
            ReduceWhen::Success,
        ))
        .await;
    let deadline_ms = task.created_at.saturating_sub(h.now_ms_epoch()) + 10_000;

    let ended = h.wait_until_ended(&task.id).await;
    h.idle(Duration::from_secs(60)).await;

    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!(
        ended.error.as_deref(),
        Some("the reduce timed out (attempt 1)")
    );
    let start = only_reduce_start(&h, &task.id);
    assert!(start.at_ms < deadline_ms);
    let result = ended
        .reduce_result
        .clone()
        .expect("the cut reduce is recorded");
    assert!(result.timed_out, "{result:?}");
    assert_eq!(
        start.at_ms + result.duration_ms,
        deadline_ms,
        "the reduce was stopped at the deadline"
    );
    let took = ended_at(&h, &task.id).await;
    assert!(
        (deadline_ms..deadline_ms + 1_000).contains(&took),
        "ended at {took} ms, the deadline was at {deadline_ms} ms"
    );
    assert_eq!(h.task(&task.id).await, ended, "nothing changed after");
    let events = events_of(&h, &task.id);
    assert_eq!(events.len(), 1, "one completion event: {events:?}");
    assert_eq!(events[0].status, TaskStatus::Failed);
    assert_eq!(events[0].reason, ended.error);
}

#[tokio::test(start_paused = true)]
async fn a_reduce_due_after_the_deadline_is_not_run_and_the_task_fails_saying_so() {
    // `always`: the items the deadline killed do not stop the reduce from
    // being due, but no time is left to run it.
    let h = Harness::new().workers(&[1]).start().await;
    let task = h
        .submit(with_reduce(
            NewTask {
                deadline_secs: Some(5),
                ..task(&["20s"])
            },
            "10s",
            ReduceWhen::Always,
        ))
        .await;
    let deadline_ms = task.created_at.saturating_sub(h.now_ms_epoch()) + 5_000;

    let ended = h.wait_until_ended(&task.id).await;
    h.idle(Duration::from_secs(60)).await;

    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!((ended.items_succeeded, ended.items_failed), (0, 1));
    assert!(h.reduce_starts(&task.id).is_empty(), "the reduce never ran");
    let result = ended
        .reduce_result
        .clone()
        .expect("the reduce that could not run is recorded");
    assert_eq!((result.exit_code, result.attempt), (None, 1));
    let error = ended.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("the reduce")
            && error.contains("deadline")
            && error.ends_with("(attempt 1)"),
        "{error}"
    );
    let took = ended_at(&h, &task.id).await;
    assert!(
        (deadline_ms..deadline_ms + 1_000).contains(&took),
        "ended at {took} ms, the deadline was at {deadline_ms} ms"
    );
    let events = events_of(&h, &task.id);
    assert_eq!(events.len(), 1, "one completion event: {events:?}");
    assert_eq!(events[0].status, TaskStatus::Failed);
    assert_eq!(events[0].reason, ended.error);
}
