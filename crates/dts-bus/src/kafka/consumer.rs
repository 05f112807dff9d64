//! One consumer-group member per [`Bus::subscribe`](crate::Bus::subscribe):
//! a librdkafka consumer, the task that drives it, and the acknowledgements
//! of its deliveries.
//!
//! **Driving.** A background task polls the consumer all the time, not only
//! when the caller asks for a message, so the member answers rebalances and
//! stays in its group while every delivery is busy (a worker whose cores are
//! all running shards). It hands messages over through a small queue
//! ([`HAND_OFF`]); when the queue stays full for [`PAUSE_AFTER`], the task
//! pauses fetching and keeps polling for group events only, and resumes when
//! the caller is ready again.
//!
//! **Acks and commits.** Offsets are stored and committed only by hand. The
//! member's [`OffsetTracker`] records every delivery; an ack commits
//! (asynchronously) one past the highest offset below which everything
//! delivered is acknowledged, so a commit never passes a message still being
//! worked on, and deliveries may be acknowledged in any order.
//!
//! **Drops.** A delivery dropped without ack seeks its partition back to the
//! lowest message given back, so the running member delivers it again. The
//! messages after it that were in flight are delivered a second time too;
//! consumers are idempotent, so that costs work, not correctness.
//!
//! **Rebalances.** The rebalance callback (`rebalance.rs`) tells the
//! tracker which partitions the member owns; each assignment is a new
//! generation. Acks and drops of deliveries from a partition the member lost
//! change nothing: the new owner delivers again from the committed offset.
//! Messages still waiting in the hand-off from a lost partition are skipped.
//! With librdkafka's default (eager) assignor every rebalance takes all
//! partitions away before handing them out again, so what was in flight
//! during a rebalance is delivered again, possibly to the same member;
//! `partition.assignment.strategy=cooperative-sticky` limits that to the
//! partitions that move.
//!
//! Dropping the subscription leaves the group at once (on a thread of its
//! own); deliveries still out can no longer commit, and the partitions' next
//! owner delivers them again.

use super::KafkaSettings;
use super::client::{self, OffThread, OpenMember, OpenMembers, consumer_config, settings_error};
use super::offsets::{Generation, OffsetTracker};
use super::rebalance::MemberContext;
use crate::{Acknowledge, BusError, BusResult, Delivery, Subscription};
use async_trait::async_trait;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error, info, trace, warn};

/// Messages fetched ahead into the hand-off (at most `max_message_bytes`
/// each). Pausing a partition and resuming it costs librdkafka a re-fetch
/// with a backoff, which left cores idle each time a busy worker took its
/// next shard; a small queue means a worker busy with a few
/// shards never has to pause. Messages of a partition lost meanwhile are
/// skipped when taken.
const HAND_OFF: usize = 16;

/// How long a message may wait in the hand-off before the member pauses
/// fetching (so it can poll for group events without taking more messages).
const PAUSE_AFTER: Duration = Duration::from_millis(250);

type KafkaConsumer = StreamConsumer<MemberContext>;

/// The librdkafka consumer, closed off the async threads when the last
/// handle to it goes (see [`OffThread`]).
struct Member {
    /// Declared first, so the member has left its group before it stops
    /// being counted as open.
    consumer: KafkaConsumer,
    _open: OpenMember,
}

/// What one member's driver, rebalance callback and acks share.
pub(super) struct Book {
    pub(super) topic: String,
    pub(super) group: String,
    tracker: Mutex<OffsetTracker>,
    /// Becomes true at the member's first assignment (even an empty one).
    pub(super) joined: watch::Sender<bool>,
}

impl Book {
    pub(super) fn lock(&self) -> MutexGuard<'_, OffsetTracker> {
        // Every critical section leaves the tracker consistent (plain map
        // updates, no calls out while half done), so a poisoned lock is
        // still safe to use.
        self.tracker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn partition_list(&self, partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for &partition in partitions {
            list.add_partition(&self.topic, partition);
        }
        list
    }
}

/// Joins `group` on `topic` and waits (up to twice the session timeout) for
/// the first assignment, so the member is part of the group when this
/// returns. `stop` ends the member.
pub(crate) async fn join(
    settings: &KafkaSettings,
    topic: &str,
    group: &str,
    members: &OpenMembers,
    stop: CancellationToken,
) -> BusResult<Box<dyn Subscription>> {
    let (joined, mut joined_rx) = watch::channel(false);
    let book = Arc::new(Book {
        topic: topic.to_string(),
        group: group.to_string(),
        tracker: Mutex::new(OffsetTracker::default()),
        joined,
    });
    let consumer: KafkaConsumer = consumer_config(settings, group)
        .create_with_context(MemberContext::new(book.clone()))
        .map_err(settings_error)?;
    consumer.subscribe(&[topic]).map_err(|e| BusError::Fatal {
        op: format!("subscribing to topic {topic} in group {group}"),
        source: e.into(),
    })?;
    let (out, deliveries) = mpsc::channel(HAND_OFF);
    // Taken before the wait below: if the caller gives up on subscribing,
    // the member stops instead of staying in the group unseen.
    let stop_on_drop = stop.clone().drop_guard();
    let driver = Driver {
        member: Arc::new(OffThread::new(Member {
            consumer,
            _open: members.open(),
        })),
        book: book.clone(),
        out,
        stop: stop.clone(),
    };
    tokio::spawn(driver.run());

    let wait = 2 * client::session_timeout(settings);
    tokio::select! {
        joined = tokio::time::timeout(wait, joined_rx.wait_for(|joined| *joined)) => {
            if joined.is_err() {
                info!(topic, group, ?wait, "no partitions assigned yet; messages flow once the group gives some");
            }
        }
        _ = stop.cancelled() => return Err(BusError::Closed),
    }
    Ok(Box::new(KafkaSubscription {
        deliveries,
        book,
        _stop: stop_on_drop,
    }))
}

/// A delivery on its way to the caller, with where it came from.
struct Pending {
    delivery: Delivery,
    partition: i32,
    generation: Generation,
}

struct KafkaSubscription {
    deliveries: mpsc::Receiver<BusResult<Pending>>,
    book: Arc<Book>,
    /// Stops the driver (and so leaves the group) when the subscription goes.
    _stop: DropGuard,
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> BusResult<Delivery> {
        loop {
            let Some(pending) = self.deliveries.recv().await else {
                return Err(BusError::Closed);
            };
            let pending = pending?;
            if self.book.lock().owns(pending.partition, pending.generation) {
                return Ok(pending.delivery);
            }
            // Waited in the hand-off while its partition moved to another
            // member, which delivers it from the committed offset. Dropping
            // it changes nothing here (its generation is over).
            debug!(topic = %self.book.topic, partition = pending.partition, "skipping a message from a partition this member lost");
        }
    }
}

/// Polls the consumer and hands messages to the subscription.
struct Driver {
    member: Arc<OffThread<Member>>,
    book: Arc<Book>,
    out: mpsc::Sender<BusResult<Pending>>,
    stop: CancellationToken,
}

impl Driver {
    async fn run(self) {
        loop {
            let Some(room) = self.room().await else { break };
            let received = tokio::select! {
                _ = self.stop.cancelled() => break,
                received = self.member.consumer.recv() => received,
            };
            match received {
                Ok(message) => {
                    if let Some(pending) = self.register(&message) {
                        room.send(Ok(pending));
                    }
                }
                Err(error) => {
                    if let Some(error) = self.failed(error) {
                        room.send(Err(error));
                        break;
                    }
                }
            }
        }
        debug!(topic = %self.book.topic, group = %self.book.group, "group member stopped");
        // `self.member` goes here: the consumer leaves the group on a
        // thread of its own once no ack is using it.
    }

    /// Waits for the caller to make room in the hand-off. If that takes a
    /// while, pauses fetching and keeps polling, so rebalances are answered
    /// and the member stays in its group while the caller is busy.
    async fn room(&self) -> Option<mpsc::Permit<'_, BusResult<Pending>>> {
        tokio::select! {
            room = self.out.reserve() => return room.ok(),
            _ = self.stop.cancelled() => return None,
            _ = tokio::time::sleep(PAUSE_AFTER) => {}
        }
        let assigned = self.book.lock().assigned();
        debug!(topic = %self.book.topic, group = %self.book.group, ?assigned, "the caller is busy; pausing fetching");
        self.pause(&assigned);
        let room = loop {
            tokio::select! {
                room = self.out.reserve() => break room.ok(),
                _ = self.stop.cancelled() => break None,
                received = self.member.consumer.recv() => match received {
                    Ok(message) => self.put_back(&message),
                    Err(error) => {
                        if let Some(error) = self.failed(error) {
                            warn!(topic = %self.book.topic, group = %self.book.group, %error, "consumer failed while paused");
                            break None;
                        }
                    }
                },
            }
        };
        let assigned = self.book.lock().assigned();
        debug!(topic = %self.book.topic, group = %self.book.group, ?assigned, "resuming fetching");
        if let Err(error) = self
            .member
            .consumer
            .resume(&self.book.partition_list(&assigned))
        {
            warn!(topic = %self.book.topic, %error, "cannot resume fetching");
        }
        room
    }

    /// Turns a message into a delivery the tracker knows about; `None` when
    /// its partition is not (or no longer) this member's.
    fn register(&self, message: &BorrowedMessage<'_>) -> Option<Pending> {
        let partition = message.partition();
        let offset = message.offset();
        let Some(generation) = self.book.lock().delivered(partition, offset) else {
            debug!(topic = %self.book.topic, partition, offset, "skipping a message from a partition this member does not own");
            return None;
        };
        trace!(topic = %self.book.topic, partition, offset, generation, "delivering");
        let key = message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .unwrap_or_default();
        let payload = message.payload().map(<[u8]>::to_vec).unwrap_or_default();
        let ack = KafkaAck {
            book: self.book.clone(),
            member: Arc::downgrade(&self.member),
            partition,
            offset,
            generation,
            settled: false,
        };
        Some(Pending {
            delivery: Delivery::new(key, payload, Box::new(ack)),
            partition,
            generation,
        })
    }

    /// A message fetched while paused (one already on its way, or from a
    /// partition assigned since): give it back and pause its partition.
    fn put_back(&self, message: &BorrowedMessage<'_>) {
        let partition = message.partition();
        // Registering then dropping it rewinds the partition to it, and
        // keeps any commit from passing it meanwhile.
        if let Some(pending) = self.register(message) {
            drop(pending);
            self.pause(&[partition]);
        }
    }

    fn pause(&self, partitions: &[i32]) {
        if partitions.is_empty() {
            return;
        }
        if let Err(error) = self
            .member
            .consumer
            .pause(&self.book.partition_list(partitions))
        {
            warn!(topic = %self.book.topic, %error, "cannot pause fetching");
        }
    }

    /// Logs a consumer error; returns the error to pass on when the consumer
    /// cannot go on.
    fn failed(&self, error: KafkaError) -> Option<BusError> {
        let (topic, group) = (&self.book.topic, &self.book.group);
        match error {
            KafkaError::MessageConsumptionFatal(code) => {
                error!(%topic, %group, %code, "the consumer failed for good");
                Some(BusError::Fatal {
                    op: format!("consumer of topic {topic} in group {group}"),
                    source: code.into(),
                })
            }
            KafkaError::PartitionEOF(_) => None,
            error => {
                warn!(%topic, %group, %error, "consumer error");
                None
            }
        }
    }
}

/// Settles one delivery: an ack may commit, a drop without ack rewinds.
struct KafkaAck {
    book: Arc<Book>,
    /// Weak, so deliveries still out do not keep a closed subscription in
    /// its group.
    member: Weak<OffThread<Member>>,
    partition: i32,
    offset: i64,
    generation: Generation,
    settled: bool,
}

#[async_trait]
impl Acknowledge for KafkaAck {
    async fn ack(mut self: Box<Self>) -> BusResult<()> {
        self.settled = true;
        // Declared before the lock so it is released after it: dropping the
        // last handle to the consumer closes it, which runs the rebalance
        // callback, which takes the lock.
        let member = self.member.upgrade();
        let mut tracker = self.book.lock();
        let Some(commit_at) = tracker.acked(self.partition, self.generation, self.offset) else {
            return Ok(());
        };
        let Some(member) = member.as_deref() else {
            // The member has left; the partition's next owner delivers
            // again from the committed offset.
            return Ok(());
        };
        let topic = &self.book.topic;
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(topic, self.partition, Offset::Offset(commit_at))
            .map_err(|e| BusError::Fatal {
                op: format!("committing {topic} partition {}", self.partition),
                source: e.into(),
            })?;
        // Committed under the lock, so a rebalance cannot take the partition
        // between the check above and the commit request.
        member
            .consumer
            .commit(&offsets, CommitMode::Async)
            .map_err(|e| BusError::Unavailable {
                op: format!(
                    "committing offset {commit_at} of {topic} partition {}",
                    self.partition
                ),
                source: e.into(),
            })
    }
}

impl Drop for KafkaAck {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let member = self.member.upgrade();
        let mut tracker = self.book.lock();
        let Some(rewind_to) = tracker.dropped(self.partition, self.generation, self.offset) else {
            return;
        };
        let Some(member) = member.as_deref() else {
            return;
        };
        // Zero timeout: librdkafka seeks asynchronously, this never blocks.
        let topic = &self.book.topic;
        debug!(%topic, partition = self.partition, offset = rewind_to, "rewinding to a message given back");
        if let Err(error) = member.consumer.seek(
            topic,
            self.partition,
            Offset::Offset(rewind_to),
            Duration::ZERO,
        ) {
            // Nothing is lost: the commit still stops before it, so the next
            // owner of the partition (or this member after a restart)
            // delivers it.
            warn!(%topic, partition = self.partition, offset = rewind_to, %error, "cannot rewind to a message given back");
        }
    }
}
