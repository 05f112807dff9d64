//! Cross-key checks: values that are each valid but contradict each other.
//! Each error names every key involved with its value and source, and says
//! why the combination cannot work.

use std::fmt::Display;

use crate::error::ConfigError;
use crate::settings::{SentinelSettings, Settings};

/// Room a shard message needs besides one item and the script template:
/// ids, field names and JSON framing.
pub const SHARD_ENVELOPE_BYTES: usize = 4096;

/// Run every cross-key check, stopping at the first failure.
pub(crate) fn check(settings: &Settings) -> Result<(), ConfigError> {
    let worker = &settings.worker;
    if worker.heartbeat_ttl <= worker.heartbeat_interval {
        return Err(inconsistent(
            settings,
            &[
                ("worker.heartbeat-ttl-ms", &worker.heartbeat_ttl.as_millis()),
                (
                    "worker.heartbeat-interval-ms",
                    &worker.heartbeat_interval.as_millis(),
                ),
            ],
            "must be greater than",
            "otherwise a live worker is declared gone between two heartbeats",
        ));
    }

    let limits = &settings.limits;
    let needed = limits
        .max_item_bytes
        .saturating_add(limits.max_template_bytes)
        .saturating_add(SHARD_ENVELOPE_BYTES);
    if needed > settings.pubsub.max_message_bytes {
        return Err(ConfigError::Inconsistent {
            keys: vec![
                "limits.max-item-bytes".to_string(),
                "limits.max-template-bytes".to_string(),
                "pubsub.max-message-bytes".to_string(),
            ],
            message: format!(
                "{} plus {} plus {SHARD_ENVELOPE_BYTES} bytes of envelope must not exceed {}: \
                 a shard with a single item would not fit in one message",
                fact(settings, "limits.max-item-bytes", &limits.max_item_bytes),
                fact(
                    settings,
                    "limits.max-template-bytes",
                    &limits.max_template_bytes
                ),
                fact(
                    settings,
                    "pubsub.max-message-bytes",
                    &settings.pubsub.max_message_bytes
                ),
            ),
        });
    }

    let server = &settings.server;
    if let Some(origin) = server
        .allowed_origins
        .iter()
        .find(|origin| !is_origin(origin))
    {
        return Err(invalid_entry(
            settings,
            "server.allowed-origins",
            origin,
            "origins such as https://dash.example.com or http://10.0.0.5:30000 (a scheme, a host and maybe a port; no path)",
        ));
    }
    if let Some(host) = server.allowed_hosts.iter().find(|host| !is_host(host)) {
        return Err(invalid_entry(
            settings,
            "server.allowed-hosts",
            host,
            "host names such as dts.example.com or dts.example.com:443, or *",
        ));
    }
    if server.allowed_hosts.iter().any(|host| host == "*") && server.auth_token.is_none() {
        return Err(ConfigError::Inconsistent {
            keys: vec![
                "server.allowed-hosts".to_string(),
                "server.auth-token".to_string(),
            ],
            message: format!(
                "{} accepts any Host, which needs server.auth-token (or server.auth-token-file): \
                 without a token, a web page could reach the API through DNS rebinding",
                fact(
                    settings,
                    "server.allowed-hosts",
                    &server.allowed_hosts.join(",")
                )
            ),
        });
    }

    let executor = &settings.executor;
    if executor.default_timeout > executor.max_timeout {
        return Err(inconsistent(
            settings,
            &[
                (
                    "executor.default-timeout-secs",
                    &executor.default_timeout.as_secs(),
                ),
                ("executor.max-timeout-secs", &executor.max_timeout.as_secs()),
            ],
            "must not exceed",
            "a task without its own timeout would ask for more than is allowed",
        ));
    }
    Ok(())
}

/// `spring.redis.sentinel.*` as settings: `None` without a master name; a
/// master name with no nodes, nodes with no master name, or a node that is
/// not `host:port` are refused, naming the key.
pub(crate) fn sentinel(
    settings: &Settings,
    master: Option<String>,
    nodes: &[String],
    wait_replicas: u32,
    wait_timeout: std::time::Duration,
) -> Result<Option<SentinelSettings>, ConfigError> {
    const MASTER: &str = "spring.redis.sentinel.master";
    const NODES: &str = "spring.redis.sentinel.nodes";
    let Some(master) = master else {
        if nodes.is_empty() {
            return Ok(None);
        }
        return Err(ConfigError::Inconsistent {
            keys: vec![NODES.to_string(), MASTER.to_string()],
            message: format!(
                "{} needs {MASTER}: the sentinels are asked for a master by its name",
                fact(settings, NODES, &nodes.join(","))
            ),
        });
    };
    if nodes.is_empty() {
        return Err(ConfigError::Inconsistent {
            keys: vec![MASTER.to_string(), NODES.to_string()],
            message: format!(
                "{} needs {NODES} (comma-separated host:port of the sentinels): \
                 without them the primary cannot be found",
                fact(settings, MASTER, &master)
            ),
        });
    }
    let mut parsed = Vec::with_capacity(nodes.len());
    for node in nodes {
        let address = node
            .rsplit_once(':')
            .and_then(|(host, port)| {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let port = port.parse::<u16>().ok().filter(|port| *port > 0)?;
                (!host.is_empty() && is_host(host)).then(|| (host.to_string(), port))
            })
            .ok_or_else(|| {
                invalid_entry(
                    settings,
                    NODES,
                    node,
                    "sentinels as host:port, such as 10.0.0.5:26379 (each with a port from 1 to 65535)",
                )
            })?;
        parsed.push(address);
    }
    Ok(Some(SentinelSettings {
        master,
        nodes: parsed,
        wait_replicas,
        wait_timeout,
    }))
}

/// `http://` or `https://`, then a host and maybe a port, nothing else.
fn is_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    is_host(rest.trim_end_matches('/')) && rest.trim_end_matches('/') != "*"
}

/// `*`, or a host (a name, an IPv4 address or a bracketed IPv6 one) and
/// maybe `:port`.
fn is_host(host: &str) -> bool {
    if host == "*" {
        return true;
    }
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, after)) => (
                inside,
                after.strip_prefix(':').or(after.is_empty().then_some("")),
            ),
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, Some("")),
        },
    };
    let port_ok = match port {
        Some("") => true,
        Some(port) => port.parse::<u16>().is_ok(),
        None => false,
    };
    port_ok
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
}

/// A list entry that cannot be what its key holds.
fn invalid_entry(settings: &Settings, key: &str, entry: &str, expected: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_string(),
        value: entry.to_string(),
        from: settings
            .source_of(key)
            .cloned()
            .unwrap_or(crate::source::Source::Default),
        expected: expected.to_string(),
    }
}

/// "`a` = 1 (from x) RELATION `b` = 2 (from y): WHY".
fn inconsistent(
    settings: &Settings,
    pair: &[(&str, &dyn Display); 2],
    relation: &str,
    why: &str,
) -> ConfigError {
    let [(left, left_value), (right, right_value)] = pair;
    ConfigError::Inconsistent {
        keys: vec![left.to_string(), right.to_string()],
        message: format!(
            "{} {relation} {}: {why}",
            fact(settings, left, left_value),
            fact(settings, right, right_value)
        ),
    }
}

/// "key = value (from source)".
fn fact(settings: &Settings, key: &str, value: &dyn Display) -> String {
    match settings.source_of(key) {
        Some(source) => format!("{key} = {value} (from {source})"),
        None => format!("{key} = {value}"),
    }
}
