//! Tasks, plans and results the contract tests build on.

use dts_model::{
    Bytes, ItemResult, Reduce, ReduceWhen, Scheduling, ShardRange, Task, TaskStatus, Variables,
    now_millis,
};
use dts_store::{DynStore, PlanOutcome};

pub(crate) fn task_with(id: &str, created_at: u64, items: usize) -> Task {
    Task {
        id: id.to_string(),
        name: None,
        status: TaskStatus::Queued,
        template_function: "echo {{greeting}} \"$1\"".to_string(),
        variables: Variables::from_json(&serde_json::json!({"greeting": "hi"})).unwrap(),
        interpreter: "bash".to_string(),
        timeout_secs: 60,
        retries: 0,
        // Round-trips an optional field that is set.
        deadline_secs: Some(3600),
        items_total: items as u64,
        chunks_to_execute: 0,
        chunks_executed: 0,
        items_succeeded: 0,
        items_failed: 0,
        created_at,
        started_at: None,
        finished_at: None,
        error: None,
        // Round-trips the resource limits, which are set.
        memory_mb: Some(512),
        milli_cpus: Some(1500),
        // Round-trips the scheduling fields, none at its default.
        scheduling: Scheduling {
            priority: -3,
            weight: 2,
            max_concurrency: Some(3),
            requires: [("gpu".to_string(), "a100".to_string())].into(),
            speculation: false,
        },
        halt: None,
        after: None,
        // No reduce: its last shard ends the task, as most tests expect
        // (reduce.rs makes tasks with one).
        reduce: None,
        reduce_result: None,
        version: 0,
    }
}

/// A reduce that runs `when`: it counts the lines of the results.
pub(crate) fn reduce_when(when: ReduceWhen) -> Reduce {
    Reduce {
        template_function: "wc -l".to_string(),
        interpreter: "bash".to_string(),
        timeout_secs: 30,
        when,
    }
}

pub(crate) fn inputs(n: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("item-{i}"))).collect()
}

/// A new `QUEUED` task with `items` inputs, stored.
pub(crate) async fn insert(store: &DynStore, items: usize) -> Task {
    let task = task_with(&dts_model::new_task_id(), now_millis(), items);
    store.insert_task(&task, &inputs(items)).await.unwrap();
    task
}

/// [`insert`] of a task that waits for another (`after`): stored
/// `WAITING`.
pub(crate) async fn insert_waiting(store: &DynStore, items: usize) -> Task {
    let mut task = task_with(&dts_model::new_task_id(), now_millis(), items);
    task.status = TaskStatus::Waiting;
    task.after = Some(dts_model::After {
        tasks: vec![dts_model::new_task_id()],
        status: dts_model::AfterStatus::Completed,
    });
    store.insert_task(&task, &inputs(items)).await.unwrap();
    task
}

/// `items` split into `shards` contiguous ranges of equal length.
pub(crate) fn even_plan(items: u64, shards: u64) -> Vec<ShardRange> {
    let len = items / shards;
    (0..shards)
        .map(|s| ShardRange {
            start: s * len,
            len: if s == shards - 1 {
                items - s * len
            } else {
                len
            },
        })
        .collect()
}

/// A stored task of `items` items planned into `shards` shards (`INPROGRESS`).
pub(crate) async fn planned(store: &DynStore, items: u64, shards: u64) -> Task {
    let task = insert(store, items as usize).await;
    plan_evenly(store, &task, items, shards).await
}

/// Plans the stored `task` of `items` items into `shards` even shards.
pub(crate) async fn plan_evenly(store: &DynStore, task: &Task, items: u64, shards: u64) -> Task {
    match store
        .save_plan(&task.id, &even_plan(items, shards))
        .await
        .unwrap()
    {
        PlanOutcome::Created(task) => task,
        other => panic!("expected a new plan, got {other:?}"),
    }
}

pub(crate) fn ok(index: u64) -> ItemResult {
    let stdout = Bytes::from(format!("out {index}\n"));
    ItemResult {
        index,
        input: Bytes::from(format!("item-{index}")),
        exit_code: Some(0),
        signal: None,
        timed_out: false,
        stdout_bytes: stdout.len() as u64,
        stdout,
        stderr: Bytes::default(),
        stdout_truncated: false,
        stderr_truncated: false,
        stderr_bytes: 0,
        duration_ms: 12,
        worker: "worker-a".to_string(),
        attempt: 1,
        error: None,
    }
}

pub(crate) fn failed(index: u64) -> ItemResult {
    let stderr = Bytes::from(format!("boom {index}\n"));
    ItemResult {
        exit_code: Some(3),
        stderr_bytes: stderr.len() as u64,
        stderr,
        ..ok(index)
    }
}

pub(crate) fn indices(results: &[ItemResult]) -> Vec<u64> {
    results.iter().map(|r| r.index).collect()
}

/// A stored task moved through legal transitions to `status`; one that
/// waits for another task (`after`) for `WAITING` and `SKIPPED`.
pub(crate) async fn task_in(store: &DynStore, status: TaskStatus) -> Task {
    use TaskStatus::*;
    let task = if matches!(status, Waiting | Skipped) {
        insert_waiting(store, 3).await
    } else {
        insert(store, 3).await
    };
    let path: &[TaskStatus] = match status {
        Waiting => &[],
        Skipped => &[Skipped],
        Queued => &[],
        Retrying => &[Retrying],
        SubmissionFailed => &[Retrying, SubmissionFailed],
        Submitted => &[Submitted],
        InProgress => &[Submitted, InProgress],
        Reducing => &[Submitted, InProgress, Reducing],
        Completed => &[Submitted, InProgress, Completed],
        Failed => &[Submitted, InProgress, Failed],
        Cancelled => &[Cancelled],
    };
    let mut task = task;
    for step in path {
        task = store.transition(&task.id, *step, None).await.unwrap();
    }
    assert_eq!(task.status, status);
    task
}
