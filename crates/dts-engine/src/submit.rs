//! Submitting a task: store it as `QUEUED`, publish it to the task topic, mark
//! it `SUBMITTED` (docs/architecture.md, flow step 1).
//!
//! Publishing retries with backoff up to `attempts` times; the task shows
//! `RETRYING` (with the bus's error) after a failed attempt and
//! `SUBMISSION_FAILED` after the last. The caller waits at most `wait` for all
//! that, so an HTTP request never hangs on a broker that is down: after the
//! bound it gets the task as it stands while publishing goes on in the
//! background.

use crate::{EngineError, Topics, with_causes};
use dts_bus::DynBus;
use dts_model::{DynClock, NewTask, Task, TaskMessage, TaskStatus, system_clock};
use dts_store::{DynStore, RetryOutcome, StoreError};
use std::time::Duration;
use tracing::{info, warn};

/// The longest a cancel waits to publish its stop hint.
const STOP_HINT_WAIT: Duration = Duration::from_secs(1);
/// How often a cancel reads whether the task's leases are let go.
const STOP_POLL: Duration = Duration::from_millis(20);
/// Added to the lease time a cancel waits at most.
const STOP_WAIT_MARGIN: Duration = Duration::from_secs(1);

/// How hard and how long submitting tries to publish.
#[derive(Debug, Clone)]
pub struct SubmitSettings {
    /// Publishing attempts before `SUBMISSION_FAILED` (the seed's 10).
    pub attempts: u32,
    /// How long a submit call waits for publishing before answering.
    pub wait: Duration,
    /// Delay after the first failed attempt; doubles each time.
    pub first_backoff: Duration,
    /// Longest delay between attempts.
    pub max_backoff: Duration,
    /// The node's clock: a new task's creation time, and "now" for the
    /// sweeper started with this submitter (the system clock; tests pass
    /// one that follows tokio's paused time).
    pub clock: DynClock,
    /// The workers' lease (`worker.heartbeat-ttl-ms`): the longest a cancel
    /// waits for the workers holding the task's shards to stop, since a
    /// lease not renewed for that long has lapsed and its worker starts
    /// nothing more under it.
    pub lease_ttl: Duration,
}

impl Default for SubmitSettings {
    fn default() -> Self {
        SubmitSettings {
            attempts: 10,
            wait: Duration::from_secs(5),
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            clock: system_clock(),
            lease_ttl: Duration::from_secs(10),
        }
    }
}

/// Stores and publishes new tasks.
#[derive(Clone)]
pub struct Submitter {
    store: DynStore,
    bus: DynBus,
    topics: Topics,
    settings: SubmitSettings,
}

impl Submitter {
    /// A submitter storing into `store` and publishing on `bus`.
    pub fn new(store: DynStore, bus: DynBus, topics: Topics, settings: SubmitSettings) -> Self {
        Submitter {
            store,
            bus,
            topics,
            settings,
        }
    }

    /// Stores `new` and publishes it; returns the task as it stands once
    /// publishing ended or the wait bound passed. A task that waits for
    /// others (`after`) is stored `WAITING` and published when they end
    /// ([`crate::after`]); each of them must exist
    /// ([`EngineError::UnknownPrerequisite`]).
    pub async fn submit(&self, new: NewTask) -> Result<Task, EngineError> {
        if let Some(after) = &new.after {
            crate::after::check_prerequisites(&self.store, after).await?;
        }
        let task = new.to_task(self.settings.clock.now_millis());
        self.store
            .insert_task(&task, &new.inputs)
            .await
            .inspect_err(|_| dts_metrics::metrics().store_error("insert_task", false))?;
        dts_metrics::metrics().task_submitted();
        info!(task = %task.id, items = task.items_total, "task stored");
        crate::failpoint::hit("submit-after-store");
        if task.status == TaskStatus::Waiting {
            crate::after::settle(&self.store, self, &task).await;
            return Ok(self.store.task(&task.id).await?.unwrap_or(task));
        }

        let publisher = self.clone();
        let id = task.id.clone();
        let publishing = tokio::spawn(async move { publisher.publish_with_retries(&id).await });
        // After the bound the publishing task goes on by itself; the task
        // says so rather than looking untouched.
        if tokio::time::timeout(self.settings.wait, publishing)
            .await
            .is_err()
        {
            let note = format!(
                "publishing to {} not confirmed within {:?}; still trying",
                self.topics.tasks, self.settings.wait
            );
            match self
                .store
                .transition(&task.id, TaskStatus::Retrying, Some(&note))
                .await
            {
                Ok(_) | Err(StoreError::IllegalTransition { .. }) => {}
                Err(e) => {
                    warn!(task = %task.id, error = %with_causes(&e), "could not record task status")
                }
            }
        }
        Ok(self.store.task(&task.id).await?.unwrap_or(task))
    }

    /// The node's clock ([`SubmitSettings::clock`]).
    pub fn clock(&self) -> &DynClock {
        &self.settings.clock
    }

    /// Publishes the completion event of a task ended outside a worker (a
    /// cancel, the sweeper's deadline) at once; if that fails, the drainers
    /// publish it from the outbox.
    pub async fn announce_end(&self, task: &Task) {
        crate::events::publish_completion(&self.bus, &self.topics, &*self.store, task).await;
    }

    /// After a cancel was recorded: tells the workers at once (a stop hint on
    /// the shard topic, which every worker listens to) and waits until no
    /// lease on the task's shards is live. A worker gives its lease back
    /// only after its stop token stopped item starts and its running items
    /// were killed, so once this returns no item of the task starts again.
    /// A worker that does not answer (frozen, cut off) stops starting items
    /// once its lease may have lapsed by its own clock, which the store
    /// shows as the lease expiring. Returns whether every lease was let go
    /// or lapsed within `lease_ttl` plus a margin; a store that cannot be
    /// read ends the wait early (false).
    pub async fn await_stopped(&self, id: &str) -> bool {
        let hint = serde_json::json!({ "stop": id }).to_string().into_bytes();
        let publish = self.bus.publish(&self.topics.shards, id, hint);
        // A slow bus must not hold up the answer: the workers' status poll
        // sees the cancel anyway, a little later.
        match tokio::time::timeout(STOP_HINT_WAIT, publish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(task = %id, error = %with_causes(&e), "cannot tell the workers of the cancel; they see it at their next status poll")
            }
            Err(_) => {
                warn!(task = %id, "telling the workers of the cancel timed out; they see it at their next status poll")
            }
        }
        // The lease lapses `lease_ttl` after its last renewal, by the
        // store's clock; the margin covers the store's round trips.
        let deadline = tokio::time::Instant::now() + self.settings.lease_ttl + STOP_WAIT_MARGIN;
        // ends: at `deadline`, or when the store answers 0 or fails.
        loop {
            match self.store.live_leases(id).await {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) => {
                    dts_metrics::metrics().store_error("live_leases", false);
                    warn!(task = %id, error = %with_causes(&e), "cannot read the cancelled task's leases; not waiting for its workers");
                    return false;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                warn!(task = %id, "workers still hold leases on the cancelled task's shards after the lease time");
                return false;
            }
            tokio::time::sleep(STOP_POLL).await;
        }
    }

    /// Starts the drainer that publishes the completion events still owed
    /// ([`crate::events::start_drainer`]) through this submitter's bus.
    pub fn drain_completions(
        &self,
        settings: crate::events::DrainerSettings,
        tracker: &tokio_util::task::TaskTracker,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        crate::events::start_drainer(
            self.store.clone(),
            self.bus.clone(),
            self.topics.clone(),
            settings,
            tracker,
            shutdown,
        );
    }

    /// Runs an ended task's failed and never-run items again, as the same
    /// task ([`dts_store::Store::retry_task`]), and wakes the workers: the
    /// task keeps its plan, so no scheduler is involved, and without the
    /// wake an idle slot would find the work only at its next poll. A lost
    /// wake costs that latency, never the work.
    pub async fn retry(&self, id: &str) -> Result<RetryOutcome, EngineError> {
        let outcome = self.store.retry_task(id).await?;
        info!(task = %id, items = outcome.queued(), shards = outcome.shards, "task retried");
        let payload = serde_json::json!({ "wake": id }).to_string().into_bytes();
        if let Err(e) = self.bus.publish(&self.topics.shards, id, payload).await {
            warn!(task = %id, error = %with_causes(&e), "cannot wake the workers; their slots will poll");
        }
        Ok(outcome)
    }

    /// Publishes the message of a task already `SUBMITTED` once more (the
    /// sweeper's remedy for a task that stays unplanned); whether the bus
    /// took it. A failure is logged and changes nothing: the task keeps its
    /// status, and the next sweep tries again.
    pub async fn republish(&self, id: &str) -> bool {
        let Some(payload) = task_message(id) else {
            return false;
        };
        match self.bus.publish(&self.topics.tasks, id, payload).await {
            Ok(()) => true,
            Err(e) => {
                dts_metrics::metrics().bus_error("publish_task", true);
                warn!(task = %id, error = %with_causes(&e), "cannot republish an unplanned task; the next sweep tries again");
                false
            }
        }
    }

    /// Publishes the task message until it is accepted or attempts run out,
    /// keeping the task's status in step.
    pub async fn publish_with_retries(&self, id: &str) {
        let Some(payload) = task_message(id) else {
            return;
        };
        let attempts = self.settings.attempts.max(1);
        let mut backoff = self.settings.first_backoff;
        for attempt in 1..=attempts {
            let error = match self
                .bus
                .publish(&self.topics.tasks, id, payload.clone())
                .await
            {
                Ok(()) => {
                    self.mark(id, TaskStatus::Submitted, None).await;
                    return;
                }
                Err(e) => e,
            };
            let message = format!(
                "publishing to {} failed (attempt {attempt} of {attempts}): {}",
                self.topics.tasks,
                with_causes(&error)
            );
            let retried = attempt < attempts && error.is_retryable();
            dts_metrics::metrics().bus_error("publish_task", retried);
            if !retried {
                warn!(task = %id, "{message}; giving up");
                self.mark(id, TaskStatus::SubmissionFailed, Some(&message))
                    .await;
                return;
            }
            warn!(task = %id, "{message}; retrying in {backoff:?}");
            self.mark(id, TaskStatus::Retrying, Some(&message)).await;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.settings.max_backoff);
        }
    }

    /// Moves the task on; a refused transition means a scheduler already got
    /// further (planned or finished it), which is fine.
    async fn mark(&self, id: &str, to: TaskStatus, error: Option<&str>) {
        match self.store.transition(id, to, error).await {
            Ok(_) | Err(StoreError::IllegalTransition { .. }) => {}
            Err(e) => {
                dts_metrics::metrics().store_error("transition", false);
                warn!(task = %id, status = %to, error = %with_causes(&e), "could not record task status")
            }
        }
    }
}

/// The task topic's message for task `id`; `None` (logged) if it cannot be
/// encoded.
fn task_message(id: &str) -> Option<Vec<u8>> {
    match serde_json::to_vec(&TaskMessage {
        task_id: id.to_string(),
    }) {
        Ok(payload) => Some(payload),
        Err(e) => {
            warn!(task = %id, error = %with_causes(&e), "cannot encode task message");
            None
        }
    }
}
