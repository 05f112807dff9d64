//! librdkafka plumbing shared by the producer, the group members and the
//! admin client: the settings dts starts every client from, librdkafka's log
//! lines into `tracing`, and closing clients away from the async threads.

use super::KafkaSettings;
use crate::BusError;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long librdkafka tries to deliver one message before a publish fails
/// (`message.timeout.ms`), unless the pass-through settings say otherwise.
/// Short, so a publish to a broker that is down fails while the caller can
/// still retry within its own bound.
pub(crate) const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// dts's `session.timeout.ms`: how long a group member may go silent before
/// its partitions move to the others. librdkafka's 45 s would leave the
/// shards of a killed worker idle for most of a minute; 10 s (with a
/// heartbeat every 3 s) gets them running elsewhere within about 20 s, and
/// stays above Kafka's `group.min.session.timeout.ms` (6 s).
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);

/// Room for the record batch header, the record's own framing and its key on
/// top of the largest payload, in `message.max.bytes`.
const FRAMING_HEADROOM: usize = 64 * 1024;

/// `message.max.bytes` stays at least librdkafka's default (1 MB) and at
/// most the largest value librdkafka accepts.
const MESSAGE_MAX_BYTES_RANGE: (usize, usize) = (crate::DEFAULT_MAX_MESSAGE_BYTES, 1_000_000_000);

fn base(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap)
        .set("client.id", "dts");
    config
}

/// The pass-through settings go last, so an operator can override anything
/// dts chose (at their own risk for `group.id` and the commit settings).
fn with_overrides(mut config: ClientConfig, settings: &KafkaSettings) -> ClientConfig {
    for (key, value) in &settings.client {
        config.set(key, value);
    }
    config
}

/// Big enough for a `max_message_bytes` payload plus its framing.
fn message_max_bytes(settings: &KafkaSettings) -> String {
    let (low, high) = MESSAGE_MAX_BYTES_RANGE;
    settings
        .max_message_bytes
        .saturating_add(FRAMING_HEADROOM)
        .clamp(low, high)
        .to_string()
}

pub(crate) fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = base(settings);
    config
        // A message counts as sent only once every in-sync replica has it.
        // Not the idempotent producer: its fatal errors (fenced, or an
        // unknown producer id after a broker lost its state) leave the
        // producer unusable until the process restarts, and dts does not
        // need it — planning, shard leases and completion are idempotent,
        // so a message librdkafka retries into a duplicate costs nothing.
        .set("enable.idempotence", "false")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            DEFAULT_MESSAGE_TIMEOUT.as_millis().to_string(),
        )
        .set("message.max.bytes", message_max_bytes(settings));
    with_overrides(config, settings)
}

pub(crate) fn consumer_config(settings: &KafkaSettings, group: &str) -> ClientConfig {
    let mut config = base(settings);
    config
        .set("group.id", group)
        .set(
            "session.timeout.ms",
            DEFAULT_SESSION_TIMEOUT.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            DEFAULT_HEARTBEAT_INTERVAL.as_millis().to_string(),
        )
        // Offsets are committed by hand, only past acknowledged messages.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A group's first member reads what was published before it joined.
        .set("auto.offset.reset", "earliest")
        // The consumer group protocol of KIP-848 is not there on every
        // Kafka-protocol broker; the classic one is. The assignor stays
        // librdkafka's (eager `range,roundrobin`): `cooperative-sticky`
        // works too (the tracker follows incremental assignments), but is
        // the operator's choice to make through the pass-through settings.
        .set("group.protocol", "classic")
        // librdkafka raises its fetch sizes to match.
        .set("message.max.bytes", message_max_bytes(settings));
    with_overrides(config, settings)
}

pub(crate) fn admin_config(settings: &KafkaSettings) -> ClientConfig {
    with_overrides(base(settings), settings)
}

fn millis_setting(settings: &KafkaSettings, keys: &[&str]) -> Option<Duration> {
    keys.iter()
        .find_map(|key| settings.client.get(*key))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// How long one publish may wait for its delivery report.
pub(crate) fn message_timeout(settings: &KafkaSettings) -> Duration {
    // `delivery.timeout.ms` is librdkafka's alias for the same setting.
    millis_setting(settings, &["message.timeout.ms", "delivery.timeout.ms"])
        .unwrap_or(DEFAULT_MESSAGE_TIMEOUT)
}

/// The group session timeout in effect: a JoinGroup can take about this long.
pub(crate) fn session_timeout(settings: &KafkaSettings) -> Duration {
    millis_setting(settings, &["session.timeout.ms"]).unwrap_or(DEFAULT_SESSION_TIMEOUT)
}

pub(crate) fn settings_error(error: KafkaError) -> BusError {
    BusError::InvalidSettings {
        source: error.into(),
    }
}

/// Sends librdkafka's log lines and error events to `tracing`.
pub(crate) fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    // Pass-through settings go to every client, so a consumer setting given
    // to the producer (and the other way round) is expected, not a problem.
    if facility == "CONFWARN" && message.contains("will be ignored by this") {
        tracing::debug!(target: "librdkafka", facility, "{message}");
        return;
    }
    // A broker that cannot be reached is logged as an error by librdkafka
    // on every attempt; it retries on its own, and callers see the outcome.
    if facility == "FAIL" && matches!(level, RDKafkaLogLevel::Error) {
        tracing::warn!(target: "librdkafka", facility, "{message}");
        return;
    }
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice => tracing::info!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Info => tracing::debug!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Debug => tracing::trace!(target: "librdkafka", facility, "{message}"),
    }
}

pub(crate) fn client_error(error: KafkaError, reason: &str) {
    tracing::warn!(target: "librdkafka", %error, "{reason}");
}

/// Context of the producer and the admin client.
#[derive(Clone, Copy, Default)]
pub(crate) struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(error, reason);
    }
}

/// Owns a librdkafka client and drops it on a thread of its own: dropping
/// one joins its threads, and dropping a consumer leaves its group, which
/// waits for the broker — for ever if the broker died while a commit was in
/// flight. A plain thread (not tokio's blocking pool) so that such a close
/// never holds up the runtime's shutdown; [`KafkaBus::shutdown`] waits for
/// group members with a deadline instead.
///
/// [`KafkaBus::shutdown`]: super::KafkaBus::shutdown
pub(crate) struct OffThread<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> OffThread<T> {
    pub(crate) fn new(client: T) -> Self {
        OffThread(Some(client))
    }
}

impl<T: Send + 'static> Deref for OffThread<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match &self.0 {
            Some(client) => client,
            // Only Drop takes the client out.
            None => unreachable!("client used after drop"),
        }
    }
}

impl<T: Send + 'static> Drop for OffThread<T> {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else { return };
        let closing = std::thread::Builder::new()
            .name("dts-kafka-close".into())
            .spawn(move || drop(client));
        if let Err(error) = closing {
            // The client went down with the failed spawn, on this thread.
            tracing::warn!(%error, "no thread to close a kafka client on");
        }
    }
}

/// Counts the group members of a bus that have not finished leaving their
/// group, so shutdown can wait for them.
#[derive(Clone)]
pub(crate) struct OpenMembers(Arc<watch::Sender<usize>>);

impl OpenMembers {
    pub(crate) fn new() -> Self {
        OpenMembers(Arc::new(watch::channel(0).0))
    }

    /// Counts one more member until the returned guard is dropped.
    pub(crate) fn open(&self) -> OpenMember {
        self.0.send_modify(|open| *open += 1);
        OpenMember(self.0.clone())
    }

    /// Waits until no member is open, at most `grace`. True if none is.
    pub(crate) async fn all_closed(&self, grace: Duration) -> bool {
        let mut open = self.0.subscribe();
        tokio::time::timeout(grace, open.wait_for(|open| *open == 0))
            .await
            .is_ok()
    }
}

pub(crate) struct OpenMember(Arc<watch::Sender<usize>>);

impl Drop for OpenMember {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open = open.saturating_sub(1));
    }
}
