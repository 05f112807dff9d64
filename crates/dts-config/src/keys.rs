//! The one list of configuration keys.
//!
//! Every key dts understands is declared here exactly once, with its type,
//! default, environment variable and a sentence of documentation. The loader
//! (which keys exist, their defaults, their environment names),
//! [`crate::Settings::describe`] and the test that keeps
//! `docs/configuration.md` in sync all read this table, so adding a key is one
//! line here plus one line in the settings struct that holds it.

/// The shape of a key's value: decides how text is parsed and what a parse
/// error says was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A TCP port, 0 to 65535.
    Port,
    /// A whole number that fits in `u32`.
    U32,
    /// A whole number that fits in `u64`.
    U64,
    /// A whole number that fits in `usize` (sizes in bytes, counts of items).
    Usize,
    /// `true/false/yes/no/1/0`, case-insensitive.
    Bool,
    /// An IPv4 or IPv6 address (`localhost` is read as `127.0.0.1`).
    IpAddr,
    /// A string that must not be empty.
    Text,
    /// A string; empty means "not set".
    OptionalText,
    /// A filesystem path that must not be empty.
    Path,
    /// A filesystem path; empty means "not set".
    OptionalPath,
    /// A comma-separated list of names (an array of strings in TOML).
    List,
    /// `name=value` labels, comma-separated (an array of `name=value`
    /// strings or a table in TOML). Unlike every other kind, each layer adds
    /// to the labels below it instead of replacing them (see
    /// [`crate::labels`]).
    Labels,
    /// One of a few words.
    Choice(&'static [&'static str]),
    /// Accepted so old files load, but not used.
    Ignored,
}

impl Kind {
    /// What a value of this kind must look like, for the end of an error
    /// message ("expected ...").
    pub(crate) fn expected(self, min: u64, max: u64) -> String {
        let top = |type_max: u64| type_max.min(max);
        match self {
            Kind::Port => format!("a port number from {min} to {}", top(u16::MAX.into())),
            Kind::U32 => format!("a whole number from {min} to {}", top(u32::MAX.into())),
            Kind::U64 => format!("a whole number from {min} to {}", top(u64::MAX)),
            Kind::Usize => format!("a whole number from {min} to {}", top(usize::MAX as u64)),
            Kind::Bool => "true or false (or yes/no, 1/0)".to_string(),
            Kind::IpAddr => "an IP address such as 127.0.0.1, 0.0.0.0 or ::1".to_string(),
            Kind::Text => "a non-empty string".to_string(),
            Kind::Choice(words) => format!("one of {}", words.join(", ")),
            Kind::Path => "a non-empty path".to_string(),
            Kind::OptionalText | Kind::OptionalPath | Kind::Ignored => "a string".to_string(),
            Kind::List => "a comma-separated list of names (no `=`, no spaces)".to_string(),
            Kind::Labels => "comma-separated name=value labels".to_string(),
        }
    }
}

/// One configuration key: everything the loader and the docs need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// The key as written in a properties file, e.g. `server.port`.
    pub key: &'static str,
    /// How the value is parsed.
    pub kind: Kind,
    /// The built-in value, as text in properties syntax; `""` for optional
    /// keys means "not set".
    pub default: &'static str,
    /// Smallest accepted value for numeric keys (0 for no lower bound).
    pub min: u64,
    /// Largest accepted value for numeric keys (`u64::MAX` for no bound
    /// beyond the type's).
    pub max: u64,
    /// Whether the value must never be shown (masked by `describe()`).
    pub secret: bool,
    /// A second, shorter environment variable name; the regular one wins when
    /// both are set.
    pub env_alias: Option<&'static str>,
    /// What the key means, for the docs table.
    pub doc: &'static str,
}

impl KeySpec {
    const fn new(key: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> Self {
        KeySpec {
            key,
            kind,
            default,
            min: 0,
            max: u64::MAX,
            secret: false,
            env_alias: None,
            doc,
        }
    }

    const fn min(mut self, min: u64) -> Self {
        self.min = min;
        self
    }

    const fn max(mut self, max: u64) -> Self {
        self.max = max;
        self
    }

    const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    const fn alias(mut self, env: &'static str) -> Self {
        self.env_alias = Some(env);
        self
    }

    /// The environment variable that sets this key (see [`env_var_name`]).
    pub fn env_var(&self) -> String {
        env_var_name(self.key)
    }
}

/// The largest item or script dts accepts: each is passed to a process as one
/// argument (and an item also as `DTS_ITEM=...`), and Linux refuses a single
/// argument or environment string of 128 KiB or more.
pub const MAX_PROCESS_ARGUMENT_BYTES: u64 = 131_000;

/// The values of `executor.containment`.
pub const CONTAINMENTS: &[&str] = &["auto", "cgroup", "subreaper"];

/// Keys under this prefix are handed to librdkafka unchanged (prefix removed).
pub const KAFKA_PREFIX: &str = "pubsub.kafka.";

/// Prefix of every environment variable dts reads.
pub const ENV_PREFIX: &str = "DTS_";

/// The environment variable for a key: `DTS_` + the key upper-cased, with `.`
/// and `-` turned into `_` (`pubsub.task-shard.topic` →
/// `DTS_PUBSUB_TASK_SHARD_TOPIC`).
pub fn env_var_name(key: &str) -> String {
    let mut name = String::with_capacity(ENV_PREFIX.len() + key.len());
    name.push_str(ENV_PREFIX);
    for c in key.chars() {
        match c {
            '.' | '-' => name.push('_'),
            c => name.push(c.to_ascii_uppercase()),
        }
    }
    name
}

use Kind::*;

/// Every key, grouped by section in the order the docs list them.
pub const KEYS: &[KeySpec] = &[
    // server
    KeySpec::new("server.port", Port, "30000", "HTTP port of the API; 0 picks a free one."),
    KeySpec::new("server.bind", IpAddr, "127.0.0.1", "Address the API listens on."),
    KeySpec::new(
        "server.auth-token",
        OptionalText,
        "",
        "Bearer token the API requires, at least 16 bytes; needed for a non-loopback bind unless `server.insecure` is set. Prefer `server.auth-token-file` or the environment: a flag shows in `ps`.",
    )
    .secret()
    .alias("DTS_AUTH_TOKEN"),
    KeySpec::new(
        "server.auth-token-file",
        OptionalPath,
        "",
        "File holding the bearer token (one trailing newline is dropped), so it never shows in `ps`; instead of `server.auth-token`.",
    ),
    KeySpec::new(
        "server.insecure",
        Bool,
        "false",
        "Allow a non-loopback bind without a token (logged loudly).",
    ),
    KeySpec::new(
        "server.allowed-origins",
        List,
        "",
        "Origins (`https://dash.example.com`) whose pages may call the API besides the server's own; a request with any other `Origin` is refused with 403.",
    ),
    KeySpec::new(
        "server.allowed-hosts",
        List,
        "",
        "Host names the API answers to besides its own address (`name` for any port, `name:port` for one); `*` accepts any and needs a token. Any other `Host` is refused with 421.",
    ),
    KeySpec::new(
        "server.header-read-timeout-ms",
        U64,
        "10000",
        "How long a client may take to send a whole request head once it has begun, in milliseconds; then the connection is closed.",
    )
    .min(1),
    KeySpec::new(
        "server.idle-timeout-ms",
        U64,
        "60000",
        "How long a connection may stay open with no request in flight, in milliseconds; an event stream in progress is never idle.",
    )
    .min(1),
    KeySpec::new(
        "server.body-timeout-ms",
        U64,
        "30000",
        "How long the server waits for more of a request body that stopped arriving, in milliseconds; then the request fails.",
    )
    .min(1),
    KeySpec::new(
        "server.max-connections",
        Usize,
        "512",
        "Connections the API holds open at once; more are answered 503 and closed. Keep it below the process's open-file limit.",
    )
    .min(1),
    // pubsub
    KeySpec::new("pubsub.namespace", Text, "localhost:9092", "Kafka bootstrap servers (distributed mode)."),
    KeySpec::new("pubsub.topic", Text, "distributed_task", "Topic submitted tasks are published to."),
    KeySpec::new(
        "pubsub.task-shard.topic",
        Text,
        "distributed_task_shard",
        "Topic the scheduler wakes workers on when a task is planned (workers claim its shards from the store).",
    ),
    KeySpec::new(
        "pubsub.result.topic",
        Text,
        "distributed_task_completed",
        "Topic completion events are published to when a task ends, at least once each (see [Completion events](#completion-events)).",
    ),
    KeySpec::new(
        "pubsub.consumergroup",
        Text,
        "task-subscribers",
        "Consumer group of the schedulers reading submitted tasks.",
    ),
    KeySpec::new(
        "pubsub.consumercount",
        U32,
        "2",
        "Consumers each scheduler runs on the task topic.",
    )
    .min(1),
    KeySpec::new(
        "pubsub.worker-group",
        Text,
        "task-workers",
        "Accepted for compatibility and unused: workers no longer read shards from a consumer group (each listens for wakes on its own).",
    ),
    KeySpec::new(
        "pubsub.partitions",
        U32,
        "6",
        "Partitions of the topics dts creates at start-up.",
    )
    .min(1),
    KeySpec::new(
        "pubsub.max-message-bytes",
        Usize,
        "1000000",
        "Largest message dts publishes, in bytes; must match the broker's limit.",
    )
    .min(1),
    KeySpec::new(
        "pubsub.submit-attempts",
        U32,
        "10",
        "Attempts to publish a submitted task before giving up.",
    )
    .min(1),
    KeySpec::new(
        "pubsub.submit-timeout-ms",
        U64,
        "5000",
        "How long a submit request may wait for publishing before answering, in milliseconds.",
    ),
    // redis
    KeySpec::new("spring.redis.host", Text, "localhost", "Redis host."),
    KeySpec::new("spring.redis.port", Port, "6379", "Redis port.").min(1),
    KeySpec::new(
        "spring.redis.sentinel.master",
        OptionalText,
        "",
        "Redis Sentinel master name; when set, dts asks the sentinels for the primary and follows failovers (spring.redis.host and port are then unused).",
    ),
    KeySpec::new(
        "spring.redis.sentinel.nodes",
        List,
        "",
        "The sentinels, as comma-separated host:port entries; needed with spring.redis.sentinel.master.",
    ),
    KeySpec::new(
        "spring.redis.sentinel.wait-replicas",
        U32,
        "1",
        "With Sentinel: replicas that must confirm a submit or a cancel (Redis WAIT) before dts answers; 0 does not wait.",
    ),
    KeySpec::new(
        "spring.redis.sentinel.wait-timeout-ms",
        U64,
        "500",
        "With Sentinel: the longest wait for those replicas, in milliseconds; a submit or a cancel then keeps checking for up to 10 s that the primary the sentinels name holds it, writing it again if not and waiting again, then is refused with 503 (docs: Redis Sentinel).",
    )
    .min(1),
    KeySpec::new("spring.cache.type", Ignored, "redis", "Accepted for compatibility with the seed's file; ignored."),
    KeySpec::new("redis.key-prefix", Text, "dts", "Prefix of every Redis key dts writes."),
    KeySpec::new(
        "redis.retention-secs",
        U64,
        "604800",
        "How long finished tasks are kept in Redis, in seconds.",
    )
    .min(1),
    // store
    KeySpec::new("store.data-dir", Path, "./dts-data", "Directory of the embedded (SQLite) store."),
    KeySpec::new(
        "store.ephemeral",
        Bool,
        "false",
        "Keep the embedded store in memory only; nothing survives a restart.",
    ),
    // scheduler
    KeySpec::new(
        "scheduler.oversplit",
        U32,
        "2",
        "Shards per live worker core in the first round of a guided plan: each shard takes the items left ÷ (oversplit × live cores, at least 8), so shards shrink to single items.",
    )
    .min(1),
    KeySpec::new(
        "scheduler.speculation-factor",
        U32,
        "3",
        "Straggler speculation: once every remaining item of a task is running, an idle worker slot runs a copy of a shard that has run longer than this many times the task's median item time (as that worker saw it), per item; the first copy to finish counts. 0 turns it off; a task turns it off with \"speculation\": false. Read by workers.",
    ),
    KeySpec::new(
        "scheduler.speculation-min-ms",
        U64,
        "1000",
        "Straggler speculation never copies a shard that has run less than this, in milliseconds, however quick the task's items. Read by workers.",
    ),
    KeySpec::new(
        "scheduler.sweep-interval-ms",
        U64,
        "30000",
        "How often each server looks for tasks whose publishing stopped (their server died), in milliseconds.",
    )
    .min(1),
    KeySpec::new(
        "scheduler.republish-after-ms",
        U64,
        "120000",
        "How long after creation a task still QUEUED or RETRYING is published again by another server, and a task still SUBMITTED (its plan or message lost) gets its message again (then after 2, 4 and at most 8 times this period), in milliseconds.",
    )
    .min(1),
    // worker
    KeySpec::new(
        "scheduler.schedule-missed-after-ms",
        U64,
        "60000",
        "How late a schedule's firing may be handled and still fire on time, in milliseconds. A firing later than this came due while no server ran: it is missed, and the schedule's catchUp decides whether its latest missed firing runs.",
    )
    .min(1),
    KeySpec::new(
        "worker.cores",
        U32,
        "0",
        "Items a worker runs at once (the cores it announces); 0 means every core of the machine.",
    ),
    KeySpec::new(
        "worker.id",
        OptionalText,
        "",
        "Name of this worker in heartbeats and results; not set lets the worker choose one.",
    ),
    KeySpec::new(
        "worker.labels",
        Labels,
        "",
        "Labels this worker announces, shown by `dts workers` and `GET /v1/workers`: `name=value` pairs, comma-separated (`gpu=a100,zone=eu`; an array or a table in TOML). Names are 1 to 63 of `A-Z a-z 0-9 _ . - /`; values up to 63 printable characters, no comma; at most 32 labels. The environment and flags add labels to the file's; a later layer's value wins for the same name.",
    ),
    KeySpec::new(
        "worker.heartbeat-interval-ms",
        U64,
        "2000",
        "How often a worker announces itself and renews the leases of the shards it runs, in milliseconds (leases at least three times per `worker.heartbeat-ttl-ms`, on their own task, apart from item work).",
    )
    .min(1),
    KeySpec::new(
        "worker.heartbeat-ttl-ms",
        U64,
        "10000",
        "How long after its last heartbeat a worker counts as gone, and its shards can be taken over by another worker, in milliseconds; must exceed the interval.",
    )
    .min(1),
    KeySpec::new(
        "worker.shard-attempts",
        U32,
        "3",
        "How many workers an item may kill (it was running when they died) before it is recorded as failed instead of run again.",
    )
    .min(1),
    KeySpec::new(
        "worker.drain-grace-ms",
        U64,
        "10000",
        "On shutdown, how long running items may finish before they are killed and their shards handed back, in milliseconds.",
    ),
    KeySpec::new(
        "worker.metrics-port",
        Port,
        "0",
        "Port on which a `dts worker` serves its Prometheus metrics at `/metrics` (docs/metrics.md); 0 serves none. `dts up` and `dts server` serve theirs on the API port.",
    ),
    KeySpec::new(
        "worker.metrics-bind",
        IpAddr,
        "127.0.0.1",
        "Address a `dts worker`'s metrics port listens on; `0.0.0.0` lets a Prometheus on another machine scrape it. With `server.auth-token` set, `/metrics` needs it there too.",
    ),
    // executor
    KeySpec::new(
        "executor.output-cap-bytes",
        Usize,
        "65536",
        "Output kept per item and stream, in bytes; the rest is counted (stdoutBytes, stderrBytes) and dropped. dts run sets no cap unless this is given.",
    ),
    KeySpec::new(
        "executor.live-log-bytes",
        Usize,
        "65536",
        "Live log kept per running item (stdout and stderr together), in bytes: the tail dts logs and GET /v1/tasks/{id}/items/{index}/log show while the item runs; 0 turns live logs off.",
    ),
    KeySpec::new(
        "executor.kill-grace-ms",
        U64,
        "1000",
        "Time between SIGTERM and SIGKILL when an item is stopped, in milliseconds.",
    ),
    KeySpec::new(
        "executor.env-allow",
        List,
        "PATH,HOME,LANG,LC_ALL,LC_CTYPE,TZ,TMPDIR,USER,LOGNAME",
        "Environment variables passed from the worker to scripts (comma-separated; an array in TOML).",
    ),
    KeySpec::new(
        "executor.warm-shell",
        Bool,
        "false",
        "Run bash scripts' items in subshells of a shell kept running per core instead of a fresh bash each: about twice the throughput for items of a millisecond or two, with the few differences docs/warm-shell.md lists.",
    ),
    KeySpec::new(
        "executor.workdir",
        OptionalPath,
        "",
        "Working directory of every item; not set gives each item of `dts up` and `dts worker` a fresh private directory (removed afterwards), and runs `dts run`'s items where it was started.",
    ),
    KeySpec::new(
        "executor.run-as",
        OptionalText,
        "",
        "User (name or uid) the items of `dts up` and `dts worker` run as; not set means `nobody` when dts runs as root, and dts's own user otherwise. Another user than dts's own needs root; `root` itself must be named here and is logged as a warning.",
    ),
    KeySpec::new(
        "executor.containment",
        Choice(CONTAINMENTS),
        "auto",
        "How every process an item starts is killed with it: `cgroup` (one cgroup per item, also enforcing `memoryMb` and `cpus`), `subreaper` (dts adopts and kills what items leave behind), or `auto` (a cgroup where cgroups are writable, the subreaper otherwise).",
    ),
    KeySpec::new(
        "executor.scratch-root",
        OptionalPath,
        "",
        "Directory in which items' private working directories are made; not set is the system's temporary directory.",
    ),
    KeySpec::new(
        "executor.default-timeout-secs",
        U64,
        "3600",
        "Timeout of an item when the task names none, in seconds.",
    )
    .min(1),
    KeySpec::new(
        "executor.max-timeout-secs",
        U64,
        "604800",
        "Largest timeout a task may ask for, in seconds.",
    )
    .min(1),
    KeySpec::new(
        "executor.max-retries",
        U32,
        "10",
        "Most retries per item a task may ask for.",
    ),
    // limits
    KeySpec::new(
        "limits.max-body-bytes",
        Usize,
        "33554432",
        "Largest API request body, in bytes.",
    )
    .min(1),
    KeySpec::new(
        "limits.max-items",
        Usize,
        "1000000",
        "Most items one task may have.",
    )
    .min(1),
    KeySpec::new(
        "limits.max-item-bytes",
        Usize,
        "65536",
        "Largest single item, in bytes once JSON-escaped, or of its base64 when it is not UTF-8 (an item is one process argument, which Linux caps at 128 KiB).",
    )
    .min(1)
    .max(MAX_PROCESS_ARGUMENT_BYTES),
    KeySpec::new(
        "limits.max-template-bytes",
        Usize,
        "65536",
        "Largest script template (and rendered script), in bytes once JSON-escaped (the script is one process argument, which Linux caps at 128 KiB).",
    )
    .min(1)
    .max(MAX_PROCESS_ARGUMENT_BYTES),
    KeySpec::new(
        "limits.max-variables-bytes",
        Usize,
        "65536",
        "Largest `variableJson` of a task, all variables together, in bytes once JSON-encoded (they are copied into every task read).",
    )
    .min(1),
    KeySpec::new(
        "limits.max-memory-mb",
        U64,
        "1048576",
        "Largest `memoryMb` (memory per item, in MiB) a task may ask for.",
    )
    .min(1),
    KeySpec::new(
        "limits.max-cpus",
        U32,
        "1024",
        "Largest `cpus` (CPUs per item) a task may ask for.",
    )
    .min(1)
    .max(MAX_CPUS),
];

/// The largest `limits.max-cpus`: tasks store CPUs as thousandths in a `u32`.
pub const MAX_CPUS: u64 = 4_000_000;

/// The shortest bearer token dts accepts, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The table entry for `key`, if dts knows it.
pub fn spec(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|spec| spec.key == key)
}

/// The closest known key to a misspelt one, if it is close enough to be a
/// plausible typo.
pub(crate) fn suggest(unknown: &str) -> Option<&'static str> {
    let budget = (unknown.chars().count() / 4).clamp(1, 3);
    KEYS.iter()
        .map(|spec| (edit_distance(unknown, spec.key), spec.key))
        .filter(|(distance, _)| *distance <= budget)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, key)| key)
}

/// Levenshtein distance over chars; keys are short so the quadratic cost is
/// irrelevant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            let insert = current[j] + 1;
            let delete = previous[j + 1] + 1;
            current.push(substitute.min(insert).min(delete));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The docs table row for one key: `| key | env | default | meaning |`.
///
/// The docs test requires each of these rows to appear verbatim in
/// `docs/configuration.md`, so this is also how that table is regenerated.
pub fn markdown_row(spec: &KeySpec) -> String {
    let mut env = format!("`{}`", spec.env_var());
    if let Some(alias) = spec.env_alias {
        env.push_str(&format!(" or `{alias}`"));
    }
    let default = if spec.default.is_empty() {
        "not set".to_string()
    } else {
        format!("`{}`", spec.default)
    };
    let mut meaning = spec.doc.to_string();
    if spec.min > 0 {
        meaning.push_str(&format!(" At least {}.", spec.min));
    }
    if spec.max < u64::MAX {
        meaning.push_str(&format!(" At most {}.", spec.max));
    }
    format!("| `{}` | {env} | {default} | {meaning} |", spec.key)
}

/// The whole key table of `docs/configuration.md`, header included.
pub fn markdown_table() -> String {
    let mut table = String::from("| key | env | default | meaning |\n|---|---|---|---|\n");
    for spec in KEYS {
        table.push_str(&markdown_row(spec));
        table.push('\n');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_upper_case_the_key_and_turn_dots_and_dashes_into_underscores() {
        assert_eq!(env_var_name("server.port"), "DTS_SERVER_PORT");
        assert_eq!(
            env_var_name("pubsub.task-shard.topic"),
            "DTS_PUBSUB_TASK_SHARD_TOPIC"
        );
        assert_eq!(env_var_name("spring.redis.host"), "DTS_SPRING_REDIS_HOST");
    }

    #[test]
    fn every_key_is_declared_once() {
        for (i, spec) in KEYS.iter().enumerate() {
            assert!(
                KEYS[i + 1..].iter().all(|other| other.key != spec.key),
                "{} is declared twice",
                spec.key
            );
        }
    }

    #[test]
    fn no_two_keys_share_an_environment_variable() {
        for (i, spec) in KEYS.iter().enumerate() {
            for other in &KEYS[i + 1..] {
                assert_ne!(
                    spec.env_var(),
                    other.env_var(),
                    "{} and {}",
                    spec.key,
                    other.key
                );
            }
        }
    }

    #[test]
    fn a_typo_suggests_the_closest_key_and_nonsense_suggests_nothing() {
        assert_eq!(suggest("serer.port"), Some("server.port"));
        assert_eq!(
            suggest("pubsub.consumer-count"),
            Some("pubsub.consumercount")
        );
        assert_eq!(suggest("completely.different"), None);
    }

    #[test]
    fn the_docs_list_every_key_with_its_env_var_and_default() {
        let docs = include_str!("../../../docs/configuration.md");
        let missing: Vec<String> = KEYS
            .iter()
            .map(markdown_row)
            .filter(|row| !docs.lines().any(|line| line.trim() == row))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md is out of date; these rows are missing or differ \
             (the whole table is keys::markdown_table()):\n{}",
            missing.join("\n")
        );
    }
}
