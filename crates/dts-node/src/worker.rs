//! `dts worker`: consumes shards from Kafka, runs their items on every core,
//! records results in Redis, and heartbeats so schedulers count its cores.

use crate::NodeError;
use crate::node::{self, LEAVE_GROUP_GRACE};
use crate::wiring::{Inherited, Items};
use crate::worker_thread::WorkerThread;
use dts_api::AccessLists;
use dts_bus::kafka::KafkaBus;
use dts_config::Settings;
use dts_engine::live::LiveRegistry;
use dts_engine::live::redis::RedisRelay;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A started `dts worker`: subscribed and heartbeating; [`WorkerNode::run`]
/// returns once [`WorkerNode::shutdown_token`] is cancelled and the worker
/// has stopped.
pub struct WorkerNode {
    worker: WorkerThread,
    kafka: KafkaBus,
    shutdown: CancellationToken,
    metrics: Option<(SocketAddr, JoinHandle<()>)>,
}

impl WorkerNode {
    /// Connects to Redis and Kafka and starts the worker, its items
    /// isolated as a service's. `inherited` is what items get back of the
    /// process's start-up state.
    pub async fn start(settings: &Settings, inherited: Inherited) -> Result<WorkerNode, NodeError> {
        // Bound first: a port in use fails the start before anything runs.
        let listener = bind_metrics(settings).await?;
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
        let metrics = listener
            .map(|(listener, local)| (local, serve_metrics(settings, listener, shutdown.clone())));
        Ok(WorkerNode {
            worker,
            kafka,
            shutdown,
            metrics,
        })
    }

    /// Where `/metrics` is served (`worker.metrics-port`), if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(local, _)| *local)
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
        if let Some((_, serving)) = self.metrics {
            let _ = serving.await;
        }
        self.kafka.shutdown(LEAVE_GROUP_GRACE).await;
        info!("dts worker stopped");
    }
}

/// Binds `worker.metrics-bind`:`worker.metrics-port`, unless the port is 0.
async fn bind_metrics(
    settings: &Settings,
) -> Result<Option<(tokio::net::TcpListener, SocketAddr)>, NodeError> {
    let (bind, port) = (settings.worker.metrics_bind, settings.worker.metrics_port);
    if port == 0 {
        return Ok(None);
    }
    let listen_error = |source| NodeError::MetricsListen { bind, port, source };
    let listener = tokio::net::TcpListener::bind((bind, port))
        .await
        .map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    info!(address = %local, "metrics listening");
    Ok(Some((listener, local)))
}

/// Serves `/metrics` until `shutdown`; a failure is logged, and the worker
/// runs on without it.
fn serve_metrics(
    settings: &Settings,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let token = settings.server.auth_token.as_deref().map(Arc::from);
    let lists = AccessLists {
        allowed_origins: settings.server.allowed_origins.clone(),
        allowed_hosts: settings.server.allowed_hosts.clone(),
    };
    tokio::spawn(async move {
        let stopped = shutdown.cancelled_owned();
        if let Err(e) = dts_api::metrics::serve_alone(listener, token, &lists, stopped).await {
            warn!(error = %e, "the metrics port stopped serving");
        }
    })
}
