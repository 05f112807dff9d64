//! The embedded engine: scheduler consumers, a local worker and the sweeper
//! over the in-process bus and a SQLite store. `dts up` serves it over HTTP;
//! `dts run` drives it directly for one task.

use crate::NodeError;
use crate::node;
use crate::wiring::{self, Inherited, Items};
use crate::worker_thread::WorkerThread;
use dts_bus::{DynBus, EmbeddedBus};
use dts_config::Settings;
use dts_engine::live::LiveRegistry;
use dts_engine::scheduler::Scheduler;
use dts_engine::submit::Submitter;
use dts_engine::{events, recovery};
use dts_store::DynStore;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Which command runs the embedded engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `dts up`: a service; its items are isolated, task ends are logged.
    Up,
    /// `dts run`: the caller's one-shot run; items run as the caller.
    Run,
}

/// A running embedded engine.
pub struct EmbeddedNode {
    /// The store every part shares.
    pub store: DynStore,
    /// Stores and publishes new tasks.
    pub submitter: Submitter,
    /// Cancelled to stop every part.
    pub shutdown: CancellationToken,
    /// The worker's live logs, which the API reads (off for `dts run`).
    pub live_logs: LiveRegistry,
    tracker: TaskTracker,
    worker: WorkerThread,
    bus: EmbeddedBus,
}

impl EmbeddedNode {
    /// Starts every part on `store`, then republishes what it left unfinished.
    /// `role` decides how items are isolated, and whether each task's end
    /// is logged (dts up's log).
    pub async fn start(
        settings: &Settings,
        store: DynStore,
        role: Role,
        inherited: Inherited,
    ) -> Result<EmbeddedNode, NodeError> {
        let embedded = EmbeddedBus::new(settings.pubsub.max_message_bytes);
        let bus: DynBus = Arc::new(embedded.clone());
        let topics = wiring::topics(settings);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();

        // The worker first, so its heartbeat is in the store before anything is planned.
        let items = match role {
            Role::Up => Items::Service,
            Role::Run => Items::Caller,
        };
        let executor = node::executor(settings, items, inherited)?;
        // `dts run` prints each item's output when it ends; only `dts up`
        // has an API to show live logs through.
        let live_logs = match role {
            Role::Up => LiveRegistry::new(settings.executor.live_log_bytes),
            Role::Run => LiveRegistry::default(),
        };
        let worker = node::start_worker(
            settings,
            store.clone(),
            bus.clone(),
            executor,
            live_logs.clone(),
            shutdown.clone(),
        )
        .await?;
        let start = |part| move |source| NodeError::Start { part, source };
        let planning = async {
            Scheduler::new(
                store.clone(),
                bus.clone(),
                wiring::scheduler_settings(settings),
            )
            .start(&tracker, shutdown.clone())
            .await
            .map_err(start("scheduler"))?;
            if role == Role::Up {
                events::log_completions(&bus, &topics, "dts-up-log", &tracker, shutdown.clone())
                    .await
                    .map_err(start("completion log"))?;
            }
            Ok(())
        };
        if let Err(e) = planning.await {
            stop(shutdown, tracker, worker, embedded).await;
            return Err(e);
        }
        let submitter = node::start_submitting(settings, &store, bus, &tracker, shutdown.clone());
        let node = EmbeddedNode {
            store,
            submitter,
            live_logs,
            shutdown,
            tracker,
            worker,
            bus: embedded,
        };
        if let Err(source) = recovery::republish_unfinished(&node.store, &node.submitter).await {
            node.stop().await;
            return Err(start("recovery of unfinished tasks")(source));
        }
        Ok(node)
    }

    /// The id of this node's worker.
    pub fn worker_id(&self) -> &str {
        &self.worker.id
    }

    /// What `dts run` needs of this node's worker while the task runs: how
    /// many items run, and killing them when it is interrupted.
    pub fn items(&self) -> RunningItems {
        RunningItems {
            worker: self.worker.worker.clone(),
        }
    }

    /// Stops every part: running items may finish within the drain grace.
    pub async fn stop(self) {
        stop(self.shutdown, self.tracker, self.worker, self.bus).await;
    }
}

/// The items this node's worker runs, as `dts run` controls them; usable
/// while [`EmbeddedNode::stop`] runs (which takes the node).
#[derive(Clone)]
pub struct RunningItems {
    worker: dts_engine::worker::Worker,
}

impl RunningItems {
    /// Items running now.
    pub fn running(&self) -> u32 {
        self.worker.running_items()
    }

    /// Kills every running item now (see
    /// [`dts_engine::worker::Worker::kill_items`]); no new item starts.
    pub fn kill(&self) {
        self.worker.kill_items();
    }
}

/// Stops the parts started so far: the engine's tasks, the worker, then
/// the bus.
async fn stop(
    shutdown: CancellationToken,
    tracker: TaskTracker,
    worker: WorkerThread,
    bus: EmbeddedBus,
) {
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    worker.wait().await;
    bus.close();
}
