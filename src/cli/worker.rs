//! `dts worker`: consumes shards from Kafka, runs their items on every core,
//! records results in Redis, and heartbeats so schedulers count its cores.

use super::node::{self, ConfigArgs, flag};
use super::wiring;
use super::worker_thread::WorkerThread;
use anyhow::Result;
use clap::Args;
use dts_bus::DynBus;
use dts_engine::worker::Worker;
use dts_executor::Executor;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Items to run at once (worker.cores); default all cores of this machine.
    #[arg(long)]
    cores: Option<u32>,
    /// This worker's id in heartbeats and results (worker.id); default host-pid-random.
    #[arg(long)]
    id: Option<String>,
    /// Run bash items in warm shells (executor.warm-shell; docs/warm-shell.md).
    #[arg(long)]
    warm_shell: bool,
}

pub async fn run(args: WorkerArgs) -> Result<ExitCode> {
    node::init_logging();
    let mut flags = Vec::new();
    flag(&mut flags, "worker.cores", args.cores);
    flag(&mut flags, "worker.id", args.id.as_ref());
    flag(
        &mut flags,
        "executor.warm-shell",
        args.warm_shell.then_some(true),
    );
    let settings = args.config.load(flags)?;

    let store = node::connect_redis(&settings).await?;
    let kafka = node::connect_kafka(&settings).await?;
    let bus: DynBus = Arc::new(kafka.clone());
    let shutdown = CancellationToken::new();
    let executor = Executor::new(wiring::exec_settings(&settings));
    let worker = Worker::new(store, bus, executor, wiring::worker_settings(&settings));
    let worker = WorkerThread::start(worker, shutdown.clone()).await?;
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
