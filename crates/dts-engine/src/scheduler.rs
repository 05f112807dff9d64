//! The scheduler: consumes the task topic, renders the template, splits the
//! inputs into shards by the live workers' cores, stores the plan and
//! publishes the shards (docs/architecture.md, flow step 2).
//!
//! Planning is idempotent. The plan is stored once ([`Store::save_plan`]);
//! a redelivered task message finds it and republishes only the shards not yet
//! completed. The task message is acknowledged only after the shards are on
//! the bus, so a scheduler that dies half-way leaves the message to be
//! delivered again.
//!
//! [`Store::save_plan`]: dts_store::Store::save_plan

use crate::shard::{ShardWork, ShardWorkError};
use crate::{EngineError, Topics, events, sleep_unless_cancelled, with_causes};
use dts_bus::{BusError, Delivery, DynBus};
use dts_model::plan::{PlanLimits, plan_shards};
use dts_model::{ShardRange, Task, TaskMessage, TaskStatus, WorkerKind};
use dts_store::{DynStore, PlanOutcome, StoreError};
use futures::stream::{self, StreamExt, TryStreamExt};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// Shards published concurrently while planning one task.
const PUBLISH_CONCURRENCY: usize = 16;

/// How the scheduler consumes and plans.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// The topics it reads tasks from and publishes shards to.
    pub topics: Topics,
    /// `pubsub.consumergroup`.
    pub group: String,
    /// `pubsub.consumercount`: task consumers in this process.
    pub consumers: u32,
    /// Shards per live core.
    pub oversplit: u32,
    /// Wait before a failed task message is handed back for redelivery.
    pub retry_delay: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            topics: Topics::default(),
            group: "task-subscribers".into(),
            consumers: 2,
            oversplit: 2,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// What planning one task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// Shards were published (all of a new plan, or the missing ones of an old).
    Published {
        /// How many were published now.
        shards: usize,
        /// How many the plan has.
        of: usize,
    },
    /// Nothing to do: the task is unknown, ended, or could not be planned.
    Nothing,
}

/// Plans tasks into shards; cheap to clone (clones share everything).
#[derive(Clone)]
pub struct Scheduler {
    store: DynStore,
    bus: DynBus,
    settings: SchedulerSettings,
}

impl Scheduler {
    /// A scheduler planning tasks of `store` and publishing on `bus`.
    pub fn new(store: DynStore, bus: DynBus, settings: SchedulerSettings) -> Self {
        Scheduler {
            store,
            bus,
            settings,
        }
    }

    /// Subscribes the configured number of consumers, then runs them on
    /// `tracker` until `shutdown`. Returns once all are subscribed, so a
    /// caller can start taking submissions knowing nothing will be missed.
    pub async fn start(
        &self,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<(), EngineError> {
        for consumer in 0..self.settings.consumers.max(1) {
            let subscription = self
                .bus
                .subscribe(&self.settings.topics.tasks, &self.settings.group)
                .await?;
            let scheduler = self.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move { scheduler.consume(consumer, subscription, shutdown).await });
        }
        Ok(())
    }

    async fn consume(
        &self,
        consumer: u32,
        mut subscription: Box<dyn dts_bus::Subscription>,
        shutdown: CancellationToken,
    ) {
        debug!(consumer, "scheduler consumer started");
        loop {
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = subscription.next() => next,
            };
            match delivery {
                Ok(delivery) => self.handle(delivery, &shutdown).await,
                Err(BusError::Closed) => break,
                Err(e) => {
                    warn!(consumer, error = %with_causes(&e), "cannot read the task topic");
                    if !sleep_unless_cancelled(self.settings.retry_delay, &shutdown).await {
                        break;
                    }
                }
            }
        }
        debug!(consumer, "scheduler consumer stopped");
    }

    async fn handle(&self, delivery: Delivery, shutdown: &CancellationToken) {
        let message: TaskMessage = match serde_json::from_slice(&delivery.payload) {
            Ok(message) => message,
            Err(e) => {
                // Nothing can ever make sense of it: drop it for good.
                error!(error = %with_causes(&e), key = %delivery.key, "skipping unreadable task message");
                if let Err(e) = delivery.ack().await {
                    warn!(error = %with_causes(&e), "cannot acknowledge a task message");
                }
                return;
            }
        };
        match self.plan_task(&message.task_id).await {
            Ok(_) => {
                if let Err(e) = delivery.ack().await {
                    warn!(task = %message.task_id, error = %with_causes(&e), "cannot acknowledge a task message");
                }
            }
            Err(e) => {
                // Not acknowledged: it will be delivered again. Wait a little
                // first so a store or bus outage is not hammered.
                warn!(task = %message.task_id, error = %with_causes(&e), "planning failed; the task will be planned again");
                sleep_unless_cancelled(self.settings.retry_delay, shutdown).await;
                drop(delivery);
            }
        }
    }

    /// Plans one task and publishes its shards. Safe to call any number of
    /// times for the same task.
    pub async fn plan_task(&self, id: &str) -> Result<Planned, EngineError> {
        let started = std::time::Instant::now();
        let Some(task) = self.store.task(id).await? else {
            warn!(task = %id, "task message for an unknown task");
            return Ok(Planned::Nothing);
        };
        if task.status.is_terminal() {
            return Ok(Planned::Nothing);
        }
        let Some(inputs) = self.store.inputs(id).await? else {
            return Err(StoreError::corrupt(
                format!("task {id}"),
                "the task has no stored input list",
            )
            .into());
        };
        let work = match ShardWork::new(&task) {
            Ok(work) => work,
            Err(ShardWorkError::Render { source, .. }) => {
                return self.fail(&task, &source.to_string()).await;
            }
            Err(e) => return Err(e.into()),
        };
        // Only dts workers consume shards: a node announced through the
        // seed's node-beat runs nothing, so its cores would only thin the plan.
        let live_cores: u32 = self
            .store
            .live_workers()
            .await?
            .iter()
            .filter(|w| w.kind == WorkerKind::Dts)
            .map(|w| w.cores)
            .fold(0, u32::saturating_add);
        let limits = PlanLimits {
            live_cores,
            oversplit: self.settings.oversplit,
            spread: self.bus.partitions(&self.settings.topics.shards),
            max_message_bytes: self.bus.max_message_bytes(),
            envelope_bytes: envelope_bytes(&work)?,
        };
        let shards = match plan_shards(&inputs, limits) {
            Ok(shards) => shards,
            Err(e) => {
                return self
                    .fail(&task, &format!("cannot plan the task: {e}"))
                    .await;
            }
        };

        let (stored, shards, to_publish) = match self.store.save_plan(id, &shards).await? {
            PlanOutcome::Created(task) => {
                info!(task = %id, items = inputs.len(), shards = shards.len(), live_cores, "task planned");
                let all: Vec<u32> = (0..shards.len() as u32).collect();
                (task, shards, all)
            }
            PlanOutcome::Existing { task, shards } => {
                let completed = self.store.completed_shards(id).await?;
                let missing: Vec<u32> = (0..shards.len() as u32)
                    .filter(|i| completed.binary_search(i).is_err())
                    .collect();
                info!(task = %id, republishing = missing.len(), of = shards.len(), "task was planned before");
                (task, shards, missing)
            }
            PlanOutcome::Ended(_) => return Ok(Planned::Nothing),
        };
        crate::failpoint::hit("plan-after-save");
        if stored.status == TaskStatus::Completed && shards.is_empty() {
            events::publish_completion(&self.bus, &self.settings.topics, &stored).await;
        }
        self.publish_shards(&work, &inputs, &shards, &to_publish)
            .await?;
        info!(
            task = %id,
            items = inputs.len(),
            shards = to_publish.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shards published"
        );
        Ok(Planned::Published {
            shards: to_publish.len(),
            of: shards.len(),
        })
    }

    async fn publish_shards(
        &self,
        work: &ShardWork<'_>,
        inputs: &[String],
        shards: &[ShardRange],
        which: &[u32],
    ) -> Result<(), EngineError> {
        let shard_count = shards.len() as u32;
        stream::iter(which.iter().copied())
            .map(|index| {
                let range = shards[index as usize];
                // A range past the stored list (a corrupt plan) gets no items
                // and is refused by `message`, rather than panicking here.
                let items = usize::try_from(range.start)
                    .ok()
                    .zip(usize::try_from(range.end()).ok())
                    .and_then(|(start, end)| inputs.get(start..end))
                    .unwrap_or_default()
                    .to_vec();
                let message = work.message(index, shard_count, range, items);
                async move {
                    let message = message?;
                    let payload =
                        serde_json::to_vec(&message).map_err(|e| EngineError::BadMessage {
                            what: "shard",
                            detail: e.to_string(),
                        })?;
                    let key = format!("{}/{}", message.task_id, index);
                    // Shard i goes to partition i mod partitions: the plan's count is a
                    // multiple of the partitions, so each worker's share is even.
                    self.bus
                        .publish_spread(&self.settings.topics.shards, index, &key, payload)
                        .await?;
                    Ok::<(), EngineError>(())
                }
            })
            .buffer_unordered(PUBLISH_CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    /// Ends a task that can never run, with the reason.
    async fn fail(&self, task: &Task, reason: &str) -> Result<Planned, EngineError> {
        error!(task = %task.id, "{reason}");
        match self
            .store
            .transition(&task.id, TaskStatus::Failed, Some(reason))
            .await
        {
            Ok(task) => events::publish_completion(&self.bus, &self.settings.topics, &task).await,
            Err(StoreError::IllegalTransition { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Planned::Nothing)
    }
}

/// An upper bound on the bytes a shard message of the task takes besides its
/// items: its message with no items and the widest numbers.
fn envelope_bytes(work: &ShardWork<'_>) -> Result<usize, EngineError> {
    let empty = ShardRange {
        start: u64::MAX,
        len: 0,
    };
    let mut widest = work.message(u32::MAX, u32::MAX, empty, Vec::new())?;
    widest.timeout_secs = u64::MAX;
    widest.retries = u32::MAX;
    widest.deadline_at = Some(u64::MAX);
    widest.memory_mb = widest.memory_mb.map(|_| u64::MAX);
    widest.milli_cpus = widest.milli_cpus.map(|_| u32::MAX);
    serde_json::to_vec(&widest)
        .map(|bytes| bytes.len())
        .map_err(|e| EngineError::BadMessage {
            what: "shard",
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::shard_message;
    use dts_bus::{Bus, EmbeddedBus};
    use dts_model::plan::item_wire_bytes;
    use dts_model::{NewTask, ShardMessage, Variables, WorkerInfo, now_millis};
    use dts_store::{SqliteStore, Store};
    use std::collections::BTreeSet;
    use std::sync::Arc;

    /// A task with every field a shard message carries set, and awkward inputs.
    fn full_task(items: usize) -> NewTask {
        NewTask {
            id: dts_model::new_task_id(),
            name: Some("nightly".into()),
            template_function: "echo {{greeting}} \"$1\" >&2".into(),
            variables: Variables::from_json(&serde_json::json!({"greeting": "it's \"hi\""}))
                .unwrap(),
            interpreter: "sh".into(),
            timeout_secs: 7,
            retries: 2,
            deadline_secs: Some(600),
            memory_mb: Some(256),
            milli_cpus: Some(1500),
            scheduling: Default::default(),
            inputs: (0..items)
                .map(|i| format!("in\"put\n{i} \u{0} é😀"))
                .collect(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shard_built_from_the_store_equals_the_message_the_scheduler_published() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let bus = Arc::new(EmbeddedBus::new(dts_bus::DEFAULT_MAX_MESSAGE_BYTES));
        let settings = SchedulerSettings::default();
        let mut published = bus
            .subscribe(&settings.topics.shards, "workers")
            .await
            .unwrap();
        let worker = WorkerInfo {
            id: "w-1".into(),
            hostname: "box".into(),
            cores: 3,
            running_items: 0,
            last_heartbeat: now_millis(),
            kind: WorkerKind::Dts,
            isolation: None,
            labels: Default::default(),
        };
        store
            .heartbeat(&worker, Duration::from_secs(600))
            .await
            .unwrap();
        let new = full_task(2_000);
        let task = new.to_task(now_millis());
        store.insert_task(&task, &new.inputs).await.unwrap();

        let scheduler = Scheduler::new(store.clone(), bus.clone(), settings);
        let planned = scheduler.plan_task(&task.id).await.unwrap();
        assert_eq!(planned, Planned::Published { shards: 6, of: 6 });

        let stored = store.task(&task.id).await.unwrap().unwrap();
        let PlanOutcome::Existing { shards: plan, .. } =
            store.save_plan(&task.id, &[]).await.unwrap()
        else {
            panic!("the task was planned");
        };
        let mut seen = BTreeSet::new();
        for _ in 0..plan.len() {
            let delivery = tokio::time::timeout(Duration::from_secs(10), published.next())
                .await
                .expect("a published shard message within 10 s")
                .unwrap();
            let message: ShardMessage = serde_json::from_slice(&delivery.payload).unwrap();
            delivery.ack().await.unwrap();
            let range = plan[message.shard_index as usize];
            let items = store
                .inputs_range(&task.id, range.start, range.len)
                .await
                .unwrap()
                .unwrap();
            let built = shard_message(
                &stored,
                message.shard_index,
                stored.chunks_to_execute,
                range,
                items,
            )
            .unwrap();
            assert_eq!(built, message, "shard {}", message.shard_index);
            seen.insert(message.shard_index);
        }
        assert_eq!(seen, (0..6).collect::<BTreeSet<u32>>());
    }

    #[test]
    fn a_full_shard_message_fits_the_limit_the_planner_was_given() {
        let new = NewTask {
            id: dts_model::new_task_id(),
            name: None,
            template_function: "echo \"$1\"".into(),
            variables: Variables::default(),
            interpreter: "bash".into(),
            timeout_secs: 10,
            retries: 0,
            deadline_secs: None,
            memory_mb: Some(100),
            milli_cpus: Some(1500),
            scheduling: Default::default(),
            inputs: (0..5000).map(|i| format!("in\"put\n{i}\u{1}é")).collect(),
        };
        let task = new.to_task(0);
        let limit = 4096;
        let envelope = envelope_bytes(&ShardWork::new(&task).unwrap()).unwrap();
        let shards = plan_shards(
            &new.inputs,
            PlanLimits {
                live_cores: 1,
                oversplit: 1,
                spread: 1,
                max_message_bytes: limit,
                envelope_bytes: envelope,
            },
        )
        .unwrap();
        assert!(shards.len() > 10);
        for (index, range) in shards.iter().enumerate() {
            let items = new.inputs[range.start as usize..range.end() as usize].to_vec();
            assert!(items.iter().map(|i| item_wire_bytes(i)).sum::<usize>() + envelope <= limit);
            let message = ShardMessage {
                task_id: task.id.clone(),
                shard_index: index as u32,
                shard_count: shards.len() as u32,
                start: range.start,
                script: new.template_function.clone(),
                interpreter: "bash".into(),
                timeout_secs: 10,
                retries: 0,
                deadline_at: None,
                items,
                memory_mb: task.memory_mb,
                milli_cpus: task.milli_cpus,
            };
            let bytes = serde_json::to_vec(&message).unwrap().len();
            assert!(bytes <= limit, "shard {index} is {bytes} bytes");
        }
    }
}
