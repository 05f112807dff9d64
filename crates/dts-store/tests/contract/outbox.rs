//! The completion outbox: every end of a task leaves an entry in the same
//! atomic step, for a drainer to claim, publish and acknowledge.

use crate::helpers::*;
use dts_model::{Halt, ReduceResult, ReduceWhen, Task, TaskStatus, now_millis};
use dts_store::{DynStore, PlanOutcome};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(600);

/// Claims every entry quiet for no time, sorted by task id: what a drainer
/// would publish now.
async fn claim_all(store: &DynStore) -> Vec<(String, TaskStatus)> {
    let mut claimed: Vec<(String, TaskStatus)> = store
        .claim_completions(1000, Duration::ZERO, LONG)
        .await
        .unwrap()
        .into_iter()
        .map(|task| (task.id, task.status))
        .collect();
    claimed.sort_by(|a, b| a.0.cmp(&b.0));
    claimed
}

pub async fn every_way_a_task_ends_leaves_exactly_one_outbox_entry(store: DynStore) {
    let mut expected = Vec::new();
    // COMPLETED by its last shard, FAILED by its last shard.
    let done = planned(&store, 2, 1).await;
    store
        .complete_shard(&done.id, 0, &[ok(0), ok(1)])
        .await
        .unwrap();
    // A redelivered completion ends nothing twice.
    store
        .complete_shard(&done.id, 0, &[ok(0), ok(1)])
        .await
        .unwrap();
    expected.push((done.id.clone(), TaskStatus::Completed));
    let failing = planned(&store, 2, 1).await;
    store
        .complete_shard(&failing.id, 0, &[ok(0), failed(1)])
        .await
        .unwrap();
    expected.push((failing.id.clone(), TaskStatus::Failed));
    // COMPLETED by an empty plan.
    let empty = insert(&store, 0).await;
    match store.save_plan(&empty.id, &[]).await.unwrap() {
        PlanOutcome::Created(task) => assert_eq!(task.status, TaskStatus::Completed),
        other => panic!("expected a new plan, got {other:?}"),
    }
    expected.push((empty.id.clone(), TaskStatus::Completed));
    // CANCELLED, FAILED by a deadline (a transition with a reason),
    // SUBMISSION_FAILED: transitions.
    let running = planned(&store, 4, 2).await;
    store
        .transition(
            &running.id,
            TaskStatus::Cancelled,
            Some("cancelled by a test"),
        )
        .await
        .unwrap();
    expected.push((running.id.clone(), TaskStatus::Cancelled));
    let overdue = planned(&store, 4, 2).await;
    store
        .transition(&overdue.id, TaskStatus::Failed, Some("the deadline passed"))
        .await
        .unwrap();
    expected.push((overdue.id.clone(), TaskStatus::Failed));
    let unsubmitted = task_in(&store, TaskStatus::SubmissionFailed).await;
    expected.push((unsubmitted.id.clone(), TaskStatus::SubmissionFailed));
    // FAILED by a halt, in the write that counted the failure.
    let mut halting = task_with(&dts_model::new_task_id(), now_millis(), 4);
    halting.halt = Halt::parse("now,fail=1").unwrap();
    store.insert_task(&halting, &inputs(4)).await.unwrap();
    plan_evenly(&store, &halting, 4, 2).await;
    let status = store
        .record_shard_results(&halting.id, 0, &[failed(0)])
        .await
        .unwrap();
    assert_eq!(status, TaskStatus::Failed);
    expected.push((halting.id.clone(), TaskStatus::Failed));
    // COMPLETED by the record of its reduce.
    let mut reduced = task_with(&dts_model::new_task_id(), now_millis(), 1);
    reduced.reduce = Some(reduce_when(ReduceWhen::Success));
    store.insert_task(&reduced, &inputs(1)).await.unwrap();
    plan_evenly(&store, &reduced, 1, 1).await;
    store
        .complete_shard(&reduced.id, 0, &[ok(0)])
        .await
        .unwrap();
    store.claim_reduce(&reduced.id, "worker-a").await.unwrap();
    let result = ReduceResult {
        exit_code: Some(0),
        signal: None,
        timed_out: false,
        stdout: Default::default(),
        stderr: Default::default(),
        stdout_truncated: false,
        stderr_truncated: false,
        duration_ms: 1,
        worker: "worker-a".to_string(),
        attempt: 1,
        error: None,
    };
    store
        .finish_reduce(&reduced.id, "worker-a", 1, &result)
        .await
        .unwrap()
        .expect("the claim holder's record");
    expected.push((reduced.id.clone(), TaskStatus::Completed));
    // Tasks that have not ended have none, reducing ones too.
    planned(&store, 4, 2).await;
    task_in(&store, TaskStatus::Reducing).await;
    task_in(&store, TaskStatus::Submitted).await;
    task_in(&store, TaskStatus::Retrying).await;

    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(store.pending_completions().await.unwrap(), 8);
    assert_eq!(claim_all(&store).await, expected);
}

pub async fn a_claimed_completion_is_hidden_until_its_lease_expires(store: DynStore) {
    let task = task_in(&store, TaskStatus::Completed).await;
    let lease = Duration::from_millis(1500);
    let first = store
        .claim_completions(10, Duration::ZERO, lease)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, task.id);
    assert!(
        store
            .claim_completions(10, Duration::ZERO, lease)
            .await
            .unwrap()
            .is_empty(),
        "a second drainer must not get an entry claimed a moment ago"
    );
    assert_eq!(store.pending_completions().await.unwrap(), 1);
    // The claimant never acknowledged it (it died): the entry comes back.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let again = store
        .claim_completions(10, Duration::ZERO, lease)
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        vec![task.id.as_str()]
    );
}

pub async fn an_acknowledged_completion_is_gone_for_good(store: DynStore) {
    let acked = task_in(&store, TaskStatus::Cancelled).await;
    let kept = task_in(&store, TaskStatus::Failed).await;
    let claimed = store
        .claim_completions(10, Duration::ZERO, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    for task in &claimed {
        assert!(task.finished_at.is_some(), "{task:?}");
    }
    let finished_at = |task: &Task| task.finished_at.unwrap();
    store
        .ack_completion(&acked.id, finished_at(&acked))
        .await
        .unwrap();
    // An acknowledgement of another end (an earlier one, before a retry)
    // leaves the entry.
    store
        .ack_completion(&kept.id, finished_at(&kept) - 1)
        .await
        .unwrap();
    // Acknowledging twice, or a task without an entry, changes nothing.
    store
        .ack_completion(&acked.id, finished_at(&acked))
        .await
        .unwrap();
    store.ack_completion("no-such-task", 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.pending_completions().await.unwrap(), 1);
    assert_eq!(
        claim_all(&store).await,
        vec![(kept.id.clone(), TaskStatus::Failed)]
    );
}

pub async fn an_end_never_published_waits_out_the_settle_time_then_is_claimed(store: DynStore) {
    // The process that ended the task crashed before publishing: only the
    // store's write happened.
    let task = task_in(&store, TaskStatus::Completed).await;
    assert!(
        store
            .claim_completions(10, LONG, LONG)
            .await
            .unwrap()
            .is_empty(),
        "an entry younger than the settle time is left to the process that wrote it"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let claimed = store
        .claim_completions(10, Duration::from_secs(1), LONG)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].id.as_str(), claimed[0].status),
        (task.id.as_str(), TaskStatus::Completed)
    );
}

pub async fn a_task_retried_before_its_event_went_out_owes_only_its_next_end(store: DynStore) {
    let task = planned(&store, 2, 1).await;
    store
        .complete_shard(&task.id, 0, &[ok(0), failed(1)])
        .await
        .unwrap();
    store.retry_task(&task.id).await.unwrap();
    // Running again: its earlier end is not announced as INPROGRESS.
    assert!(claim_all(&store).await.is_empty());
    assert_eq!(store.pending_completions().await.unwrap(), 0);
    store.complete_shard(&task.id, 0, &[ok(1)]).await.unwrap();
    assert_eq!(
        claim_all(&store).await,
        vec![(task.id.clone(), TaskStatus::Completed)]
    );
}

pub async fn deleting_an_ended_task_drops_its_pending_event(store: DynStore) {
    let task = task_in(&store, TaskStatus::Cancelled).await;
    store.delete_task(&task.id).await.unwrap();
    assert!(claim_all(&store).await.is_empty());
    assert_eq!(store.pending_completions().await.unwrap(), 0);
}
