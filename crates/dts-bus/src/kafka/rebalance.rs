//! The callbacks of a group member's consumer: librdkafka's log lines,
//! rebalances and commit results. Rebalances and commit results are served
//! inside the member's poll (`consumer.rs`), so they run on its driver task
//! between two messages (or on the closing thread as it leaves); log lines
//! come from librdkafka's own threads.
//!
//! A rebalance tells the member's offset tracker which partitions it owns
//! now: revoked ones are forgotten before librdkafka lets them go, so no ack
//! commits for a partition another member may own; assigned ones start a
//! new generation.

use super::client;
use super::consumer::Book;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use std::sync::Arc;
use tracing::{debug, info, warn};

/// The consumer's callbacks: librdkafka's logs, rebalances and commit
/// results.
pub(super) struct MemberContext {
    book: Arc<Book>,
}

impl MemberContext {
    pub(super) fn new(book: Arc<Book>) -> MemberContext {
        MemberContext { book }
    }

    fn partitions(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements_for_topic(&self.book.topic)
            .iter()
            .map(|element| element.partition())
            .collect()
    }
}

impl ClientContext for MemberContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        client::log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client::client_error(error, reason);
    }
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (topic, group) = (&self.book.topic, &self.book.group);
        match rebalance {
            Rebalance::Revoke(list) => {
                let revoked = self.partitions(list);
                let mut tracker = self.book.lock();
                for &partition in &revoked {
                    tracker.revoke(partition);
                }
                info!(%topic, %group, ?revoked, "partitions revoked");
            }
            Rebalance::Error(error) => {
                // librdkafka unassigns on a rebalance error: forget it all,
                // so nothing in flight commits.
                let mut tracker = self.book.lock();
                for partition in tracker.assigned() {
                    tracker.revoke(partition);
                }
                warn!(%topic, %group, %error, "rebalance failed");
            }
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(list) = rebalance else {
            return;
        };
        let assigned = self.partitions(list);
        {
            let mut tracker = self.book.lock();
            for &partition in &assigned {
                tracker.assign(partition);
            }
        }
        if !assigned.is_empty() {
            // librdkafka keeps an application pause across assignments: a
            // partition paused when this member last owned it would never
            // be fetched again.
            if let Err(error) = consumer.resume(list) {
                debug!(topic = %self.book.topic, %error, "cannot resume newly assigned partitions");
            }
        }
        info!(topic = %self.book.topic, group = %self.book.group, ?assigned, "partitions assigned");
        self.book.joined.send_replace(true);
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(error) = result {
            // Expected around rebalances; the messages it covered are
            // delivered again, which costs work, not correctness.
            warn!(topic = %self.book.topic, group = %self.book.group, %error, ?offsets, "commit failed");
        }
    }
}
