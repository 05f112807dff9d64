//! The worker: each of its slots (one per core) claims a shard from the
//! store when it frees, runs its items one after another, records results as
//! they come and completes the shard (docs/architecture.md, flow steps 3 and
//! 4; docs/scheduling.md for how a slot picks). It heartbeats into the store
//! so schedulers know it is alive, and renews the leases of the shards its
//! slots hold.
//!
//! Items run through an [`ItemRunner`]: the [`Executor`](dts_executor::Executor)
//! in production, simulated items in the engine's tests.
//!
//! The bus only wakes the slots: the scheduler publishes a wake on the shard
//! topic when a task is planned. Shutdown happens in phases: stop claiming,
//! let running items finish until `drain_grace`, then kill them. A shard cut
//! short is released cleanly with the results it has, and its other items
//! run when it is claimed again.

mod reduce;
mod runner;
mod shard;
mod slots;
mod speculation;

pub use runner::{ItemRunner, Slot};

use crate::{Topics, with_causes};
use dts_bus::{BusError, DynBus};
use dts_model::{DynClock, Isolation, WorkerInfo, WorkerKind, system_clock};
use dts_store::{CopyState, DynStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// How a worker runs: its identity, its cores and its timings.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Unique among live workers; shown in results and `/v1/workers`.
    pub id: String,
    /// The host it runs on, shown in `/v1/workers`.
    pub hostname: String,
    /// Items run at once.
    pub cores: u32,
    /// Labels announced in every heartbeat (`worker.labels`), already
    /// checked by the configuration.
    pub labels: BTreeMap<String, String>,
    /// The topics it hears wakes on and publishes completions to.
    pub topics: Topics,
    /// How often the worker heartbeats and renews its shard leases (the
    /// leases at least three times per `heartbeat_ttl`; see
    /// `renewal_interval`).
    pub heartbeat_interval: Duration,
    /// How long a heartbeat keeps the worker live; also how long the
    /// worker's lease on a running shard outlives its last renewal (renewed
    /// with every heartbeat), so a dead worker's shards are taken over
    /// after about this long.
    pub heartbeat_ttl: Duration,
    /// Deaths an item may cause (it was running when its worker died)
    /// before it is recorded as failed instead of run again.
    pub shard_attempts: u32,
    /// Results are written at least this often while a shard runs...
    pub flush_interval: Duration,
    /// ...or as soon as this many are waiting.
    pub flush_batch: usize,
    /// How often a running shard checks whether its task was cancelled.
    pub status_poll: Duration,
    /// How long running items may finish after shutdown begins.
    pub drain_grace: Duration,
    /// Wait before a shard that failed on a store or bus error is handed back.
    pub retry_delay: Duration,
    /// The longest an idle slot waits before it looks for work again
    /// without a wake (it starts at a few tens of milliseconds and backs off).
    pub idle_poll: Duration,
    /// How old the slots' shared view of the runnable tasks may be when a
    /// slot ranks them. A wake (a task was planned) makes the next rank read
    /// it again at once, so this bounds how stale other workers' running
    /// counts are for fair share, and how late a task whose wake was lost
    /// is seen by busy slots.
    pub snapshot_max_age: Duration,
    /// Straggler speculation (`scheduler.speculation-factor`): an idle slot
    /// copies a shard that has run longer than this many times the task's
    /// median item time per item; 0 turns it off.
    pub speculation_factor: u32,
    /// No shard is copied sooner than this (`scheduler.speculation-min-ms`).
    pub speculation_min: Duration,
    /// "Now" for heartbeats and task deadlines (the system clock; tests
    /// pass one that follows tokio's paused time).
    pub clock: DynClock,
    /// Where running items' output is also copied for live logs (off by
    /// default; the node shares it with its API in embedded mode).
    pub live_logs: crate::live::LiveRegistry,
}

impl WorkerSettings {
    /// Defaults for a worker with `cores` slots.
    pub fn new(id: impl Into<String>, cores: u32) -> Self {
        WorkerSettings {
            id: id.into(),
            hostname: hostname(),
            cores: cores.max(1),
            labels: BTreeMap::new(),
            topics: Topics::default(),
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_ttl: Duration::from_secs(10),
            shard_attempts: 3,
            flush_interval: Duration::from_millis(200),
            flush_batch: 512,
            status_poll: Duration::from_millis(500),
            drain_grace: Duration::from_secs(10),
            retry_delay: Duration::from_secs(1),
            idle_poll: Duration::from_secs(1),
            snapshot_max_age: Duration::from_secs(1),
            speculation_factor: 3,
            speculation_min: Duration::from_secs(1),
            clock: system_clock(),
            live_logs: crate::live::LiveRegistry::default(),
        }
    }
}

/// This machine's host name, or "localhost" if it cannot be read.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes and we stop at the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A default worker id: host, process and a random suffix, unique enough for
/// several workers on one host.
pub fn default_worker_id() -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}-{}", hostname(), std::process::id(), &suffix[..6])
}

/// Shared by every shard this worker runs.
struct Inner {
    store: DynStore,
    bus: DynBus,
    runner: Arc<dyn ItemRunner>,
    /// How the runner isolates items, as heartbeats announce it.
    isolation: Isolation,
    settings: WorkerSettings,
    /// One permit per core: an item holds one while its process runs.
    slots: Semaphore,
    /// Items running now, for heartbeats.
    running: AtomicU32,
    /// This worker's handles in the process's metrics.
    metrics: dts_metrics::WorkerMetrics,
    /// Kills every running item: the last phase of shutdown, or
    /// [`Worker::kill_items`] (an interrupted `dts run`).
    kill: CancellationToken,
    /// One stop token per task with shards running here, shared by those
    /// shards: when one of them learns the task was cancelled, the items of
    /// all of them stop at once, and none of them starts another.
    task_stops: Mutex<HashMap<String, TaskStop>>,
    /// The shards this worker holds a lease on, each with a token cancelled
    /// if the lease is lost (another worker took the shard over).
    leases: Mutex<HashMap<(String, u32), HeldLease>>,
    /// Numbers each hold of a lease, so a renewal answer about an earlier
    /// hold of the same shard never stops a later one.
    next_hold: AtomicU64,
    /// Shards that lost a worker before run one at a time, one item at a
    /// time, so a death points at the one item that was running.
    careful: Semaphore,
    /// The runnable tasks as the slots last read them.
    snapshot: Mutex<slots::Snapshot>,
    /// Held while one slot reads the snapshot from the store.
    snapshot_read: tokio::sync::Mutex<()>,
    /// Wakes idle slots: a task was planned.
    wake: Notify,
    /// Told after each renewal the store confirmed: slots that stopped
    /// starting items on a lease that may have lapsed look again.
    renewed: Notify,
    /// Per task, the recent times of the items this worker's slots ran: what
    /// straggler speculation judges a long-running shard by.
    item_times: Mutex<HashMap<String, dts_model::scheduling::ItemTimes>>,
}

/// A lease this worker holds, as the renewal loop sees it.
struct HeldLease {
    /// Cancelled if the lease is lost: stops the shard's items.
    stop: CancellationToken,
    /// Which hold of the shard this is (see [`Inner::next_hold`]).
    hold: u64,
    /// The shard's own completion is on its way to the store, which lets
    /// the lease go: a renewal that finds it gone then is no loss.
    completing: bool,
    /// When the last claim or renewal the store confirmed was asked for,
    /// by this worker's monotonic clock (which runs on while the process
    /// is stopped): the lease lasts at least `heartbeat_ttl` from then.
    confirmed: tokio::time::Instant,
}

struct TaskStop {
    token: CancellationToken,
    /// Cancelled when the task halted `soon` (its `halt`): its shards here
    /// start no new item and let the running ones finish.
    drain: CancellationToken,
    /// The task has a `soon` halt: its ending `FAILED` drains instead of
    /// killing.
    soon: bool,
    shards: usize,
    /// Items of the task running on this worker now.
    running: Arc<AtomicU32>,
}

/// A worker; cheap to clone (clones share everything).
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl Worker {
    /// A worker that runs items with `runner` (an
    /// [`Executor`](dts_executor::Executor) outside tests).
    pub fn new(
        store: DynStore,
        bus: DynBus,
        runner: impl ItemRunner,
        settings: WorkerSettings,
    ) -> Self {
        let slots = Semaphore::new(settings.cores as usize);
        let metrics = dts_metrics::metrics().worker(&settings.id, settings.cores);
        Worker {
            inner: Arc::new(Inner {
                store,
                bus,
                isolation: runner.isolation(),
                runner: Arc::new(runner),
                settings,
                slots,
                running: AtomicU32::new(0),
                metrics,
                kill: CancellationToken::new(),
                task_stops: Mutex::new(HashMap::new()),
                leases: Mutex::new(HashMap::new()),
                next_hold: AtomicU64::new(0),
                careful: Semaphore::new(1),
                snapshot: Mutex::new(slots::Snapshot::default()),
                snapshot_read: tokio::sync::Mutex::new(()),
                wake: Notify::new(),
                renewed: Notify::new(),
                item_times: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The worker's id, as its heartbeats, leases and results name it.
    pub fn id(&self) -> &str {
        &self.inner.settings.id
    }

    /// Items running now.
    pub fn running_items(&self) -> u32 {
        self.inner.running.load(Ordering::Relaxed)
    }

    /// Kills every running item now (SIGTERM, SIGKILL after the kill
    /// grace), without waiting for a status poll or the drain grace: what a
    /// `dts run` that was interrupted needs. Killed items get no result;
    /// combine with stopping the worker, or its slots start the next items.
    pub fn kill_items(&self) {
        self.inner.kill.cancel();
    }

    /// Sends a first heartbeat and starts listening for wakes, then runs on
    /// `tracker` until `shutdown`. Returning first means a task submitted
    /// afterwards is planned with this worker's cores.
    pub async fn start(
        &self,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<(), crate::EngineError> {
        self.inner.heartbeat().await?;
        let wakes = self
            .inner
            .bus
            .listen(&self.inner.settings.topics.shards)
            .await?;
        info!(worker = %self.inner.settings.id, cores = self.inner.settings.cores, "worker started");

        let beating = self.inner.clone();
        let beat_stop = shutdown.clone();
        tracker.spawn(async move { beating.heartbeat_loop(beat_stop).await });
        let renewing = self.inner.clone();
        let renew_stop = shutdown.clone();
        tracker.spawn(async move { renewing.renewal_loop(renew_stop).await });
        let listening = self.inner.clone();
        let listen_stop = shutdown.clone();
        tracker.spawn(async move { listening.hear_wakes(wakes, listen_stop).await });
        let watching = self.inner.clone();
        let watch_stop = shutdown.clone();
        tracker.spawn(async move { watching.watch_tasks(watch_stop).await });
        let reducing = self.inner.clone();
        let reduce_stop = shutdown.clone();
        let reduces = tracker.clone();
        tracker.spawn(async move { reducing.reduce_loop(reduce_stop, reduces).await });
        let running = self.inner.clone();
        tracker.spawn(async move { running.run_slots(shutdown).await });
        Ok(())
    }
}

impl Inner {
    /// The stop token of `task` on this worker (a child of `kill`), shared by
    /// all its shards here, and its drain token (see [`TaskStop::drain`]).
    /// Pair with [`Inner::release_task_stop`].
    fn task_stop(
        &self,
        task: &dts_model::Task,
        kill: &CancellationToken,
    ) -> (CancellationToken, CancellationToken, Arc<AtomicU32>) {
        let mut stops = self.task_stops.lock().unwrap_or_else(|p| p.into_inner());
        let entry = stops.entry(task.id.clone()).or_insert_with(|| TaskStop {
            token: kill.child_token(),
            drain: CancellationToken::new(),
            soon: task.halt.is_some_and(|h| !h.now),
            shards: 0,
            running: Arc::new(AtomicU32::new(0)),
        });
        entry.shards += 1;
        (
            entry.token.clone(),
            entry.drain.clone(),
            entry.running.clone(),
        )
    }

    /// The task `id` ended with `status` (`None`: it is gone): its shards
    /// here stop their items, as for a cancel, unless a `soon` halt failed
    /// it; then they start no new item and let the running ones finish.
    fn task_ended(&self, id: &str, status: Option<dts_model::TaskStatus>) {
        let stops = self.task_stops.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stop) = stops.get(id) {
            if stop.soon && status == Some(dts_model::TaskStatus::Failed) {
                stop.drain.cancel();
            } else {
                stop.token.cancel();
            }
        }
    }

    fn release_task_stop(&self, task: &str) {
        let mut stops = self.task_stops.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = stops.get_mut(task) {
            entry.shards -= 1;
            if entry.shards == 0 {
                stops.remove(task);
            }
        }
    }

    /// Records a lease this worker now holds. The token (a child of
    /// `parent`) is cancelled if the lease is lost.
    fn hold_lease(
        &self,
        task: &str,
        shard: u32,
        parent: &CancellationToken,
        claimed_at: tokio::time::Instant,
    ) -> CancellationToken {
        let stop = parent.child_token();
        let hold = self.next_hold.fetch_add(1, Ordering::Relaxed);
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases.insert(
            (task.to_string(), shard),
            HeldLease {
                stop: stop.clone(),
                hold,
                completing: false,
                confirmed: claimed_at,
            },
        );
        stop
    }

    /// The shard's completion is about to be written: from now on a renewal
    /// that finds the lease gone saw that completion, not a takeover.
    fn completing_lease(&self, task: &str, shard: u32) {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = leases.get_mut(&(task.to_string(), shard)) {
            held.completing = true;
        }
    }

    /// Whether an item of the shard may start now: the lease was confirmed
    /// less than `heartbeat_ttl` minus a fifth of it ago, by this worker's
    /// clock. After the process was stopped (SIGSTOP), or while renewals
    /// fail, the lease may have lapsed in the store and the task may have
    /// been cancelled or the shard taken over meanwhile; the slot then waits
    /// for the renewal loop ([`Inner::await_lease`]). A shard not held here
    /// (a copy) has no lease to check.
    pub(super) fn lease_fresh(&self, task: &str, shard: u32) -> bool {
        let ttl = self.settings.heartbeat_ttl;
        let limit = ttl.saturating_sub(ttl / 5);
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases
            .get(&(task.to_string(), shard))
            .is_none_or(|held| held.confirmed.elapsed() < limit)
    }

    /// Waits until the shard's lease is confirmed again, then asks the
    /// store whether the task ended meanwhile (a cancel the status poll has
    /// not seen yet). Only taken after a lease went stale, so it costs
    /// nothing on the way of ordinary item starts. False if `stop` was
    /// cancelled: the lease was lost or the task ended.
    pub(super) async fn await_lease(
        &self,
        task: &str,
        shard: u32,
        stop: &CancellationToken,
    ) -> bool {
        warn!(task = %task, shard, "the shard's lease may have lapsed (was this process stopped?); starting no item until it is renewed");
        // ends: the renewal loop confirms the lease or reports it lost
        // (which cancels `stop`), or the worker stops.
        loop {
            let renewed = self.renewed.notified();
            if stop.is_cancelled() {
                return false;
            }
            if self.lease_fresh(task, shard) {
                break;
            }
            tokio::select! {
                _ = renewed => {}
                _ = stop.cancelled() => return false,
                // The renewal loop's own interval, in case a notice is missed.
                _ = tokio::time::sleep(renewal_interval(&self.settings)) => {}
            }
        }
        match self.store.task_status(task).await {
            Ok(Some(status)) if !status.is_terminal() => {}
            Ok(status) => self.task_ended(task, status),
            Err(e) => {
                dts_metrics::metrics().store_error("task_status", false);
                debug!(task = %task, error = %with_causes(&e), "cannot check the task's status; the status poll will")
            }
        }
        !stop.is_cancelled()
    }

    /// Whether the copy of shard `shard` of `task` handed out with `token`
    /// may start another item: the store says the shard is open, the task
    /// `INPROGRESS` and the copy still the shard's (no retry reopened it
    /// since). What a copy checks before each item. A task that ended is
    /// stopped here at once; when the store cannot answer the copy starts
    /// nothing (the shard's holder runs it anyway).
    pub(super) async fn copy_may_run(&self, task: &str, shard: u32, token: u64) -> bool {
        match self.store.copy_state(task, shard, token).await {
            Ok(CopyState::Runs) => true,
            Ok(CopyState::TaskNotRunning(status)) => {
                if status.is_none_or(|status| status.is_terminal()) {
                    self.task_ended(task, status);
                }
                false
            }
            Ok(state) => {
                debug!(task = %task, shard, ?state, "the copy starts no more items");
                false
            }
            Err(e) => {
                dts_metrics::metrics().store_error("copy_state", false);
                debug!(task = %task, error = %with_causes(&e), "cannot check whether the copy may run on; it starts no more items");
                false
            }
        }
    }

    fn forget_lease(&self, task: &str, shard: u32) {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases.remove(&(task.to_string(), shard));
    }

    /// Extends every lease this worker holds, in one store call; stops the
    /// shards whose lease another worker took (or a copy's completion
    /// ended). Returns whether the store answered.
    ///
    /// The store answers about the leases held when the call began; a
    /// shard may have completed, or been given back and claimed again,
    /// before the answer arrives. Only a hold that is still the one asked
    /// about, and not completing itself, is stopped.
    async fn renew_leases(&self) -> bool {
        let held: HashMap<(String, u32), u64> = {
            let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            leases
                .iter()
                .map(|(key, held)| (key.clone(), held.hold))
                .collect()
        };
        if held.is_empty() {
            return true;
        }
        let shards: Vec<(String, u32)> = held.keys().cloned().collect();
        let ttl = self.settings.heartbeat_ttl;
        let started = tokio::time::Instant::now();
        // A call that hangs must not outlive the leases: give up after a
        // third of the lease, leaving time to try again before they lapse.
        let call = self.store.renew_leases(&self.settings.id, &shards, ttl);
        let give_up = (ttl / 3).max(Duration::from_millis(10));
        let answer = match tokio::time::timeout(give_up, call).await {
            Ok(answer) => answer,
            Err(_) => {
                dts_metrics::metrics().lease_renewal_failed();
                warn!(worker = %self.settings.id, "renewing shard leases timed out; trying again");
                return false;
            }
        };
        match answer {
            Ok(lost) => {
                dts_metrics::metrics().lease_renewed(started.elapsed());
                let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
                // Renewed: every hold asked about and not reported lost.
                for (key, hold) in &held {
                    if lost.contains(key) {
                        continue;
                    }
                    match leases.get_mut(key) {
                        Some(now) if now.hold == *hold => {
                            now.confirmed = now.confirmed.max(started);
                        }
                        _ => {}
                    }
                }
                for key in lost {
                    let asked = held.get(&key).copied();
                    match leases.get(&key) {
                        Some(now) if Some(now.hold) == asked && !now.completing => {
                            dts_metrics::metrics().lease_lost();
                            warn!(task = %key.0, shard = key.1, "lost the lease on a running shard; stopping it");
                            now.stop.cancel();
                        }
                        _ => {
                            debug!(task = %key.0, shard = key.1, "a lease let go while its renewal was under way")
                        }
                    }
                }
                drop(leases);
                self.renewed.notify_waiters();
                true
            }
            Err(e) => {
                dts_metrics::metrics().store_error("renew_leases", true);
                dts_metrics::metrics().lease_renewal_failed();
                warn!(worker = %self.settings.id, error = %with_causes(&e), "cannot renew shard leases; trying again");
                false
            }
        }
    }

    /// Renews the leases on a task of its own, so a slow heartbeat or a
    /// busy slot never delays a renewal (they still share the store's
    /// connection); a failed or slow renewal is tried again within a quarter
    /// of the interval instead of a whole interval later. Runs while shards
    /// drain after shutdown began, until the last lease is given back.
    async fn renewal_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let every = renewal_interval(&self.settings);
        let retry = (every / 4).max(Duration::from_millis(50));
        let mut next = tokio::time::Instant::now() + every;
        // ends: once shutdown began and no lease is held.
        loop {
            wait_for_tick(next, &shutdown).await;
            if shutdown.is_cancelled() && self.shards_held() == 0 {
                break;
            }
            if tokio::time::Instant::now() >= next {
                let renewed = self.renew_leases().await;
                next = tokio::time::Instant::now() + if renewed { every } else { retry };
            }
        }
    }

    fn info(&self) -> WorkerInfo {
        WorkerInfo {
            id: self.settings.id.clone(),
            hostname: self.settings.hostname.clone(),
            cores: self.settings.cores,
            running_items: self.running.load(Ordering::Relaxed),
            last_heartbeat: self.settings.clock.now_millis(),
            kind: WorkerKind::Dts,
            isolation: Some(self.isolation.clone()),
            labels: self.settings.labels.clone(),
            shards_held: self.shards_held(),
            running_by_task: self.running_by_task(),
        }
    }

    /// Shards this worker holds a lease on, for its heartbeat.
    fn shards_held(&self) -> u32 {
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        u32::try_from(leases.len()).unwrap_or(u32::MAX)
    }

    /// Items running here by task, leaving out tasks with none.
    fn running_by_task(&self) -> BTreeMap<String, u32> {
        let stops = self.task_stops.lock().unwrap_or_else(|p| p.into_inner());
        stops
            .iter()
            .map(|(task, stop)| (task.clone(), stop.running.load(Ordering::Relaxed)))
            .filter(|(_, running)| *running > 0)
            .collect()
    }

    async fn heartbeat(&self) -> Result<(), crate::EngineError> {
        self.store
            .heartbeat(&self.info(), self.settings.heartbeat_ttl)
            .await?;
        Ok(())
    }

    async fn heartbeat_loop(self: Arc<Self>, shutdown: CancellationToken) {
        // The worker stays listed while its shards drain after shutdown
        // began, so this loop runs until the last lease is given back.
        let interval = self.settings.heartbeat_interval;
        let mut next_beat = tokio::time::Instant::now() + interval;
        loop {
            wait_for_tick(next_beat, &shutdown).await;
            if shutdown.is_cancelled() && self.shards_held() == 0 {
                break;
            }
            if tokio::time::Instant::now() >= next_beat {
                next_beat += interval;
                if let Err(e) = self.heartbeat().await {
                    e.count("heartbeat", false);
                    warn!(worker = %self.settings.id, error = %with_causes(&e), "heartbeat failed");
                }
            }
        }
    }

    /// Wakes the slots for every message on the shard topic. A wake is a
    /// hint: a missed one costs an idle slot's poll interval, never work.
    async fn hear_wakes(
        self: Arc<Self>,
        mut wakes: Box<dyn dts_bus::Subscription>,
        shutdown: CancellationToken,
    ) {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = wakes.next() => next,
            };
            match next {
                Ok(delivery) => {
                    match stop_hint(&delivery.payload) {
                        Some(task) => self.heard_stop(&task).await,
                        None => self.wake_slots(),
                    }
                    if let Err(e) = delivery.ack().await {
                        debug!(error = %with_causes(&e), "cannot acknowledge a wake");
                    }
                }
                Err(BusError::Closed) => break,
                Err(e) => {
                    dts_metrics::metrics().bus_error("listen", true);
                    debug!(error = %with_causes(&e), "cannot hear wakes; slots poll meanwhile");
                    if !crate::sleep_unless_cancelled(self.settings.retry_delay, &shutdown).await {
                        break;
                    }
                }
            }
        }
    }

    /// A cancel's stop hint for `task`: if its items run here and the store
    /// confirms the task ended, stops them now rather than at the next
    /// status poll (the cancel's answer waits for this worker's leases on
    /// the task to be given back).
    async fn heard_stop(&self, task: &str) {
        let here = {
            let stops = self.task_stops.lock().unwrap_or_else(|p| p.into_inner());
            stops.contains_key(task)
        };
        if !here {
            return;
        }
        // The hint may be older than a retry of the task: the store decides.
        match self.store.task_status(task).await {
            Ok(Some(status)) if !status.is_terminal() => {}
            Ok(status) => self.task_ended(task, status),
            Err(e) => {
                dts_metrics::metrics().store_error("task_status", false);
                debug!(task = %task, error = %with_causes(&e), "cannot check the task's status; the status poll will")
            }
        }
    }

    /// Every `status_poll`, stops the items of tasks running here that have
    /// ended (a cancel, a deadline, another shard's failure), so a long item
    /// learns of a cancel while it runs.
    async fn watch_tasks(self: Arc<Self>, shutdown: CancellationToken) {
        // ends: at shutdown; running items are stopped by their own tokens.
        while crate::sleep_unless_cancelled(self.settings.status_poll, &shutdown).await {
            let running: Vec<String> = {
                let stops = self.task_stops.lock().unwrap_or_else(|p| p.into_inner());
                stops.keys().cloned().collect()
            };
            for id in running {
                match self.store.task_status(&id).await {
                    Ok(Some(status)) if !status.is_terminal() => {}
                    Ok(status) => self.task_ended(&id, status),
                    Err(e) => {
                        dts_metrics::metrics().store_error("task_status", false);
                        debug!(task = %id, error = %with_causes(&e), "cannot check the task's status")
                    }
                }
            }
        }
    }

    /// Runs one slot loop per core until `shutdown`, then drains.
    async fn run_slots(self: Arc<Self>, shutdown: CancellationToken) {
        // Killing running items is the last phase of shutdown, separate from
        // `shutdown` (which only stops intake).
        let kill = self.kill.clone();
        let shards = TaskTracker::new();
        for _ in 0..self.settings.cores {
            let inner = self.clone();
            let stop_intake = shutdown.clone();
            let kill = kill.clone();
            shards.spawn(async move { inner.slot_loop(stop_intake, kill).await });
        }
        shutdown.cancelled().await;

        shards.close();
        // No slot claims or starts anything from here on; say what is left,
        // so whoever stopped the worker knows what it waits for.
        let running = self.running.load(Ordering::Relaxed);
        if running > 0 {
            let items = if running == 1 { "item" } else { "items" };
            info!(
                worker = %self.settings.id,
                "stopping: {running} {items} still running; they may finish for up to {}",
                seconds(self.settings.drain_grace)
            );
        }
        {
            if tokio::time::timeout(self.settings.drain_grace, shards.wait())
                .await
                .is_err()
            {
                warn!(worker = %self.settings.id, "drain grace over; killing running items");
                kill.cancel();
                shards.wait().await;
            }
        }
        dts_metrics::metrics().forget_worker(&self.settings.id);
        if let Err(e) = self.store.remove_worker(&self.settings.id).await {
            debug!(error = %with_causes(&e), "could not remove the worker's heartbeat");
        }
        info!(worker = %self.settings.id, "worker stopped");
    }
}

/// The task a message on the shard topic asks to stop (`{"stop": id}`,
/// published by a cancel); `None` for a wake.
fn stop_hint(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Hint {
        stop: String,
    }
    serde_json::from_slice::<Hint>(payload).ok().map(|h| h.stop)
}

/// Sleeps until `next`, or until shutdown begins; once it has, wakes every
/// 50 ms so a loop that outlives shutdown (while shards drain) sees the
/// last lease go.
async fn wait_for_tick(next: tokio::time::Instant, shutdown: &CancellationToken) {
    let stopping = shutdown.is_cancelled();
    tokio::select! {
        _ = tokio::time::sleep_until(next) => {}
        _ = shutdown.cancelled(), if !stopping => {}
        _ = tokio::time::sleep(Duration::from_millis(50)), if stopping => {}
    }
}

/// How often leases are renewed: every heartbeat, and at least three times
/// per lease, so two renewals in a row may fail or be late before the lease
/// lapses.
fn renewal_interval(settings: &WorkerSettings) -> Duration {
    settings
        .heartbeat_interval
        .min(settings.heartbeat_ttl / 3)
        .max(Duration::from_millis(10))
}

/// `10 s`, or `2.5 s` for a grace that is not whole seconds.
fn seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}
