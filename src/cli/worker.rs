//! `dts worker`: consumes shards from Kafka, runs their items on every core,
//! records results in Redis, and heartbeats so schedulers count its cores.

use super::args::{ConfigArgs, ExecArgs, flag};
use super::process;
use anyhow::Result;
use clap::Args;
use dts_node::{node, wiring};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    exec: ExecArgs,
    /// This worker's id in heartbeats and results (worker.id); default host-pid-random.
    #[arg(long)]
    id: Option<String>,
}

pub async fn run(args: WorkerArgs) -> Result<ExitCode> {
    let mut flags = Vec::new();
    args.exec.push_flags(&mut flags);
    flag(&mut flags, "worker.id", args.id.as_ref());
    let settings = args.config.load(flags)?;

    let (store, kafka, bus) = node::connect_distributed(&settings).await?;
    let shutdown = CancellationToken::new();
    let worker = node::start_worker(
        &settings,
        store,
        bus,
        shutdown.clone(),
        wiring::Items::Service,
        process::items_open_files_limit(),
    )
    .await?;
    // Tests and scripts wait for this line.
    println!("dts worker {} ready", worker.id);

    node::shutdown_signal().await;
    info!("shutting down: no new shards; running items may finish");
    shutdown.cancel();
    worker.wait().await;
    kafka.shutdown(node::LEAVE_GROUP_GRACE).await;
    info!("dts worker stopped");
    Ok(ExitCode::SUCCESS)
}
