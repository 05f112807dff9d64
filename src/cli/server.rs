//! `dts server`: the API and scheduler consumers over Kafka and Redis.
//! Stateless: run as many as you like behind a load balancer.

use super::node::{self, ConfigArgs, flag};
use super::wiring;
use anyhow::Result;
use clap::Args;
use dts_bus::DynBus;
use dts_engine::scheduler::Scheduler;
use dts_engine::submit::Submitter;
use dts_engine::sweeper;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// HTTP port (server.port); 0 picks a free one.
    #[arg(long)]
    port: Option<u16>,
    /// Address to listen on (server.bind). Anything but loopback needs a token.
    #[arg(long)]
    bind: Option<String>,
    /// Listen on a non-loopback address without a token (server.insecure).
    #[arg(long)]
    insecure: bool,
}

pub async fn run(args: ServerArgs) -> Result<ExitCode> {
    node::init_logging();
    let mut flags = Vec::new();
    flag(&mut flags, "server.port", args.port);
    flag(&mut flags, "server.bind", args.bind.as_ref());
    flag(&mut flags, "server.insecure", args.insecure.then_some(true));
    let settings = args.config.load(flags)?;
    node::check_exposure(&settings)?;

    let store = node::connect_redis(&settings).await?;
    let kafka = node::connect_kafka(&settings).await?;
    let bus: DynBus = Arc::new(kafka.clone());
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Joining the consumer group takes a few seconds; the API need not wait
    // for it (the task topic keeps what is submitted meanwhile).
    let scheduler = Scheduler::new(
        store.clone(),
        bus.clone(),
        wiring::scheduler_settings(&settings),
    );
    let scheduler_failed = Arc::new(AtomicBool::new(false));
    {
        let (tracker_for_consumers, stop, failed) =
            (tracker.clone(), shutdown.clone(), scheduler_failed.clone());
        let consumers = settings.pubsub.consumer_count;
        tracker.spawn(async move {
            match scheduler.start(&tracker_for_consumers, stop.clone()).await {
                Ok(()) => info!(consumers, "scheduler consumers joined their group"),
                Err(e) => {
                    error!(error = %e, "the scheduler could not start; stopping the server");
                    failed.store(true, Ordering::Relaxed);
                    stop.cancel();
                }
            }
        });
    }
    let submitter = Submitter::new(
        store.clone(),
        bus,
        wiring::topics(&settings),
        wiring::submit_settings(&settings),
    );
    sweeper::start(
        store.clone(),
        submitter.clone(),
        wiring::sweeper_settings(&settings),
        &tracker,
        shutdown.clone(),
    );

    node::serve_api(
        &settings,
        node::app_state(&settings, store, submitter),
        shutdown.clone(),
    )
    .await?;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    kafka.shutdown(node::LEAVE_GROUP_GRACE).await;
    info!("dts server stopped");
    Ok(if scheduler_failed.load(Ordering::Relaxed) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
