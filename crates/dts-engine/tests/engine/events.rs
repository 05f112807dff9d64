//! Completion events are delivered at least once: an end whose publish
//! failed, or whose node died before publishing, is published from the
//! store's outbox once the bus takes it.

use crate::harness::*;
use dts_model::{CompletionEvent, TaskStatus};
use dts_store::Store;
use std::time::Duration;

fn summary(events: &[CompletionEvent]) -> Vec<(String, TaskStatus, u64, u64)> {
    let mut summary: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.task_id.clone(),
                e.status,
                e.items_succeeded,
                e.items_failed,
            )
        })
        .collect();
    summary.sort_by(|a, b| a.0.cmp(&b.0));
    summary
}

#[tokio::test(start_paused = true)]
async fn events_the_bus_refused_are_published_once_it_takes_them_again() {
    let h = Harness::new().workers(&[2]).start().await;
    h.refuse_completion_events(true);
    let completed = h.submit(task_of(3, "1s")).await;
    let failed = h.submit(task(&["1s", "1s exit=2"])).await;
    h.wait_until_ended(&completed.id).await;
    h.wait_until_ended(&failed.id).await;
    // A minute of refusals: the drainers keep trying, nothing gets through.
    h.idle(Duration::from_secs(60)).await;
    assert_eq!(h.events(), vec![]);
    assert_eq!(h.store().pending_completions().await.unwrap(), 2);

    h.refuse_completion_events(false);
    h.run_until_within(
        Duration::from_secs(60),
        |s| s.events.len() >= 2,
        "the two refused completion events",
    )
    .await;
    h.idle(Duration::from_secs(120)).await;
    let mut expected = vec![
        (completed.id.clone(), TaskStatus::Completed, 3, 0),
        (failed.id.clone(), TaskStatus::Failed, 1, 1),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(summary(&h.events()), expected, "one event per task");
    assert_eq!(h.store().pending_completions().await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_end_whose_node_died_before_publishing_is_published_after_the_restart() {
    let mut h = Harness::new().workers(&[2]).start().await;
    h.refuse_completion_events(true);
    let task = h.submit(task_of(2, "1s")).await;
    h.wait_until_ended(&task.id).await;
    h.restart().await;
    h.refuse_completion_events(false);
    h.run_until_within(
        Duration::from_secs(60),
        |s| !s.events.is_empty(),
        "the completion event owed from before the restart",
    )
    .await;
    h.idle(Duration::from_secs(60)).await;
    assert_eq!(
        summary(&h.events()),
        vec![(task.id.clone(), TaskStatus::Completed, 2, 0)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_ended_without_a_publish_gets_its_event_with_its_reason_and_name() {
    let h = Harness::new().workers(&[1]).start().await;
    let mut new = task(&["600s"]);
    new.name = Some("nightly".into());
    let running = h.submit(new).await;
    h.run_until(|s| !s.starts.is_empty(), "the item to start")
        .await;
    // Cancelled in the store alone: nobody publishes at the end.
    h.store()
        .transition(
            &running.id,
            TaskStatus::Cancelled,
            Some("cancelled by a test"),
        )
        .await
        .unwrap();
    let state = h
        .run_until_within(
            Duration::from_secs(30),
            |s| !s.events.is_empty(),
            "the cancelled task's event",
        )
        .await;
    let event = &state.events[0];
    assert_eq!(
        (
            event.task_id.as_str(),
            event.status,
            event.reason.as_deref(),
            event.name.as_deref()
        ),
        (
            running.id.as_str(),
            TaskStatus::Cancelled,
            Some("cancelled by a test"),
            Some("nightly")
        )
    );
}
