//! `dts up`: the whole system on one machine — API, scheduler consumers and a
//! local worker over the embedded bus and a SQLite store, served over HTTP.
//! The store's data directory is private to dts's user (0700, files 0600).

use super::args::{self, ConfigArgs, ExecArgs, LabelArgs, ListenArgs, flag};
use super::process;
use anyhow::Result;
use clap::Args;
use dts_node::UpNode;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    exec: ExecArgs,
    #[command(flatten)]
    labels: LabelArgs,
    /// Where the SQLite store lives (store.data-dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep everything in memory; nothing survives a restart (store.ephemeral).
    #[arg(long)]
    ephemeral: bool,
}

impl UpArgs {
    /// The options as configuration flags, the top layer.
    fn flags(&self) -> Vec<(String, String)> {
        let mut flags = Vec::new();
        self.listen.push_flags(&mut flags);
        self.exec.push_flags(&mut flags);
        self.labels.push_flags(&mut flags);
        flag(
            &mut flags,
            "store.data-dir",
            self.data_dir.as_ref().map(|d| d.display()),
        );
        flag(
            &mut flags,
            "store.ephemeral",
            self.ephemeral.then_some(true),
        );
        flags
    }
}

pub async fn run(args: UpArgs) -> Result<ExitCode> {
    let settings = args.config.load(args.flags())?;
    let up = UpNode::start(&settings, process::inherited()).await?;
    // Tests and scripts wait for this line.
    println!("dts listening on http://{}", up.local_addr());
    args::stop_on_signal(
        up.shutdown_token(),
        "no new requests and no new items; running items may finish",
    );
    up.run().await?;
    Ok(ExitCode::SUCCESS)
}
