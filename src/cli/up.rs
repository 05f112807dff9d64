//! `dts up`: the whole system on one machine — API, scheduler consumers and a
//! local worker over the embedded bus and a SQLite store.

use super::wiring;
use anyhow::{Context, Result, bail};
use clap::Args;
use dts_api::AppState;
use dts_bus::{DynBus, EmbeddedBus};
use dts_config::Settings;
use dts_engine::scheduler::Scheduler;
use dts_engine::submit::Submitter;
use dts_engine::worker::Worker;
use dts_engine::{events, recovery};
use dts_executor::Executor;
use dts_store::{DynStore, SqliteStore};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// A configuration file: the seed's application.properties, or .toml.
    #[arg(long, short)]
    config: Option<PathBuf>,
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
    /// Any configuration key, e.g. --set limits.max-items=10000 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl UpArgs {
    /// The options as configuration flags, the top layer.
    fn flags(&self) -> Result<Vec<(String, String)>> {
        let mut flags = Vec::new();
        let mut add = |key: &str, value: String| flags.push((key.to_string(), value));
        if let Some(port) = self.port {
            add("server.port", port.to_string());
        }
        if let Some(bind) = &self.bind {
            add("server.bind", bind.clone());
        }
        if let Some(dir) = &self.data_dir {
            add("store.data-dir", dir.display().to_string());
        }
        if self.ephemeral {
            add("store.ephemeral", "true".into());
        }
        if let Some(cores) = self.cores {
            add("worker.cores", cores.to_string());
        }
        if self.insecure {
            add("server.insecure", "true".into());
        }
        for pair in &self.set {
            let Some((key, value)) = pair.split_once('=') else {
                bail!("--set takes KEY=VALUE, not {pair:?}");
            };
            flags.push((key.trim().to_string(), value.to_string()));
        }
        Ok(flags)
    }
}

/// Loads the configuration from the file, the environment and `flags`.
pub fn load_settings(config: Option<&Path>, flags: &[(String, String)]) -> Result<Settings> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let settings = dts_config::load(config, &env, flags).context("invalid configuration")?;
    for warning in &settings.warnings {
        warn!("{warning}");
    }
    Ok(settings)
}

/// Logs to standard error; `DTS_LOG` (or `RUST_LOG`) sets the filter.
pub fn init_logging() {
    let filter = std::env::var("DTS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Refuses to expose the API to the network without a token, unless told to.
pub fn check_exposure(settings: &Settings) -> Result<()> {
    if settings.server.exposed_without_token() {
        if !settings.server.insecure {
            bail!(
                "refusing to listen on {} without an auth token: anyone who can reach it could run code here. \
                 Set DTS_AUTH_TOKEN (server.auth-token), bind to 127.0.0.1, or pass --insecure",
                settings.server.bind
            );
        }
        warn!(
            bind = %settings.server.bind,
            "INSECURE: the API is open to the network with no token; anyone who can reach it can run code on this machine"
        );
    }
    Ok(())
}

pub async fn run(args: UpArgs) -> Result<ExitCode> {
    init_logging();
    let settings = load_settings(args.config.as_deref(), &args.flags()?)?;
    check_exposure(&settings)?;

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

    let state = AppState {
        store: store.clone(),
        submitter,
        limits: wiring::submit_limits(&settings),
        max_body_bytes: settings.limits.max_body_bytes,
        auth_token: settings.server.auth_token.as_deref().map(Arc::from),
        heartbeat_ttl: settings.worker.heartbeat_ttl,
    };
    let address = (settings.server.bind, settings.server.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {}:{}", address.0, address.1))?;
    let local = listener.local_addr()?;
    // Tests and scripts wait for this line to know the port.
    println!("dts listening on http://{local}");
    info!(address = %local, worker = worker.id(), "dts up: API, scheduler and worker running");

    let stop = shutdown.clone();
    dts_api::serve(listener, state, async move {
        shutdown_signal().await;
        info!("shutting down: no new requests; running items may finish");
        stop.cancel();
    })
    .await
    .context("the HTTP server failed")?;

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

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops dts");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
