//! Completion events: when a task ends, a JSON [`CompletionEvent`] goes to the
//! result topic for any consumer to read (docs/architecture.md, flow step 4).

use crate::{EngineError, Topics, with_causes};
use dts_bus::{BusError, DynBus};
use dts_model::{CompletionEvent, Task, format_millis, now_millis};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// The event for a task that has ended.
pub fn completion_event(task: &Task) -> CompletionEvent {
    CompletionEvent {
        task_id: task.id.clone(),
        status: task.status,
        items_total: task.items_total,
        items_succeeded: task.items_succeeded,
        items_failed: task.items_failed,
        finished_at: format_millis(task.finished_at.unwrap_or_else(now_millis)),
    }
}

/// Publishes the completion event of `task`. The task's final state is
/// already in the store, so a lost event loses no data: failures are logged.
pub async fn publish_completion(bus: &DynBus, topics: &Topics, task: &Task) {
    let event = completion_event(task);
    let payload = match serde_json::to_vec(&event) {
        Ok(payload) => payload,
        Err(e) => {
            warn!(task = %task.id, error = %with_causes(&e), "cannot encode completion event");
            return;
        }
    };
    if let Err(e) = bus.publish(&topics.results, &task.id, payload).await {
        dts_metrics::metrics().bus_error("publish_completion", false);
        warn!(task = %task.id, error = %with_causes(&e), "cannot publish completion event");
    }
}

/// Logs every completion event (`dts up` shows tasks finishing this way).
pub async fn log_completions(
    bus: &DynBus,
    topics: &Topics,
    group: &str,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), EngineError> {
    let mut subscription = bus.subscribe(&topics.results, group).await?;
    tracker.spawn(async move {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = subscription.next() => next,
            };
            let delivery = match next {
                Ok(delivery) => delivery,
                Err(BusError::Closed) => break,
                Err(e) => {
                    warn!(error = %with_causes(&e), "cannot read completion events");
                    continue;
                }
            };
            match serde_json::from_slice::<CompletionEvent>(&delivery.payload) {
                Ok(event) => info!(
                    task = %event.task_id,
                    status = %event.status,
                    succeeded = event.items_succeeded,
                    failed = event.items_failed,
                    total = event.items_total,
                    "task finished"
                ),
                Err(e) => warn!(error = %with_causes(&e), "unreadable completion event"),
            }
            if let Err(e) = delivery.ack().await {
                warn!(error = %with_causes(&e), "cannot acknowledge completion event");
            }
        }
    });
    Ok(())
}
