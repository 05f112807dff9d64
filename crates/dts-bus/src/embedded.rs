//! The embedded bus: in-process queues for `dts up`, `dts run` and tests.
//!
//! Each topic keeps one queue per consumer group; publishing appends to every
//! group's queue, and the members of a group take turns popping from it. A
//! delivery dropped without [`Delivery::ack`](crate::Delivery::ack) goes back
//! to the front of its group's queue, so unacknowledged work is redelivered at
//! once. Messages published to a topic before any group subscribed wait in a
//! backlog that the first group takes over.
//!
//! Listeners ([`Bus::listen`]) share one bounded
//! broadcast channel per topic, beside the group queues: publishing sends to
//! it too. A listener that falls more than [`LISTEN_BUFFER`] messages behind
//! skips the oldest and goes on with the next one; listeners carry wakes,
//! which are hints, so that loses nothing. A topic someone has listened to
//! keeps no backlog while it has no group: its messages are for its
//! listeners, and a broadcast-only topic (the wakes) would otherwise keep
//! every message for a group that never comes.
//!
//! Nothing survives the process: on start-up the engine republishes whatever
//! the store says is unfinished, and planning and shard completion are
//! idempotent, so that loses nothing.

use crate::{
    Acknowledge, Bus, BusError, BusResult, DEFAULT_MAX_MESSAGE_BYTES, Delivery, NoAck, Subscription,
};
use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

/// Messages a listener may fall behind by before it skips the oldest.
pub const LISTEN_BUFFER: usize = 64;

#[derive(Clone)]
struct Message {
    key: String,
    payload: Vec<u8>,
}

/// The queue of one consumer group on one topic.
#[derive(Default)]
struct GroupQueue {
    messages: Mutex<VecDeque<Message>>,
    /// Woken once per message pushed, so one waiting member takes it.
    ready: Notify,
}

impl GroupQueue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Message>> {
        // A panic while holding this lock cannot leave the queue half-changed
        // (every critical section is one push or pop), so a poisoned lock is
        // safe to keep using.
        self.messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push_back(&self, message: Message) {
        self.lock().push_back(message);
        self.ready.notify_one();
    }

    fn push_front(&self, message: Message) {
        self.lock().push_front(message);
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<Message> {
        self.lock().pop_front()
    }
}

#[derive(Default)]
struct Topic {
    /// Messages published while the topic had no group yet.
    backlog: VecDeque<Message>,
    groups: HashMap<String, Arc<GroupQueue>>,
    /// The listeners' channel, from the first `listen` on.
    listeners: Option<broadcast::Sender<Message>>,
}

/// In-process bus. Cheap to clone; clones share the same queues.
#[derive(Clone)]
pub struct EmbeddedBus {
    topics: Arc<Mutex<HashMap<String, Topic>>>,
    max_message_bytes: usize,
    closed: CancellationToken,
}

impl Default for EmbeddedBus {
    fn default() -> Self {
        EmbeddedBus::new(DEFAULT_MAX_MESSAGE_BYTES)
    }
}

impl EmbeddedBus {
    /// A bus that refuses messages over `max_message_bytes`, as Kafka would,
    /// so embedded mode plans shards exactly as distributed mode does.
    pub fn new(max_message_bytes: usize) -> Self {
        EmbeddedBus {
            topics: Arc::new(Mutex::new(HashMap::new())),
            max_message_bytes,
            closed: CancellationToken::new(),
        }
    }

    /// Wakes every subscriber with [`BusError::Closed`].
    pub fn close(&self) {
        self.closed.cancel();
    }

    fn lock_topics(&self) -> MutexGuard<'_, HashMap<String, Topic>> {
        // Same reasoning as GroupQueue::lock: each critical section is a
        // single insert or lookup.
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> BusResult<()> {
        if self.closed.is_cancelled() {
            return Err(BusError::Closed);
        }
        if payload.len() > self.max_message_bytes {
            return Err(BusError::too_large(
                topic,
                payload.len(),
                self.max_message_bytes,
            ));
        }
        let message = Message {
            key: key.to_string(),
            payload,
        };
        let mut topics = self.lock_topics();
        let entry = topics.entry(topic.to_string()).or_default();
        if let Some(listeners) = &entry.listeners {
            // Fails only when no listener is left, which is nothing to report.
            let _ = listeners.send(message.clone());
        }
        if entry.groups.is_empty() {
            // See the module docs: a listened topic keeps no backlog.
            if entry.listeners.is_none() {
                entry.backlog.push_back(message);
            }
            return Ok(());
        }
        let groups: Vec<Arc<GroupQueue>> = entry.groups.values().cloned().collect();
        drop(topics);
        if let Some((last, rest)) = groups.split_last() {
            for queue in rest {
                queue.push_back(message.clone());
            }
            last.push_back(message);
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str, group: &str) -> BusResult<Box<dyn Subscription>> {
        if self.closed.is_cancelled() {
            return Err(BusError::Closed);
        }
        let mut topics = self.lock_topics();
        let entry = topics.entry(topic.to_string()).or_default();
        let first_group = entry.groups.is_empty();
        let queue = entry.groups.entry(group.to_string()).or_default().clone();
        if first_group {
            for message in entry.backlog.drain(..) {
                queue.push_back(message);
            }
        }
        Ok(Box::new(EmbeddedSubscription {
            queue,
            closed: self.closed.clone(),
        }))
    }

    async fn listen(&self, topic: &str) -> BusResult<Box<dyn Subscription>> {
        if self.closed.is_cancelled() {
            return Err(BusError::Closed);
        }
        let mut topics = self.lock_topics();
        let entry = topics.entry(topic.to_string()).or_default();
        let receiver = entry
            .listeners
            .get_or_insert_with(|| broadcast::channel(LISTEN_BUFFER).0)
            .subscribe();
        Ok(Box::new(EmbeddedListener {
            topic: topic.to_string(),
            receiver,
            closed: self.closed.clone(),
        }))
    }

    fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }
}

/// One listener: its own cursor on the topic's broadcast channel.
struct EmbeddedListener {
    topic: String,
    receiver: broadcast::Receiver<Message>,
    closed: CancellationToken,
}

#[async_trait]
impl Subscription for EmbeddedListener {
    async fn next(&mut self) -> BusResult<Delivery> {
        loop {
            let received = tokio::select! {
                received = self.receiver.recv() => received,
                _ = self.closed.cancelled() => return Err(BusError::Closed),
            };
            match received {
                Ok(message) => {
                    return Ok(Delivery::new(message.key, message.payload, Box::new(NoAck)));
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(topic = %self.topic, skipped, "a listener fell behind and skipped messages");
                }
                // The sender lives in the bus as long as the topic does.
                Err(broadcast::error::RecvError::Closed) => return Err(BusError::Closed),
            }
        }
    }
}

struct EmbeddedSubscription {
    queue: Arc<GroupQueue>,
    closed: CancellationToken,
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next(&mut self) -> BusResult<Delivery> {
        loop {
            // Register interest before looking, so a push between the look and
            // the wait is not missed.
            let ready = self.queue.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if let Some(message) = self.queue.pop() {
                let key = message.key.clone();
                let payload = message.payload.clone();
                let ack = EmbeddedAck {
                    message: Some(message),
                    queue: self.queue.clone(),
                };
                return Ok(Delivery::new(key, payload, Box::new(ack)));
            }
            tokio::select! {
                _ = &mut ready => {}
                _ = self.closed.cancelled() => return Err(BusError::Closed),
            }
        }
    }
}

/// Holds the delivered message until it is acknowledged; if it is dropped
/// first, the message goes back to the front of the queue.
struct EmbeddedAck {
    message: Option<Message>,
    queue: Arc<GroupQueue>,
}

#[async_trait]
impl Acknowledge for EmbeddedAck {
    async fn ack(mut self: Box<Self>) -> BusResult<()> {
        self.message = None;
        Ok(())
    }
}

impl Drop for EmbeddedAck {
    fn drop(&mut self) {
        if let Some(message) = self.message.take() {
            self.queue.push_front(message);
        }
    }
}
