//! `dts up`: the whole system on one machine — API, scheduler consumers and a
//! local worker over the embedded bus and a SQLite store.

use super::node::{self, ConfigArgs, flag};
use super::wiring;
use anyhow::{Context, Result, bail};
use clap::Args;
use dts_bus::{DynBus, EmbeddedBus};
use dts_engine::scheduler::Scheduler;
use dts_engine::submit::Submitter;
use dts_engine::worker::Worker;
use dts_engine::{events, recovery, sweeper};
use dts_executor::Executor;
use dts_store::{DynStore, SqliteStore};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
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
    let embedded = EmbeddedBus::new(settings.pubsub.max_message_bytes);
    let bus: DynBus = Arc::new(embedded.clone());
    let topics = wiring::topics(&settings);

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();

    // The worker first, so its heartbeat is in the store before anything is planned.
    let executor = Executor::new(wiring::exec_settings(&settings));
    let worker = Worker::new(
        store.clone(),
        bus.clone(),
        executor,
        wiring::worker_settings(&settings),
    );
    worker.start(&tracker, shutdown.clone()).await?;
    Scheduler::new(
        store.clone(),
        bus.clone(),
        wiring::scheduler_settings(&settings),
    )
    .start(&tracker, shutdown.clone())
    .await?;
    events::log_completions(&bus, &topics, "dts-up-log", &tracker, shutdown.clone()).await?;

    let submitter = Submitter::new(
        store.clone(),
        bus.clone(),
        topics,
        wiring::submit_settings(&settings),
    );
    recovery::republish_unfinished(&store, &submitter).await?;
    sweeper::start(
        store.clone(),
        submitter.clone(),
        wiring::sweeper_settings(&settings),
        &tracker,
        shutdown.clone(),
    );
    info!(
        worker = worker.id(),
        "dts up: API, scheduler and worker running"
    );

    let state = node::app_state(&settings, store, submitter);
    node::serve_api(&settings, state, shutdown.clone()).await?;

    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    embedded.close();
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
