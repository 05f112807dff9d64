//! `waitingReason`: why a task that is not running cannot run anywhere now
//! (it waits for other tasks, no worker is live, or none has the labels it
//! `requires`), so a user sees it waits on purpose instead of guessing.
//!
//! Read once per request, whatever the number of tasks: the live workers'
//! labels (one store call, only when a task shown has not ended) and, only
//! when some task would get a reason, one snapshot of the runnable tasks to
//! leave out those with items running.

use dts_model::scheduling::{Candidate, waiting_reason};
use dts_model::{AfterStatus, Task, TaskStatus, WorkerKind};
use dts_store::{Store, StoreResult};
use std::collections::{BTreeMap, HashMap};

/// The most runnable tasks read to learn which tasks have items running. A
/// task past it gets no reason, rather than a wrong one.
const RUNNABLE_SNAPSHOT: usize = 10_000;

/// Why `task` waits, given how many of its items run now (`running`) and the
/// labels of each live worker that runs items. `None` for a task that has
/// ended, has items running, or that some live worker could run.
pub fn reason(
    task: &Task,
    running: u32,
    live_worker_labels: &[BTreeMap<String, String>],
) -> Option<String> {
    if task.status.is_terminal() || running > 0 {
        return None;
    }
    if task.status == TaskStatus::Waiting {
        return task.after.as_ref().map(|after| {
            let how = match after.status {
                AfterStatus::Completed => "to complete",
                AfterStatus::Ended => "to end",
            };
            let (noun, ids) = match after.tasks.as_slice() {
                [one] => ("task", one.clone()),
                many => ("tasks", many.join(", ")),
            };
            format!("waiting for {noun} {ids} {how}")
        });
    }
    waiting_reason(&Candidate::of(task, running, false), live_worker_labels)
}

/// The reason of each of `tasks`, in order.
///
/// Live workers are the `dts` workers with a fresh heartbeat: a node-beat
/// from the seed's API runs nothing ([`WorkerKind::NodeBeat`]), so it
/// cannot be where a task runs. Items running are the shards a task holds
/// by unexpired leases ([`Store::runnable_tasks`]); a task not yet planned
/// holds none.
pub async fn reasons(store: &dyn Store, tasks: &[Task]) -> StoreResult<Vec<Option<String>>> {
    let mut reasons = vec![None; tasks.len()];
    if tasks.iter().all(|task| task.status.is_terminal()) {
        return Ok(reasons);
    }
    let labels: Vec<BTreeMap<String, String>> = store
        .live_workers()
        .await?
        .into_iter()
        .filter(|worker| worker.kind == WorkerKind::Dts)
        .map(|worker| worker.labels)
        .collect();
    for (slot, task) in reasons.iter_mut().zip(tasks) {
        *slot = reason(task, 0, &labels);
    }
    if reasons.iter().all(Option::is_none) {
        return Ok(reasons);
    }
    let runnable = store.runnable_tasks(RUNNABLE_SNAPSHOT).await?;
    let whole = runnable.len() < RUNNABLE_SNAPSHOT;
    let held: HashMap<&str, u32> = runnable
        .iter()
        .map(|entry| (entry.task.id.as_str(), entry.held))
        .collect();
    for (slot, task) in reasons.iter_mut().zip(tasks) {
        if slot.is_none() {
            continue;
        }
        match held.get(task.id.as_str()) {
            Some(&running) => *slot = reason(task, running, &labels),
            None if whole => {}
            None => *slot = None,
        }
    }
    Ok(reasons)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dts_model::{ShardRange, SubmitLimits, TaskStatus, WorkerInfo, submit};
    use dts_store::SqliteStore;
    use serde_json::json;
    use std::time::Duration;

    fn task(requires: serde_json::Value) -> Task {
        let new = submit::from_json(
            &json!({"templateFunction": "echo $1", "inputList": ["a", "b"], "requires": requires}),
            &SubmitLimits::default(),
        )
        .unwrap();
        new.to_task(1_700_000_000_000)
    }

    fn worker(id: &str, kind: WorkerKind, labels: &[(&str, &str)]) -> WorkerInfo {
        WorkerInfo {
            id: id.into(),
            hostname: "box".into(),
            cores: 2,
            running_items: 0,
            last_heartbeat: 0,
            kind,
            isolation: None,
            labels: labels
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            shards_held: 0,
            running_by_task: Default::default(),
        }
    }

    async fn stored(store: &SqliteStore, task: &Task) -> Task {
        store
            .insert_task(task, &["a".into(), "b".into()])
            .await
            .unwrap();
        store.task(&task.id).await.unwrap().unwrap()
    }

    #[test]
    fn a_waiting_task_names_the_tasks_it_waits_for_and_how_they_must_end() {
        let (a, b) = (dts_model::new_task_id(), dts_model::new_task_id());
        let waiting = |after: serde_json::Value, status: &str| {
            submit::from_json(
                &json!({"templateFunction": "x", "inputList": ["a"], "after": after, "afterStatus": status}),
                &SubmitLimits::default(),
            )
            .unwrap()
            .to_task(0)
        };
        assert_eq!(
            reason(&waiting(json!([a]), "COMPLETED"), 0, &[]),
            Some(format!("waiting for task {a} to complete"))
        );
        assert_eq!(
            reason(&waiting(json!([a, b]), "ENDED"), 0, &[]),
            Some(format!("waiting for tasks {a}, {b} to end"))
        );
    }

    #[tokio::test]
    async fn a_task_whose_labels_no_live_worker_has_says_so_and_one_that_ended_never_does() {
        let store = SqliteStore::in_memory().unwrap();
        let ttl = Duration::from_secs(60);
        store
            .heartbeat(&worker("plain", WorkerKind::Dts, &[]), ttl)
            .await
            .unwrap();
        // Announced through the seed's API with the label: it runs nothing.
        store
            .heartbeat(
                &worker("beat", WorkerKind::NodeBeat, &[("gpu", "a100")]),
                ttl,
            )
            .await
            .unwrap();
        let gpu = stored(&store, &task(json!({"gpu": "a100"}))).await;
        let any = stored(&store, &task(json!({}))).await;
        let ended = stored(&store, &task(json!({"gpu": "a100"}))).await;
        let ended = store
            .transition(&ended.id, TaskStatus::Cancelled, None)
            .await
            .unwrap();

        let got = reasons(&store, &[gpu.clone(), any, ended]).await.unwrap();
        assert_eq!(
            got,
            [
                Some("no live worker has labels gpu=a100".to_string()),
                None,
                None
            ]
        );

        store
            .heartbeat(&worker("gpu-box", WorkerKind::Dts, &[("gpu", "a100")]), ttl)
            .await
            .unwrap();
        assert_eq!(reasons(&store, &[gpu]).await.unwrap(), [None]);
    }

    #[tokio::test]
    async fn a_task_with_items_running_gets_no_reason_even_where_no_worker_matches() {
        let store = SqliteStore::in_memory().unwrap();
        let gpu = stored(&store, &task(json!({"gpu": "a100"}))).await;
        store
            .save_plan(
                &gpu.id,
                &[
                    ShardRange { start: 0, len: 1 },
                    ShardRange { start: 1, len: 1 },
                ],
            )
            .await
            .unwrap();
        let planned = store.task(&gpu.id).await.unwrap().unwrap();
        assert_eq!(
            reasons(&store, std::slice::from_ref(&planned))
                .await
                .unwrap(),
            [Some("no live worker has labels gpu=a100".to_string())]
        );
        store
            .claim_shard(&gpu.id, 0, "gone-worker", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(reasons(&store, &[planned]).await.unwrap(), [None]);
    }

    #[test]
    fn the_reason_is_left_out_of_a_task_that_ended_or_runs() {
        let gpu = task(json!({"gpu": "a100"}));
        assert_eq!(
            reason(&gpu, 0, &[]).as_deref(),
            Some("no live worker has labels gpu=a100")
        );
        assert_eq!(reason(&gpu, 1, &[]), None);
        for status in [
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
            TaskStatus::SubmissionFailed,
        ] {
            let ended = Task {
                status,
                ..gpu.clone()
            };
            assert_eq!(reason(&ended, 0, &[]), None, "{status}");
        }
    }
}
