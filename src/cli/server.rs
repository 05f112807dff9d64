//! `dts server`: the API and scheduler consumers over Kafka and Redis.
//! Stateless: run as many as you like behind a load balancer.

use super::node::{self, ConfigArgs, flag};
use super::wiring;
use anyhow::Result;
use clap::Args;
use dts_bus::DynBus;
use dts_engine::scheduler::Scheduler;
use dts_engine::submit::Submitter;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

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
    Scheduler::new(
        store.clone(),
        bus.clone(),
        wiring::scheduler_settings(&settings),
    )
    .start(&tracker, shutdown.clone())
    .await?;
    let submitter = Submitter::new(
        store.clone(),
        bus,
        wiring::topics(&settings),
        wiring::submit_settings(&settings),
    );
    info!(
        consumers = settings.pubsub.consumer_count,
        "dts server: API and scheduler running"
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
    Ok(ExitCode::SUCCESS)
}
