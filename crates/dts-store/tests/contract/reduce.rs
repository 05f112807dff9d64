//! A task's reduce: its last shard starts it instead of ending the task,
//! one worker at a time runs it (while its heartbeat is live), and the
//! record of the attempt holding the claim ends the task, once.

use crate::helpers::*;
use crate::workers::worker;
use dts_model::{Bytes, ReduceResult, ReduceWhen, Task, TaskStatus, now_millis};
use dts_store::{DynStore, PlanOutcome, ReduceClaim, StoreError};
use std::time::{Duration, Instant};

/// Long enough for any assertion made while a heartbeat must be live.
const LIVE: Duration = Duration::from_secs(60);

/// A stored task of two items, in one shard, whose reduce runs `when`:
/// `INPROGRESS`.
async fn with_reduce(store: &DynStore, when: ReduceWhen) -> Task {
    let mut task = task_with(&dts_model::new_task_id(), now_millis(), 2);
    task.reduce = Some(reduce_when(when));
    store.insert_task(&task, &inputs(2)).await.unwrap();
    plan_evenly(store, &task, 2, 1).await
}

/// A task whose two items ran, the second `failing` or not, and whose
/// reduce (run `when`) is due: `REDUCING`.
async fn reducing(store: &DynStore, when: ReduceWhen, failing: bool) -> Task {
    let task = with_reduce(store, when).await;
    let second = if failing { failed(1) } else { ok(1) };
    let done = store
        .complete_shard(&task.id, 0, &[ok(0), second])
        .await
        .unwrap();
    assert_eq!(done.task.status, TaskStatus::Reducing);
    done.task
}

/// A reduce run by `worker` as `attempt` that exited `exit_code`.
fn ran(worker: &str, attempt: u32, exit_code: i32) -> ReduceResult {
    ReduceResult {
        exit_code: Some(exit_code),
        signal: None,
        timed_out: false,
        stdout: Bytes::from("2\n"),
        stderr: Bytes::default(),
        stdout_truncated: false,
        stderr_truncated: false,
        duration_ms: 7,
        worker: worker.to_string(),
        attempt,
        error: None,
    }
}

/// A heartbeat of `id` live for `ttl`.
async fn beat(store: &DynStore, id: &str, ttl: Duration) {
    store.heartbeat(&worker(id, 4, 0), ttl).await.unwrap();
}

/// Lets `id`'s heartbeat lapse, as a worker that died leaves it: a new
/// heartbeat of 50 ms, then waiting until the store no longer lists it.
async fn lapse(store: &DynStore, id: &str) {
    beat(store, id, Duration::from_millis(50)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let live = store.live_workers().await.unwrap();
        if !live.iter().any(|w| w.id == id) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a 50 ms heartbeat was live after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Claims every outbox entry quiet for no time: (task id, status), by id.
async fn owed(store: &DynStore) -> Vec<(String, TaskStatus)> {
    let mut claimed: Vec<(String, TaskStatus)> = store
        .claim_completions(1000, Duration::ZERO, Duration::from_secs(600))
        .await
        .unwrap()
        .into_iter()
        .map(|task| (task.id, task.status))
        .collect();
    claimed.sort_by(|a, b| a.0.cmp(&b.0));
    claimed
}

async fn claim(store: &DynStore, id: &str, worker: &str) -> ReduceClaim {
    store.claim_reduce(id, worker).await.unwrap()
}

pub(crate) async fn the_last_shard_of_a_task_with_a_due_reduce_starts_it_and_owes_no_event(
    store: DynStore,
) {
    let task = with_reduce(&store, ReduceWhen::Success).await;
    let done = store
        .complete_shard(&task.id, 0, &[ok(0), ok(1)])
        .await
        .unwrap();
    assert_eq!(done.task.status, TaskStatus::Reducing);
    assert!(!done.finished_task, "a reducing task has not ended");
    assert_eq!(
        (done.task.finished_at, done.task.reduce_result.as_ref()),
        (None, None)
    );
    assert_eq!(
        (done.task.items_succeeded, done.task.chunks_executed),
        (2, 1)
    );
    assert_eq!(store.task(&task.id).await.unwrap().unwrap(), done.task);
    assert_eq!(
        store.unfinished_task_ids().await.unwrap(),
        [task.id.as_str()]
    );
    let stats = store.stats().await.unwrap();
    assert!(
        stats.tasks_by_status.contains(&(TaskStatus::Reducing, 1)),
        "{stats:?}"
    );
    assert!(
        store.runnable_tasks(10).await.unwrap().is_empty(),
        "no shard of it is left to run"
    );
    assert_eq!(store.pending_completions().await.unwrap(), 0);

    // `success` with a failed item: the task ends at once, without a reduce.
    let unmet = with_reduce(&store, ReduceWhen::Success).await;
    let done = store
        .complete_shard(&unmet.id, 0, &[ok(0), failed(1)])
        .await
        .unwrap();
    assert_eq!(done.task.status, TaskStatus::Failed);
    assert!(done.finished_task);
    assert_eq!(
        done.task.error, None,
        "as a task without a reduce whose item failed"
    );
    assert_eq!(
        claim(&store, &unmet.id, "worker-a").await,
        ReduceClaim::NotReducing {
            status: TaskStatus::Failed
        }
    );
    // `always` with a failed item: it reduces anyway.
    let always = reducing(&store, ReduceWhen::Always, true).await;
    assert_eq!((always.items_succeeded, always.items_failed), (1, 1));

    // A task without items: planning it completes its last shard at once.
    let mut empty = task_with(&dts_model::new_task_id(), now_millis(), 0);
    empty.reduce = Some(reduce_when(ReduceWhen::Success));
    store.insert_task(&empty, &[]).await.unwrap();
    match store.save_plan(&empty.id, &[]).await.unwrap() {
        PlanOutcome::Created(task) => {
            assert_eq!(task.status, TaskStatus::Reducing);
            assert!(task.started_at.is_some());
            assert_eq!(task.finished_at, None);
        }
        other => panic!("expected a new plan, got {other:?}"),
    }

    assert_eq!(
        owed(&store).await,
        [(unmet.id.clone(), TaskStatus::Failed)],
        "only the task that ended owes an event"
    );
}

pub(crate) async fn a_reduce_claim_holds_while_its_owners_heartbeat_is_live_then_passes_on(
    store: DynStore,
) {
    let task = reducing(&store, ReduceWhen::Success, false).await;
    beat(&store, "worker-a", LIVE).await;
    beat(&store, "worker-b", LIVE).await;
    assert_eq!(
        claim(&store, &task.id, "worker-a").await,
        ReduceClaim::Claimed { attempt: 1 }
    );
    for _ in 0..2 {
        assert_eq!(
            claim(&store, &task.id, "worker-b").await,
            ReduceClaim::Held {
                owner: "worker-a".to_string()
            }
        );
    }
    assert_eq!(
        store.task(&task.id).await.unwrap().unwrap().status,
        TaskStatus::Reducing
    );

    // worker-a died: once its heartbeat lapses, the reduce is worker-b's.
    lapse(&store, "worker-a").await;
    assert_eq!(
        claim(&store, &task.id, "worker-b").await,
        ReduceClaim::Claimed { attempt: 2 }
    );
    assert_eq!(
        claim(&store, &task.id, "worker-a").await,
        ReduceClaim::Held {
            owner: "worker-b".to_string()
        }
    );
    // A worker removed at shutdown holds nothing either.
    store.remove_worker("worker-b").await.unwrap();
    assert_eq!(
        claim(&store, &task.id, "worker-a").await,
        ReduceClaim::Claimed { attempt: 3 }
    );
    // A worker that restarted with its id (and no heartbeat yet) lost
    // track of its reduce: it gets it again, as a new attempt.
    assert_eq!(
        claim(&store, &task.id, "worker-a").await,
        ReduceClaim::Claimed { attempt: 4 }
    );
}

pub(crate) async fn a_reduce_is_claimed_only_while_reducing_and_an_unknown_task_is_not_found(
    store: DynStore,
) {
    let running = with_reduce(&store, ReduceWhen::Success).await;
    assert_eq!(
        claim(&store, &running.id, "worker-a").await,
        ReduceClaim::NotReducing {
            status: TaskStatus::InProgress
        }
    );
    let plain = planned(&store, 1, 1).await;
    store.complete_shard(&plain.id, 0, &[ok(0)]).await.unwrap();
    assert_eq!(
        claim(&store, &plain.id, "worker-a").await,
        ReduceClaim::NotReducing {
            status: TaskStatus::Completed
        }
    );
    let unknown = dts_model::new_task_id();
    assert!(matches!(
        store.claim_reduce(&unknown, "worker-a").await,
        Err(StoreError::NoSuchTask { id }) if id == unknown
    ));
    assert_eq!(
        store
            .finish_reduce(&unknown, "worker-a", 1, &ran("worker-a", 1, 0))
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn of_sixteen_workers_claiming_a_reduce_at_once_exactly_one_gets_it(
    store: DynStore,
) {
    let task = reducing(&store, ReduceWhen::Success, false).await;
    let workers: Vec<String> = (0..16).map(|n| format!("worker-{n}")).collect();
    for id in &workers {
        beat(&store, id, LIVE).await;
    }
    let mut calls = Vec::new();
    for id in &workers {
        let (store, task, me) = (store.clone(), task.id.clone(), id.clone());
        calls.push(tokio::spawn(async move {
            let claim = store.claim_reduce(&task, &me).await.unwrap();
            (me, claim)
        }));
    }
    let mut winners = Vec::new();
    let mut held_by = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            (me, ReduceClaim::Claimed { attempt }) => winners.push((me, attempt)),
            (_, ReduceClaim::Held { owner }) => held_by.push(owner),
            (me, other) => panic!("{me}: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (winner, attempt) = &winners[0];
    assert_eq!(*attempt, 1);
    assert_eq!(held_by.len(), 15);
    assert!(held_by.iter().all(|owner| owner == winner), "{held_by:?}");
}

pub(crate) async fn the_claim_holders_record_ends_the_task_completed_with_its_result_once(
    store: DynStore,
) {
    let task = reducing(&store, ReduceWhen::Success, false).await;
    beat(&store, "worker-a", LIVE).await;
    assert_eq!(
        claim(&store, &task.id, "worker-a").await,
        ReduceClaim::Claimed { attempt: 1 }
    );
    let result = ran("worker-a", 1, 0);
    let before = now_millis();
    let ended = store
        .finish_reduce(&task.id, "worker-a", 1, &result)
        .await
        .unwrap()
        .expect("the claim holder's record counts");
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.reduce_result.as_ref(), Some(&result));
    assert_eq!(ended.error, None);
    let finished = ended.finished_at.expect("an end sets finishedAt");
    assert!(finished >= before && finished <= now_millis());
    assert!(ended.version > task.version);
    assert_eq!(store.task(&task.id).await.unwrap().unwrap(), ended);
    assert!(store.unfinished_task_ids().await.unwrap().is_empty());
    assert!(store.reducing_tasks(10).await.unwrap().is_empty());
    assert_eq!(store.pending_completions().await.unwrap(), 1);

    // The same record again (a retried call) changes nothing.
    assert_eq!(
        store
            .finish_reduce(&task.id, "worker-a", 1, &ran("worker-a", 1, 3))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.task(&task.id).await.unwrap().unwrap(), ended);
    assert_eq!(
        owed(&store).await,
        [(task.id.clone(), TaskStatus::Completed)]
    );
}

pub(crate) async fn a_record_by_a_worker_that_lost_the_claim_changes_nothing(store: DynStore) {
    let task = reducing(&store, ReduceWhen::Success, false).await;
    beat(&store, "worker-a", LIVE).await;
    assert_eq!(
        claim(&store, &task.id, "worker-a").await,
        ReduceClaim::Claimed { attempt: 1 }
    );
    // worker-a stalls past its heartbeat; worker-b takes the reduce over.
    lapse(&store, "worker-a").await;
    beat(&store, "worker-b", LIVE).await;
    assert_eq!(
        claim(&store, &task.id, "worker-b").await,
        ReduceClaim::Claimed { attempt: 2 }
    );
    let before = store.task(&task.id).await.unwrap().unwrap();
    for (worker, attempt) in [
        ("worker-a", 1),
        ("worker-a", 2),
        ("worker-c", 2),
        ("worker-b", 1),
    ] {
        assert_eq!(
            store
                .finish_reduce(&task.id, worker, attempt, &ran(worker, attempt, 0))
                .await
                .unwrap(),
            None,
            "{worker} attempt {attempt}"
        );
    }
    assert_eq!(store.task(&task.id).await.unwrap().unwrap(), before);
    assert_eq!(store.pending_completions().await.unwrap(), 0);

    let result = ran("worker-b", 2, 0);
    let ended = store
        .finish_reduce(&task.id, "worker-b", 2, &result)
        .await
        .unwrap()
        .expect("the holder's record counts");
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.reduce_result, Some(result));
}

pub(crate) async fn a_failed_reduce_or_a_failed_item_ends_the_task_failed(store: DynStore) {
    let task = reducing(&store, ReduceWhen::Success, false).await;
    assert_eq!(
        claim(&store, &task.id, "worker-a").await,
        ReduceClaim::Claimed { attempt: 1 }
    );
    let result = ran("worker-a", 1, 3);
    let ended = store
        .finish_reduce(&task.id, "worker-a", 1, &result)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!(
        ended.error.as_deref(),
        Some("the reduce exited 3 (attempt 1)")
    );
    assert_eq!(ended.reduce_result, Some(result));
    assert_eq!(store.task(&task.id).await.unwrap().unwrap(), ended);

    // `always` reduced although an item failed: the reduce's success does
    // not make the task a success.
    let always = reducing(&store, ReduceWhen::Always, true).await;
    assert_eq!(
        claim(&store, &always.id, "worker-a").await,
        ReduceClaim::Claimed { attempt: 1 }
    );
    let ended_always = store
        .finish_reduce(&always.id, "worker-a", 1, &ran("worker-a", 1, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended_always.status, TaskStatus::Failed);
    assert_eq!(ended_always.error, None);
    assert!(ended_always.reduce_result.is_some());

    let mut expected = vec![
        (task.id.clone(), TaskStatus::Failed),
        (always.id.clone(), TaskStatus::Failed),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(owed(&store).await, expected);
}

pub(crate) async fn a_reduce_recorded_after_a_cancel_changes_nothing(store: DynStore) {
    let task = reducing(&store, ReduceWhen::Success, false).await;
    beat(&store, "worker-a", LIVE).await;
    assert_eq!(
        claim(&store, &task.id, "worker-a").await,
        ReduceClaim::Claimed { attempt: 1 }
    );
    let cancelled = store
        .transition(&task.id, TaskStatus::Cancelled, Some("cancelled by a test"))
        .await
        .unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert_eq!(
        store
            .finish_reduce(&task.id, "worker-a", 1, &ran("worker-a", 1, 0))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.task(&task.id).await.unwrap().unwrap(), cancelled);
    assert_eq!(
        claim(&store, &task.id, "worker-b").await,
        ReduceClaim::NotReducing {
            status: TaskStatus::Cancelled
        }
    );
    assert!(store.unfinished_task_ids().await.unwrap().is_empty());
    assert_eq!(
        owed(&store).await,
        [(task.id.clone(), TaskStatus::Cancelled)]
    );
}

pub(crate) async fn reducing_tasks_are_exactly_the_reducing_ones_oldest_first(store: DynStore) {
    assert!(store.reducing_tasks(10).await.unwrap().is_empty());
    // Created in this order, inserted in another.
    let at = now_millis() - 60_000;
    let mut made = Vec::new();
    for created in [at + 2, at, at + 1, at + 1] {
        let mut task = task_with(&dts_model::new_task_id(), created, 1);
        task.reduce = Some(reduce_when(ReduceWhen::Success));
        store.insert_task(&task, &inputs(1)).await.unwrap();
        plan_evenly(&store, &task, 1, 1).await;
        store.complete_shard(&task.id, 0, &[ok(0)]).await.unwrap();
        made.push(task.id);
    }
    // Not reducing: running, ended without a reduce, reduced, cancelled.
    with_reduce(&store, ReduceWhen::Always).await;
    task_in(&store, TaskStatus::Completed).await;
    let reduced = reducing(&store, ReduceWhen::Success, false).await;
    claim(&store, &reduced.id, "worker-a").await;
    store
        .finish_reduce(&reduced.id, "worker-a", 1, &ran("worker-a", 1, 0))
        .await
        .unwrap()
        .unwrap();
    let cancelled = reducing(&store, ReduceWhen::Success, false).await;
    store
        .transition(&cancelled.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();

    let listed = store.reducing_tasks(10).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|t| t.id.as_str()).collect();
    // Oldest first; the two of the same millisecond in insertion order.
    assert_eq!(ids, [&made[1], &made[2], &made[3], &made[0]]);
    for task in &listed {
        assert_eq!(task.status, TaskStatus::Reducing);
        assert_eq!(Some(task), store.task(&task.id).await.unwrap().as_ref());
    }
    let first: Vec<String> = store
        .reducing_tasks(2)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(first, [made[1].clone(), made[2].clone()]);
    assert!(store.reducing_tasks(0).await.unwrap().is_empty());
}

pub(crate) async fn a_retry_after_a_failed_reduce_reduces_again_from_attempt_one(store: DynStore) {
    let task = reducing(&store, ReduceWhen::Success, false).await;
    beat(&store, "worker-a", LIVE).await;
    claim(&store, &task.id, "worker-a").await;
    lapse(&store, "worker-a").await;
    assert_eq!(
        claim(&store, &task.id, "worker-b").await,
        ReduceClaim::Claimed { attempt: 2 }
    );
    store
        .finish_reduce(&task.id, "worker-b", 2, &ran("worker-b", 2, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owed(&store).await.len(), 1);

    let outcome = store.retry_task(&task.id).await.unwrap();
    assert_eq!(
        (outcome.failed, outcome.not_run, outcome.shards),
        (0, 0, 0),
        "no item runs again"
    );
    let retried = outcome.task;
    assert_eq!(retried.status, TaskStatus::Reducing);
    assert_eq!(
        (
            retried.reduce_result.as_ref(),
            retried.error.as_ref(),
            retried.finished_at
        ),
        (None, None, None)
    );
    assert_eq!((retried.items_succeeded, retried.items_failed), (2, 0));
    assert_eq!(store.task(&task.id).await.unwrap().unwrap(), retried);
    assert_eq!(
        store
            .reducing_tasks(10)
            .await
            .unwrap()
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        [task.id.as_str()]
    );
    assert_eq!(
        store.unfinished_task_ids().await.unwrap(),
        [task.id.as_str()]
    );
    assert!(
        store.runnable_tasks(10).await.unwrap().is_empty(),
        "no shard runs again"
    );
    assert!(
        owed(&store).await.is_empty(),
        "a reducing task owes no event"
    );
    // The old claim is gone, and the attempts count again from 1.
    beat(&store, "worker-b", LIVE).await;
    assert_eq!(
        claim(&store, &task.id, "worker-c").await,
        ReduceClaim::Claimed { attempt: 1 }
    );
    let ended = store
        .finish_reduce(&task.id, "worker-c", 1, &ran("worker-c", 1, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.error, None);
    assert_eq!(
        owed(&store).await,
        [(task.id.clone(), TaskStatus::Completed)]
    );
}

pub(crate) async fn a_retried_task_with_a_reduce_runs_its_failed_items_then_reduces_again(
    store: DynStore,
) {
    // `always`: the reduce ran although an item failed, and the task failed.
    let task = reducing(&store, ReduceWhen::Always, true).await;
    claim(&store, &task.id, "worker-a").await;
    store
        .finish_reduce(&task.id, "worker-a", 1, &ran("worker-a", 1, 0))
        .await
        .unwrap()
        .unwrap();
    let outcome = store.retry_task(&task.id).await.unwrap();
    assert_eq!((outcome.failed, outcome.shards), (1, 1));
    assert_eq!(outcome.task.status, TaskStatus::InProgress);
    assert_eq!(outcome.task.reduce_result, None);
    let done = store.complete_shard(&task.id, 0, &[ok(1)]).await.unwrap();
    assert_eq!(done.task.status, TaskStatus::Reducing);
    assert_eq!(
        claim(&store, &task.id, "worker-b").await,
        ReduceClaim::Claimed { attempt: 1 }
    );

    // Cancelled while reducing: a retry runs the reduce, not the items.
    let cancelled = reducing(&store, ReduceWhen::Success, false).await;
    store
        .transition(&cancelled.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    let outcome = store.retry_task(&cancelled.id).await.unwrap();
    assert_eq!(outcome.task.status, TaskStatus::Reducing);

    // A task without items whose reduce failed reduces again too.
    let mut empty = task_with(&dts_model::new_task_id(), now_millis(), 0);
    empty.reduce = Some(reduce_when(ReduceWhen::Success));
    store.insert_task(&empty, &[]).await.unwrap();
    store.save_plan(&empty.id, &[]).await.unwrap();
    claim(&store, &empty.id, "worker-a").await;
    store
        .finish_reduce(&empty.id, "worker-a", 1, &ran("worker-a", 1, 2))
        .await
        .unwrap()
        .unwrap();
    let outcome = store.retry_task(&empty.id).await.unwrap();
    assert_eq!(outcome.task.status, TaskStatus::Reducing);

    // A task with a reduce that completed has nothing to retry.
    let completed = reducing(&store, ReduceWhen::Success, false).await;
    claim(&store, &completed.id, "worker-a").await;
    store
        .finish_reduce(&completed.id, "worker-a", 1, &ran("worker-a", 1, 0))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        store.retry_task(&completed.id).await,
        Err(StoreError::CannotRetry {
            refusal: dts_store::RetryRefusal::NothingToRetry,
            ..
        })
    ));
}
