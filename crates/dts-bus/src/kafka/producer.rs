//! Publishing: one librdkafka producer per [`KafkaBus`](super::KafkaBus),
//! shared by every caller of `publish` (`acks=all`; not the idempotent
//! producer — see `client::producer_config` for why).
//!
//! A publish returns once the broker has the message (its delivery report),
//! or fails within a bound: the local queue wait plus `message.timeout.ms`.
//! Failures say whether retrying can help (the submission path retries
//! [`BusError::Unavailable`] with backoff).

use super::client::{LogContext, OffThread, producer_config, settings_error};
use super::{KafkaSettings, client};
use crate::{BusError, BusResult};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

/// How long a publish waits for room in librdkafka's local queue (full only
/// when the broker has been unreachable for a while).
const QUEUE_WAIT: Duration = Duration::from_secs(1);

/// Extra time past the queue wait and the message timeout before a publish is
/// abandoned even if librdkafka has not reported yet.
const REPORT_GRACE: Duration = Duration::from_secs(1);

pub(crate) struct Publisher {
    producer: OffThread<FutureProducer<LogContext>>,
    max_message_bytes: usize,
    /// The most a publish may take, whatever the broker does.
    bound: Duration,
}

impl Publisher {
    pub(crate) fn new(settings: &KafkaSettings) -> BusResult<Publisher> {
        let producer: FutureProducer<LogContext> = producer_config(settings)
            .create_with_context(LogContext)
            .map_err(settings_error)?;
        Ok(Publisher {
            producer: OffThread::new(producer),
            max_message_bytes: settings.max_message_bytes,
            bound: QUEUE_WAIT + client::message_timeout(settings) + REPORT_GRACE,
        })
    }

    /// The producer's client, for metadata requests.
    pub(crate) fn client(&self) -> &FutureProducer<LogContext> {
        &self.producer
    }

    /// Publishes onto the partition the key hashes to.
    pub(crate) async fn publish(&self, topic: &str, key: &str, payload: &[u8]) -> BusResult<()> {
        if payload.len() > self.max_message_bytes {
            return Err(self.too_large(topic, payload.len()));
        }
        let record = FutureRecord::to(topic).key(key).payload(payload);
        match tokio::time::timeout(self.bound, self.producer.send(record, QUEUE_WAIT)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => Err(self.failed(topic, key, payload.len(), error)),
            Err(_) => Err(BusError::TimedOut {
                op: format!("publishing to topic {topic} (key {key})"),
                after: self.bound,
            }),
        }
    }

    fn too_large(&self, topic: &str, size: usize) -> BusError {
        BusError::too_large(topic, size, self.max_message_bytes)
    }

    fn failed(&self, topic: &str, key: &str, size: usize, error: KafkaError) -> BusError {
        let code = error.rdkafka_error_code();
        if code.is_some_and(is_size_error) {
            return self.too_large(topic, size);
        }
        let op = format!("publishing to topic {topic} (key {key})");
        let source = error.into();
        if code.is_some_and(is_transient) {
            BusError::Unavailable { op, source }
        } else {
            BusError::Fatal { op, source }
        }
    }
}

/// The broker or librdkafka refused the message for its size.
fn is_size_error(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
    )
}

/// Failures that say nothing about the message, only about the broker or
/// the way to it right now: the same publish may succeed later.
fn is_transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        MessageTimedOut
            | QueueFull
            | BrokerTransportFailure
            | AllBrokersDown
            | Resolve
            | OperationTimedOut
            | TimedOutQueue
            | RequestTimedOut
            | NetworkException
            | BrokerNotAvailable
            | LeaderNotAvailable
            | NotLeaderForPartition
            | ReplicaNotAvailable
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | UnknownTopicOrPartition
            | UnknownTopic
            | UnknownPartition
            | PurgeQueue
            | PurgeInflight
            | Retry
            | Outdated
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_message_is_transient_and_a_size_error_is_not() {
        assert!(is_transient(RDKafkaErrorCode::MessageTimedOut));
        assert!(is_transient(RDKafkaErrorCode::AllBrokersDown));
        assert!(!is_transient(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(is_size_error(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(!is_transient(RDKafkaErrorCode::TopicAuthorizationFailed));
    }
}
