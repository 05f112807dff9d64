//! The Kafka bus: distributed mode's transport, on
//! librdkafka through the `rdkafka` crate. Works with any Kafka-protocol
//! broker.
//!
//! The process wiring calls [`KafkaBus::connect`] once at start-up; it fails
//! fast when the brokers cannot be reached and creates the configured topics
//! that are missing. After that the engine only sees the [`Bus`] trait:
//!
//! - `producer.rs` — one producer (`acks=all`) shared by all publishers;
//! - `consumer.rs` — one group member per subscription, which commits only
//!   past acknowledged messages and rewinds for dropped ones;
//! - `listener.rs` — one consumer outside every group per listener, assigned
//!   every partition from its end;
//! - `rebalance.rs` — a member's librdkafka callbacks (rebalances, commits);
//! - `offsets.rs` — the bookkeeping behind those commits and rewinds;
//! - `client.rs` — the client settings dts starts from, logging, closing.
//!
//! Blocking librdkafka calls never run on an async worker thread: the
//! metadata request goes to tokio's blocking pool, closing a client to a
//! thread of its own (a close can wait for the broker indefinitely), and
//! admin requests use librdkafka's asynchronous API.

mod client;
mod consumer;
mod listener;
mod offsets;
mod producer;
mod rebalance;

use crate::{Bus, BusError, BusResult, Cause, DEFAULT_MAX_MESSAGE_BYTES, Subscription};
use async_trait::async_trait;
use client::{LogContext, OffThread, OpenMembers, admin_config, consumer_config, settings_error};
use producer::Publisher;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How dts reaches Kafka.
#[derive(Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port...]` (`pubsub.namespace`).
    pub bootstrap: String,
    /// librdkafka settings passed through (`pubsub.kafka.*` with the prefix
    /// removed). Applied last, so they override dts's defaults; they go to
    /// the producer, every consumer and the admin client alike.
    pub client: BTreeMap<String, String>,
    /// The largest payload `publish` accepts. Must not exceed what the
    /// broker accepts (Kafka's default is about 1 MB).
    pub max_message_bytes: usize,
    /// Partitions of the topics dts creates. More partitions let more
    /// members of a group work at once.
    pub partitions: u32,
    /// Topics to create at start-up when missing.
    pub topics: Vec<String>,
    /// How long [`KafkaBus::connect`] may take, and each topic creation.
    pub connect_timeout: Duration,
}

impl KafkaSettings {
    /// Settings with dts's defaults: 1 MB messages, 6 partitions, no topics
    /// to create, 10 s to connect.
    pub fn new(bootstrap: impl Into<String>) -> KafkaSettings {
        KafkaSettings {
            bootstrap: bootstrap.into(),
            client: BTreeMap::new(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            partitions: 6,
            topics: Vec::new(),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Pass-through values can be passwords: show only their names.
        f.debug_struct("KafkaSettings")
            .field("bootstrap", &self.bootstrap)
            .field("client", &self.client.keys().collect::<Vec<_>>())
            .field("max_message_bytes", &self.max_message_bytes)
            .field("partitions", &self.partitions)
            .field("topics", &self.topics)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The Kafka bus. Cheap to clone; clones share one producer and one admin
/// client. Each subscription is its own group member (its own connections).
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

struct Inner {
    settings: KafkaSettings,
    publisher: Arc<Publisher>,
    admin: OffThread<AdminClient<LogContext>>,
    /// Topics this bus has created or found, so each is created once.
    known_topics: Mutex<HashSet<String>>,
    /// Cancelled by [`KafkaBus::close`]; every subscription watches it.
    closed: CancellationToken,
    /// Group members still in their groups, for [`KafkaBus::shutdown`].
    members: OpenMembers,
}

/// Asks the cluster for its metadata, proving a broker answers.
async fn reach(publisher: &Arc<Publisher>, settings: &KafkaSettings) -> BusResult<()> {
    let publisher = publisher.clone();
    let timeout = settings.connect_timeout;
    let bootstrap = settings.bootstrap.clone();
    let unreachable = |source: Cause| BusError::Unavailable {
        op: format!("cannot reach the kafka brokers at {bootstrap} within {timeout:?}"),
        source,
    };
    // Blocks for up to `timeout`: keep it off the async threads.
    let answer = tokio::task::spawn_blocking(move || {
        publisher
            .client()
            .client()
            .fetch_metadata(None, timeout)
            .map(|_| ())
    })
    .await;
    match answer {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(unreachable(error.into())),
        Err(join) => Err(unreachable(join.into())),
    }
}

impl KafkaBus {
    /// Connects to the brokers and creates the missing `settings.topics`.
    /// Fails within about `connect_timeout` with a message naming the
    /// bootstrap servers when they cannot be reached, and at once when a
    /// pass-through setting is invalid.
    pub async fn connect(settings: KafkaSettings) -> BusResult<KafkaBus> {
        if settings.partitions == 0 {
            return Err(BusError::ZeroPartitions);
        }
        let started = Instant::now();
        let publisher = Arc::new(Publisher::new(&settings)?);
        let admin: AdminClient<LogContext> = admin_config(&settings)
            .create_with_context(LogContext)
            .map_err(settings_error)?;
        // Consumers are made per subscription; check their settings now so a
        // bad pass-through setting stops start-up, not the first subscribe.
        consumer_config(&settings, "dts")
            .create_native_config()
            .map_err(settings_error)?;

        reach(&publisher, &settings).await?;
        let bus = KafkaBus {
            inner: Arc::new(Inner {
                settings,
                publisher,
                admin: OffThread::new(admin),
                known_topics: Mutex::new(HashSet::new()),
                closed: CancellationToken::new(),
                members: OpenMembers::new(),
            }),
        };
        let left = bus
            .inner
            .settings
            .connect_timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        let topics = bus.inner.settings.topics.clone();
        bus.create_topics(&topics, left).await?;
        info!(bootstrap = %bus.inner.settings.bootstrap, ?topics, "connected to kafka");
        Ok(bus)
    }

    /// Ends every subscription ([`BusError::Closed`] from `next`) and refuses
    /// further publishing.
    pub fn close(&self) {
        self.inner.closed.cancel();
    }

    /// Closes the bus, then waits up to `grace` for every group member to
    /// leave its group (so the others take over its partitions at once,
    /// not after a session timeout). False if some had not by then — say,
    /// the broker is down and a commit cannot finish; they keep trying on
    /// their own threads, which do not hold up the process's exit.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.close();
        self.inner.members.all_closed(grace).await
    }

    /// Creates those of `topics` this bus has not seen yet, with the
    /// configured partitions; existing ones are left as they are.
    async fn create_topics(&self, topics: &[String], timeout: Duration) -> BusResult<()> {
        let missing: Vec<&String> = {
            let known = self.lock_known();
            topics.iter().filter(|t| !known.contains(*t)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let partitions = i32::try_from(self.inner.settings.partitions).unwrap_or(i32::MAX);
        // -1: the broker's default replication factor.
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(-1)))
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout));
        let bootstrap = &self.inner.settings.bootstrap;
        let results = self
            .inner
            .admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(|e| BusError::Unavailable {
                op: format!("creating topics at {bootstrap}"),
                source: e.into(),
            })?;
        for result in results {
            match result {
                Ok(name) | Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    self.lock_known().insert(name);
                }
                Err((name, code @ RDKafkaErrorCode::TopicAuthorizationFailed))
                | Err((name, code @ RDKafkaErrorCode::ClusterAuthorizationFailed)) => {
                    // Topics provisioned by an operator: use them as they are.
                    warn!(topic = %name, %code, "not allowed to create the topic; assuming it exists");
                    self.lock_known().insert(name);
                }
                Err((name, code)) => {
                    let op = format!("creating topic {name} at {bootstrap}");
                    let source = code.into();
                    return Err(match code {
                        RDKafkaErrorCode::RequestTimedOut
                        | RDKafkaErrorCode::OperationTimedOut
                        | RDKafkaErrorCode::BrokerTransportFailure
                        | RDKafkaErrorCode::AllBrokersDown
                        | RDKafkaErrorCode::NotController
                        | RDKafkaErrorCode::CoordinatorNotAvailable => {
                            BusError::Unavailable { op, source }
                        }
                        _ => BusError::Fatal { op, source },
                    });
                }
            }
        }
        Ok(())
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // Each critical section is one lookup or insert.
        self.inner
            .known_topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> BusResult<()> {
        if self.inner.closed.is_cancelled() {
            return Err(BusError::Closed);
        }
        self.inner.publisher.publish(topic, key, &payload).await
    }

    /// Creates `topic` first when this bus has not seen it (a consumer of a
    /// missing topic would get no partitions until its next metadata
    /// refresh), then joins the group and waits for the first assignment.
    async fn subscribe(&self, topic: &str, group: &str) -> BusResult<Box<dyn Subscription>> {
        if self.inner.closed.is_cancelled() {
            return Err(BusError::Closed);
        }
        self.create_topics(&[topic.to_string()], self.inner.settings.connect_timeout)
            .await?;
        consumer::join(
            &self.inner.settings,
            topic,
            group,
            &self.inner.members,
            self.inner.closed.child_token(),
        )
        .await
    }

    /// Creates `topic` first when this bus has not seen it, as `subscribe`
    /// does, then starts at the end of every partition.
    async fn listen(&self, topic: &str) -> BusResult<Box<dyn Subscription>> {
        if self.inner.closed.is_cancelled() {
            return Err(BusError::Closed);
        }
        self.create_topics(&[topic.to_string()], self.inner.settings.connect_timeout)
            .await?;
        listener::listen(
            &self.inner.settings,
            topic,
            &self.inner.members,
            self.inner.closed.child_token(),
        )
        .await
    }

    fn max_message_bytes(&self) -> usize {
        self.inner.settings.max_message_bytes
    }
}
