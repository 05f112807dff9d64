//! What every command that runs a node shares: the options, configuration
//! loading, logging, the network-exposure check, connecting to Redis and
//! Kafka, starting the worker and the submitter, serving the API, and
//! waiting for a stop signal.

use crate::wiring;
use crate::worker_thread::WorkerThread;
use anyhow::{Context, Result, bail};
use dts_api::{AccessLists, AppState, ConnectionSettings};
use dts_bus::DynBus;
use dts_bus::kafka::{KafkaBus, KafkaSettings};
use dts_config::Settings;
use dts_engine::submit::Submitter;
use dts_engine::sweeper;
use dts_engine::worker::Worker;
use dts_executor::{Executor, IsolationReport};
use dts_store::DynStore;
use dts_store::redis::{RedisSettings, RedisStore};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// How long start-up waits for Redis or Kafka before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
            "INSECURE: the API is open to the network with no token; anyone who can reach it can run code on the workers"
        );
    }
    Ok(())
}

/// Connects to Redis (`spring.redis.host`, `spring.redis.port`), failing fast.
pub async fn connect_redis(settings: &Settings) -> Result<DynStore> {
    let url = format!("redis://{}:{}/", settings.redis.host, settings.redis.port);
    let store = RedisStore::connect(RedisSettings {
        url: url.clone(),
        key_prefix: settings.redis.key_prefix.clone(),
        retention: settings.redis.retention,
    })
    .await
    .with_context(|| {
        format!("cannot use Redis at {url} (spring.redis.host / spring.redis.port)")
    })?;
    info!(%url, prefix = %settings.redis.key_prefix, "connected to Redis");
    Ok(Arc::new(store))
}

/// How long a stopping node waits for its consumers to leave their groups,
/// so the other members take over their partitions at once.
pub const LEAVE_GROUP_GRACE: Duration = Duration::from_secs(10);

/// Connects to Kafka (`pubsub.namespace`) and creates missing topics, failing
/// fast. Keep the bus to call [`KafkaBus::shutdown`] when stopping.
pub async fn connect_kafka(settings: &Settings) -> Result<KafkaBus> {
    let topics = wiring::topics(settings);
    let bus = KafkaBus::connect(KafkaSettings {
        bootstrap: settings.pubsub.namespace.clone(),
        client: settings.pubsub.kafka.clone(),
        max_message_bytes: settings.pubsub.max_message_bytes,
        partitions: settings.pubsub.partitions,
        topics: vec![topics.tasks, topics.shards, topics.results],
        connect_timeout: CONNECT_TIMEOUT,
    })
    .await
    .with_context(|| {
        format!(
            "cannot use Kafka at {} (pubsub.namespace)",
            settings.pubsub.namespace
        )
    })?;
    info!(bootstrap = %settings.pubsub.namespace, "connected to Kafka");
    Ok(bus)
}

/// Redis and Kafka for `dts server` and `dts worker`: the store, the Kafka
/// bus (to call [`KafkaBus::shutdown`] when stopping) and the same bus as
/// the engine takes it.
pub async fn connect_distributed(settings: &Settings) -> Result<(DynStore, KafkaBus, DynBus)> {
    let store = connect_redis(settings).await?;
    let kafka = connect_kafka(settings).await?;
    let bus: DynBus = Arc::new(kafka.clone());
    Ok((store, kafka, bus))
}

/// Starts this machine's worker on a runtime thread of its own, its items
/// isolated as `items` says.
pub async fn start_worker(
    settings: &Settings,
    store: DynStore,
    bus: DynBus,
    shutdown: CancellationToken,
    items: wiring::Items,
    items_open_files: Option<u64>,
) -> Result<WorkerThread> {
    let executor = Executor::new(wiring::exec_settings(settings, items, items_open_files))
        .context("cannot set up how items run (executor.*)")?;
    log_isolation(&executor.isolation(), items);
    let worker = Worker::new(store, bus, executor, wiring::worker_settings(settings));
    WorkerThread::start(worker, shutdown).await
}

/// Says how items will be isolated, and warns loudly when a root dts runs
/// other people's items as root.
fn log_isolation(report: &IsolationReport, items: wiring::Items) {
    let limits = report.limits.join(", ");
    info!(
        containment = report.containment.as_str(),
        run_as = report.run_as.as_deref().unwrap_or("(dts's own user)"),
        private_workdir = report.private_workdir,
        limits = if limits.is_empty() {
            "none"
        } else {
            limits.as_str()
        },
        "items are isolated"
    );
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if items == wiring::Items::Service && root && report.run_as.is_none() {
        warn!(
            "INSECURE: items run as root (executor.run-as=root): whoever can submit a task owns this machine"
        );
    }
}

/// The submitter, and the sweeper that republishes stuck submissions and
/// ends overdue tasks through it (its first sweep comes one interval later).
pub fn start_submitting(
    settings: &Settings,
    store: &DynStore,
    bus: DynBus,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Submitter {
    let submitter = Submitter::new(
        store.clone(),
        bus,
        wiring::topics(settings),
        wiring::submit_settings(settings),
    );
    sweeper::start(
        store.clone(),
        submitter.clone(),
        wiring::sweeper_settings(settings),
        tracker,
        shutdown,
    );
    submitter
}

/// The API's state for `store` and `submitter`.
pub fn app_state(settings: &Settings, store: DynStore, submitter: Submitter) -> AppState {
    AppState {
        store,
        submitter,
        limits: wiring::submit_limits(settings),
        max_body_bytes: settings.limits.max_body_bytes,
        auth_token: settings.server.auth_token.as_deref().map(Arc::from),
        heartbeat_ttl: settings.worker.heartbeat_ttl,
        access: AccessLists {
            allowed_origins: settings.server.allowed_origins.clone(),
            allowed_hosts: settings.server.allowed_hosts.clone(),
        },
        connections: ConnectionSettings {
            header_read_timeout: settings.server.header_read_timeout,
            idle_timeout: settings.server.idle_timeout,
            body_timeout: settings.server.body_timeout,
            max_connections: settings.server.max_connections,
        },
    }
}

/// Binds the API, prints `dts listening on http://ADDR` (tests and scripts
/// wait for it), and serves until a stop signal; then cancels `shutdown`.
pub async fn serve_api(
    settings: &Settings,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<()> {
    let address = (settings.server.bind, settings.server.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {}:{}", address.0, address.1))?;
    let local = listener.local_addr()?;
    println!("dts listening on http://{local}");
    info!(address = %local, "API listening");
    let stop = shutdown.clone();
    dts_api::serve(listener, state, async move {
        tokio::select! {
            _ = shutdown_signal() => info!("shutting down: no new requests; running work may finish"),
            _ = stop.cancelled() => {}
        }
        stop.cancel();
    })
    .await
    .context("the HTTP server failed")
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
