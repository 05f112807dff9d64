//! `dts worker`: consumes shards from Kafka, runs their items on every core,
//! records results in Redis, and heartbeats so schedulers count its cores.

use super::args::{self, ConfigArgs, ExecArgs, LabelArgs, flag};
use super::process;
use anyhow::Result;
use clap::Args;
use dts_node::WorkerNode;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    exec: ExecArgs,
    #[command(flatten)]
    labels: LabelArgs,
    /// This worker's id in heartbeats and results (worker.id); default host-pid-random.
    #[arg(long)]
    id: Option<String>,
}

pub async fn run(args: WorkerArgs) -> Result<ExitCode> {
    let mut flags = Vec::new();
    args.exec.push_flags(&mut flags);
    args.labels.push_flags(&mut flags);
    flag(&mut flags, "worker.id", args.id.as_ref());
    let settings = args.config.load(flags)?;

    let worker = WorkerNode::start(&settings, process::inherited()).await?;
    // Tests and scripts wait for this line.
    println!("dts worker {} ready", worker.id());
    if let Some(address) = worker.metrics_addr() {
        println!("dts worker metrics on http://{address}/metrics");
    }
    args::stop_on_signal(
        worker.shutdown_token(),
        "no new shards; running items may finish",
    );
    worker.run().await;
    Ok(ExitCode::SUCCESS)
}
