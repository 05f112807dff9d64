//! Tasks that wait for other tasks (`after`): checked at submit, released
//! or skipped when their prerequisites end.
//!
//! A waiting task is stored `WAITING` and not published. Every node that
//! runs the sweeper also runs the release loop ([`start`]): it reads the
//! waiting tasks and their prerequisites' statuses from the store, and for
//! each decides by [`dts_model::After::verdict`]:
//! - release: `WAITING` → `QUEUED` in the store, then published like a new
//!   task;
//! - skip: `WAITING` → `SKIPPED` with the reason, and its completion event.
//!
//! Every decision is a store transition from `WAITING`, which only one
//! caller can make, so several servers releasing at once publish a task
//! once. All state is in the store: a node that dies between the release
//! and the publish leaves a `QUEUED` task, which the sweeper republishes
//! like any task whose server died before publishing it.

use crate::submit::Submitter;
use crate::{EngineError, with_causes};
use dts_model::after::Verdict;
use dts_model::{After, Task, TaskStatus};
use dts_store::{DynStore, StoreError, TaskCursor};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Waiting tasks read per page of a pass.
const PAGE: usize = 500;

/// How often the release loop looks when it is not woken.
pub const DEFAULT_RELEASE_INTERVAL: Duration = Duration::from_millis(500);

/// Checks that every prerequisite of a task being submitted exists, so a
/// task never waits for an id that will never end. A cycle cannot form
/// (module doc of [`dts_model::after`]).
pub(crate) async fn check_prerequisites(
    store: &DynStore,
    after: &After,
) -> Result<(), EngineError> {
    for (position, id) in after.tasks.iter().enumerate() {
        if store.task_status(id).await?.is_none() {
            return Err(EngineError::UnknownPrerequisite {
                position,
                id: id.clone(),
            });
        }
    }
    Ok(())
}

/// Starts the release loop on `tracker`, looking every `interval`; it
/// stops with `shutdown`.
pub fn start(
    store: DynStore,
    submitter: Submitter,
    interval: Duration,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        while crate::sleep_unless_cancelled(interval, &shutdown).await {
            release_waiting(&store, &submitter).await;
        }
    });
}

/// One pass over every waiting task. A store that cannot be read ends the
/// pass: the next one tries again.
pub async fn release_waiting(store: &DynStore, submitter: &Submitter) {
    let mut cursor: Option<TaskCursor> = None;
    // Statuses read in this pass, shared by the tasks that wait for the
    // same prerequisite.
    let mut statuses: HashMap<String, Option<TaskStatus>> = HashMap::new();
    loop {
        let page = match store
            .list_tasks_page(Some(TaskStatus::Waiting), cursor, PAGE)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                dts_metrics::metrics().store_error("list_tasks_page", false);
                debug!(error = %with_causes(&e), "cannot list waiting tasks; trying again later");
                return;
            }
        };
        for task in &page.tasks {
            if let Err(e) = settle_with(store, submitter, task, &mut statuses).await {
                debug!(task = %task.id, error = %with_causes(&e), "cannot check a waiting task; trying again later");
                return;
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return,
        }
    }
}

/// Releases or skips `task` if its prerequisites allow it now (a task just
/// submitted whose prerequisites have ended already). Failures are left
/// to the release loop.
pub(crate) async fn settle(store: &DynStore, submitter: &Submitter, task: &Task) {
    if let Err(e) = settle_with(store, submitter, task, &mut HashMap::new()).await {
        debug!(task = %task.id, error = %with_causes(&e), "cannot check a waiting task yet; the release loop will");
    }
}

/// Releases `task` (`QUEUED`, then published in the background) or skips
/// it (`SKIPPED`, and its completion event) if its prerequisites' statuses,
/// read into `statuses` when not there yet, say so.
async fn settle_with(
    store: &DynStore,
    submitter: &Submitter,
    task: &Task,
    statuses: &mut HashMap<String, Option<TaskStatus>>,
) -> Result<(), StoreError> {
    let verdict = match &task.after {
        // Only a task stored with `after` waits; one without cannot be
        // released by anything, so it runs.
        None => Verdict::Release,
        Some(after) => {
            for id in &after.tasks {
                if !statuses.contains_key(id) {
                    let status = store.task_status(id).await?;
                    statuses.insert(id.clone(), status);
                }
            }
            after.verdict(|id| statuses.get(id).copied().flatten())
        }
    };
    match verdict {
        Verdict::Wait => {}
        Verdict::Release => {
            if leave_waiting(store, &task.id, TaskStatus::Queued, None)
                .await
                .is_some()
            {
                info!(task = %task.id, "prerequisites ended as required; task released");
                let publisher = submitter.clone();
                let id = task.id.clone();
                tokio::spawn(async move { publisher.publish_with_retries(&id).await });
            }
        }
        Verdict::Skip(reason) => {
            if let Some(ended) =
                leave_waiting(store, &task.id, TaskStatus::Skipped, Some(&reason)).await
            {
                info!(task = %task.id, reason, "task skipped");
                submitter.announce_end(&ended).await;
            }
        }
    }
    Ok(())
}

/// Moves waiting task `id` to `to` (with `reason`); the task when this call
/// did it. `None` when another node got there first or the task was
/// cancelled or deleted meanwhile, and when the store failed (logged; the
/// next pass tries again).
async fn leave_waiting(
    store: &DynStore,
    id: &str,
    to: TaskStatus,
    reason: Option<&str>,
) -> Option<Task> {
    match store.transition(id, to, reason).await {
        Ok(task) => Some(task),
        Err(StoreError::IllegalTransition { .. } | StoreError::NoSuchTask { .. }) => None,
        Err(e) => {
            dts_metrics::metrics().store_error("transition", false);
            warn!(task = %id, status = %to, error = %with_causes(&e), "cannot move a waiting task on; trying again later");
            None
        }
    }
}
