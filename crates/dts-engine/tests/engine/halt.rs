//! A task's `halt`: `now` kills the running items at the failure that
//! reaches it, `soon` lets them finish; neither starts another item.

use crate::harness::*;
use dts_model::{Halt, TaskStatus};
use std::time::Duration;

/// Item 0 fails at 1 s while the other core runs an item of 10 s (the
/// first of the next shard) beside it; the other eight wait.
fn failing_beside_a_long_one(halt: &str) -> dts_model::NewTask {
    let mut inputs = vec!["1s exit=3"];
    inputs.extend(["10s"; 9]);
    let mut new = task(&inputs);
    new.halt = Halt::parse(halt).unwrap();
    new
}

#[tokio::test(start_paused = true)]
async fn halt_now_fails_the_task_at_the_failure_and_kills_the_item_running_beside_it() {
    let h = Harness::new().workers(&[2]).oversplit(1).start().await;
    let task = h.submit(failing_beside_a_long_one("now,fail=1")).await;
    let ended = h.wait_until_ended(&task.id).await;
    h.idle(Duration::from_secs(60)).await;

    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!(
        ended.error.as_deref(),
        Some("halted: 1 item failed (halt now,fail=1)")
    );
    assert_eq!(h.starts_of(&task.id).len(), 2, "no item started after it");
    let task = h.task(&task.id).await;
    assert_eq!((task.items_succeeded, task.items_failed), (0, 1));
    let results = h.results(&task.id).await;
    assert_eq!(
        results.iter().map(|r| r.index).collect::<Vec<_>>(),
        [0],
        "the killed item records nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn halt_soon_fails_the_task_and_lets_the_item_running_beside_it_finish() {
    let h = Harness::new().workers(&[2]).oversplit(1).start().await;
    let task = h.submit(failing_beside_a_long_one("soon,fail=1")).await;
    let ended = h.wait_until_ended(&task.id).await;
    h.idle(Duration::from_secs(60)).await;

    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!(
        ended.error.as_deref(),
        Some("halted: 1 item failed (halt soon,fail=1)")
    );
    assert_eq!(h.starts_of(&task.id).len(), 2, "no item started after it");
    let task = h.task(&task.id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!((task.items_succeeded, task.items_failed), (1, 1));
    let beside = h
        .starts_of(&task.id)
        .iter()
        .map(|s| s.index)
        .find(|&i| i != 0)
        .expect("an item started beside item 0");
    let results = h.results(&task.id).await;
    let outcomes: Vec<(u64, bool)> = results.iter().map(|r| (r.index, r.succeeded())).collect();
    assert_eq!(outcomes, [(0, false), (beside, true)]);
}
