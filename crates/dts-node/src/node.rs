//! What every kind of node shares: loading the configuration, the
//! network-exposure check, connecting to Redis and Kafka, starting the
//! worker and the submitter, and binding and serving the API.

use crate::NodeError;
use crate::wiring::{self, Inherited, Items};
use crate::worker_thread::WorkerThread;
use dts_api::{AccessLists, AppState, ConnectionSettings};
use dts_bus::DynBus;
use dts_bus::kafka::{KafkaBus, KafkaSettings};
use dts_config::Settings;
use dts_engine::live::{DynLiveLogs, LiveRegistry};
use dts_engine::submit::Submitter;
use dts_engine::sweeper;
use dts_engine::worker::Worker;
use dts_engine::worker::WorkerSettings;
use dts_executor::{Executor, IsolationReport};
use dts_store::DynStore;
use dts_store::redis::{RedisSettings, RedisStore, SentinelSettings};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// How long start-up waits for Redis or Kafka before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads defaults < `file` < `env` < `flags` (see [`dts_config::load`]) and
/// logs the warnings (unknown keys in the file).
pub fn load_settings(
    file: Option<&Path>,
    env: &HashMap<String, String>,
    flags: &[(String, String)],
) -> Result<Settings, NodeError> {
    let settings = dts_config::load(file, env, flags)?;
    for warning in &settings.warnings {
        warn!("{warning}");
    }
    Ok(settings)
}

/// Refuses to expose the API to the network without a token, unless told to.
pub fn check_exposure(settings: &Settings) -> Result<(), NodeError> {
    if settings.server.exposed_without_token() {
        if !settings.server.insecure {
            return Err(NodeError::ExposedWithoutToken {
                bind: settings.server.bind,
            });
        }
        warn!(
            bind = %settings.server.bind,
            "INSECURE: the API is open to the network with no token; anyone who can reach it can run code on the workers"
        );
    }
    Ok(())
}

/// Connects to Redis (`spring.redis.host`, `spring.redis.port`, or the
/// primary the sentinels of `spring.redis.sentinel.*` name), failing fast.
pub async fn connect_redis(settings: &Settings) -> Result<RedisStore, NodeError> {
    let url = format!("redis://{}:{}/", settings.redis.host, settings.redis.port);
    let sentinel = settings
        .redis
        .sentinel
        .as_ref()
        .map(|sentinel| SentinelSettings {
            master: sentinel.master.clone(),
            nodes: sentinel.nodes.clone(),
            wait_replicas: sentinel.wait_replicas,
            wait_timeout: sentinel.wait_timeout,
        });
    let (shown, keys) = match &sentinel {
        None => (url.clone(), "spring.redis.host / spring.redis.port"),
        Some(sentinel) => (
            format!(
                "master {} via sentinels {}",
                sentinel.master,
                sentinel
                    .nodes
                    .iter()
                    .map(|(host, port)| format!("{host}:{port}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "spring.redis.sentinel.master / spring.redis.sentinel.nodes",
        ),
    };
    let store = RedisStore::connect(RedisSettings {
        url,
        key_prefix: settings.redis.key_prefix.clone(),
        retention: settings.redis.retention,
        sentinel,
    })
    .await
    .map_err(|source| NodeError::Redis {
        url: shown.clone(),
        keys,
        source,
    })?;
    info!(redis = %shown, prefix = %settings.redis.key_prefix, "connected to Redis");
    Ok(store)
}

/// How long a stopping node waits for its consumers to leave their groups,
/// so the other members take over their partitions at once.
pub const LEAVE_GROUP_GRACE: Duration = Duration::from_secs(10);

/// Connects to Kafka (`pubsub.namespace`) and creates missing topics, failing
/// fast. Keep the bus to call [`KafkaBus::shutdown`] when stopping.
pub async fn connect_kafka(settings: &Settings) -> Result<KafkaBus, NodeError> {
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
    .map_err(|source| NodeError::Kafka {
        bootstrap: settings.pubsub.namespace.clone(),
        source,
    })?;
    info!(bootstrap = %settings.pubsub.namespace, "connected to Kafka");
    Ok(bus)
}

/// Redis and Kafka for `dts server` and `dts worker`: the store (also as
/// Redis itself, which live logs go through), the Kafka bus (to call
/// [`KafkaBus::shutdown`] when stopping) and the same bus as the engine
/// takes it.
pub async fn connect_distributed(
    settings: &Settings,
) -> Result<(DynStore, RedisStore, KafkaBus, DynBus), NodeError> {
    let redis = connect_redis(settings).await?;
    let store: DynStore = Arc::new(redis.clone());
    let kafka = connect_kafka(settings).await?;
    let bus: DynBus = Arc::new(kafka.clone());
    Ok((store, redis, kafka, bus))
}

/// The executor for this machine's worker, its items isolated as `items`
/// says; logs how.
pub fn executor(
    settings: &Settings,
    items: Items,
    inherited: Inherited,
) -> Result<Executor, NodeError> {
    let executor = Executor::new(wiring::exec_settings(settings, items, inherited))?;
    log_isolation(&executor.isolation(), items);
    Ok(executor)
}

/// Starts this machine's worker on a runtime thread of its own, running
/// items with `executor`; it stops when `shutdown` is cancelled.
pub async fn start_worker(
    settings: &Settings,
    store: DynStore,
    bus: DynBus,
    executor: Executor,
    live_logs: LiveRegistry,
    shutdown: CancellationToken,
) -> Result<WorkerThread, NodeError> {
    let worker_settings = WorkerSettings {
        live_logs,
        ..wiring::worker_settings(settings)
    };
    let worker = Worker::new(store, bus, executor, worker_settings);
    WorkerThread::start(worker, shutdown).await
}

/// Says how items will be isolated, and warns loudly when a root dts runs
/// other people's items as root.
fn log_isolation(report: &IsolationReport, items: Items) {
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
    if items == Items::Service && wiring::running_as_root() && report.run_as.is_none() {
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
/// Running items' output is read through `live_logs`.
pub fn app_state(
    settings: &Settings,
    store: DynStore,
    submitter: Submitter,
    live_logs: DynLiveLogs,
) -> AppState {
    AppState {
        live_logs,
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

/// The API bound to its address but not serving yet: the address is known
/// (`server.port` 0 picks a free port) before anyone can be told about it.
pub struct Api {
    listener: tokio::net::TcpListener,
    local: SocketAddr,
    state: AppState,
}

impl Api {
    /// Binds `server.bind`:`server.port`.
    pub async fn bind(settings: &Settings, state: AppState) -> Result<Api, NodeError> {
        let (bind, port) = (settings.server.bind, settings.server.port);
        let listen_error = |source| NodeError::Listen { bind, port, source };
        let listener = tokio::net::TcpListener::bind((bind, port))
            .await
            .map_err(listen_error)?;
        let local = listener.local_addr().map_err(listen_error)?;
        info!(address = %local, "API listening");
        Ok(Api {
            listener,
            local,
            state,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `shutdown` is cancelled, then finishes the requests in
    /// flight; cancels `shutdown` itself if serving fails, so the rest of
    /// the node stops too.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), NodeError> {
        let served = dts_api::serve(
            self.listener,
            self.state,
            shutdown.clone().cancelled_owned(),
        )
        .await
        .map_err(NodeError::Serve);
        shutdown.cancel();
        served
    }
}
