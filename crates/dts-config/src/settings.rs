//! The typed settings every role of dts reads, one struct per section of the
//! key table, plus the per-key sources the loader recorded.
//!
//! Durations are [`Duration`]s (the keys spell their unit: `-ms`, `-secs`);
//! sizes are bytes. Built only by [`crate::load`] (or `Settings::default()`,
//! which is the same with no file, environment or flags).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::source::Source;

/// What `describe()` and `Debug` show instead of a secret.
pub(crate) const MASK: &str = "********";

/// The whole configuration, after layering, typing and cross-key checks.
///
/// Equality compares the recorded sources too, not only the values.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `server.*`: the HTTP API.
    pub server: ServerSettings,
    /// `pubsub.*`: Kafka topics, groups and limits.
    pub pubsub: PubsubSettings,
    /// `spring.redis.*`, `redis.*`: the Redis store.
    pub redis: RedisSettings,
    /// `store.*`: the embedded store.
    pub store: StoreSettings,
    /// `scheduler.*`: how tasks are split.
    pub scheduler: SchedulerSettings,
    /// `worker.*`: the worker role.
    pub worker: WorkerSettings,
    /// `executor.*`: how scripts run.
    pub executor: ExecutorSettings,
    /// `limits.*`: input limits the API enforces.
    pub limits: LimitsSettings,
    /// Things worth telling the user that did not stop loading (unknown keys
    /// in the file, ignored variables). The binary logs them.
    pub warnings: Vec<String>,
    /// Each key's shown value and source, in key-table order.
    pub(crate) entries: Vec<Entry>,
}

/// One row of `describe()`, recorded while loading.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    /// Already masked when the key is secret.
    pub value: String,
    pub from: Source,
}

impl Settings {
    /// Where the value of `key` came from, e.g. `server.port` or
    /// `pubsub.kafka.security.protocol`; `None` for keys dts does not know
    /// (and for the ignored `spring.cache.type`).
    pub fn source_of(&self, key: &str) -> Option<&Source> {
        self.entries
            .iter()
            .find(|entry| entry.key == key)
            .map(|entry| &entry.from)
    }

    /// Every setting as `(key, value, source)` for `dts config` and start-up
    /// logs: key-table order, then Kafka pass-through keys; secrets masked;
    /// unset optional values are empty. Shows the values as loaded.
    pub fn describe(&self) -> Vec<(String, String, String)> {
        self.entries
            .iter()
            .map(|entry| {
                (
                    entry.key.clone(),
                    entry.value.clone(),
                    entry.from.to_string(),
                )
            })
            .collect()
    }
}

impl Default for Settings {
    /// The built-in defaults: what `load` returns with no file, no
    /// environment and no flags.
    fn default() -> Self {
        crate::load(None, &HashMap::new(), &[]).expect("the built-in defaults are valid")
    }
}

/// `server.*`: the HTTP API.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// `server.port`; 0 asks the OS for a free port.
    pub port: u16,
    /// `server.bind`.
    pub bind: IpAddr,
    /// The bearer token required on the API: `server.auth-token`, or the
    /// contents of `server.auth-token-file`; at least
    /// [`crate::keys::MIN_TOKEN_BYTES`]. Masked in `Debug` so it never
    /// reaches a log by accident.
    pub auth_token: Option<String>,
    /// `server.auth-token-file`: where the token was read from, if it was.
    pub auth_token_file: Option<PathBuf>,
    /// `server.insecure`: allow a non-loopback bind without a token.
    pub insecure: bool,
    /// `server.allowed-origins`: pages of these origins may call the API.
    pub allowed_origins: Vec<String>,
    /// `server.allowed-hosts`: Host names served besides the bound address.
    pub allowed_hosts: Vec<String>,
    /// `server.header-read-timeout-ms`.
    pub header_read_timeout: Duration,
    /// `server.idle-timeout-ms`.
    pub idle_timeout: Duration,
    /// `server.body-timeout-ms`.
    pub body_timeout: Duration,
    /// `server.max-connections`.
    pub max_connections: usize,
}

impl ServerSettings {
    /// True when the API would be reachable from other machines with no
    /// token: the binary refuses that unless `insecure` is set, and warns if
    /// it is.
    pub fn exposed_without_token(&self) -> bool {
        !self.bind.is_loopback() && self.auth_token.is_none()
    }
}

impl fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSettings")
            .field("port", &self.port)
            .field("bind", &self.bind)
            .field("auth_token", &self.auth_token.as_ref().map(|_| MASK))
            .field("auth_token_file", &self.auth_token_file)
            .field("insecure", &self.insecure)
            .field("allowed_origins", &self.allowed_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// `pubsub.*`: Kafka.
#[derive(Clone, PartialEq, Eq)]
pub struct PubsubSettings {
    /// `pubsub.namespace`: Kafka bootstrap servers (the seed's name).
    pub namespace: String,
    /// `pubsub.topic`: submitted tasks.
    pub topic: String,
    /// `pubsub.task-shard.topic`: shards for workers.
    pub task_shard_topic: String,
    /// `pubsub.result.topic`: completion events.
    pub result_topic: String,
    /// `pubsub.consumergroup`: the schedulers' group.
    pub consumer_group: String,
    /// `pubsub.consumercount`: consumers per scheduler, at least 1.
    pub consumer_count: u32,
    /// `pubsub.worker-group`: the workers' group.
    pub worker_group: String,
    /// `pubsub.partitions`: partitions of topics created at start-up.
    pub partitions: u32,
    /// `pubsub.max-message-bytes`.
    pub max_message_bytes: usize,
    /// `pubsub.submit-attempts`, at least 1.
    pub submit_attempts: u32,
    /// `pubsub.submit-timeout-ms`: how long a submit request may wait for
    /// publishing before answering.
    pub submit_timeout: Duration,
    /// `pubsub.kafka.*` with the prefix removed, passed to librdkafka as is
    /// (`pubsub.kafka.security.protocol=SSL` → `security.protocol`). Only a
    /// file or flags can set these. Secret-looking ones are masked in `Debug`.
    pub kafka: BTreeMap<String, String>,
}

impl fmt::Debug for PubsubSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kafka: BTreeMap<&str, &str> = self
            .kafka
            .iter()
            .map(|(key, value)| {
                let shown = if is_secret_kafka_key(key) {
                    MASK
                } else {
                    value.as_str()
                };
                (key.as_str(), shown)
            })
            .collect();
        f.debug_struct("PubsubSettings")
            .field("namespace", &self.namespace)
            .field("topic", &self.topic)
            .field("task_shard_topic", &self.task_shard_topic)
            .field("result_topic", &self.result_topic)
            .field("consumer_group", &self.consumer_group)
            .field("consumer_count", &self.consumer_count)
            .field("worker_group", &self.worker_group)
            .field("partitions", &self.partitions)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("submit_attempts", &self.submit_attempts)
            .field("submit_timeout", &self.submit_timeout)
            .field("kafka", &kafka)
            .finish()
    }
}

/// Whether a librdkafka property holds a secret (`sasl.password`,
/// `ssl.key.password`, `sasl.oauthbearer.client.secret`, `ssl.key.pem`, ...)
/// and must not be shown.
pub(crate) fn is_secret_kafka_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "jaas",
        "key.pem",
        "credential",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// `spring.redis.*` and `redis.*`: the Redis store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `spring.redis.host`.
    pub host: String,
    /// `spring.redis.port`.
    pub port: u16,
    /// `redis.key-prefix`: every key dts writes starts with this.
    pub key_prefix: String,
    /// `redis.retention-secs`: how long finished tasks are kept.
    pub retention: Duration,
    /// `spring.redis.sentinel.*`: find the primary through Sentinel; `None`
    /// when `spring.redis.sentinel.master` is not set.
    pub sentinel: Option<SentinelSettings>,
}

/// `spring.redis.sentinel.*`: Redis Sentinel, checked at load (a master name
/// needs nodes, every node needs a port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSettings {
    /// `spring.redis.sentinel.master`: the master name the sentinels monitor.
    pub master: String,
    /// `spring.redis.sentinel.nodes`: each sentinel's host and port, in order.
    pub nodes: Vec<(String, u16)>,
    /// `spring.redis.sentinel.wait-replicas`.
    pub wait_replicas: u32,
    /// `spring.redis.sentinel.wait-timeout-ms`.
    pub wait_timeout: Duration,
}

/// `store.*`: the embedded store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `store.data-dir`.
    pub data_dir: PathBuf,
    /// `store.ephemeral`: memory only, nothing survives a restart.
    pub ephemeral: bool,
}

/// `scheduler.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSettings {
    /// `scheduler.oversplit`: shards per available worker core, at least 1.
    pub oversplit: u32,
    /// `scheduler.speculation-factor`: a shard straggles past this many
    /// times the median item time per item; 0 turns speculation off.
    pub speculation_factor: u32,
    /// `scheduler.speculation-min-ms`: no shard straggles sooner.
    pub speculation_min: Duration,
    /// `scheduler.sweep-interval-ms`.
    pub sweep_interval: Duration,
    /// `scheduler.republish-after-ms`.
    pub republish_after: Duration,
    /// `scheduler.schedule-missed-after-ms`.
    pub schedule_missed_after: Duration,
}

/// `worker.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// `worker.cores`: items run at once; 0 means all cores (see
    /// [`WorkerSettings::effective_cores`]).
    pub cores: u32,
    /// `worker.id`; `None` means the worker generates one.
    pub id: Option<String>,
    /// `worker.labels` merged with `--label`: name to value, each checked
    /// (see [`crate::labels`]).
    pub labels: BTreeMap<String, String>,
    /// `worker.heartbeat-interval-ms`.
    pub heartbeat_interval: Duration,
    /// `worker.heartbeat-ttl-ms`; always longer than the interval.
    pub heartbeat_ttl: Duration,
    /// `worker.shard-attempts`: deaths an item may cause before it is
    /// failed instead of run again.
    pub shard_attempts: u32,
    /// `worker.drain-grace-ms`.
    pub drain_grace: Duration,
    /// `worker.metrics-port`: where a `dts worker` serves `/metrics`; 0
    /// for nowhere.
    pub metrics_port: u16,
    /// `worker.metrics-bind`.
    pub metrics_bind: IpAddr,
}

impl WorkerSettings {
    /// The number of items to run at once: `cores`, or when that is 0 the
    /// machine's available parallelism (1 if that cannot be determined).
    pub fn effective_cores(&self) -> usize {
        if self.cores > 0 {
            usize::try_from(self.cores).unwrap_or(usize::MAX)
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// `executor.*`: how scripts run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorSettings {
    /// `executor.output-cap-bytes`: output kept per item and stream.
    pub output_cap_bytes: usize,
    /// `executor.live-log-bytes`: the live tail kept per running item.
    pub live_log_bytes: usize,
    /// `executor.kill-grace-ms`: SIGTERM to SIGKILL.
    pub kill_grace: Duration,
    /// `executor.env-allow`: variables passed from the worker to scripts.
    pub env_allow: Vec<String>,
    /// `executor.workdir`; `None` means a fresh private directory per item
    /// in the service modes, the caller's directory for `dts run`.
    pub workdir: Option<PathBuf>,
    /// `executor.run-as`: the user the service modes' items run as; `None`
    /// is `nobody` when dts runs as root and dts's own user otherwise.
    pub run_as: Option<String>,
    /// `executor.containment`.
    pub containment: Containment,
    /// `executor.scratch-root`: where private directories are made; `None`
    /// is the system's temporary directory.
    pub scratch_root: Option<PathBuf>,
    /// `executor.default-timeout-secs`; never above `max_timeout`.
    pub default_timeout: Duration,
    /// `executor.max-timeout-secs`.
    pub max_timeout: Duration,
    /// `executor.max-retries`.
    pub max_retries: u32,
    /// `executor.warm-shell`: items of bash scripts in warm shells.
    pub warm_shell: bool,
}

/// `executor.containment`: how an item's processes are all killed with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containment {
    /// A cgroup per item where cgroups are writable, the subreaper otherwise.
    Auto,
    /// A cgroup per item, or dts does not start.
    Cgroup,
    /// The subreaper, even where cgroups are writable.
    Subreaper,
}

impl std::str::FromStr for Containment {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "auto" => Ok(Containment::Auto),
            "cgroup" => Ok(Containment::Cgroup),
            "subreaper" => Ok(Containment::Subreaper),
            _ => Err(()),
        }
    }
}

/// `limits.*`: what the API accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsSettings {
    /// `limits.max-body-bytes`.
    pub max_body_bytes: usize,
    /// `limits.max-items`: items per task.
    pub max_items: usize,
    /// `limits.max-item-bytes`.
    pub max_item_bytes: usize,
    /// `limits.max-template-bytes`.
    pub max_template_bytes: usize,
    /// `limits.max-variables-bytes`.
    pub max_variables_bytes: usize,
    /// `limits.max-memory-mb`.
    pub max_memory_mb: u64,
    /// `limits.max-cpus`.
    pub max_cpus: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_auth_token_or_kafka_passwords() {
        let mut settings = Settings::default();
        settings.server.auth_token = Some("hunter2".to_string());
        settings
            .pubsub
            .kafka
            .insert("sasl.password".to_string(), "swordfish".to_string());
        settings
            .pubsub
            .kafka
            .insert("security.protocol".to_string(), "SASL_SSL".to_string());
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("swordfish"), "{debug}");
        assert!(debug.contains("SASL_SSL"), "{debug}");
    }

    #[test]
    fn zero_cores_means_every_core_and_anything_else_is_taken_as_is() {
        let mut worker = Settings::default().worker;
        assert_eq!(worker.cores, 0);
        assert!(worker.effective_cores() >= 1);
        worker.cores = 3;
        assert_eq!(worker.effective_cores(), 3);
    }

    #[test]
    fn a_public_bind_without_a_token_counts_as_exposed() {
        let mut server = Settings::default().server;
        assert!(!server.exposed_without_token());
        server.bind = "0.0.0.0".parse().expect("address");
        assert!(server.exposed_without_token());
        server.auth_token = Some("t".repeat(16));
        assert!(!server.exposed_without_token());
    }
}
