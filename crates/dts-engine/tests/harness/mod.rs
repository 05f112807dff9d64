//! The in-process engine harness: the embedded bus, an in-memory SQLite
//! store, the submitter, the scheduler, the sweeper and any number of
//! workers, all in one test on tokio's paused clock.
//!
//! Items run on a [`fake::FakeRunner`]: each is a stretch of simulated time
//! whose input says how long it takes and how it ends, and every start is
//! logged. A task's reduce runs there too, its script read as an input.
//! Components read "now" from a [`TokioClock`], so heartbeats, leases,
//! deadlines and sweeps all happen in simulated seconds: a test that waits
//! out a ten-second lease takes milliseconds.
//!
//! Workers and the server are simulated processes ([`life::Life`]): a worker
//! can be killed (it freezes without releasing anything, its bus messages go
//! to the others) or restarted, and the whole node can be restarted as
//! `dts up` is, keeping only the store.
//!
//! ```ignore
//! let mut h = Harness::new().workers(&[1, 4]).start().await;
//! let task = h.submit(task(&["2s", "1s exit=3"])).await;
//! let ended = h.wait_until_ended(&task.id).await;
//! ```

#![allow(dead_code)] // each test file uses a part of it

pub mod fake;
pub mod life;

use dts_bus::{Bus, BusError, BusResult, DynBus, EmbeddedBus, Subscription};
use dts_engine::clock::TokioClock;
use dts_engine::scheduler::{Scheduler, SchedulerSettings};
use dts_engine::submit::{SubmitSettings, Submitter};
use dts_engine::sweeper::{self, SweeperSettings};
use dts_engine::worker::{Worker, WorkerSettings};
use dts_engine::{Topics, recovery};
use dts_model::{
    Bytes, Clock, CompletionEvent, DynClock, ItemResult, NewTask, ShardRange, Task, TaskStatus,
    Variables, WorkerInfo, new_task_id,
};
use dts_store::{DynStore, PlanOutcome, ResultFilter, SqliteStore, Store};
use fake::{FakeRunner, Start, StartLog};
use life::Life;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long [`Harness::run_until`] waits, in simulated time, by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(600);
/// How often [`Harness::run_until`] looks, in simulated time.
const POLL: Duration = Duration::from_millis(100);

/// A task whose items are `inputs` (see [`fake`] for what they mean), with
/// a 60 s item timeout, no retries and no deadline.
pub fn task(inputs: &[&str]) -> NewTask {
    NewTask {
        id: new_task_id(),
        name: None,
        template_function: "run \"$1\"".into(),
        variables: Variables::default(),
        interpreter: "bash".into(),
        timeout_secs: 60,
        retries: 0,
        deadline_secs: None,
        inputs: inputs.iter().map(|i| Bytes::from(*i)).collect(),
        memory_mb: None,
        milli_cpus: None,
        scheduling: Default::default(),
        halt: None,
        after: None,
        reduce: None,
    }
}

/// `task` run only after the tasks `ids` end as `status` asks.
pub fn after(mut task: NewTask, ids: &[&str], status: dts_model::AfterStatus) -> NewTask {
    task.after = Some(dts_model::After {
        tasks: ids.iter().map(|id| id.to_string()).collect(),
        status,
    });
    task
}

/// `task` with a reduce whose script is `script` (words the fake runner
/// reads as it reads an item's input, e.g. `20s exit=3`), run `when`, with
/// a 600 s timeout.
pub fn with_reduce(mut task: NewTask, script: &str, when: dts_model::ReduceWhen) -> NewTask {
    task.reduce = Some(dts_model::Reduce {
        template_function: script.into(),
        interpreter: "bash".into(),
        timeout_secs: 600,
        when,
    });
    task
}

/// `n` items named `item-<i>`, each doing `what`.
pub fn items(n: usize, what: &str) -> Vec<String> {
    (0..n).map(|i| format!("item-{i} {what}")).collect()
}

/// A task of `n` items, each doing `what`.
pub fn task_of(n: usize, what: &str) -> NewTask {
    NewTask {
        inputs: items(n, what).into_iter().map(Bytes::from).collect(),
        ..task(&[])
    }
}

/// How the harness is set up; [`Setup::start`] starts it.
#[derive(Debug, Clone)]
pub struct Setup {
    cores: Vec<u32>,
    heartbeat_interval: Duration,
    heartbeat_ttl: Duration,
    shard_attempts: u32,
    oversplit: u32,
    min_planned_slots: u32,
    sweep_interval: Duration,
    drain_grace: Duration,
}

impl Setup {
    /// One worker per entry, with that many cores.
    pub fn workers(mut self, cores: &[u32]) -> Self {
        self.cores = cores.to_vec();
        self
    }

    /// Heartbeat interval and TTL (the TTL is also the shard lease).
    pub fn heartbeat(mut self, interval: Duration, ttl: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.heartbeat_ttl = ttl;
        self
    }

    /// `worker.shard-attempts`.
    pub fn shard_attempts(mut self, attempts: u32) -> Self {
        self.shard_attempts = attempts;
        self
    }

    /// Plans are made for at least this many slots (production: 8); 1
    /// plans for exactly the live cores, for tests about a plan's shape.
    pub fn min_planned_slots(mut self, slots: u32) -> Self {
        self.min_planned_slots = slots;
        self
    }

    /// Shards per live core.
    pub fn oversplit(mut self, oversplit: u32) -> Self {
        self.oversplit = oversplit;
        self
    }

    /// How often the sweeper looks.
    pub fn sweep_every(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// Starts the workers, the scheduler and the sweeper. Call on a runtime
    /// with paused time (`#[tokio::test(start_paused = true)]`).
    pub async fn start(self) -> Harness {
        let clock = TokioClock::starting_now();
        let epoch_ms = clock.now_millis();
        let clock: DynClock = Arc::new(clock);
        let store = match SqliteStore::in_memory() {
            Ok(store) => store.with_clock(clock.clone()),
            Err(e) => panic!("cannot open an in-memory SQLite store: {e}"),
        };
        let mut harness = Harness {
            setup: self,
            clock,
            epoch_ms,
            store,
            bus: EmbeddedBus::default(),
            server: None,
            workers: Vec::new(),
            log: StartLog::default(),
            events: Arc::new(Mutex::new(Vec::new())),
            generation: 0,
            refuse_results: Arc::new(AtomicBool::new(false)),
        };
        harness.boot().await;
        harness
    }
}

/// The server part of a node: submitter, scheduler and sweeper.
struct Server {
    life: Life,
    submitter: Submitter,
}

/// One worker process.
struct WorkerProcess {
    id: String,
    cores: u32,
    labels: BTreeMap<String, String>,
    slowdown: u32,
    life: Life,
}

/// A running engine; see the module docs.
pub struct Harness {
    setup: Setup,
    clock: DynClock,
    /// The clock's reading at start.
    epoch_ms: u64,
    store: SqliteStore,
    bus: EmbeddedBus,
    server: Option<Server>,
    workers: Vec<WorkerProcess>,
    log: StartLog,
    events: Arc<Mutex<Vec<CompletionEvent>>>,
    /// How many times the whole node was (re)started.
    generation: u32,
    /// While set, every publish to the result topic is refused, as by a
    /// broker that is down ([`Harness::refuse_completion_events`]).
    refuse_results: Arc<AtomicBool>,
}

/// The bus, but refusing publishes to the result topic while `refuse` is set.
struct RefusingBus {
    inner: DynBus,
    refuse: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Bus for RefusingBus {
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> BusResult<()> {
        if topic == Harness::topics().results && self.refuse.load(Ordering::SeqCst) {
            return Err(BusError::Unavailable {
                op: format!("publish to {topic}"),
                source: "the harness refuses completion events".into(),
            });
        }
        self.inner.publish(topic, key, payload).await
    }

    async fn subscribe(&self, topic: &str, group: &str) -> BusResult<Box<dyn Subscription>> {
        self.inner.subscribe(topic, group).await
    }

    async fn listen(&self, topic: &str) -> BusResult<Box<dyn Subscription>> {
        self.inner.listen(topic).await
    }

    fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes()
    }
}

/// What the engine looks like at one moment, for [`Harness::run_until`].
#[derive(Debug, Clone)]
pub struct State {
    pub tasks: Vec<Task>,
    pub starts: Vec<Start>,
    pub events: Vec<CompletionEvent>,
    pub live_workers: Vec<WorkerInfo>,
}

impl State {
    /// The task `id`; panics if the store does not have it.
    pub fn task(&self, id: &str) -> &Task {
        match self.tasks.iter().find(|t| t.id == id) {
            Some(task) => task,
            None => panic!("the store has no task {id}"),
        }
    }

    /// Whether task `id` has ended.
    pub fn ended(&self, id: &str) -> bool {
        self.task(id).status.is_terminal()
    }

    /// The item starts of task `id`.
    pub fn starts_of(&self, id: &str) -> Vec<&Start> {
        self.starts
            .iter()
            .filter(|s| s.task == id && !s.reduce)
            .collect()
    }

    /// The starts of task `id`'s reduce.
    pub fn reduce_starts(&self, id: &str) -> Vec<&Start> {
        self.starts
            .iter()
            .filter(|s| s.task == id && s.reduce)
            .collect()
    }
}

impl Harness {
    /// A harness with one single-core worker, a 2 s heartbeat and 10 s lease,
    /// 3 shard attempts, 2 shards per core and a sweep every 30 s (the
    /// engine's defaults); change them on the [`Setup`].
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Setup {
        Setup {
            cores: vec![1],
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_ttl: Duration::from_secs(10),
            shard_attempts: 3,
            oversplit: 2,
            min_planned_slots: SchedulerSettings::default().min_planned_slots,
            sweep_interval: Duration::from_secs(30),
            drain_grace: Duration::from_secs(10),
        }
    }

    fn topics() -> Topics {
        Topics::default()
    }

    /// Starts every part on a fresh bus, as a node starting up does: the
    /// workers first (their heartbeats count in planning), the scheduler,
    /// the completion-event listener, the submitter and sweeper, then
    /// republishes what the store says is unfinished.
    async fn boot(&mut self) {
        self.generation += 1;
        let cores = self.setup.cores.clone();
        self.workers.clear();
        for cores in cores {
            self.add_worker(cores).await;
        }
        let life = Life::default();
        let store = life.store(self.dyn_store());
        let bus = life.bus(self.dyn_bus());
        let scheduler = Scheduler::new(
            store.clone(),
            bus.clone(),
            SchedulerSettings {
                oversplit: self.setup.oversplit,
                min_planned_slots: self.setup.min_planned_slots,
                ..SchedulerSettings::default()
            },
        );
        if let Err(e) = scheduler.start(life.tracker(), life.shutdown()).await {
            panic!("cannot start the scheduler: {e}");
        }
        self.listen_for_events().await;
        let submitter = Submitter::new(
            store.clone(),
            bus,
            Self::topics(),
            SubmitSettings {
                clock: self.clock.clone(),
                ..SubmitSettings::default()
            },
        );
        sweeper::start(
            store.clone(),
            submitter.clone(),
            SweeperSettings {
                interval: self.setup.sweep_interval,
                ..SweeperSettings::default()
            },
            life.tracker(),
            life.shutdown(),
        );
        if let Err(e) = recovery::republish_unfinished(&store, &submitter).await {
            panic!("cannot republish unfinished tasks: {e}");
        }
        self.server = Some(Server { life, submitter });
    }

    /// Collects every completion event of this bus generation.
    async fn listen_for_events(&self) {
        let mut subscription = match self
            .bus
            .subscribe(&Self::topics().results, "harness-events")
            .await
        {
            Ok(subscription) => subscription,
            Err(e) => panic!("cannot subscribe to completion events: {e}"),
        };
        let events = self.events.clone();
        tokio::spawn(async move {
            // ends: a background listener, gone with the bus or the test's
            // runtime; no test waits on it (run_until has the deadline).
            while let Ok(delivery) = subscription.next().await {
                match serde_json::from_slice::<CompletionEvent>(&delivery.payload) {
                    Ok(event) => events.lock().unwrap_or_else(|p| p.into_inner()).push(event),
                    Err(e) => panic!("unreadable completion event: {e}"),
                }
                let _ = delivery.ack().await;
            }
        });
    }

    fn dyn_store(&self) -> DynStore {
        Arc::new(self.store.clone())
    }

    fn dyn_bus(&self) -> DynBus {
        Arc::new(RefusingBus {
            inner: Arc::new(self.bus.clone()),
            refuse: self.refuse_results.clone(),
        })
    }

    /// From now on, every publish of a completion event fails (`true`) as
    /// if the broker were down, or goes through again (`false`).
    pub fn refuse_completion_events(&self, refuse: bool) {
        self.refuse_results.store(refuse, Ordering::SeqCst);
    }

    /// Starts one more worker with `cores` cores; returns its number.
    pub async fn add_worker(&mut self, cores: u32) -> usize {
        let number = self.workers.len();
        let id = self.fresh_worker_id(number);
        self.workers
            .push(self.start_worker(id, cores, BTreeMap::new(), 1).await);
        number
    }

    /// Starts one more worker with `cores` cores on which every item runs
    /// `slowdown` times its run time; returns its number.
    pub async fn add_slow_worker(&mut self, cores: u32, slowdown: u32) -> usize {
        let number = self.workers.len();
        let id = self.fresh_worker_id(number);
        self.workers.push(
            self.start_worker(id, cores, BTreeMap::new(), slowdown)
                .await,
        );
        number
    }

    fn fresh_worker_id(&self, number: usize) -> String {
        format!("w{number}.{}", self.generation)
    }

    /// Starts one more worker with `cores` cores and `labels`; returns its
    /// number.
    pub async fn add_labelled_worker(&mut self, cores: u32, labels: &[(&str, &str)]) -> usize {
        let number = self.workers.len();
        let id = self.fresh_worker_id(number);
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.workers
            .push(self.start_worker(id, cores, labels, 1).await);
        number
    }

    async fn start_worker(
        &self,
        id: String,
        cores: u32,
        labels: BTreeMap<String, String>,
        slowdown: u32,
    ) -> WorkerProcess {
        let life = Life::default();
        let runner = FakeRunner {
            worker: id.clone(),
            life: life.clone(),
            log: self.log.clone(),
            clock: self.clock.clone(),
            epoch_ms: self.epoch_ms,
            slowdown,
        };
        let settings = WorkerSettings {
            hostname: "harness".into(),
            heartbeat_interval: self.setup.heartbeat_interval,
            heartbeat_ttl: self.setup.heartbeat_ttl,
            shard_attempts: self.setup.shard_attempts,
            drain_grace: self.setup.drain_grace,
            clock: self.clock.clone(),
            labels: labels.clone(),
            ..WorkerSettings::new(id.clone(), cores)
        };
        let worker = Worker::new(
            life.store(self.dyn_store()),
            life.bus(self.dyn_bus()),
            runner,
            settings,
        );
        if let Err(e) = worker.start(life.tracker(), life.shutdown()).await {
            panic!("cannot start worker {id}: {e}");
        }
        WorkerProcess {
            id,
            cores,
            labels,
            slowdown,
            life,
        }
    }

    /// Kills worker `number` as SIGKILL would: it stops where it is,
    /// releases nothing, and its unacknowledged shards go to the others.
    pub fn kill_worker(&mut self, number: usize) {
        self.worker(number).life.kill();
    }

    /// Starts worker `number` again as a new process (with a new id) and
    /// the same cores, killing it first if it still runs.
    pub async fn restart_worker(&mut self, number: usize) {
        self.worker(number).life.kill();
        let (cores, labels, slowdown) = (
            self.worker(number).cores,
            self.worker(number).labels.clone(),
            self.worker(number).slowdown,
        );
        let id = format!("{}-again", self.worker(number).id);
        self.workers[number] = self.start_worker(id, cores, labels, slowdown).await;
    }

    /// Stops worker `number` gracefully and waits until it has stopped.
    pub async fn stop_worker(&mut self, number: usize) {
        let life = self.worker(number).life.clone();
        life.shutdown().cancel();
        life.tracker().close();
        life.tracker().wait().await;
    }

    /// Each heartbeat of worker `number` from now on waits `delay` before
    /// it reaches the store.
    pub fn delay_heartbeats(&self, number: usize, delay: Duration) {
        self.worker(number).life.delay_heartbeats(delay);
    }

    /// Each status check of worker `number` (`task_status`, and its
    /// speculative copies' `copy_state`) from now on waits `delay` before
    /// it reaches the store.
    pub fn delay_status_checks(&self, number: usize, delay: Duration) {
        self.worker(number).life.delay_status_checks(delay);
    }

    /// Each publish of worker `number` (a task's completion event) from
    /// now on waits `delay` before it reaches the bus.
    pub fn delay_publishes(&self, number: usize, delay: Duration) {
        self.worker(number).life.delay_publishes(delay);
    }

    /// Whether worker `number` was killed (by the test or by an item).
    pub fn worker_is_dead(&self, number: usize) -> bool {
        self.worker(number).life.is_dead()
    }

    /// The id of worker `number`.
    pub fn worker_id(&self, number: usize) -> String {
        self.worker(number).id.clone()
    }

    fn worker(&self, number: usize) -> &WorkerProcess {
        match self.workers.get(number) {
            Some(worker) => worker,
            None => panic!("there is no worker {number}"),
        }
    }

    /// Kills every process of the node and starts it again on a new bus,
    /// keeping only the store, as a `dts up` killed and started again does
    /// (which also lets every lease lapse at start-up).
    pub async fn restart(&mut self) {
        for worker in &self.workers {
            worker.life.kill();
        }
        if let Some(server) = self.server.take() {
            server.life.kill();
        }
        self.bus = EmbeddedBus::default();
        if let Err(e) = self.store.expire_all_leases().await {
            panic!("cannot expire the leases: {e}");
        }
        self.boot().await;
    }

    fn server(&self) -> &Server {
        match &self.server {
            Some(server) => server,
            None => panic!("the node is not running"),
        }
    }

    /// Submits `task` as the API would; returns it as submitting left it.
    pub async fn submit(&self, task: NewTask) -> Task {
        match self.server().submitter.submit(task).await {
            Ok(task) => task,
            Err(e) => panic!("submitting failed: {e}"),
        }
    }

    /// Submits `task` as the API would, giving back the engine's refusal.
    pub async fn try_submit(&self, task: NewTask) -> Result<Task, dts_engine::EngineError> {
        self.server().submitter.submit(task).await
    }

    /// Publishes task `id` to the task topic again, as a redelivery or the
    /// sweeper would.
    pub async fn republish(&self, id: &str) {
        self.server().submitter.publish_with_retries(id).await;
    }

    /// Stores `task` without publishing it, as a server that died right
    /// after storing a submission leaves it (`QUEUED`).
    pub async fn store_unpublished(&self, task: NewTask) -> Task {
        let stored = task.to_task(self.clock.now_millis());
        if let Err(e) = self.store.insert_task(&stored, &task.inputs).await {
            panic!("cannot store task {}: {e}", stored.id);
        }
        stored
    }

    /// Cancels task `id` as the API does.
    pub async fn cancel(&self, id: &str) -> Task {
        match self.store.transition(id, TaskStatus::Cancelled, None).await {
            Ok(task) => task,
            Err(e) => panic!("cannot cancel task {id}: {e}"),
        }
    }

    /// Retries ended task `id` as the API does.
    pub async fn retry(&self, id: &str) {
        if let Err(e) = self.server().submitter.retry(id).await {
            panic!("cannot retry task {id}: {e}");
        }
    }

    /// The store, to look at or change directly.
    pub fn store(&self) -> &SqliteStore {
        &self.store
    }

    /// The bus of the running node.
    pub fn bus(&self) -> &EmbeddedBus {
        &self.bus
    }

    /// The task `id` as stored now.
    pub async fn task(&self, id: &str) -> Task {
        match self.store.task(id).await {
            Ok(Some(task)) => task,
            Ok(None) => panic!("the store has no task {id}"),
            Err(e) => panic!("cannot read task {id}: {e}"),
        }
    }

    /// The stored plan of task `id`, which must have been planned.
    pub async fn plan(&self, id: &str) -> Vec<ShardRange> {
        let task = self.task(id).await;
        assert!(
            task.started_at.is_some(),
            "task {id} was not planned: {task:?}"
        );
        // Saving a plan for a task that has one stores nothing and returns it.
        match self.store.save_plan(id, &[]).await {
            Ok(PlanOutcome::Existing { shards, .. }) => shards,
            Ok(other) => panic!("task {id} had no stored plan: {other:?}"),
            Err(e) => panic!("cannot read the plan of task {id}: {e}"),
        }
    }

    /// Every recorded result of task `id`, by index.
    pub async fn results(&self, id: &str) -> Vec<ItemResult> {
        match self.store.results(id, ResultFilter::All, 0, u64::MAX).await {
            Ok((_, results)) => results,
            Err(e) => panic!("cannot read the results of task {id}: {e}"),
        }
    }

    /// Every start so far, of items and of reduces.
    pub fn starts(&self) -> Vec<Start> {
        self.log.all()
    }

    /// The item starts of task `id` so far.
    pub fn starts_of(&self, id: &str) -> Vec<Start> {
        self.log
            .all()
            .into_iter()
            .filter(|s| s.task == id && !s.reduce)
            .collect()
    }

    /// The starts of task `id`'s reduce so far.
    pub fn reduce_starts(&self, id: &str) -> Vec<Start> {
        self.log
            .all()
            .into_iter()
            .filter(|s| s.task == id && s.reduce)
            .collect()
    }

    /// Completion events received so far.
    pub fn events(&self) -> Vec<CompletionEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The clock's reading (ms since the epoch) when the harness started:
    /// subtract it from a stored time to compare with [`Start::at_ms`].
    pub fn now_ms_epoch(&self) -> u64 {
        self.epoch_ms
    }

    /// Simulated milliseconds since the harness started.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_millis().saturating_sub(self.epoch_ms)
    }

    /// Lets `time` pass (in simulated time) with everything running.
    pub async fn idle(&self, time: Duration) {
        tokio::time::sleep(time).await;
    }

    /// The engine as it is now.
    pub async fn state(&self) -> State {
        let tasks = match self.store.list_tasks(None, usize::MAX >> 1).await {
            Ok(tasks) => tasks,
            Err(e) => panic!("cannot list tasks: {e}"),
        };
        let live_workers = match self.store.live_workers().await {
            Ok(workers) => workers,
            Err(e) => panic!("cannot list live workers: {e}"),
        };
        State {
            tasks,
            starts: self.starts(),
            events: self.events(),
            live_workers,
        }
    }

    /// Runs until `done` holds, at most [`DEFAULT_WAIT`] of simulated time;
    /// then panics saying what was awaited (`what`).
    pub async fn run_until(&self, done: impl Fn(&State) -> bool, what: &str) -> State {
        self.run_until_within(DEFAULT_WAIT, done, what).await
    }

    /// [`Harness::run_until`] with a simulated-time limit of `limit`.
    pub async fn run_until_within(
        &self,
        limit: Duration,
        done: impl Fn(&State) -> bool,
        what: &str,
    ) -> State {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let state = self.state().await;
            if done(&state) {
                return state;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "waited {limit:?} of simulated time for {what}; tasks now: {:#?}",
                    state.tasks
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs until task `id` has ended; returns it.
    pub async fn wait_until_ended(&self, id: &str) -> Task {
        let state = self
            .run_until(|s| s.ended(id), &format!("task {id} to end"))
            .await;
        state.task(id).clone()
    }
}

/// The warnings the engine logged on this thread since [`Warnings::capture`]
/// (a paused-clock test runs every component on its own thread).
#[derive(Clone, Default)]
pub struct Warnings {
    text: Arc<Mutex<Vec<u8>>>,
}

impl Warnings {
    /// Starts capturing; capture ends when the guard is dropped.
    pub fn capture() -> (Warnings, tracing::subscriber::DefaultGuard) {
        let warnings = Warnings::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(warnings.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (warnings, guard)
    }

    /// The lines logged so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = self.text.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&text)
            .lines()
            .filter(|line| line.contains(needle))
            .map(String::from)
            .collect()
    }
}

impl std::io::Write for Warnings {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut text = self.text.lock().unwrap_or_else(|p| p.into_inner());
        text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Warnings {
    type Writer = Warnings;

    fn make_writer(&'a self) -> Warnings {
        self.clone()
    }
}
