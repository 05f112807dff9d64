//! `dts up`: the whole system on one machine — API, scheduler consumers and a
//! local worker over the embedded bus and a SQLite store, served over HTTP.

use super::embedded::EmbeddedNode;
use super::node::{self, ConfigArgs, flag};
use anyhow::{Context, Result, bail};
use clap::Args;
use dts_store::{DynStore, SqliteStore};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tracing::info;

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// HTTP port (server.port); 0 picks a free one.
    #[arg(long)]
    port: Option<u16>,
    /// Address to listen on (server.bind). Anything but loopback needs a token.
    #[arg(long)]
    bind: Option<String>,
    /// Where the SQLite store lives (store.data-dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep everything in memory; nothing survives a restart (store.ephemeral).
    #[arg(long)]
    ephemeral: bool,
    /// Items to run at once on this machine (worker.cores); default all cores.
    #[arg(long)]
    cores: Option<u32>,
    /// Listen on a non-loopback address without a token (server.insecure).
    #[arg(long)]
    insecure: bool,
    /// Run bash items in warm shells (executor.warm-shell; docs/warm-shell.md).
    #[arg(long)]
    warm_shell: bool,
}

impl UpArgs {
    /// The options as configuration flags, the top layer.
    fn flags(&self) -> Vec<(String, String)> {
        let mut flags = Vec::new();
        flag(&mut flags, "server.port", self.port);
        flag(&mut flags, "server.bind", self.bind.as_ref());
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
        flag(&mut flags, "worker.cores", self.cores);
        flag(&mut flags, "server.insecure", self.insecure.then_some(true));
        flag(
            &mut flags,
            "executor.warm-shell",
            self.warm_shell.then_some(true),
        );
        flags
    }
}

pub async fn run(args: UpArgs) -> Result<ExitCode> {
    node::init_logging();
    let settings = args.config.load(args.flags())?;
    node::check_exposure(&settings)?;

    let (store, _lock): (DynStore, Option<File>) = if settings.store.ephemeral {
        info!("ephemeral store: nothing survives a restart");
        (Arc::new(SqliteStore::in_memory()?), None)
    } else {
        let dir = &settings.store.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let lock = lock_data_dir(dir)?;
        let path = dir.join("dts.sqlite3");
        let store = SqliteStore::open(&path)
            .with_context(|| format!("cannot open the store {}", path.display()))?;
        // We hold the data directory's lock: any lease in the store belongs to
        // a dts up that died, so its shards may be taken over now.
        let expired = store.expire_all_leases().await?;
        if expired > 0 {
            info!(
                shards = expired,
                "taking over shards left running by a previous dts up"
            );
        }
        info!(path = %path.display(), "store opened");
        (Arc::new(store), Some(lock))
    };
    let node = EmbeddedNode::start(&settings, store, true).await?;
    info!(worker = %node.worker_id, "dts up: API, scheduler and worker running");
    let state = node::app_state(&settings, node.store.clone(), node.submitter.clone());
    node::serve_api(&settings, state, node.shutdown.clone()).await?;
    node.stop().await;
    info!("dts stopped");
    Ok(ExitCode::SUCCESS)
}

/// Takes an exclusive lock on the data directory, so two `dts up` never
/// share (and double-run) one store.
fn lock_data_dir(dir: &Path) -> Result<File> {
    let path = dir.join("lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; it has no memory effects.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "another dts is already using the data directory {} (stop it, or pass --data-dir)",
            dir.display()
        );
    }
    Ok(file)
}
