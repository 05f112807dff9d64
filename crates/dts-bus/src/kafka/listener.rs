//! One listener per [`Bus::listen`](crate::Bus::listen): a consumer outside
//! every group that sees every message of its topic from the moment it
//! started listening.
//!
//! **Where it starts.** The listener reads each partition's end *before*
//! `listen` returns and is assigned every partition by hand from there. A
//! group member with `auto.offset.reset=latest` would look the end up only
//! after its assignment, so a message published between the two would be
//! skipped, and "every message published after `listen` returned" would
//! not hold.
//!
//! **No group.** Assigned by hand, it joins no group: no rebalance, no
//! session to keep up, and it commits nothing. Its consumer still has a
//! group id, unique per listener (`dts-listen-{uuid}`), because librdkafka
//! routes a consumer's messages through its group queue only when it has
//! one; `auto.offset.reset=latest` covers an end that moved out of range.
//!
//! **Falling behind.** The driver keeps fetching whatever the caller does;
//! when [`HAND_OFF`] messages wait unread, the next ones are skipped. Wakes
//! are hints, so a listener behind by that many loses nothing worth having,
//! and fetching never pauses.
//!
//! Partitions added to the topic after `listen` are not listened to: dts
//! creates its topics with a fixed count, and a missed wake costs latency.

use super::KafkaSettings;
use super::client::{self, OffThread, OpenMember, OpenMembers, consumer_config, settings_error};
use crate::{BusError, BusResult, Delivery, NoAck, Subscription};
use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error, warn};

/// Messages waiting for the caller before the next ones are skipped.
const HAND_OFF: usize = 64;

/// Pause between two tries at reading a partition's end while a topic just
/// created is not yet known to every broker.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A listener's callbacks: librdkafka's logs only (it has no group).
struct ListenContext;

impl ClientContext for ListenContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        client::log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client::client_error(error, reason);
    }
}

impl ConsumerContext for ListenContext {}

type ListenConsumer = StreamConsumer<ListenContext>;

/// The consumer, closed off the async threads when the listener goes.
struct Member {
    consumer: ListenConsumer,
    _open: OpenMember,
}

/// Starts listening to `topic`: returns once every partition is assigned
/// from its current end, so every message published after this returns is
/// delivered. `stop` ends the listener.
pub(crate) async fn listen(
    settings: &KafkaSettings,
    topic: &str,
    members: &OpenMembers,
    stop: CancellationToken,
) -> BusResult<Box<dyn Subscription>> {
    let group = format!("dts-listen-{}", uuid::Uuid::new_v4());
    let mut config = consumer_config(settings, &group);
    // After the pass-through settings: a listener's group is its own.
    config
        .set("group.id", &group)
        .set("auto.offset.reset", "latest");
    let consumer: ListenConsumer = config
        .create_with_context(ListenContext)
        .map_err(settings_error)?;
    let member = Arc::new(OffThread::new(Member {
        consumer,
        _open: members.open(),
    }));

    let stop_on_drop = stop.clone().drop_guard();
    let timeout = settings.connect_timeout;
    let assigning = {
        let member = member.clone();
        let topic = topic.to_string();
        // Metadata and offset requests block: keep them off the async threads.
        tokio::task::spawn_blocking(move || assign_from_end(&member.consumer, &topic, timeout))
    };
    let partitions = tokio::select! {
        assigned = assigning => match assigned {
            Ok(assigned) => assigned?,
            Err(join) => {
                return Err(BusError::Fatal {
                    op: format!("starting to listen to topic {topic}"),
                    source: join.into(),
                });
            }
        },
        _ = stop.cancelled() => return Err(BusError::Closed),
    };
    debug!(topic, group, partitions, "listening");

    let (out, deliveries) = mpsc::channel(HAND_OFF);
    let driver = Driver {
        member,
        topic: topic.to_string(),
        out,
        stop,
    };
    tokio::spawn(driver.run());
    Ok(Box::new(KafkaListener {
        deliveries,
        _stop: stop_on_drop,
    }))
}

/// Reads the end of every partition of `topic` and assigns them all from
/// there; returns how many there are. Tries again for up to `timeout`
/// while the topic has no partitions or a partition has no leader yet.
fn assign_from_end(consumer: &ListenConsumer, topic: &str, timeout: Duration) -> BusResult<usize> {
    let started = Instant::now();
    let unavailable = |what: &str, source: KafkaError| BusError::Unavailable {
        op: format!("{what} of topic {topic}"),
        source: source.into(),
    };
    let list = loop {
        let left = timeout.saturating_sub(started.elapsed());
        match ends(consumer, topic, left) {
            Ok(Some(list)) => break list,
            Ok(None) if left.is_zero() => {
                return Err(BusError::TimedOut {
                    op: format!("finding the partitions of topic {topic}"),
                    after: timeout,
                });
            }
            Err(error) if left.is_zero() => {
                return Err(unavailable("reading the end of the partitions", error));
            }
            Ok(None) | Err(_) => std::thread::sleep(RETRY_PAUSE.min(left)),
        }
    };
    consumer.assign(&list).map_err(|error| BusError::Fatal {
        op: format!("assigning the partitions of topic {topic} to a listener"),
        source: error.into(),
    })?;
    Ok(list.count())
}

/// Every partition of `topic` at its end now; `None` while the topic has no
/// partitions yet.
fn ends(
    consumer: &ListenConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Option<TopicPartitionList>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Ok(None);
    }
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        let (_low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        list.add_partition_offset(topic, partition, Offset::Offset(high))?;
    }
    Ok(Some(list))
}

struct KafkaListener {
    deliveries: mpsc::Receiver<BusResult<Delivery>>,
    /// Stops the driver (and so closes the consumer) when the listener goes.
    _stop: DropGuard,
}

#[async_trait]
impl Subscription for KafkaListener {
    async fn next(&mut self) -> BusResult<Delivery> {
        self.deliveries
            .recv()
            .await
            .unwrap_or(Err(BusError::Closed))
    }
}

/// Fetches all the time and hands messages over, skipping those the caller
/// has no room for.
struct Driver {
    member: Arc<OffThread<Member>>,
    topic: String,
    out: mpsc::Sender<BusResult<Delivery>>,
    stop: CancellationToken,
}

impl Driver {
    async fn run(self) {
        let topic = &self.topic;
        loop {
            let received = tokio::select! {
                _ = self.stop.cancelled() => break,
                received = self.member.consumer.recv() => received,
            };
            let handed = match received {
                Ok(message) => {
                    let key = message
                        .key()
                        .map(|key| String::from_utf8_lossy(key).into_owned())
                        .unwrap_or_default();
                    let payload = message.payload().map(<[u8]>::to_vec).unwrap_or_default();
                    self.out
                        .try_send(Ok(Delivery::new(key, payload, Box::new(NoAck))))
                }
                Err(KafkaError::PartitionEOF(_)) => continue,
                Err(KafkaError::MessageConsumptionFatal(code)) => {
                    error!(%topic, %code, "a listener's consumer failed for good");
                    let failed = Err(BusError::Fatal {
                        op: format!("listener of topic {topic}"),
                        source: code.into(),
                    });
                    tokio::select! {
                        _ = self.out.send(failed) => {}
                        _ = self.stop.cancelled() => {}
                    }
                    break;
                }
                Err(error) => {
                    warn!(%topic, %error, "listener error");
                    continue;
                }
            };
            match handed {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!(%topic, "a listener fell behind; skipping a message");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        debug!(%topic, "listener stopped");
    }
}
