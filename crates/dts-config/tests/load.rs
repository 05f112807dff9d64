//! End-to-end tests of `dts_config::load`: layering, sources in errors, the
//! seed's file, both file formats, pass-through keys, cross-key checks and
//! warnings. The environment is always a map; the process is never touched.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dts_config::labels::LabelProblem;
use dts_config::{ConfigError, KeySpec, Kind, Settings, Source, keys, load};
use dts_model::scheduling::LabelError;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn flags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// A config file in its own temporary directory (kept alive by the guard).
fn write_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config file");
    (dir, path)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load_err(
    file: Option<&Path>,
    env: &HashMap<String, String>,
    flags: &[(String, String)],
) -> ConfigError {
    match load(file, env, flags) {
        Ok(settings) => panic!("expected an error, got {settings:?}"),
        Err(error) => error,
    }
}

fn file_source(path: &Path, line: usize) -> Source {
    Source::File {
        path: path.to_path_buf(),
        line: Some(line),
    }
}

// ---- precedence -------------------------------------------------------------

#[test]
fn each_layer_overrides_the_one_below_defaults_then_file_then_env_then_flags() {
    let (_dir, path) = write_file(
        "dts.properties",
        "server.port=1111\npubsub.topic=from-file\nspring.redis.host=file-host\nworker.cores=3\n",
    );
    let env = env(&[
        ("DTS_SERVER_PORT", "2222"),
        ("DTS_PUBSUB_TOPIC", "from-env"),
        ("DTS_SPRING_REDIS_HOST", "env-host"),
    ]);
    let flags = flags(&[("server.port", "3333")]);

    let settings = load(Some(&path), &env, &flags).expect("loads");

    // flag > env > file
    assert_eq!(settings.server.port, 3333);
    assert_eq!(
        settings.source_of("server.port"),
        Some(&Source::Flag("server.port".into()))
    );
    // env > file
    assert_eq!(settings.pubsub.topic, "from-env");
    assert_eq!(
        settings.source_of("pubsub.topic"),
        Some(&Source::Env("DTS_PUBSUB_TOPIC".into()))
    );
    assert_eq!(settings.redis.host, "env-host");
    // file > default
    assert_eq!(settings.worker.cores, 3);
    assert_eq!(
        settings.source_of("worker.cores"),
        Some(&file_source(&path, 4))
    );
    // default
    assert_eq!(settings.pubsub.task_shard_topic, "distributed_task_shard");
    assert_eq!(
        settings.source_of("pubsub.task-shard.topic"),
        Some(&Source::Default)
    );
}

#[test]
fn with_nothing_given_every_key_has_its_documented_default() {
    let settings = load(None, &HashMap::new(), &[]).expect("defaults load");
    assert_eq!(settings, Settings::default());
    assert_eq!(settings.server.port, 30000);
    assert_eq!(settings.server.bind.to_string(), "127.0.0.1");
    assert_eq!(settings.server.auth_token, None);
    assert!(!settings.server.insecure);
    assert_eq!(settings.pubsub.namespace, "localhost:9092");
    assert_eq!(settings.pubsub.topic, "distributed_task");
    assert_eq!(settings.pubsub.result_topic, "distributed_task_completed");
    assert_eq!(settings.pubsub.consumer_group, "task-subscribers");
    assert_eq!(settings.pubsub.consumer_count, 2);
    assert_eq!(settings.pubsub.worker_group, "task-workers");
    assert_eq!(settings.pubsub.partitions, 6);
    assert_eq!(settings.pubsub.max_message_bytes, 1_000_000);
    assert_eq!(settings.pubsub.submit_attempts, 10);
    assert_eq!(settings.pubsub.submit_timeout, Duration::from_secs(5));
    assert!(settings.pubsub.kafka.is_empty());
    assert_eq!(settings.redis.port, 6379);
    assert_eq!(settings.redis.key_prefix, "dts");
    assert_eq!(settings.redis.retention, Duration::from_secs(604_800));
    assert_eq!(settings.store.data_dir, PathBuf::from("./dts-data"));
    assert!(!settings.store.ephemeral);
    assert_eq!(settings.scheduler.oversplit, 2);
    assert_eq!(settings.worker.id, None);
    assert_eq!(settings.worker.heartbeat_interval, Duration::from_secs(2));
    assert_eq!(settings.worker.heartbeat_ttl, Duration::from_secs(10));
    assert_eq!(settings.worker.shard_attempts, 3);
    assert_eq!(settings.executor.output_cap_bytes, 65536);
    assert_eq!(settings.executor.kill_grace, Duration::from_secs(1));
    assert_eq!(
        settings.executor.env_allow,
        [
            "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME"
        ]
    );
    assert_eq!(settings.executor.workdir, None);
    assert_eq!(settings.executor.default_timeout, Duration::from_secs(3600));
    assert_eq!(settings.executor.max_timeout, Duration::from_secs(604_800));
    assert_eq!(settings.executor.max_retries, 10);
    assert_eq!(settings.limits.max_body_bytes, 33_554_432);
    assert_eq!(settings.limits.max_items, 1_000_000);
    assert_eq!(settings.limits.max_item_bytes, 65536);
    assert_eq!(settings.limits.max_template_bytes, 65536);
    assert!(settings.warnings.is_empty());
}

#[test]
fn a_token_shorter_than_sixteen_bytes_is_refused_naming_its_key_and_source() {
    let error = load(None, &env(&[("DTS_AUTH_TOKEN", "fifteen-bytes-x")]), &[])
        .expect_err("a 15-byte token is refused");
    let message = error.to_string();
    assert!(message.contains("server.auth-token"), "{message}");
    assert!(
        message.contains("environment variable DTS_AUTH_TOKEN"),
        "{message}"
    );
    assert!(message.contains("at least 16 bytes"), "{message}");
    assert!(
        !message.contains("fifteen-bytes-x"),
        "the token leaked: {message}"
    );
    let sixteen = load(None, &env(&[("DTS_AUTH_TOKEN", "sixteen-bytes-xx")]), &[]);
    assert!(sixteen.is_ok_and(|s| s.warnings.is_empty()));
    let flagged = load(
        None,
        &HashMap::new(),
        &flags(&[("server.auth-token", "sixteen-bytes-xx")]),
    )
    .expect("loads");
    assert!(
        flagged.warnings.iter().any(|w| w.contains("ps")),
        "a token in a flag is visible in ps: {:?}",
        flagged.warnings
    );
}

#[test]
fn the_token_file_is_read_without_its_trailing_newline() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = write_file("token", "token-from-a-file-0123\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let path_text = path.display().to_string();
    let settings = load(
        None,
        &HashMap::new(),
        &flags(&[("server.auth-token-file", &path_text)]),
    )
    .expect("loads");
    assert_eq!(
        settings.server.auth_token.as_deref(),
        Some("token-from-a-file-0123")
    );
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    assert!(!format!("{settings:?}").contains("token-from-a-file"));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let shared = load(
        None,
        &HashMap::new(),
        &flags(&[("server.auth-token-file", &path_text)]),
    )
    .expect("loads, with a warning");
    assert!(
        shared.warnings.iter().any(|w| w.contains("chmod 600")),
        "{:?}",
        shared.warnings
    );
}

#[test]
fn a_missing_token_file_a_short_one_or_a_token_given_twice_is_refused() {
    let missing = load(
        None,
        &HashMap::new(),
        &flags(&[("server.auth-token-file", "/nonexistent/dts-token")]),
    )
    .expect_err("an unreadable token file is refused")
    .to_string();
    assert!(missing.contains("/nonexistent/dts-token"), "{missing}");
    assert!(missing.contains("server.auth-token-file"), "{missing}");

    let (_dir, path) = write_file("token", "short\n");
    let path_text = path.display().to_string();
    let short = load(
        None,
        &HashMap::new(),
        &flags(&[("server.auth-token-file", &path_text)]),
    )
    .expect_err("a short token from a file is refused")
    .to_string();
    assert!(short.contains("server.auth-token-file"), "{short}");
    assert!(short.contains("at least 16 bytes"), "{short}");

    let twice = load(
        None,
        &env(&[("DTS_AUTH_TOKEN", "sixteen-bytes-xx")]),
        &flags(&[("server.auth-token-file", &path_text)]),
    )
    .expect_err("a token given two ways is refused")
    .to_string();
    assert!(twice.contains("both set"), "{twice}");
}

#[test]
fn allowed_origins_and_hosts_must_look_like_origins_and_hosts() {
    for (key, bad) in [
        ("server.allowed-origins", "evil.example"),
        ("server.allowed-origins", "https://dash.example/path"),
        ("server.allowed-origins", "ftp://dash.example"),
        ("server.allowed-hosts", "http://dts.example"),
        ("server.allowed-hosts", "dts.example:http"),
    ] {
        let error = load(None, &HashMap::new(), &flags(&[(key, bad)]))
            .expect_err(bad)
            .to_string();
        assert!(error.contains(key) && error.contains(bad), "{error}");
    }
    let ok = load(
        None,
        &HashMap::new(),
        &flags(&[
            (
                "server.allowed-origins",
                "https://dash.example/,http://10.0.0.5:30000",
            ),
            (
                "server.allowed-hosts",
                "dts,dts.example:443,[::1]:8080,10.0.0.5",
            ),
        ]),
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn any_host_needs_a_token() {
    let error = load(
        None,
        &HashMap::new(),
        &flags(&[("server.allowed-hosts", "*")]),
    )
    .expect_err("* without a token is refused")
    .to_string();
    assert!(error.contains("server.allowed-hosts"), "{error}");
    assert!(error.contains("DNS rebinding"), "{error}");
    let settings = load(
        None,
        &env(&[("DTS_AUTH_TOKEN", "sixteen-bytes-xx")]),
        &flags(&[
            ("server.allowed-hosts", "*, dts.example:443"),
            ("server.allowed-origins", "https://dash.example"),
        ]),
    )
    .expect("loads with a token");
    assert_eq!(settings.server.allowed_hosts, ["*", "dts.example:443"]);
    assert_eq!(settings.server.allowed_origins, ["https://dash.example"]);
}

#[test]
fn the_explicit_auth_token_variable_wins_over_the_short_alias() {
    let alias_only = load(
        None,
        &env(&[("DTS_AUTH_TOKEN", "alias-token-0123456789")]),
        &[],
    )
    .expect("loads");
    assert_eq!(
        alias_only.server.auth_token.as_deref(),
        Some("alias-token-0123456789")
    );
    assert_eq!(
        alias_only.source_of("server.auth-token"),
        Some(&Source::Env("DTS_AUTH_TOKEN".into()))
    );

    let both = env(&[
        ("DTS_AUTH_TOKEN", "alias-token-0123456789"),
        ("DTS_SERVER_AUTH_TOKEN", "explicit-token-0123456789"),
    ]);
    let settings = load(None, &both, &[]).expect("loads");
    assert_eq!(
        settings.server.auth_token.as_deref(),
        Some("explicit-token-0123456789")
    );
    assert_eq!(
        settings.source_of("server.auth-token"),
        Some(&Source::Env("DTS_SERVER_AUTH_TOKEN".into()))
    );
}

#[test]
fn a_later_flag_for_the_same_key_wins_and_an_empty_value_unsets_an_optional_key() {
    let (_dir, path) = write_file("dts.properties", "worker.id=from-file\n");
    let flags = flags(&[
        ("server.port", "1"),
        ("server.port", "2"),
        ("worker.id", ""),
    ]);
    let settings = load(Some(&path), &HashMap::new(), &flags).expect("loads");
    assert_eq!(settings.server.port, 2);
    assert_eq!(settings.worker.id, None);
}

#[test]
fn environment_values_are_typed_like_file_values() {
    let env = env(&[
        ("DTS_SERVER_INSECURE", "YES"),
        ("DTS_STORE_EPHEMERAL", "1"),
        ("DTS_SERVER_BIND", "0.0.0.0"),
        ("DTS_EXECUTOR_ENV_ALLOW", "PATH, HOME"),
        ("DTS_EXECUTOR_WORKDIR", "/srv/work"),
        ("DTS_SERVER_PORT", "8080  "),
    ]);
    let settings = load(None, &env, &[]).expect("loads");
    assert!(settings.server.insecure);
    assert!(settings.store.ephemeral);
    assert!(settings.server.exposed_without_token());
    assert_eq!(settings.executor.env_allow, ["PATH", "HOME"]);
    assert_eq!(settings.executor.workdir, Some(PathBuf::from("/srv/work")));
    assert_eq!(settings.server.port, 8080);
}

// ---- sources in errors ----------------------------------------------------------

#[test]
fn a_bad_environment_value_names_the_key_value_variable_and_what_was_expected() {
    let error = load_err(None, &env(&[("DTS_SERVER_PORT", "abc")]), &[]);
    assert_eq!(
        error.to_string(),
        "invalid value \"abc\" for server.port (from environment variable DTS_SERVER_PORT): \
         expected a port number from 0 to 65535"
    );
    assert!(!error.is_retryable());
}

#[test]
fn a_bad_file_value_names_the_file_and_line() {
    let (_dir, path) = write_file(
        "dts.properties",
        "# comment\nserver.port=30000\nworker.cores = many\n",
    );
    let error = load_err(Some(&path), &HashMap::new(), &[]);
    assert_eq!(
        error.to_string(),
        format!(
            "invalid value \"many\" for worker.cores (from file {} line 3): expected a whole number from 0 to 4294967295",
            path.display()
        )
    );
}

#[test]
fn a_bad_flag_value_names_the_flag() {
    let error = load_err(
        None,
        &HashMap::new(),
        &flags(&[("server.insecure", "perhaps")]),
    );
    assert_eq!(
        error.to_string(),
        "invalid value \"perhaps\" for server.insecure (from command-line flag for server.insecure): \
         expected true or false (or yes/no, 1/0)"
    );
}

#[test]
fn a_count_below_its_minimum_is_rejected_with_the_allowed_range() {
    let error = load_err(None, &env(&[("DTS_PUBSUB_CONSUMERCOUNT", "0")]), &[]);
    assert!(
        error
            .to_string()
            .ends_with("(from environment variable DTS_PUBSUB_CONSUMERCOUNT): expected a whole number from 1 to 4294967295"),
        "{error}"
    );
    assert!(
        matches!(error, ConfigError::InvalidValue { ref key, .. } if key == "pubsub.consumercount")
    );
}

#[test]
fn an_empty_required_string_is_rejected() {
    let error = load_err(None, &env(&[("DTS_PUBSUB_TOPIC", "  ")]), &[]);
    assert!(
        matches!(error, ConfigError::InvalidValue { ref key, .. } if key == "pubsub.topic"),
        "{error:?}"
    );
    // What the operator reads says what a valid value is.
    assert!(
        error.to_string().contains("expected a non-empty string"),
        "{error}"
    );
}

#[test]
fn a_missing_file_is_an_error_naming_its_path() {
    let path = Path::new("/definitely/not/here/dts.properties");
    let error = load_err(Some(path), &HashMap::new(), &[]);
    assert!(matches!(error, ConfigError::ReadFile { .. }));
    assert!(
        error
            .to_string()
            .starts_with("cannot read config file /definitely/not/here/dts.properties: "),
        "{error}"
    );
}

#[test]
fn a_toml_syntax_error_names_the_file_and_line() {
    let (_dir, path) = write_file("dts.toml", "[server]\nport = = 1\n");
    let error = load_err(Some(&path), &HashMap::new(), &[]);
    assert!(
        error.to_string().starts_with(&format!(
            "syntax error in config file {} line 2: ",
            path.display()
        )),
        "{error}"
    );
}

// ---- the seed's file ----------------------------------------------------------

#[test]
fn the_seeds_application_properties_loads_unchanged_with_no_warnings() {
    let path = fixture("application.properties");
    let settings = load(Some(&path), &HashMap::new(), &[]).expect("the seed's file loads");
    assert_eq!(settings.server.port, 30000);
    assert_eq!(
        settings.source_of("server.port"),
        Some(&file_source(&path, 1))
    );
    assert_eq!(settings.pubsub.namespace, "localhost:9092");
    assert_eq!(settings.pubsub.topic, "distributed_task");
    assert_eq!(settings.pubsub.task_shard_topic, "distributed_task_shard");
    assert_eq!(settings.pubsub.result_topic, "distributed_task_completed");
    assert_eq!(settings.pubsub.consumer_group, "task-subscribers");
    assert_eq!(settings.pubsub.consumer_count, 2);
    assert_eq!(
        settings.source_of("pubsub.consumercount"),
        Some(&file_source(&path, 14))
    );
    assert_eq!(settings.redis.host, "localhost");
    assert_eq!(settings.redis.port, 6379);
    assert_eq!(
        settings.source_of("spring.redis.port"),
        Some(&file_source(&path, 21))
    );
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
}

#[test]
fn the_seeds_properties_still_load_when_indented_as_in_its_readme() {
    let path = fixture("seed-indented.properties");
    let settings = load(Some(&path), &HashMap::new(), &[]).expect("the indented block loads");
    assert_eq!(settings.server.port, 30000);
    assert_eq!(settings.pubsub.task_shard_topic, "distributed_task_shard");
    assert_eq!(settings.redis.port, 6379);
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
}

// ---- TOML -----------------------------------------------------------------------

#[test]
fn a_toml_file_flattens_tables_into_the_same_keys_as_properties() {
    let toml = r#"
"pubsub.submit-timeout-ms" = 2500

[server]
port = 4000
bind = "::1"
insecure = true

[pubsub]
namespace = "kafka-1:9092,kafka-2:9092"

[pubsub.task-shard]
topic = "shards"

[executor]
env-allow = ["PATH", "LANG"]
max-retries = "4"
"#;
    let (_dir, path) = write_file("dts.toml", toml);
    let settings = load(Some(&path), &HashMap::new(), &[]).expect("toml loads");
    assert_eq!(settings.server.port, 4000);
    assert_eq!(
        settings.source_of("server.port"),
        Some(&file_source(&path, 5))
    );
    assert!(settings.server.bind.is_loopback());
    assert!(settings.server.insecure);
    assert_eq!(settings.pubsub.submit_timeout, Duration::from_millis(2500));
    assert_eq!(settings.pubsub.namespace, "kafka-1:9092,kafka-2:9092");
    assert_eq!(settings.pubsub.task_shard_topic, "shards");
    assert_eq!(settings.executor.env_allow, ["PATH", "LANG"]);
    assert_eq!(settings.executor.max_retries, 4);
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
}

#[test]
fn a_toml_list_for_a_single_value_key_is_an_invalid_value() {
    let (_dir, path) = write_file("dts.toml", "[server]\nport = [1, 2]\n");
    let error = load_err(Some(&path), &HashMap::new(), &[]);
    assert_eq!(
        error.to_string(),
        format!(
            "invalid value \"[1, 2]\" for server.port (from file {} line 2): expected a port number from 0 to 65535",
            path.display()
        )
    );
}

// ---- kafka pass-through -----------------------------------------------------------

#[test]
fn pubsub_kafka_keys_pass_through_with_the_prefix_removed_from_file_and_flags() {
    let (_dir, path) = write_file(
        "dts.properties",
        "pubsub.kafka.security.protocol=SASL_SSL\npubsub.kafka.sasl.password=swordfish\npubsub.kafka.linger.ms=5\n",
    );
    let flags = flags(&[("pubsub.kafka.linger.ms", "20")]);
    let settings = load(Some(&path), &HashMap::new(), &flags).expect("loads");
    let kafka: Vec<(&str, &str)> = settings
        .pubsub
        .kafka
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    assert_eq!(
        kafka,
        [
            ("linger.ms", "20"),
            ("sasl.password", "swordfish"),
            ("security.protocol", "SASL_SSL")
        ]
    );
    assert_eq!(
        settings.source_of("pubsub.kafka.linger.ms"),
        Some(&Source::Flag("pubsub.kafka.linger.ms".into()))
    );
    assert_eq!(
        settings.source_of("pubsub.kafka.security.protocol"),
        Some(&file_source(&path, 1))
    );
    let described = settings.describe();
    let password = described
        .iter()
        .find(|(key, _, _)| key == "pubsub.kafka.sasl.password")
        .expect("kafka keys are described");
    assert_ne!(password.1, "swordfish");
}

#[test]
fn kafka_pass_through_in_toml_uses_a_table_with_quoted_keys() {
    let (_dir, path) = write_file(
        "dts.toml",
        "[pubsub.kafka]\n\"security.protocol\" = \"SSL\"\n\"message.timeout.ms\" = 30000\n",
    );
    let settings = load(Some(&path), &HashMap::new(), &[]).expect("loads");
    assert_eq!(
        settings
            .pubsub
            .kafka
            .get("security.protocol")
            .map(String::as_str),
        Some("SSL")
    );
    assert_eq!(
        settings
            .pubsub
            .kafka
            .get("message.timeout.ms")
            .map(String::as_str),
        Some("30000")
    );
}

#[test]
fn kafka_keys_cannot_come_from_the_environment_and_say_so_in_a_warning() {
    let settings = load(None, &env(&[("DTS_PUBSUB_KAFKA_LINGER_MS", "5")]), &[]).expect("loads");
    assert!(settings.pubsub.kafka.is_empty());
    assert_eq!(settings.warnings.len(), 1);
    assert!(
        settings.warnings[0].contains("DTS_PUBSUB_KAFKA_LINGER_MS"),
        "{:?}",
        settings.warnings
    );
}

// ---- cross-key checks ---------------------------------------------------------------

#[test]
fn a_heartbeat_ttl_not_longer_than_the_interval_is_rejected_naming_both_sources() {
    let env = env(&[("DTS_WORKER_HEARTBEAT_INTERVAL_MS", "10000")]);
    let error = load_err(None, &env, &[]);
    assert_eq!(
        error.to_string(),
        "worker.heartbeat-ttl-ms = 10000 (from default) must be greater than \
         worker.heartbeat-interval-ms = 10000 (from environment variable DTS_WORKER_HEARTBEAT_INTERVAL_MS): \
         otherwise a live worker is declared gone between two heartbeats"
    );
    assert!(matches!(error, ConfigError::Inconsistent { ref keys, .. } if keys.len() == 2));
}

#[test]
fn an_item_and_template_that_cannot_fit_in_one_message_are_rejected() {
    let flags = flags(&[
        ("pubsub.max-message-bytes", "100000"),
        ("limits.max-item-bytes", "90000"),
    ]);
    let error = load_err(None, &HashMap::new(), &flags);
    let message = error.to_string();
    assert!(
        message.contains(
            "limits.max-item-bytes = 90000 (from command-line flag for limits.max-item-bytes)"
        ),
        "{message}"
    );
    assert!(
        message.contains("limits.max-template-bytes = 65536 (from default)"),
        "{message}"
    );
    assert!(
        message.contains(
            "pubsub.max-message-bytes = 100000 (from command-line flag for pubsub.max-message-bytes)"
        ),
        "{message}"
    );
    assert!(
        message.contains("would not fit in one message"),
        "{message}"
    );
}

#[test]
fn an_item_larger_than_one_process_argument_is_rejected() {
    let flags = flags(&[("limits.max-item-bytes", "200000")]);
    let message = load_err(None, &HashMap::new(), &flags).to_string();
    assert!(
        message.contains("limits.max-item-bytes") && message.contains("from 1 to 131000"),
        "{message}"
    );
}

#[test]
fn an_item_and_template_that_fill_a_message_exactly_are_accepted() {
    let flags = flags(&[
        ("pubsub.max-message-bytes", "10000"),
        ("limits.max-item-bytes", "4000"),
        ("limits.max-template-bytes", "1904"),
    ]);
    load(None, &HashMap::new(), &flags).expect("exactly full still fits");
}

#[test]
fn a_default_timeout_above_the_maximum_is_rejected() {
    let flags = flags(&[
        ("executor.default-timeout-secs", "100"),
        ("executor.max-timeout-secs", "50"),
    ]);
    let error = load_err(None, &HashMap::new(), &flags);
    assert!(
        error
            .to_string()
            .contains("executor.default-timeout-secs = 100"),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("must not exceed executor.max-timeout-secs = 50"),
        "{error}"
    );
}

// ---- unknown keys ---------------------------------------------------------------------

#[test]
fn an_unknown_key_in_a_file_is_a_warning_with_its_line_and_a_suggestion() {
    let (_dir, path) = write_file(
        "dts.properties",
        "server.port=1\nserer.port=2\nsomething.else=3\n",
    );
    let settings =
        load(Some(&path), &HashMap::new(), &[]).expect("unknown keys do not stop loading");
    assert_eq!(settings.server.port, 1);
    assert_eq!(
        settings.warnings,
        [
            format!(
                "unknown key `serer.port` in {} line 2; did you mean `server.port`?",
                path.display()
            ),
            format!("unknown key `something.else` in {} line 3", path.display()),
        ]
    );
}

#[test]
fn an_unknown_key_in_a_toml_file_is_a_warning_with_its_dotted_name() {
    let (_dir, path) = write_file("dts.toml", "[server]\nprot = 1\n");
    let settings = load(Some(&path), &HashMap::new(), &[]).expect("loads");
    assert_eq!(
        settings.warnings,
        [format!(
            "unknown key `server.prot` in {} line 2; did you mean `server.port`?",
            path.display()
        )]
    );
}

#[test]
fn unknown_dts_environment_variables_are_ignored_silently() {
    let env = env(&[
        ("DTS_ITEM", "x"),
        ("DTS_TASK_ID", "y"),
        ("DTS_SERER_PORT", "1"),
    ]);
    let settings = load(None, &env, &[]).expect("loads");
    assert!(settings.warnings.is_empty());
    assert_eq!(settings, Settings::default());
}

#[test]
fn an_unknown_flag_key_is_an_error_with_a_suggestion() {
    let error = load_err(None, &HashMap::new(), &flags(&[("server.prot", "1")]));
    assert_eq!(
        error.to_string(),
        "unknown configuration key `server.prot` (from command-line flag for server.prot); did you mean `server.port`?"
    );
}

#[test]
fn the_ignored_spring_cache_type_is_accepted_but_not_described() {
    let flags = flags(&[("spring.cache.type", "anything")]);
    let settings = load(None, &HashMap::new(), &flags).expect("loads");
    assert!(settings.warnings.is_empty());
    assert_eq!(settings.source_of("spring.cache.type"), None);
}

// ---- describe -------------------------------------------------------------------------

#[test]
fn describe_lists_every_key_once_in_table_order_with_secrets_masked() {
    let settings = load(
        None,
        &env(&[("DTS_AUTH_TOKEN", "hunter2-hunter2-hunter2")]),
        &[],
    )
    .expect("loads");
    let described = settings.describe();
    let described_keys: Vec<&str> = described.iter().map(|(key, _, _)| key.as_str()).collect();
    let table_keys: Vec<&str> = keys::KEYS
        .iter()
        .filter(|spec: &&KeySpec| spec.kind != Kind::Ignored)
        .map(|spec| spec.key)
        .collect();
    assert_eq!(described_keys, table_keys);
    for (key, value, source) in &described {
        assert!(
            !value.contains("hunter2-hunter2-hunter2"),
            "{key} leaks the token"
        );
        if key == "server.auth-token" {
            assert!(!value.is_empty());
            assert_eq!(source, "environment variable DTS_AUTH_TOKEN");
        }
    }
    let port = described
        .iter()
        .find(|(key, _, _)| key == "server.port")
        .expect("port");
    assert_eq!(
        port,
        &(
            "server.port".to_string(),
            "30000".to_string(),
            "default".to_string()
        )
    );
}

// ---- worker labels --------------------------------------------------------------------

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// The parts of an [`ConfigError::InvalidLabel`], or a panic naming what
/// came instead.
fn invalid_label(error: ConfigError) -> (String, String, Source, LabelProblem) {
    match error {
        ConfigError::InvalidLabel {
            key,
            label,
            from,
            problem,
        } => (key, label, from, problem),
        other => panic!("expected an invalid label, got {other:?}"),
    }
}

fn described(settings: &Settings, key: &str) -> (String, String) {
    settings
        .describe()
        .into_iter()
        .find(|(k, _, _)| k == key)
        .map(|(_, value, from)| (value, from))
        .unwrap_or_else(|| panic!("{key} is not described"))
}

#[test]
fn with_no_labels_given_a_worker_has_none() {
    let settings = Settings::default();
    assert!(settings.worker.labels.is_empty());
    assert_eq!(
        described(&settings, "worker.labels"),
        (String::new(), "default".to_string())
    );
}

#[test]
fn labels_of_the_file_environment_and_flags_add_up_and_a_higher_layer_wins_for_a_name() {
    let (_dir, path) = write_file(
        "dts.properties",
        "worker.labels = gpu=a100, zone=eu\nworker.labels=rack=r1\n",
    );
    let env = env(&[("DTS_WORKER_LABELS", "zone=us,os=linux")]);
    let flags = flags(&[
        ("worker.labels", "gpu=h100"),
        ("worker.labels", "ssd="),
        ("worker.labels", "gpu=h100"),
    ]);
    let settings = load(Some(&path), &env, &flags).expect("loads");
    assert_eq!(
        settings.worker.labels,
        labels(&[
            ("gpu", "h100"),
            ("os", "linux"),
            ("rack", "r1"),
            ("ssd", ""),
            ("zone", "us"),
        ])
    );
    assert_eq!(
        settings.source_of("worker.labels"),
        Some(&Source::Flag("worker.labels".into()))
    );
    assert_eq!(
        described(&settings, "worker.labels"),
        (
            "gpu=h100,os=linux,rack=r1,ssd=,zone=us".to_string(),
            "command-line flag for worker.labels".to_string()
        )
    );

    let file_only = load(Some(&path), &HashMap::new(), &[]).expect("loads");
    assert_eq!(
        file_only.worker.labels,
        labels(&[("gpu", "a100"), ("rack", "r1"), ("zone", "eu")])
    );
    assert_eq!(
        file_only.source_of("worker.labels"),
        Some(&file_source(&path, 2))
    );
}

#[test]
fn labels_in_toml_are_an_array_of_name_value_or_a_table() {
    let (_a, array) = write_file(
        "array.toml",
        "[worker]\nlabels = [\"gpu=a100\", \"zone=eu\"]\n",
    );
    let (_t, table) = write_file(
        "table.toml",
        "[worker.labels]\ngpu = \"a100\"\nzone = \"eu\"\n",
    );
    for path in [&array, &table] {
        let settings = load(Some(path), &HashMap::new(), &[]).expect("loads");
        assert_eq!(
            settings.worker.labels,
            labels(&[("gpu", "a100"), ("zone", "eu")]),
            "{}",
            path.display()
        );
        assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    }
}

#[test]
fn a_malformed_label_is_refused_naming_the_key_the_label_and_where_it_came_from() {
    let (_dir, path) = write_file("dts.properties", "worker.labels=gpu=a100,zone=e\tu\n");
    let (key, label, from, problem) = invalid_label(load_err(Some(&path), &HashMap::new(), &[]));
    assert_eq!(key, "worker.labels");
    assert_eq!(label, "zone=e\tu");
    assert_eq!(from, file_source(&path, 1));
    assert_eq!(
        problem,
        LabelProblem::Rule(LabelError::ValueCharacter('\t'))
    );

    let (_, label, from, problem) = invalid_label(load_err(
        None,
        &env(&[("DTS_WORKER_LABELS", "gpu a100=yes")]),
        &[],
    ));
    assert_eq!(label, "gpu a100=yes");
    assert_eq!(from, Source::Env("DTS_WORKER_LABELS".into()));
    assert_eq!(problem, LabelProblem::Rule(LabelError::NameCharacter(' ')));

    let cases = [
        ("gpu", LabelProblem::NoEquals),
        ("=a100", LabelProblem::Rule(LabelError::NameLength(0))),
        (
            "gpu:0=a100",
            LabelProblem::Rule(LabelError::NameCharacter(':')),
        ),
        (
            &*format!("{}=x", "n".repeat(64)),
            LabelProblem::Rule(LabelError::NameLength(64)),
        ),
        (
            &*format!("gpu={}", "v".repeat(64)),
            LabelProblem::Rule(LabelError::ValueLength(64)),
        ),
    ];
    for (text, expected) in cases {
        let (key, label, from, problem) = invalid_label(load_err(
            None,
            &HashMap::new(),
            &flags(&[("worker.labels", text)]),
        ));
        assert_eq!(
            (key.as_str(), label.as_str(), problem),
            ("worker.labels", text, expected),
            "{text}"
        );
        assert_eq!(from, Source::Flag("worker.labels".into()));
    }
}

#[test]
fn the_message_of_a_bad_label_says_which_label_where_from_and_what_is_wrong() {
    let error = load_err(
        None,
        &HashMap::new(),
        &flags(&[("worker.labels", "gpu:0=a100")]),
    );
    assert_eq!(
        error.to_string(),
        "invalid label \"gpu:0=a100\" in worker.labels (from command-line flag for worker.labels): \
         a label name may only hold letters, digits, `_`, `.`, `-` and `/`, not ':'"
    );
    assert!(!error.is_retryable());
}

#[test]
fn one_layer_giving_a_label_two_values_is_refused_naming_the_label() {
    let error = load_err(
        None,
        &HashMap::new(),
        &flags(&[("worker.labels", "gpu=a100"), ("worker.labels", "gpu=h100")]),
    );
    let (key, label, from, problem) = invalid_label(error);
    assert_eq!(key, "worker.labels");
    assert_eq!(label, "gpu=h100");
    assert_eq!(from, Source::Flag("worker.labels".into()));
    assert_eq!(
        problem,
        LabelProblem::Conflict {
            first: "a100".into()
        }
    );

    // Two lines of one file are one layer too.
    let (_dir, path) = write_file(
        "dts.properties",
        "worker.labels=zone=eu\nworker.labels=zone=us\n",
    );
    let (_, label, from, _) = invalid_label(load_err(Some(&path), &HashMap::new(), &[]));
    assert_eq!(label, "zone=us");
    assert_eq!(from, file_source(&path, 2));

    // Across layers, the higher one simply wins.
    let settings = load(
        Some(&path),
        &env(&[("DTS_WORKER_LABELS", "zone=eu")]),
        &flags(&[("worker.labels", "zone=ap")]),
    );
    assert!(settings.is_err(), "the file alone is still in conflict");
    let (_ok_dir, ok_path) = write_file("ok.properties", "worker.labels=zone=eu\n");
    let settings = load(
        Some(&ok_path),
        &env(&[("DTS_WORKER_LABELS", "zone=us")]),
        &flags(&[("worker.labels", "zone=ap")]),
    )
    .expect("loads");
    assert_eq!(settings.worker.labels, labels(&[("zone", "ap")]));
}

#[test]
fn thirty_two_labels_are_accepted_and_a_thirty_third_is_refused_naming_it() {
    let many: Vec<String> = (0..32).map(|n| format!("l{n:02}=v")).collect();
    let (_dir, path) = write_file(
        "dts.properties",
        &format!("worker.labels={}\n", many.join(",")),
    );
    let settings = load(
        Some(&path),
        &HashMap::new(),
        &flags(&[("worker.labels", "l00=changed")]),
    )
    .expect("32 labels, one of them overridden, load");
    assert_eq!(settings.worker.labels.len(), 32);
    assert_eq!(settings.worker.labels["l00"], "changed");

    let (_, label, from, problem) = invalid_label(load_err(
        Some(&path),
        &HashMap::new(),
        &flags(&[("worker.labels", "extra=1")]),
    ));
    assert_eq!(label, "extra=1");
    assert_eq!(from, Source::Flag("worker.labels".into()));
    assert_eq!(problem, LabelProblem::TooMany);
}

// ---- Redis Sentinel -------------------------------------------------------------

#[test]
fn sentinel_master_and_nodes_give_the_store_a_master_name_and_each_sentinel() {
    let flags = flags(&[
        ("spring.redis.sentinel.master", "dts-primary"),
        (
            "spring.redis.sentinel.nodes",
            "10.0.0.5:26379, sentinel-b:26380,[::1]:26381",
        ),
    ]);
    let settings = load(None, &HashMap::new(), &flags).expect("loads");
    assert_eq!(
        settings.redis.sentinel,
        Some(dts_config::SentinelSettings {
            master: "dts-primary".to_string(),
            nodes: vec![
                ("10.0.0.5".to_string(), 26379),
                ("sentinel-b".to_string(), 26380),
                ("::1".to_string(), 26381),
            ],
            wait_replicas: 1,
            wait_timeout: Duration::from_millis(500),
        })
    );
}

#[test]
fn without_a_sentinel_master_dts_uses_the_redis_host_and_port() {
    let settings = load(None, &HashMap::new(), &[]).expect("loads");
    assert_eq!(settings.redis.sentinel, None);
}

#[test]
fn a_sentinel_master_without_nodes_is_refused_naming_both_keys() {
    let env = env(&[("DTS_SPRING_REDIS_SENTINEL_MASTER", "dts-primary")]);
    let error = load_err(None, &env, &[]);
    assert_eq!(
        error.to_string(),
        "spring.redis.sentinel.master = dts-primary (from environment variable \
         DTS_SPRING_REDIS_SENTINEL_MASTER) needs spring.redis.sentinel.nodes \
         (comma-separated host:port of the sentinels): without them the primary cannot be found"
    );
    assert!(
        matches!(&error, ConfigError::Inconsistent { keys, .. }
            if keys == &["spring.redis.sentinel.master", "spring.redis.sentinel.nodes"]),
        "{error:?}"
    );
}

#[test]
fn an_empty_sentinel_node_list_is_refused_like_a_missing_one() {
    let flags = flags(&[
        ("spring.redis.sentinel.master", "dts-primary"),
        ("spring.redis.sentinel.nodes", " , "),
    ]);
    let error = load_err(None, &HashMap::new(), &flags);
    assert!(
        matches!(&error, ConfigError::Inconsistent { keys, .. }
            if keys == &["spring.redis.sentinel.master", "spring.redis.sentinel.nodes"]),
        "{error:?}"
    );
}

#[test]
fn sentinel_nodes_without_a_master_name_are_refused_naming_both_keys() {
    let flags = flags(&[("spring.redis.sentinel.nodes", "127.0.0.1:26379")]);
    let error = load_err(None, &HashMap::new(), &flags);
    assert_eq!(
        error.to_string(),
        "spring.redis.sentinel.nodes = 127.0.0.1:26379 (from command-line flag for \
         spring.redis.sentinel.nodes) needs spring.redis.sentinel.master: \
         the sentinels are asked for a master by its name"
    );
}

#[test]
fn a_sentinel_node_without_a_port_is_refused_naming_the_node_and_the_key() {
    for bad in [
        "sentinel-b",
        "sentinel-b:",
        "sentinel-b:0",
        "sentinel-b:99999",
        ":26379",
    ] {
        let flags = flags(&[
            ("spring.redis.sentinel.master", "dts-primary"),
            (
                "spring.redis.sentinel.nodes",
                &format!("127.0.0.1:26379,{bad}"),
            ),
        ]);
        let error = load_err(None, &HashMap::new(), &flags);
        match &error {
            ConfigError::InvalidValue {
                key, value, from, ..
            } => {
                assert_eq!(key, "spring.redis.sentinel.nodes", "{bad}");
                assert_eq!(value, bad);
                assert_eq!(
                    *from,
                    Source::Flag("spring.redis.sentinel.nodes".to_string())
                );
            }
            other => panic!("{bad}: expected an invalid value, got {other:?}"),
        }
        assert!(error.to_string().contains("host:port"), "{bad}: {error}");
    }
}
