//! Turning the stacked raw layers into typed [`Settings`]: each key is parsed
//! as the type its field has, checked against the key table's minimum, and
//! recorded (value and source) for `describe()` and `source_of()`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::ConfigError;
use crate::keys::{self, KAFKA_PREFIX, Kind};
use crate::labels::{self, LabelProblem};
use crate::layers::{Layers, RawValue};
use crate::settings::{
    Entry, ExecutorSettings, LimitsSettings, MASK, PubsubSettings, RedisSettings,
    SchedulerSettings, ServerSettings, Settings, StoreSettings, WorkerSettings,
    is_secret_kafka_key,
};
use crate::source::Source;
use crate::value::ConfigValue;
use crate::{checks, token};

/// Build and check the settings from fully applied layers.
pub(crate) fn build(layers: Layers) -> Result<Settings, ConfigError> {
    let mut read = Reader {
        layers: &layers,
        entries: Vec::new(),
    };
    let mut server = ServerSettings {
        port: read.get("server.port")?,
        bind: read.get("server.bind")?,
        auth_token: read.get("server.auth-token")?,
        auth_token_file: read.get("server.auth-token-file")?,
        insecure: read.get("server.insecure")?,
        allowed_origins: read.get("server.allowed-origins")?,
        allowed_hosts: read.get("server.allowed-hosts")?,
        header_read_timeout: read.millis("server.header-read-timeout-ms")?,
        idle_timeout: read.millis("server.idle-timeout-ms")?,
        body_timeout: read.millis("server.body-timeout-ms")?,
        max_connections: read.get("server.max-connections")?,
    };
    let pubsub = PubsubSettings {
        namespace: read.get("pubsub.namespace")?,
        topic: read.get("pubsub.topic")?,
        task_shard_topic: read.get("pubsub.task-shard.topic")?,
        result_topic: read.get("pubsub.result.topic")?,
        consumer_group: read.get("pubsub.consumergroup")?,
        consumer_count: read.get("pubsub.consumercount")?,
        worker_group: read.get("pubsub.worker-group")?,
        partitions: read.get("pubsub.partitions")?,
        max_message_bytes: read.get("pubsub.max-message-bytes")?,
        submit_attempts: read.get("pubsub.submit-attempts")?,
        submit_timeout: read.millis("pubsub.submit-timeout-ms")?,
        kafka: read.kafka(),
    };
    let host = read.get("spring.redis.host")?;
    let port = read.get("spring.redis.port")?;
    // Read here to keep the keys table's order; checked once every key is.
    let sentinel_master: Option<String> = read.get("spring.redis.sentinel.master")?;
    let sentinel_nodes: Vec<String> = read.get("spring.redis.sentinel.nodes")?;
    let wait_replicas: u32 = read.get("spring.redis.sentinel.wait-replicas")?;
    let wait_timeout = read.millis("spring.redis.sentinel.wait-timeout-ms")?;
    let redis = RedisSettings {
        host,
        port,
        key_prefix: read.get("redis.key-prefix")?,
        retention: read.secs("redis.retention-secs")?,
        sentinel: None,
    };
    let store = StoreSettings {
        data_dir: read.get("store.data-dir")?,
        ephemeral: read.get("store.ephemeral")?,
    };
    let scheduler = SchedulerSettings {
        oversplit: read.get("scheduler.oversplit")?,
        speculation_factor: read.get("scheduler.speculation-factor")?,
        speculation_min: read.millis("scheduler.speculation-min-ms")?,
        sweep_interval: read.millis("scheduler.sweep-interval-ms")?,
        republish_after: read.millis("scheduler.republish-after-ms")?,
        schedule_missed_after: read.millis("scheduler.schedule-missed-after-ms")?,
    };
    let worker = WorkerSettings {
        cores: read.get("worker.cores")?,
        id: read.get("worker.id")?,
        labels: read.labels("worker.labels")?,
        heartbeat_interval: read.millis("worker.heartbeat-interval-ms")?,
        heartbeat_ttl: read.millis("worker.heartbeat-ttl-ms")?,
        shard_attempts: read.get("worker.shard-attempts")?,
        drain_grace: read.millis("worker.drain-grace-ms")?,
        metrics_port: read.get("worker.metrics-port")?,
        metrics_bind: read.get("worker.metrics-bind")?,
    };
    let executor = ExecutorSettings {
        output_cap_bytes: read.get("executor.output-cap-bytes")?,
        live_log_bytes: read.get("executor.live-log-bytes")?,
        kill_grace: read.millis("executor.kill-grace-ms")?,
        env_allow: read.get("executor.env-allow")?,
        // Read in the keys table's order, which `describe` keeps.
        warm_shell: read.get("executor.warm-shell")?,
        workdir: read.get("executor.workdir")?,
        run_as: read.get("executor.run-as")?,
        containment: read.get("executor.containment")?,
        scratch_root: read.get("executor.scratch-root")?,
        default_timeout: read.secs("executor.default-timeout-secs")?,
        max_timeout: read.secs("executor.max-timeout-secs")?,
        max_retries: read.get("executor.max-retries")?,
    };
    let limits = LimitsSettings {
        max_body_bytes: read.get("limits.max-body-bytes")?,
        max_items: read.get("limits.max-items")?,
        max_item_bytes: read.get("limits.max-item-bytes")?,
        max_template_bytes: read.get("limits.max-template-bytes")?,
        max_variables_bytes: read.get("limits.max-variables-bytes")?,
        max_memory_mb: read.get("limits.max-memory-mb")?,
        max_cpus: read.get("limits.max-cpus")?,
    };
    // Kafka entries go last in describe(), after every table key.
    read.record_kafka();
    let mut warnings = layers.warnings.clone();
    token::resolve(&mut server, &layers, &mut warnings)?;
    let entries = read.entries;
    let mut settings = Settings {
        server,
        pubsub,
        redis,
        store,
        scheduler,
        worker,
        executor,
        limits,
        warnings,
        entries,
    };
    settings.redis.sentinel = checks::sentinel(
        &settings,
        sentinel_master,
        &sentinel_nodes,
        wait_replicas,
        wait_timeout,
    )?;
    checks::check(&settings)?;
    Ok(settings)
}

/// Reads typed values out of the layers and remembers what it read.
struct Reader<'a> {
    layers: &'a Layers,
    entries: Vec<Entry>,
}

impl Reader<'_> {
    /// Parse `key` as `T`.
    ///
    /// # Panics
    /// If `key` is not in [`keys::KEYS`] or is declared with a different kind
    /// than `T`: both are mistakes in this crate, caught by its tests.
    fn get<T: ConfigValue>(&mut self, key: &'static str) -> Result<T, ConfigError> {
        let spec = keys::spec(key).unwrap_or_else(|| panic!("{key} is missing from keys::KEYS"));
        assert_eq!(
            spec.kind,
            T::KIND,
            "{key} is declared with another kind than it is read as"
        );
        let raw = self
            .layers
            .values
            .get(key)
            .unwrap_or_else(|| panic!("{key} has no default layer"));
        let parsed = T::from_raw(&raw.value).filter(|value| {
            value
                .number()
                .is_none_or(|number| (spec.min..=spec.max).contains(&number))
        });
        let Some(value) = parsed else {
            return Err(ConfigError::InvalidValue {
                key: key.to_string(),
                value: shown(spec.secret, raw_text(&raw.value)),
                from: raw.from.clone(),
                expected: spec.kind.expected(spec.min, spec.max),
            });
        };
        self.entries.push(Entry {
            key: key.to_string(),
            value: shown(spec.secret, value.render()),
            from: raw.from.clone(),
        });
        Ok(value)
    }

    /// Merge a labels key over every layer that set it: each layer adds its
    /// labels and overrides those of the same name below it. One layer
    /// giving a name two values is an error, as is a label past
    /// [`labels::MAX_LABELS`]; both name the label and where it came from.
    ///
    /// # Panics
    /// If `key` is not in [`keys::KEYS`] as a [`Kind::Labels`] key.
    fn labels(&mut self, key: &'static str) -> Result<BTreeMap<String, String>, ConfigError> {
        let spec = keys::spec(key).unwrap_or_else(|| panic!("{key} is missing from keys::KEYS"));
        assert_eq!(spec.kind, Kind::Labels, "{key} is not declared as labels");
        let stacked = self.layers.stacked.get(key).map_or(&[][..], Vec::as_slice);
        let mut merged = BTreeMap::new();
        // The labels of the layer being read, to catch a name given twice
        // in it (two `--label`s, two lines of one file).
        let mut layer = None;
        let mut in_layer: BTreeMap<String, String> = BTreeMap::new();
        for raw in stacked {
            let this_layer = std::mem::discriminant(&raw.from);
            if layer != Some(this_layer) {
                layer = Some(this_layer);
                in_layer.clear();
            }
            for text in label_texts(&raw.value) {
                let invalid = |problem| ConfigError::InvalidLabel {
                    key: key.to_string(),
                    label: text.to_string(),
                    from: raw.from.clone(),
                    problem,
                };
                let (name, value) = labels::parse_label(text).map_err(invalid)?;
                if let Some(first) = in_layer.get(&name).filter(|first| **first != value) {
                    return Err(invalid(LabelProblem::Conflict {
                        first: first.clone(),
                    }));
                }
                if merged.len() == labels::MAX_LABELS && !merged.contains_key(&name) {
                    return Err(invalid(LabelProblem::TooMany));
                }
                in_layer.insert(name.clone(), value.clone());
                merged.insert(name, value);
            }
        }
        let from = stacked
            .last()
            .map_or(Source::Default, |raw| raw.from.clone());
        self.entries.push(Entry {
            key: key.to_string(),
            value: labels::render(&merged),
            from,
        });
        Ok(merged)
    }

    fn millis(&mut self, key: &'static str) -> Result<Duration, ConfigError> {
        self.get(key).map(Duration::from_millis)
    }

    fn secs(&mut self, key: &'static str) -> Result<Duration, ConfigError> {
        self.get(key).map(Duration::from_secs)
    }

    /// The pass-through map handed to librdkafka. Values are trimmed like
    /// every other value; a TOML array is joined with commas, librdkafka's
    /// list syntax.
    fn kafka(&self) -> std::collections::BTreeMap<String, String> {
        self.layers
            .kafka
            .iter()
            .map(|(key, raw)| (key.clone(), kafka_text(&raw.value)))
            .collect()
    }

    fn record_kafka(&mut self) {
        for (key, raw) in &self.layers.kafka {
            self.entries.push(Entry {
                key: format!("{KAFKA_PREFIX}{key}"),
                value: shown(is_secret_kafka_key(key), kafka_text(&raw.value)),
                from: raw.from.clone(),
            });
        }
    }
}

fn kafka_text(value: &RawValue) -> String {
    match value {
        RawValue::Text(text) => text.trim().to_string(),
        RawValue::List(items) => items.join(","),
    }
}

/// The labels one raw value holds: comma-separated text, or a TOML list
/// (whose items may not hold commas either, so both read alike).
fn label_texts(value: &RawValue) -> Vec<&str> {
    let texts: Vec<&str> = match value {
        RawValue::Text(text) => text.split(',').collect(),
        RawValue::List(items) => items.iter().map(String::as_str).collect(),
    };
    texts
        .into_iter()
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .collect()
}

/// The raw value as an error message quotes it.
fn raw_text(value: &RawValue) -> String {
    match value {
        RawValue::Text(text) => text.trim().to_string(),
        list @ RawValue::List(_) => list.to_string(),
    }
}

/// Mask secrets, but keep "not set" visible as empty.
fn shown(secret: bool, value: String) -> String {
    if secret && !value.is_empty() {
        MASK.to_string()
    } else {
        value
    }
}
