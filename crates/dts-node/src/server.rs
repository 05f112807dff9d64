//! `dts server`: the API and scheduler consumers over Kafka and Redis.
//! Stateless: run as many as you like behind a load balancer.

use crate::NodeError;
use crate::node::{self, Api, LEAVE_GROUP_GRACE};
use crate::wiring;
use dts_bus::kafka::KafkaBus;
use dts_config::Settings;
use dts_engine::EngineError;
use dts_engine::live::redis::RedisLiveLogs;
use dts_engine::scheduler::Scheduler;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

/// A started `dts server`: connected, its API bound; [`ServerNode::run`]
/// serves requests until [`ServerNode::shutdown_token`] is cancelled.
pub struct ServerNode {
    api: Api,
    kafka: KafkaBus,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    scheduler_started: JoinHandle<Result<(), EngineError>>,
}

impl ServerNode {
    /// Checks the API's exposure, connects to Redis and Kafka, starts the
    /// submitter and sweeper, binds the API, and has the scheduler join its
    /// consumer group in the background.
    pub async fn start(settings: &Settings) -> Result<ServerNode, NodeError> {
        node::check_exposure(settings)?;
        let (store, redis, kafka, bus) = node::connect_distributed(settings).await?;
        let live_logs = Arc::new(RedisLiveLogs::new(redis, settings.executor.live_log_bytes));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        // Joining the consumer group takes a few seconds; the API need not wait
        // for it (the task topic keeps what is submitted meanwhile).
        let scheduler = Scheduler::new(
            store.clone(),
            bus.clone(),
            wiring::scheduler_settings(settings),
        );
        let scheduler_started = {
            let (tracker_for_consumers, stop) = (tracker.clone(), shutdown.clone());
            let consumers = settings.pubsub.consumer_count;
            tracker.spawn(async move {
                let started = scheduler.start(&tracker_for_consumers, stop.clone()).await;
                match &started {
                    Ok(()) => info!(consumers, "scheduler consumers joined their group"),
                    Err(e) => {
                        error!(error = %e, "the scheduler could not start; stopping the server");
                        stop.cancel();
                    }
                }
                started
            })
        };
        let submitter = node::start_submitting(settings, &store, bus, &tracker, shutdown.clone());
        match Api::bind(
            settings,
            node::app_state(settings, store, submitter, live_logs),
        )
        .await
        {
            Ok(api) => Ok(ServerNode {
                api,
                kafka,
                shutdown,
                tracker,
                scheduler_started,
            }),
            Err(e) => {
                shutdown.cancel();
                tracker.close();
                tracker.wait().await;
                kafka.shutdown(LEAVE_GROUP_GRACE).await;
                Err(e)
            }
        }
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.api.local_addr()
    }

    /// Cancel it to stop the server: no new requests, and its consumers
    /// leave their groups.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves the API until the server is told to stop, serving fails, or
    /// the scheduler cannot start; then stops every part. The scheduler's
    /// failure to start is the error returned, if it failed.
    pub async fn run(self) -> Result<(), NodeError> {
        let served = self.api.serve(self.shutdown.clone()).await;
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.kafka.shutdown(LEAVE_GROUP_GRACE).await;
        info!("dts server stopped");
        match self.scheduler_started.await {
            Ok(Ok(())) => served,
            Ok(Err(source)) => Err(NodeError::Start {
                part: "scheduler",
                source,
            }),
            Err(join) => Err(NodeError::SchedulerTask(join)),
        }
    }
}
