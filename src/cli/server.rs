//! `dts server`: the API and scheduler consumers over Kafka and Redis.
//! Stateless: run as many as you like behind a load balancer.

use super::args::{self, ConfigArgs, ListenArgs};
use anyhow::Result;
use clap::Args;
use dts_node::ServerNode;
use std::process::ExitCode;

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
    let server = ServerNode::start(&settings).await?;
    // Tests and scripts wait for this line.
    println!("dts listening on http://{}", server.local_addr());
    args::stop_on_signal(
        server.shutdown_token(),
        "no new requests; running work may finish",
    );
    server.run().await?;
    Ok(ExitCode::SUCCESS)
}
