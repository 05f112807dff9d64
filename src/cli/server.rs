//! `dts server`: the API and scheduler consumers over Kafka and Redis.
//! Stateless: run as many as you like behind a load balancer.

use super::args::{ConfigArgs, ListenArgs};
use anyhow::Result;
use clap::Args;
use dts_engine::scheduler::Scheduler;
use dts_node::{node, wiring};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    listen: ListenArgs,
}

pub async fn run(args: ServerArgs) -> Result<ExitCode> {
    let mut flags = Vec::new();
    args.listen.push_flags(&mut flags);
    let settings = args.config.load(flags)?;
    node::check_exposure(&settings)?;

    let (store, kafka, bus) = node::connect_distributed(&settings).await?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Joining the consumer group takes a few seconds; the API need not wait
    // for it (the task topic keeps what is submitted meanwhile).
    let scheduler = Scheduler::new(
        store.clone(),
        bus.clone(),
        wiring::scheduler_settings(&settings),
    );
    let scheduler_started = {
        let (tracker_for_consumers, stop) = (tracker.clone(), shutdown.clone());
        let consumers = settings.pubsub.consumer_count;
        tracker.spawn(async move {
            match scheduler.start(&tracker_for_consumers, stop.clone()).await {
                Ok(()) => {
                    info!(consumers, "scheduler consumers joined their group");
                    true
                }
                Err(e) => {
                    error!(error = %e, "the scheduler could not start; stopping the server");
                    stop.cancel();
                    false
                }
            }
        })
    };
    let submitter = node::start_submitting(&settings, &store, bus, &tracker, shutdown.clone());

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
    Ok(if scheduler_started.await.unwrap_or(false) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
