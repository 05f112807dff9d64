//! The embedded engine: scheduler consumers, a local worker and the sweeper
//! over the in-process bus and a SQLite store. `dts up` serves it over HTTP;
//! `dts run` drives it directly for one task.

use crate::worker_thread::WorkerThread;
use crate::{node, wiring};
use anyhow::Result;
use dts_bus::{DynBus, EmbeddedBus};
use dts_config::Settings;
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
    pub store: DynStore,
    pub submitter: Submitter,
    /// Cancelled to stop every part.
    pub shutdown: CancellationToken,
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
        items_open_files: Option<u64>,
    ) -> Result<EmbeddedNode> {
        let embedded = EmbeddedBus::new(settings.pubsub.max_message_bytes);
        let bus: DynBus = Arc::new(embedded.clone());
        let topics = wiring::topics(settings);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();

        // The worker first, so its heartbeat is in the store before anything is planned.
        let items = match role {
            Role::Up => wiring::Items::Service,
            Role::Run => wiring::Items::Caller,
        };
        let worker = node::start_worker(
            settings,
            store.clone(),
            bus.clone(),
            shutdown.clone(),
            items,
            items_open_files,
        )
        .await?;
        Scheduler::new(
            store.clone(),
            bus.clone(),
            wiring::scheduler_settings(settings),
        )
        .start(&tracker, shutdown.clone())
        .await?;
        if role == Role::Up {
            events::log_completions(&bus, &topics, "dts-up-log", &tracker, shutdown.clone())
                .await?;
        }
        let submitter = node::start_submitting(settings, &store, bus, &tracker, shutdown.clone());
        recovery::republish_unfinished(&store, &submitter).await?;
        Ok(EmbeddedNode {
            store,
            submitter,
            shutdown,
            tracker,
            worker,
            bus: embedded,
        })
    }

    /// The id of this node's worker.
    pub fn worker_id(&self) -> &str {
        &self.worker.id
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
