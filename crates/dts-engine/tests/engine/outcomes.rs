//! Exact counts, completion events and many tasks at once.

use crate::harness::*;
use dts_model::{Bytes, NewTask, TaskStatus};
use dts_store::{ResultFilter, Store};
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn a_task_with_some_failing_items_is_failed_with_exact_counts() {
    let h = Harness::new().workers(&[2, 2]).start().await;
    let inputs: Vec<String> = (0..20)
        .map(|i| {
            if i % 4 == 0 {
                format!("{i} exit=1")
            } else {
                format!("{i} 1s")
            }
        })
        .collect();
    let task = h
        .submit(NewTask {
            inputs: inputs.into_iter().map(Bytes::from).collect(),
            ..task(&[])
        })
        .await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!(ended.items_total, 20);
    assert_eq!((ended.items_succeeded, ended.items_failed), (15, 5));
    assert_eq!(ended.chunks_executed, ended.chunks_to_execute);
    let (failed, page) = h
        .store()
        .results(&task.id, ResultFilter::Failed, 0, 100)
        .await
        .unwrap();
    assert_eq!(failed, 5);
    assert_eq!(
        page.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![0, 4, 8, 12, 16]
    );
    let (succeeded, _) = h
        .store()
        .results(&task.id, ResultFilter::Succeeded, 0, 0)
        .await
        .unwrap();
    assert_eq!(succeeded, 15);
}

#[tokio::test(start_paused = true)]
async fn every_ended_task_publishes_one_completion_event_with_its_counts() {
    let h = Harness::new().workers(&[2]).start().await;
    let completed = h.submit(task_of(3, "1s")).await;
    let failed = h.submit(task(&["1s", "1s exit=2"])).await;
    let empty = h.submit(task(&[])).await;

    let state = h
        .run_until(|s| s.events.len() >= 3, "three completion events")
        .await;
    h.idle(std::time::Duration::from_secs(60)).await;

    let events = h.events();
    assert_eq!(events.len(), 3, "one event per task: {events:?}");
    let find = |id: &str| match state.events.iter().find(|e| e.task_id == id) {
        Some(event) => event.clone(),
        None => panic!("no completion event for {id}"),
    };
    let e = find(&completed.id);
    assert_eq!(
        (e.status, e.items_total, e.items_succeeded, e.items_failed),
        (TaskStatus::Completed, 3, 3, 0)
    );
    let e = find(&failed.id);
    assert_eq!(
        (e.status, e.items_total, e.items_succeeded, e.items_failed),
        (TaskStatus::Failed, 2, 1, 1)
    );
    let e = find(&empty.id);
    assert_eq!(
        (e.status, e.items_total, e.items_succeeded, e.items_failed),
        (TaskStatus::Completed, 0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn many_tasks_at_once_all_complete_with_every_item_run_once() {
    let h = Harness::new().workers(&[2, 3]).start().await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(
            h.submit(task_of(10, &format!("{}ms", 200 + 100 * n)))
                .await
                .id,
        );
    }

    let state = h
        .run_until(
            |s| ids.iter().all(|id| s.ended(id)),
            "all twenty tasks to end",
        )
        .await;

    for id in &ids {
        let task = state.task(id);
        assert_eq!(task.status, TaskStatus::Completed, "task {id}");
        assert_eq!(task.items_succeeded, 10, "task {id}");
    }
    assert_eq!(state.starts.len(), 200);
    let unique: BTreeSet<(String, u64)> = state
        .starts
        .iter()
        .map(|s| (s.task.clone(), s.index))
        .collect();
    assert_eq!(unique.len(), 200, "no item ran twice");
    let workers: BTreeSet<&str> = state.starts.iter().map(|s| s.worker.as_str()).collect();
    assert_eq!(workers.len(), 2, "both workers ran items");
}

#[tokio::test(start_paused = true)]
async fn a_worker_stopped_gracefully_finishes_its_running_items_and_hands_back_the_rest() {
    let mut h = Harness::new().workers(&[1]).oversplit(1).start().await;
    let task = h.submit(task_of(4, "3s")).await;
    h.run_until(
        |s| s.starts_of(&task.id).len() == 2,
        "the second item to start",
    )
    .await;

    h.stop_worker(0).await;
    h.add_worker(1).await;
    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.items_succeeded, 4);
    let starts = h.starts_of(&task.id);
    let workers: Vec<(u64, &str, u32)> = starts
        .iter()
        .map(|s| (s.index, s.worker.as_str(), s.attempt))
        .collect();
    assert_eq!(
        workers,
        vec![
            (0, "w0.1", 1),
            (1, "w0.1", 1),
            (2, "w1.1", 1),
            (3, "w1.1", 1)
        ],
        "a clean hand-back is not a new attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn results_of_quick_items_are_recorded_while_a_slow_item_after_them_runs() {
    let h = Harness::new()
        .workers(&[1])
        .oversplit(1)
        .min_planned_slots(1)
        .start()
        .await;
    // One shard: two quick items, then one that runs a minute.
    let task = h.submit(task(&["a 50ms", "b 50ms", "c 60s"])).await;
    h.run_until(
        |s| s.starts_of(&task.id).len() == 3,
        "the slow item to start",
    )
    .await;
    h.idle(Duration::from_secs(1)).await;

    let running = h.task(&task.id).await;
    assert_eq!(running.status, TaskStatus::InProgress);
    assert_eq!(
        running.items_succeeded, 2,
        "the quick items' results are recorded"
    );
    assert_eq!(
        h.results(&task.id)
            .await
            .iter()
            .map(|r| r.index)
            .collect::<Vec<_>>(),
        vec![0, 1]
    );
}
