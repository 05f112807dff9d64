//! [`NodeError`]: why a node could not start or stopped with an error.
//!
//! Each variant says which part failed and, where a person has to act, the
//! configuration key to look at; the underlying error is kept as the
//! source, so the CLI prints the whole chain.

use dts_bus::BusError;
use dts_config::ConfigError;
use dts_engine::EngineError;
use dts_executor::SetupError;
use dts_store::StoreError;
use std::net::IpAddr;
use std::path::PathBuf;

/// Why a node could not start, or failed while running.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration does not load; the source names the key.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),

    /// The API would be open to the network with no token.
    #[error(
        "refusing to listen on {bind} without an auth token: anyone who can reach it could run code here. \
         Set DTS_AUTH_TOKEN (server.auth-token), bind to 127.0.0.1, or pass --insecure"
    )]
    ExposedWithoutToken {
        /// The non-loopback address of `server.bind`.
        bind: IpAddr,
    },

    /// Redis cannot be reached or used.
    #[error("cannot use Redis at {url} ({keys})")]
    Redis {
        /// The URL built from the configuration, or the master name and
        /// sentinels.
        url: String,
        /// The keys that say where Redis is.
        keys: &'static str,
        /// What the store said.
        #[source]
        source: StoreError,
    },

    /// Kafka cannot be reached, or its topics cannot be created.
    #[error("cannot use Kafka at {bootstrap} (pubsub.namespace)")]
    Kafka {
        /// The bootstrap servers, as configured.
        bootstrap: String,
        /// What the bus said.
        #[source]
        source: BusError,
    },

    /// The data directory, its lock or one of its files cannot be set up.
    #[error("cannot {action} {}", path.display())]
    DataDir {
        /// What was being done, e.g. "create the data directory".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// Another process holds the data directory's lock.
    #[error(
        "another dts is already using the data directory {} (stop it, or pass --data-dir)",
        dir.display()
    )]
    DataDirInUse {
        /// The data directory (`store.data-dir`).
        dir: PathBuf,
    },

    /// The SQLite store cannot be opened or prepared.
    #[error("cannot open the store {}", path.display())]
    OpenStore {
        /// The database file, or `:memory:`.
        path: PathBuf,
        /// What the store said.
        #[source]
        source: StoreError,
    },

    /// The executor cannot be set up as configured (`executor.*`).
    #[error("cannot set up how items run (executor.*)")]
    Executor(#[from] SetupError),

    /// The worker's own thread or runtime cannot be started.
    #[error("cannot start the worker's {what}")]
    WorkerThread {
        /// "thread" or "runtime".
        what: &'static str,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The worker's thread ended before the worker had started.
    #[error("the worker's thread ended before starting")]
    WorkerThreadEnded,

    /// A part of the engine could not start (its first subscription,
    /// heartbeat or store read).
    #[error("cannot start the {part}")]
    Start {
        /// "worker", "scheduler", "completion log" or "recovery".
        part: &'static str,
        /// What the engine said.
        #[source]
        source: EngineError,
    },

    /// The task that starts `dts server`'s scheduler panicked.
    #[error("the scheduler's start-up task failed")]
    SchedulerTask(#[source] tokio::task::JoinError),

    /// The API cannot listen on its address.
    #[error("cannot listen on {bind}:{port}")]
    Listen {
        /// `server.bind`.
        bind: IpAddr,
        /// `server.port`.
        port: u16,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// A worker's metrics port cannot listen on its address.
    #[error("cannot serve metrics on {bind}:{port} (worker.metrics-bind, worker.metrics-port)")]
    MetricsListen {
        /// `worker.metrics-bind`.
        bind: IpAddr,
        /// `worker.metrics-port`.
        port: u16,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The HTTP server failed while serving.
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}
