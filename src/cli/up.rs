//! `dts up`: the whole system on one machine — API, scheduler consumers and a
//! local worker over the embedded bus and a SQLite store, served over HTTP.

use super::embedded::EmbeddedNode;
use super::node::{self, ConfigArgs, ExecArgs, ListenArgs, flag};
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
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    exec: ExecArgs,
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
    node::init_logging("info");
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
    info!(worker = %node.worker_id(), "dts up: API, scheduler and worker running");
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
