//! The contract every `Bus` implementation keeps, written once and run
//! against each implementation (one `bus_contract!` line per bus).

use dts_bus::{Bus, BusError, DynBus, EmbeddedBus, Subscription};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn next_payload(sub: &mut Box<dyn Subscription>) -> String {
    let delivery = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a message within the deadline")
        .expect("a delivery");
    let text = String::from_utf8(delivery.payload.clone()).expect("utf-8 payload");
    delivery.ack().await.expect("ack");
    text
}

pub async fn a_subscriber_gets_what_is_published(bus: DynBus, topic: &str) {
    let mut sub = bus.subscribe(topic, "g").await.unwrap();
    bus.publish(topic, "k", b"hello".to_vec()).await.unwrap();
    assert_eq!(next_payload(&mut sub).await, "hello");
}

pub async fn messages_published_before_the_group_joined_are_delivered(bus: DynBus, topic: &str) {
    for i in 0..3 {
        bus.publish(topic, "k", format!("m{i}").into_bytes())
            .await
            .unwrap();
    }
    let mut sub = bus.subscribe(topic, "late").await.unwrap();
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        got.insert(next_payload(&mut sub).await);
    }
    assert_eq!(
        got,
        ["m0", "m1", "m2"].map(String::from).into_iter().collect()
    );
}

pub async fn every_group_gets_every_message(bus: DynBus, topic: &str) {
    let mut a = bus.subscribe(topic, "a").await.unwrap();
    let mut b = bus.subscribe(topic, "b").await.unwrap();
    bus.publish(topic, "k", b"x".to_vec()).await.unwrap();
    assert_eq!(next_payload(&mut a).await, "x");
    assert_eq!(next_payload(&mut b).await, "x");
}

pub async fn members_of_a_group_share_the_messages_without_duplicates(bus: DynBus, topic: &str) {
    let total = 60;
    let members: Vec<_> = futures_join_subscribe(&bus, topic, "shared", 3).await;
    for i in 0..total {
        bus.publish(topic, &format!("key-{i}"), format!("{i}").into_bytes())
            .await
            .unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut handles = Vec::new();
    for mut sub in members {
        let tx = tx.clone();
        handles.push(tokio::spawn(async move {
            // ends: after 3 s without a message; aborted below in any case.
            while let Ok(Ok(delivery)) =
                tokio::time::timeout(Duration::from_secs(3), sub.next()).await
            {
                let text = String::from_utf8(delivery.payload.clone()).unwrap();
                delivery.ack().await.unwrap();
                if tx.send(text).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut seen = Vec::new();
    // ends: at `total` messages, each awaited for at most WAIT.
    while let Some(text) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("messages keep coming")
    {
        seen.push(text);
        if seen.len() == total {
            break;
        }
    }
    for handle in handles {
        handle.abort();
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), total, "every message delivered once");
    assert_eq!(unique.len(), total, "no duplicates");
}

async fn futures_join_subscribe(
    bus: &DynBus,
    topic: &str,
    group: &str,
    n: usize,
) -> Vec<Box<dyn Subscription>> {
    let mut subs = Vec::new();
    for _ in 0..n {
        subs.push(bus.subscribe(topic, group).await.unwrap());
    }
    subs
}

pub async fn an_unacknowledged_message_is_delivered_again(bus: DynBus, topic: &str) {
    bus.publish(topic, "k", b"retry-me".to_vec()).await.unwrap();
    let mut sub = bus.subscribe(topic, "g").await.unwrap();
    let first = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.payload, b"retry-me");
    drop(first);
    drop(sub);
    let mut again = bus.subscribe(topic, "g").await.unwrap();
    assert_eq!(next_payload(&mut again).await, "retry-me");
}

pub async fn an_acknowledged_message_is_not_delivered_again(bus: DynBus, topic: &str) {
    bus.publish(topic, "k", b"once".to_vec()).await.unwrap();
    let mut sub = bus.subscribe(topic, "g").await.unwrap();
    assert_eq!(next_payload(&mut sub).await, "once");
    drop(sub);
    let mut again = bus.subscribe(topic, "g").await.unwrap();
    // Same key, same partition: were "once" delivered again, it would come
    // before the marker. (Waiting a moment for silence proves nothing on a
    // bus whose consumers take a while to start fetching.)
    bus.publish(topic, "k", b"marker".to_vec()).await.unwrap();
    assert_eq!(next_payload(&mut again).await, "marker");
}

pub async fn a_message_over_the_limit_is_refused(bus: DynBus, topic: &str) {
    let limit = bus.max_message_bytes();
    let err = bus
        .publish(topic, "k", vec![b'x'; limit + 1])
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::TooLarge { .. }), "{err}");
    assert!(!err.is_retryable());
}

/// The payloads of the next `n` deliveries of a listener, in order.
async fn next_payloads(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(next_payload(sub).await);
    }
    got
}

pub async fn every_listener_gets_every_message_published_after_it_listened(
    bus: DynBus,
    topic: &str,
) {
    let mut first = bus.listen(topic).await.unwrap();
    let mut second = bus.listen(topic).await.unwrap();
    // One key per message: on Kafka they land on several partitions, all of
    // which each listener must read.
    for i in 0..6 {
        bus.publish(topic, &format!("key-{i}"), format!("wake-{i}").into_bytes())
            .await
            .unwrap();
    }
    let expected: BTreeSet<String> = (0..6).map(|i| format!("wake-{i}")).collect();
    for listener in [&mut first, &mut second] {
        let got: BTreeSet<String> = next_payloads(listener, 6).await.into_iter().collect();
        assert_eq!(got, expected);
    }
}

pub async fn a_listener_does_not_get_what_was_published_before_it_listened(
    bus: DynBus,
    topic: &str,
) {
    bus.publish(topic, "k", b"before".to_vec()).await.unwrap();
    let mut listener = bus.listen(topic).await.unwrap();
    bus.publish(topic, "k", b"after".to_vec()).await.unwrap();
    // Same key, same partition: were "before" delivered, it would come first.
    assert_eq!(next_payload(&mut listener).await, "after");
}

pub async fn a_group_still_gets_each_message_once_alongside_listeners(bus: DynBus, topic: &str) {
    let mut listener = bus.listen(topic).await.unwrap();
    let mut member = bus.subscribe(topic, "g").await.unwrap();
    let sent: Vec<String> = (0..10)
        .map(|i| format!("m{i}"))
        .chain(["marker".to_string()])
        .collect();
    for text in &sent {
        bus.publish(topic, "k", text.clone().into_bytes())
            .await
            .unwrap();
    }
    // One key, one partition, in order: a message given to the group twice
    // would show up before the marker.
    assert_eq!(next_payloads(&mut member, sent.len()).await, sent);
    assert_eq!(next_payloads(&mut listener, sent.len()).await, sent);
}

pub async fn a_dropped_or_idle_listener_does_not_hold_up_publishing(bus: DynBus, topic: &str) {
    let dropped = bus.listen(topic).await.unwrap();
    drop(dropped);
    let _idle = bus.listen(topic).await.unwrap();
    // Far more than any listener's buffer, each publish under the deadline.
    for i in 0..200 {
        tokio::time::timeout(WAIT, bus.publish(topic, "k", format!("m{i}").into_bytes()))
            .await
            .expect("a publish within the deadline despite an idle listener")
            .unwrap();
    }
    let mut fresh = bus.listen(topic).await.unwrap();
    bus.publish(topic, "k", b"last".to_vec()).await.unwrap();
    assert_eq!(next_payload(&mut fresh).await, "last");
}

/// A bus for one test, and how to stop it cleanly afterwards.
pub struct Fixture {
    pub bus: DynBus,
    /// Run after the test: a Kafka bus lets its group members leave before
    /// its broker stops. Dropped instead when the test panics.
    pub teardown: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Fixture {
    fn without_teardown(bus: DynBus) -> Fixture {
        Fixture {
            bus,
            teardown: Box::pin(async {}),
        }
    }
}

macro_rules! bus_contract {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            /// Runs one contract test on a fresh bus, then tears it down.
            async fn run<F, Fut>(test: F)
            where
                F: FnOnce(DynBus) -> Fut,
                Fut: Future<Output = ()>,
            {
                let fixture: Fixture = $make().await;
                test(fixture.bus.clone()).await;
                drop(fixture.bus);
                fixture.teardown.await;
            }

            fn topic(test: &str) -> String {
                format!("contract-{}-{}", test, std::process::id())
            }

            #[tokio::test]
            async fn a_subscriber_gets_what_is_published() {
                run(|bus| async move {
                    super::a_subscriber_gets_what_is_published(bus, &topic("a")).await
                })
                .await;
            }

            #[tokio::test]
            async fn messages_published_before_the_group_joined_are_delivered() {
                run(|bus| async move {
                    super::messages_published_before_the_group_joined_are_delivered(
                        bus,
                        &topic("b"),
                    )
                    .await
                })
                .await;
            }

            #[tokio::test]
            async fn every_group_gets_every_message() {
                run(|bus| async move {
                                    super::every_group_gets_every_message(bus, &topic("c")).await
                                })
                                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn members_of_a_group_share_the_messages_without_duplicates() {
                run(|bus| async move {
                    super::members_of_a_group_share_the_messages_without_duplicates(
                        bus,
                        &topic("d"),
                    )
                    .await
                })
                .await;
            }

            #[tokio::test]
            async fn an_unacknowledged_message_is_delivered_again() {
                run(|bus| async move {
                    super::an_unacknowledged_message_is_delivered_again(bus, &topic("e")).await
                })
                .await;
            }

            #[tokio::test]
            async fn an_acknowledged_message_is_not_delivered_again() {
                run(|bus| async move {
                    super::an_acknowledged_message_is_not_delivered_again(bus, &topic("f")).await
                })
                .await;
            }

            #[tokio::test]
            async fn a_message_over_the_limit_is_refused() {
                run(|bus| async move {
                    super::a_message_over_the_limit_is_refused(bus, &topic("g")).await
                })
                .await;
            }

            #[tokio::test]
            async fn every_listener_gets_every_message_published_after_it_listened() {
                run(|bus| async move {
                    super::every_listener_gets_every_message_published_after_it_listened(
                        bus,
                        &topic("h"),
                    )
                    .await
                })
                .await;
            }

            #[tokio::test]
            async fn a_listener_does_not_get_what_was_published_before_it_listened() {
                run(|bus| async move {
                    super::a_listener_does_not_get_what_was_published_before_it_listened(
                        bus,
                        &topic("i"),
                    )
                    .await
                })
                .await;
            }

            #[tokio::test]
            async fn a_group_still_gets_each_message_once_alongside_listeners() {
                run(|bus| async move {
                    super::a_group_still_gets_each_message_once_alongside_listeners(
                        bus,
                        &topic("j"),
                    )
                    .await
                })
                .await;
            }

            #[tokio::test]
            async fn a_dropped_or_idle_listener_does_not_hold_up_publishing() {
                run(|bus| async move {
                    super::a_dropped_or_idle_listener_does_not_hold_up_publishing(
                        bus,
                        &topic("k"),
                    )
                    .await
                })
                .await;
            }
        }
    };
}

bus_contract!(embedded, || async {
    Fixture::without_teardown(Arc::new(EmbeddedBus::new(64 * 1024)))
});

bus_contract!(kafka, kafka_bus::with_own_broker);

mod kafka_bus {
    use super::Fixture;
    use dts_bus::kafka::{KafkaBus, KafkaSettings};
    use dts_testkit::Broker;
    use std::sync::Arc;
    use std::time::Duration;

    /// A Kafka bus on a broker of its own. The teardown lets the group
    /// members leave while the broker is still up (one killed under a member
    /// with a commit in flight leaves that member closing until the process
    /// ends), then stops the broker.
    pub async fn with_own_broker() -> Fixture {
        // Logs with RUST_LOG=... when a test needs looking into.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let broker = Broker::start();
        let mut settings = KafkaSettings::new(broker.bootstrap());
        settings.client = Broker::client_settings()
            .into_iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        // librdkafka's own debug contexts, e.g. DTS_KAFKA_DEBUG=cgrp,fetch.
        if let Ok(contexts) = std::env::var("DTS_KAFKA_DEBUG") {
            settings.client.insert("debug".into(), contexts);
        }
        let bus = KafkaBus::connect(settings)
            .await
            .expect("connect to the broker");
        let closing = bus.clone();
        Fixture {
            bus: Arc::new(bus),
            teardown: Box::pin(async move {
                closing.shutdown(Duration::from_secs(10)).await;
                drop(broker);
            }),
        }
    }
}

#[tokio::test]
async fn embedded_close_wakes_waiting_subscribers() {
    let bus = EmbeddedBus::default();
    let mut sub = bus.subscribe("t", "g").await.unwrap();
    let waiter = tokio::spawn(async move { sub.next().await.map(|_| ()) });
    bus.close();
    let result = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap();
    assert!(matches!(result, Err(BusError::Closed)));
}

#[tokio::test]
async fn embedded_close_wakes_waiting_listeners() {
    let bus = EmbeddedBus::default();
    let mut listener = bus.listen("t").await.unwrap();
    let waiter = tokio::spawn(async move { listener.next().await.map(|_| ()) });
    bus.close();
    let result = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap();
    assert!(matches!(result, Err(BusError::Closed)));
}

#[tokio::test]
async fn an_embedded_listener_that_fell_behind_skips_the_oldest_and_goes_on() {
    let bus = EmbeddedBus::default();
    let mut listener = bus.listen("t").await.unwrap();
    let published = dts_bus::embedded::LISTEN_BUFFER + 10;
    for i in 0..published {
        bus.publish("t", "k", format!("m{i}").into_bytes())
            .await
            .unwrap();
    }
    // The buffer keeps the newest LISTEN_BUFFER; the ten before are skipped.
    assert_eq!(next_payload(&mut listener).await, "m10");
    bus.publish("t", "k", b"next".to_vec()).await.unwrap();
    let rest = next_payloads(&mut listener, dts_bus::embedded::LISTEN_BUFFER).await;
    assert_eq!(rest.first().map(String::as_str), Some("m11"));
    assert_eq!(rest.last().map(String::as_str), Some("next"));
}

#[tokio::test]
async fn an_embedded_topic_only_listened_to_keeps_nothing_for_a_group_that_comes_later() {
    let bus = EmbeddedBus::default();
    let _listener = bus.listen("wake").await.unwrap();
    bus.publish("wake", "k", b"hint".to_vec()).await.unwrap();
    let mut late = bus.subscribe("wake", "g").await.unwrap();
    bus.publish("wake", "k", b"work".to_vec()).await.unwrap();
    assert_eq!(next_payload(&mut late).await, "work");
}
