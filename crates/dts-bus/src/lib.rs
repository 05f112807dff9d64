//! The bus: topics that carry tasks, shards and completion events between
//! servers and workers.
//!
//! Consumers join a *group*; each message of a topic goes to one member of
//! every group (competing consumers within a group, fan-out across groups).
//! Delivery is at-least-once: a [`Delivery`] must be acknowledged with
//! [`Delivery::ack`] after its work is durably recorded. One that is dropped
//! unacknowledged is delivered again without a restart (Kafka may then also
//! deliver again the messages after it that were in flight). A consumer
//! that leaves its group loses what it had not acknowledged to the others.
//!
//! A *listener* ([`Bus::listen`]) is outside every group: each listener gets
//! every message published to its topic after it started listening, with no
//! acknowledgement and no redelivery. It carries hints (a "work is ready"
//! wake), never work: a listener that falls behind or is not there misses
//! messages.
//!
//! Implementations: [`embedded::EmbeddedBus`] (in-process queues) and
//! [`kafka::KafkaBus`] in distributed mode.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod embedded;
pub mod kafka;

use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use embedded::EmbeddedBus;

/// A shared handle to whichever bus this process uses.
pub type DynBus = Arc<dyn Bus>;

/// Kafka's default largest message (`message.max.bytes`).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// What a broker or client said, kept as the
/// [`source`](std::error::Error::source) of a [`BusError`] so logs and
/// `caused by:` lines show it.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a bus call failed.
///
/// [`BusError::is_retryable`] says which failures may go away on their own;
/// the broker's or librdkafka's error stays attached as the source, and the
/// message names the operation, not the cause, so printing the chain never
/// repeats it.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The brokers could not be reached, or refused for now (no leader, a
    /// full queue); trying again may help.
    #[error("bus unavailable: {op}")]
    Unavailable {
        /// What was tried, and where (`cannot reach the kafka brokers at …`).
        op: String,
        /// The client's error.
        #[source]
        source: Cause,
    },
    /// No answer within the call's bound; trying again may help.
    #[error("bus unavailable: {op}: no answer within {after:?}")]
    TimedOut {
        /// What was tried.
        op: String,
        /// The bound that passed.
        after: Duration,
    },
    /// A payload bigger than [`Bus::max_message_bytes`] (or than the broker takes).
    #[error("message for topic {topic} is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// The topic it was for.
        topic: String,
        /// The payload's size.
        size: usize,
        /// The largest payload accepted.
        limit: usize,
    },
    /// The bus is shutting down; no more messages will come.
    #[error("bus closed")]
    Closed,
    /// A client setting librdkafka refuses (a pass-through `pubsub.kafka.*`
    /// value, say): fix the configuration.
    #[error("invalid kafka client settings")]
    InvalidSettings {
        /// librdkafka's error, naming the setting.
        #[source]
        source: Cause,
    },
    /// A topic needs at least one partition.
    #[error("kafka: partitions must be at least 1")]
    ZeroPartitions,
    /// The broker or the client failed for a reason a retry does not change
    /// (not authorised, a consumer that stopped for good).
    #[error("bus error: {op}")]
    Fatal {
        /// What was tried.
        op: String,
        /// The client's error.
        #[source]
        source: Cause,
    },
}

impl BusError {
    /// A payload of `size` bytes over `limit` for `topic`.
    pub(crate) fn too_large(topic: &str, size: usize, limit: usize) -> Self {
        BusError::TooLarge {
            topic: topic.to_string(),
            size,
            limit,
        }
    }

    /// Whether the same call may succeed if tried again later. Decided per
    /// variant, so a new variant must say.
    pub fn is_retryable(&self) -> bool {
        match self {
            BusError::Unavailable { .. } | BusError::TimedOut { .. } => true,
            BusError::TooLarge { .. }
            | BusError::Closed
            | BusError::InvalidSettings { .. }
            | BusError::ZeroPartitions
            | BusError::Fatal { .. } => false,
        }
    }
}

/// What every [`Bus`] call returns.
pub type BusResult<T> = Result<T, BusError>;

/// Topics carrying messages between dts processes; see the crate docs for
/// the delivery rules.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes `payload` to `topic`. `key` decides the partition where the
    /// bus has partitions (messages with one key keep their order).
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> BusResult<()>;

    /// Joins `group` as a consumer of `topic`. Messages published before the
    /// group's first member joined are delivered too.
    async fn subscribe(&self, topic: &str, group: &str) -> BusResult<Box<dyn Subscription>>;

    /// Listens to `topic` outside every group: every listener receives every
    /// message published to `topic` after this returns; nothing published
    /// before is delivered, and nothing is kept for a listener once it is
    /// dropped. Acknowledging a listened delivery does nothing, and one
    /// dropped unacknowledged is not delivered again. Wakes are hints, not
    /// work: a listener that falls far behind skips what it missed.
    async fn listen(&self, topic: &str) -> BusResult<Box<dyn Subscription>>;

    /// The largest payload [`Bus::publish`] accepts.
    fn max_message_bytes(&self) -> usize;
}

/// A member of a consumer group, or a listener.
#[async_trait]
pub trait Subscription: Send {
    /// Waits for the next message. [`BusError::Closed`] when the bus shuts down.
    async fn next(&mut self) -> BusResult<Delivery>;
}

/// Acknowledges one delivery; implemented by each bus.
#[async_trait]
pub trait Acknowledge: Send {
    /// Settles the delivery as done; see [`Delivery::ack`].
    async fn ack(self: Box<Self>) -> BusResult<()>;
}

/// Settles a listened delivery: there is nothing to settle, since a
/// listener is in no group and nothing is delivered to it again.
pub(crate) struct NoAck;

#[async_trait]
impl Acknowledge for NoAck {
    async fn ack(self: Box<Self>) -> BusResult<()> {
        Ok(())
    }
}

/// One message handed to a consumer, to acknowledge once its work is recorded.
pub struct Delivery {
    /// The key it was published with.
    pub key: String,
    /// The message itself.
    pub payload: Vec<u8>,
    acknowledge: Box<dyn Acknowledge>,
}

impl Delivery {
    /// A delivery that `acknowledge` settles (for bus implementations).
    pub fn new(key: String, payload: Vec<u8>, acknowledge: Box<dyn Acknowledge>) -> Self {
        Delivery {
            key,
            payload,
            acknowledge,
        }
    }

    /// Marks the message done: it will not be delivered to this group again.
    pub async fn ack(self) -> BusResult<()> {
        self.acknowledge.ack().await
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("key", &self.key)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}
