//! `dts worker`: consumes shards from Kafka, runs their items on every core,
//! records results in Redis, and heartbeats so schedulers count its cores.

use crate::NodeError;
use crate::node::{self, LEAVE_GROUP_GRACE};
use crate::wiring::{Inherited, Items};
use crate::worker_thread::WorkerThread;
use dts_bus::kafka::KafkaBus;
use dts_config::Settings;
use dts_engine::live::LiveRegistry;
use dts_engine::live::redis::RedisRelay;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// A started `dts worker`: subscribed and heartbeating; [`WorkerNode::run`]
/// returns once [`WorkerNode::shutdown_token`] is cancelled and the worker
/// has stopped.
pub struct WorkerNode {
    worker: WorkerThread,
    kafka: KafkaBus,
    shutdown: CancellationToken,
}

impl WorkerNode {
    /// Connects to Redis and Kafka and starts the worker, its items
    /// isolated as a service's. `inherited` is what items get back of the
    /// process's start-up state.
    pub async fn start(settings: &Settings, inherited: Inherited) -> Result<WorkerNode, NodeError> {
        let (store, redis, kafka, bus) = node::connect_distributed(settings).await?;
        let shutdown = CancellationToken::new();
        let executor = node::executor(settings, Items::Service, inherited)?;
        let live_logs = LiveRegistry::new(settings.executor.live_log_bytes);
        let worker = node::start_worker(
            settings,
            store,
            bus,
            executor,
            live_logs.clone(),
            shutdown.clone(),
        )
        .await?;
        if live_logs.cap() > 0 {
            // Servers read this worker's live logs through Redis.
            RedisRelay::start(&live_logs, redis, worker.id.clone(), shutdown.clone());
        }
        Ok(WorkerNode {
            worker,
            kafka,
            shutdown,
        })
    }

    /// This worker's id, as in its heartbeats and results.
    pub fn id(&self) -> &str {
        &self.worker.id
    }

    /// Cancel it to stop the worker: no new shards, running items may
    /// finish within `worker.drain-grace`.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the worker is told to stop, then until it has stopped
    /// and left its consumer group.
    pub async fn run(self) {
        self.shutdown.cancelled().await;
        self.worker.wait().await;
        self.kafka.shutdown(LEAVE_GROUP_GRACE).await;
        info!("dts worker stopped");
    }
}
