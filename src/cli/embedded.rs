//! The embedded engine: scheduler consumers, a local worker and the sweeper
//! over the in-process bus and a SQLite store. `dts up` serves it over HTTP;
//! `dts run` drives it directly for one task.

use super::wiring;
use super::worker_thread::WorkerThread;
use anyhow::Result;
use dts_bus::{DynBus, EmbeddedBus};
use dts_config::Settings;
use dts_engine::scheduler::Scheduler;
use dts_engine::submit::Submitter;
use dts_engine::worker::Worker;
use dts_engine::{events, recovery, sweeper};
use dts_executor::Executor;
use dts_store::DynStore;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A running embedded engine.
pub struct EmbeddedNode {
    pub store: DynStore,
    pub submitter: Submitter,
    pub worker_id: String,
    /// Cancelled to stop every part.
    pub shutdown: CancellationToken,
    tracker: TaskTracker,
    worker: WorkerThread,
    bus: EmbeddedBus,
}

impl EmbeddedNode {
    /// Starts every part on `store`, then republishes what it left unfinished.
    /// `log_completions` logs each task's end (dts up's log).
    pub async fn start(
        settings: &Settings,
        store: DynStore,
        log_completions: bool,
    ) -> Result<EmbeddedNode> {
        let embedded = EmbeddedBus::new(settings.pubsub.max_message_bytes);
        let bus: DynBus = Arc::new(embedded.clone());
        let topics = wiring::topics(settings);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();

        // The worker first, so its heartbeat is in the store before anything is planned.
        let executor = Executor::new(wiring::exec_settings(settings));
        let worker = Worker::new(
            store.clone(),
            bus.clone(),
            executor,
            wiring::worker_settings(settings),
        );
        let worker = WorkerThread::start(worker, shutdown.clone()).await?;
        Scheduler::new(
            store.clone(),
            bus.clone(),
            wiring::scheduler_settings(settings),
        )
        .start(&tracker, shutdown.clone())
        .await?;
        if log_completions {
            events::log_completions(&bus, &topics, "dts-up-log", &tracker, shutdown.clone())
                .await?;
        }
        let submitter = Submitter::new(
            store.clone(),
            bus.clone(),
            topics,
            wiring::submit_settings(settings),
        );
        recovery::republish_unfinished(&store, &submitter).await?;
        sweeper::start(
            store.clone(),
            submitter.clone(),
            wiring::sweeper_settings(settings),
            &tracker,
            shutdown.clone(),
        );
        Ok(EmbeddedNode {
            store,
            submitter,
            worker_id: worker.id.clone(),
            shutdown,
            tracker,
            worker,
            bus: embedded,
        })
    }

    /// Stops every part: running items may finish within the drain grace.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.worker.wait().await;
        self.bus.close();
    }
}
