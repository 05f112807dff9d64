//! A simulated process: what "killing" a worker or a server means in one
//! test runtime.
//!
//! Every component of a simulated process reaches the world only through the
//! store, the bus and its item runner, and the harness hands it wrappers of
//! all three that share one [`Life`]. Killing the life freezes the process
//! at its next step: from then on every store call, bus call and item of it
//! waits forever, as if the machine had stopped. Nothing is released or
//! completed on the way out, so its leases lapse as a dead worker's would.
//! The bus messages it held unacknowledged go back to their queues at once,
//! as Kafka hands a dead member's partitions to the rest of its group.

use async_trait::async_trait;
use dts_bus::{Acknowledge, Bus, BusResult, Delivery, DynBus, Subscription};
use dts_model::schedule::Schedule;
use dts_model::{Bytes, ItemResult, ShardRange, Task, TaskStatus, WorkerInfo};
use dts_store::{
    CopyClaim, CopyState, DynStore, HeartbeatOutcome, PlanOutcome, ReadyClaim, ResultFilter,
    RunnableTask, ShardClaim, ShardCompletion, Store, StoreResult, TaskCursor, TaskPage,
};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The life of one simulated process. Cheap to clone.
#[derive(Clone, Default)]
pub struct Life {
    inner: Arc<LifeInner>,
}

#[derive(Default)]
struct LifeInner {
    /// Cancelled when the process is killed.
    dead: CancellationToken,
    /// Cancelled to stop the process gracefully.
    shutdown: CancellationToken,
    /// Where the process's components run.
    tracker: TaskTracker,
    /// Deliveries the process holds unacknowledged, by a local number.
    held: Mutex<HashMap<u64, Delivery>>,
    next_delivery: AtomicU64,
    /// How long each heartbeat waits before it reaches the store (a store
    /// connection busy with other work), and each publish before it
    /// reaches the bus (a slow broker).
    heartbeat_delay: Mutex<Duration>,
    publish_delay: Mutex<Duration>,
    /// How long each status check (`task_status`, and a speculative
    /// copy's `copy_state`) waits before it reaches the store: a store too
    /// slow to tell the worker in time that a task ended.
    status_check_delay: Mutex<Duration>,
}

impl Life {
    /// Whether the process was killed.
    pub fn is_dead(&self) -> bool {
        self.inner.dead.is_cancelled()
    }

    /// The token that stops the process gracefully.
    pub fn shutdown(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Where the process's components are spawned.
    pub fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    /// Kills the process: it makes no further step, and what it held on the
    /// bus is delivered to others.
    pub fn kill(&self) {
        self.inner.dead.cancel();
        let held: Vec<Delivery> = {
            let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
            held.drain().map(|(_, delivery)| delivery).collect()
        };
        // Dropped unacknowledged: back to the front of their queues.
        drop(held);
    }

    /// From now on each heartbeat of the process waits `delay` before it
    /// reaches the store.
    pub fn delay_heartbeats(&self, delay: Duration) {
        *self
            .inner
            .heartbeat_delay
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = delay;
    }

    /// From now on each publish of the process waits `delay` before it
    /// reaches the bus.
    pub fn delay_publishes(&self, delay: Duration) {
        *self
            .inner
            .publish_delay
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = delay;
    }

    /// From now on each status check of the process (`task_status`, and
    /// its speculative copies' `copy_state`) waits `delay` before it
    /// reaches the store.
    pub fn delay_status_checks(&self, delay: Duration) {
        *self
            .inner
            .status_check_delay
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = delay;
    }

    async fn wait(&self, delay: &Mutex<Duration>) {
        let delay = *delay.lock().unwrap_or_else(|p| p.into_inner());
        if !delay.is_zero() {
            self.step(tokio::time::sleep(delay)).await;
        }
    }

    /// Resolves when the process is killed.
    pub async fn died(&self) {
        self.inner.dead.cancelled().await;
    }

    /// Waits forever once the process is dead.
    pub async fn freeze_if_dead(&self) {
        if self.is_dead() {
            std::future::pending::<()>().await;
        }
    }

    /// Runs `step` for the process: never starts once it is dead, and never
    /// returns if it died meanwhile (its outcome is lost with the process).
    pub async fn step<T>(&self, step: impl Future<Output = T>) -> T {
        self.freeze_if_dead().await;
        let out = tokio::select! {
            biased;
            _ = self.inner.dead.cancelled() => std::future::pending().await,
            out = step => out,
        };
        self.freeze_if_dead().await;
        out
    }

    /// A store that belongs to this process.
    pub fn store(&self, store: DynStore) -> DynStore {
        Arc::new(LifeStore {
            inner: store,
            life: self.clone(),
        })
    }

    /// A bus that belongs to this process.
    pub fn bus(&self, bus: DynBus) -> DynBus {
        Arc::new(LifeBus {
            inner: bus,
            life: self.clone(),
        })
    }

    fn hold(&self, delivery: Delivery) -> Delivery {
        let id = self.inner.next_delivery.fetch_add(1, Ordering::Relaxed);
        let (key, payload) = (delivery.key.clone(), delivery.payload.clone());
        self.inner
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, delivery);
        Delivery::new(
            key,
            payload,
            Box::new(HeldAck {
                id,
                life: self.clone(),
            }),
        )
    }

    fn take(&self, id: u64) -> Option<Delivery> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
    }
}

struct HeldAck {
    id: u64,
    life: Life,
}

#[async_trait]
impl Acknowledge for HeldAck {
    async fn ack(self: Box<Self>) -> BusResult<()> {
        let life = self.life.clone();
        let delivery = self.life.take(self.id);
        life.step(async move {
            match delivery {
                Some(delivery) => delivery.ack().await,
                None => Ok(()),
            }
        })
        .await
    }
}

impl Drop for HeldAck {
    fn drop(&mut self) {
        // Dropped unacknowledged by a live process: redelivered, as the bus
        // does. (After `ack` or a kill the entry is gone already.)
        drop(self.life.take(self.id));
    }
}

struct LifeBus {
    inner: DynBus,
    life: Life,
}

#[async_trait]
impl Bus for LifeBus {
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> BusResult<()> {
        self.life.wait(&self.life.inner.publish_delay).await;
        self.life
            .step(self.inner.publish(topic, key, payload))
            .await
    }

    async fn subscribe(&self, topic: &str, group: &str) -> BusResult<Box<dyn Subscription>> {
        let inner = self.life.step(self.inner.subscribe(topic, group)).await?;
        Ok(Box::new(LifeSubscription {
            inner,
            life: self.life.clone(),
        }))
    }

    async fn listen(&self, topic: &str) -> BusResult<Box<dyn Subscription>> {
        let inner = self.life.step(self.inner.listen(topic)).await?;
        Ok(Box::new(LifeSubscription {
            inner,
            life: self.life.clone(),
        }))
    }

    fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes()
    }
}

struct LifeSubscription {
    inner: Box<dyn Subscription>,
    life: Life,
}

#[async_trait]
impl Subscription for LifeSubscription {
    async fn next(&mut self) -> BusResult<Delivery> {
        self.life.freeze_if_dead().await;
        let delivery = tokio::select! {
            biased;
            _ = self.life.died() => std::future::pending().await,
            delivery = self.inner.next() => delivery?,
        };
        if self.life.is_dead() {
            // Died as the message arrived: it goes back, never to be seen.
            drop(delivery);
            return std::future::pending().await;
        }
        Ok(self.life.hold(delivery))
    }
}

struct LifeStore {
    inner: DynStore,
    life: Life,
}

#[async_trait]
impl Store for LifeStore {
    async fn insert_task(&self, task: &Task, inputs: &[Bytes]) -> StoreResult<()> {
        self.life.step(self.inner.insert_task(task, inputs)).await
    }
    async fn task(&self, id: &str) -> StoreResult<Option<Task>> {
        self.life.step(self.inner.task(id)).await
    }
    async fn task_status(&self, id: &str) -> StoreResult<Option<TaskStatus>> {
        self.life.wait(&self.life.inner.status_check_delay).await;
        self.life.step(self.inner.task_status(id)).await
    }
    async fn task_version(&self, id: &str) -> StoreResult<Option<u64>> {
        self.life.step(self.inner.task_version(id)).await
    }
    async fn inputs(&self, id: &str) -> StoreResult<Option<Vec<Bytes>>> {
        self.life.step(self.inner.inputs(id)).await
    }
    async fn inputs_range(
        &self,
        id: &str,
        start: u64,
        len: u64,
    ) -> StoreResult<Option<Vec<Bytes>>> {
        self.life
            .step(self.inner.inputs_range(id, start, len))
            .await
    }
    async fn list_tasks(&self, status: Option<TaskStatus>, limit: usize) -> StoreResult<Vec<Task>> {
        self.life.step(self.inner.list_tasks(status, limit)).await
    }
    async fn list_tasks_page(
        &self,
        status: Option<TaskStatus>,
        after: Option<TaskCursor>,
        limit: usize,
    ) -> StoreResult<TaskPage> {
        self.life
            .step(self.inner.list_tasks_page(status, after, limit))
            .await
    }
    async fn task_ids_with_prefix(&self, prefix: &str, limit: usize) -> StoreResult<Vec<String>> {
        self.life
            .step(self.inner.task_ids_with_prefix(prefix, limit))
            .await
    }
    async fn delete_task(&self, id: &str) -> StoreResult<Task> {
        self.life.step(self.inner.delete_task(id)).await
    }
    async fn unfinished_task_ids(&self) -> StoreResult<Vec<String>> {
        self.life.step(self.inner.unfinished_task_ids()).await
    }
    async fn transition(&self, id: &str, to: TaskStatus, error: Option<&str>) -> StoreResult<Task> {
        self.life.step(self.inner.transition(id, to, error)).await
    }
    async fn save_plan(&self, id: &str, shards: &[ShardRange]) -> StoreResult<PlanOutcome> {
        self.life.step(self.inner.save_plan(id, shards)).await
    }
    async fn completed_shards(&self, id: &str) -> StoreResult<Vec<u32>> {
        self.life.step(self.inner.completed_shards(id)).await
    }
    async fn retry_task(&self, id: &str) -> StoreResult<dts_store::RetryOutcome> {
        self.life.step(self.inner.retry_task(id)).await
    }
    async fn attempt_history(
        &self,
        id: &str,
        indices: &[u64],
    ) -> StoreResult<std::collections::BTreeMap<u64, Vec<dts_model::PastAttempt>>> {
        self.life
            .step(self.inner.attempt_history(id, indices))
            .await
    }
    async fn record_results(&self, id: &str, results: &[ItemResult]) -> StoreResult<TaskStatus> {
        self.life.step(self.inner.record_results(id, results)).await
    }
    async fn record_shard_results(
        &self,
        id: &str,
        shard: u32,
        results: &[ItemResult],
    ) -> StoreResult<TaskStatus> {
        self.life
            .step(self.inner.record_shard_results(id, shard, results))
            .await
    }
    async fn complete_shard(
        &self,
        id: &str,
        shard: u32,
        results: &[ItemResult],
    ) -> StoreResult<ShardCompletion> {
        self.life
            .step(self.inner.complete_shard(id, shard, results))
            .await
    }
    async fn recorded_indices(&self, id: &str, start: u64, end: u64) -> StoreResult<Vec<u64>> {
        self.life
            .step(self.inner.recorded_indices(id, start, end))
            .await
    }
    async fn results(
        &self,
        id: &str,
        filter: ResultFilter,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(u64, Vec<ItemResult>)> {
        self.life
            .step(self.inner.results(id, filter, offset, limit))
            .await
    }
    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> StoreResult<HeartbeatOutcome> {
        self.life.wait(&self.life.inner.heartbeat_delay).await;
        self.life.step(self.inner.heartbeat(worker, ttl)).await
    }
    async fn remove_worker(&self, id: &str) -> StoreResult<()> {
        self.life.step(self.inner.remove_worker(id)).await
    }
    async fn live_workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        self.life.step(self.inner.live_workers()).await
    }
    async fn claim_shard(
        &self,
        id: &str,
        shard: u32,
        worker: &str,
        lease: Duration,
    ) -> StoreResult<ShardClaim> {
        self.life
            .step(self.inner.claim_shard(id, shard, worker, lease))
            .await
    }
    async fn renew_leases(
        &self,
        worker: &str,
        shards: &[(String, u32)],
        lease: Duration,
    ) -> StoreResult<Vec<(String, u32)>> {
        self.life
            .step(self.inner.renew_leases(worker, shards, lease))
            .await
    }
    async fn live_leases(&self, id: &str) -> StoreResult<u32> {
        self.life.step(self.inner.live_leases(id)).await
    }
    async fn release_shard(
        &self,
        id: &str,
        shard: u32,
        worker: &str,
        clean: bool,
    ) -> StoreResult<()> {
        self.life
            .step(self.inner.release_shard(id, shard, worker, clean))
            .await
    }
    async fn runnable_tasks(&self, limit: usize) -> StoreResult<Vec<RunnableTask>> {
        self.life.step(self.inner.runnable_tasks(limit)).await
    }
    async fn claim_ready_shard(
        &self,
        id: &str,
        worker: &str,
        lease: Duration,
        max_held: Option<u32>,
    ) -> StoreResult<ReadyClaim> {
        self.life
            .step(self.inner.claim_ready_shard(id, worker, lease, max_held))
            .await
    }
    async fn claim_copy(
        &self,
        id: &str,
        worker: &str,
        per_item: Duration,
        min: Duration,
    ) -> StoreResult<CopyClaim> {
        self.life
            .step(self.inner.claim_copy(id, worker, per_item, min))
            .await
    }
    async fn copy_state(&self, id: &str, shard: u32, token: u64) -> StoreResult<CopyState> {
        self.life.wait(&self.life.inner.status_check_delay).await;
        self.life
            .step(self.inner.copy_state(id, shard, token))
            .await
    }
    async fn record_copy_results(
        &self,
        id: &str,
        shard: u32,
        token: u64,
        results: &[ItemResult],
    ) -> StoreResult<Option<TaskStatus>> {
        self.life
            .step(self.inner.record_copy_results(id, shard, token, results))
            .await
    }
    async fn complete_copy(
        &self,
        id: &str,
        shard: u32,
        token: u64,
        results: &[ItemResult],
    ) -> StoreResult<Option<ShardCompletion>> {
        self.life
            .step(self.inner.complete_copy(id, shard, token, results))
            .await
    }
    async fn mark_item_started(&self, id: &str, index: u64) -> StoreResult<u32> {
        self.life
            .step(self.inner.mark_item_started(id, index))
            .await
    }

    async fn stats(&self) -> StoreResult<dts_store::activity::StoreStats> {
        self.life.step(self.inner.stats()).await
    }

    async fn task_activity(
        &self,
        id: &str,
    ) -> StoreResult<Option<dts_store::activity::TaskActivity>> {
        self.life.step(self.inner.task_activity(id)).await
    }

    async fn claim_completions(
        &self,
        limit: usize,
        settle: Duration,
        lease: Duration,
    ) -> StoreResult<Vec<Task>> {
        self.life
            .step(self.inner.claim_completions(limit, settle, lease))
            .await
    }

    async fn ack_completion(&self, id: &str, finished_at: u64) -> StoreResult<()> {
        self.life
            .step(self.inner.ack_completion(id, finished_at))
            .await
    }

    async fn pending_completions(&self) -> StoreResult<u64> {
        self.life.step(self.inner.pending_completions()).await
    }
    async fn insert_schedule(&self, schedule: &Schedule) -> StoreResult<()> {
        self.life.step(self.inner.insert_schedule(schedule)).await
    }
    async fn schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        self.life.step(self.inner.schedule(name)).await
    }
    async fn schedules(&self) -> StoreResult<Vec<Schedule>> {
        self.life.step(self.inner.schedules()).await
    }
    async fn update_schedule(&self, schedule: &Schedule) -> StoreResult<bool> {
        self.life.step(self.inner.update_schedule(schedule)).await
    }
    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        self.life.step(self.inner.delete_schedule(name)).await
    }
    async fn reducing_tasks(&self, limit: usize) -> StoreResult<Vec<Task>> {
        self.life.step(self.inner.reducing_tasks(limit)).await
    }
    async fn claim_reduce(&self, id: &str, worker: &str) -> StoreResult<dts_store::ReduceClaim> {
        self.life.step(self.inner.claim_reduce(id, worker)).await
    }
    async fn finish_reduce(
        &self,
        id: &str,
        worker: &str,
        attempt: u32,
        result: &dts_model::ReduceResult,
    ) -> StoreResult<Option<Task>> {
        self.life
            .step(self.inner.finish_reduce(id, worker, attempt, result))
            .await
    }
}
