//! Tasks that wait for others (`after`): `WAITING` until their
//! prerequisites end as required, then run once; `SKIPPED`, naming the
//! prerequisite, when one ends otherwise.

use crate::harness::*;
use dts_engine::EngineError;
use dts_model::{AfterStatus, TaskStatus};
use dts_store::Store;
use std::time::Duration;

/// When the first item of task `id` started, in simulated ms.
fn first_start(h: &Harness, id: &str) -> u64 {
    h.starts_of(id)
        .iter()
        .map(|s| s.at_ms)
        .min()
        .unwrap_or_else(|| panic!("no item of task {id} started"))
}

/// When task `id` ended, in simulated ms since the harness started.
async fn ended_at(h: &Harness, id: &str) -> u64 {
    let finished = h.task(id).await.finished_at.expect("the task ended");
    finished.saturating_sub(h.now_ms_epoch())
}

#[tokio::test(start_paused = true)]
async fn a_chain_of_three_whose_middle_task_fails_skips_the_last_naming_it() {
    let h = Harness::new().workers(&[2]).start().await;
    let first = h.submit(task(&["2s", "2s"])).await;
    let middle = h
        .submit(after(
            task(&["1s exit=3"]),
            &[&first.id],
            AfterStatus::Completed,
        ))
        .await;
    let last = h
        .submit(after(task(&["1s"]), &[&middle.id], AfterStatus::Completed))
        .await;
    assert_eq!(
        (middle.status, last.status),
        (TaskStatus::Waiting, TaskStatus::Waiting)
    );

    let skipped = h.wait_until_ended(&last.id).await;
    h.idle(Duration::from_secs(30)).await;

    assert_eq!(h.task(&first.id).await.status, TaskStatus::Completed);
    assert_eq!(h.task(&middle.id).await.status, TaskStatus::Failed);
    assert_eq!(skipped.status, TaskStatus::Skipped);
    let reason = skipped.error.unwrap_or_default();
    assert!(
        reason.contains(&format!("task {} ended FAILED", middle.id)),
        "{reason}"
    );
    assert!(
        h.starts_of(&last.id).is_empty(),
        "a skipped task runs nothing"
    );
    assert!(
        first_start(&h, &middle.id) >= ended_at(&h, &first.id).await,
        "the middle task started before the first ended"
    );
    let events: Vec<_> = h
        .events()
        .into_iter()
        .filter(|e| e.task_id == last.id)
        .collect();
    assert!(
        !events.is_empty(),
        "no completion event for the skipped task"
    );
    assert!(events.iter().all(|e| e.status == TaskStatus::Skipped));
    assert_eq!(events[0].reason.as_deref(), Some(reason.as_str()));
}

#[tokio::test(start_paused = true)]
async fn a_task_waits_for_every_prerequisite_and_then_runs_each_item_once() {
    let h = Harness::new().workers(&[4]).start().await;
    let slow = h.submit(task(&["5s"])).await;
    let quick = h.submit(task(&["1s"])).await;
    let waiting = h
        .submit(after(
            task_of(6, "1s"),
            &[&slow.id, &quick.id],
            AfterStatus::Completed,
        ))
        .await;
    h.idle(Duration::from_secs(3)).await;
    assert_eq!(h.task(&quick.id).await.status, TaskStatus::Completed);
    assert_eq!(h.task(&waiting.id).await.status, TaskStatus::Waiting);
    assert!(h.starts_of(&waiting.id).is_empty());

    let ended = h.wait_until_ended(&waiting.id).await;
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!((ended.items_succeeded, ended.items_failed), (6, 0));
    let mut indices: Vec<u64> = h.starts_of(&waiting.id).iter().map(|s| s.index).collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..6).collect::<Vec<_>>(), "each item once");
    assert!(first_start(&h, &waiting.id) >= ended_at(&h, &slow.id).await);
}

#[tokio::test(start_paused = true)]
async fn with_after_status_ended_a_task_runs_after_a_prerequisite_that_failed() {
    let h = Harness::new().workers(&[2]).start().await;
    let failing = h.submit(task(&["1s exit=1"])).await;
    let cleanup = h
        .submit(after(task(&["1s"]), &[&failing.id], AfterStatus::Ended))
        .await;
    let ended = h.wait_until_ended(&cleanup.id).await;
    assert_eq!(h.task(&failing.id).await.status, TaskStatus::Failed);
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(h.starts_of(&cleanup.id).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_task_whose_prerequisites_already_ended_is_released_at_submit() {
    let h = Harness::new().workers(&[2]).start().await;
    let done = h.submit(task(&["1s"])).await;
    h.wait_until_ended(&done.id).await;
    let cancelled = h.submit(task(&["10s"])).await;
    h.cancel(&cancelled.id).await;

    let runs = h
        .submit(after(task(&["1s"]), &[&done.id], AfterStatus::Completed))
        .await;
    assert_ne!(runs.status, TaskStatus::Waiting, "released at submit");
    let skipped = h
        .submit(after(
            task(&["1s"]),
            &[&cancelled.id],
            AfterStatus::Completed,
        ))
        .await;
    assert_eq!(skipped.status, TaskStatus::Skipped, "skipped at submit");
    assert_eq!(
        h.wait_until_ended(&runs.id).await.status,
        TaskStatus::Completed
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiting_task_that_is_cancelled_never_runs() {
    let h = Harness::new().workers(&[2]).start().await;
    let first = h.submit(task(&["3s"])).await;
    let second = h
        .submit(after(task(&["1s"]), &[&first.id], AfterStatus::Completed))
        .await;
    let cancelled = h.cancel(&second.id).await;
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    h.wait_until_ended(&first.id).await;
    h.idle(Duration::from_secs(30)).await;
    assert_eq!(h.task(&second.id).await.status, TaskStatus::Cancelled);
    assert!(h.starts_of(&second.id).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_task_naming_an_unknown_task_is_refused_and_nothing_is_stored() {
    let h = Harness::new().workers(&[1]).start().await;
    let known = h.submit(task(&["1s"])).await;
    let unknown = dts_model::new_task_id();
    let new = after(
        task(&["1s"]),
        &[&known.id, &unknown],
        AfterStatus::Completed,
    );
    let id = new.id.clone();
    match h.try_submit(new).await {
        Err(EngineError::UnknownPrerequisite {
            position,
            id: named,
        }) => {
            assert_eq!((position, named), (1, unknown));
        }
        other => panic!("expected the unknown prerequisite refused, got {other:?}"),
    }
    assert_eq!(h.store().task(&id).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_task_outlives_a_restart_and_runs_once_after_its_prerequisite() {
    let mut h = Harness::new().workers(&[2]).start().await;
    let first = h.submit(task(&["5s"])).await;
    let second = h
        .submit(after(
            task_of(4, "1s"),
            &[&first.id],
            AfterStatus::Completed,
        ))
        .await;
    h.idle(Duration::from_secs(1)).await;
    // The restart's recovery publishes every unfinished task, the waiting
    // one too: planning must leave it alone.
    h.restart().await;
    h.idle(Duration::from_secs(1)).await;
    assert_eq!(h.task(&second.id).await.status, TaskStatus::Waiting);
    assert!(h.starts_of(&second.id).is_empty());

    let ended = h.wait_until_ended(&second.id).await;
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(h.starts_of(&second.id).len(), 4, "each item once");
    assert!(first_start(&h, &second.id) >= ended_at(&h, &first.id).await);
}
