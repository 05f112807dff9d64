//! The scheduler: consumes the task topic, checks the template renders,
//! splits the inputs into guided shards by the live workers' cores, stores
//! the plan and wakes the workers (docs/architecture.md, flow step 2).
//!
//! Shards do not travel on the bus: a stored plan makes every shard ready,
//! and workers' free slots claim them from the store (late binding,
//! docs/scheduling.md). The wake on the shard topic is only a hint; an idle
//! slot also polls.
//!
//! Planning is idempotent. The plan is stored once ([`Store::save_plan`]); a
//! redelivered task message finds it and only wakes the workers again. The
//! task message is acknowledged only after the plan is stored, so a
//! scheduler that dies half-way leaves the message to be delivered again.
//!
//! [`Store::save_plan`]: dts_store::Store::save_plan

use crate::shard::{ShardWork, ShardWorkError};
use crate::{EngineError, Topics, events, sleep_unless_cancelled, with_causes};
use dts_bus::{BusError, Delivery, DynBus};
use dts_model::plan::{PlanLimits, plan_guided};
use dts_model::{ShardRange, Task, TaskMessage, TaskStatus, WorkerKind};
use dts_store::{DynStore, PlanOutcome, StoreError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// How the scheduler consumes and plans.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// The topics it reads tasks from and wakes workers on.
    pub topics: Topics,
    /// `pubsub.consumergroup`.
    pub group: String,
    /// `pubsub.consumercount`: task consumers in this process.
    pub consumers: u32,
    /// Shards per live core in the first round of the guided plan.
    pub oversplit: u32,
    /// The fewest slots a plan is made for, so a task planned before most
    /// workers joined still has shards small enough to spread over them.
    pub min_planned_slots: u32,
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
            min_planned_slots: 8,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// What planning one task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// The plan is stored (now, or before) and the workers were woken.
    Ready {
        /// Shards not yet completed.
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
                    dts_metrics::metrics().bus_error("subscribe", true);
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
                e.count("plan_task", true);
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
        // A waiting task's message can only be a copy from before it
        // waited (a recovery that republishes every unfinished task): its
        // release publishes it again when it may run.
        if task.status == TaskStatus::Waiting {
            debug!(task = %id, "task message for a task still waiting for others; not planned");
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
        // Only dts workers run shards: a node announced through the seed's
        // node-beat runs nothing, so its cores would only thin the plan.
        let live_cores: u32 = self
            .store
            .live_workers()
            .await?
            .iter()
            .filter(|w| w.kind == WorkerKind::Dts)
            .map(|w| w.cores)
            .fold(0, u32::saturating_add);
        let limits = PlanLimits {
            live_cores: live_cores.max(self.settings.min_planned_slots),
            oversplit: self.settings.oversplit,
            max_message_bytes: self.bus.max_message_bytes(),
            envelope_bytes: envelope_bytes(&work)?,
        };
        let shards = match plan_guided(&inputs, limits) {
            Ok(shards) => shards,
            Err(e) => {
                return self
                    .fail(&task, &format!("cannot plan the task: {e}"))
                    .await;
            }
        };

        let (stored, shards, ready) = match self.store.save_plan(id, &shards).await? {
            PlanOutcome::Created(task) => {
                info!(task = %id, items = inputs.len(), shards = shards.len(), live_cores, "task planned");
                let count = shards.len();
                (task, shards, count)
            }
            PlanOutcome::Existing { task, shards } => {
                let completed = self.store.completed_shards(id).await?;
                let left = shards.len().saturating_sub(completed.len());
                info!(task = %id, left, of = shards.len(), "task was planned before");
                (task, shards, left)
            }
            PlanOutcome::Ended(_) => return Ok(Planned::Nothing),
        };
        crate::failpoint::hit("plan-after-save");
        if stored.status == TaskStatus::Completed && shards.is_empty() {
            events::publish_completion(&self.bus, &self.settings.topics, &*self.store, &stored)
                .await;
        } else {
            self.wake_workers(id).await;
        }
        info!(
            task = %id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "task ready"
        );
        Ok(Planned::Ready {
            shards: ready,
            of: shards.len(),
        })
    }

    /// Tells every listening worker that work is ready. A wake lost to a bus
    /// fault costs an idle slot's poll interval, so it is not retried.
    async fn wake_workers(&self, id: &str) {
        let payload = serde_json::json!({ "wake": id }).to_string().into_bytes();
        if let Err(e) = self
            .bus
            .publish(&self.settings.topics.shards, id, payload)
            .await
        {
            warn!(task = %id, error = %with_causes(&e), "cannot wake the workers; their slots will poll");
        }
    }

    /// Ends a task that can never run, with the reason.
    async fn fail(&self, task: &Task, reason: &str) -> Result<Planned, EngineError> {
        error!(task = %task.id, "{reason}");
        match self
            .store
            .transition(&task.id, TaskStatus::Failed, Some(reason))
            .await
        {
            Ok(task) => {
                events::publish_completion(&self.bus, &self.settings.topics, &*self.store, &task)
                    .await;
            }
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
    use dts_store::{ReadyClaim, SqliteStore, Store};
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
            halt: None,
            after: None,
            reduce: None,
            inputs: (0..items)
                .map(|i| format!("in\"put\n{i} \u{0} é😀").into())
                .collect(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_planned_task_has_guided_ready_shards_covering_its_inputs_and_wakes_the_workers() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let bus = Arc::new(EmbeddedBus::new(dts_bus::DEFAULT_MAX_MESSAGE_BYTES));
        let settings = SchedulerSettings::default();
        let mut wakes = bus
            .subscribe(&settings.topics.shards, "workers")
            .await
            .unwrap();
        let worker = WorkerInfo {
            id: "w-1".into(),
            hostname: "box".into(),
            cores: 16,
            running_items: 0,
            last_heartbeat: now_millis(),
            kind: WorkerKind::Dts,
            isolation: None,
            labels: Default::default(),
            shards_held: 0,
            running_by_task: Default::default(),
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
        let PlanOutcome::Existing { shards: plan, .. } =
            store.save_plan(&task.id, &[]).await.unwrap()
        else {
            panic!("the task was planned");
        };
        assert_eq!(
            planned,
            Planned::Ready {
                shards: plan.len(),
                of: plan.len()
            }
        );
        // 16 slots, 2 shards per slot in the first round: 2,000 / 32.
        assert_eq!(plan[0], ShardRange { start: 0, len: 63 });
        assert!(
            plan.windows(2)
                .all(|w| w[0].end() == w[1].start && w[0].len >= w[1].len)
        );
        assert_eq!(plan.last().map(|r| (r.end(), r.len)), Some((2_000, 1)));

        let wake = tokio::time::timeout(Duration::from_secs(10), wakes.next())
            .await
            .expect("a wake within 10 s")
            .unwrap();
        assert_eq!(wake.key, task.id);

        // Every shard a slot claims runs exactly its range of the inputs.
        let stored = store.task(&task.id).await.unwrap().unwrap();
        let mut claimed = BTreeSet::new();
        while let ReadyClaim::Claimed { shard, range, .. } = store
            .claim_ready_shard(&task.id, "w-1", Duration::from_secs(600), None)
            .await
            .unwrap()
        {
            let items = store
                .inputs_range(&task.id, range.start, range.len)
                .await
                .unwrap()
                .unwrap();
            let message =
                shard_message(&stored, shard, stored.chunks_to_execute, range, items).unwrap();
            assert_eq!(message.start, range.start);
            assert_eq!(
                message.items,
                new.inputs[range.start as usize..range.end() as usize].to_vec()
            );
            assert_eq!(message.script, "echo it's \"hi\" \"$1\" >&2");
            claimed.insert(shard);
        }
        assert_eq!(claimed, (0..plan.len() as u32).collect::<BTreeSet<u32>>());
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
            halt: None,
            after: None,
            reduce: None,
            inputs: (0..5000)
                .map(|i| format!("in\"put\n{i}\u{1}é").into())
                .collect(),
        };
        let task = new.to_task(0);
        let limit = 4096;
        let envelope = envelope_bytes(&ShardWork::new(&task).unwrap()).unwrap();
        let shards = plan_guided(
            &new.inputs,
            PlanLimits {
                live_cores: 1,
                oversplit: 1,
                max_message_bytes: limit,
                envelope_bytes: envelope,
            },
        )
        .unwrap();
        assert!(shards.len() > 10);
        for (index, range) in shards.iter().enumerate() {
            let items = new.inputs[range.start as usize..range.end() as usize].to_vec();
            assert!(
                items
                    .iter()
                    .map(|i| item_wire_bytes(i.as_bytes()))
                    .sum::<usize>()
                    + envelope
                    <= limit
            );
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
