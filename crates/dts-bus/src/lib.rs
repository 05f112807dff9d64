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
//! Implementations: [`embedded::EmbeddedBus`] (in-process queues) and
//! [`kafka::KafkaBus`] in distributed mode.

pub mod embedded;
pub mod kafka;

use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;

pub use embedded::EmbeddedBus;

/// A shared handle to whichever bus this process uses.
pub type DynBus = Arc<dyn Bus>;

/// Kafka's default largest message (`message.max.bytes`).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// The broker could not be reached or refused for now; trying again may help.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("message for topic {topic} is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        topic: String,
        size: usize,
        limit: usize,
    },
    /// The bus is shutting down; no more messages will come.
    #[error("bus closed")]
    Closed,
    #[error("bus error: {0}")]
    Other(String),
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

    /// Whether the same call may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BusError::Unavailable(_))
    }
}

pub type BusResult<T> = Result<T, BusError>;

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes `payload` to `topic`. `key` decides the partition where the
    /// bus has partitions (messages with one key keep their order).
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> BusResult<()>;

    /// Joins `group` as a consumer of `topic`. Messages published before the
    /// group's first member joined are delivered too.
    async fn subscribe(&self, topic: &str, group: &str) -> BusResult<Box<dyn Subscription>>;

    /// The largest payload [`Bus::publish`] accepts.
    fn max_message_bytes(&self) -> usize;

    /// How many members of one group can share `topic`'s messages at once
    /// (Kafka: its partitions). 1 for a bus without partitions.
    fn partitions(&self, _topic: &str) -> u32 {
        1
    }

    /// Publishes like [`Bus::publish`], but onto partition
    /// `slot % partitions(topic)`: a batch published with slots 0, 1, 2, ...
    /// lands evenly on the group's members instead of wherever the keys hash.
    /// A bus without partitions ignores `slot`.
    async fn publish_spread(
        &self,
        topic: &str,
        slot: u32,
        key: &str,
        payload: Vec<u8>,
    ) -> BusResult<()> {
        let _ = slot;
        self.publish(topic, key, payload).await
    }
}

/// A member of a consumer group.
#[async_trait]
pub trait Subscription: Send {
    /// Waits for the next message. [`BusError::Closed`] when the bus shuts down.
    async fn next(&mut self) -> BusResult<Delivery>;
}

/// Acknowledges one delivery; implemented by each bus.
#[async_trait]
pub trait Acknowledge: Send {
    async fn ack(self: Box<Self>) -> BusResult<()>;
}

/// One message handed to a consumer, to acknowledge once its work is recorded.
pub struct Delivery {
    pub key: String,
    pub payload: Vec<u8>,
    acknowledge: Box<dyn Acknowledge>,
}

impl Delivery {
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
