//! Completion events: when a task ends, a JSON [`CompletionEvent`] goes to the
//! result topic for any consumer to read (docs/architecture.md, flow step 4).
//!
//! Delivery is at least once. The store write that ends a task also adds
//! the task to the completion outbox ([`Store::claim_completions`]), in the
//! same atomic step. The process that ended the task publishes at once
//! ([`publish_completion`]) and acknowledges the entry after the bus took
//! the event; every node running the sweeper also runs a drainer
//! ([`start_drainer`]) that publishes what is still owed once it has been
//! quiet for [`DrainerSettings::settle`]: the publisher crashed between the
//! write and the publish, or the bus refused it. An event can go out twice
//! (a publisher slow past the settle time, two drainers after a claim
//! expired), never zero times; consumers de-duplicate by `taskId`.

use crate::{EngineError, Topics, with_causes};
use dts_bus::{BusError, DynBus};
use dts_model::{CompletionEvent, Task, TaskStatus, format_millis, now_millis};
use dts_store::{DynStore, Store};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// The event for a task that has ended.
pub fn completion_event(task: &Task) -> CompletionEvent {
    CompletionEvent {
        task_id: task.id.clone(),
        status: task.status,
        items_total: task.items_total,
        items_succeeded: task.items_succeeded,
        items_failed: task.items_failed,
        finished_at: format_millis(task.finished_at.unwrap_or_else(now_millis)),
        // A completed task may still carry a note from a publishing retry
        // before it ran: that is no reason for how it ended.
        reason: match task.status {
            TaskStatus::Completed => None,
            _ => task.error.clone(),
        },
        name: task.name.clone(),
    }
}

/// Publishes the completion event of `task`, which ended in the store, and
/// acknowledges its outbox entry once the bus took it. Returns whether the
/// bus took it. A failure is logged and left to the drainers: the entry
/// stays until one publishes it.
pub async fn publish_completion(
    bus: &DynBus,
    topics: &Topics,
    store: &dyn Store,
    task: &Task,
) -> bool {
    publish(bus, topics, store, task, "end").await
}

async fn publish(bus: &DynBus, topics: &Topics, store: &dyn Store, task: &Task, by: &str) -> bool {
    let event = completion_event(task);
    let payload = match serde_json::to_vec(&event) {
        Ok(payload) => payload,
        Err(e) => {
            warn!(task = %task.id, error = %with_causes(&e), "cannot encode completion event");
            return false;
        }
    };
    crate::failpoint::hit("completion-before-publish");
    if let Err(e) = bus.publish(&topics.results, &task.id, payload).await {
        dts_metrics::metrics().bus_error("publish_completion", false);
        warn!(task = %task.id, error = %with_causes(&e), "cannot publish completion event; the outbox keeps it");
        return false;
    }
    dts_metrics::metrics().completion_event_published(by);
    if let Some(finished_at) = task.finished_at {
        // Not acknowledged: a drainer publishes it again, a duplicate.
        if let Err(e) = store.ack_completion(&task.id, finished_at).await {
            dts_metrics::metrics().store_error("ack_completion", false);
            debug!(task = %task.id, error = %with_causes(&e), "cannot acknowledge a published completion event");
        }
    }
    true
}

/// How the drainer works through the completion outbox.
#[derive(Debug, Clone)]
pub struct DrainerSettings {
    /// How often it looks when nothing wakes it.
    pub interval: Duration,
    /// How long an entry is left to the process that ended the task before
    /// a drainer publishes it: longer than a publish can take (Kafka's
    /// message timeout is 5 s), so a healthy end is published once.
    pub settle: Duration,
    /// How long a claim hides an entry from other drainers; one not
    /// acknowledged by then is claimed again.
    pub lease: Duration,
    /// Entries claimed per look.
    pub batch: usize,
}

impl Default for DrainerSettings {
    fn default() -> Self {
        DrainerSettings {
            interval: Duration::from_millis(250),
            settle: Duration::from_secs(10),
            lease: Duration::from_secs(30),
            batch: 100,
        }
    }
}

/// Starts the drainer on `tracker`; it stops with `shutdown`. It polls:
/// an entry is due only after [`DrainerSettings::settle`] anyway, so a
/// wake-up at the end of a task would find nothing to publish.
pub fn start_drainer(
    store: DynStore,
    bus: DynBus,
    topics: Topics,
    settings: DrainerSettings,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        while crate::sleep_unless_cancelled(settings.interval, &shutdown).await {
            drain(&store, &bus, &topics, &settings).await;
        }
    });
}

/// One look: claims a batch and publishes it, stopping at the first event
/// the bus refuses (it is likely down; the rest wait for their claims to
/// expire, as the refused one does).
async fn drain(store: &DynStore, bus: &DynBus, topics: &Topics, settings: &DrainerSettings) {
    let claimed = match store
        .claim_completions(settings.batch, settings.settle, settings.lease)
        .await
    {
        Ok(claimed) => claimed,
        Err(e) => {
            dts_metrics::metrics().store_error("claim_completions", false);
            debug!(error = %with_causes(&e), "cannot claim completion events");
            return;
        }
    };
    for task in &claimed {
        if !publish(bus, topics, &**store, task, "outbox").await {
            return;
        }
        info!(task = %task.id, status = %task.status, "published a completion event that was owed");
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
                    // `-` for none, so every line has the same fields.
                    name = %event.name.as_deref().unwrap_or("-"),
                    reason = ?event.reason.as_deref().unwrap_or("-"),
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
